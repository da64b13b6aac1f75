// The peer maps follow the network config: sized for the network's subnets, and replaced by bigger
// ones, entries kept, when the operator widens the network; the running data plane loses nothing
// while the agent restarts onto the bigger maps.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { TestLab, type LabNode } from '../helpers/lab.ts';
import { inNs, sh } from '../helpers/netns.ts';
import { PEER_MAPS } from '../../control/datapath/objects.ts';

const PREFIX = '/coreos.com/network';
const config = (network: string) => JSON.stringify({ Network: network, Backend: { Type: 'vxlan' } });
const show = async (n: LabNode, map: string) => JSON.parse(await sh('bpftool', ['-j', 'map', 'show', 'pinned', join(n.pinRoot, map)])) as { id: number; max_entries: number };
const entries = async (n: LabNode, map: string) => (JSON.parse(await sh('bpftool', ['-j', 'map', 'dump', 'pinned', join(n.pinRoot, map)])) as unknown[]).length;

describe('peer maps sized from the network config', { timeout: 180_000 }, () => {
  let lab: TestLab;
  after(async () => lab?.destroy());

  test('a /16 of /24s: maps of 256; widened to a /15, the restarted agent moves to maps of 512 with the same entries and no ping lost', async () => {
    lab = await TestLab.create({ nodes: 2, config: config('10.244.0.0/16') });
    await lab.bringUp();
    const [n1, n2] = lab.nodes as [LabNode, LabNode];
    const before: Record<string, number> = {};
    for (const m of PEER_MAPS) {
      const s = await show(n1, m);
      assert.equal(s.max_entries, 256, m);
      before[m] = s.id;
    }
    await lab.etcd.ctl('put', `${PREFIX}/config`, config('10.244.0.0/15'));
    const ping = inNs(n2.pods[0]!.ns, 'ping', '-c', '150', '-i', '0.02', '-W', '1', n1.pods[0]!.ip);
    await new Promise((r) => setTimeout(r, 300));
    await lab.stopAgent(n1);
    lab.startAgent(n1);
    await lab.waitReady(n1);
    const out = await ping;
    assert.match(out, / 0% packet loss/, out.split('\n').slice(-3).join('\n'));
    for (const m of PEER_MAPS) {
      const s = await show(n1, m);
      assert.equal(s.max_entries, 512, m);
      assert.notEqual(s.id, before[m], `${m} is a new map`);
    }
    for (const m of ['fl_subnets', 'fl_routes', 'fl_vteps', 'fl_members', 'fl_peer_stats']) assert.equal(await entries(n1, m), 1, `${m}: node 2, as before`);
    assert.match(lab.logs(n1), /replacing it by a bigger one, entries kept/);
    // node 2 was not restarted: its maps are the ones it had
    for (const m of PEER_MAPS) assert.equal((await show(n2, m)).max_entries, 256);
  });
});
