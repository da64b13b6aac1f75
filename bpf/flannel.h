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

enum fl_reason {
	FL_FORWARDED = 0,	/* egress: encapsulated towards a peer */
	FL_NO_ROUTE,		/* egress: destination in no peer subnet */
	FL_UNKNOWN_VTEP,	/* egress: subnet known, its VTEP MAC not */
	FL_SPOOFED,		/* VXLAN from an address that is not a cluster member */
	FL_WRONG_VNI,		/* ingress: tunnel key with another VNI */
	FL_MALFORMED,		/* truncated or unparsable headers */
	FL_NOT_IPV4,		/* egress: not an IPv4 packet */
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

#endif
