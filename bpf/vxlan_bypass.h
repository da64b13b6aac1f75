/* Bypass mode (not in flannel): VXLAN encapsulation and decapsulation in BPF, so that a pod's packet goes
 * from its veth to the underlay, and back, without flannel.1. On the wire it is what flannel.1 sends
 * with flannel's defaults, so a classic flannel node takes it as from any other node: outer IPv4
 * without DF from the address flannel.1 would use, TTL from fl_config, UDP to port 8472 from a source
 * port hashed from the flow, zero UDP checksum, VXLAN with the I flag and VNI 1, inner Ethernet from
 * our VtepMAC to the peer's. flannel.1 stays: it owns the UDP socket, the GRO handler of the port, and
 * it carries every packet these helpers leave alone. */
#ifndef FLANNEL_VXLAN_BYPASS_H
#define FLANNEL_VXLAN_BYPASS_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include "maps.h"
#include "underlay_guard.h"

#define FL_AF_INET 2

/* outer IPv4 + UDP + VXLAN + inner Ethernet, as they follow the outer Ethernet header */
struct fl_vxlan_hdrs {
	struct iphdr ip;
	struct udphdr udp;
	__be32 vx_flags;
	__be32 vx_vni;
	struct ethhdr eth;
};
#define FL_ENCAP_LEN 50
_Static_assert(__builtin_offsetof(struct fl_vxlan_hdrs, eth) + sizeof(struct ethhdr) == FL_ENCAP_LEN, "VXLAN overhead");
/* room for outer IPv4 + UDP + VXLAN + inner Ethernet, marked so that GSO segments it as a UDP tunnel */
#define FL_VXLAN_ROOM_FLAGS                                                                                   \
	(BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2_ETH | BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN))

/* The kernel's udp_flow_src_port() as flannel.1 runs it (no port range configured): the flow hash over
 * the default local port range. A peer accepts any source port; what matters is that one flow keeps
 * one port and flows spread, for the underlay's ECMP and the receiver's RSS. */
static __always_inline __be16 fl_vxlan_sport(struct __sk_buff *skb)
{
	__u32 h = bpf_get_hash_recalc(skb);

	h ^= h << 16;
	return bpf_htons((__u16)((((__u64)h * (60999 - 32768)) >> 32) + 32768));
}

static __always_inline __u16 fl_ip_csum(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < (int)(sizeof(*ip) / 2); i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* Where the outer packet leaves, routed as the kernel would route flannel.1's datagram: p->ifindex
 * filled and 1 when the neighbour is known (p->dmac, p->smac filled too), 0 when the kernel must resolve
 * it (p->ipv4_dst is then the next hop), -1 when there is no forwardable route: flannel.1 sends it. */
static __always_inline int fl_bypass_route(struct __sk_buff *skb, const struct fl_fast_cfg *fc, const __u8 remote[4],
					   struct bpf_fib_lookup *p)
{
	__builtin_memset(p, 0, sizeof(*p));
	p->family = FL_AF_INET;
	p->l4_protocol = IPPROTO_UDP;
	p->ifindex = skb->ifindex;	/* looked up as forwarded from the pod's veth */
	__builtin_memcpy(&p->ipv4_src, fc->local_ip, 4);
	__builtin_memcpy(&p->ipv4_dst, remote, 4);
	int rc = bpf_fib_lookup(skb, p, sizeof(*p), 0);

	return rc == BPF_FIB_LKUP_RET_SUCCESS ? 1 : rc == BPF_FIB_LKUP_RET_NO_NEIGH ? 0 : -1;
}

/* Puts the VXLAN headers in front of the pod's IPv4 packet (its Ethernet header stays outermost and
 * becomes the outer one). The ENCAP flags make a GSO packet segment as a UDP tunnel: each segment gets
 * its own outer headers, as if flannel.1 had sent it. Returns < 0 with the packet unchanged on failure. */
static __always_inline int fl_vxlan_encap(struct __sk_buff *skb, const struct fl_config *cfg, const struct fl_route *rt,
					  const struct fl_fast_cfg *fc, __u8 inner_tos)
{
	__u32 inner_len = skb->len - ETH_HLEN;	/* the IPv4 packet; a GSO packet's super-length */
	struct fl_vxlan_hdrs h = {};
	__be16 sport = fl_vxlan_sport(skb);

	h.ip.version = 4;
	h.ip.ihl = 5;
	/* only the inner ECN bits, CE sent as ECT(0): what ip_tunnel_ecn_encap() does with tos 0 */
	h.ip.tos = (inner_tos & 3) == 3 ? 2 : (inner_tos & 3);
	h.ip.tot_len = bpf_htons(inner_len + FL_ENCAP_LEN);
	h.ip.id = (__be16)bpf_get_prandom_u32();
	h.ip.ttl = cfg->ttl ? cfg->ttl : 64;
	h.ip.protocol = IPPROTO_UDP;
	__builtin_memcpy(&h.ip.saddr, fc->local_ip, 4);
	__builtin_memcpy(&h.ip.daddr, rt->remote_ip, 4);
	h.ip.check = fl_ip_csum(&h.ip);
	h.udp.source = sport;
	h.udp.dest = bpf_htons(cfg->port);
	h.udp.len = bpf_htons(inner_len + FL_ENCAP_LEN - sizeof(struct iphdr));
	h.vx_flags = FL_VXLAN_I;
	h.vx_vni = bpf_htonl(cfg->vni << 8);
	__builtin_memcpy(h.eth.h_dest, rt->vtep_mac, 6);
	__builtin_memcpy(h.eth.h_source, cfg->local_mac, 6);
	h.eth.h_proto = bpf_htons(ETH_P_IP);

	int err = bpf_skb_adjust_room(skb, FL_ENCAP_LEN, BPF_ADJ_ROOM_MAC, FL_VXLAN_ROOM_FLAGS);

	if (err)
		return err;
	return bpf_skb_store_bytes(skb, ETH_HLEN, &h, FL_ENCAP_LEN, 0);
}

/* The outer Ethernet header from the route, and the packet out of the underlay. */
static __always_inline int fl_bypass_send(struct __sk_buff *skb, struct bpf_fib_lookup *p, int neigh_known)
{
	if (neigh_known) {
		if (bpf_skb_store_bytes(skb, 0, p->dmac, 6, 0) || bpf_skb_store_bytes(skb, 6, p->smac, 6, 0))
			return TC_ACT_SHOT;
		return bpf_redirect(p->ifindex, 0);
	}
	/* the neighbour is not resolved yet: the kernel resolves it and queues the packet meanwhile */
	struct bpf_redir_neigh nh = { .nh_family = FL_AF_INET };

	__builtin_memcpy(&nh.ipv4_nh, &p->ipv4_dst, 4);
	return bpf_redirect_neigh(p->ifindex, &nh, sizeof(nh), 0);
}

#endif
