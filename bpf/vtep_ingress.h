/* What flannel.1's tc ingress checks on every decapsulated packet, shared by the plain ingress program
 * and the fast-path one. An external vxlan device accepts every VNI on its port, so this enforces what
 * a classic device with "id 1" did implicitly: VNI 1 only, and only from cluster members. */
/* Verdicts: TC_ACT_SHOT drops; TC_ACT_UNSPEC accepts and lets the filters after ours run (TC_ACT_OK
 * would end the chain in direct-action cls_bpf, hiding the packet from a host firewall behind us). */
#ifndef FLANNEL_VTEP_INGRESS_H
#define FLANNEL_VTEP_INGRESS_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include "maps.h"

static __always_inline int fl_vtep_accept(struct __sk_buff *skb)
{
	/* judged and counted by the underlay's tc guard (fl_guard_handoff): a member, VNI ours */
	if (skb->mark == FL_MARK_MEMBER) {
		skb->mark = 0;
		fl_count(FL_RECEIVED, skb->len);
		return TC_ACT_UNSPEC;
	}
	struct fl_config *cfg = fl_cfg();
	struct bpf_tunnel_key key = {};

	if (!cfg) {
		fl_count(FL_MALFORMED, skb->len);
		return TC_ACT_SHOT;
	}
	/* the helper refuses (-EPROTO) to read an IPv6 tunnel without BPF_F_TUNINFO_IPV6 and an IPv4 one
	 * with it: VXLAN over the IPv6 underlay (a dual-stack network) is the second try */
	int six = 0;
	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) < 0) {
		if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), BPF_F_TUNINFO_IPV6) < 0) {
			fl_count(FL_MALFORMED, skb->len);
			return TC_ACT_SHOT;
		}
		six = 1;
	}
	if (key.tunnel_id != cfg->vni) {
		fl_count(FL_WRONG_VNI, skb->len);
		return TC_ACT_SHOT;
	}
	/* one lookup: a member's counters exist exactly while it holds a lease */
	struct fl_peer_stats *peer;
	if (six) {
		peer = fl_peer6(key.remote_ipv6);
	} else {
		__u8 remote[4];
		__u32 r = bpf_htonl(key.remote_ipv4);
		__builtin_memcpy(remote, &r, 4);
		peer = fl_peer(remote);
	}
	if (!peer) {
		fl_count(FL_SPOOFED, skb->len);
		return TC_ACT_SHOT;
	}
	peer->rx_packets++;
	peer->rx_bytes += skb->len;
	fl_count(FL_RECEIVED, skb->len);
	return TC_ACT_UNSPEC;
}

#endif
