// rtnetlink over libmnl, in the caller's network namespace (the socket is opened in the thread that
// runs the call, and all threads of a process share its namespace).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common.h"

// One encoded rtnetlink request; `what` names it in errors.
struct NlRequest {
  std::vector<uint8_t> bytes;
  std::string what;
};

struct NlResult {
  int err = 0;            // 0 or positive errno
  std::string extack;     // the kernel's extended-ack message, when it gave one
};

// Sends the requests in large chunks, one ack each, and returns one result per request in order.
// Throws SysError only when the socket itself fails.
std::vector<NlResult> nlExec(const std::vector<NlRequest>& reqs);

struct LinkInfo {
  int index = 0, master = 0, parent = 0;
  unsigned flags = 0, mtu = 0, operstate = 0;
  std::string name, kind, mac;
  bool isVxlan = false;
  uint32_t vni = 0;
  std::string vxLocal;
  int vxLink = 0, vxPort = 0;
  bool vxLearning = false, vxExternal = false, hasVni = false;
};
struct AddrInfo {
  int index = 0, family = 0, prefixLen = 0, scope = 0;
  std::string address;
};
struct RouteInfo {
  int family = 0, dstLen = 0, oif = 0, protocol = 0, scope = 0, type = 0;
  uint32_t table = 0, flags = 0, priority = 0;
  std::string dst, gateway, prefsrc;
};
struct NeighInfo {
  int family = 0, index = 0, master = 0;
  unsigned state = 0, flags = 0;
  std::string dst, lladdr;
  uint32_t vni = 0;
};

std::vector<LinkInfo> nlDumpLinks();
std::vector<AddrInfo> nlDumpAddrs(int family);
std::vector<RouteInfo> nlDumpRoutes(int family);
// `ip route get <dst>`: the route the kernel would use now, with the source address it would pick.
RouteInfo nlRouteGet(int family, const uint8_t* dst, size_t len);
std::vector<NeighInfo> nlDumpNeighs(int family);  // AF_BRIDGE: the FDB

// Encoding of JS operation objects (see control/kernel/netlink.ts for the typed side).
NlRequest encodeOp(const Napi::Object& op);
