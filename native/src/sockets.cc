// Stream sockets for Node that Node cannot create itself: AF_VSOCK (plus AF_UNIX/AF_INET twins
// of the same code paths so the machinery can be tested on a machine whose vsock is off-limits).
//
// This file only makes file descriptors; it never reads or writes them. JavaScript wraps each
// fd in a libuv stream handle (Node's Pipe wrap) so libuv does all I/O on its event loop, with
// real backpressure and close semantics (see native/streams.ts for why that works).
//
// What must hold:
// - every fd is created SOCK_NONBLOCK | SOCK_CLOEXEC (no blocking I/O, no leaks into workloads);
// - a connect completes asynchronously: connect() returns EINPROGRESS, a uv_poll handle waits
//   for writability on the loop thread, then SO_ERROR says whether it worked. The poll handle is
//   stopped (which removes the fd from epoll) before JavaScript opens a Pipe on the same fd;
// - on every failure the fd is closed and a Node-style errno error is reported.
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "errno_error.h"
#include "modules.h"
#include "unix_address.h"

namespace {

constexpr int kStreamType = SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC;

// The outcome of a syscall sequence: an fd, or the errno and the name of the syscall that failed.
struct FdResult {
  int fd;
  int err;
  const char* syscall;
};

FdResult Failed(int fd, const char* syscall) {
  int err = errno;
  if (fd >= 0) close(fd);
  return {-1, err, syscall};
}

FdResult BindAndListen(const sockaddr* addr, socklen_t len, int backlog) {
  int fd = socket(addr->sa_family, kStreamType, 0);
  if (fd < 0) return Failed(fd, "socket");
  if (bind(fd, addr, len) != 0) return Failed(fd, "bind");
  if (listen(fd, backlog) != 0) return Failed(fd, "listen");
  return {fd, 0, nullptr};
}

// A connect in flight: the poll handle owns this struct and frees it from its close callback.
struct PendingConnect {
  PendingConnect(Napi::Env env, int fd, Napi::Function callback)
      : env(env), fd(fd), callback(Napi::Persistent(callback)), context(env, "VolantNativeConnect") {}
  uv_poll_t poll;
  Napi::Env env;
  int fd;
  Napi::FunctionReference callback;
  Napi::AsyncContext context;
};

void FreePendingConnect(uv_handle_t* handle) { delete static_cast<PendingConnect*>(handle->data); }

void OnConnectWritable(uv_poll_t* handle, int status, int /*events*/) {
  auto* pending = static_cast<PendingConnect*>(handle->data);
  uv_poll_stop(handle);
  // SO_ERROR first: libuv reports EPOLLERR (a refused or reset connect) as status UV_EBADF.
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(pending->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err == 0 && status < 0) err = -status;
  Napi::Env env = pending->env;
  Napi::HandleScope scope(env);
  if (err != 0) {
    close(pending->fd);
    pending->callback.MakeCallback(env.Global(), {ErrnoError(env, err, "connect").Value()}, pending->context);
  } else {
    pending->callback.MakeCallback(env.Global(), {env.Null(), Napi::Number::New(env, pending->fd)},
                                   pending->context);
  }
  if (env.IsExceptionPending()) napi_fatal_exception(env, env.GetAndClearPendingException().Value());
  uv_close(reinterpret_cast<uv_handle_t*>(handle), FreePendingConnect);
}

// Starts a non-blocking connect and calls callback(err) or callback(null, fd) from the loop.
// Errors known at once (bad address family, ECONNREFUSED on AF_UNIX) are thrown synchronously.
Napi::Value StartConnect(const Napi::CallbackInfo& info, const sockaddr* addr, socklen_t len,
                         Napi::Function callback) {
  Napi::Env env = info.Env();
  int fd = socket(addr->sa_family, kStreamType, 0);
  if (fd < 0) return ThrowErrno(env, errno, "socket");
  if (connect(fd, addr, len) != 0 && errno != EINPROGRESS) {
    FdResult failed = Failed(fd, "connect");
    return ThrowErrno(env, failed.err, failed.syscall);
  }
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);
  auto* pending = new PendingConnect(env, fd, callback);
  pending->poll.data = pending;
  int rc = uv_poll_init_socket(loop, &pending->poll, fd);
  if (rc != 0) {  // the handle was never initialised: free it directly, not through uv_close
    close(fd);
    delete pending;
    return ThrowErrno(env, -rc, "uv_poll_init_socket");
  }
  rc = uv_poll_start(&pending->poll, UV_WRITABLE, OnConnectWritable);
  if (rc != 0) {
    close(fd);
    uv_close(reinterpret_cast<uv_handle_t*>(&pending->poll), FreePendingConnect);
    return ThrowErrno(env, -rc, "uv_poll_start");
  }
  return env.Undefined();
}

sockaddr_vm VsockAddress(uint32_t cid, uint32_t port) {
  sockaddr_vm addr;
  memset(&addr, 0, sizeof addr);
  addr.svm_family = AF_VSOCK;
  addr.svm_cid = cid;
  addr.svm_port = port;
  return addr;
}

sockaddr_in Inet4Address(uint32_t host_order_address, uint32_t port) {
  sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(host_order_address);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  return addr;
}

// vsockListen(cid, port, backlog) -> { fd, port }: port is the bound one (VMADDR_PORT_ANY picks).
Napi::Value VsockListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ExpectUint32(info, 0, "cid") || !ExpectUint32(info, 1, "port") || !ExpectUint32(info, 2, "backlog")) {
    return env.Undefined();
  }
  sockaddr_vm addr = VsockAddress(info[0].As<Napi::Number>().Uint32Value(), info[1].As<Napi::Number>().Uint32Value());
  FdResult bound = BindAndListen(reinterpret_cast<sockaddr*>(&addr), sizeof addr,
                                 static_cast<int>(info[2].As<Napi::Number>().Uint32Value()));
  if (bound.fd < 0) return ThrowErrno(env, bound.err, bound.syscall);
  socklen_t len = sizeof addr;
  if (getsockname(bound.fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    FdResult failed = Failed(bound.fd, "getsockname");
    return ThrowErrno(env, failed.err, failed.syscall);
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("fd", Napi::Number::New(env, bound.fd));
  result.Set("port", Napi::Number::New(env, addr.svm_port));
  return result;
}

// vsockConnect(cid, port, callback)
Napi::Value VsockConnect(const Napi::CallbackInfo& info) {
  if (!ExpectUint32(info, 0, "cid") || !ExpectUint32(info, 1, "port") || !ExpectFunction(info, 2, "callback")) {
    return info.Env().Undefined();
  }
  sockaddr_vm addr = VsockAddress(info[0].As<Napi::Number>().Uint32Value(), info[1].As<Napi::Number>().Uint32Value());
  return StartConnect(info, reinterpret_cast<sockaddr*>(&addr), sizeof addr, info[2].As<Napi::Function>());
}

// vsockLocalCid() -> number, from the /dev/vsock ioctl (works without opening a socket).
Napi::Value VsockLocalCid(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ThrowErrno(env, errno, "open", "/dev/vsock");
  unsigned int cid = 0;
  int rc = ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid);
  int err = errno;
  close(fd);
  if (rc != 0) return ThrowErrno(env, err, "ioctl", "IOCTL_VM_SOCKETS_GET_LOCAL_CID");
  return Napi::Number::New(env, cid);
}

// AF_UNIX/AF_INET twins of the same listen/connect code. unixListen also serves the host's vsock
// device (its hybrid and vhost-user sockets, native/device-io.ts); the others are for tests
// (native/index.ts `forTesting`).

// unixListen(path, backlog) -> fd, non-blocking and close-on-exec
Napi::Value UnixListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ExpectString(info, 0, "path") || !ExpectUint32(info, 1, "backlog")) return env.Undefined();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  sockaddr_un addr;
  if (!UnixAddress(path, &addr)) return ThrowErrno(env, ENAMETOOLONG, "bind", path);
  FdResult bound = BindAndListen(reinterpret_cast<sockaddr*>(&addr), sizeof addr,
                                 static_cast<int>(info[1].As<Napi::Number>().Uint32Value()));
  if (bound.fd < 0) return ThrowErrno(env, bound.err, bound.syscall, path);
  return Napi::Number::New(env, bound.fd);
}

// tcp4Connect(hostOrderAddress, port, callback): a loopback TCP connect really goes through
// EINPROGRESS, so it exercises the asynchronous connect path that vsock uses.
Napi::Value Tcp4Connect(const Napi::CallbackInfo& info) {
  if (!ExpectUint32(info, 0, "address") || !ExpectUint32(info, 1, "port") || !ExpectFunction(info, 2, "callback")) {
    return info.Env().Undefined();
  }
  sockaddr_in addr = Inet4Address(info[0].As<Napi::Number>().Uint32Value(), info[1].As<Napi::Number>().Uint32Value());
  return StartConnect(info, reinterpret_cast<sockaddr*>(&addr), sizeof addr, info[2].As<Napi::Function>());
}

// socketPair() -> [fd, fd]: two connected AF_UNIX stream ends.
Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fds[2];
  if (socketpair(AF_UNIX, kStreamType, 0, fds) != 0) return ThrowErrno(env, errno, "socketpair");
  Napi::Array result = Napi::Array::New(env, 2);
  result.Set(0u, Napi::Number::New(env, fds[0]));
  result.Set(1u, Napi::Number::New(env, fds[1]));
  return result;
}

// closeFd(fd): for an fd JavaScript got but could not wrap (a Pipe handle owns it otherwise).
Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ExpectUint32(info, 0, "fd")) return env.Undefined();
  if (close(static_cast<int>(info[0].As<Napi::Number>().Uint32Value())) != 0) return ThrowErrno(env, errno, "close");
  return env.Undefined();
}

}  // namespace

void RegisterSockets(Napi::Env env, Napi::Object exports) {
  exports.Set("vsockListen", Napi::Function::New(env, VsockListen, "vsockListen"));
  exports.Set("vsockConnect", Napi::Function::New(env, VsockConnect, "vsockConnect"));
  exports.Set("vsockLocalCid", Napi::Function::New(env, VsockLocalCid, "vsockLocalCid"));
  exports.Set("unixListen", Napi::Function::New(env, UnixListen, "unixListen"));
  exports.Set("tcp4Connect", Napi::Function::New(env, Tcp4Connect, "tcp4Connect"));
  exports.Set("socketPair", Napi::Function::New(env, SocketPair, "socketPair"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
}
