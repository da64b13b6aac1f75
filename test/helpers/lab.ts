// The lab lives in control/lab (flannelctl lab up/down); the tests build the same clusters.
import { readDataPlane } from '../../control/bpf/inspect.ts';
import { REASONS, type Reason } from '../../control/bpf/layout.ts';
import type { LabNode } from '../../control/lab/cluster.ts';

export * from '../../control/lab/cluster.ts';

/** Packets per verdict on a node, read from its pinned counters as `flannelctl maps` reads them. */
export function packetsByVerdict(n: LabNode): Record<Reason, number> {
  const { counters } = readDataPlane(n.pinRoot);
  return Object.fromEntries(REASONS.map((r) => [r, counters[r].packets])) as Record<Reason, number>;
}
