// volant_native: the syscalls Node lacks that host and guest need (AF_VSOCK, netlink
// address/route setup, finit_module, reboot, reaping). Filled in by the kestrel/native work.
#include <napi.h>

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  return exports;
}

NODE_API_MODULE(volant_native, Init)
