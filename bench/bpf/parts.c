/* The egress program taken apart, for the benchmark's cost breakdown: each program does one more
 * piece of fl_vxlan_egress's work on the same pinned maps, so the differences between their test-run
 * times say what each piece costs. Built by bench/programs.ts, never loaded by the agent. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include "maps.h"
#include "underlay_guard.h"
#include "vtep_ingress.h"

SEC("tc")
int part_empty(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

static __always_inline struct fl_subnet_val *lpm(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	if ((void *)(ip + 1) > data_end)
		return 0;
	struct fl_subnet_key sk = { .prefixlen = 32 };
	__builtin_memcpy(sk.addr, &ip->daddr, 4);
	return bpf_map_lookup_elem(&fl_subnets, &sk);
}

SEC("tc")
int part_lpm(struct __sk_buff *skb)
{
	return lpm(skb) ? TC_ACT_OK : TC_ACT_SHOT;
}

SEC("tc")
int part_lpm_vtep(struct __sk_buff *skb)
{
	struct fl_subnet_val *sub = lpm(skb);
	if (!sub)
		return TC_ACT_SHOT;
	struct fl_vtep_key vk = {};
	__builtin_memcpy(vk.mac, sub->vtep_mac, 6);
	return bpf_map_lookup_elem(&fl_vteps, &vk) ? TC_ACT_OK : TC_ACT_SHOT;
}

SEC("tc")
int part_tunnel_key(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = { .remote_ipv4 = 0xac14000c, .tunnel_id = 1, .tunnel_ttl = 64 };
	return bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX) < 0 ? TC_ACT_SHOT : TC_ACT_OK;
}

SEC("tc")
int part_counters(struct __sk_buff *skb)
{
	__u8 ip[4] = { 172, 20, 0, 12 };
	fl_peer_tx(ip, skb->len);
	fl_count(FL_FORWARDED, skb->len);
	return TC_ACT_OK;
}

/* the guard's and the counters' pieces, each alone */
SEC("tc")
int part_member(struct __sk_buff *skb)
{
	struct fl_member_key k = { .ip = { 172, 20, 0, 12 } };
	return bpf_map_lookup_elem(&fl_members, &k) ? TC_ACT_OK : TC_ACT_SHOT;
}

SEC("tc")
int part_peer_stats(struct __sk_buff *skb)
{
	__u8 ip[4] = { 172, 20, 0, 12 };
	return fl_peer(ip) ? TC_ACT_OK : TC_ACT_SHOT;
}

SEC("tc")
int part_count(struct __sk_buff *skb)
{
	fl_count(FL_FORWARDED, skb->len);
	return TC_ACT_OK;
}

/* The receive side's two programs with the mark each packet really arrives with. A test run repeats the
 * program on one skb, so the real programs would see their own mark from the second run on: the guard
 * would skip its hand-over, flannel.1's ingress its marked path. */
SEC("tc")
int part_guard_tc(struct __sk_buff *skb)
{
	skb->mark = 0;
	return fl_guard_skb(skb);
}

SEC("tc")
int part_ingress_handed_over(struct __sk_buff *skb)
{
	skb->mark = FL_MARK_MEMBER;
	return fl_vtep_accept(skb);
}

char LICENSE[] SEC("license") = "GPL";
