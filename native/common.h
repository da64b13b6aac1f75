// Shared plumbing of the addon: system errors that become JS Errors with errno/code/syscall, and a
// worker that runs blocking kernel calls off the event loop and settles a Promise.
#pragma once
#include <napi.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <string>

struct SysError {
  int err = 0;          // positive errno
  std::string op;       // which operation failed, e.g. "netlink route replace 10.244.1.0/24"
  std::string detail;   // kernel extended-ack text, libbpf message, ...
};

inline const char* errnoName(int err) {
  const char* n = strerrorname_np(err);
  return n ? n : "EUNKNOWN";
}

inline Napi::Error makeSysError(Napi::Env env, const SysError& e) {
  std::string msg = e.op + ": " + std::strerror(e.err) + " (" + errnoName(e.err) + ")";
  if (!e.detail.empty()) msg += ": " + e.detail;
  Napi::Error js = Napi::Error::New(env, msg);
  js.Set("errno", Napi::Number::New(env, e.err));
  js.Set("code", Napi::String::New(env, errnoName(e.err)));
  js.Set("syscall", Napi::String::New(env, e.op));
  if (!e.detail.empty()) js.Set("detail", Napi::String::New(env, e.detail));
  return js;
}

template <typename R>
class PromiseWorker : public Napi::AsyncWorker {
 public:
  using Exec = std::function<R()>;
  using Conv = std::function<Napi::Value(Napi::Env, R&)>;

  static Napi::Promise Run(Napi::Env env, Exec exec, Conv conv) {
    auto* w = new PromiseWorker(env, std::move(exec), std::move(conv));
    auto promise = w->deferred_.Promise();
    w->Queue();
    return promise;
  }

 private:
  PromiseWorker(Napi::Env env, Exec exec, Conv conv)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)),
        exec_(std::move(exec)), conv_(std::move(conv)) {}

  void Execute() override {
    try {
      result_ = exec_();
    } catch (const SysError& e) {
      err_ = e;
      SetError(e.op);
    }
  }
  void OnOK() override {
    Napi::HandleScope scope(Env());
    deferred_.Resolve(conv_(Env(), result_));
  }
  void OnError(const Napi::Error&) override {
    Napi::HandleScope scope(Env());
    deferred_.Reject(makeSysError(Env(), err_).Value());
  }

  Napi::Promise::Deferred deferred_;
  Exec exec_;
  Conv conv_;
  R result_{};
  SysError err_;
};
