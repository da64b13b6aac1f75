// Kernel memory of the per-peer counter map (fl_peer_stats), as the kernel accounts it (bpftool's
// bytes_memlock), on this machine: empty, with N peers, and the preallocated layout of the previous
// version. The per-CPU part is 32 bytes per possible CPU per entry; the rest is measured here, so the
// figures for 64 and 256 CPUs are this machine's overhead plus 32 B x CPUs, not a guess.
//   node --import tsx bench/tools/map-memory.ts [peers=10000]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { BpfObject, ensureBpffs } from '../../control/kernel/bpf.ts';
import { addon } from '../../control/kernel/addon.ts';
import * as L from '../../control/datapath/layout.ts';
import { objectPath } from '../../control/datapath/objects.ts';

const N = Number(process.argv[2] ?? 10_000);
const root = mkdtempSync('/run/flannel-bench-bpffs-');
const memlock = (path: string) => (JSON.parse(execFileSync('bpftool', ['-j', 'map', 'show', 'pinned', path], { encoding: 'utf8' })) as { bytes_memlock: number }).bytes_memlock;
const cpus = addon().numPossibleCpus;
const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
try {
  ensureBpffs(root);
  const obj = await BpfObject.open(objectPath('egress'), root);
  const path = join(root, 'fl_peer_stats');
  const empty = memlock(path);
  const m = obj.map('fl_peer_stats');
  const value = Buffer.alloc(m.lookupSize);
  const keys = Array.from({ length: N }, (_, i) => L.memberKey(`100.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`));
  // one value per possible CPU: the batch call takes single values, so one call per entry
  for (const k of keys) m.update(k, value);
  const full = memlock(path);
  obj.close();
  const perPeer = (full - empty) / N;
  const overhead = perPeer - 32 * cpus;
  // the previous layout: preallocated, 65536 entries, made here only to be measured
  const old = join(root, 'old_peer_stats');
  execFileSync('bpftool', ['map', 'create', old, 'type', 'percpu_hash', 'key', '4', 'value', '32', 'entries', '65536', 'name', 'old_peer_stats']);
  const oldBytes = memlock(old);
  const oldOverheadPerEntry = (oldBytes - 65536 * 32 * cpus) / 65536;
  const rows = [64, 256].map((c) => ({
    cpus: c,
    preallocated: mib(65536 * (32 * c + oldOverheadPerEntry)),
    fixed: mib(empty),
    [`${N} peers`]: mib(empty + N * (overhead + 32 * c)),
    perPeer: `${((overhead + 32 * c) / 1024).toFixed(2)} KiB`,
  }));
  console.log(
    JSON.stringify(
      { possibleCpus: cpus, measured: { empty, withPeers: full, peers: N, perPeerBytes: Math.round(perPeer), overheadPerPeer: Math.round(overhead), preallocatedOld: oldBytes }, rows },
      null,
      2,
    ),
  );
} finally {
  try {
    execFileSync('umount', [root]);
  } finally {
    rmdirSync(root);
  }
}
