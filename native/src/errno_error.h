// Node-style system errors for the addon: every failing syscall surfaces in JavaScript as an
// Error with `errno` (negative, as libuv and Node's own fs/net errors report it), `code`
// ('ENOENT') and `syscall` ('bind'), and a message shaped like Node's:
// "ENOENT: no such file or directory, open '/lib/x.ko'".
// The addon is built with NAPI_DISABLE_CPP_EXCEPTIONS, so callers throw the returned error with
// ThrowAsJavaScriptException() and return at once.
#pragma once

#include <napi.h>

#include <string>

// `err` is a positive errno value; `detail` (a path, a name) is quoted into the message when set.
Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const std::string& detail = "");

// Throws ErrnoError and returns undefined, for the common `return ThrowErrno(...)` tail.
Napi::Value ThrowErrno(Napi::Env env, int err, const char* syscall, const std::string& detail = "");

// Argument checks shared by the modules: on failure they throw a TypeError and return false.
bool ExpectString(const Napi::CallbackInfo& info, size_t index, const char* what);
bool ExpectUint32(const Napi::CallbackInfo& info, size_t index, const char* what);
bool ExpectFunction(const Napi::CallbackInfo& info, size_t index, const char* what);
