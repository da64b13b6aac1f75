// SPDX-License-Identifier: GPL-2.0
/* tc egress on flannel.1 in external (collect-metadata) mode. The kernel's vxlan device does the
 * encapsulation, but only for packets that carry a tunnel key: this program decides where each packet
 * goes, replacing flannel's per-peer route, neighbour and FDB entries with one LPM lookup. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include "maps.h"

SEC("tc")
int fl_vxlan_egress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct fl_config *cfg = fl_cfg();

	if (!cfg || (void *)(ip + 1) > data_end) {
		fl_count(FL_MALFORMED, skb->len);
		return TC_ACT_SHOT;
	}
	if (eth->h_proto != bpf_htons(ETH_P_IP)) {
		fl_count(FL_NOT_IPV4, skb->len);
		return TC_ACT_SHOT;
	}
	/* Options must be there if the header says so. tot_len is not checked against skb->len: a GSO
	 * super-packet (BIG TCP sets tot_len 0) is legitimate here and is segmented after us. */
	if (ip->version != 4 || ip->ihl < 5 || (void *)ip + ip->ihl * 4 > data_end) {
		fl_count(FL_MALFORMED, skb->len);
		return TC_ACT_SHOT;
	}

	/* one LPM lookup: the agent keeps fl_routes as the join of fl_subnets and fl_vteps, written only
	 * once both halves exist, so "subnet known, VTEP not" (unknown_vtep) cannot happen here */
	struct fl_subnet_key sk = { .prefixlen = 32 };
	__builtin_memcpy(sk.addr, &ip->daddr, 4);
	struct fl_route *rt = bpf_map_lookup_elem(&fl_routes, &sk);
	if (!rt) {
		fl_count(FL_NO_ROUTE, skb->len);
		return TC_ACT_SHOT;
	}

	/* The receiving vxlan device delivers the inner frame up its own stack: unless the destination MAC
	 * is its own (the peer's VtepMAC) the frame is PACKET_OTHERHOST and dropped. With ARP off our
	 * kernel wrote our own MAC here, so it must be replaced. */
	__builtin_memcpy(eth->h_dest, rt->vtep_mac, 6);
	__builtin_memcpy(eth->h_source, cfg->local_mac, 6);

	struct bpf_tunnel_key key = {};
	__u32 remote;
	__builtin_memcpy(&remote, rt->remote_ip, 4);
	key.remote_ipv4 = bpf_ntohl(remote);	/* the helper wants host byte order */
	key.tunnel_id = cfg->vni;
	key.tunnel_ttl = cfg->ttl ? cfg->ttl : 64;
	__u64 flags = (cfg->flags & FL_CFG_KEEP_UDP_CSUM) ? 0 : BPF_F_ZERO_CSUM_TX;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), flags) < 0) {
		fl_count(FL_MALFORMED, skb->len);
		return TC_ACT_SHOT;
	}
	/* A mark set on the pod's packet (kube-proxy's 0x4000 masquerade mark) would otherwise ride on
	 * the outer packet and send it through the node's masquerade rules: the 63-second connect delay. */
	skb->mark = 0;

	fl_peer_tx(rt->remote_ip, skb->len);
	fl_count(FL_FORWARDED, skb->len);
	/* not TC_ACT_OK: that would end the filter chain, and a filter after ours (a policer, another
	 * agent's program) must still see the packet */
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "GPL";
