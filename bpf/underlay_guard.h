/* The underlay guard's verdict, shared by the guard programs (underlay_guard.c) and the bypass receive
 * program (pod_fastpath.c), which runs in the guard's place on the underlay's tc ingress. */
#ifndef FLANNEL_UNDERLAY_GUARD_H
#define FLANNEL_UNDERLAY_GUARD_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include "maps.h"

/* MEMBER: VXLAN to our port from a member over IPv4 (bypass may decapsulate it); PASS: anything else
 * the guard lets through, a member's VXLAN over IPv6 included */
enum verdict { PASS, DROP, MEMBER };

#define FL_VXLAN_I bpf_htonl(0x08000000)	/* "VNI valid", the only flag flannel.1 sets or accepts */
#define FL_VXLAN_HLEN 8

/* What the tc guard learns of a member's VXLAN packet, for its hand-over to flannel.1 (fl_guard_handoff)
 * and for bypass: the member's counters and where the VXLAN header starts (the inner frame follows). The
 * XDP guard passes none: it runs per wire frame, where the cheaper plain hash (fl_members) is enough and
 * an XDP program cannot mark the skb that GRO will build. */
struct fl_seen {
	struct fl_peer_stats *peer;
	__u32 vxlan;
};

/* The UDP header after an IP header: 1 when it goes to our VXLAN port, 0 when not (not ours to judge),
 * -1 when it is cut short (counted as malformed, dropped). Both families' guards ask it. */
static __always_inline int fl_to_our_port(struct udphdr *udp, void *data_end, __u64 len)
{
	if ((void *)(udp + 1) > data_end) {
		fl_count(FL_MALFORMED, len);
		return -1;
	}
	struct fl_config *cfg = fl_cfg();
	return cfg && udp->dest == bpf_htons(cfg->port);
}

/* VXLAN over the IPv6 underlay (a dual-stack network): the same rule, members by PublicIPv6. A member's
 * packet is a PASS, not a MEMBER: bypass mode decapsulates IPv4 outer headers only, so the kernel's
 * vxlan device takes it. Extension headers before UDP are left to the stack: flannel.1's ingress still
 * checks the tunnel's source. */
static __always_inline enum verdict guard6(struct ipv6hdr *ip6, void *data_end, __u64 len, struct fl_seen *seen)
{
	if ((void *)(ip6 + 1) > data_end) {
		fl_count(FL_MALFORMED, len);
		return DROP;
	}
	if (ip6->nexthdr != IPPROTO_UDP)
		return PASS;
	int ours = fl_to_our_port((void *)(ip6 + 1), data_end, len);
	if (ours <= 0)
		return ours < 0 ? DROP : PASS;
	struct fl_peer_stats *peer = fl_peer6(&ip6->saddr);
	if (!peer) {
		fl_count(FL_SPOOFED, len);
		return DROP;
	}
	if (seen) {
		seen->peer = peer;
		seen->vxlan = ETH_HLEN + sizeof(*ip6) + sizeof(struct udphdr);
	}
	fl_count(FL_GUARD_PASSED, len);
	return PASS;
}

/* seen: NULL for the XDP guard; the tc programs get the member's counters through it (one lookup) */
static __always_inline enum verdict guard(void *data, void *data_end, __u64 len, struct fl_seen *seen)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return PASS;	/* not even Ethernet: none of our business, the stack drops it */
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return guard6((void *)(eth + 1), data_end, len, seen);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return PASS;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->ihl < 5) {
		fl_count(FL_MALFORMED, len);
		return DROP;
	}
	if (ip->protocol != IPPROTO_UDP || (ip->frag_off & bpf_htons(0x1fff)))
		return PASS;	/* later fragments carry no UDP header; reassembly happens after us */
	int ours = fl_to_our_port((void *)ip + ip->ihl * 4, data_end, len);
	if (ours <= 0)
		return ours < 0 ? DROP : PASS;
	/* one membership lookup: fl_peer_stats holds exactly the members, with the counters the hand-over
	 * needs; the XDP guard asks the plain fl_members, the same set */
	void *member;
	if (seen) {
		seen->peer = fl_peer((const __u8 *)&ip->saddr);
		seen->vxlan = ETH_HLEN + ip->ihl * 4 + sizeof(struct udphdr);
		member = seen->peer;
	} else {
		struct fl_member_key mk;
		__builtin_memcpy(mk.ip, &ip->saddr, 4);
		member = bpf_map_lookup_elem(&fl_members, &mk);
	}
	if (!member) {
		fl_count(FL_SPOOFED, len);
		return DROP;
	}
	fl_count(FL_GUARD_PASSED, len);
	return MEMBER;
}

/* tc only: a member's VXLAN packet with our VNI is counted for its member here and marked
 * FL_MARK_MEMBER, so that flannel.1's ingress neither reads the tunnel key nor looks the member up again
 * (one membership lookup per packet on the receive path, not two). The mark survives the decapsulation:
 * the vxlan device scrubs it only when the packet changes network namespace. A packet that already
 * carries a mark, a short header or another VNI is not marked, and flannel.1 judges and counts it. */
static __always_inline void fl_guard_handoff(struct __sk_buff *skb, const struct fl_seen *seen)
{
	__u32 off = seen->vxlan;
	struct fl_config *cfg = fl_cfg();

	if (!seen->peer || skb->mark || !cfg || off > ETH_HLEN + 60 + sizeof(struct udphdr))
		return;
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
	__be32 *vx = data + off;
	if ((void *)(vx + 2) > data_end || vx[0] != FL_VXLAN_I || vx[1] != bpf_htonl(cfg->vni << 8))
		return;
	seen->peer->rx_packets++;
	seen->peer->rx_bytes += skb->len - off - FL_VXLAN_HLEN;	/* the inner frame, as flannel.1 counted it */
	skb->mark = FL_MARK_MEMBER;
}

/* The tc guard (fl_guard_tc). A pass is "not ours to stop": TC_ACT_UNSPEC lets the NIC's other filters
 * (a host firewall, a policer) run; TC_ACT_OK would end the chain in direct-action mode and skip them. */
static __always_inline int fl_guard_skb(struct __sk_buff *skb)
{
	struct fl_seen seen = {};

	if (guard((void *)(long)skb->data, (void *)(long)skb->data_end, skb->len, &seen) == DROP)
		return TC_ACT_SHOT;
	fl_guard_handoff(skb, &seen);
	return TC_ACT_UNSPEC;
}

#endif
