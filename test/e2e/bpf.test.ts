// BPF mode end to end: three nodes, the data plane in pinned maps instead of per-peer kernel entries,
// hostile VXLAN dropped and counted, restarts without loss, and a classic node in the same cluster.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import { TestLab, UNDERLAY_GW, packetsByVerdict, type LabNode } from '../helpers/lab.ts';
import { inNs, ip, json, sh, until } from '../helpers/netns.ts';
import { formatCidr, formatIp4, type Subnet } from '../../control/subnet/ip4.ts';
import { BpfObject } from '../../control/kernel/bpf.ts';
import { MAP, PEER_MAPS, objectPath } from '../../control/datapath/objects.ts';
import * as L from '../../control/datapath/layout.ts';

const SEND = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'send-vxlan.ts');

type BpftoolEntry = { key: Record<string, unknown>; value: Record<string, unknown> };
/** bpftool's JSON puts BTF-named fields under "formatted": that is what an operator reads */
const bpftool = async (pin: string) =>
  (JSON.parse(await sh('bpftool', ['-j', 'map', 'dump', 'pinned', pin])) as { formatted?: BpftoolEntry }[]).map((e) => {
    assert.ok(e.formatted, `bpftool prints ${pin} without BTF field names`);
    return e.formatted;
  });

describe('BPF vxlan, three nodes', { timeout: 300_000 }, () => {
  let lab: TestLab;
  let subnets: Map<LabNode, Subnet>;
  after(async () => lab?.destroy());

  test('flannel.1 is an external vxlan device with ARP off; programs attached; leases unchanged in shape', async () => {
    lab = await TestLab.create({ nodes: 3, config: JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }) });
    subnets = await lab.bringUp();
    for (const n of lab.nodes) {
      const [dev] = await json<{ flags: string[]; mtu: number; address: string; linkinfo: { info_data: { external?: boolean; port: number } } }[]>(n.ns, 'ip', '-d', 'link', 'show', 'flannel.1');
      assert.ok(dev!.linkinfo.info_data.external, 'collect-metadata mode');
      assert.equal(dev!.linkinfo.info_data.port, 8472);
      assert.ok(dev!.flags.includes('NOARP'));
      assert.equal(dev!.mtu, 1450);
      assert.match(lab.logs(n), /"mode":"bpf"/);
      const filters = await inNs(n.ns, 'tc', 'filter', 'show', 'dev', 'flannel.1', 'egress');
      assert.match(filters, /fl_vxlan_egress/);
      assert.match(
        await inNs(n.ns, 'tc', 'filter', 'show', 'dev', 'eth0', 'ingress'),
        /fl_guard_bypass/,
        'veth underlay: the guard runs in tc, not native XDP (in the default bypass mode, the guard that also decapsulates)',
      );
      const lease = (await lab.leases()).get(`${formatIp4(subnets.get(n)!.ip)}-24`)!;
      assert.equal(lease.BackendData!.VtepMAC, dev!.address);
      // the agent chose the MAC (NET_ADDR_SET = 3), not the kernel at random (1): systemd-udevd's
      // MACAddressPolicy=persistent rewrites a random one after the lease has published it
      assert.equal((await inNs(n.ns, 'cat', '/sys/class/net/flannel.1/addr_assign_type')).trim(), '3', 'flannel.1 MAC set by the agent at creation');
    }
  });

  test('every pod pings every pod on the other nodes', async () => {
    await until('all pods reachable', async () => (await lab.pingAll()).length === 0 || undefined, 15_000, 500).catch(() => undefined);
    assert.deepEqual(await lab.pingAll(), []);
  });

  test("plain routes to pod subnets (a host-gw run's leftovers: a peer's, and one nobody leases) go at the next reconcile", async () => {
    const [n1, n2] = lab.nodes as [LabNode, LabNode];
    const peer = formatCidr(subnets.get(n2)!);
    await ip('-n', n1.ns, 'route', 'add', peer, 'via', n2.ip, 'dev', 'eth0');
    await ip('-n', n1.ns, 'route', 'add', '10.244.250.0/24', 'via', UNDERLAY_GW, 'dev', 'eth0');
    for (const dst of [peer, '10.244.250.0/24']) await until(`${dst} removed`, async () => (await inNs(n1.ns, 'ip', 'route', 'show', dst)).trim() === '' || undefined, 10_000);
    assert.deepEqual(await lab.pingAll(), []);
  });

  test('no per-peer route, neighbour or FDB entry; the maps hold exactly one entry per peer, named fields in bpftool', async () => {
    const leases = await lab.leases();
    for (const n of lab.nodes) {
      const routes = await json<{ dst: string }[]>(n.ns, 'ip', 'route', 'show', 'dev', 'flannel.1');
      assert.deepEqual(
        routes.map((r) => r.dst),
        ['10.244.0.0/16'],
        'one route for the whole network',
      );
      assert.deepEqual(
        (await json<{ state: string[] }[]>(n.ns, 'ip', 'neigh', 'show', 'dev', 'flannel.1')).filter((x) => x.state.includes('PERMANENT')),
        [],
      );
      assert.deepEqual(
        (await json<{ dst?: string }[]>(n.ns, 'bridge', 'fdb', 'show', 'dev', 'flannel.1')).filter((f) => f.dst),
        [],
      );

      const peers = [...leases].filter(([, v]) => v.PublicIP !== n.ip);
      const sub = await bpftool(join(n.pinRoot, 'fl_subnets'));
      assert.equal(sub.length, 2);
      const want = peers.map(([k, v]) => `${k.split('-')[0]}/${k.split('-')[1]} ${v.BackendData!.VtepMAC}`).sort();
      const got = sub.map((e) => `${(e.key.addr as number[]).join('.')}/${String(e.key.prefixlen)} ${(e.value.vtep_mac as number[]).map((b) => b.toString(16).padStart(2, '0')).join(':')}`).sort();
      assert.deepEqual(got, want);
      const vteps = await bpftool(join(n.pinRoot, 'fl_vteps'));
      assert.deepEqual(vteps.map((e) => (e.value.remote_ip as number[]).join('.')).sort(), peers.map(([, v]) => v.PublicIP).sort());
      assert.equal((await bpftool(join(n.pinRoot, 'fl_members'))).length, 2);
      // sized by the network (a /16 of /24s holds 256 subnets), not FL_MAX_PEERS
      for (const m of ['fl_subnets', 'fl_routes', 'fl_vteps', 'fl_members', 'fl_peer_stats']) {
        const show = JSON.parse(await sh('bpftool', ['-j', 'map', 'show', 'pinned', join(n.pinRoot, m)])) as { max_entries: number };
        assert.equal(show.max_entries, 256, `${n.ns} ${m}`);
      }
    }
  });

  test('flannelctl maps decodes the maps (subnet, VTEP MAC, host IP, counters) as JSON and as a table', async () => {
    const n1 = lab.node(1);
    const CTL = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'control', 'cli', 'flannelctl.js');
    const view = JSON.parse(await sh(process.execPath, [CTL, 'maps', '--json', `--bpf-pin-root=${n1.pinRoot}`])) as {
      peers: { subnet: string; vtepMAC: string; hostIP: string; txPackets: number; rxPackets: number }[];
      counters: Record<string, { packets: number }>;
      config: { vni: number };
    };
    const leases = [...(await lab.leases())].filter(([, v]) => v.PublicIP !== n1.ip);
    assert.deepEqual(
      view.peers.map((p: { subnet: string; vtepMAC: string; hostIP: string }) => `${p.subnet} ${p.vtepMAC} ${p.hostIP}`).sort(),
      leases.map(([k, v]) => `${k.replace('-', '/')} ${v.BackendData!.VtepMAC} ${v.PublicIP}`).sort(),
    );
    assert.ok(
      view.peers.every((p: { txPackets: number; rxPackets: number }) => p.txPackets > 0 && p.rxPackets > 0),
      'the pings were counted per peer',
    );
    assert.ok(view.counters.forwarded!.packets > 0);
    assert.equal(view.config.vni, 1);
    const table = await sh(process.execPath, [CTL, 'maps', `--bpf-pin-root=${n1.pinRoot}`]);
    assert.match(table, /SUBNET\s+VTEP MAC\s+HOST IP\s+TX PKTS/);
    assert.match(table, /packets by reason: forwarded=\d+/);
  });

  test("VXLAN from a non-member is dropped and counted; with the wrong VNI too; a member's passes", async () => {
    const n1 = lab.node(1);
    const mac1 = (await lab.leases()).get(`${formatIp4(subnets.get(n1)!.ip)}-24`)!.BackendData!.VtepMAC;
    const pod1 = n1.pods[0]!.ip;
    const attacker = await lab.addStranger();
    const send = (ns: string, vni: number, count: number, src: string) => inNs(ns, process.execPath, '--import', 'tsx', SEND, n1.ip, '8472', String(vni), String(count), mac1, src, pod1);

    const s0 = packetsByVerdict(n1);
    await send(attacker, 1, 50, '10.244.99.9');
    await until('spoofed counted', () => packetsByVerdict(n1).spoofed - s0.spoofed === 50 || undefined, 5000);
    assert.equal(packetsByVerdict(n1).received - s0.received < 50, true, 'none of them reached flannel.1');

    const n2 = lab.node(2);
    const s1 = packetsByVerdict(n1);
    await send(n2.ns, 7, 20, n2.pods[0]!.ip);
    await until('wrong VNI counted', () => packetsByVerdict(n1).wrong_vni - s1.wrong_vni === 20 || undefined, 5000);
    const s2 = packetsByVerdict(n1);
    assert.ok(s2.guard_passed - s1.guard_passed >= 20, 'a member passes the underlay guard');
    await send(n2.ns, 1, 20, n2.pods[0]!.ip);
    await until('member traffic received', () => packetsByVerdict(n1).received - s2.received >= 20 || undefined, 5000);
    assert.equal(packetsByVerdict(n1).spoofed, s1.spoofed, 'no member packet counted as spoofed');
  });

  test('kill -9 of the agents while a ping runs: no packet lost, no duplicate map state', async () => {
    const [n1, n2] = lab.nodes as [LabNode, LabNode];
    const ping = inNs(n1.pods[0]!.ns, 'ping', '-c', '150', '-i', '0.04', '-W', '1', n2.pods[0]!.ip);
    await new Promise((r) => setTimeout(r, 1000));
    for (const n of [n1, n2]) {
      await lab.stopAgent(n, 'SIGKILL');
      lab.startAgent(n);
    }
    for (const n of [n1, n2]) await lab.waitReady(n);
    const out = await ping;
    assert.match(out, / 0% packet loss/, out.split('\n').slice(-3).join('\n'));
    for (const n of lab.nodes) {
      assert.equal((await bpftool(join(n.pinRoot, 'fl_subnets'))).length, 2);
      assert.equal((await bpftool(join(n.pinRoot, 'fl_vteps'))).length, 2);
      assert.match(await inNs(n.ns, 'tc', 'filter', 'show', 'dev', 'flannel.1', 'egress'), /fl_vxlan_egress/);
      const count = (await inNs(n.ns, 'tc', 'filter', 'show', 'dev', 'flannel.1', 'egress')).split('\n').filter((l) => l.includes('fl_vxlan_egress')).length;
      assert.equal(count, 1, 'the program was replaced, not stacked');
    }
  });

  test('an upgrade that must replace fl_peer_stats (another layout or flags) loses no packet: the members keep their entries', async () => {
    const [n1, n2] = lab.nodes as [LabNode, LabNode];
    await lab.stopAgent(n1);
    // what an older version left: fl_peer_stats with other flags (without preallocation), empty; the
    // other maps as they are pinned (sized for this /16 network)
    const sizes = Object.fromEntries(PEER_MAPS.map((m) => [m, 256]));
    const old = await BpfObject.open(objectPath('egress'), n1.pinRoot, undefined, L.REPLACEABLE_MAPS, { [MAP.peerStats]: 1 }, sizes);
    old.close();
    const spoofed = packetsByVerdict(n1).spoofed;
    const ping = inNs(n2.pods[0]!.ns, 'ping', '-c', '100', '-i', '0.02', '-W', '1', n1.pods[0]!.ip);
    await new Promise((r) => setTimeout(r, 300));
    lab.startAgent(n1);
    await lab.waitReady(n1);
    const out = await ping;
    assert.match(out, / 0% packet loss/, out.split('\n').slice(-3).join('\n'));
    assert.equal(packetsByVerdict(n1).spoofed, spoofed, 'no member counted as spoofed while the new map filled');
    assert.match(lab.logs(n1), /fl_peer_stats was replaced/);
  });

  test('forced fallback: BPF set-up fails, the reason is logged, nothing is left pinned, the node runs classic and talks to the BPF nodes', async () => {
    const n3 = lab.node(3);
    await lab.stopAgent(n3);
    const badRoot = '/proc/flannel-cannot-pin-here';
    lab.startAgent(n3, [`--bpf-pin-root=${badRoot}`]);
    await lab.waitReady(n3);
    assert.match(lab.logs(n3), /BPF data plane unavailable, falling back to classic vxlan/);
    assert.match(lab.logs(n3), /"fallbackReason":/);
    assert.ok(!existsSync(badRoot));
    const [dev] = await json<{ linkinfo: { info_data: { id?: number; external?: boolean } } }[]>(n3.ns, 'ip', '-d', 'link', 'show', 'flannel.1');
    assert.equal(dev!.linkinfo.info_data.id, 1, 'classic device');
    assert.ok(!dev!.linkinfo.info_data.external);
    // the BPF nodes learn node 3's new VTEP MAC through the lease; node 3 programs classic entries
    await until('mixed cluster converges', async () => (await lab.pingAll()).length === 0 || undefined, 20_000, 500).catch(() => undefined);
    assert.deepEqual(await lab.pingAll(), []);
    assert.equal((await json<{ dst: string }[]>(n3.ns, 'ip', 'route', 'show', 'dev', 'flannel.1')).length, 2, 'classic: one route per peer');
  });
});
