/* Layouts shared by the BPF programs and the agent. control/bpf/layout.ts mirrors every struct here
 * byte for byte; change both together. Addresses are in network byte order, as they sit in packets. */
#ifndef FLANNEL_H
#define FLANNEL_H

#include <linux/types.h>

#define FL_MAX_PEERS 65536

/* LPM key: pod subnet -> VTEP (the BPF twin of flannel's "route + neighbour" per peer) */
struct fl_subnet_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct fl_subnet_val {
	__u8 vtep_mac[6];	/* the peer's flannel.1 MAC, from its lease's VtepMAC */
	__u16 flags;
};

/* What the egress program reads for a destination, in one LPM lookup: the peer's VTEP MAC and host.
 * Derived by the agent from fl_subnets and fl_vteps (the source of truth, as flannel's route,
 * neighbour and FDB entries are), so that the hot path needs no second lookup. */
struct fl_route {
	__u8 vtep_mac[6];	/* inner destination MAC: the peer's flannel.1 */
	__u16 flags;
	__u8 remote_ip[4];	/* outer destination: the peer's PublicIP */
};

/* IPv6 (a dual-stack network): pod IPv6 subnet -> the peer's IPv6 VTEP (BackendV6Data's MAC) and its
 * PublicIPv6. flannel reaches a peer's IPv6 pods over the IPv6 underlay only, so the remote is IPv6. */
struct fl_subnet6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct fl_route6 {
	__u8 vtep_mac[6];	/* inner destination MAC: the peer's IPv6 VTEP */
	__u16 flags;
	__u8 remote_ip[16];	/* outer destination: the peer's PublicIPv6 */
};

/* cluster members by public IPv6: who may send us VXLAN over the IPv6 underlay */
struct fl_member6_key {
	__u8 ip[16];
};

/* VTEP MAC -> host (the BPF twin of flannel's FDB entry) */
struct fl_vtep_key {
	__u8 mac[6];
	__u16 pad;
};

struct fl_vtep_val {
	__u8 remote_ip[4];	/* the peer's PublicIP: outer destination of the tunnel */
	__u32 flags;
};

/* cluster members by public IP: who may send us VXLAN */
struct fl_member_key {
	__u8 ip[4];
};

struct fl_member_val {
	__u32 flags;
};

#define FL_CFG_KEEP_UDP_CSUM 1	/* default: zero outer UDP checksum (BPF_F_ZERO_CSUM_TX), as flannel's kernel default */

struct fl_config {
	__u32 vni;
	__u16 port;		/* host byte order */
	__u8 ttl;
	__u8 flags;
	__u8 local_mac[6];	/* our flannel.1 MAC */
	__u16 pad;
};

/* skb->mark with which the underlay's tc guard hands flannel.1's ingress a packet it has judged: from a
 * member, VNI ours, already counted for that member. flannel.1's ingress then skips its tunnel-key read
 * and member lookup, and restores the mark to 0. A whole-value match, set only on a packet that carried
 * no mark: bits that kube-proxy (0x4000, 0x8000) or Cilium (0x0f00) test are all clear, and a rule that
 * ORs bits in or restores a connmark makes it no match, so flannel.1 checks that packet in full. */
#define FL_MARK_MEMBER 0x0f1a0000

enum fl_reason {
	FL_FORWARDED = 0,	/* egress: encapsulated towards a peer */
	FL_NO_ROUTE,		/* egress: destination in no peer subnet */
	FL_UNKNOWN_VTEP,	/* egress: subnet known, its VTEP MAC not */
	FL_SPOOFED,		/* VXLAN from an address that is not a cluster member */
	FL_WRONG_VNI,		/* ingress: tunnel key with another VNI */
	FL_MALFORMED,		/* truncated or unparsable headers */
	FL_NOT_IPV4,		/* egress: neither IPv4 nor IPv6 (the name predates IPv6) */
	FL_RECEIVED,		/* ingress: accepted from a member */
	FL_GUARD_PASSED,	/* underlay: VXLAN from a member */
	FL_REASON_MAX,
};

struct fl_counter {
	__u64 packets;
	__u64 bytes;
};

struct fl_peer_stats {
	__u64 tx_packets;
	__u64 tx_bytes;
	__u64 rx_packets;
	__u64 rx_bytes;
};

/* Pod fast path. A local pod, as the CNI plugin registers it on ADD: where the flannel.1 ingress
 * program delivers a packet for this IP without the bridge and routing (bpf_redirect_peer). */
#define FL_MAX_LOCAL_PODS 4096

struct fl_pod_key {
	__u8 ip[4];
};

/* a pod's IPv6 address (dual stack, IPv6-only): fl_local_pods6, same value as its IPv4 entry */
struct fl_pod6_key {
	__u8 ip[16];
};

struct fl_pod_val {
	__u32 ifindex;		/* the pod's host-side veth */
	__u8 pod_mac[6];	/* the pod's eth0: destination MAC of a delivered frame */
	__u8 gw_mac[6];		/* the bridge (cni0), the pod's gateway: source MAC of a delivered frame */
	__u8 host_mac[6];	/* the host-side veth's own MAC: lets the agent tell a reused ifindex from ours */
	__u16 flags;
};

#define FL_FAST_ON 1		/* receive side delivers straight into pods; send side redirects to flannel.1 */
#define FL_FAST_NO_CT 2		/* UNSAFE, tests only: skip the conntrack check (NAT'd replies get broken) */
#define FL_FAST_BYPASS 4	/* the send side encapsulates itself and skips flannel.1; the underlay's tc
				 * ingress decapsulates single packets for local pods (not in flannel) */

struct fl_fast_cfg {
	__u32 vtep_ifindex;	/* flannel.1, where the send side redirects */
	__u32 flags;
	__u8 local_ip[4];	/* bypass: outer source address, the one flannel.1 would send from */
};

enum fl_fast_result {
	FL_FAST_TX = 0,		/* pod -> flannel.1, skipping the bridge and routing */
	FL_FAST_RX,		/* flannel.1 -> pod, skipping routing and the bridge */
	FL_PASS_NOT_POD,	/* to the stack: destination is no remote pod (send) / no local pod (receive) */
	FL_PASS_NEW_FLOW,	/* to the stack: conntrack has no entry, or has not seen a reply yet, or a SYN */
	FL_PASS_NAT,		/* to the stack: the flow is NAT'd (a Service), reverse NAT needs the stack */
	FL_PASS_OTHER,		/* to the stack: not TCP/UDP over plain IPv4 or IPv6, a fragment, IP options or
				 * IPv6 extension headers, TTL or hop limit <= 1, too big for the tunnel */
	FL_PASS_CT_ERROR,	/* to the stack: the conntrack lookup failed for another reason than "no entry" */
	FL_BYPASS_TX,		/* pod -> underlay, encapsulated in BPF: flannel.1 skipped as well */
	FL_BYPASS_RX,		/* underlay -> pod, decapsulated in BPF: flannel.1 skipped as well */
	FL_PASS_NO_FIB,		/* bypass send: no forwardable route to the peer from BPF; flannel.1 sends it */
	FL_PASS_GRO,		/* bypass receive: a GRO aggregate, which only the kernel can decapsulate here */
	FL_PASS_TOO_BIG,	/* bypass send: 50 more bytes would not fit the outer IPv4 length; flannel.1 sends it */
	FL_FAST_MAX,
};

/* control/bpf/layout.ts (STRUCTS) encodes these byte for byte, and test/integration/layout.test.ts
 * compares every field with BTF; a size changed here alone stops the build first. */
_Static_assert(sizeof(struct fl_subnet_key) == 8, "fl_subnet_key: see STRUCTS in control/datapath/layout.ts");
_Static_assert(sizeof(struct fl_subnet_val) == 8, "fl_subnet_val: see STRUCTS in control/datapath/layout.ts");
_Static_assert(sizeof(struct fl_route) == 12, "fl_route: see STRUCTS in control/datapath/layout.ts");
_Static_assert(sizeof(struct fl_subnet6_key) == 20, "fl_subnet6_key: see STRUCTS in control/datapath/layout.ts");
_Static_assert(sizeof(struct fl_route6) == 24, "fl_route6: see STRUCTS in control/datapath/layout.ts");
_Static_assert(sizeof(struct fl_member6_key) == 16, "fl_member6_key: see STRUCTS in control/datapath/layout.ts");
_Static_assert(sizeof(struct fl_vtep_key) == 8, "fl_vtep_key: see STRUCTS in control/datapath/layout.ts");
_Static_assert(sizeof(struct fl_vtep_val) == 8, "fl_vtep_val: see STRUCTS in control/datapath/layout.ts");
_Static_assert(sizeof(struct fl_member_key) == 4, "fl_member_key: see STRUCTS in control/datapath/layout.ts");
_Static_assert(sizeof(struct fl_member_val) == 4, "fl_member_val: see STRUCTS in control/datapath/layout.ts");
_Static_assert(sizeof(struct fl_config) == 16, "fl_config: see STRUCTS in control/datapath/layout.ts");
_Static_assert(sizeof(struct fl_counter) == 16, "fl_counter: see STRUCTS in control/datapath/layout.ts");
_Static_assert(sizeof(struct fl_peer_stats) == 32, "fl_peer_stats: see STRUCTS in control/datapath/layout.ts");
_Static_assert(sizeof(struct fl_pod_key) == 4, "fl_pod_key: see STRUCTS in control/datapath/layout.ts");
_Static_assert(sizeof(struct fl_pod6_key) == 16, "fl_pod6_key: see STRUCTS in control/datapath/layout.ts");
_Static_assert(sizeof(struct fl_pod_val) == 24, "fl_pod_val: see STRUCTS in control/datapath/layout.ts");
_Static_assert(sizeof(struct fl_fast_cfg) == 12, "fl_fast_cfg: see STRUCTS in control/datapath/layout.ts");

#endif
