// Programming N peers in this process, the agent's own code path without etcd or the agent around it:
// synthetic vxlan leases through the peer programmer into real BPF maps (a bpffs of its own, sized as
// the agent sizes them), cold (empty maps) then warm (the same leases again, new lease objects: a
// restart's reconcile), `runs` times each. Run with --cpu-prof to see where the time goes.
//   node --import tsx bench/tools/program-peers.ts [peers=10000] [runs=3]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmdirSync } from 'node:fs';
import pino from 'pino';
import { BpfObject, ensureBpffs } from '../../control/kernel/bpf.ts';
import { addon } from '../../control/kernel/addon.ts';
import { MAP, PEER_MAPS, mapLayout, objectPath } from '../../control/datapath/objects.ts';
import { BpfMapDriver, type PeerMaps } from '../../control/backend/vxlan/bpf-maps.ts';
import { PeerProgrammer } from '../../control/backend/peer-programmer.ts';
import type { Lease } from '../../control/subnet/lease.ts';

const N = Number(process.argv[2] ?? 10_000);
const RUNS = Number(process.argv[3] ?? 3);
const hex = (x: number) => x.toString(16).padStart(2, '0');
const leases = (): Lease[] =>
  Array.from({ length: N }, (_, i) => ({
    subnet: { ip: ((10 << 24) | ((1 + (i >> 8)) << 16) | ((i & 255) << 8)) >>> 0, len: 24 },
    attrs: {
      publicIP: `100.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
      publicIPv6: null,
      backendType: 'vxlan',
      backendData: { VNI: 1, VtepMAC: `02:01:00:${hex(i >> 16)}:${hex((i >> 8) & 255)}:${hex(i & 255)}` },
    },
  }));

for (let r = 0; r < RUNS; r++) {
  const root = mkdtempSync('/run/flannel-bench-bpffs-');
  try {
    ensureBpffs(root);
    const capacity = 65536;
    const layout = mapLayout(addon().numPossibleCpus, Object.fromEntries(PEER_MAPS.map((m) => [m, capacity])));
    const obj = await BpfObject.open(objectPath('egress'), root, undefined, [], layout.flags, layout.sizes);
    try {
      const maps = Object.fromEntries(PEER_MAPS.map((m) => [m, obj.map(m)])) as PeerMaps;
      const log = pino({ level: 'silent' });
      // the leases exist before the clock starts, as in the agent (its watch's cache holds them)
      const [first, again] = [leases(), leases()];
      const t0 = performance.now();
      const p = new PeerProgrammer(new BpfMapDriver(maps, 1), log);
      const cold = await p.reconcile(first);
      const t1 = performance.now();
      const p2 = new PeerProgrammer(new BpfMapDriver(maps, 1), log);
      const warm = await p2.reconcile(again);
      const t2 = performance.now();
      console.log(
        JSON.stringify({ peers: N, coldMs: +(t1 - t0).toFixed(1), coldAdded: cold.added, warmMs: +(t2 - t1).toFixed(1), warmAdded: warm.added, entries: obj.map(MAP.routes).packedEntries().count }),
      );
    } finally {
      obj.close();
    }
  } finally {
    execFileSync('umount', [root]);
    rmdirSync(root);
  }
}
