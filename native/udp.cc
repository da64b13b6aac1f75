// The udp backend's packet pump: a TUN device (flannel0, L3, no packet info) and a UDP socket, moved
// between by one native thread so no packet ever reaches JavaScript. JS only edits the table
// (peer subnet -> peer public IP) and reads counters.
//
// Wire format is flannel's: the UDP payload is the bare inner IPv4 packet, port 8285 by default.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common.h"

namespace {

constexpr int kBatch = 32;
constexpr size_t kBufSize = 65536;

struct PeerCounters {
  uint64_t txPackets = 0, txBytes = 0, rxPackets = 0, rxBytes = 0;
};

struct Route {
  uint32_t ip;  // peer public IP, network order
  PeerCounters c;
};

// counters named like the BPF data plane's reasons, so metrics and the status command read the same
struct Counters {
  std::atomic<uint64_t> txPackets{0}, txBytes{0}, rxPackets{0}, rxBytes{0};
  std::atomic<uint64_t> noRoute{0}, notMember{0}, malformed{0}, ttlExceeded{0}, sendErrors{0}, tunWriteErrors{0};
};

uint32_t maskOf(int len) { return len == 0 ? 0 : htonl(~uint32_t{0} << (32 - len)); }

struct Pump {
  int id = 0;
  int tun = -1, sock = -1, ev = -1;
  int ifindex = 0;
  int port = 0;
  std::string name;
  std::thread th;
  std::mutex mu;
  // (subnet network-order, prefix length) -> route; lookups go longest prefix first over the few
  // distinct lengths in use (one, in practice: the network's SubnetLen)
  std::map<std::pair<uint32_t, int>, Route> routes;
  std::map<int, int, std::greater<int>> lens;   // prefix length -> routes using it
  std::unordered_map<uint32_t, int> members;    // peer public IP -> routes pointing at it
  Counters c;

  Route* lookup(uint32_t dst) {
    for (auto& [len, n] : lens) {
      auto it = routes.find({dst & maskOf(len), len});
      if (it != routes.end()) return &it->second;
    }
    return nullptr;
  }

  /** why the thread stopped by itself (0 while it runs): the TUN device went away under it */
  std::atomic<int> stoppedErrno{0};

  void run();
  void tunToUdp(std::vector<std::vector<uint8_t>>& bufs);
  void udpToTun(std::vector<std::vector<uint8_t>>& bufs);
};

std::mutex pumpsMu;
std::map<int, Pump*> pumps;  // raw pointers on purpose: no static destructor may join a running thread at exit
int nextId = 1;

// A valid IPv4 header whose total length fits what was read; returns that length or 0.
size_t ipv4Len(const uint8_t* p, size_t n) {
  if (n < sizeof(iphdr)) return 0;
  auto* h = reinterpret_cast<const iphdr*>(p);
  size_t tot = ntohs(h->tot_len);
  if (h->version != 4 || h->ihl < 5 || tot < h->ihl * 4u || tot > n) return 0;
  return tot;
}

// Routing decrements the TTL at every hop; flannel's udp proxy does the same on the way out so a
// loop between nodes dies out. Incremental checksum update as in RFC 1624.
bool decrementTtl(uint8_t* p) {
  auto* h = reinterpret_cast<iphdr*>(p);
  if (h->ttl <= 1) return false;
  h->ttl--;
  uint32_t sum = ntohs(h->check) + 0x0100;
  h->check = htons(static_cast<uint16_t>(sum + (sum >> 16)));
  return true;
}

void Pump::tunToUdp(std::vector<std::vector<uint8_t>>& bufs) {
  mmsghdr msgs[kBatch];
  iovec iov[kBatch];
  sockaddr_in to[kBatch];
  int n = 0;
  for (int i = 0; i < kBatch; i++) {
    ssize_t r = read(tun, bufs[i].data(), kBufSize);
    if (r <= 0) break;
    uint8_t* p = bufs[i].data();
    size_t len = ipv4Len(p, static_cast<size_t>(r));
    if (!len) { c.malformed++; continue; }
    if (!decrementTtl(p)) { c.ttlExceeded++; continue; }
    uint32_t dst = reinterpret_cast<iphdr*>(p)->daddr;
    uint32_t peer;
    {
      std::lock_guard<std::mutex> g(mu);
      Route* rt = lookup(dst);
      if (!rt) { c.noRoute++; continue; }
      peer = rt->ip;
      rt->c.txPackets++;
      rt->c.txBytes += len;
    }
    to[n] = sockaddr_in{};
    to[n].sin_family = AF_INET;
    to[n].sin_addr.s_addr = peer;
    to[n].sin_port = htons(static_cast<uint16_t>(port));
    iov[n] = {p, len};
    msgs[n] = mmsghdr{};
    msgs[n].msg_hdr.msg_name = &to[n];
    msgs[n].msg_hdr.msg_namelen = sizeof(sockaddr_in);
    msgs[n].msg_hdr.msg_iov = &iov[n];
    msgs[n].msg_hdr.msg_iovlen = 1;
    n++;
  }
  int sent = 0;
  while (sent < n) {
    int r = sendmmsg(sock, msgs + sent, n - sent, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      c.sendErrors++;  // e.g. no route to the peer on the underlay: skip that packet
      sent++;
      continue;
    }
    for (int i = sent; i < sent + r; i++) { c.txPackets++; c.txBytes += iov[i].iov_len; }
    sent += r;
  }
}

void Pump::udpToTun(std::vector<std::vector<uint8_t>>& bufs) {
  mmsghdr msgs[kBatch];
  iovec iov[kBatch];
  sockaddr_in from[kBatch];
  for (int i = 0; i < kBatch; i++) {
    iov[i] = {bufs[i].data(), kBufSize};
    msgs[i] = mmsghdr{};
    msgs[i].msg_hdr.msg_name = &from[i];
    msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in);
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  int n = recvmmsg(sock, msgs, kBatch, MSG_DONTWAIT, nullptr);
  for (int i = 0; i < n; i++) {
    uint8_t* p = bufs[i].data();
    size_t len = ipv4Len(p, msgs[i].msg_len);
    {
      std::lock_guard<std::mutex> g(mu);
      // only nodes holding a lease may inject packets into our pod network
      if (!members.count(from[i].sin_addr.s_addr)) { c.notMember++; continue; }
      if (!len) { c.malformed++; continue; }
      Route* rt = lookup(reinterpret_cast<iphdr*>(p)->saddr);
      if (rt) { rt->c.rxPackets++; rt->c.rxBytes += len; }
    }
    if (write(tun, p, len) < 0) { c.tunWriteErrors++; continue; }
    c.rxPackets++;
    c.rxBytes += len;
  }
}

void Pump::run() {
  std::vector<std::vector<uint8_t>> bufs(kBatch, std::vector<uint8_t>(kBufSize));
  pollfd fds[3] = {{tun, POLLIN, 0}, {sock, POLLIN, 0}, {ev, POLLIN, 0}};
  for (;;) {
    int r = poll(fds, 3, -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[2].revents) return;
    // flannel0 deleted: the TUN file reports POLLERR (reads fail with EBADFD) for good. Without this
    // the loop would poll again at once, forever, at 100 % of a core. The thread ends and says why;
    // the agent's reconcile opens a new pump with a new flannel0.
    if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
      stoppedErrno = EBADFD;
      return;
    }
    if (fds[1].revents & (POLLERR | POLLNVAL)) {
      int err = 0;
      socklen_t len = sizeof err;
      // a pending ICMP error on the socket (port unreachable) is consumed here; only a dead fd ends us
      if (fds[1].revents & POLLNVAL || getsockopt(sock, SOL_SOCKET, SO_ERROR, &err, &len) < 0) {
        stoppedErrno = EBADF;
        return;
      }
    }
    if (fds[0].revents & POLLIN) tunToUdp(bufs);
    if (fds[1].revents & POLLIN) udpToTun(bufs);
  }
}

void stopPump(Pump* p) {
  uint64_t one = 1;
  if (write(p->ev, &one, sizeof one) < 0) { /* the thread also exits when the fds close */ }
  if (p->th.joinable()) p->th.join();
  close(p->tun);
  close(p->sock);
  close(p->ev);
  delete p;
}

Pump* pumpArg(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "udp pump id (number) expected");
  int id = info[0].As<Napi::Number>().Int32Value();
  std::lock_guard<std::mutex> g(pumpsMu);
  auto it = pumps.find(id);
  if (it == pumps.end()) throw Napi::Error::New(info.Env(), "udp pump " + std::to_string(id) + " is not open");
  return it->second;
}

uint32_t ipArg(Napi::Env env, Napi::Object o, const char* key) {
  Napi::Value v = o.Get(key);
  in_addr a{};
  if (!v.IsString() || inet_pton(AF_INET, v.As<Napi::String>().Utf8Value().c_str(), &a) != 1)
    throw Napi::TypeError::New(env, std::string(key) + ": IPv4 address expected");
  return a.s_addr;
}

[[noreturn]] void throwSys(Napi::Env env, int err, const std::string& op, const std::string& detail = "") {
  throw makeSysError(env, SysError{err, op, detail});
}

// udpOpen({ tun, bindIp, port }) -> { id, ifindex, name }. The TUN is made persistent so a restart of
// the agent keeps flannel0 and its route: pod traffic then queues and drops in flannel0 instead of
// leaking unencapsulated through the default route.
Napi::Value Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "udpOpen({ tun, bindIp, port })");
  Napi::Object o = info[0].As<Napi::Object>();
  std::string name = o.Get("tun").As<Napi::String>().Utf8Value();
  if (name.empty() || name.size() >= IFNAMSIZ) throw Napi::TypeError::New(env, "tun: interface name of 1-15 characters expected");
  uint32_t bindIp = ipArg(env, o, "bindIp");
  int port = o.Get("port").As<Napi::Number>().Int32Value();
  if (port < 1 || port > 65535) throw Napi::TypeError::New(env, "port: 1-65535 expected");

  auto p = std::make_unique<Pump>();
  p->port = port;
  p->tun = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (p->tun < 0) throwSys(env, errno, "open /dev/net/tun", "the udp backend needs the tun module (modprobe tun)");
  ifreq ifr{};
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  if (ioctl(p->tun, TUNSETIFF, &ifr) < 0) {
    int e = errno;
    close(p->tun);
    throwSys(env, e, "TUNSETIFF " + name, e == EBUSY ? "another process has it open (a second flanneld?)" : e == EINVAL ? "a device of that name exists and is not a TUN without packet info" : "");
  }
  if (ioctl(p->tun, TUNSETPERSIST, 1) < 0) {
    int e = errno;
    close(p->tun);
    throwSys(env, e, "TUNSETPERSIST " + name);
  }
  p->name = ifr.ifr_name;
  p->ifindex = static_cast<int>(if_nametoindex(ifr.ifr_name));

  p->sock = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (p->sock < 0) { int e = errno; close(p->tun); throwSys(env, e, "socket udp"); }
  int big = 4 << 20;
  // FORCE variants ignore rmem_max/wmem_max (we run as root); a burst then waits in the socket
  // instead of being dropped while the pump thread is busy writing to the TUN
  if (setsockopt(p->sock, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big) < 0) setsockopt(p->sock, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  if (setsockopt(p->sock, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big) < 0) setsockopt(p->sock, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = bindIp;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  if (bind(p->sock, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
    int e = errno;
    close(p->tun);
    close(p->sock);
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &bindIp, ip, sizeof ip);
    throwSys(env, e, std::string("bind udp ") + ip + ":" + std::to_string(port), e == EADDRINUSE ? "port in use (another flanneld with the udp backend?)" : "");
  }
  p->ev = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  // without it stopPump could never wake the thread, and would wait for it forever
  if (p->ev < 0) {
    int e = errno;
    close(p->tun);
    close(p->sock);
    throwSys(env, e, "eventfd");
  }
  Pump* raw = p.release();
  {
    std::lock_guard<std::mutex> g(pumpsMu);
    raw->id = nextId++;
    pumps[raw->id] = raw;
  }
  raw->th = std::thread([raw] { raw->run(); });
  Napi::Object res = Napi::Object::New(env);
  res.Set("id", raw->id);
  res.Set("ifindex", raw->ifindex);
  res.Set("name", raw->name);
  return res;
}

// udpClose(id, { removeDevice }): stops the thread; the device stays unless asked (see udpOpen).
Napi::Value Close(const Napi::CallbackInfo& info) {
  Pump* p = pumpArg(info);
  bool remove = info.Length() > 1 && info[1].IsObject() && info[1].As<Napi::Object>().Get("removeDevice").ToBoolean();
  {
    std::lock_guard<std::mutex> g(pumpsMu);
    pumps.erase(p->id);
  }
  if (remove) ioctl(p->tun, TUNSETPERSIST, 0);
  stopPump(p);
  return info.Env().Undefined();
}

// udpRoutes(id, ops: { action: 'add' | 'del', subnet, len, ip }[]) -> (Error | null)[]
// Same contract as netlinkExec: one result per operation, so the PeerProgrammer can roll back a peer.
Napi::Value Routes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Pump* p = pumpArg(info);
  if (info.Length() < 2 || !info[1].IsArray()) throw Napi::TypeError::New(env, "udpRoutes(id, ops[])");
  Napi::Array ops = info[1].As<Napi::Array>();
  Napi::Array out = Napi::Array::New(env, ops.Length());
  std::lock_guard<std::mutex> g(p->mu);
  for (uint32_t i = 0; i < ops.Length(); i++) {
    Napi::Object o = ops.Get(i).As<Napi::Object>();
    std::string action = o.Get("action").As<Napi::String>().Utf8Value();
    uint32_t net = ipArg(env, o, "subnet");
    int len = o.Get("len").As<Napi::Number>().Int32Value();
    if (len < 0 || len > 32) throw Napi::TypeError::New(env, "len: 0-32 expected");
    auto key = std::make_pair(net & maskOf(len), len);
    char what[64];
    char sbuf[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &net, sbuf, sizeof sbuf);
    snprintf(what, sizeof what, "udp route %s %s/%d", action.c_str(), sbuf, len);
    auto it = p->routes.find(key);
    if (action == "add") {
      uint32_t ip = ipArg(env, o, "ip");
      if (it != p->routes.end()) {
        if (--p->members[it->second.ip] == 0) p->members.erase(it->second.ip);
        it->second.ip = ip;  // replace in place: counters survive a peer's new address
      } else {
        p->routes[key] = Route{ip, {}};
        p->lens[len]++;
      }
      p->members[ip]++;
      out.Set(i, env.Null());
    } else if (action == "del") {
      if (it == p->routes.end()) {
        out.Set(i, makeSysError(env, SysError{ENOENT, what}).Value());
        continue;
      }
      if (--p->members[it->second.ip] == 0) p->members.erase(it->second.ip);
      if (--p->lens[len] == 0) p->lens.erase(len);
      p->routes.erase(it);
      out.Set(i, env.Null());
    } else {
      throw Napi::TypeError::New(env, "action: 'add' or 'del' expected");
    }
  }
  return out;
}

// udpDump(id) -> { routes: [{ subnet, len, ip, txPackets, ... }], counters: {...}, ifindex, name }
Napi::Value Dump(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Pump* p = pumpArg(info);
  Napi::Object res = Napi::Object::New(env);
  Napi::Array arr = Napi::Array::New(env);
  {
    std::lock_guard<std::mutex> g(p->mu);
    uint32_t i = 0;
    for (auto& [k, r] : p->routes) {
      char s[INET_ADDRSTRLEN], ip[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, &k.first, s, sizeof s);
      inet_ntop(AF_INET, &r.ip, ip, sizeof ip);
      Napi::Object o = Napi::Object::New(env);
      o.Set("subnet", s);
      o.Set("len", k.second);
      o.Set("ip", ip);
      o.Set("txPackets", static_cast<double>(r.c.txPackets));
      o.Set("txBytes", static_cast<double>(r.c.txBytes));
      o.Set("rxPackets", static_cast<double>(r.c.rxPackets));
      o.Set("rxBytes", static_cast<double>(r.c.rxBytes));
      arr.Set(i++, o);
    }
  }
  Napi::Object c = Napi::Object::New(env);
  auto set = [&](const char* k, std::atomic<uint64_t>& v) { c.Set(k, static_cast<double>(v.load())); };
  set("txPackets", p->c.txPackets);
  set("txBytes", p->c.txBytes);
  set("rxPackets", p->c.rxPackets);
  set("rxBytes", p->c.rxBytes);
  set("noRoute", p->c.noRoute);
  set("notMember", p->c.notMember);
  set("malformed", p->c.malformed);
  set("ttlExceeded", p->c.ttlExceeded);
  set("sendErrors", p->c.sendErrors);
  set("tunWriteErrors", p->c.tunWriteErrors);
  res.Set("routes", arr);
  res.Set("counters", c);
  res.Set("ifindex", p->ifindex);
  res.Set("stoppedErrno", p->stoppedErrno.load());
  res.Set("name", p->name);
  return res;
}

}  // namespace

void InitUdp(Napi::Env env, Napi::Object exports) {
  exports.Set("udpOpen", Napi::Function::New(env, Open));
  exports.Set("udpClose", Napi::Function::New(env, Close));
  exports.Set("udpRoutes", Napi::Function::New(env, Routes));
  exports.Set("udpDump", Napi::Function::New(env, Dump));
  env.AddCleanupHook([] {
    std::lock_guard<std::mutex> g(pumpsMu);
    for (auto& [id, p] : pumps) stopPump(p);
    pumps.clear();
  });
}
