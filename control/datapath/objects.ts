// The BPF objects bpf/Makefile builds into dist/bpf, named once (test/integration/layout.test.ts checks
// the Makefile's PROGS against this list).
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
