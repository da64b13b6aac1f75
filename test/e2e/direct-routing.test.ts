// flannel's vxlan DirectRouting in a mixed cluster: nodes 1 (BPF mode) and 2 (classic) share an L2
// segment, node 3 sits behind a router namespace on another subnet. 1 <-> 2 must be plain routes (no
// tunnel, no tunnel entries), every path to or from 3 the tunnel; pods reach each other all ways; a
// peer that moves behind a gateway goes back to the tunnel at the next reconcile.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { TestLab, UNDERLAY_GW, type LabNode } from '../helpers/lab.ts';
import { inNs, ip, until } from '../helpers/netns.ts';
import { BpfMap } from '../../control/kernel/bpf.ts';
import * as L from '../../control/datapath/layout.ts';
import { readDataPlane } from '../../control/datapath/inspect.ts';
import { formatCidr, type Subnet } from '../../control/subnet/ip4.ts';

const CONFIG = '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}';
const ROUTER_A = '172.20.0.254';
const ROUTER_B = '172.21.0.254';
const N3_IP = '172.21.0.13';

/** the subnets (fl_routes: the egress program's table) and members a BPF node holds */
function bpfState(n: LabNode): { routes: string[]; members: string[] } {
  const read = (name: string) => {
    const m = BpfMap.openPinned(join(n.pinRoot, name));
    try {
      return m.keys();
    } finally {
      m.close();
    }
  };
  return {
    routes: read('fl_routes')
      .map((k) => {
        const { ip, len } = L.decodeSubnetKey(k);
        return `${ip}/${len}`;
      })
      .sort(),
    members: read('fl_members')
      .map((k) => L.decodeMemberKey(k))
      .sort(),
  };
}

const route = async (n: LabNode, sn: Subnet) => (await inNs(n.ns, 'ip', 'route', 'show', formatCidr(sn))).trim();

describe('vxlan DirectRouting: plain routes on the shared segment, the tunnel through the router, BPF and classic nodes together', { timeout: 300_000 }, () => {
  let lab: TestLab;
  let n1: LabNode, n2: LabNode, n3: LabNode;
  const sn = new Map<LabNode, Subnet>();
  before(async () => {
    lab = await TestLab.create({ nodes: 3, config: CONFIG });
    [n1, n2, n3] = lab.nodes as [LabNode, LabNode, LabNode];
    // a router on the underlay bridge with a leg in 172.20.0.0/24 and one in 172.21.0.0/24; node 3 moves to the latter
    const rt = `${lab.prefix}rt`;
    await ip('netns', 'add', rt);
    await ip('-n', lab.underlay, 'link', 'add', 'rt', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', rt);
    await ip('-n', lab.underlay, 'link', 'set', 'rt', 'master', 'br0', 'up');
    await ip('-n', rt, 'addr', 'add', `${ROUTER_A}/24`, 'dev', 'eth0');
    await ip('-n', rt, 'addr', 'add', `${ROUTER_B}/24`, 'dev', 'eth0');
    await ip('-n', rt, 'link', 'set', 'eth0', 'up');
    // forwarding out of the interface it came in on: no ICMP redirects telling the nodes to skip it
    for (const k of ['net.ipv4.ip_forward=1', 'net.ipv4.conf.all.send_redirects=0', 'net.ipv4.conf.eth0.send_redirects=0']) await inNs(rt, 'sysctl', '-qw', k);
    await ip('-n', n3.ns, 'addr', 'flush', 'dev', 'eth0');
    await ip('-n', n3.ns, 'addr', 'add', `${N3_IP}/24`, 'dev', 'eth0');
    await ip('-n', n3.ns, 'route', 'replace', 'default', 'via', ROUTER_B);
    n3.ip = N3_IP;
    for (const ns of [lab.underlay, n1.ns, n2.ns]) await ip('-n', ns, 'route', 'add', '172.21.0.0/24', 'via', ROUTER_A);
    lab.startAgent(n1);
    lab.startAgent(n2, ['--no-bpf']);
    lab.startAgent(n3);
    for (const n of lab.nodes) {
      const { subnet, mtu } = await lab.waitReady(n);
      sn.set(n, subnet);
      await lab.addPod(n, subnet, mtu);
    }
  });
  after(async () => {
    // the router is no shape `lab down` knows: it goes first, by name
    if (lab) await ip('netns', 'del', `${lab.prefix}rt`).catch(() => undefined);
    await lab?.destroy();
  });

  test('nodes 1 and 2 reach each other by plain routes, node 3 by the tunnel, in BPF and classic mode', async () => {
    await until('every node programmed', async () => ((await route(n1, sn.get(n2)!)) !== '' && (await route(n2, sn.get(n1)!)) !== '' && bpfState(n3).routes.length === 2) || undefined, 15_000);
    // node 1, BPF mode: a kernel route to node 2's subnet via its address on eth0, and no tunnel route for it
    assert.equal(await route(n1, sn.get(n2)!), `${formatCidr(sn.get(n2)!)} via ${n2.ip} dev eth0`);
    assert.deepEqual(bpfState(n1).routes, [formatCidr(sn.get(n3)!)], "node 1's tunnel table holds node 3 only");
    assert.deepEqual(bpfState(n1).members, [n2.ip, N3_IP].sort(), 'node 2 stays a member: VXLAN from it would still pass the guard');
    // node 2, classic: the same plain route for node 1, flannel's onlink vxlan route for node 3
    assert.equal(await route(n2, sn.get(n1)!), `${formatCidr(sn.get(n1)!)} via ${n1.ip} dev eth0`);
    assert.match(await route(n2, sn.get(n3)!), /via \S+ dev flannel\.1 onlink/);
    assert.doesNotMatch(
      await inNs(n2.ns, 'ip', 'neigh', 'show', 'dev', 'flannel.1'),
      new RegExp(formatCidr(sn.get(n1)!).split('/')[0]!.replace(/\./g, '\\.')),
      'no tunnel neighbour for a direct peer',
    );
    // node 3, behind the router: the tunnel to both
    assert.deepEqual(bpfState(n3).routes, [formatCidr(sn.get(n1)!), formatCidr(sn.get(n2)!)].sort());
    assert.equal(await route(n3, sn.get(n1)!), '', 'no plain route on node 3');
    assert.deepEqual(await lab.pingAll(), []);
    // what went through the tunnel: nothing to node 2, something to node 3
    const peers = readDataPlane(n1.pinRoot).peers;
    assert.ok((peers.find((p) => p.hostIP === N3_IP)?.txPackets ?? 0) > 0, 'node 3 through the tunnel');
    assert.equal(
      peers.find((p) => p.hostIP === n2.ip),
      undefined,
      'node 2 is not in the tunnel table at all',
    );
    const status = JSON.parse(
      await inNs(n1.ns, process.execPath, join(import.meta.dirname, '..', '..', 'dist', 'control', 'cli', 'flannelctl.js'), 'status', '--socket', n1.statusSocket, '--json'),
    ) as {
      backend: { directRoutingPeers?: number };
    };
    assert.equal(status.backend.directRoutingPeers, 1);
  });

  test('a peer that moves behind a gateway goes back to the tunnel at the next reconcile; a stale plain route is removed', async () => {
    // node 1 now reaches node 2's address through the router: no longer directly connected
    await ip('-n', n1.ns, 'route', 'add', `${n2.ip}/32`, 'via', ROUTER_A);
    await until('node 2 in node 1 tunnel table', () => bpfState(n1).routes.includes(formatCidr(sn.get(n2)!)) || undefined, 10_000);
    await until('plain route gone', async () => (await route(n1, sn.get(n2)!)) === '' || undefined, 10_000);
    assert.deepEqual(await lab.pingAll(), []);
    // a plain route to a pod subnet nobody leases (a host-gw run's leftover): removed
    await ip('-n', n1.ns, 'route', 'add', '10.244.250.0/24', 'via', UNDERLAY_GW, 'dev', 'eth0');
    await until('stale route removed', async () => (await inNs(n1.ns, 'ip', 'route', 'show', '10.244.250.0/24')).trim() === '' || undefined, 10_000);
    // and back: directly connected again, a plain route again
    await ip('-n', n1.ns, 'route', 'del', `${n2.ip}/32`);
    await until('direct again', async () => (await route(n1, sn.get(n2)!)).includes('dev eth0') || undefined, 10_000);
    assert.ok(!bpfState(n1).routes.includes(formatCidr(sn.get(n2)!)));
    assert.deepEqual(await lab.pingAll(), []);
  });
});
