// The peer maps' sizes against real pins (a bpffs of the test's own): a new pin root gets maps of the
// network's capacity; pins of an earlier run at least that big are reused as they are (the running
// data plane keeps its maps); pins too small for the network are replaced by bigger ones holding the
// same entries, loaded the way the agent loads them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { BpfMap, BpfObject } from '../../control/kernel/bpf.ts';
import { addon } from '../../control/kernel/addon.ts';
import * as L from '../../control/datapath/layout.ts';
import { MAP, PEER_MAPS, mapLayout, objectPath } from '../../control/datapath/objects.ts';
import { sizePeerMaps } from '../../control/backend/vxlan/map-sizes.ts';
import { silentLogger } from '../../control/log.ts';
import { withBpffs } from '../helpers/bpffs.ts';

/** what the agent does in BPF mode's prepare(): size, load every object, copy what was replaced */
async function load(root: string, capacity: number): Promise<BpfObject[]> {
  const sized = sizePeerMaps(root, capacity, silentLogger);
  const layout = mapLayout(addon().numPossibleCpus, sized.sizes);
  const objs: BpfObject[] = [];
  for (const n of ['egress', 'ingress', 'guard', 'fastPath'] as const) objs.push(await BpfObject.open(objectPath(n), root, undefined, L.REPLACEABLE_MAPS, layout.flags, layout.sizes));
  sized.restore((name) => objs[0]!.map(name));
  return objs;
}
const pinned = (root: string, name: string) => BpfMap.openPinned(join(root, name));
const maxEntries = (root: string, name: string) => {
  const m = pinned(root, name);
  try {
    return m.desc.maxEntries;
  } finally {
    m.close();
  }
};

test('a new pin root: every peer map holds the network capacity; the others keep their declared size', async () => {
  await withBpffs(async (root) => {
    const objs = await load(root, 256);
    try {
      for (const name of PEER_MAPS) assert.equal(maxEntries(root, name), 256, name);
      assert.equal(maxEntries(root, MAP.localPods), 4096, 'local pods are not peers');
      // bpftool sees the same
      const show = JSON.parse(execFileSync('bpftool', ['-j', 'map', 'show', 'pinned', join(root, MAP.vteps)], { encoding: 'utf8' })) as { max_entries: number };
      assert.equal(show.max_entries, 256);
    } finally {
      for (const o of objs) o.close();
    }
  });
});

test('pins at least as big are reused as they are; pins too small are replaced by bigger ones with the same entries', async () => {
  await withBpffs(async (root) => {
    // an earlier run on a smaller network: 16 entries each, two peers programmed
    let objs = await load(root, 16);
    const peers = [
      { ip: '172.20.0.12', mac: '0a:58:00:00:00:12', subnet: '10.244.12.0' },
      { ip: '172.20.0.13', mac: '0a:58:00:00:00:13', subnet: '10.244.13.0' },
    ];
    const e = objs[0]!;
    for (const p of peers) {
      e.map(MAP.peerStats).update(L.memberKey(p.ip), Buffer.alloc(e.map(MAP.peerStats).lookupSize));
      e.map(MAP.members).update(L.memberKey(p.ip), L.memberVal());
      e.map(MAP.vteps).update(L.vtepKey(p.mac), L.vtepVal(p.ip));
      e.map(MAP.subnets).update(L.subnetKey(p.subnet, 24), L.subnetVal(p.mac));
      e.map(MAP.routes).update(L.subnetKey(p.subnet, 24), L.routeVal(p.mac, p.ip));
    }
    const before = Object.fromEntries(
      PEER_MAPS.map((n) => [
        n,
        e
          .map(n)
          .entries()
          .map(([k, v]) => `${k.toString('hex')}=${v.toString('hex')}`)
          .sort(),
      ]),
    );
    const ids = Object.fromEntries(PEER_MAPS.map((n) => [n, BpfMap.pinnedId(join(root, n))]));
    for (const o of objs) o.close();

    // the same network again (or a smaller one): the same maps
    objs = await load(root, 16);
    for (const n of PEER_MAPS) assert.equal(BpfMap.pinnedId(join(root, n)), ids[n], `${n} reused`);
    for (const o of objs) o.close();
    objs = await load(root, 16);
    for (const o of objs) o.close();

    // the network grew: bigger maps, new ones, holding exactly what the old ones held
    objs = await load(root, 1024);
    try {
      for (const n of PEER_MAPS) {
        assert.equal(maxEntries(root, n), 1024, n);
        assert.notEqual(BpfMap.pinnedId(join(root, n)), ids[n], `${n} replaced`);
        assert.equal(BpfMap.pinnedId(join(root, n)), objs[0]!.map(n).id(), `${n}: the pin is the loaded map`);
        assert.deepEqual(
          objs[0]!
            .map(n)
            .entries()
            .map(([k, v]) => `${k.toString('hex')}=${v.toString('hex')}`)
            .sort(),
          before[n],
          `${n} entries kept`,
        );
      }
      // every object of the pin root shares the new maps
      for (const o of objs.slice(1)) for (const n of PEER_MAPS) if (o.maps.has(n)) assert.equal(o.map(n).id(), objs[0]!.map(n).id(), `${o.path} ${n}`);
    } finally {
      for (const o of objs) o.close();
    }
  });
});
