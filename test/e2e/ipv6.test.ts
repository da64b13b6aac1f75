// IPv6 as flannel runs it, in the lab over an IPv6 underlay: a dual-stack vxlan cluster in BPF mode and
// one in classic mode, an IPv6-only vxlan cluster, host-gw dual-stack, and a node
// programmed by hand exactly as flannel programs a dual-stack node (flannel.1 and flannel-v6.1, flannel's
// lease JSON) in one cluster with two of ours in BPF mode. What a user checks: pods reach pods over both families, the
// leases in etcd are flannel's keys and JSON, subnet.env carries flannel's IPv6 lines, the kernel holds
// flannel's entries, ip6tables holds flannel's rules.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { TestLab, type LabNode, type Pod } from '../helpers/lab.ts';
import { inNs, ip, until } from '../helpers/netns.ts';
import { labConfig } from '../../control/lab/commands.ts';
import { formatCidr6, formatIp6, parseCidr6 } from '../../control/subnet/ip6.ts';
import { formatCidr } from '../../control/subnet/ip4.ts';
import { parseLeaseKey } from '../../control/subnet/lease-key.ts';
import { join } from 'node:path';
import { BpfMap } from '../../control/kernel/bpf.ts';
import * as L from '../../control/datapath/layout.ts';
import { MAP } from '../../control/datapath/objects.ts';
import { readDataPlane, renderDataPlane } from '../../control/datapath/inspect.ts';
import { fetchStatus } from '../../control/health/client.ts';

interface LeaseJson {
  PublicIP: string;
  PublicIPv6: string | null;
  BackendType?: string;
  BackendData?: { VNI: number; VtepMAC: string };
  BackendV6Data?: { VNI: number; VtepMAC: string };
}

const leases = async (lab: TestLab) => (await lab.leases()) as unknown as Map<string, LeaseJson>;
const mac = async (n: LabNode, dev: string) => (JSON.parse(await inNs(n.ns, 'ip', '-j', 'link', 'show', dev)) as { address: string }[])[0]!.address;

async function connected(lab: TestLab): Promise<void> {
  await until('every pod reaches every pod', async () => (await lab.pingAll()).length === 0 || undefined, 20_000, 500).catch(() => undefined);
  const failed = await lab.pingAll();
  if (!failed.length) return;
  // what an operator would look at: each BPF node's maps and counters, each node's routes
  const state: string[] = [];
  for (const n of lab.nodes) {
    if (existsSync(join(n.pinRoot, MAP.routes6))) state.push(`${n.ns} maps:\n${renderDataPlane(readDataPlane(n.pinRoot))}`);
    state.push(`${n.ns} routes:\n${await inNs(n.ns, 'ip', 'route').catch((e: Error) => e.message)}${await inNs(n.ns, 'ip', '-6', 'route').catch((e: Error) => e.message)}`);
  }
  assert.fail(`unreachable pod pairs: ${failed.join(', ')}\n${state.join('\n')}`);
}

/** One short iperf3 TCP run between two pods: bits per second received. */
async function iperf(from: Pod, to: Pod, addr: string): Promise<number> {
  const server = spawn('ip', ['netns', 'exec', to.ns, 'iperf3', '-s', '-1'], { stdio: 'ignore' });
  try {
    await new Promise((r) => setTimeout(r, 300));
    const r = JSON.parse(await inNs(from.ns, 'iperf3', '-c', addr, '-t', '1', '-J')) as { end: { sum_received: { bits_per_second: number } } };
    return r.end.sum_received.bits_per_second;
  } finally {
    server.kill();
  }
}

/** fl_routes6 of a BPF node: "<subnet> <vtep mac> <public ipv6>" per peer */
function routes6(n: LabNode): string[] {
  const m = BpfMap.openPinned(join(n.pinRoot, MAP.routes6));
  try {
    return m
      .entries()
      .map(([k, v]) => {
        const { ip, len } = L.decodeSubnet6Key(k);
        const r = L.decodeRoute6Val(v);
        return `${ip}/${len} ${r.vtepMAC} ${r.remoteIP}`;
      })
      .sort();
  } finally {
    m.close();
  }
}

/** what every dual-stack node must show, whatever the data plane: flannel's lease JSON and subnet.env */
async function checkLeasesAndSubnetFile(lab: TestLab, v6dev: string): Promise<void> {
  const all = await leases(lab);
  assert.equal(all.size, lab.nodes.length);
  for (const n of lab.nodes) {
    const [key, v] = [...all].find(([, x]) => x.PublicIP === n.ip)!;
    const s = parseLeaseKey(key);
    assert.ok(s?.ipv6Subnet, `key ${key} is "<v4>-<len>&<v6>-<len>"`);
    assert.equal(v.PublicIPv6, n.ip6);
    assert.deepEqual(v.BackendV6Data, { VNI: 1, VtepMAC: await mac(n, v6dev) });
    assert.deepEqual(v.BackendData, { VNI: 1, VtepMAC: await mac(n, 'flannel.1') });
    assert.deepEqual(Object.keys(v), ['PublicIP', 'PublicIPv6', 'BackendType', 'BackendData', 'BackendV6Data'], "Go's field order");
    const env = readFileSync(n.subnetFile, 'utf8');
    assert.match(
      env,
      new RegExp(
        `^FLANNEL_NETWORK=10\\.244\\.0\\.0/16\\nFLANNEL_SUBNET=[\\d.]+/24\\nFLANNEL_IPV6_NETWORK=fd00:10:244::/56\\nFLANNEL_IPV6_SUBNET=${formatIp6(s.ipv6Subnet.ip + 1n)}/64\\nFLANNEL_MTU=1450\\nFLANNEL_IPMASQ=(true|false)\\n$`,
      ),
    );
  }
}

describe('dual-stack vxlan in BPF mode: IPv6 pods through flannel.1 (fl_routes6), VXLAN over the IPv6 underlay', { timeout: 300_000 }, () => {
  let lab: TestLab;
  before(async () => {
    lab = await TestLab.create({ nodes: 3, config: labConfig('vxlan', 'dual'), ipv6: true, agentArgs: ['--ip-masq'] });
    await lab.bringUp({ cni: true });
  });
  after(() => lab?.destroy());

  test('every pod reaches every pod over IPv4 and IPv6, and TCP runs over IPv6 (past the IPv6 path MTU)', async () => {
    for (const n of lab.nodes) assert.ok(n.pods[0]!.ip6 && n.pods[0]!.ip6.startsWith('fd00:10:244:'), `${n.ns}'s pod has an IPv6 address from the CNI plugin`);
    await connected(lab);
    const [a, b] = [lab.node(1).pods[0]!, lab.node(2).pods[0]!];
    assert.ok((await iperf(a, b, b.ip6!)) > 1e8, 'iperf3 over IPv6 moves data');
  });

  test('the nodes run BPF mode, flannel.1 is the IPv6 VTEP too, and no flannel-v6.1 exists', async () => {
    for (const n of lab.nodes) {
      assert.match(lab.logs(n), /"mode":"bpf".*"msg":"ready"/);
      assert.equal(await ip('-n', n.ns, 'link', 'show', 'flannel-v6.1').catch(() => 'none'), 'none');
    }
    await checkLeasesAndSubnetFile(lab, 'flannel.1');
  });

  test("the maps: per peer an IPv6 route to its BackendV6Data VTEP at its PublicIPv6; its IPv6 traffic is counted; the IPv6 route carries IPv6's path MTU", async () => {
    const n1 = lab.node(1);
    const want: string[] = [];
    for (const [key, v] of await leases(lab)) if (v.PublicIP !== n1.ip) want.push(`${formatCidr6(parseLeaseKey(key)!.ipv6Subnet!)} ${v.BackendV6Data!.VtepMAC} ${v.PublicIPv6}`);
    assert.deepEqual(routes6(n1), want.sort());
    const stats = BpfMap.openPinned(join(n1.pinRoot, MAP.peerStats6));
    try {
      const tx = stats.entries().map(([k, v]) => ({ ip: L.decodeMember6Key(k), ...L.sumPeerStats(stats.perCpu(v)) }));
      assert.deepEqual(
        tx.map((t) => t.ip).sort(),
        lab.nodes
          .filter((n) => n !== n1)
          .map((n) => n.ip6!)
          .sort(),
        'the IPv6 members',
      );
      assert.ok(
        tx.every((t) => t.txPackets > 0 && t.rxPackets > 0),
        'IPv6 traffic counted both ways with every peer',
      );
    } finally {
      stats.close();
    }
    assert.match(await inNs(n1.ns, 'ip', '-6', 'route', 'show', 'fd00:10:244::/56'), /dev flannel\.1 .*mtu 1430/);
  });

  test('the pod fast path carries IPv6 flows: each pod is registered under both addresses, and TCP over IPv6 skips the stack both ways', async () => {
    const [n1, n2] = [lab.node(1), lab.node(2)];
    for (const n of lab.nodes) {
      const fp = readDataPlane(n.pinRoot).fastPath!;
      assert.ok(fp.on, `${n.ns}: fast path on`);
      const p = n.pods[0]!;
      assert.deepEqual(fp.localPods.map((x) => x.ip).sort(), [p.ip, p.ip6!].sort(), `${n.ns}: the pod under its IPv4 and IPv6 address`);
      assert.equal(new Set(fp.localPods.map((x) => x.ifindex)).size, 1, 'one veth');
    }
    const fast = (n: LabNode) => readDataPlane(n.pinRoot).fastPath!.counters;
    const [tx0, rx0] = [fast(n1).fast_tx.packets, fast(n2).fast_rx.packets];
    assert.ok((await iperf(n1.pods[0]!, n2.pods[0]!, n2.pods[0]!.ip6!)) > 1e8, 'iperf3 over IPv6 moves data');
    // one second of TCP: thousands of segments past the handshake; the handshake itself took the stack
    const [tx, rx] = [fast(n1).fast_tx.packets - tx0, fast(n2).fast_rx.packets - rx0];
    assert.ok(tx > 1000, `node 1 sent the IPv6 flow from its pod's veth straight to flannel.1: fast_tx grew by ${tx}`);
    assert.ok(rx > 1000, `node 2 delivered it from flannel.1 straight into its pod: fast_rx grew by ${rx}`);
  });

  test("ip-masq: flannel's ip6tables rules for the IPv6 network (multicast is ff00::/8)", async () => {
    const n1 = lab.node(1);
    const s6 = parseCidr6(readFileSync(n1.subnetFile, 'utf8').match(/FLANNEL_IPV6_SUBNET=(\S+)/)![1]!)!;
    const nat = await inNs(n1.ns, 'ip6tables-save', '-t', 'nat');
    assert.match(nat, /^-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG$/m);
    assert.match(nat, new RegExp(`^-A FLANNEL-POSTRTG -s ${formatCidr6(s6).replace(/\//, '\\/')} -d fd00:10:244::/56 -m comment --comment "flanneld masq" -j RETURN$`, 'm'));
    assert.match(nat, /^-A FLANNEL-POSTRTG -s fd00:10:244::\/56 ! -d ff00::\/8 -m comment --comment "flanneld masq" -j MASQUERADE/m);
  });
});

describe('dual-stack vxlan, classic (--no-bpf): flannel-v6.1 beside flannel.1, as flannel programs them', { timeout: 300_000 }, () => {
  let lab: TestLab;
  before(async () => {
    lab = await TestLab.create({ nodes: 3, config: labConfig('vxlan', 'dual'), ipv6: true, agentArgs: ['--no-bpf'] });
    await lab.bringUp({ cni: true });
  });
  after(() => lab?.destroy());

  test("pods reach each other over both families, TCP runs over IPv6; leases and subnet.env are flannel's; flannel-v6.1 over the IPv6 underlay with per peer flannel's neighbour, FDB entry and onlink route", async () => {
    await connected(lab);
    const [a, b] = [lab.node(1).pods[0]!, lab.node(2).pods[0]!];
    assert.ok((await iperf(a, b, b.ip6!)) > 1e8, 'iperf3 over IPv6 moves data');
    await checkLeasesAndSubnetFile(lab, 'flannel-v6.1');
    const n1 = lab.node(1);
    const link = JSON.parse(await inNs(n1.ns, 'ip', '-d', '-j', 'link', 'show', 'flannel-v6.1')) as { linkinfo: { info_data: { id: number; local6: string; port: number } } }[];
    assert.deepEqual([link[0]!.linkinfo.info_data.id, link[0]!.linkinfo.info_data.local6, link[0]!.linkinfo.info_data.port], [1, n1.ip6, 8472]);
    const routes = await inNs(n1.ns, 'ip', '-6', 'route', 'show', 'dev', 'flannel-v6.1');
    const fdb = await inNs(n1.ns, 'bridge', 'fdb', 'show', 'dev', 'flannel-v6.1');
    const neigh = await inNs(n1.ns, 'ip', '-6', 'neigh', 'show', 'dev', 'flannel-v6.1');
    for (const [key, v] of await leases(lab)) {
      if (v.PublicIP === n1.ip) continue;
      const s6 = parseLeaseKey(key)!.ipv6Subnet!;
      const gw = formatIp6(s6.ip);
      assert.match(routes, new RegExp(`^${formatCidr6(s6)} via ${gw} .*onlink`, 'm'));
      assert.match(neigh, new RegExp(`^${gw} lladdr ${v.BackendV6Data!.VtepMAC} PERMANENT`, 'm'));
      assert.match(fdb, new RegExp(`^${v.BackendV6Data!.VtepMAC} dst ${v.PublicIPv6} self permanent`, 'm'));
    }
  });

  test('a node switched to BPF mode (restarted without --no-bpf) drops flannel-v6.1 and still reaches the classic nodes over both families', async () => {
    const n1 = lab.node(1);
    await lab.stopAgent(n1);
    lab.agentArgs = [];
    lab.startAgent(n1);
    await lab.waitReady(n1);
    assert.match(lab.logs(n1), /removing the classic IPv6 VXLAN device of an earlier run/);
    assert.equal(await ip('-n', n1.ns, 'link', 'show', 'flannel-v6.1').catch(() => 'none'), 'none');
    assert.match(lab.logs(n1), /"mode":"bpf".*"msg":"ready"/);
    await connected(lab);
  });
});

for (const mode of ['bpf', 'classic'] as const) {
  describe(`IPv6-only vxlan over an IPv6 underlay, ${mode} mode`, { timeout: 300_000 }, () => {
    let lab: TestLab;
    before(async () => {
      // BPF: with ip-masq, whose ip6tables NAT rules turn on IPv6 conntrack, which the pod fast path asks
      lab = await TestLab.create({ nodes: 2, config: labConfig('vxlan', 'only'), ipv6: true, agentArgs: mode === 'classic' ? ['--no-bpf'] : ['--ip-masq'] });
      await lab.bringUp({ cni: true });
    });
    after(() => lab?.destroy());

    test('pods reach each other over IPv6; keys "0.0.0.0-0&<v6>-<len>", PublicIP 0.0.0.0, no BackendData; no IPv4 lines in subnet.env', async () => {
      for (const n of lab.nodes) assert.ok(n.pods[0]!.ip.includes(':'), 'the pod has only an IPv6 address');
      await connected(lab);
      for (const [key, v] of await leases(lab)) {
        assert.match(key, /^0\.0\.0\.0-0&fd00:10:244:[0-9a-f]+::-64$/);
        assert.equal(v.PublicIP, '0.0.0.0');
        assert.equal(v.BackendData, undefined);
        assert.ok(v.BackendV6Data?.VtepMAC);
      }
      for (const n of lab.nodes) {
        assert.match(lab.logs(n), new RegExp(`"mode":"${mode}".*"msg":"ready"`));
        assert.match(readFileSync(n.subnetFile, 'utf8'), /^FLANNEL_IPV6_NETWORK=fd00:10:244::\/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:[0-9a-f]+::1\/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=(true|false)\n$/);
      }
    });

    test(mode === 'bpf' ? 'flannel.1 is the IPv6 VTEP, the peer is in fl_routes6, and no IPv4 route or address is on flannel.1' : 'flannel-v6.1 carries it, and there is no flannel.1', async () => {
      const [n1, n2] = [lab.node(1), lab.node(2)];
      const v2 = [...(await leases(lab))].find(([, v]) => v.PublicIPv6 === n2.ip6)!;
      if (mode === 'bpf') {
        assert.equal(v2[1].BackendV6Data!.VtepMAC, await mac(n2, 'flannel.1'));
        assert.deepEqual(routes6(n1), [`${formatCidr6(parseLeaseKey(v2[0])!.ipv6Subnet!)} ${v2[1].BackendV6Data!.VtepMAC} ${n2.ip6}`]);
        assert.equal((await inNs(n1.ns, 'ip', '-4', 'addr', 'show', 'dev', 'flannel.1')).trim(), '');
        assert.equal((await inNs(n1.ns, 'ip', '-4', 'route', 'show', 'dev', 'flannel.1')).trim(), '');
        // the pod fast path runs for IPv6 flows (bypass, IPv4 underlay only, does not)
        const st = (await fetchStatus(n1.statusSocket)).backend;
        assert.deepEqual([st?.fastPath, st?.localPods, st?.vxlanBypass], ['on', 1, 'off'], JSON.stringify(st));
        assert.match(st?.vxlanBypassOffBecause ?? '', /IPv6-only network/);
        const fast = (n: LabNode) => readDataPlane(n.pinRoot).fastPath!;
        assert.deepEqual(
          fast(n1).localPods.map((p) => p.ip),
          [n1.pods[0]!.ip],
        );
        const [tx0, rx0] = [fast(n1).counters.fast_tx.packets, fast(n2).counters.fast_rx.packets];
        assert.ok((await iperf(n1.pods[0]!, n2.pods[0]!, n2.pods[0]!.ip)) > 1e8, 'iperf3 moves data');
        assert.ok(fast(n1).counters.fast_tx.packets - tx0 > 1000, 'node 1 sent the flow straight to flannel.1');
        assert.ok(fast(n2).counters.fast_rx.packets - rx0 > 1000, 'node 2 delivered it straight into its pod');
      } else {
        assert.equal(v2[1].BackendV6Data!.VtepMAC, await mac(n2, 'flannel-v6.1'));
        assert.equal(await ip('-n', n1.ns, 'link', 'show', 'flannel.1').catch(() => 'none'), 'none');
      }
    });
  });
}

describe("--ip-blackhole-route on a dual-stack network: a blackhole route for each of our subnets, as flannel's AddBlackholeV4Route and AddBlackholeV6Route", { timeout: 120_000 }, () => {
  let lab: TestLab;
  before(async () => {
    lab = await TestLab.create({ nodes: 1, config: labConfig('vxlan', 'dual'), ipv6: true, agentArgs: ['--ip-blackhole-route', '--iptables-resync=1'] });
  });
  after(() => lab?.destroy());

  test('both routes are added, and restored when removed', async () => {
    const n = lab.node(1);
    lab.startAgent(n);
    const { subnet, ipv6Subnet } = await lab.waitReady(n);
    const [v4, v6] = [formatCidr(subnet), formatCidr6(ipv6Subnet!)];
    const blackholes = async () => `${await inNs(n.ns, 'ip', '-4', 'route', 'show', 'type', 'blackhole')}${await inNs(n.ns, 'ip', '-6', 'route', 'show', 'type', 'blackhole')}`;
    await until('both blackhole routes', async () => ((await blackholes()).includes(`blackhole ${v4}`) && (await blackholes()).includes(`blackhole ${v6}`)) || undefined, 5_000);
    await ip('-n', n.ns, '-6', 'route', 'del', 'blackhole', v6);
    await until('the IPv6 blackhole route restored', async () => (await blackholes()).includes(`blackhole ${v6}`) || undefined, 5_000);
  });
});

describe(
  "DirectRouting on a dual-stack network: a peer on our segment gets plain routes for both its subnets, as flannel's v6DirectRoutingOK; a BPF node and a classic one",
  { timeout: 300_000 },
  () => {
    let lab: TestLab;
    before(async () => {
      const config = JSON.parse(labConfig('vxlan', 'dual')) as { Backend: Record<string, unknown> };
      config.Backend.DirectRouting = true;
      lab = await TestLab.create({ nodes: 2, config: JSON.stringify(config), ipv6: true });
      const [n1, n2] = [lab.node(1), lab.node(2)];
      lab.startAgent(n1);
      lab.startAgent(n2, ['--no-bpf']);
      for (const n of [n1, n2]) {
        await lab.waitReady(n);
        await lab.addPodCni(n);
      }
    });
    after(() => lab?.destroy());

    test("each node routes the other's IPv4 and IPv6 subnets via its public addresses on eth0, no tunnel entry is left for it, and pods reach each other over both families", async () => {
      const [n1, n2] = [lab.node(1), lab.node(2)];
      const all = await leases(lab);
      const sub = (n: LabNode) => parseLeaseKey([...all].find(([, v]) => v.PublicIP === n.ip)![0])!;
      for (const [n, peer] of [
        [n1, n2],
        [n2, n1],
      ] as const) {
        const s = sub(peer);
        assert.match(
          await inNs(n.ns, 'ip', '-6', 'route', 'show', formatCidr6(s.ipv6Subnet!)),
          new RegExp(`^${formatCidr6(s.ipv6Subnet!)} via ${peer.ip6} dev eth0`, 'm'),
          `${n.ns}: IPv6 direct route`,
        );
        assert.match(await inNs(n.ns, 'ip', '-4', 'route', 'show', formatCidr(s.subnet)), new RegExp(`via ${peer.ip} dev eth0`), `${n.ns}: IPv4 direct route`);
        const st = (await fetchStatus(n.statusSocket)).backend;
        assert.equal(st?.ipv6?.directRoutingPeers, 1, JSON.stringify(st));
      }
      // BPF node: neither family's tunnel route for the direct peer, its memberships kept
      assert.deepEqual(routes6(n1), []);
      // classic node: flannel-v6.1 holds no neighbour or FDB entry for it
      assert.equal((await inNs(n2.ns, 'ip', '-6', 'neigh', 'show', 'dev', 'flannel-v6.1')).trim(), '');
      assert.equal(
        (await inNs(n2.ns, 'bridge', 'fdb', 'show', 'dev', 'flannel-v6.1'))
          .split('\n')
          .filter((l) => / dst /.test(l))
          .join('\n'),
        '',
      );
      await connected(lab);
    });
  },
);

describe('host-gw dual-stack: IPv6 routes via the peer public IPv6', { timeout: 300_000 }, () => {
  let lab: TestLab;
  before(async () => {
    lab = await TestLab.create({ nodes: 2, config: labConfig('host-gw', 'dual'), ipv6: true });
    await lab.bringUp({ cni: true });
  });
  after(() => lab?.destroy());

  test('pods reach each other over both families; each node routes the peer IPv6 subnet via its PublicIPv6', async () => {
    await connected(lab);
    const [n1, n2] = [lab.node(1), lab.node(2)];
    const s6 = parseCidr6(readFileSync(n2.subnetFile, 'utf8').match(/FLANNEL_IPV6_SUBNET=(\S+)/)![1]!)!;
    assert.match(await inNs(n1.ns, 'ip', '-6', 'route', 'show', formatCidr6(s6)), new RegExp(`via ${n2.ip6} dev eth0`));
  });

  test('the udp backend refuses IPv6 with a clear error, as flannel has no IPv6 there', async () => {
    const udp = await TestLab.create({ nodes: 1, config: labConfig('udp', 'dual'), ipv6: true });
    try {
      const n = udp.node(1);
      udp.startAgent(n);
      assert.equal(await n.exited, 1);
      assert.match(udp.logs(n), /the udp backend carries IPv4 only \(as in flannel\): with EnableIPv6 use \\"vxlan\\" or \\"host-gw\\"/);
    } finally {
      await udp.destroy();
    }
  });
});

describe('interop: a node programmed by hand exactly as flannel programs a dual-stack node', { timeout: 300_000 }, () => {
  let lab: TestLab;
  let f: LabNode;
  const V4 = '10.244.200.0';
  const V6 = 'fd00:10:244:c8::';
  before(async () => {
    lab = await TestLab.create({ nodes: 3, config: labConfig('vxlan', 'dual'), ipv6: true });
    f = lab.node(3);
    const sh = (cmd: string, ...a: string[]) => inNs(f.ns, cmd, ...a);
    // flannel's createVXLANDevice and configureDeviceIPv4IPv6
    await sh('ip', 'link', 'add', 'flannel.1', 'type', 'vxlan', 'id', '1', 'local', f.ip, 'dev', 'eth0', 'dstport', '8472', 'nolearning');
    await sh('ip', 'link', 'set', 'flannel.1', 'mtu', '1450', 'up');
    await sh('ip', 'addr', 'add', `${V4}/32`, 'dev', 'flannel.1');
    await sh('ip', 'link', 'add', 'flannel-v6.1', 'type', 'vxlan', 'id', '1', 'local', f.ip6!, 'dev', 'eth0', 'dstport', '8472', 'nolearning');
    await sh('ip', 'link', 'set', 'flannel-v6.1', 'up');
    await sh('ip', '-6', 'addr', 'add', `${V6}/128`, 'dev', 'flannel-v6.1', 'nodad');
    // its lease, as flannel's etcd registry writes it
    const value = JSON.stringify({
      PublicIP: f.ip,
      PublicIPv6: f.ip6,
      BackendType: 'vxlan',
      BackendData: { VNI: 1, VtepMAC: await mac(f, 'flannel.1') },
      BackendV6Data: { VNI: 1, VtepMAC: await mac(f, 'flannel-v6.1') },
    });
    await lab.etcd.ctl('put', `/coreos.com/network/subnets/${V4}-24&${V6}-64`, value);
    // its pod, as the bridge plugin makes one
    await sh('ip', 'link', 'add', 'cni0', 'type', 'bridge');
    await sh('ip', 'addr', 'add', '10.244.200.1/24', 'dev', 'cni0');
    await sh('ip', '-6', 'addr', 'add', 'fd00:10:244:c8::1/64', 'dev', 'cni0', 'nodad');
    await sh('ip', 'link', 'set', 'cni0', 'mtu', '1430', 'up');
    const pod: Pod = { ns: `${lab.prefix}n3p0`, ip: '10.244.200.2', ip6: 'fd00:10:244:c8::2' };
    await ip('netns', 'add', pod.ns);
    await ip('-n', f.ns, 'link', 'add', 'veth0', 'mtu', '1430', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod.ns);
    await ip('-n', f.ns, 'link', 'set', 'veth0', 'master', 'cni0', 'up');
    await inNs(pod.ns, 'ip', 'link', 'set', 'lo', 'up');
    await inNs(pod.ns, 'ip', 'link', 'set', 'eth0', 'mtu', '1430', 'up');
    await inNs(pod.ns, 'ip', 'addr', 'add', `${pod.ip}/24`, 'dev', 'eth0');
    await inNs(pod.ns, 'ip', '-6', 'addr', 'add', `${pod.ip6}/64`, 'dev', 'eth0', 'nodad');
    await inNs(pod.ns, 'ip', 'route', 'add', 'default', 'via', '10.244.200.1');
    await inNs(pod.ns, 'ip', '-6', 'route', 'add', 'default', 'via', 'fd00:10:244:c8::1');
    f.pods.push(pod);
    // our agents on nodes 1 and 2
    for (const n of [lab.node(1), lab.node(2)]) lab.startAgent(n);
    for (const n of [lab.node(1), lab.node(2)]) {
      await lab.waitReady(n);
      await lab.addPodCni(n);
    }
    // flannel's handleSubnetEvents on the hand node, for each of our leases
    for (const [key, v] of await leases(lab)) {
      if (v.PublicIP === f.ip) continue;
      const s = parseLeaseKey(key)!;
      const gw4 = key.split('-')[0]!;
      const gw6 = formatIp6(s.ipv6Subnet!.ip);
      await sh('ip', 'neigh', 'replace', gw4, 'lladdr', v.BackendData!.VtepMAC, 'dev', 'flannel.1', 'nud', 'permanent');
      await sh('bridge', 'fdb', 'replace', v.BackendData!.VtepMAC, 'dev', 'flannel.1', 'dst', v.PublicIP, 'self', 'permanent');
      await sh('ip', 'route', 'replace', `${gw4}/24`, 'via', gw4, 'dev', 'flannel.1', 'onlink');
      await sh('ip', '-6', 'neigh', 'replace', gw6, 'lladdr', v.BackendV6Data!.VtepMAC, 'dev', 'flannel-v6.1', 'nud', 'permanent');
      await sh('bridge', 'fdb', 'replace', v.BackendV6Data!.VtepMAC, 'dev', 'flannel-v6.1', 'dst', v.PublicIPv6!, 'self', 'permanent');
      await sh('ip', '-6', 'route', 'replace', formatCidr6(s.ipv6Subnet!), 'via', gw6, 'dev', 'flannel-v6.1', 'onlink');
    }
  });
  after(() => lab?.destroy());

  test("our nodes take the flannel node's lease and program it; pods reach each other both ways over IPv4 and IPv6", async () => {
    const n1 = lab.node(1);
    await until('flannel node programmed', () => routes6(n1).some((r) => r.startsWith(`${V6}/64 `)) || undefined, 10_000, 200);
    assert.deepEqual(
      routes6(n1).filter((r) => r.startsWith(`${V6}/64 `)),
      [`${V6}/64 ${await mac(f, 'flannel-v6.1')} ${f.ip6}`],
      "the flannel node's IPv6 subnet goes to its flannel-v6.1 at its PublicIPv6",
    );
    await connected(lab);
  });
});
