// SPDX-License-Identifier: GPL-2.0
/* The pod fast path (not in flannel). Two programs:
 *  - fl_pod_egress, tc ingress on each pod's host-side veth (attached by the CNI plugin): a packet for
 *    a remote pod skips the bridge and routing and goes straight to flannel.1, whose egress program
 *    sets the tunnel key as for any other packet;
 *  - fl_ingress_fast, tc ingress on flannel.1 in place of fl_vxlan_ingress: the same checks,
 *    then a packet for a local pod goes straight into the pod (bpf_redirect_peer).
 * Both decrement the TTL as routing would. Only flows that the stack has already accepted in both
 * directions, without NAT, take the fast path: conntrack says so (kfunc bpf_skb_ct_lookup). Everything
 * else (new flows, Service traffic that needs reverse NAT, ICMP, fragments, packets too big for
 * flannel.1) takes the normal stack, so kube-proxy's NAT and the first packets of every flow still
 * meet the node's iptables rules. */
#include <linux/bpf.h>
#include <linux/errno.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nf_conntrack_tcp.h>
#include <stddef.h>
#include <bpf/bpf_endian.h>
#include "vtep_ingress.h"
#include "underlay_guard.h"
#include "vxlan_bypass.h"

/* Only the fields we read; CO-RE places them where the running kernel has them. */
struct ip_ct_tcp {
	__u8 state;
} __attribute__((preserve_access_index));

union nf_conntrack_proto {
	struct ip_ct_tcp tcp;
} __attribute__((preserve_access_index));

struct nf_conn {
	unsigned long status;
	__u32 timeout;		/* in jiffies, absolute (nfct_time_stamp + what is left) */
	union nf_conntrack_proto proto;
} __attribute__((preserve_access_index));

struct bpf_ct_opts___local {
	__s32 netns_id;
	__s32 error;
	__u8 l4proto;
	__u8 dir;
	__u16 ct_zone_id;
	__u8 ct_zone_dir;
	__u8 reserved[3];
};

/* The options size we pass: 12, the struct before ct_zone_id. Kernels with the zone fields accept 12
 * or 16, older ones (6.1 LTS among them) only 12 and answer anything else with NULL and -EINVAL,
 * which would look like "no entry" for every flow: the fast path on, and never taken. */
#define FL_CT_OPTS_SZ 12

extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *skb, struct bpf_sock_tuple *tuple, __u32 tuple__sz,
					 struct bpf_ct_opts___local *opts, __u32 opts__sz) __ksym;
extern void bpf_ct_release(struct nf_conn *ct) __ksym;
extern int bpf_ct_change_timeout(struct nf_conn *ct, __u32 timeout) __ksym;

#define FL_FLOW_OK (-1)
/* eth + IPv4 without options + the larger of the TCP and UDP headers we read */
#define FL_HDRS (ETH_HLEN + sizeof(struct iphdr) + sizeof(struct tcphdr))
/* A flow we carry past the stack leaves conntrack's TCP state at ESTABLISHED (5 days). On FIN or RST
 * the entry gets the timeout conntrack itself would give (TIME_WAIT 120 s, CLOSE 10 s), or closed
 * connections would fill the table. The stack never sees these packets: with its stale TCP window it
 * would call them INVALID, and kube-proxy drops INVALID packets in FORWARD. */
#define FL_CT_FIN_MS 120000
#define FL_CT_RST_MS 10000
/* The stack refreshes an entry's timeout on every packet it sees; for a flow carried only by the fast
 * path nobody would, and the entry would expire mid-flow (UDP after 30 s or 120 s, TCP after 5 days):
 * the next packet then meets FORWARD as NEW. So a fast-pathed packet refreshes it with the timeout
 * conntrack would give (its defaults: nf_conntrack_tcp_timeout_established, udp_timeout(_stream)). */
#define FL_CT_TCP_EST_MS 432000000u
#define FL_CT_UDP_STREAM_MS 120000u
#define FL_CT_UDP_MS 30000u

/* Jiffies per second of the running kernel, learnt at the first refresh: afterwards the entry's timeout
 * minus now is exactly our timeout in jiffies. CONFIG_HZ is no BTF fact, and libbpf reads it only from
 * a kernel config file many hosts lack. 0 until learnt. */
__u64 fl_ct_jps = 0;

/* Rate-limited: at most 16 writes to the entry per timeout period (every 7.5 s for a UDP stream, every
 * 7.5 h for an established TCP flow), not one per packet on a shared cache line. */
static __always_inline void fl_ct_refresh(struct nf_conn *ct, __u32 timeout_ms)
{
	__s32 left = (__s32)(ct->timeout - (__u32)bpf_jiffies64());
	__u64 jps = fl_ct_jps;

	if (jps && left > 0 && (__u64)left * 1000 * 16 > (__u64)timeout_ms * jps * 15)
		return;
	if (bpf_ct_change_timeout(ct, timeout_ms))
		return;
	if (!jps) {
		left = (__s32)(ct->timeout - (__u32)bpf_jiffies64());
		if (left > 0)
			fl_ct_jps = (__u64)left * 1000 / timeout_ms;
	}
}

static __always_inline struct fl_fast_cfg *fl_fast(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&fl_fast_cfg, &zero);
}

/* The frame's first `hdrs` bytes in the linear part (after GRO they may sit in page fragments), and
 * its L3 header when the Ethernet type is `proto`; NULL leaves the packet to the stack. */
static __always_inline void *fl_l3(struct __sk_buff *skb, __u32 hdrs, __be16 proto)
{
	/* pointers, not the u32 fields: a 32-bit sum would be truncated by shifts the verifier refuses */
	if ((void *)(long)skb->data + hdrs > (void *)(long)skb->data_end && bpf_skb_pull_data(skb, skb->len < hdrs ? skb->len : hdrs) < 0)
		return NULL;
	struct ethhdr *eth = (void *)(long)skb->data;

	if ((void *)(eth + 1) > (void *)(long)skb->data_end || eth->h_proto != proto)
		return NULL;
	return eth + 1;
}

static __always_inline struct iphdr *fl_ipv4(struct __sk_buff *skb)
{
	struct iphdr *ip = fl_l3(skb, FL_HDRS, bpf_htons(ETH_P_IP));

	if (!ip || (void *)(ip + 1) > (void *)(long)skb->data_end)
		return NULL;
	/* options, fragments and expiring TTLs are the stack's: it handles them (and sends ICMP) */
	if (ip->version != 4 || ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)) || ip->ttl <= 1)
		return NULL;
	return ip;
}

/* eth + IPv6 + the larger of the TCP and UDP headers we read */
#define FL_HDRS6 (ETH_HLEN + sizeof(struct ipv6hdr) + sizeof(struct tcphdr))

/* The IPv6 twin of fl_ipv4: an expiring hop limit is left to the stack (which sends time-exceeded).
 * Extension headers, fragments among them, fail the port check later. */
static __always_inline struct ipv6hdr *fl_ipv6(struct __sk_buff *skb)
{
	struct ipv6hdr *ip6 = fl_l3(skb, FL_HDRS6, bpf_htons(ETH_P_IPV6));

	if (!ip6 || (void *)(ip6 + 1) > (void *)(long)skb->data_end)
		return NULL;
	if (ip6->version != 6 || ip6->hop_limit <= 1)
		return NULL;
	return ip6;
}

/* The ports of the conntrack tuple, and the timeout a FIN or RST asks for: FL_FLOW_OK, or the reason to
 * leave the packet to the stack. Anything but TCP and UDP (ICMP, IPv6 extension headers) is the stack's. */
static __always_inline int fl_ports(void *l4, void *data_end, __u8 proto, __be16 *sport, __be16 *dport, __u32 *timeout)
{
	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;

		if ((void *)(th + 1) > data_end)
			return FL_PASS_OTHER;
		/* a new connection meets the FORWARD rules, also when it reuses a 4-tuple conntrack knows */
		if (th->syn && !th->ack)
			return FL_PASS_NEW_FLOW;
		if (th->rst)
			*timeout = FL_CT_RST_MS;
		else if (th->fin)
			*timeout = FL_CT_FIN_MS;
		*sport = th->source;
		*dport = th->dest;
		return FL_FLOW_OK;
	}
	if (proto == IPPROTO_UDP) {
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > data_end)
			return FL_PASS_OTHER;
		*sport = uh->source;
		*dport = uh->dest;
		return FL_FLOW_OK;
	}
	return FL_PASS_OTHER;
}

/* FL_FLOW_OK when conntrack has a confirmed entry for the tuple that has seen both directions and does
 * no NAT; otherwise the reason to leave the packet to the stack. tuple_sz picks the family, as the
 * kfunc reads it. */
static __always_inline int fl_ct_ok(struct __sk_buff *skb, struct bpf_sock_tuple *t, __u32 tuple_sz, __u8 proto, __u32 timeout)
{
	struct bpf_ct_opts___local o = { .netns_id = -1, .l4proto = proto };
	struct nf_conn *ct = bpf_skb_ct_lookup(skb, t, tuple_sz, &o, FL_CT_OPTS_SZ);

	if (!ct)
		return o.error == -ENOENT ? FL_PASS_NEW_FLOW : FL_PASS_CT_ERROR;
	unsigned long status = ct->status;
	int r = FL_FLOW_OK;

	if (status & (IPS_SRC_NAT | IPS_DST_NAT))
		r = FL_PASS_NAT;
	else if (!(status & IPS_SEEN_REPLY))
		r = FL_PASS_NEW_FLOW;
	else if (timeout)
		bpf_ct_change_timeout(ct, timeout);
	else if (proto == IPPROTO_UDP)
		fl_ct_refresh(ct, (status & IPS_ASSURED) ? FL_CT_UDP_STREAM_MS : FL_CT_UDP_MS);
	else if (ct->proto.tcp.state == TCP_CONNTRACK_ESTABLISHED)
		fl_ct_refresh(ct, FL_CT_TCP_EST_MS);
	bpf_ct_release(ct);
	return r;
}

static __always_inline int fl_flow_ok(struct __sk_buff *skb, struct iphdr *ip, __u32 flags)
{
	struct bpf_sock_tuple t = {};
	__u32 timeout = 0;

	if (flags & FL_FAST_NO_CT)
		return FL_FLOW_OK;
	int r = fl_ports(ip + 1, (void *)(long)skb->data_end, ip->protocol, &t.ipv4.sport, &t.ipv4.dport, &timeout);

	if (r != FL_FLOW_OK)
		return r;
	t.ipv4.saddr = ip->saddr;
	t.ipv4.daddr = ip->daddr;
	return fl_ct_ok(skb, &t, sizeof(t.ipv4), ip->protocol, timeout);
}

/* The same rule for IPv6: conntrack tracks IPv6 flows by the same tuple, 16-byte addresses. */
static __always_inline int fl_flow_ok6(struct __sk_buff *skb, struct ipv6hdr *ip6, __u32 flags)
{
	struct bpf_sock_tuple t = {};
	__u32 timeout = 0;

	if (flags & FL_FAST_NO_CT)
		return FL_FLOW_OK;
	int r = fl_ports(ip6 + 1, (void *)(long)skb->data_end, ip6->nexthdr, &t.ipv6.sport, &t.ipv6.dport, &timeout);

	if (r != FL_FLOW_OK)
		return r;
	__builtin_memcpy(t.ipv6.saddr, &ip6->saddr, 16);
	__builtin_memcpy(t.ipv6.daddr, &ip6->daddr, 16);
	return fl_ct_ok(skb, &t, sizeof(t.ipv6), ip6->nexthdr, timeout);
}

/* The local pod a packet is for, when its flow may skip the stack; NULL with the reason to leave it to
 * the stack otherwise. */
static __always_inline struct fl_pod_val *fl_deliverable(struct __sk_buff *skb, struct iphdr *ip, __u32 flags, int *reason)
{
	struct fl_pod_key pk;

	__builtin_memcpy(pk.ip, &ip->daddr, 4);
	struct fl_pod_val *pod = bpf_map_lookup_elem(&fl_local_pods, &pk);

	if (!pod || !pod->ifindex) {
		*reason = FL_PASS_NOT_POD;
		return NULL;
	}
	int r = fl_flow_ok(skb, ip, flags);

	if (r != FL_FLOW_OK) {
		*reason = r;
		return NULL;
	}
	return pod;
}

/* Leaves the packet to the stack, counting why. TC_ACT_UNSPEC, not TC_ACT_OK: the filters after ours on
 * the veth or on flannel.1 still run. */
static __always_inline int fl_pass(struct __sk_buff *skb, __u32 reason)
{
	fl_count_fast(reason, skb->len);
	return TC_ACT_UNSPEC;
}

/* TTL - 1 with the header checksum fixed; ip sits at offset off. Invalidates packet pointers. */
static __always_inline void fl_ttl_dec(struct __sk_buff *skb, struct iphdr *ip, __u32 off)
{
	__u16 *pair = (__u16 *)&ip->ttl;	/* ttl and protocol: one 16-bit word of the checksum */
	__u16 old = *pair;

	ip->ttl--;
	bpf_l3_csum_replace(skb, off + offsetof(struct iphdr, check), old, *pair, 2);
}

/* Bypass send: the pod's packet, encapsulated here, straight out of the underlay. -1 leaves the packet
 * unchanged for flannel.1 (no route the kernel would forward by, or the kernel refused the encap). */
static __always_inline int fl_bypass_tx(struct __sk_buff *skb, const struct fl_fast_cfg *fc, const struct fl_route *rt, __u8 tos)
{
	struct fl_config *cfg = fl_cfg();
	struct bpf_fib_lookup p;
	int known;

	if (!cfg)
		return -1;
	/* The outer IPv4 length is 16 bits. A GSO packet near 64 KiB (a UDP_SEGMENT burst of a QUIC
	 * server, say) has no room for 50 more bytes: its length would wrap, and the receiver would trim
	 * the packet to the wrapped length. flannel.1 sends those. */
	if (skb->len - ETH_HLEN + FL_ENCAP_LEN > 0xffff) {
		fl_count_fast(FL_PASS_TOO_BIG, skb->len);
		return -1;
	}
	if ((known = fl_bypass_route(skb, fc, rt->remote_ip, &p)) < 0) {
		fl_count_fast(FL_PASS_NO_FIB, skb->len);
		return -1;
	}
	if (fl_vxlan_encap(skb, cfg, rt, fc, tos) < 0)
		return -1;
	void *data = (void *)(long)skb->data;
	struct iphdr *inner = data + ETH_HLEN + FL_ENCAP_LEN;

	if ((void *)(inner + 1) > (void *)(long)skb->data_end)
		return TC_ACT_SHOT;	/* cannot happen: adjust_room keeps the pulled headers linear */
	fl_ttl_dec(skb, inner, ETH_HLEN + FL_ENCAP_LEN);
	/* kube-proxy's masquerade mark must not ride on the outer packet (see vxlan_egress.c) */
	skb->mark = 0;
	fl_peer_tx(rt->remote_ip, skb->len);
	fl_count_fast(FL_BYPASS_TX, skb->len);
	return fl_bypass_send(skb, &p, known);
}

/* IPv6 leaves over the IPv6 underlay, whose headers take 20 bytes more than the IPv4 VXLAN that
 * flannel.1's MTU is set for (70 against 50): the agent's IPv6 route through flannel.1 carries the
 * smaller MTU, which a redirect skips. */
#define FL_TUNNEL6_EXTRA 20

/* Whether the packet, or each segment of a GSO packet, fits flannel.1's MTU less FL_TUNNEL6_EXTRA.
 * BPF_MTU_CHK_SEGS refuses a length difference, and without it a GSO packet passes whatever its
 * size: its segments are measured here, headers plus gso_size. */
static __always_inline int fl_fits6(struct __sk_buff *skb, struct ipv6hdr *ip6, __u32 vtep)
{
	__u32 mtu = 0;
	__u32 l4 = sizeof(struct udphdr);

	if (bpf_check_mtu(skb, vtep, &mtu, FL_TUNNEL6_EXTRA, 0) != BPF_MTU_CHK_RET_SUCCESS)
		return 0;
	if (!skb->gso_size)
		return 1;
	if (ip6->nexthdr == IPPROTO_TCP) {
		struct tcphdr *th = (void *)(ip6 + 1);

		if ((void *)(th + 1) > (void *)(long)skb->data_end)
			return 0;
		l4 = th->doff * 4;
	}
	return sizeof(struct ipv6hdr) + l4 + skb->gso_size + FL_TUNNEL6_EXTRA <= mtu;
}

/* The send side for IPv6: flannel.1's IPv6 table (fl_routes6) says "remote pod". Bypass encapsulates
 * over the IPv4 underlay only, so IPv6 flows always go through flannel.1. */
static __always_inline int fl_pod_egress6(struct __sk_buff *skb, const struct fl_fast_cfg *fc)
{
	struct ipv6hdr *ip6 = fl_ipv6(skb);

	if (!ip6)
		return fl_pass(skb, FL_PASS_OTHER);
	struct fl_subnet6_key sk = { .prefixlen = 128 };

	__builtin_memcpy(sk.addr, &ip6->daddr, 16);
	if (!bpf_map_lookup_elem(&fl_routes6, &sk))
		return fl_pass(skb, FL_PASS_NOT_POD);
	int r = fl_flow_ok6(skb, ip6, fc->flags);

	if (r != FL_FLOW_OK)
		return fl_pass(skb, r);
	__u32 vtep = fc->vtep_ifindex;

	if (!fl_fits6(skb, ip6, vtep))
		return fl_pass(skb, FL_PASS_OTHER);
	ip6->hop_limit--;	/* no header checksum in IPv6 */
	fl_count_fast(FL_FAST_TX, skb->len);
	return bpf_redirect(vtep, 0);
}

SEC("tc")
int fl_pod_egress(struct __sk_buff *skb)
{
	struct fl_fast_cfg *fc = fl_fast();
	struct iphdr *ip;

	if (!fc || !(fc->flags & FL_FAST_ON) || !fc->vtep_ifindex)
		return fl_pass(skb, FL_PASS_OTHER);
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return fl_pod_egress6(skb, fc);
	if (!(ip = fl_ipv4(skb)))
		return fl_pass(skb, FL_PASS_OTHER);
	struct fl_subnet_key sk = { .prefixlen = 32 };

	__builtin_memcpy(sk.addr, &ip->daddr, 4);
	/* the map flannel.1's egress reads: a destination there is a remote pod it can send to */
	struct fl_route *rt = bpf_map_lookup_elem(&fl_routes, &sk);

	if (!rt)
		return fl_pass(skb, FL_PASS_NOT_POD);
	int r = fl_flow_ok(skb, ip, fc->flags);

	if (r != FL_FLOW_OK)
		return fl_pass(skb, r);
	__u32 vtep = fc->vtep_ifindex;
	__u32 mtu = 0;

	/* A redirect skips the forwarding path's MTU check: a packet too big for flannel.1 goes to the
	 * stack, which answers "fragmentation needed" as it would without us. A GSO packet passes the plain
	 * check whatever its segment size; BPF_MTU_CHK_SEGS checks each segment it will become. */
	if (bpf_check_mtu(skb, vtep, &mtu, 0, BPF_MTU_CHK_SEGS) != BPF_MTU_CHK_RET_SUCCESS)
		return fl_pass(skb, FL_PASS_OTHER);
	if (fc->flags & FL_FAST_BYPASS) {
		int v = fl_bypass_tx(skb, fc, rt, ip->tos);

		if (v >= 0)
			return v;
		/* unchanged: flannel.1 sends it, as without bypass */
		ip = fl_ipv4(skb);
		if (!ip)
			return fl_pass(skb, FL_PASS_OTHER);
	}
	fl_ttl_dec(skb, ip, ETH_HLEN);
	fl_count_fast(FL_FAST_TX, skb->len);
	/* flannel.1's egress program runs on the redirected packet: it writes the MACs and the tunnel key */
	return bpf_redirect(vtep, 0);
}

/* The frame as the bridge would hand it to the pod: from its gateway, to its MAC. */
static __always_inline int fl_pod_macs(struct __sk_buff *skb, const struct fl_pod_val *pod)
{
	struct ethhdr *eth = (void *)(long)skb->data;

	if ((void *)(eth + 1) > (void *)(long)skb->data_end)
		return -1;
	__builtin_memcpy(eth->h_dest, pod->pod_mac, 6);
	__builtin_memcpy(eth->h_source, pod->gw_mac, 6);
	return 0;
}

/* The receive side for IPv6: a pod registered by its IPv6 address (fl_local_pods6). */
static __always_inline int fl_ingress_fast6(struct __sk_buff *skb, const struct fl_fast_cfg *fc)
{
	struct ipv6hdr *ip6 = fl_ipv6(skb);

	if (!ip6)
		return fl_pass(skb, FL_PASS_OTHER);
	struct fl_pod6_key pk;

	__builtin_memcpy(pk.ip, &ip6->daddr, 16);
	struct fl_pod_val *pod = bpf_map_lookup_elem(&fl_local_pods6, &pk);

	if (!pod || !pod->ifindex)
		return fl_pass(skb, FL_PASS_NOT_POD);
	int r = fl_flow_ok6(skb, ip6, fc->flags);

	if (r != FL_FLOW_OK)
		return fl_pass(skb, r);
	ip6->hop_limit--;
	__u32 ifindex = pod->ifindex;

	if (fl_pod_macs(skb, pod) < 0)
		return TC_ACT_UNSPEC;
	fl_count_fast(FL_FAST_RX, skb->len);
	return bpf_redirect_peer(ifindex, 0);
}

SEC("tc")
int fl_ingress_fast(struct __sk_buff *skb)
{
	int verdict = fl_vtep_accept(skb);

	if (verdict == TC_ACT_SHOT)
		return verdict;
	struct fl_fast_cfg *fc = fl_fast();
	struct iphdr *ip;

	if (!fc || !(fc->flags & FL_FAST_ON))
		return fl_pass(skb, FL_PASS_OTHER);
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return fl_ingress_fast6(skb, fc);
	if (!(ip = fl_ipv4(skb)))
		return fl_pass(skb, FL_PASS_OTHER);
	int reason;
	struct fl_pod_val *pod = fl_deliverable(skb, ip, fc->flags, &reason);

	if (!pod)
		return fl_pass(skb, reason);
	__u32 ifindex = pod->ifindex;

	if (fl_pod_macs(skb, pod) < 0)
		return TC_ACT_UNSPEC;
	ip = (void *)(long)skb->data + ETH_HLEN;
	if ((void *)(ip + 1) > (void *)(long)skb->data_end)
		return TC_ACT_UNSPEC;
	fl_ttl_dec(skb, ip, ETH_HLEN);
	fl_count_fast(FL_FAST_RX, skb->len);
	return bpf_redirect_peer(ifindex, 0);
}

static __always_inline int fl_mac_eq(const __u8 *a, const __u8 *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) | (a[5] ^ b[5])) == 0;
}

/* outer Ethernet, the VXLAN headers, and the inner IPv4 and TCP headers */
#define FL_RX_HDRS (ETH_HLEN + FL_ENCAP_LEN + sizeof(struct iphdr) + sizeof(struct tcphdr))

/* Bypass receive, for VXLAN from a member: a packet for a local pod whose flow conntrack has seen
 * both ways goes into the pod; anything else goes on to the vxlan socket and flannel.1, unchanged. */
static __always_inline int fl_bypass_rx(struct __sk_buff *skb, const struct fl_fast_cfg *fc, struct fl_peer_stats *peer)
{
	/* A GRO aggregate of VXLAN segments: this kernel's bpf_skb_adjust_room() cannot clear its
	 * UDP-tunnel GSO state (no BPF_F_ADJ_ROOM_DECAP_L4_UDP before 6.19), and left stale that state
	 * breaks segmentation if the inner packet is ever forwarded. flannel.1 decapsulates it. */
	if (skb->gso_size)
		return fl_pass(skb, FL_PASS_GRO);
	if (skb->data + FL_RX_HDRS > skb->data_end && bpf_skb_pull_data(skb, skb->len < FL_RX_HDRS ? skb->len : FL_RX_HDRS) < 0)
		return TC_ACT_UNSPEC;
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
	struct fl_vxlan_hdrs *h = data + ETH_HLEN;
	struct iphdr *ip = data + ETH_HLEN + FL_ENCAP_LEN;
	struct fl_config *cfg = fl_cfg();

	if ((void *)(ip + 1) > data_end || !cfg)
		return TC_ACT_UNSPEC;
	/* what flannel.1 and its ingress program would refuse or count stays theirs: options, other
	 * flags, another VNI, a frame for another MAC, not IPv4 */
	if (h->ip.ihl != 5 || h->vx_flags != FL_VXLAN_I || h->vx_vni != bpf_htonl(cfg->vni << 8))
		return TC_ACT_UNSPEC;
	if (!fl_mac_eq(h->eth.h_dest, cfg->local_mac) || h->eth.h_proto != bpf_htons(ETH_P_IP))
		return fl_pass(skb, FL_PASS_OTHER);
	if (ip->version != 4 || ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)) || ip->ttl <= 1)
		return fl_pass(skb, FL_PASS_OTHER);
	int reason;
	struct fl_pod_val *pod = fl_deliverable(skb, ip, fc->flags, &reason);

	if (!pod)
		return fl_pass(skb, reason);
	if (bpf_skb_adjust_room(skb, -FL_ENCAP_LEN, BPF_ADJ_ROOM_MAC, 0))
		return fl_pass(skb, FL_PASS_OTHER);
	/* The outer UDP datagram was one checksum level of a CHECKSUM_UNNECESSARY packet: the UDP layer
	 * would have consumed it (udp4_csum_init), so the inner TCP or UDP checksum is not claimed as
	 * verified when it was not. A no-op for the other checksum states. */
	bpf_csum_level(skb, BPF_CSUM_LEVEL_DEC);
	struct ethhdr *eth = (void *)(long)skb->data;

	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > (void *)(long)skb->data_end)
		return TC_ACT_SHOT;	/* cannot happen: the inner headers were linear before */
	__builtin_memcpy(eth->h_dest, pod->pod_mac, 6);
	__builtin_memcpy(eth->h_source, pod->gw_mac, 6);
	__u32 ifindex = pod->ifindex;

	fl_ttl_dec(skb, ip, ETH_HLEN);
	peer->rx_packets++;
	peer->rx_bytes += skb->len;
	fl_count_fast(FL_BYPASS_RX, skb->len);
	return bpf_redirect_peer(ifindex, 0);
}

/* tc ingress on the underlay in bypass mode, in place of fl_guard_tc (hence the name, which tells
 * operators and the agent what runs there): the guard's verdict first, and what bypass leaves to
 * flannel.1 is handed over as fl_guard_tc hands it. */
SEC("tc")
int fl_guard_bypass(struct __sk_buff *skb)
{
	struct fl_seen seen = {};
	enum verdict v = guard((void *)(long)skb->data, (void *)(long)skb->data_end, skb->len, &seen);
	struct fl_fast_cfg *fc;

	if (v == DROP)
		return TC_ACT_SHOT;
	if (v == MEMBER && seen.peer && (fc = fl_fast()) &&
	    (fc->flags & (FL_FAST_ON | FL_FAST_BYPASS)) == (FL_FAST_ON | FL_FAST_BYPASS)) {
		int r = fl_bypass_rx(skb, fc, seen.peer);

		if (r != TC_ACT_UNSPEC)
			return r;	/* delivered into the pod */
	}
	fl_guard_handoff(skb, &seen);
	return TC_ACT_UNSPEC;
}

/* Load-time probe, run once by the agent through BPF_PROG_TEST_RUN: a conntrack lookup with our
 * options for a flow that cannot exist. Returns the lookup's errno: ENOENT means the kfunc works as we
 * call it; anything else (EINVAL: options refused) means the fast path could never engage. */
SEC("tc")
int fl_ct_probe(struct __sk_buff *skb)
{
	struct bpf_sock_tuple t = {};
	struct bpf_ct_opts___local o = { .netns_id = -1, .l4proto = IPPROTO_UDP };

	t.ipv4.saddr = bpf_htonl(0x7f000001);
	t.ipv4.daddr = bpf_htonl(0x7f000001);
	t.ipv4.sport = bpf_htons(1);
	t.ipv4.dport = bpf_htons(1);
	struct nf_conn *ct = bpf_skb_ct_lookup(skb, &t, sizeof(t.ipv4), &o, FL_CT_OPTS_SZ);

	if (ct) {
		bpf_ct_release(ct);
		return ENOENT;	/* an entry for 127.0.0.1:1 <-> :1 exists: the lookup works all the same */
	}
	return -o.error;
}

/* Load-time probe for bypass mode, run once by the agent through BPF_PROG_TEST_RUN on an IPv4 frame:
 * 0 when the kernel adds VXLAN room with the UDP-tunnel GSO flags, else the errno it refused with. */
SEC("tc")
int fl_encap_probe(struct __sk_buff *skb)
{
	/* the same call as fl_vxlan_encap(), flags and all: the probe answers for exactly what bypass does */
	return -bpf_skb_adjust_room(skb, FL_ENCAP_LEN, BPF_ADJ_ROOM_MAC, FL_VXLAN_ROOM_FLAGS);
}

char LICENSE[] SEC("license") = "GPL";
