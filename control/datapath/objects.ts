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
  config: 'fl_config',
  stats: 'fl_stats',
  localPods: 'fl_local_pods',
  fastCfg: 'fl_fast_cfg',
  fastStats: 'fl_fast_stats',
} as const;

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
