// The blocking side of rtnetlink: runs on worker threads, never touches JS values.
#include "netlink.h"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <unistd.h>

#include <cstdio>
#include <memory>

#ifndef NETLINK_EXT_ACK
#define NETLINK_EXT_ACK 11
#endif

namespace {

// Acks for a whole chunk queue up in the socket before we read them: each costs a full skb of
// receive buffer, so the default 208 KiB would overflow (ENOBUFS) long before a 5000-peer batch ends.
constexpr int kRcvBuf = 8 << 20;
constexpr size_t kChunk = 512;

class Sock {
 public:
  Sock() {
    nl_ = mnl_socket_open(NETLINK_ROUTE);
    if (!nl_) throw SysError{errno, "netlink socket"};
    if (mnl_socket_bind(nl_, 0, MNL_SOCKET_AUTOPID) < 0) {
      int e = errno;
      mnl_socket_close(nl_);
      throw SysError{e, "netlink bind"};
    }
    int one = 1, rcv = kRcvBuf;
    // CAP_ACK: acks carry only the header, not the whole request. EXT_ACK: the kernel says why.
    mnl_socket_setsockopt(nl_, NETLINK_CAP_ACK, &one, sizeof(one));
    mnl_socket_setsockopt(nl_, NETLINK_EXT_ACK, &one, sizeof(one));
    if (setsockopt(mnl_socket_get_fd(nl_), SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof(rcv)) < 0)
      setsockopt(mnl_socket_get_fd(nl_), SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
    portid_ = mnl_socket_get_portid(nl_);
  }
  ~Sock() { mnl_socket_close(nl_); }
  mnl_socket* get() { return nl_; }
  unsigned portid() const { return portid_; }

 private:
  mnl_socket* nl_;
  unsigned portid_;
};

std::string extackMessage(const nlmsghdr* nlh) {
  if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS)) return "";
  auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
  size_t off = sizeof(*err);
  if (!(nlh->nlmsg_flags & NLM_F_CAPPED)) off += err->msg.nlmsg_len - sizeof(nlmsghdr);
  const char* base = static_cast<const char*>(mnl_nlmsg_get_payload(nlh)) + off;
  const char* end = reinterpret_cast<const char*>(nlh) + nlh->nlmsg_len;
  const nlattr* a;
  for (a = reinterpret_cast<const nlattr*>(base); mnl_attr_ok(a, end - reinterpret_cast<const char*>(a));
       a = mnl_attr_next(a)) {
    if (mnl_attr_get_type(a) == NLMSGERR_ATTR_MSG) return mnl_attr_get_str(a);
  }
  return "";
}

std::string ntop(int family, const void* p) {
  char s[INET6_ADDRSTRLEN] = {0};
  inet_ntop(family, p, s, sizeof(s));
  return s;
}

std::string macStr(const nlattr* a) {
  auto* b = static_cast<const uint8_t*>(mnl_attr_get_payload(a));
  size_t n = mnl_attr_get_payload_len(a);
  std::string s;
  char tmp[4];
  for (size_t i = 0; i < n; i++) {
    snprintf(tmp, sizeof(tmp), i ? ":%02x" : "%02x", b[i]);
    s += tmp;
  }
  return s;
}

// Table of attributes by type, for one level of nesting.
template <int MAX>
struct Attrs {
  const nlattr* tb[MAX + 1] = {nullptr};
  static int cb(const nlattr* a, void* data) {
    auto* self = static_cast<Attrs*>(data);
    int t = mnl_attr_get_type(a);
    if (t >= 0 && t <= MAX) self->tb[t] = a;
    return MNL_CB_OK;
  }
  void parse(const nlmsghdr* nlh, size_t hdr) { mnl_attr_parse(nlh, hdr, cb, this); }
  void nested(const nlattr* a) { mnl_attr_parse_nested(a, cb, this); }
  const nlattr* operator[](int t) const { return tb[t]; }
};

// Runs a dump, retrying when the kernel reports that the table changed under it.
template <typename F>
void dump(uint16_t type, int family, size_t hdrLen, const char* what, F onMsg) {
  for (int attempt = 0;; attempt++) {
    Sock s;
    static thread_local char buf[32768];  // MNL_SOCKET_DUMP_SIZE in newer libmnl
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    nlh->nlmsg_seq = 1;
    auto* hdr = static_cast<uint8_t*>(mnl_nlmsg_put_extra_header(nlh, hdrLen));
    hdr[0] = static_cast<uint8_t>(family);  // every rtnetlink header starts with its family byte
    if (mnl_socket_sendto(s.get(), nlh, nlh->nlmsg_len) < 0) throw SysError{errno, what};
    bool interrupted = false, done = false;
    while (!done) {
      ssize_t n = mnl_socket_recvfrom(s.get(), buf, sizeof(buf));
      if (n < 0) throw SysError{errno, what};
      int len = static_cast<int>(n);
      for (auto* m = reinterpret_cast<nlmsghdr*>(buf); mnl_nlmsg_ok(m, len); m = mnl_nlmsg_next(m, &len)) {
        if (m->nlmsg_flags & NLM_F_DUMP_INTR) interrupted = true;
        if (m->nlmsg_type == NLMSG_DONE) { done = true; break; }
        if (m->nlmsg_type == NLMSG_ERROR) {
          auto* e = static_cast<nlmsgerr*>(mnl_nlmsg_get_payload(m));
          if (e->error) throw SysError{-e->error, what, extackMessage(m)};
          continue;
        }
        onMsg(m);
      }
    }
    if (!interrupted || attempt >= 5) return;
  }
}

}  // namespace

std::vector<NlResult> nlExec(const std::vector<NlRequest>& reqs) {
  std::vector<NlResult> results(reqs.size());
  if (reqs.empty()) return results;
  Sock s;
  std::vector<uint8_t> out;
  std::vector<char> in(1 << 16);
  for (size_t start = 0; start < reqs.size(); start += kChunk) {
    size_t end = std::min(reqs.size(), start + kChunk);
    out.clear();
    for (size_t i = start; i < end; i++) {
      size_t off = out.size();
      out.insert(out.end(), reqs[i].bytes.begin(), reqs[i].bytes.end());
      auto* nlh = reinterpret_cast<nlmsghdr*>(out.data() + off);
      nlh->nlmsg_seq = static_cast<uint32_t>(i + 1);  // seq = index + 1 maps each ack to its request
      nlh->nlmsg_pid = 0;
    }
    if (mnl_socket_sendto(s.get(), out.data(), out.size()) < 0) throw SysError{errno, "netlink sendmsg"};
    size_t pending = end - start;
    while (pending > 0) {
      ssize_t n = mnl_socket_recvfrom(s.get(), in.data(), in.size());
      if (n < 0) throw SysError{errno, "netlink recvmsg"};
      int len = static_cast<int>(n);
      for (auto* m = reinterpret_cast<nlmsghdr*>(in.data()); mnl_nlmsg_ok(m, len); m = mnl_nlmsg_next(m, &len)) {
        if (m->nlmsg_type != NLMSG_ERROR) continue;
        size_t idx = m->nlmsg_seq - 1;
        if (idx < start || idx >= end) continue;
        auto* e = static_cast<nlmsgerr*>(mnl_nlmsg_get_payload(m));
        results[idx].err = -e->error;
        if (e->error) results[idx].extack = extackMessage(m);
        pending--;
      }
    }
  }
  return results;
}

std::vector<LinkInfo> nlDumpLinks() {
  std::vector<LinkInfo> links;
  dump(RTM_GETLINK, AF_UNSPEC, sizeof(ifinfomsg), "netlink link dump", [&](const nlmsghdr* m) {
    if (m->nlmsg_type != RTM_NEWLINK) return;
    auto* ifi = static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(m));
    Attrs<IFLA_MAX> tb;
    tb.parse(m, sizeof(*ifi));
    LinkInfo l;
    l.index = ifi->ifi_index;
    l.flags = ifi->ifi_flags;
    if (tb[IFLA_IFNAME]) l.name = mnl_attr_get_str(tb[IFLA_IFNAME]);
    if (tb[IFLA_MTU]) l.mtu = mnl_attr_get_u32(tb[IFLA_MTU]);
    if (tb[IFLA_ADDRESS]) l.mac = macStr(tb[IFLA_ADDRESS]);
    if (tb[IFLA_MASTER]) l.master = mnl_attr_get_u32(tb[IFLA_MASTER]);
    if (tb[IFLA_LINK]) l.parent = mnl_attr_get_u32(tb[IFLA_LINK]);
    if (tb[IFLA_OPERSTATE]) l.operstate = mnl_attr_get_u8(tb[IFLA_OPERSTATE]);
    if (tb[IFLA_LINKINFO]) {
      Attrs<IFLA_INFO_MAX> li;
      li.nested(tb[IFLA_LINKINFO]);
      if (li[IFLA_INFO_KIND]) l.kind = mnl_attr_get_str(li[IFLA_INFO_KIND]);
      if (l.kind == "vxlan" && li[IFLA_INFO_DATA]) {
        Attrs<IFLA_VXLAN_MAX> vx;
        vx.nested(li[IFLA_INFO_DATA]);
        l.isVxlan = true;
        if (vx[IFLA_VXLAN_ID]) { l.vni = mnl_attr_get_u32(vx[IFLA_VXLAN_ID]); l.hasVni = true; }
        if (vx[IFLA_VXLAN_LOCAL]) l.vxLocal = ntop(AF_INET, mnl_attr_get_payload(vx[IFLA_VXLAN_LOCAL]));
        if (vx[IFLA_VXLAN_LOCAL6]) l.vxLocal = ntop(AF_INET6, mnl_attr_get_payload(vx[IFLA_VXLAN_LOCAL6]));
        if (vx[IFLA_VXLAN_LINK]) l.vxLink = mnl_attr_get_u32(vx[IFLA_VXLAN_LINK]);
        if (vx[IFLA_VXLAN_PORT]) l.vxPort = ntohs(mnl_attr_get_u16(vx[IFLA_VXLAN_PORT]));
        if (vx[IFLA_VXLAN_LEARNING]) l.vxLearning = mnl_attr_get_u8(vx[IFLA_VXLAN_LEARNING]) != 0;
        if (vx[IFLA_VXLAN_COLLECT_METADATA])
          l.vxExternal = mnl_attr_get_u8(vx[IFLA_VXLAN_COLLECT_METADATA]) != 0;
      }
    }
    links.push_back(std::move(l));
  });
  return links;
}

std::vector<AddrInfo> nlDumpAddrs(int family) {
  std::vector<AddrInfo> out;
  dump(RTM_GETADDR, family, sizeof(ifaddrmsg), "netlink addr dump", [&](const nlmsghdr* m) {
    if (m->nlmsg_type != RTM_NEWADDR) return;
    auto* ifa = static_cast<const ifaddrmsg*>(mnl_nlmsg_get_payload(m));
    Attrs<IFA_MAX> tb;
    tb.parse(m, sizeof(*ifa));
    // For IPv4 on point-to-point links IFA_ADDRESS is the peer; IFA_LOCAL is ours.
    const nlattr* a = tb[IFA_LOCAL] ? tb[IFA_LOCAL] : tb[IFA_ADDRESS];
    if (!a) return;
    AddrInfo r;
    r.index = ifa->ifa_index;
    r.family = ifa->ifa_family;
    r.prefixLen = ifa->ifa_prefixlen;
    r.scope = ifa->ifa_scope;
    r.address = ntop(ifa->ifa_family, mnl_attr_get_payload(a));
    out.push_back(std::move(r));
  });
  return out;
}

namespace {
RouteInfo parseRoute(const nlmsghdr* m) {
  auto* rtm = static_cast<const rtmsg*>(mnl_nlmsg_get_payload(m));
  Attrs<RTA_MAX> tb;
  tb.parse(m, sizeof(*rtm));
  RouteInfo r;
  r.family = rtm->rtm_family;
  r.dstLen = rtm->rtm_dst_len;
  r.protocol = rtm->rtm_protocol;
  r.scope = rtm->rtm_scope;
  r.type = rtm->rtm_type;
  r.flags = rtm->rtm_flags;
  r.table = tb[RTA_TABLE] ? mnl_attr_get_u32(tb[RTA_TABLE]) : rtm->rtm_table;
  if (tb[RTA_DST]) r.dst = ntop(r.family, mnl_attr_get_payload(tb[RTA_DST]));
  else r.dst = r.family == AF_INET ? "0.0.0.0" : "::";
  if (tb[RTA_GATEWAY]) r.gateway = ntop(r.family, mnl_attr_get_payload(tb[RTA_GATEWAY]));
  if (tb[RTA_PREFSRC]) r.prefsrc = ntop(r.family, mnl_attr_get_payload(tb[RTA_PREFSRC]));
  if (tb[RTA_OIF]) r.oif = mnl_attr_get_u32(tb[RTA_OIF]);
  if (tb[RTA_PRIORITY]) r.priority = mnl_attr_get_u32(tb[RTA_PRIORITY]);
  return r;
}
}  // namespace

std::vector<RouteInfo> nlDumpRoutes(int family) {
  std::vector<RouteInfo> out;
  dump(RTM_GETROUTE, family, sizeof(rtmsg), "netlink route dump", [&](const nlmsghdr* m) {
    if (m->nlmsg_type == RTM_NEWROUTE) out.push_back(parseRoute(m));
  });
  return out;
}

RouteInfo nlRouteGet(int family, const uint8_t* dst, size_t len) {
  Sock s;
  char buf[8192];
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
  nlh->nlmsg_type = RTM_GETROUTE;
  nlh->nlmsg_flags = NLM_F_REQUEST;
  nlh->nlmsg_seq = 1;
  auto* rtm = static_cast<rtmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(rtmsg)));
  rtm->rtm_family = static_cast<uint8_t>(family);
  rtm->rtm_dst_len = static_cast<uint8_t>(len * 8);
  mnl_attr_put(nlh, RTA_DST, len, dst);
  if (mnl_socket_sendto(s.get(), nlh, nlh->nlmsg_len) < 0) throw SysError{errno, "netlink route get"};
  ssize_t n = mnl_socket_recvfrom(s.get(), buf, sizeof(buf));
  if (n < 0) throw SysError{errno, "netlink route get"};
  int left = static_cast<int>(n);
  for (auto* m = reinterpret_cast<nlmsghdr*>(buf); mnl_nlmsg_ok(m, left); m = mnl_nlmsg_next(m, &left)) {
    if (m->nlmsg_type == NLMSG_ERROR) {
      auto* e = static_cast<nlmsgerr*>(mnl_nlmsg_get_payload(m));
      if (e->error) throw SysError{-e->error, "netlink route get", extackMessage(m)};
    }
    if (m->nlmsg_type == RTM_NEWROUTE) return parseRoute(m);
  }
  throw SysError{EPROTO, "netlink route get: no route in the answer"};
}

std::vector<NeighInfo> nlDumpNeighs(int family) {
  std::vector<NeighInfo> out;
  dump(RTM_GETNEIGH, family, sizeof(ndmsg), "netlink neigh dump", [&](const nlmsghdr* m) {
    if (m->nlmsg_type != RTM_NEWNEIGH) return;
    auto* nd = static_cast<const ndmsg*>(mnl_nlmsg_get_payload(m));
    Attrs<NDA_MAX> tb;
    tb.parse(m, sizeof(*nd));
    NeighInfo n;
    n.family = nd->ndm_family;
    n.index = nd->ndm_ifindex;
    n.state = nd->ndm_state;
    n.flags = nd->ndm_flags;
    if (tb[NDA_DST]) {
      size_t len = mnl_attr_get_payload_len(tb[NDA_DST]);
      n.dst = ntop(len == 4 ? AF_INET : AF_INET6, mnl_attr_get_payload(tb[NDA_DST]));
    }
    if (tb[NDA_LLADDR]) n.lladdr = macStr(tb[NDA_LLADDR]);
    if (tb[NDA_MASTER]) n.master = mnl_attr_get_u32(tb[NDA_MASTER]);
    if (tb[NDA_VNI]) n.vni = mnl_attr_get_u32(tb[NDA_VNI]);
    out.push_back(std::move(n));
  });
  return out;
}
