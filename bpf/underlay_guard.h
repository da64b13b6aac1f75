/* The underlay guard's verdict, shared by the guard programs (underlay_guard.c) and the bypass receive
 * program (pod_fastpath.c), which runs in the guard's place on the underlay's tc ingress. */
#ifndef FLANNEL_UNDERLAY_GUARD_H
#define FLANNEL_UNDERLAY_GUARD_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include "maps.h"

/* MEMBER: VXLAN to our port from a member; PASS: anything else the guard lets through */
enum verdict { PASS, DROP, MEMBER };

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
static __always_inline enum verdict guard6(struct ipv6hdr *ip6, void *data_end, __u64 len)
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
	if (!fl_peer6(&ip6->saddr)) {
		fl_count(FL_SPOOFED, len);
		return DROP;
	}
	fl_count(FL_GUARD_PASSED, len);
	return PASS;
}

static __always_inline enum verdict guard(void *data, void *data_end, __u64 len)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return PASS;	/* not even Ethernet: none of our business, the stack drops it */
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return guard6((void *)(eth + 1), data_end, len);
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
	struct fl_member_key mk;
	__builtin_memcpy(mk.ip, &ip->saddr, 4);
	if (!bpf_map_lookup_elem(&fl_members, &mk)) {
		fl_count(FL_SPOOFED, len);
		return DROP;
	}
	fl_count(FL_GUARD_PASSED, len);
	return MEMBER;
}

#endif
