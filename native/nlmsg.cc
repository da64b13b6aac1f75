// Encodes the JS operation objects of control/kernel/netlink.ts into rtnetlink requests.
// Runs on the JS thread so that bad arguments become TypeErrors before anything reaches the kernel.
#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>

#include <cstdio>

#include "netlink.h"

namespace {

struct Ip {
  int family = 0;
  uint8_t bytes[16] = {0};
  size_t len() const { return family == AF_INET ? 4 : 16; }
};

[[noreturn]] void typeErr(Napi::Env env, const std::string& msg) { throw Napi::TypeError::New(env, msg); }

std::string str(const Napi::Object& o, const char* key, bool required = true) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) {
    if (required) typeErr(o.Env(), std::string("netlink op: missing string field '") + key + "'");
    return "";
  }
  if (!v.IsString()) typeErr(o.Env(), std::string("netlink op: field '") + key + "' must be a string");
  return v.As<Napi::String>().Utf8Value();
}

bool has(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  return !v.IsUndefined() && !v.IsNull();
}

uint32_t u32(const Napi::Object& o, const char* key, int64_t def = -1) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) {
    if (def < 0) typeErr(o.Env(), std::string("netlink op: missing number field '") + key + "'");
    return static_cast<uint32_t>(def);
  }
  if (!v.IsNumber()) typeErr(o.Env(), std::string("netlink op: field '") + key + "' must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d < 0 || d > 4294967295.0 || d != static_cast<double>(static_cast<uint32_t>(d)))
    typeErr(o.Env(), std::string("netlink op: field '") + key + "' must be an unsigned 32-bit integer");
  return static_cast<uint32_t>(d);
}

bool boolean(const Napi::Object& o, const char* key, bool def) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return def;
  return v.ToBoolean().Value();
}

Ip ip(Napi::Env env, const std::string& s, const char* field) {
  Ip r;
  if (inet_pton(AF_INET, s.c_str(), r.bytes) == 1) { r.family = AF_INET; return r; }
  if (inet_pton(AF_INET6, s.c_str(), r.bytes) == 1) { r.family = AF_INET6; return r; }
  typeErr(env, std::string("netlink op: '") + field + "' is not an IP address: " + s);
}

void mac(Napi::Env env, const std::string& s, uint8_t out[6]) {
  unsigned b[6];
  char tail;
  if (sscanf(s.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &tail) != 6)
    typeErr(env, "netlink op: not a MAC address: " + s);
  for (int i = 0; i < 6; i++) out[i] = static_cast<uint8_t>(b[i]);
}

uint16_t writeFlags(const std::string& action, bool exclusive) {
  uint16_t f = NLM_F_REQUEST | NLM_F_ACK;
  if (action == "replace") f |= NLM_F_CREATE | NLM_F_REPLACE;
  else if (action == "add") f |= NLM_F_CREATE | (exclusive ? NLM_F_EXCL : 0);
  return f;
}

void checkAction(Napi::Env env, const std::string& action, std::initializer_list<const char*> ok) {
  for (auto* a : ok) if (action == a) return;
  typeErr(env, "netlink op: unsupported action '" + action + "'");
}

NlRequest finish(nlmsghdr* nlh, std::string what) {
  NlRequest r;
  auto* p = reinterpret_cast<uint8_t*>(nlh);
  r.bytes.assign(p, p + nlh->nlmsg_len);
  r.what = std::move(what);
  return r;
}

NlRequest encodeRoute(Napi::Env env, const Napi::Object& op, char* buf) {
  std::string action = str(op, "action");
  checkAction(env, action, {"replace", "add", "delete"});
  bool del = action == "delete";
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
  nlh->nlmsg_type = del ? RTM_DELROUTE : RTM_NEWROUTE;
  nlh->nlmsg_flags = writeFlags(action, true);
  auto* rtm = static_cast<rtmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(rtmsg)));
  Ip dst = ip(env, str(op, "dst"), "dst");
  uint32_t dstLen = u32(op, "dstLen");
  if (dstLen > dst.len() * 8) typeErr(env, "netlink op: dstLen out of range");
  uint32_t table = u32(op, "table", RT_TABLE_MAIN);
  rtm->rtm_family = dst.family;
  rtm->rtm_dst_len = dstLen;
  rtm->rtm_table = table < 256 ? table : RT_TABLE_UNSPEC;
  rtm->rtm_protocol = del ? 0 : u32(op, "protocol", RTPROT_BOOT);
  // `ip route add blackhole <dst>`: no device, scope global, as flannel's AddBlackholeV4Route
  bool blackhole = has(op, "kind") && str(op, "kind") == "blackhole";
  if (has(op, "kind") && !blackhole && str(op, "kind") != "unicast") typeErr(env, "netlink op: route kind must be unicast or blackhole");
  rtm->rtm_type = del ? 0 : (blackhole ? RTN_BLACKHOLE : RTN_UNICAST);
  bool hasGw = has(op, "gateway");
  rtm->rtm_scope = del ? RT_SCOPE_NOWHERE : (hasGw || blackhole ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK);
  if (boolean(op, "onlink", false)) rtm->rtm_flags |= RTNH_F_ONLINK;
  mnl_attr_put(nlh, RTA_DST, dst.len(), dst.bytes);
  if (table >= 256) mnl_attr_put_u32(nlh, RTA_TABLE, table);
  std::string what = std::string("route ") + action + (blackhole ? " blackhole " : " ") + str(op, "dst") + "/" + std::to_string(dstLen);
  if (hasGw) {
    std::string g = str(op, "gateway");
    Ip gw = ip(env, g, "gateway");
    if (gw.family != dst.family) typeErr(env, "netlink op: gateway and dst families differ");
    mnl_attr_put(nlh, RTA_GATEWAY, gw.len(), gw.bytes);
    what += " via " + g;
  }
  if (has(op, "dev")) {
    uint32_t dev = u32(op, "dev");
    mnl_attr_put_u32(nlh, RTA_OIF, dev);
    what += " dev #" + std::to_string(dev);
  }
  if (has(op, "priority")) mnl_attr_put_u32(nlh, RTA_PRIORITY, u32(op, "priority"));
  if (has(op, "mtu")) {
    // `ip route ... mtu N`: the path MTU of the route, for which the kernel sends ICMP "too big"
    uint32_t mtu = u32(op, "mtu");
    nlattr* metrics = mnl_attr_nest_start(nlh, RTA_METRICS);
    mnl_attr_put_u32(nlh, RTAX_MTU, mtu);
    mnl_attr_nest_end(nlh, metrics);
    what += " mtu " + std::to_string(mtu);
  }
  if (rtm->rtm_flags & RTNH_F_ONLINK) what += " onlink";
  return finish(nlh, what);
}

NlRequest encodeNeigh(Napi::Env env, const Napi::Object& op, char* buf, bool fdb) {
  std::string action = str(op, "action");
  checkAction(env, action, {"replace", "add", "delete"});
  bool del = action == "delete";
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
  nlh->nlmsg_type = del ? RTM_DELNEIGH : RTM_NEWNEIGH;
  nlh->nlmsg_flags = writeFlags(action, true);
  auto* nd = static_cast<ndmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ndmsg)));
  uint32_t dev = u32(op, "dev");
  nd->ndm_ifindex = dev;
  nd->ndm_state = NUD_PERMANENT;
  std::string what;
  if (fdb) {
    // `bridge fdb replace MAC dev flannel.1 dst IP self permanent`
    nd->ndm_family = AF_BRIDGE;
    nd->ndm_flags = NTF_SELF;
    std::string m = str(op, "lladdr");
    uint8_t lladdr[6];
    mac(env, m, lladdr);
    mnl_attr_put(nlh, NDA_LLADDR, 6, lladdr);
    what = "fdb " + action + " " + m;
    if (has(op, "dst")) {
      std::string d = str(op, "dst");
      Ip dst = ip(env, d, "dst");
      mnl_attr_put(nlh, NDA_DST, dst.len(), dst.bytes);
      what += " dst " + d;
    }
  } else {
    // `ip neigh replace IP lladdr MAC dev flannel.1 nud permanent`
    std::string d = str(op, "dst");
    Ip dst = ip(env, d, "dst");
    nd->ndm_family = dst.family;
    mnl_attr_put(nlh, NDA_DST, dst.len(), dst.bytes);
    what = "neigh " + action + " " + d;
    if (!del) {
      std::string m = str(op, "lladdr");
      uint8_t lladdr[6];
      mac(env, m, lladdr);
      mnl_attr_put(nlh, NDA_LLADDR, 6, lladdr);
      what += " lladdr " + m;
    }
  }
  what += " dev #" + std::to_string(dev);
  return finish(nlh, what);
}

NlRequest encodeAddr(Napi::Env env, const Napi::Object& op, char* buf) {
  std::string action = str(op, "action");
  checkAction(env, action, {"replace", "add", "delete"});
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
  nlh->nlmsg_type = action == "delete" ? RTM_DELADDR : RTM_NEWADDR;
  nlh->nlmsg_flags = writeFlags(action, true);
  auto* ifa = static_cast<ifaddrmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifaddrmsg)));
  std::string a = str(op, "address");
  Ip addr = ip(env, a, "address");
  uint32_t plen = u32(op, "prefixLen");
  if (plen > addr.len() * 8) typeErr(env, "netlink op: prefixLen out of range");
  uint32_t dev = u32(op, "dev");
  ifa->ifa_family = addr.family;
  ifa->ifa_prefixlen = plen;
  ifa->ifa_index = dev;
  ifa->ifa_scope = RT_SCOPE_UNIVERSE;
  mnl_attr_put(nlh, IFA_LOCAL, addr.len(), addr.bytes);
  mnl_attr_put(nlh, IFA_ADDRESS, addr.len(), addr.bytes);
  return finish(nlh, "addr " + action + " " + a + "/" + std::to_string(plen) + " dev #" + std::to_string(dev));
}

NlRequest encodeLink(Napi::Env env, const Napi::Object& op, char* buf) {
  std::string action = str(op, "action");
  checkAction(env, action, {"add", "set", "delete"});
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
  auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
  ifi->ifi_family = AF_UNSPEC;
  std::string what = "link " + action;
  if (action == "delete") {
    nlh->nlmsg_type = RTM_DELLINK;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    ifi->ifi_index = u32(op, "index");
    return finish(nlh, what + " #" + std::to_string(ifi->ifi_index));
  }
  nlh->nlmsg_type = RTM_NEWLINK;
  if (action == "set") {
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    ifi->ifi_index = u32(op, "index");
    what += " #" + std::to_string(ifi->ifi_index);
    if (has(op, "up")) {
      bool up = boolean(op, "up", false);
      ifi->ifi_change |= IFF_UP;
      ifi->ifi_flags |= up ? IFF_UP : 0;
      what += up ? " up" : " down";
    }
    if (has(op, "noarp")) {
      bool noarp = boolean(op, "noarp", false);
      ifi->ifi_change |= IFF_NOARP;
      ifi->ifi_flags |= noarp ? IFF_NOARP : 0;
      what += noarp ? " arp off" : " arp on";
    }
  } else {
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    std::string name = str(op, "name");
    if (name.empty() || name.size() >= IFNAMSIZ) typeErr(env, "netlink op: bad link name '" + name + "'");
    mnl_attr_put_strz(nlh, IFLA_IFNAME, name.c_str());
    what += " " + name;
  }
  if (has(op, "mtu")) mnl_attr_put_u32(nlh, IFLA_MTU, u32(op, "mtu"));
  if (has(op, "mac")) {
    uint8_t m[6];
    mac(env, str(op, "mac"), m);
    mnl_attr_put(nlh, IFLA_ADDRESS, 6, m);
  }
  if (action == "add") {
    std::string kind = str(op, "kind");
    // checked before a byte of it is written: the message buffer is fixed, the string is the caller's
    if (kind != "vxlan" && kind != "bridge") typeErr(env, "netlink op: unsupported link kind '" + kind.substr(0, 32) + "'");
    nlattr* linkinfo = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
    mnl_attr_put_strz(nlh, IFLA_INFO_KIND, kind.c_str());
    what += " type " + kind;
    if (kind == "vxlan") {
      Napi::Value v = op.Get("vxlan");
      if (!v.IsObject()) typeErr(env, "netlink op: vxlan link needs a 'vxlan' object");
      Napi::Object vx = v.As<Napi::Object>();
      nlattr* data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
      bool external = boolean(vx, "external", false);
      if (external) {
        // collect-metadata mode: the tunnel key (remote, VNI) comes with each packet from BPF
        mnl_attr_put_u8(nlh, IFLA_VXLAN_COLLECT_METADATA, 1);
        what += " external";
      } else {
        uint32_t vni = u32(vx, "vni");
        mnl_attr_put_u32(nlh, IFLA_VXLAN_ID, vni);
        what += " id " + std::to_string(vni);
      }
      if (has(vx, "local")) {
        Ip local = ip(env, str(vx, "local"), "local");
        // flannel-v6.1 is VXLAN over an IPv6 underlay: its local address is IFLA_VXLAN_LOCAL6
        if (local.family == AF_INET) mnl_attr_put(nlh, IFLA_VXLAN_LOCAL, 4, local.bytes);
        else mnl_attr_put(nlh, IFLA_VXLAN_LOCAL6, 16, local.bytes);
      }
      if (has(vx, "link")) mnl_attr_put_u32(nlh, IFLA_VXLAN_LINK, u32(vx, "link"));
      uint32_t port = u32(vx, "port", 8472);
      if (port > 65535) typeErr(env, "netlink op: vxlan port out of range");
      mnl_attr_put_u16(nlh, IFLA_VXLAN_PORT, htons(static_cast<uint16_t>(port)));
      mnl_attr_put_u8(nlh, IFLA_VXLAN_LEARNING, boolean(vx, "learning", false) ? 1 : 0);
      if (has(vx, "ttl")) mnl_attr_put_u8(nlh, IFLA_VXLAN_TTL, static_cast<uint8_t>(u32(vx, "ttl")));
      mnl_attr_nest_end(nlh, data);
    }
    mnl_attr_nest_end(nlh, linkinfo);
  }
  return finish(nlh, what);
}

}  // namespace

NlRequest encodeOp(const Napi::Object& op) {
  Napi::Env env = op.Env();
  static thread_local char buf[8192];
  std::string type = str(op, "type");
  if (type == "route") return encodeRoute(env, op, buf);
  if (type == "neigh") return encodeNeigh(env, op, buf, false);
  if (type == "fdb") return encodeNeigh(env, op, buf, true);
  if (type == "addr") return encodeAddr(env, op, buf);
  if (type == "link") return encodeLink(env, op, buf);
  typeErr(env, "netlink op: unknown type '" + type + "'");
}
