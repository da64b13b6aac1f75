// Three nodes in network namespaces, our flanneld in each against a real etcd, pods behind cni0:
// for the classic vxlan and host-gw backends, pods reach pods, the kernel state matches the leases
// exactly, departures are cleaned up, restarts keep the subnet, and the reconcile loop repairs drift.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { TestLab, type LabNode } from '../helpers/lab.ts';
import { inNs, json, until } from '../helpers/netns.ts';
import { formatCidr, formatIp4, type Subnet } from '../../control/subnet/ip4.ts';

type RouteJ = { dst: string; gateway?: string; dev: string; flags: string[] };
type NeighJ = { dst: string; lladdr: string; state: string[] };
type FdbJ = { mac: string; dst?: string; flags?: string[]; state?: string };

const labConfig = (backend: string, agentArgs: string[] = []) => ({ nodes: 3, config: JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: backend } }), agentArgs });

/** The vxlan kernel state of one node, as `ip`/`bridge` print it, keyed for comparison. */
async function vxlanState(n: LabNode) {
  const routes = await json<RouteJ[]>(n.ns, 'ip', 'route', 'show', 'dev', 'flannel.1');
  const neighs = await json<NeighJ[]>(n.ns, 'ip', 'neigh', 'show', 'dev', 'flannel.1');
  const fdb = await json<FdbJ[]>(n.ns, 'bridge', 'fdb', 'show', 'dev', 'flannel.1');
  return {
    routes: routes.map((r) => `${r.dst} via ${r.gateway}${r.flags.includes('onlink') ? ' onlink' : ''}`).sort(),
    neighs: neighs
      .filter((x) => x.state.includes('PERMANENT'))
      .map((x) => `${x.dst} ${x.lladdr}`)
      .sort(),
    fdb: fdb
      .filter((f) => f.dst)
      .map((f) => `${f.mac} ${f.dst}`)
      .sort(),
  };
}

async function expectedVxlan(lab: TestLab, self: LabNode) {
  const leases = await lab.leases();
  const routes: string[] = [],
    neighs: string[] = [],
    fdb: string[] = [];
  for (const [key, v] of leases) {
    if (v.PublicIP === self.ip) continue;
    const [ip, len] = key.split('-');
    routes.push(`${ip}/${len} via ${ip} onlink`);
    neighs.push(`${ip} ${v.BackendData!.VtepMAC}`);
    fdb.push(`${v.BackendData!.VtepMAC} ${v.PublicIP}`);
  }
  return { routes: routes.sort(), neighs: neighs.sort(), fdb: fdb.sort() };
}

describe('classic vxlan (--no-bpf), three nodes', { timeout: 240_000 }, () => {
  let lab: TestLab;
  let subnets: Map<LabNode, Subnet>;
  after(async () => lab?.destroy());

  test('agents come up, leases are flannel JSON, subnet files are flannel format', async () => {
    lab = await TestLab.create(labConfig('vxlan', ['--no-bpf']));
    subnets = await lab.bringUp();
    const leases = await lab.leases();
    assert.equal(leases.size, 3);
    for (const n of lab.nodes) {
      const sn = subnets.get(n)!;
      const v = leases.get(`${formatIp4(sn.ip)}-${sn.len}`);
      assert.ok(v, `lease of ${n.ns}`);
      assert.equal(v.PublicIP, n.ip);
      assert.equal(v.BackendType, 'vxlan');
      assert.equal(v.BackendData!.VNI, 1);
      const dev = await json<{ address: string; mtu: number; linkinfo: { info_kind: string; info_data: { id: number; port: number; local: string; learning?: boolean } } }[]>(
        n.ns,
        'ip',
        '-d',
        'link',
        'show',
        'flannel.1',
      );
      assert.equal(dev[0]!.address, v.BackendData!.VtepMAC, 'lease carries the VTEP MAC');
      assert.equal(dev[0]!.mtu, 1450);
      assert.equal(dev[0]!.linkinfo.info_data.id, 1);
      assert.equal(dev[0]!.linkinfo.info_data.port, 8472);
      assert.equal(dev[0]!.linkinfo.info_data.local, n.ip);
      const env = (await lab.waitReady(n)).env;
      assert.deepEqual(env, { FLANNEL_NETWORK: '10.244.0.0/16', FLANNEL_SUBNET: `${formatIp4(sn.ip + 1)}/24`, FLANNEL_MTU: '1450', FLANNEL_IPMASQ: 'false' });
    }
  });

  test('every pod pings every pod on the other nodes', async () => {
    // the first packets may race the peers' programming; then every pair must answer
    await until('all pods reachable', async () => (await lab.pingAll()).length === 0 || undefined, 15_000, 500).catch(() => undefined);
    assert.deepEqual(await lab.pingAll(), []);
  });

  test('kernel routes, neighbours and FDB match the leases exactly', async () => {
    for (const n of lab.nodes) assert.deepEqual(await vxlanState(n), await expectedVxlan(lab, n), n.ns);
  });

  test('a route, neighbour and FDB entry deleted by hand come back (reconcile)', async () => {
    const n1 = lab.node(1);
    const peer = subnets.get(lab.node(2))!;
    const want = await vxlanState(n1);
    await inNs(n1.ns, 'ip', 'route', 'del', formatCidr(peer), 'dev', 'flannel.1');
    await inNs(n1.ns, 'ip', 'neigh', 'del', formatIp4(peer.ip), 'dev', 'flannel.1');
    const mac = want.neighs.find((x) => x.startsWith(`${formatIp4(peer.ip)} `))!.split(' ')[1]!;
    await inNs(n1.ns, 'bridge', 'fdb', 'del', mac, 'dev', 'flannel.1', 'dst', lab.node(2).ip, 'self');
    assert.notDeepEqual(await vxlanState(n1), want, 'the entries really were deleted');
    await until('reconcile', async () => JSON.stringify(await vxlanState(n1)) === JSON.stringify(want) || undefined, 10_000);
  });

  test('a node that stops and loses its lease disappears from the others; restarted, it gets its subnet back and stale entries go', async () => {
    const n3 = lab.node(3);
    const sn3 = subnets.get(n3)!;
    assert.equal(await lab.stopAgent(n3), 0, 'SIGTERM is a clean exit');
    await lab.etcd.ctl('del', `/coreos.com/network/subnets/${formatIp4(sn3.ip)}-${sn3.len}`);
    for (const n of [lab.node(1), lab.node(2)]) {
      await until(`${n.ns} forgets node 3`, async () => {
        const s = await vxlanState(n);
        return s.routes.length === 1 && s.neighs.length === 1 && s.fdb.length === 1 ? true : undefined;
      });
    }
    // leftovers a crashed run could leave on node 3: a peer that no longer exists
    await inNs(n3.ns, 'ip', 'neigh', 'replace', '10.244.250.0', 'lladdr', '02:00:00:00:00:99', 'dev', 'flannel.1', 'nud', 'permanent');
    await inNs(n3.ns, 'bridge', 'fdb', 'append', '02:00:00:00:00:99', 'dev', 'flannel.1', 'dst', '172.20.0.99', 'self', 'permanent');
    await inNs(n3.ns, 'ip', 'route', 'replace', '10.244.250.0/24', 'via', '10.244.250.0', 'dev', 'flannel.1', 'onlink');
    lab.startAgent(n3);
    const { subnet } = await lab.waitReady(n3);
    assert.equal(formatCidr(subnet), formatCidr(sn3), 'the subnet of the previous run is reused');
    await until('node 3 state matches leases', async () => JSON.stringify(await vxlanState(n3)) === JSON.stringify(await expectedVxlan(lab, n3)) || undefined);
    for (const n of lab.nodes) assert.deepEqual(await vxlanState(n), await expectedVxlan(lab, n), n.ns);
    assert.deepEqual(await lab.pingAll(), []);
  });

  test('an incompatible flannel.1 is recreated; peers swap to the new VTEP MAC and drop the old FDB entry', async () => {
    const n3 = lab.node(3);
    const before = (await lab.leases()).get(`${formatIp4(subnets.get(n3)!.ip)}-24`)!.BackendData!.VtepMAC;
    await lab.stopAgent(n3);
    await inNs(n3.ns, 'ip', 'link', 'del', 'flannel.1');
    await inNs(n3.ns, 'ip', 'link', 'add', 'flannel.1', 'type', 'vxlan', 'id', '7', 'dstport', '4789', 'dev', 'eth0');
    lab.startAgent(n3);
    await lab.waitReady(n3);
    const dev = await json<{ linkinfo: { info_data: { id: number; port: number } } }[]>(n3.ns, 'ip', '-d', 'link', 'show', 'flannel.1');
    assert.deepEqual([dev[0]!.linkinfo.info_data.id, dev[0]!.linkinfo.info_data.port], [1, 8472]);
    const after = (await lab.leases()).get(`${formatIp4(subnets.get(n3)!.ip)}-24`)!.BackendData!.VtepMAC;
    assert.notEqual(after, before, 'the recreated device has a new MAC, published in the lease');
    for (const n of [lab.node(1), lab.node(2)]) {
      await until(`${n.ns} follows the MAC change`, async () => JSON.stringify(await vxlanState(n)) === JSON.stringify(await expectedVxlan(lab, n)) || undefined);
      assert.ok(!(await vxlanState(n)).fdb.some((f) => f.startsWith(before)), 'old FDB entry removed');
    }
    assert.deepEqual(await lab.pingAll(), []);
  });

  test("deleting a running node's own lease stops its agent with exit code 0 and flannel's last words, as flannel does", async () => {
    const n2 = lab.node(2);
    const sn2 = subnets.get(n2)!;
    await lab.etcd.ctl('del', `/coreos.com/network/subnets/${formatIp4(sn2.ip)}-${sn2.len}`);
    const code = await Promise.race([n2.exited!, new Promise((r) => setTimeout(() => r('still running'), 10_000))]);
    assert.equal(code, 0, 'flannel: "Lease has been revoked. Shutting down daemon.", then exit 0');
    assert.match(lab.logs(n2), /our lease is gone/);
    assert.match(lab.logs(n2), /Exiting cleanly/);
  });
});

describe('host-gw, three nodes', { timeout: 240_000 }, () => {
  let lab: TestLab;
  let subnets: Map<LabNode, Subnet>;
  after(async () => lab?.destroy());

  const hostgwRoutes = async (n: LabNode) =>
    (await json<RouteJ[]>(n.ns, 'ip', 'route', 'show', 'dev', 'eth0'))
      .filter((r) => r.dst.startsWith('10.244.'))
      .map((r) => `${r.dst} via ${r.gateway}`)
      .sort();
  const expected = async (n: LabNode) =>
    [...(await lab.leases())]
      .filter(([, v]) => v.PublicIP !== n.ip)
      .map(([k, v]) => `${k.replace('-', '/')} via ${v.PublicIP}`)
      .sort();

  test('pods reach pods; one route per peer via its public IP; no BackendData in leases', async () => {
    lab = await TestLab.create(labConfig('host-gw'));
    subnets = await lab.bringUp();
    for (const v of (await lab.leases()).values()) {
      assert.equal(v.BackendType, 'host-gw');
      assert.equal(v.BackendData, undefined);
    }
    for (const n of lab.nodes) {
      assert.equal((await lab.waitReady(n)).env.FLANNEL_MTU, '1500');
      assert.deepEqual(await hostgwRoutes(n), await expected(n));
    }
    assert.deepEqual(await lab.pingAll(), []);
  });

  test("a deleted route comes back; a departed node's route goes; a restart keeps the subnet", async () => {
    const [n1, , n3] = lab.nodes as [LabNode, LabNode, LabNode];
    const peer = subnets.get(lab.node(2))!;
    await inNs(n1.ns, 'ip', 'route', 'del', formatCidr(peer));
    await until('route restored', async () => (await hostgwRoutes(n1)).length === 2 || undefined, 10_000);
    const sn3 = subnets.get(n3)!;
    await lab.stopAgent(n3);
    await lab.etcd.ctl('del', `/coreos.com/network/subnets/${formatIp4(sn3.ip)}-${sn3.len}`);
    await until('node 3 route removed', async () => (await hostgwRoutes(n1)).length === 1 || undefined, 10_000);
    lab.startAgent(n3);
    assert.equal(formatCidr((await lab.waitReady(n3)).subnet), formatCidr(sn3));
    await until('routes restored', async () => (await hostgwRoutes(n1)).length === 2 || undefined, 10_000);
    assert.deepEqual(await lab.pingAll(), []);
  });

  test('host-gw refuses to start when the public IP is not on the interface', async () => {
    const n = lab.node(1);
    await lab.stopAgent(n);
    // behind NAT the operator names the interface: without --iface the public IP picks it (flannel's rule)
    lab.startAgent(n, ['--iface=eth0', '--public-ip=203.0.113.7']);
    assert.equal(await n.exited, 1);
    assert.match(lab.logs(n), /host-gw needs the public IP on the interface/);
  });

  test('--public-ip without --iface that no interface holds: the agent says so and stops, as flannel does', async () => {
    const n = lab.node(1);
    lab.startAgent(n, ['--public-ip=203.0.113.7']);
    assert.equal(await n.exited, 1);
    assert.match(lab.logs(n), /--public-ip 203\.0\.113\.7 is on no interface of this node/);
  });
});
