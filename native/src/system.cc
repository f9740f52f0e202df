// Process- and machine-level calls a PID 1 needs: sethostname, finit_module, reboot, becoming a
// child subreaper, and the two halves of safe zombie reaping (peek, then reap one pid).
//
// Reaping policy lives in native/index.ts (reapOrphans): it peeks with
// waitid(P_ALL, WEXITED | WNOHANG | WNOWAIT), which reports an exited child WITHOUT consuming
// its status, and reaps with waitpid(pid, WNOHANG) only pids that Node did not spawn. libuv
// reaps its own children by pid, never with waitpid(-1), so the two never take each other's.
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "errno_error.h"
#include "modules.h"

namespace {

// sethostname(name)
Napi::Value SetHostname(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ExpectString(info, 0, "name")) return env.Undefined();
  std::string name = info[0].As<Napi::String>().Utf8Value();
  if (sethostname(name.data(), name.size()) != 0) return ThrowErrno(env, errno, "sethostname", name);
  return env.Undefined();
}

// finitModule(path, params) -> true when loaded now, false when it was already loaded (EEXIST).
Napi::Value FinitModule(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ExpectString(info, 0, "path") || !ExpectString(info, 1, "params")) return env.Undefined();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  std::string params = info[1].As<Napi::String>().Utf8Value();
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ThrowErrno(env, errno, "open", path);
  long rc = syscall(SYS_finit_module, fd, params.c_str(), 0);
  int err = errno;
  close(fd);
  if (rc == 0) return Napi::Boolean::New(env, true);
  if (err == EEXIST) return Napi::Boolean::New(env, false);
  return ThrowErrno(env, err, "finit_module", path);
}

// reboot("power-off" | "restart"): syncs filesystems, then asks the kernel. Returns only on error.
Napi::Value Reboot(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ExpectString(info, 0, "how")) return env.Undefined();
  std::string how = info[0].As<Napi::String>().Utf8Value();
  int command;
  if (how == "power-off") {
    command = RB_POWER_OFF;
  } else if (how == "restart") {
    command = RB_AUTOBOOT;
  } else {
    return ThrowErrno(env, EINVAL, "reboot", how);
  }
  sync();
  reboot(command);
  return ThrowErrno(env, errno, "reboot", how);
}

// setChildSubreaper(): orphaned descendants get reparented to this process instead of PID 1.
Napi::Value SetChildSubreaper(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) return ThrowErrno(env, errno, "prctl", "PR_SET_CHILD_SUBREAPER");
  return env.Undefined();
}

// peekExitedChild() -> pid of some exited child (its status left in place), or 0 when none.
Napi::Value PeekExitedChild(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  siginfo_t child;
  memset(&child, 0, sizeof child);
  if (waitid(P_ALL, 0, &child, WEXITED | WNOHANG | WNOWAIT) != 0) {
    if (errno == ECHILD) return Napi::Number::New(env, 0);
    return ThrowErrno(env, errno, "waitid");
  }
  return Napi::Number::New(env, child.si_pid);
}

// reapChild(pid) -> true when this call collected the exited child `pid`.
Napi::Value ReapChild(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ExpectUint32(info, 0, "pid")) return env.Undefined();
  pid_t pid = static_cast<pid_t>(info[0].As<Napi::Number>().Uint32Value());
  if (pid <= 0) return ThrowErrno(env, EINVAL, "waitpid");
  int status = 0;
  pid_t rc = waitpid(pid, &status, WNOHANG);
  if (rc < 0) {
    if (errno == ECHILD) return Napi::Boolean::New(env, false);
    return ThrowErrno(env, errno, "waitpid");
  }
  return Napi::Boolean::New(env, rc == pid);
}

}  // namespace

void RegisterSystem(Napi::Env env, Napi::Object exports) {
  exports.Set("sethostname", Napi::Function::New(env, SetHostname, "sethostname"));
  exports.Set("finitModule", Napi::Function::New(env, FinitModule, "finitModule"));
  exports.Set("reboot", Napi::Function::New(env, Reboot, "reboot"));
  exports.Set("setChildSubreaper", Napi::Function::New(env, SetChildSubreaper, "setChildSubreaper"));
  exports.Set("peekExitedChild", Napi::Function::New(env, PeekExitedChild, "peekExitedChild"));
  exports.Set("reapChild", Napi::Function::New(env, ReapChild, "reapChild"));
}
