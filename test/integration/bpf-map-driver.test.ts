// BPF mode's map driver against real pinned maps (a bpffs of the test's own): the reconcile by tables
// (PeerDriver.reconcileAll, what the agent runs at start and every reconcile) must leave the maps
// exactly as the entry path would, from any state: a reference-model test runs both from the same
// random kernel state (missing, drifted and stale entries, live counters) to the same random peers,
// and compares every map byte for byte. Then what an operator would check by hand: counters survive
// a restart, a peer the kernel refuses is taken back whole, lease events after a table reconcile.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BpfObject } from '../../control/kernel/bpf.ts';
import { addon } from '../../control/kernel/addon.ts';
import * as L from '../../control/datapath/layout.ts';
import { MAP, PEER_MAPS, mapLayout, objectPath } from '../../control/datapath/objects.ts';
import { BpfMapDriver, type MapOp, type PeerMaps } from '../../control/backend/vxlan/bpf-maps.ts';
import { PeerProgrammer, type PeerDriver } from '../../control/backend/peer-programmer.ts';
import { formatIp6 } from '../../control/subnet/ip6.ts';
import type { Lease } from '../../control/subnet/lease.ts';
import { silentLogger } from '../../control/log.ts';
import { withBpffs } from '../helpers/bpffs.ts';

/** the peer maps of a loaded egress object, of the given sizes (default 256 each) */
async function withMaps(fn: (maps: PeerMaps) => Promise<void>, sizes: Record<string, number> = {}): Promise<void> {
  await withBpffs(async (root) => {
    const all = Object.fromEntries(PEER_MAPS.map((m) => [m, sizes[m] ?? 256]));
    const layout = mapLayout(addon().numPossibleCpus, all);
    const obj = await BpfObject.open(objectPath('egress'), root, undefined, [], layout.flags, layout.sizes);
    try {
      await fn(Object.fromEntries(PEER_MAPS.map((m) => [m, obj.map(m)])) as PeerMaps);
    } finally {
      obj.close();
    }
  });
}

/** every map as key -> value (hex), what bpftool would list */
function dump(maps: PeerMaps): Record<string, Record<string, string>> {
  return Object.fromEntries(
    PEER_MAPS.map((m) => {
      const { keys, values, count } = maps[m].packedEntries();
      const ks = maps[m].desc.keySize;
      const vs = maps[m].lookupSize;
      const rows: Record<string, string> = {};
      for (let i = 0; i < count; i++) rows[keys.toString('hex', i * ks, (i + 1) * ks)] = values.toString('hex', i * vs, (i + 1) * vs);
      return [m, rows];
    }),
  );
}

/** makes the maps hold exactly `state` (a dump) */
function restore(maps: PeerMaps, state: Record<string, Record<string, string>>): void {
  for (const m of PEER_MAPS) {
    const map = maps[m];
    map.deletePacked(map.packedEntries().keys);
    const rows = Object.entries(state[m]!);
    if (!rows.length) continue;
    const errs = map.updatePacked(Buffer.from(rows.map(([k]) => k).join(''), 'hex'), Buffer.from(rows.map(([, v]) => v).join(''), 'hex'));
    assert.ok(
      errs.every((e) => e === 0),
      `restoring ${m}`,
    );
  }
}

/** a deterministic random source, so a failure can be replayed */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}
const hex2 = (n: number) => (n & 255).toString(16).padStart(2, '0');
const mac = (n: number, tag = 2) => `${hex2(tag)}:58:${hex2(n >> 24)}:${hex2(n >> 16)}:${hex2(n >> 8)}:${hex2(n)}`;

/** Peer n's lease; `gen` changes its VTEP MAC and public IP (a node that came back with a new device). */
function lease(n: number, gen = 0, v6 = false): Lease {
  const id = n + gen * 1000;
  const l: Lease = {
    subnet: { ip: ((10 << 24) | (244 << 16) | (n << 8)) >>> 0, len: 24 },
    attrs: { publicIP: `172.20.${id >> 8}.${id & 255}`, publicIPv6: v6 ? `fd00::${id.toString(16)}` : null, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: mac(id) } },
  };
  if (v6) {
    l.ipv6Subnet = { ip: (0xfd000244n << 96n) | (BigInt(n) << 64n), len: 64 };
    l.attrs.backendV6Data = { VNI: 1, VtepMAC: mac(id, 6) };
  }
  return l;
}
/** leases this backend cannot use: another VNI, another backend, a broken MAC */
const unusable = (n: number): Lease[] => [
  { ...lease(n), attrs: { ...lease(n).attrs, backendData: { VNI: 7, VtepMAC: mac(n) } } },
  { ...lease(n + 1), attrs: { ...lease(n + 1).attrs, backendType: 'host-gw', backendData: undefined } },
  { ...lease(n + 2), attrs: { ...lease(n + 2).attrs, backendData: { VNI: 1, VtepMAC: '02:58:zz:00:00:01' } } },
];

const LPM = new Set<string>([MAP.subnets, MAP.routes, MAP.routes6]);

/** the same driver with its own reconcile hidden: the programmer takes the entry path */
const entryPath = (d: BpfMapDriver): PeerDriver<MapOp> => ({ entriesFor: (l) => d.entriesFor(l), currentEntries: () => d.currentEntries(), apply: (ops) => d.apply(ops) });

test('reference model: from any kernel state, the table reconcile leaves every map as the entry path does', async () => {
  await withMaps(async (maps) => {
    for (let round = 0; round < 40; round++) {
      const r = rng(round + 1);
      const dual = round % 2 === 1;
      const driver = new BpfMapDriver(maps, 1, dual);
      // the state before: some peers programmed by an earlier run, then the kernel disturbed
      const before = Array.from({ length: 40 }, (_, i) => i + 1)
        .filter(() => r() < 0.6)
        .map((n) => lease(n, 0, dual && r() < 0.7));
      restore(maps, Object.fromEntries(PEER_MAPS.map((m) => [m, {}])));
      await new PeerProgrammer(driver, silentLogger).reconcile(before);
      for (const m of PEER_MAPS) {
        const map = maps[m];
        const { keys, count } = map.packedEntries();
        const ks = map.desc.keySize;
        for (let i = 0; i < count; i++) {
          const key = keys.subarray(i * ks, (i + 1) * ks);
          const x = r();
          // an entry lost, one with another value (counters: traffic), or one left as it is
          if (x < 0.1) map.deletePacked(key);
          else if (x < 0.25) map.update(key, Buffer.from(Array.from({ length: map.lookupSize }, () => Math.floor(r() * 256))));
        }
        // stale entries nobody wants, of every map (an LPM key's prefix length within its address)
        for (let k = 0; k < 3; k++) {
          if (r() > 0.5) continue;
          const key = Buffer.from(Array.from({ length: ks }, () => Math.floor(r() * 256)));
          if (LPM.has(m)) key.writeUInt32LE(Math.floor(r() * ((ks - 4) * 8 + 1)), 0);
          map.update(key, Buffer.alloc(map.lookupSize, 1));
        }
      }
      const state = dump(maps);
      // the peers now: some of the earlier ones, some changed (new MAC and IP), new ones, unusable ones
      const now = [
        ...Array.from({ length: 50 }, (_, i) => i + 1)
          .filter(() => r() < 0.6)
          .map((n) => lease(n, r() < 0.2 ? 1 : 0, dual && r() < 0.7)),
        ...(r() < 0.5 ? unusable(200) : []),
      ];
      const a = new PeerProgrammer(driver, silentLogger);
      const ra = await a.reconcile(now);
      const tables = dump(maps);
      restore(maps, state);
      const b = new PeerProgrammer(entryPath(driver), silentLogger);
      const rb = await b.reconcile(now);
      const entries = dump(maps);
      assert.deepEqual(tables, entries, `round ${round}: the maps`);
      assert.deepEqual(ra, rb, `round ${round}: entries added and removed`);
      assert.equal(a.peerCount(), b.peerCount(), `round ${round}: peers programmed`);
      assert.deepEqual(a.stats, b.stats, `round ${round}: counters`);
      // and the next pass of each finds nothing to do
      assert.deepEqual(await b.reconcile(now), { added: 0, removed: 0 });
      assert.deepEqual(await a.reconcile(now), { added: 0, removed: 0 });
    }
  });
});

test("a restart's reconcile writes nothing and keeps every peer's counters; a drifted route is rewritten, a stale peer removed", async () => {
  await withMaps(async (maps) => {
    const peers = [1, 2, 3].map((n) => lease(n));
    await new PeerProgrammer(new BpfMapDriver(maps, 1), silentLogger).reconcile([...peers, lease(4)]);
    // traffic counted for peer 1, a route rewritten by hand; peer 4 leaves while the agent is down
    const member1 = L.memberKey('172.20.0.1');
    const counted = Buffer.alloc(maps.fl_peer_stats.lookupSize, 7);
    maps.fl_peer_stats.update(member1, counted);
    maps.fl_routes.update(L.subnetKey('10.244.2.0', 24), L.routeVal('02:58:00:00:00:99', '172.20.0.99'));
    const p = new PeerProgrammer(new BpfMapDriver(maps, 1), silentLogger);
    // the restart
    assert.deepEqual(await p.reconcile(peers), { added: 1, removed: 5 });
    assert.deepEqual(maps.fl_peer_stats.lookup(member1), counted, "peer 1's counters kept");
    assert.deepEqual(L.decodeRouteVal(maps.fl_routes.lookup(L.subnetKey('10.244.2.0', 24))!), { vtepMAC: mac(2), remoteIP: '172.20.0.2' }, "peer 2's route as its lease says");
    for (const m of PEER_MAPS.slice(0, 5)) assert.equal(maps[m].packedEntries().count, 3, `${m}: one entry per peer`);
    assert.deepEqual(await p.reconcile(peers), { added: 0, removed: 0 });
    assert.equal(p.peerCount(), 3);
  });
});

test('a peer the kernel refuses is taken back whole; the others stay complete; a later reconcile with room programs it', async () => {
  // fl_routes full after 4 peers: the 5th and 6th get their counters, member, VTEP and subnet
  // written before their route fails, and must lose them again
  await withMaps(
    async (maps) => {
      const p = new PeerProgrammer(new BpfMapDriver(maps, 1), silentLogger);
      const peers = [1, 2, 3, 4, 5, 6].map((n) => lease(n));
      const res = await p.reconcile(peers);
      assert.equal(p.stats.failures, 2);
      assert.equal(p.peerCount(), 4);
      assert.deepEqual(res, { added: 20, removed: 0 }, 'four peers, five entries each');
      for (const m of PEER_MAPS.slice(0, 5)) assert.equal(maps[m].packedEntries().count, 4, `${m}: the four programmed peers only`);
      const programmed = new Set(Object.keys(dump(maps).fl_members!));
      assert.equal(programmed.size, 4);
      // one of them leaves: the next reconcile programs one of the two waiting
      const rest = peers.filter((l) => l.attrs.publicIP !== '172.20.0.1');
      await p.reconcile(rest);
      assert.equal(p.stats.failures, 3, 'the other one still has no room');
      assert.equal(p.peerCount(), 4);
      for (const m of PEER_MAPS.slice(0, 5)) assert.equal(maps[m].packedEntries().count, 4, m);
    },
    { [MAP.routes]: 4 },
  );
});

test('lease events after a table reconcile: a changed peer loses its old VTEP entry, a removed peer all five entries', async () => {
  await withMaps(async (maps) => {
    const p = new PeerProgrammer(new BpfMapDriver(maps, 1, true), silentLogger);
    const peers = [1, 2, 3].map((n) => lease(n, 0, true));
    await p.reconcile(peers);
    const moved = lease(2, 1, true);
    await p.handle([
      { type: 'added', lease: moved },
      { type: 'removed', lease: peers[2]! },
    ]);
    const d = dump(maps);
    assert.equal(p.peerCount(), 2);
    assert.deepEqual(
      Object.keys(d.fl_vteps!)
        .map((k) => L.decodeVtepKey(Buffer.from(k, 'hex')))
        .sort(),
      [mac(1), mac(1002)],
    );
    assert.deepEqual(L.decodeRouteVal(maps.fl_routes.lookup(L.subnetKey('10.244.2.0', 24))!), { vtepMAC: mac(1002), remoteIP: '172.20.3.234' });
    assert.equal(maps.fl_routes.lookup(L.subnetKey('10.244.3.0', 24)), null);
    assert.deepEqual(
      Object.keys(d.fl_peer_stats6!)
        .map((k) => L.decodeMember6Key(Buffer.from(k, 'hex')))
        .sort(),
      ['fd00::1', 'fd00::3ea'],
    );
    assert.deepEqual(
      Object.keys(d.fl_routes6!)
        .map((k) => L.decodeSubnet6Key(Buffer.from(k, 'hex')))
        .sort((x, y) => x.ip.localeCompare(y.ip)),
      [1, 2].map((n) => ({ ip: formatIp6((0xfd000244n << 96n) | (BigInt(n) << 64n)), len: 64 })),
    );
    for (const m of PEER_MAPS) assert.equal(Object.keys(d[m]!).length, 2, `${m}: two peers left`);
    // and a reconcile agrees
    assert.deepEqual(await p.reconcile([peers[0]!, moved]), { added: 0, removed: 0 });
  });
});
