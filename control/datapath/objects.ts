// The BPF objects bpf/Makefile builds into dist/bpf, their maps (whose names are also the pins under
// --bpf-pin-root) and their programs, each named once: test/integration/layout.test.ts checks the
// Makefile's PROGS, and every map and program in the built objects, against these lists.
import { join } from 'node:path';
import { projectRoot } from '../paths.js';

export const OBJECTS = {
  egress: 'vxlan_egress.o',
  ingress: 'vxlan_ingress.o',
  guard: 'underlay_guard.o',
  fastPath: 'pod_fastpath.o',
} as const;

export type ObjectName = keyof typeof OBJECTS;

export const objectPath = (name: ObjectName) => join(projectRoot(), 'dist', 'bpf', OBJECTS[name]);

/** Every map, by the name the C sources give it: the pin under --bpf-pin-root has the same name. */
export const MAP = {
  subnets: 'fl_subnets',
  vteps: 'fl_vteps',
  members: 'fl_members',
  routes: 'fl_routes',
  peerStats: 'fl_peer_stats',
  routes6: 'fl_routes6',
  peerStats6: 'fl_peer_stats6',
  config: 'fl_config',
  stats: 'fl_stats',
  localPods: 'fl_local_pods',
  localPods6: 'fl_local_pods6',
  fastCfg: 'fl_fast_cfg',
  fastStats: 'fl_fast_stats',
} as const;

const BPF_F_NO_PREALLOC = 1;
/** FL_MAX_PEERS (bpf/flannel.h): what the peer maps are declared with, and the most they are sized to */
export const FL_MAX_PEERS = 65536;
/** struct fl_peer_stats, per CPU */
const PEER_STATS_BYTES = 32;

/** The maps with an entry per peer: sized by the number of peers the network can hold. */
export const PEER_MAPS = [MAP.subnets, MAP.routes, MAP.vteps, MAP.members, MAP.peerStats, MAP.routes6, MAP.peerStats6] as const;

/**
 * How many peers a network can hold: one per subnet of SubnetLen in Network (a lease outside
 * SubnetMin-SubnetMax, a reservation, is still a peer), the IPv6 network's count for an IPv6-only
 * network; a dual-stack lease needs one subnet of each, so the smaller count. Never more than
 * FL_MAX_PEERS, never less than 16 (a /30 network of /32 subnets still gets maps that work).
 */
export function peerCapacity(c: { enableIPv4: boolean; network: { len: number }; subnetLen: number; ipv6?: { network: { len: number }; subnetLen: number } }): number {
  const count = (bits: number) => (bits >= 17 ? FL_MAX_PEERS : 2 ** Math.max(0, bits));
  const counts = [...(c.enableIPv4 ? [count(c.subnetLen - c.network.len)] : []), ...(c.ipv6 ? [count(c.ipv6.subnetLen - c.ipv6.network.len)] : [])];
  return Math.max(16, Math.min(FL_MAX_PEERS, ...counts));
}

/** What the agent loads its maps with: flags and max_entries by map name (every object sharing a pin root gets the same). */
export interface MapLayout {
  flags: Record<string, number>;
  sizes: Record<string, number>;
}

/**
 * The layout on this machine for peer maps of `sizes`: fl_peer_stats is preallocated where that
 * costs at most 64 MiB (entries x 32 bytes x possible CPUs). A preallocated per-CPU hash takes an
 * entry in ~1 µs; without preallocation each insert allocates per-CPU memory (12.8 µs here: 64 ms of
 * 5000 peers' first programming). Larger, the declared BPF_F_NO_PREALLOC stays.
 */
export function mapLayout(possibleCpus: number, sizes: Record<string, number> = {}): MapLayout {
  const statsBytes = (sizes[MAP.peerStats] ?? FL_MAX_PEERS) * PEER_STATS_BYTES * possibleCpus;
  return { flags: { [MAP.peerStats]: statsBytes <= 64 << 20 ? 0 : BPF_F_NO_PREALLOC }, sizes };
}

/** mapLayout's flags alone, for maps of the declared size */
export const mapFlags = (possibleCpus: number): Record<string, number> => mapLayout(possibleCpus).flags;

/** Every program, by its C name (what bpftool and tc show, cut to 15 characters by the kernel). */
export const PROGRAM = {
  egress: 'fl_vxlan_egress',
  ingress: 'fl_vxlan_ingress',
  ingressFast: 'fl_ingress_fast',
  guardTc: 'fl_guard_tc',
  guardXdp: 'fl_guard_xdp',
  guardBypass: 'fl_guard_bypass',
  podEgress: 'fl_pod_egress',
  ctProbe: 'fl_ct_probe',
  encapProbe: 'fl_encap_probe',
} as const;
