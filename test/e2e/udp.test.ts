// The udp backend (flannel's legacy mode) on three nodes: flannel0 as flannel configures it, pods reach
// pods through the native pump, non-members are dropped and counted, restarts and departures hold.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { TestLab, type LabNode } from '../helpers/lab.ts';
import { inNs, json, until } from '../helpers/netns.ts';
import { formatCidr, formatIp4, type Subnet } from '../../control/subnet/ip4.ts';
import { fetchStatus } from '../../control/health/client.ts';

describe('udp backend, three nodes', { timeout: 240_000 }, () => {
  let lab: TestLab;
  let subnets: Map<LabNode, Subnet>;
  after(async () => lab?.destroy());

  test('flannel0 is a TUN with MTU - 28, subnet/32 and the network route; leases carry no BackendType', async () => {
    lab = await TestLab.create({ nodes: 3, config: JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'udp' } }) });
    subnets = await lab.bringUp();
    for (const [, v] of await lab.leases()) {
      assert.equal(v.BackendType, undefined);
      assert.equal(v.BackendData, undefined);
    }
    for (const n of lab.nodes) {
      const sn = subnets.get(n)!;
      const [dev] = await json<{ mtu: number; flags: string[]; linkinfo?: { info_kind: string; info_data?: { type: string; pi: boolean } }; addr_info: { local: string; prefixlen: number }[] }[]>(
        n.ns,
        'ip',
        '-d',
        '-j',
        'addr',
        'show',
        'flannel0',
      );
      assert.equal(dev!.linkinfo?.info_kind, 'tun');
      assert.equal(dev!.linkinfo?.info_data?.type, 'tun');
      assert.equal(dev!.linkinfo?.info_data?.pi, false);
      assert.equal(dev!.mtu, 1472);
      assert.ok(dev!.flags.includes('UP'));
      assert.deepEqual(
        dev!.addr_info.map((a) => `${a.local}/${a.prefixlen}`),
        [`${formatIp4(sn.ip)}/32`],
      );
      const routes = await json<{ dst: string }[]>(n.ns, 'ip', '-j', 'route', 'show', 'dev', 'flannel0');
      assert.deepEqual(
        routes.map((r) => r.dst),
        ['10.244.0.0/16'],
      );
      assert.equal((await lab.waitReady(n)).env.FLANNEL_MTU, '1472');
      const ss = await inNs(n.ns, 'ss', '-Hunl', 'sport', '= :8285');
      assert.match(ss, new RegExp(`${n.ip.replaceAll('.', '\\.')}:8285`), 'bound to the interface address on 8285');
    }
  });

  test('every pod pings every pod on the other nodes, with a large packet too', async () => {
    await until('all pods reachable', async () => (await lab.pingAll()).length === 0 || undefined, 15_000, 500).catch(() => undefined);
    assert.deepEqual(await lab.pingAll(), []);
    const [a, b] = [lab.node(1).pods[0]!, lab.node(2).pods[0]!];
    // 1472 - 28 = 1444 bytes of ICMP payload: the largest that fits flannel0's MTU unfragmented
    await inNs(a.ns, 'ping', '-c', '2', '-W', '2', '-M', 'do', '-s', '1444', b.ip);
  });

  test('the pump counts per peer; a datagram from a non-member is dropped and counted, not delivered', async () => {
    const [n1, n2] = [lab.node(1), lab.node(2)];
    const before = await fetchStatus(n1.statusSocket);
    const peer = before.traffic!.peers.find((p) => p.publicIP === n2.ip)!;
    assert.equal(peer.subnet, formatCidr(subnets.get(n2)!));
    await inNs(n1.pods[0]!.ns, 'ping', '-c', '5', '-i', '0.05', '-W', '1', n2.pods[0]!.ip);
    const mid = await fetchStatus(n1.statusSocket);
    const peer2 = mid.traffic!.peers.find((p) => p.publicIP === n2.ip)!;
    assert.ok(peer2.txPackets >= peer.txPackets + 5 && peer2.rxPackets >= peer.rxPackets + 5, 'per-peer counters follow the pings');
    // from the underlay's own address (a host without a lease): a ping to a pod of node 1, wrapped as flannel would
    const inner =
      '450000540000400040010000' +
      '0a000001' +
      formatIp4(subnets.get(n1)!.ip + 2)
        .split('.')
        .map((x) => Number(x).toString(16).padStart(2, '0'))
        .join('');
    const code = `const s = require('dgram').createSocket('udp4'); const b = Buffer.alloc(84); Buffer.from('${inner}', 'hex').copy(b); let n = 0; const go = () => s.send(b, 8285, '${n1.ip}', () => (++n < 7 ? go() : s.close())); go();`;
    await inNs(lab.underlay, process.execPath, '-e', code);
    const afterS = await until(
      'drops counted',
      async () => {
        const s = await fetchStatus(n1.statusSocket);
        return s.traffic!.packets.not_member! >= (mid.traffic!.packets.not_member ?? 0) + 7 ? s : undefined;
      },
      5000,
    );
    assert.equal(afterS.traffic!.packets.received, mid.traffic!.packets.received, 'nothing from the stranger was delivered');
  });

  test('flannel0 deleted by hand: the pump does not spin, the reconcile recreates flannel0 and pods talk again', async () => {
    const n2 = lab.node(2);
    const pid = n2.agent!.pid!;
    const cpuTicks = () => {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      return Number(f[11]) + Number(f[12]); // utime + stime, in clock ticks (of every thread)
    };
    await inNs(n2.ns, 'ip', 'link', 'del', 'flannel0');
    const t0 = cpuTicks();
    await new Promise((r) => setTimeout(r, 2000));
    const busy = (cpuTicks() - t0) / 200; // ticks are 1/100 s: share of one core over 2 s
    assert.ok(busy < 0.5, `the agent used ${Math.round(busy * 100)} % of a core while flannel0 was gone`);
    await until('flannel0 back, every pod reachable', async () => (await lab.pingAll()).length === 0 || undefined, 20_000, 500).catch(() => undefined);
    assert.deepEqual(await lab.pingAll(), []);
    const [dev] = await json<{ mtu: number; addr_info: { local: string }[] }[]>(n2.ns, 'ip', '-j', 'addr', 'show', 'flannel0');
    assert.equal(dev!.mtu, 1472);
    assert.deepEqual(
      dev!.addr_info.map((a) => a.local),
      [formatIp4(subnets.get(n2)!.ip)],
    );
    const st = await fetchStatus(n2.statusSocket);
    assert.ok(
      st.checks.every((c) => c.ok),
      JSON.stringify(st.checks),
    );
    assert.ok(n2.agent!.exitCode === null, 'the agent kept running');
  });

  test('a restarted agent reattaches to flannel0 (persistent) and pods talk again; a departed node is forgotten', async () => {
    const n1 = lab.node(1);
    await lab.stopAgent(n1);
    assert.ok((await json<unknown[]>(n1.ns, 'ip', '-j', 'link', 'show', 'flannel0')).length === 1, 'flannel0 survives the agent');
    lab.startAgent(n1);
    await lab.waitReady(n1);
    await until('all pods reachable after restart', async () => (await lab.pingAll()).length === 0 || undefined, 15_000, 500).catch(() => undefined);
    assert.deepEqual(await lab.pingAll(), []);
    const n3 = lab.node(3);
    const sn3 = subnets.get(n3)!;
    await lab.stopAgent(n3);
    await lab.etcd.ctl('del', `/coreos.com/network/subnets/${formatIp4(sn3.ip)}-${sn3.len}`);
    await until('node 3 gone from the pump', async () => !(await fetchStatus(n1.statusSocket)).traffic!.peers.some((p) => p.publicIP === n3.ip) || undefined, 10_000);
    assert.deepEqual(
      (await fetchStatus(n1.statusSocket)).traffic!.peers.map((p) => p.publicIP),
      [lab.node(2).ip],
    );
  });
});
