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
/** fl_peer_stats' size per CPU: FL_MAX_PEERS (65536, bpf/flannel.h) x struct fl_peer_stats (32 bytes) */
const PEER_STATS_BYTES_PER_CPU = 65536 * 32;

/**
 * The flags the agent loads its maps with, decided on this machine: fl_peer_stats is preallocated where
 * that costs at most 64 MiB (up to 32 possible CPUs). A preallocated per-CPU hash takes an entry in
 * ~1 µs; without preallocation each insert allocates per-CPU memory (12.8 µs here: 64 ms of 5000
 * peers' first programming). Beyond 32 CPUs preallocation would cost 2 MiB a CPU, so the declared
 * BPF_F_NO_PREALLOC stays. Every object the agent loads into one pin root gets the same flags.
 */
export function mapFlags(possibleCpus: number): Record<string, number> {
  return possibleCpus * PEER_STATS_BYTES_PER_CPU <= 64 << 20 ? { [MAP.peerStats]: 0 } : { [MAP.peerStats]: BPF_F_NO_PREALLOC };
}

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
