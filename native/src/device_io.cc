// System calls a userspace virtio device needs that Node lacks (host side, one device per
// process, see host/vsock/device/). Everything here is a thin, allocation-light wrapper:
//
//   Epoll      an epoll set whose readiness drives one JavaScript callback through a uv_poll on
//              the epoll fd itself, so a device multiplexes hundreds of sockets, eventfds and its
//              vhost-user channel with one callback per loop turn and drains events in batches
//   recvMsg    recvmsg with SCM_RIGHTS: vhost-user passes memory fds and eventfds this way
//   sendMsg    sendmsg with optional SCM_RIGHTS (tests play the VMM side with it)
//   readInto   read(2) into a Uint8Array window (e.g. guest memory): no JavaScript Buffer per call
//   writeFrom  send(MSG_NOSIGNAL) or write(2) from a Uint8Array window
//   mmapShared mmap(MAP_SHARED) of a memory fd as an external ArrayBuffer, unmapped when collected
//   accept/connect on AF_UNIX (listening is sockets.cc's unixListen), shutdown(SHUT_WR),
//              memfd_create and eventfd for tests
//
// What must hold:
// - every fd made here is O_NONBLOCK and O_CLOEXEC (received fds too: MSG_CMSG_CLOEXEC), so no
//   call blocks the event loop and no fd leaks into a child process;
// - a window (offset, length) is checked against the typed array before any syscall: the kernel
//   never reads or writes outside the memory JavaScript handed over;
// - the data-path calls (readInto, writeFrom, Epoll.wait) return numbers, negative errno on
//   failure, and never throw, so the hot path has no exceptions and no allocations;
// - a mapping stays valid while any JavaScript view of it lives (unmapped in the finalizer only).
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <memory>
#include <vector>

#include "errno_error.h"
#include "modules.h"
#include "unix_address.h"

namespace {

// SCM_RIGHTS carries at most this many fds per message in vhost-user (VHOST_MEMORY_BASELINE_NREGIONS).
constexpr size_t kMaxFdsPerMessage = 8;
// Events fetched by one Epoll.wait call at most (the caller loops while it gets a full batch).
constexpr int kMaxEventsPerWait = 256;

// Resolves (array, offset, length) to a pointer inside the typed array, or nullptr (after a
// TypeError/RangeError is thrown) when the window does not fit.
uint8_t* Window(const Napi::CallbackInfo& info, size_t index, size_t* length) {
  Napi::Env env = info.Env();
  if (!info[index].IsTypedArray() || info[index].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    Napi::TypeError::New(env, "argument " + std::to_string(index) + " must be a Uint8Array").ThrowAsJavaScriptException();
    return nullptr;
  }
  if (!ExpectUint32(info, index + 1, "offset") || !ExpectUint32(info, index + 2, "length")) return nullptr;
  Napi::Uint8Array array = info[index].As<Napi::Uint8Array>();
  size_t offset = info[index + 1].As<Napi::Number>().Uint32Value();
  size_t len = info[index + 2].As<Napi::Number>().Uint32Value();
  if (offset > array.ByteLength() || len > array.ByteLength() - offset) {
    Napi::RangeError::New(env, "window " + std::to_string(offset) + "+" + std::to_string(len) + " is outside the array of " +
                                   std::to_string(array.ByteLength()) + " bytes")
        .ThrowAsJavaScriptException();
    return nullptr;
  }
  *length = len;
  return array.Data() + offset;
}

int FdArgument(const Napi::CallbackInfo& info, size_t index) {
  if (!ExpectUint32(info, index, "fd")) return -1;
  return static_cast<int>(info[index].As<Napi::Number>().Uint32Value());
}

// The (fd, array, offset, length) arguments the I/O calls start with; false after throwing.
struct FdWindow {
  int fd;
  uint8_t* data;
  size_t length;
};

bool FdWindowArguments(const Napi::CallbackInfo& info, FdWindow* out) {
  out->fd = FdArgument(info, 0);
  if (out->fd < 0) return false;
  out->data = Window(info, 1, &out->length);
  return out->data != nullptr;
}

// Runs a syscall again while it is interrupted; returns its result (errno set when negative).
template <typename Call>
ssize_t Retrying(Call call) {
  ssize_t n;
  do {
    n = call();
  } while (n < 0 && errno == EINTR);
  return n;
}

// A byte count, or the negative errno of the failed call that produced `n`.
Napi::Value CountOrErrno(Napi::Env env, ssize_t n) { return Napi::Number::New(env, n < 0 ? -errno : static_cast<double>(n)); }

// ---------------------------------------------------------------------------------------------
// Epoll

class Epoll : public Napi::ObjectWrap<Epoll> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Epoll",
                       {InstanceMethod("add", &Epoll::Add), InstanceMethod("modify", &Epoll::Modify),
                        InstanceMethod("remove", &Epoll::Remove), InstanceMethod("wait", &Epoll::Wait),
                        InstanceMethod("close", &Epoll::Close)});
  }

  // new Epoll(onReady): onReady() is called on the loop thread whenever an fd in the set is ready.
  explicit Epoll(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Epoll>(info) {
    Napi::Env env = info.Env();
    if (!ExpectFunction(info, 0, "onReady")) return;
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epfd_ < 0) {
      ThrowErrno(env, errno, "epoll_create1");
      return;
    }
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env, &loop);
    poll_ = new uv_poll_t;
    int rc = uv_poll_init(loop, poll_, epfd_);
    if (rc != 0) {
      delete poll_;
      poll_ = nullptr;
      close(epfd_);
      epfd_ = -1;
      ThrowErrno(env, -rc, "uv_poll_init");
      return;
    }
    poll_->data = this;
    rc = uv_poll_start(poll_, UV_READABLE, OnReadable);
    if (rc != 0) {
      CloseHandles();
      ThrowErrno(env, -rc, "uv_poll_start");
      return;
    }
    on_ready_ = Napi::Persistent(info[0].As<Napi::Function>());
    context_ = std::make_unique<Napi::AsyncContext>(env, "VolantEpoll");
  }

  ~Epoll() override { CloseHandles(); }

 private:
  static void FreePoll(uv_handle_t* handle) { delete reinterpret_cast<uv_poll_t*>(handle); }

  static void OnReadable(uv_poll_t* handle, int /*status*/, int /*events*/) {
    auto* self = static_cast<Epoll*>(handle->data);
    if (self == nullptr || self->on_ready_.IsEmpty()) return;
    Napi::Env env = self->on_ready_.Env();
    Napi::HandleScope scope(env);
    self->on_ready_.MakeCallback(env.Global(), {}, *self->context_);
    if (env.IsExceptionPending()) napi_fatal_exception(env, env.GetAndClearPendingException().Value());
  }

  void CloseHandles() {
    if (poll_ != nullptr) {
      poll_->data = nullptr;
      uv_poll_stop(poll_);
      uv_close(reinterpret_cast<uv_handle_t*>(poll_), FreePoll);
      poll_ = nullptr;
    }
    if (epfd_ >= 0) {
      close(epfd_);
      epfd_ = -1;
    }
  }

  Napi::Value Control(const Napi::CallbackInfo& info, int op, const char* name) {
    Napi::Env env = info.Env();
    if (epfd_ < 0) return ThrowErrno(env, EBADF, name);
    int fd = FdArgument(info, 0);
    if (fd < 0) return env.Undefined();
    epoll_event ev;
    memset(&ev, 0, sizeof ev);
    if (op != EPOLL_CTL_DEL) {
      if (!ExpectUint32(info, 1, "events") || !info[2].IsNumber()) {
        if (!env.IsExceptionPending()) Napi::TypeError::New(env, "argument 2 (token) must be a number").ThrowAsJavaScriptException();
        return env.Undefined();
      }
      ev.events = info[1].As<Napi::Number>().Uint32Value();
      ev.data.u64 = static_cast<uint32_t>(info[2].As<Napi::Number>().Int32Value());
    }
    if (epoll_ctl(epfd_, op, fd, &ev) != 0) return ThrowErrno(env, errno, name);
    return env.Undefined();
  }

  // add(fd, events, token): token (an int32) comes back from wait() with the events.
  Napi::Value Add(const Napi::CallbackInfo& info) { return Control(info, EPOLL_CTL_ADD, "epoll_ctl(ADD)"); }
  Napi::Value Modify(const Napi::CallbackInfo& info) { return Control(info, EPOLL_CTL_MOD, "epoll_ctl(MOD)"); }
  Napi::Value Remove(const Napi::CallbackInfo& info) { return Control(info, EPOLL_CTL_DEL, "epoll_ctl(DEL)"); }

  // wait(out: Int32Array) -> n: fills out[2i] = token, out[2i+1] = events; never blocks.
  Napi::Value Wait(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
      Napi::TypeError::New(env, "argument 0 must be an Int32Array").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (epfd_ < 0) return Napi::Number::New(env, -EBADF);
    Napi::Int32Array out = info[0].As<Napi::Int32Array>();
    int max = static_cast<int>(out.ElementLength() / 2);
    if (max > kMaxEventsPerWait) max = kMaxEventsPerWait;
    if (max <= 0) return Napi::Number::New(env, 0);
    epoll_event events[kMaxEventsPerWait];
    int n = epoll_wait(epfd_, events, max, 0);
    if (n < 0) return Napi::Number::New(env, errno == EINTR ? 0 : -errno);
    int32_t* data = out.Data();
    for (int i = 0; i < n; i++) {
      data[2 * i] = static_cast<int32_t>(static_cast<uint32_t>(events[i].data.u64));
      data[2 * i + 1] = static_cast<int32_t>(events[i].events);
    }
    return Napi::Number::New(env, n);
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    CloseHandles();
    on_ready_.Reset();
    return info.Env().Undefined();
  }

  int epfd_ = -1;
  uv_poll_t* poll_ = nullptr;
  Napi::FunctionReference on_ready_;
  std::unique_ptr<Napi::AsyncContext> context_;
};

// ---------------------------------------------------------------------------------------------
// Messages with fds

// A msghdr over one buffer, with room for kMaxFdsPerMessage fds of ancillary data.
struct OneBufferMessage {
  explicit OneBufferMessage(const FdWindow& w) : iov{w.data, w.length} {
    memset(&msg, 0, sizeof msg);
    memset(control, 0, sizeof control);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
  }
  OneBufferMessage(const OneBufferMessage&) = delete;
  OneBufferMessage& operator=(const OneBufferMessage&) = delete;
  iovec iov;
  msghdr msg;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
};

// recvMsg(fd, array, offset, length) -> { bytes, fds }: bytes is negative errno on failure
// (-EAGAIN when nothing is there); fds are the SCM_RIGHTS descriptors that came with the bytes.
// A truncated control message (more fds than kMaxFdsPerMessage) is reported as -EMSGSIZE after
// closing what did arrive.
Napi::Value RecvMsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  FdWindow w;
  if (!FdWindowArguments(info, &w)) return env.Undefined();
  OneBufferMessage m(w);
  msghdr& msg = m.msg;
  msg.msg_control = m.control;
  msg.msg_controllen = sizeof m.control;
  ssize_t n = Retrying([&] { return recvmsg(w.fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC); });
  Napi::Object result = Napi::Object::New(env);
  Napi::Array fds = Napi::Array::New(env);
  int err = n < 0 ? errno : 0;
  uint32_t count = 0;
  if (n >= 0) {
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      int received[kMaxFdsPerMessage];
      memcpy(received, CMSG_DATA(c), k * sizeof(int));
      for (size_t i = 0; i < k; i++) fds.Set(count++, Napi::Number::New(env, received[i]));
    }
    if (msg.msg_flags & MSG_CTRUNC) {
      for (uint32_t i = 0; i < count; i++) close(fds.Get(i).As<Napi::Number>().Int32Value());
      fds = Napi::Array::New(env);
      err = EMSGSIZE;
    }
  }
  result.Set("bytes", Napi::Number::New(env, err != 0 ? -err : static_cast<double>(n)));
  result.Set("fds", fds);
  return result;
}

// sendMsg(fd, array, offset, length, fds: number[]) -> bytes sent or negative errno.
Napi::Value SendMsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  FdWindow w;
  if (!FdWindowArguments(info, &w)) return env.Undefined();
  if (!info[4].IsArray()) {
    Napi::TypeError::New(env, "argument 4 (fds) must be an array").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array list = info[4].As<Napi::Array>();
  if (list.Length() > kMaxFdsPerMessage) return ThrowErrno(env, EINVAL, "sendmsg", "more than 8 fds");
  int send_fds[kMaxFdsPerMessage];
  for (uint32_t i = 0; i < list.Length(); i++) {
    Napi::Value v = list.Get(i);
    if (!v.IsNumber()) return ThrowErrno(env, EINVAL, "sendmsg", "fds must be numbers");
    send_fds[i] = v.As<Napi::Number>().Int32Value();
  }
  OneBufferMessage m(w);
  msghdr& msg = m.msg;
  if (list.Length() > 0) {
    msg.msg_control = m.control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * list.Length());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * list.Length());
    memcpy(CMSG_DATA(c), send_fds, sizeof(int) * list.Length());
  }
  return CountOrErrno(env, Retrying([&] { return sendmsg(w.fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL); }));
}

// ---------------------------------------------------------------------------------------------
// Data path

// readInto(fd, array, offset, length) -> bytes read (0 = end of stream) or negative errno.
Napi::Value ReadInto(const Napi::CallbackInfo& info) {
  FdWindow w;
  if (!FdWindowArguments(info, &w)) return info.Env().Undefined();
  return CountOrErrno(info.Env(), Retrying([&] { return read(w.fd, w.data, w.length); }));
}

// writeFrom(fd, array, offset, length) -> bytes written or negative errno. Sockets get
// MSG_NOSIGNAL (a closed peer is EPIPE, never SIGPIPE); other fds (eventfds) plain write(2).
Napi::Value WriteFrom(const Napi::CallbackInfo& info) {
  FdWindow w;
  if (!FdWindowArguments(info, &w)) return info.Env().Undefined();
  ssize_t n = Retrying([&] { return send(w.fd, w.data, w.length, MSG_DONTWAIT | MSG_NOSIGNAL); });
  if (n < 0 && errno == ENOTSOCK) n = Retrying([&] { return write(w.fd, w.data, w.length); });
  return CountOrErrno(info.Env(), n);
}

// shutdownWrite(fd) -> 0 or negative errno.
Napi::Value ShutdownWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArgument(info, 0);
  if (fd < 0) return env.Undefined();
  return Napi::Number::New(env, shutdown(fd, SHUT_WR) == 0 ? 0 : -errno);
}

// ---------------------------------------------------------------------------------------------
// Unix sockets

// acceptConnection(fd) -> new fd (non-blocking, close-on-exec) or negative errno.
Napi::Value AcceptConnection(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArgument(info, 0);
  if (fd < 0) return env.Undefined();
  return CountOrErrno(env, Retrying([&] { return accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC); }));
}

// connectUnixSocket(path) -> fd or negative errno. An AF_UNIX connect finishes at once: it is
// accepted into the listener's backlog, refused, or EAGAIN when that backlog is full.
Napi::Value ConnectUnixSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ExpectString(info, 0, "path")) return env.Undefined();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  sockaddr_un addr;
  if (!UnixAddress(path, &addr)) return Napi::Number::New(env, -ENAMETOOLONG);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Napi::Number::New(env, -errno);
  if (Retrying([&] { return connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr); }) != 0) {
    int err = errno;
    close(fd);
    return Napi::Number::New(env, -err);
  }
  return Napi::Number::New(env, fd);
}

// ---------------------------------------------------------------------------------------------
// Memory

void Unmap(napi_env /*env*/, void* data, void* hint) {
  munmap(data, reinterpret_cast<size_t>(hint));
}

// mmapShared(fd, offset, length) -> ArrayBuffer over MAP_SHARED memory (throws). The fd may be
// closed afterwards; the mapping lives until the ArrayBuffer is garbage-collected.
Napi::Value MmapShared(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArgument(info, 0);
  if (fd < 0) return env.Undefined();
  if (!info[1].IsNumber() || !info[2].IsNumber()) return ThrowErrno(env, EINVAL, "mmap", "offset and length must be numbers");
  double offset = info[1].As<Napi::Number>().DoubleValue();
  double length = info[2].As<Napi::Number>().DoubleValue();
  long page = sysconf(_SC_PAGESIZE);
  if (!(offset >= 0) || offset > 9007199254740991.0 || offset != static_cast<double>(static_cast<uint64_t>(offset)) ||
      static_cast<uint64_t>(offset) % static_cast<uint64_t>(page) != 0) {
    return ThrowErrno(env, EINVAL, "mmap", "offset must be a page-aligned safe integer");
  }
  if (!(length >= 1) || length > 9007199254740991.0 || length != static_cast<double>(static_cast<uint64_t>(length))) {
    return ThrowErrno(env, EINVAL, "mmap", "length must be a positive safe integer");
  }
  size_t len = static_cast<size_t>(length);
  void* base = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(offset));
  if (base == MAP_FAILED) return ThrowErrno(env, errno, "mmap");
  napi_value buffer;
  napi_status status = napi_create_external_arraybuffer(env, base, len, Unmap, reinterpret_cast<void*>(len), &buffer);
  if (status != napi_ok) {
    munmap(base, len);
    return ThrowErrno(env, ENOMEM, "napi_create_external_arraybuffer");
  }
  return Napi::Value(env, buffer);
}

// memfdCreate(name, size) -> fd (throws): anonymous shared memory, as QEMU's memory-backend-memfd.
Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ExpectString(info, 0, "name") || !info[1].IsNumber()) return env.Undefined();
  std::string name = info[0].As<Napi::String>().Utf8Value();
  double size = info[1].As<Napi::Number>().DoubleValue();
  if (!(size >= 0) || size > 9007199254740991.0) return ThrowErrno(env, EINVAL, "ftruncate", "size");
  int fd = static_cast<int>(syscall(SYS_memfd_create, name.c_str(), MFD_CLOEXEC));
  if (fd < 0) return ThrowErrno(env, errno, "memfd_create");
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    int err = errno;
    close(fd);
    return ThrowErrno(env, err, "ftruncate");
  }
  return Napi::Number::New(env, fd);
}

// eventfdCreate() -> fd (throws): non-blocking, close-on-exec, counter 0.
Napi::Value EventfdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return ThrowErrno(env, errno, "eventfd");
  return Napi::Number::New(env, fd);
}

}  // namespace

void RegisterDeviceIo(Napi::Env env, Napi::Object exports) {
  exports.Set("Epoll", Epoll::Define(env));
  exports.Set("recvMsg", Napi::Function::New(env, RecvMsg, "recvMsg"));
  exports.Set("sendMsg", Napi::Function::New(env, SendMsg, "sendMsg"));
  exports.Set("readInto", Napi::Function::New(env, ReadInto, "readInto"));
  exports.Set("writeFrom", Napi::Function::New(env, WriteFrom, "writeFrom"));
  exports.Set("shutdownWrite", Napi::Function::New(env, ShutdownWrite, "shutdownWrite"));
  exports.Set("acceptConnection", Napi::Function::New(env, AcceptConnection, "acceptConnection"));
  exports.Set("connectUnixSocket", Napi::Function::New(env, ConnectUnixSocket, "connectUnixSocket"));
  exports.Set("mmapShared", Napi::Function::New(env, MmapShared, "mmapShared"));
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate, "memfdCreate"));
  exports.Set("eventfdCreate", Napi::Function::New(env, EventfdCreate, "eventfdCreate"));
}
