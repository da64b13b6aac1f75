// SPDX-License-Identifier: GPL-2.0
/* tc egress on flannel.1 in external (collect-metadata) mode. The kernel's vxlan device does the
 * encapsulation, but only for packets that carry a tunnel key: this program decides where each packet
 * goes, replacing flannel's per-peer route, neighbour and FDB entries with one LPM lookup. IPv4 pods go
 * to the peer's PublicIP (fl_routes); on a dual-stack network IPv6 pods go to its PublicIPv6
 * (fl_routes6), as flannel's flannel-v6.1 sends them: the external device carries both families. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include "maps.h"

/* Where a packet goes: the inner destination MAC and the tunnel key towards the peer. */
struct fl_dest {
	const __u8 *vtep_mac;
	struct bpf_tunnel_key key;
	__u64 flags;
};

/* IPv4 inside: the peer's PublicIP. -1: the reason is counted, drop. */
static __always_inline int fl_dest4(struct __sk_buff *skb, void *data_end, struct iphdr *ip, struct fl_dest *d)
{
	/* Options must be there if the header says so. tot_len is not checked against skb->len: a GSO
	 * super-packet (BIG TCP sets tot_len 0) is legitimate here and is segmented after us. */
	if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5 || (void *)ip + ip->ihl * 4 > data_end) {
		fl_count(FL_MALFORMED, skb->len);
		return -1;
	}
	/* one LPM lookup: the agent keeps fl_routes as the join of fl_subnets and fl_vteps, written only
	 * once both halves exist, so "subnet known, VTEP not" (unknown_vtep) cannot happen here */
	struct fl_subnet_key sk = { .prefixlen = 32 };
	__builtin_memcpy(sk.addr, &ip->daddr, 4);
	struct fl_route *rt = bpf_map_lookup_elem(&fl_routes, &sk);
	if (!rt) {
		fl_count(FL_NO_ROUTE, skb->len);
		return -1;
	}
	__u32 remote;
	__builtin_memcpy(&remote, rt->remote_ip, 4);
	d->key.remote_ipv4 = bpf_ntohl(remote);	/* the helper wants host byte order */
	d->vtep_mac = rt->vtep_mac;
	fl_peer_tx(rt->remote_ip, skb->len);
	return 0;
}

/* IPv6 inside: the peer's PublicIPv6, over the IPv6 underlay. */
static __always_inline int fl_dest6(struct __sk_buff *skb, void *data_end, struct ipv6hdr *ip6, struct fl_dest *d)
{
	if ((void *)(ip6 + 1) > data_end || ip6->version != 6) {
		fl_count(FL_MALFORMED, skb->len);
		return -1;
	}
	struct fl_subnet6_key sk = { .prefixlen = 128 };
	__builtin_memcpy(sk.addr, &ip6->daddr, 16);
	struct fl_route6 *rt = bpf_map_lookup_elem(&fl_routes6, &sk);
	if (!rt) {
		fl_count(FL_NO_ROUTE, skb->len);
		return -1;
	}
	/* unlike remote_ipv4, the helper copies remote_ipv6 as it is: network byte order */
	__builtin_memcpy(d->key.remote_ipv6, rt->remote_ip, 16);
	d->flags |= BPF_F_TUNINFO_IPV6;
	d->vtep_mac = rt->vtep_mac;
	fl_peer6_tx(rt->remote_ip, skb->len);
	return 0;
}

SEC("tc")
int fl_vxlan_egress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct fl_config *cfg = fl_cfg();
	struct fl_dest d = {};

	if (!cfg || (void *)(eth + 1) > data_end) {
		fl_count(FL_MALFORMED, skb->len);
		return TC_ACT_SHOT;
	}
	/* IPv4 zeroes the outer UDP checksum by default (flannel's kernel default); over IPv6 a zero UDP
	 * checksum is only allowed where the receiver opted in (udp6zerocsumrx), which flannel-v6.1 does
	 * not: the checksum is always computed there */
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		d.flags = (cfg->flags & FL_CFG_KEEP_UDP_CSUM) ? 0 : BPF_F_ZERO_CSUM_TX;
		if (fl_dest4(skb, data_end, (void *)(eth + 1), &d) < 0)
			return TC_ACT_SHOT;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		if (fl_dest6(skb, data_end, (void *)(eth + 1), &d) < 0)
			return TC_ACT_SHOT;
	} else {
		fl_count(FL_NOT_IPV4, skb->len);
		return TC_ACT_SHOT;
	}

	/* The receiving vxlan device delivers the inner frame up its own stack: unless the destination MAC
	 * is its own (the peer's VtepMAC) the frame is PACKET_OTHERHOST and dropped. With ARP (and for
	 * IPv6, neighbour discovery) off our kernel wrote our own MAC here, so it must be replaced. */
	__builtin_memcpy(eth->h_dest, d.vtep_mac, 6);
	__builtin_memcpy(eth->h_source, cfg->local_mac, 6);

	d.key.tunnel_id = cfg->vni;
	d.key.tunnel_ttl = cfg->ttl ? cfg->ttl : 64;
	if (bpf_skb_set_tunnel_key(skb, &d.key, sizeof(d.key), d.flags) < 0) {
		fl_count(FL_MALFORMED, skb->len);
		return TC_ACT_SHOT;
	}
	/* A mark set on the pod's packet (kube-proxy's 0x4000 masquerade mark) would otherwise ride on
	 * the outer packet and send it through the node's masquerade rules: the 63-second connect delay. */
	skb->mark = 0;

	fl_count(FL_FORWARDED, skb->len);
	/* not TC_ACT_OK: that would end the filter chain, and a filter after ours (a policer, another
	 * agent's program) must still see the packet */
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "GPL";
