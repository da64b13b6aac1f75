// Kernel memory of all the peer maps of one node, as the kernel accounts it (bpftool's bytes_memlock),
// loaded as the agent loads them (mapLayout: sizes from the network, the counters' preallocation rule),
// for networks of a few capacities, empty and holding `peers` peers (at most capacity - 1).
//   node --import tsx bench/tools/peer-maps-memory.ts [peers=10000]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { BpfObject, ensureBpffs } from '../../control/kernel/bpf.ts';
import { addon } from '../../control/kernel/addon.ts';
import * as L from '../../control/datapath/layout.ts';
import { FL_MAX_PEERS, MAP, PEER_MAPS, mapLayout, objectPath } from '../../control/datapath/objects.ts';
import { formatIp4 } from '../../control/subnet/ip4.ts';

const N = Number(process.argv[2] ?? 10_000);
const memlock = (path: string) => (JSON.parse(execFileSync('bpftool', ['-j', 'map', 'show', 'pinned', path], { encoding: 'utf8' })) as { bytes_memlock: number }).bytes_memlock;
const hex = (x: number) => x.toString(16).padStart(2, '0');
const mib = (b: number) => (b / 2 ** 20).toFixed(2);

/** bytes_memlock of every peer map, empty and with n peers, for maps of `capacity` entries */
async function measure(capacity: number, n: number): Promise<{ empty: number; full: number }> {
  const root = mkdtempSync('/run/flannel-bench-bpffs-');
  try {
    ensureBpffs(root);
    const sizes = Object.fromEntries(PEER_MAPS.map((m) => [m, capacity]));
    const layout = mapLayout(addon().numPossibleCpus, sizes);
    const obj = await BpfObject.open(objectPath('egress'), root, undefined, [], layout.flags, layout.sizes);
    try {
      const total = () => PEER_MAPS.reduce((a, m) => a + memlock(join(root, m)), 0);
      const empty = total();
      const zero = Buffer.alloc(obj.map(MAP.peerStats).lookupSize);
      const put = (m: string, entries: [Buffer, Buffer][]) => obj.map(m).updateMany(entries);
      const peers = Array.from({ length: n }, (_, i) => ({
        ip: `100.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
        mac: `0a:58:00:${hex(i >> 16)}:${hex((i >> 8) & 255)}:${hex(i & 255)}`,
        subnet: formatIp4(((10 << 24) | (i << 8)) >>> 0),
      }));
      put(
        MAP.peerStats,
        peers.map((p) => [L.memberKey(p.ip), zero]),
      );
      put(
        MAP.members,
        peers.map((p) => [L.memberKey(p.ip), L.memberVal()]),
      );
      put(
        MAP.vteps,
        peers.map((p) => [L.vtepKey(p.mac), L.vtepVal(p.ip)]),
      );
      put(
        MAP.subnets,
        peers.map((p) => [L.subnetKey(p.subnet, 24), L.subnetVal(p.mac)]),
      );
      put(
        MAP.routes,
        peers.map((p) => [L.subnetKey(p.subnet, 24), L.routeVal(p.mac, p.ip)]),
      );
      return { empty, full: total() };
    } finally {
      obj.close();
    }
  } finally {
    try {
      execFileSync('umount', [root]);
    } finally {
      rmdirSync(root);
    }
  }
}

console.log(`peer maps of one node, kernel memory (bytes_memlock), ${addon().numPossibleCpus} possible CPUs; IPv4 peers`);
console.log('| network (subnets of /24) | maps sized for | empty MiB | with peers | MiB |');
console.log('|---|---|---|---|---|');
for (const [net, capacity] of [
  ['10.244.0.0/16', 256],
  ['10.0.0.0/10', 16_384],
  ['10.0.0.0/8', FL_MAX_PEERS],
] as const) {
  const n = Math.min(N, capacity - 1);
  const r = await measure(capacity, n);
  console.log(`| ${net} | ${capacity} | ${mib(r.empty)} | ${n} | ${mib(r.full)} |`);
}
