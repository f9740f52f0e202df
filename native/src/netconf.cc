// Guest network setup without the `ip` tool: bring a link up, give it an IPv4 address and
// prefix, add the default route. Uses the classic ioctls on an AF_INET datagram socket, which
// every kernel Volant boots supports and which need no netlink message building:
//   SIOCGIFFLAGS/SIOCSIFFLAGS  read-modify-write IFF_UP
//   SIOCSIFADDR, SIOCSIFNETMASK  set the primary address, then its mask (the kernel first
//                              assumes a classful mask, then adjusts the prefix route)
//   SIOCADDRT                  0.0.0.0/0 via the gateway, optionally bound to a device
// Addresses arrive as validated host-order integers from native/index.ts. Each call either
// fully succeeds or throws an errno error (ENODEV for an unknown interface, ENETUNREACH for a
// gateway outside every connected subnet, EINVAL for a mask the kernel rejects).
#include <arpa/inet.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "errno_error.h"
#include "modules.h"

namespace {

constexpr uint32_t kMaxPrefix = 32;

// An AF_INET control socket that closes itself.
class ControlSocket {
 public:
  ControlSocket() : fd_(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {}
  ~ControlSocket() {
    if (fd_ >= 0) close(fd_);
  }
  ControlSocket(const ControlSocket&) = delete;
  ControlSocket& operator=(const ControlSocket&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

sockaddr_in Inet4(uint32_t host_order) {
  sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(host_order);
  return addr;
}

// Copies an interface name into ifr; false (ENODEV-worthy) when it cannot be a kernel name.
bool InterfaceRequest(const std::string& name, ifreq* ifr) {
  memset(ifr, 0, sizeof *ifr);
  if (name.empty() || name.size() >= IFNAMSIZ || name.find('\0') != std::string::npos) return false;
  memcpy(ifr->ifr_name, name.data(), name.size());
  return true;
}

// interfaceUp(name)
Napi::Value InterfaceUp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ExpectString(info, 0, "name")) return env.Undefined();
  std::string name = info[0].As<Napi::String>().Utf8Value();
  ifreq ifr;
  if (!InterfaceRequest(name, &ifr)) return ThrowErrno(env, EINVAL, "SIOCGIFFLAGS", name);
  ControlSocket sock;
  if (sock.fd() < 0) return ThrowErrno(env, errno, "socket");
  if (ioctl(sock.fd(), SIOCGIFFLAGS, &ifr) != 0) return ThrowErrno(env, errno, "SIOCGIFFLAGS", name);
  if (ifr.ifr_flags & IFF_UP) return env.Undefined();
  ifr.ifr_flags |= IFF_UP;
  if (ioctl(sock.fd(), SIOCSIFFLAGS, &ifr) != 0) return ThrowErrno(env, errno, "SIOCSIFFLAGS", name);
  return env.Undefined();
}

// setInterfaceAddress(name, hostOrderAddress, prefix)
Napi::Value SetInterfaceAddress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ExpectString(info, 0, "name") || !ExpectUint32(info, 1, "address") || !ExpectUint32(info, 2, "prefix")) {
    return env.Undefined();
  }
  std::string name = info[0].As<Napi::String>().Utf8Value();
  uint32_t address = info[1].As<Napi::Number>().Uint32Value();
  uint32_t prefix = info[2].As<Napi::Number>().Uint32Value();
  ifreq ifr;
  if (!InterfaceRequest(name, &ifr)) return ThrowErrno(env, EINVAL, "SIOCSIFADDR", name);
  if (prefix > kMaxPrefix) return ThrowErrno(env, EINVAL, "SIOCSIFNETMASK", name);
  ControlSocket sock;
  if (sock.fd() < 0) return ThrowErrno(env, errno, "socket");

  sockaddr_in addr = Inet4(address);
  memcpy(&ifr.ifr_addr, &addr, sizeof addr);
  if (ioctl(sock.fd(), SIOCSIFADDR, &ifr) != 0) return ThrowErrno(env, errno, "SIOCSIFADDR", name);

  uint32_t mask = prefix == 0 ? 0 : ~uint32_t{0} << (kMaxPrefix - prefix);
  sockaddr_in netmask = Inet4(mask);
  memcpy(&ifr.ifr_netmask, &netmask, sizeof netmask);
  if (ioctl(sock.fd(), SIOCSIFNETMASK, &ifr) != 0) return ThrowErrno(env, errno, "SIOCSIFNETMASK", name);
  return env.Undefined();
}

// addDefaultRoute(hostOrderGateway, device?)
Napi::Value AddDefaultRoute(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ExpectUint32(info, 0, "gateway")) return env.Undefined();
  bool has_device = !info[1].IsUndefined();
  if (has_device && !ExpectString(info, 1, "device")) return env.Undefined();
  std::string device = has_device ? info[1].As<Napi::String>().Utf8Value() : "";
  ifreq check;
  if (has_device && !InterfaceRequest(device, &check)) return ThrowErrno(env, EINVAL, "SIOCADDRT", device);

  rtentry route;
  memset(&route, 0, sizeof route);
  sockaddr_in any = Inet4(0);
  sockaddr_in gateway = Inet4(info[0].As<Napi::Number>().Uint32Value());
  memcpy(&route.rt_dst, &any, sizeof any);
  memcpy(&route.rt_genmask, &any, sizeof any);
  memcpy(&route.rt_gateway, &gateway, sizeof gateway);
  route.rt_flags = RTF_UP | RTF_GATEWAY;
  route.rt_dev = has_device ? device.data() : nullptr;

  ControlSocket sock;
  if (sock.fd() < 0) return ThrowErrno(env, errno, "socket");
  if (ioctl(sock.fd(), SIOCADDRT, &route) != 0) return ThrowErrno(env, errno, "SIOCADDRT", device);
  return env.Undefined();
}

}  // namespace

void RegisterNetconf(Napi::Env env, Napi::Object exports) {
  exports.Set("interfaceUp", Napi::Function::New(env, InterfaceUp, "interfaceUp"));
  exports.Set("setInterfaceAddress", Napi::Function::New(env, SetInterfaceAddress, "setInterfaceAddress"));
  exports.Set("addDefaultRoute", Napi::Function::New(env, AddDefaultRoute, "addDefaultRoute"));
}
