// volant_native: the few system calls host and guest need that Node lacks.
//   sockets.cc  AF_VSOCK listen/connect fds (wrapped as net.Socket in JavaScript), local CID
//   netconf.cc  interface up, IPv4 address/prefix, default route (ioctl on an AF_INET socket)
//   system.cc   sethostname, finit_module, reboot, subreaper, zombie peek/reap
//   device_io.cc epoll, fd passing, guest-memory mmap, raw reads/writes for the host's vsock device
// Use it through the typed wrapper native/index.ts, which validates arguments and holds policy;
// the C++ stays a thin, exception-free layer that reports errno errors (errno_error.h).
#include <napi.h>

#include "modules.h"

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  RegisterSockets(env, exports);
  RegisterNetconf(env, exports);
  RegisterSystem(env, exports);
  RegisterDeviceIo(env, exports);
  return exports;
}

NODE_API_MODULE(volant_native, Init)
