// See errno_error.h: one place that turns errno into a Node-style Error.
#include "errno_error.h"

#include <uv.h>

namespace {

constexpr size_t kErrorTextBytes = 128;

}  // namespace

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const std::string& detail) {
  char code[kErrorTextBytes];
  char text[kErrorTextBytes];
  // On Unix libuv error numbers are the negated errno values.
  uv_err_name_r(-err, code, sizeof code);
  uv_strerror_r(-err, text, sizeof text);
  std::string message = std::string(code) + ": " + text + ", " + syscall;
  if (!detail.empty()) message += " '" + detail + "'";
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("errno", Napi::Number::New(env, -err));
  error.Set("code", Napi::String::New(env, code));
  error.Set("syscall", Napi::String::New(env, syscall));
  return error;
}

Napi::Value ThrowErrno(Napi::Env env, int err, const char* syscall, const std::string& detail) {
  ErrnoError(env, err, syscall, detail).ThrowAsJavaScriptException();
  return env.Undefined();
}

static bool Fail(const Napi::CallbackInfo& info, size_t index, const char* what, const char* kind) {
  std::string message = std::string("argument ") + std::to_string(index) + " (" + what + ") must be " + kind;
  Napi::TypeError::New(info.Env(), message).ThrowAsJavaScriptException();
  return false;
}

bool ExpectString(const Napi::CallbackInfo& info, size_t index, const char* what) {
  return info[index].IsString() || Fail(info, index, what, "a string");
}

bool ExpectUint32(const Napi::CallbackInfo& info, size_t index, const char* what) {
  if (info[index].IsNumber()) {
    double value = info[index].As<Napi::Number>().DoubleValue();
    if (value >= 0 && value <= 4294967295.0 && value == static_cast<double>(static_cast<uint32_t>(value))) {
      return true;
    }
  }
  return Fail(info, index, what, "an integer in 0..2^32-1");
}

bool ExpectFunction(const Napi::CallbackInfo& info, size_t index, const char* what) {
  return info[index].IsFunction() || Fail(info, index, what, "a function");
}
