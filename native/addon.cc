// Entry point of the native addon: the JS-facing functions. Argument parsing happens here, on the JS
// thread; the kernel calls run in PromiseWorkers.
#include <linux/neighbour.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <malloc.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>

#include "common.h"
#include "netlink.h"

void InitBpf(Napi::Env env, Napi::Object exports);
void InitUdp(Napi::Env env, Napi::Object exports);

namespace {

Napi::Value NetlinkExec(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) throw Napi::TypeError::New(env, "netlinkExec(ops: object[])");
  Napi::Array ops = info[0].As<Napi::Array>();
  auto reqs = std::make_shared<std::vector<NlRequest>>();
  reqs->reserve(ops.Length());
  for (uint32_t i = 0; i < ops.Length(); i++) {
    Napi::Value v = ops.Get(i);
    if (!v.IsObject()) throw Napi::TypeError::New(env, "netlinkExec: op " + std::to_string(i) + " is not an object");
    reqs->push_back(encodeOp(v.As<Napi::Object>()));
  }
  return PromiseWorker<std::vector<NlResult>>::Run(
      env, [reqs] { return nlExec(*reqs); },
      [reqs](Napi::Env env, std::vector<NlResult>& res) -> Napi::Value {
        Napi::Array arr = Napi::Array::New(env, res.size());
        for (size_t i = 0; i < res.size(); i++) {
          if (!res[i].err) { arr.Set(i, env.Null()); continue; }
          SysError e{res[i].err, "netlink " + (*reqs)[i].what, res[i].extack};
          arr.Set(i, makeSysError(env, e).Value());
        }
        return arr;
      });
}

Napi::Value Links(const Napi::CallbackInfo& info) {
  return PromiseWorker<std::vector<LinkInfo>>::Run(
      info.Env(), [] { return nlDumpLinks(); },
      [](Napi::Env env, std::vector<LinkInfo>& v) -> Napi::Value {
        Napi::Array arr = Napi::Array::New(env, v.size());
        for (size_t i = 0; i < v.size(); i++) {
          const LinkInfo& l = v[i];
          Napi::Object o = Napi::Object::New(env);
          o.Set("index", l.index);
          o.Set("name", l.name);
          o.Set("kind", l.kind);
          o.Set("mtu", l.mtu);
          o.Set("mac", l.mac);
          o.Set("flags", l.flags);
          o.Set("master", l.master);
          o.Set("parent", l.parent);
          o.Set("operstate", l.operstate);
          if (l.isVxlan) {
            Napi::Object vx = Napi::Object::New(env);
            if (l.hasVni) vx.Set("vni", l.vni);
            if (!l.vxLocal.empty()) vx.Set("local", l.vxLocal);
            vx.Set("link", l.vxLink);
            vx.Set("port", l.vxPort);
            vx.Set("learning", l.vxLearning);
            vx.Set("external", l.vxExternal);
            o.Set("vxlan", vx);
          }
          arr.Set(i, o);
        }
        return arr;
      });
}

int familyArg(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "family (number) expected");
  return info[0].As<Napi::Number>().Int32Value();
}

Napi::Value Addrs(const Napi::CallbackInfo& info) {
  int family = familyArg(info);
  return PromiseWorker<std::vector<AddrInfo>>::Run(
      info.Env(), [family] { return nlDumpAddrs(family); },
      [](Napi::Env env, std::vector<AddrInfo>& v) -> Napi::Value {
        Napi::Array arr = Napi::Array::New(env, v.size());
        for (size_t i = 0; i < v.size(); i++) {
          Napi::Object o = Napi::Object::New(env);
          o.Set("index", v[i].index);
          o.Set("family", v[i].family);
          o.Set("address", v[i].address);
          o.Set("prefixLen", v[i].prefixLen);
          o.Set("scope", v[i].scope);
          arr.Set(i, o);
        }
        return arr;
      });
}

Napi::Object routeObject(Napi::Env env, const RouteInfo& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("family", r.family);
  o.Set("dst", r.dst);
  o.Set("dstLen", r.dstLen);
  if (!r.gateway.empty()) o.Set("gateway", r.gateway);
  if (!r.prefsrc.empty()) o.Set("prefsrc", r.prefsrc);
  o.Set("dev", r.oif);
  o.Set("table", r.table);
  o.Set("protocol", r.protocol);
  o.Set("scope", r.scope);
  o.Set("type", r.type);
  o.Set("flags", r.flags);
  o.Set("priority", r.priority);
  return o;
}

Napi::Value Routes(const Napi::CallbackInfo& info) {
  int family = familyArg(info);
  return PromiseWorker<std::vector<RouteInfo>>::Run(
      info.Env(), [family] { return nlDumpRoutes(family); },
      [](Napi::Env env, std::vector<RouteInfo>& v) -> Napi::Value {
        Napi::Array arr = Napi::Array::New(env, v.size());
        for (size_t i = 0; i < v.size(); i++) arr.Set(i, routeObject(env, v[i]));
        return arr;
      });
}

// netlinkRouteGet(dst: string): the route `ip route get dst` shows
Napi::Value RouteGet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "netlinkRouteGet(dst: string)");
  std::string dst = info[0].As<Napi::String>();
  uint8_t bytes[16];
  int family = inet_pton(AF_INET, dst.c_str(), bytes) == 1 ? AF_INET : inet_pton(AF_INET6, dst.c_str(), bytes) == 1 ? AF_INET6 : 0;
  if (!family) throw Napi::TypeError::New(env, "netlinkRouteGet: not an IP address: " + dst);
  std::vector<uint8_t> addr(bytes, bytes + (family == AF_INET ? 4 : 16));
  return PromiseWorker<RouteInfo>::Run(
      env, [family, addr] { return nlRouteGet(family, addr.data(), addr.size()); },
      [](Napi::Env env, RouteInfo& r) -> Napi::Value { return routeObject(env, r); });
}

// sdNotify(socketPath, message): one datagram to systemd's NOTIFY_SOCKET (sd_notify(3)'s protocol;
// a leading '@' is the abstract namespace). Node's dgram module has no AF_UNIX.
Napi::Value SdNotify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString()) throw Napi::TypeError::New(env, "sdNotify(socketPath, message)");
  std::string path = info[0].As<Napi::String>(), msg = info[1].As<Napi::String>();
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(sa.sun_path) || (path[0] != '/' && path[0] != '@'))
    throw Napi::TypeError::New(env, "sdNotify: NOTIFY_SOCKET must be an absolute path or @abstract name");
  memcpy(sa.sun_path, path.data(), path.size());
  if (path[0] == '@') sa.sun_path[0] = 0;
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw makeSysError(env, SysError{errno, "sd_notify socket"});
  ssize_t n = sendto(fd, msg.data(), msg.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&sa), len);
  int e = errno;
  close(fd);
  if (n < 0) throw makeSysError(env, SysError{e, "sd_notify sendto " + path});
  return env.Undefined();
}

Napi::Value Neighs(const Napi::CallbackInfo& info) {
  int family = familyArg(info);
  return PromiseWorker<std::vector<NeighInfo>>::Run(
      info.Env(), [family] { return nlDumpNeighs(family); },
      [](Napi::Env env, std::vector<NeighInfo>& v) -> Napi::Value {
        Napi::Array arr = Napi::Array::New(env, v.size());
        for (size_t i = 0; i < v.size(); i++) {
          const NeighInfo& n = v[i];
          Napi::Object o = Napi::Object::New(env);
          o.Set("family", n.family);
          o.Set("dev", n.index);
          if (!n.dst.empty()) o.Set("dst", n.dst);
          if (!n.lladdr.empty()) o.Set("lladdr", n.lladdr);
          o.Set("state", n.state);
          o.Set("flags", n.flags);
          o.Set("master", n.master);
          arr.Set(i, o);
        }
        return arr;
      });
}

// mallocTrim() -> whether glibc gave memory back: the free pages of malloc's arenas (where Buffers and
// the kernel calls' batches live) are returned to the kernel after a burst, not kept resident.
Napi::Value MallocTrim(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), malloc_trim(0) == 1); }

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("mallocTrim", Napi::Function::New(env, MallocTrim));
  exports.Set("netlinkExec", Napi::Function::New(env, NetlinkExec));
  exports.Set("netlinkLinks", Napi::Function::New(env, Links));
  exports.Set("netlinkAddrs", Napi::Function::New(env, Addrs));
  exports.Set("netlinkRoutes", Napi::Function::New(env, Routes));
  exports.Set("netlinkRouteGet", Napi::Function::New(env, RouteGet));
  exports.Set("sdNotify", Napi::Function::New(env, SdNotify));
  exports.Set("netlinkNeighs", Napi::Function::New(env, Neighs));
  Napi::Object c = Napi::Object::New(env);
  c.Set("AF_UNSPEC", AF_UNSPEC);
  c.Set("AF_INET", AF_INET);
  c.Set("AF_INET6", AF_INET6);
  c.Set("AF_BRIDGE", AF_BRIDGE);
  c.Set("NUD_PERMANENT", NUD_PERMANENT);
  c.Set("NTF_SELF", NTF_SELF);
  exports.Set("constants", c);
  InitBpf(env, exports);
  InitUdp(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(flannel_native, Init)
