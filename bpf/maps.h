/* The pinned maps. Every object file includes this; LIBBPF_PIN_BY_NAME makes them one set of maps
 * under the agent's pin root, reused across agent restarts so the data plane never empties. */
#ifndef FLANNEL_MAPS_H
#define FLANNEL_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "flannel.h"

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, FL_MAX_PEERS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fl_subnet_key);
	__type(value, struct fl_subnet_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fl_subnets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, FL_MAX_PEERS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fl_subnet_key);
	__type(value, struct fl_route);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fl_routes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FL_MAX_PEERS);
	__type(key, struct fl_vtep_key);
	__type(value, struct fl_vtep_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fl_vteps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FL_MAX_PEERS);
	__type(key, struct fl_member_key);
	__type(value, struct fl_member_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fl_members SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fl_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fl_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FL_REASON_MAX);
	__type(key, __u32);
	__type(value, struct fl_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fl_stats SEC(".maps");

/* Per member (public IP): its traffic counters. The agent creates the entry when the member joins and
 * removes it when it goes, so its presence also says "member": the tc guard (or, without it,
 * flannel.1's ingress) proves membership and counts in this one lookup. Not preallocated: a
 * preallocated per-CPU hash reserves max_entries x value x possible CPUs up front (65536 x 32 B x 256
 * CPUs = 512 MiB of kernel memory on a large host). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, FL_MAX_PEERS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fl_member_key);
	__type(value, struct fl_peer_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fl_peer_stats SEC(".maps");

/* IPv6 twins of fl_routes and fl_peer_stats, for a dual-stack network: the egress program's table for
 * IPv6 destinations, and the members (with their counters) that may send us VXLAN over IPv6. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, FL_MAX_PEERS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fl_subnet6_key);
	__type(value, struct fl_route6);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fl_routes6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, FL_MAX_PEERS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fl_member6_key);
	__type(value, struct fl_peer_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fl_peer_stats6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FL_MAX_LOCAL_PODS);
	__type(key, struct fl_pod_key);
	__type(value, struct fl_pod_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fl_local_pods SEC(".maps");

/* the same pods by IPv6 address: a map of its own, so that a pinned fl_local_pods of an IPv4-only
 * version is reused as it is on upgrade */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FL_MAX_LOCAL_PODS);
	__type(key, struct fl_pod6_key);
	__type(value, struct fl_pod_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fl_local_pods6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fl_fast_cfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fl_fast_cfg SEC(".maps");

/* its own counter map rather than more slots in fl_stats: a pinned fl_stats of the previous version
 * is reused as it is (same size), so an upgrade keeps the running data plane */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FL_FAST_MAX);
	__type(key, __u32);
	__type(value, struct fl_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fl_fast_stats SEC(".maps");

static __always_inline void fl_count_fast(__u32 result, __u64 bytes)
{
	struct fl_counter *c = bpf_map_lookup_elem(&fl_fast_stats, &result);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

static __always_inline void fl_count(__u32 reason, __u64 bytes)
{
	struct fl_counter *c = bpf_map_lookup_elem(&fl_stats, &reason);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

/* The member's counters, or NULL when the address holds no lease. Programs never create entries. */
static __always_inline struct fl_peer_stats *fl_peer(const __u8 ip[4])
{
	struct fl_member_key k = { .ip = { ip[0], ip[1], ip[2], ip[3] } };

	return bpf_map_lookup_elem(&fl_peer_stats, &k);
}

static __always_inline void fl_peer_tx(const __u8 ip[4], __u64 bytes)
{
	struct fl_peer_stats *s = fl_peer(ip);

	if (s) {
		s->tx_packets++;
		s->tx_bytes += bytes;
	}
}

/* IPv6 addresses as the kernel hands them (network byte order, 16 bytes) */
static __always_inline struct fl_peer_stats *fl_peer6(const void *ip)
{
	struct fl_member6_key k;

	__builtin_memcpy(k.ip, ip, 16);
	return bpf_map_lookup_elem(&fl_peer_stats6, &k);
}

static __always_inline void fl_peer6_tx(const void *ip, __u64 bytes)
{
	struct fl_peer_stats *s = fl_peer6(ip);

	if (s) {
		s->tx_packets++;
		s->tx_bytes += bytes;
	}
}

static __always_inline struct fl_config *fl_cfg(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&fl_config, &zero);
}

#endif
