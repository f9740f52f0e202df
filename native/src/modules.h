// The addon's parts; each registers its functions on the exports object (see addon.cc).
#pragma once

#include <napi.h>

void RegisterSockets(Napi::Env env, Napi::Object exports);
void RegisterNetconf(Napi::Env env, Napi::Object exports);
void RegisterSystem(Napi::Env env, Napi::Object exports);
void RegisterDeviceIo(Napi::Env env, Napi::Object exports);
