// The pod fast path end to end: three BPF nodes run as kube-flannel runs them (--ip-masq), pods made
// through the CNI plugin. What an operator checks: pods reach pods and the fast path carries their
// flows; a Service (DNAT to a pod on another node) works, and breaks when the conntrack check is
// disabled; a FORWARD rule still stops new connections; pods come and go under traffic without a
// stale entry; restarts and --fast-path=off keep traffic flowing.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { TestLab, type LabNode, type Pod } from '../helpers/lab.ts';
import { inNs, ip, json, until } from '../helpers/netns.ts';
import { startWhoAmI, whoAmI } from '../helpers/tcp.ts';
import { readDataPlane } from '../../control/datapath/inspect.ts';
import { BpfMap, BpfObject } from '../../control/kernel/bpf.ts';
import * as L from '../../control/datapath/layout.ts';
import { getFromSocket, fetchStatus } from '../../control/health/client.ts';
import { renderStatus } from '../../control/agent/status.ts';

const PORT = 7000;
const fast = (n: LabNode) => {
  const f = readDataPlane(n.pinRoot).fastPath;
  assert.ok(f, `${n.ns}: fast-path maps are pinned`);
  return f;
};
const count = (n: LabNode, r: L.FastResult) => fast(n).counters[r].packets;
// packets carried past the stack, by flannel.1 (tc-key mode) or straight to and from the underlay (bypass)
const tx = (n: LabNode) => count(n, 'fast_tx') + count(n, 'bypass_tx');
const rx = (n: LabNode) => count(n, 'fast_rx') + count(n, 'bypass_rx');

/** Flips the unsafe test switch in a node's pinned fl_fast_cfg (the agent writes it only at start). */
function setNoCt(n: LabNode, on: boolean): void {
  const m = BpfMap.openPinned(join(n.pinRoot, 'fl_fast_cfg'));
  try {
    const c = L.decodeFastCfg(m.lookup(L.u32Key(0))!);
    m.update(L.u32Key(0), L.fastCfgVal({ ...c, flags: on ? c.flags | L.FAST_NO_CT : c.flags & ~L.FAST_NO_CT }));
  } finally {
    m.close();
  }
}

/** Connects from a pod; resolves to the address the server saw, or to the error. */
const connect = (from: Pod, host: string, port = PORT) => whoAmI(from.ns, host, port).catch((e: Error) => `failed: ${e.message.split('\n')[0]}`);

// the default (bypass: the fast path encapsulates itself) and the tc-key mode (flannel.1 encapsulates)
for (const [mode, modeArgs, bypass] of [
  ['bypass, the default', [], 'on'],
  ['tc key on flannel.1', ['--vxlan-bypass=off'], 'off'],
] as const)
  describe(`pod fast path (${mode}), three BPF nodes with --ip-masq`, { timeout: 300_000 }, () => {
    let lab: TestLab;
    const servers: { stop: () => void }[] = [];
    const serve = async (p: Pod) => servers.push(await startWhoAmI(p.ns, PORT));
    const allPods = () => lab.nodes.flatMap((n) => n.pods.map((p) => ({ n, p })));

    before(async () => {
      lab = await TestLab.create({ nodes: 3, config: JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }), agentArgs: ['--ip-masq', ...modeArgs] });
      for (const n of lab.nodes) lab.startAgent(n);
      for (const n of lab.nodes) await lab.waitReady(n);
      for (const n of lab.nodes) for (let i = 0; i < 2; i++) await lab.addPodCni(n);
      for (const { p } of allPods()) await serve(p);
    });
    after(async () => {
      for (const s of servers) s.stop();
      await lab?.destroy();
    });

    test('fast path on where the kernel allows it: programs on flannel.1 and every pod veth, pods registered', async () => {
      for (const n of lab.nodes) {
        const st = await fetchStatus(n.statusSocket);
        assert.equal(st.backend?.fastPath, 'on', `${n.ns}: ${JSON.stringify(st.backend)}`);
        assert.equal(st.backend?.vxlanBypass, bypass, `${n.ns}: ${JSON.stringify(st.backend)}`);
        assert.match(await inNs(n.ns, 'tc', 'filter', 'show', 'dev', 'eth0', 'ingress'), bypass === 'on' ? /fl_guard_bypass/ : /fl_guard_tc/);
        assert.match(await inNs(n.ns, 'tc', 'filter', 'show', 'dev', 'flannel.1', 'ingress'), /fl_ingress_fast/);
        const f = fast(n);
        assert.ok(f.on);
        assert.deepEqual(f.localPods.map((p) => p.ip).sort(), n.pods.map((p) => p.ip).sort(), 'one entry per pod, nothing else');
        const links = await json<{ ifindex: number; ifname: string; address: string; master?: string }[]>(n.ns, 'ip', '-j', 'link', 'show');
        const cni0 = links.find((l) => l.ifname === 'cni0')!;
        const pinned = BpfObject.pinnedProgramId(join(n.pinRoot, 'fl_pod_egress'));
        for (const p of f.localPods) {
          const veth = links.find((l) => l.ifindex === p.ifindex);
          assert.ok(veth && veth.master === 'cni0', `${p.ip}: ifindex ${p.ifindex} is a veth on cni0`);
          assert.equal(p.hostMAC, veth.address);
          assert.equal(p.gwMAC, cni0.address, 'frames are delivered from the gateway MAC');
          const pod = n.pods.find((x) => x.ip === p.ip)!;
          const [eth0] = await json<{ address: string }[]>(pod.ns, 'ip', '-j', 'link', 'show', 'eth0');
          assert.equal(p.podMAC, eth0!.address);
          assert.match(await inNs(n.ns, 'tc', 'filter', 'show', 'dev', veth.ifname, 'ingress'), new RegExp(`fl_pod_egress:\\[${pinned}\\]`));
        }
      }
    });

    test('every pod reaches every pod on the other nodes over TCP, as itself, and the fast path carries it', async () => {
      const before = lab.nodes.map((n) => [tx(n), rx(n)]);
      const pairs = allPods().flatMap((a) =>
        allPods()
          .filter((b) => b.n !== a.n)
          .map((b) => ({ a, b })),
      );
      for (const { a, b } of pairs) assert.equal(await connect(a.p, b.p.ip), a.p.ip, `${a.p.ns} -> ${b.p.ns}`);
      assert.deepEqual(await lab.pingAll(), [], 'ICMP takes the stack and works too');
      lab.nodes.forEach((n, i) => {
        // 8 connections out and 8 in per node; each carries at least its data and FIN packets past the stack
        assert.ok(tx(n) - before[i]![0]! >= 8, `${n.ns} fast_tx grew: ${tx(n) - before[i]![0]!}`);
        assert.ok(rx(n) - before[i]![1]! >= 8, `${n.ns} fast_rx grew: ${rx(n) - before[i]![1]!}`);
      });
    });

    test('a Service IP DNATed by iptables to a pod on another node works; with the conntrack check disabled it breaks', async () => {
      const [n1, n2] = [lab.node(1), lab.node(2)];
      const [client, backend] = [n1.pods[0]!, n2.pods[0]!];
      // kube-proxy's shape: nat PREROUTING on the client's node sends the Service IP to a backend pod
      await inNs(n1.ns, 'iptables', '-t', 'nat', '-A', 'PREROUTING', '-d', '10.96.0.10/32', '-p', 'tcp', '--dport', '80', '-j', 'DNAT', '--to-destination', `${backend.ip}:${PORT}`);
      const nat0 = count(n1, 'pass_nat');
      for (let i = 0; i < 5; i++) assert.equal(await connect(client, '10.96.0.10', 80), client.ip, 'request and reply through the Service IP');
      assert.ok(count(n1, 'pass_nat') - nat0 >= 5, 'replies of the NATed flow were left to the stack for reverse NAT');

      setNoCt(n1, true);
      try {
        const r = await connect(client, '10.96.0.10', 80);
        assert.notEqual(r, client.ip, 'without the check the reply skips reverse NAT and the client cannot use it');
        assert.match(r, /^failed/);
        assert.equal(await connect(client, backend.ip), client.ip, 'pod to pod without NAT is unaffected');
      } finally {
        setNoCt(n1, false);
      }
      assert.equal(await connect(client, '10.96.0.10', 80), client.ip, 'check back on: the Service works again');
    });

    test("an operator's FORWARD rule still stops new connections with the fast path on", async () => {
      const [n1, n3] = [lab.node(1), lab.node(3)];
      const [a, b] = [n1.pods[1]!, n3.pods[1]!];
      assert.equal(await connect(a, b.ip), a.ip);
      const rule = ['FORWARD', '-s', a.ip, '-d', b.ip, '-p', 'tcp', '--dport', String(PORT), '-j', 'REJECT', '--reject-with', 'tcp-reset'];
      await inNs(n1.ns, 'iptables', '-I', ...rule);
      try {
        assert.match(await connect(a, b.ip), /^failed/, 'the SYN goes through FORWARD and is rejected');
        assert.equal(await connect(n1.pods[0]!, b.ip), n1.pods[0]!.ip, 'other pods are not affected');
      } finally {
        await inNs(n1.ns, 'iptables', '-D', ...rule);
      }
      assert.equal(await connect(a, b.ip), a.ip);
    });

    test('pods added and removed while traffic flows: traffic unharmed, the registry equals the pods, no stale entry', async () => {
      const [n1, n2, n3] = [lab.node(1), lab.node(2), lab.node(3)];
      const [src, dst] = [n1.pods[0]!, n2.pods[0]!];
      const server = spawn('ip', ['netns', 'exec', dst.ns, 'iperf3', '-s', '-1'], { stdio: 'ignore' });
      try {
        await new Promise((r) => setTimeout(r, 300));
        const tx0 = tx(n1);
        const flow = inNs(src.ns, 'iperf3', '-c', dst.ip, '-t', '6', '-J');
        const removed: string[] = [];
        for (const n of [n2, n3]) {
          const added = [await lab.addPodCni(n), await lab.addPodCni(n)];
          await serve(added[0]!);
          assert.equal(await connect(src, added[0]!.ip), src.ip, 'a new pod is reachable at once');
          removed.push(added[1]!.ip);
          await lab.delPodCni(n, added[1]!);
        }
        const r = JSON.parse(await flow) as { error?: string; end: { sum_received: { bits_per_second: number } } };
        assert.equal(r.error, undefined);
        assert.ok(r.end.sum_received.bits_per_second > 1e8, `iperf3 across the churn: ${r.end.sum_received.bits_per_second / 1e9} Gbit/s`);
        assert.ok(tx(n1) - tx0 > 10_000, 'the flow took the fast path');
        for (const n of lab.nodes) {
          const ips = fast(n)
            .localPods.map((p) => p.ip)
            .sort();
          assert.deepEqual(ips, n.pods.map((p) => p.ip).sort(), `${n.ns}: registry = pods`);
          for (const ip of removed) assert.ok(!ips.includes(ip), `${ip} left the registry on DEL`);
        }
      } finally {
        server.kill();
      }
    });

    test('a pod that vanishes without DEL leaves the registry at the next reconcile', async () => {
      const n3 = lab.node(3);
      const p = await lab.addPodCni(n3);
      assert.ok(fast(n3).localPods.some((x) => x.ip === p.ip));
      await ip('netns', 'del', p.ns); // the veth pair goes with the namespace
      const t0 = Date.now();
      await until('stale entry dropped', () => !fast(n3).localPods.some((x) => x.ip === p.ip) || undefined, 10_000, 50);
      console.log(`stale entry dropped ${((Date.now() - t0) / 1000).toFixed(2)} s after the pod's namespace went`);
      // the runtime's late DEL, with the namespace gone, still succeeds
      await lab.delPodCni(n3, p);
    });

    test('restart: the new agent takes over every pod veth; --fast-path=off detaches everything and traffic goes on', async () => {
      const [n1, n2] = [lab.node(1), lab.node(2)];
      const [a, b] = [n1.pods[0]!, n2.pods[0]!];
      const oldProg = BpfObject.pinnedProgramId(join(n2.pinRoot, 'fl_pod_egress'));
      await lab.stopAgent(n2);
      assert.equal(await connect(a, b.ip), a.ip, 'agent down: the data plane keeps working');
      lab.startAgent(n2);
      await lab.waitReady(n2);
      const newProg = BpfObject.pinnedProgramId(join(n2.pinRoot, 'fl_pod_egress'));
      assert.ok(newProg && newProg !== oldProg, 'a new program is pinned');
      const veths = async () => (await json<{ ifindex: number; ifname: string; master?: string }[]>(n2.ns, 'ip', '-j', 'link', 'show')).filter((l) => l.master === 'cni0');
      await until(
        'new program on every pod veth',
        async () => {
          for (const v of await veths()) if (!(await inNs(n2.ns, 'tc', 'filter', 'show', 'dev', v.ifname, 'ingress')).includes(`[${newProg}]`)) return undefined;
          return true;
        },
        10_000,
        100,
      );
      const rx0 = rx(n2);
      assert.equal(await connect(a, b.ip), a.ip);
      assert.ok(rx(n2) > rx0, 'fast path after restart');

      await lab.stopAgent(n2);
      lab.startAgent(n2, ['--fast-path=off']);
      await lab.waitReady(n2);
      await until(
        'programs off every pod veth',
        async () => {
          for (const v of await veths()) if ((await inNs(n2.ns, 'tc', 'filter', 'show', 'dev', v.ifname, 'ingress')).includes('fl_pod_egress')) return undefined;
          return true;
        },
        10_000,
        100,
      );
      const st = await fetchStatus(n2.statusSocket);
      assert.equal(st.backend?.fastPath, 'off');
      assert.equal(st.backend?.fastPathOffBecause, 'disabled with --fast-path=off');
      const text = renderStatus(st);
      assert.match(text, /^fast path: off \(disabled with --fast-path=off\)$/m);
      assert.match(text, /^packets: {3}forwarded=\d+/m, 'BPF mode counts its packets also with the fast path off');
      assert.doesNotMatch(text, /does not count/);
      assert.ok(!existsSync(join(n2.pinRoot, 'fl_pod_egress')), 'no program pin: the CNI plugin attaches nothing');
      const ingress = await inNs(n2.ns, 'tc', 'filter', 'show', 'dev', 'flannel.1', 'ingress');
      assert.match(ingress, /fl_vxlan_ingres/, 'the plain ingress program on flannel.1');
      assert.doesNotMatch(ingress, /fl_ingress_fast/);
      const off = [tx(n2), rx(n2)];
      const late = await lab.addPodCni(n2);
      await serve(late);
      for (const p of n2.pods) assert.equal(await connect(a, p.ip), a.ip, `${p.ns} reachable with the fast path off`);
      assert.deepEqual([tx(n2), rx(n2)], off, 'nothing took the fast path on the node with it off');
      assert.ok(
        fast(n2).localPods.some((p) => p.ip === late.ip),
        'a pod added while off is registered for later',
      );

      await lab.stopAgent(n2);
      lab.startAgent(n2);
      await lab.waitReady(n2);
      await until(
        'fast path back on every veth, the late pod included',
        async () => {
          const vs = await veths();
          for (const v of vs) if (!(await inNs(n2.ns, 'tc', 'filter', 'show', 'dev', v.ifname, 'ingress')).includes('fl_pod_egress')) return undefined;
          return vs.length === n2.pods.length || undefined;
        },
        10_000,
        100,
      );
      const rx1 = rx(n2);
      assert.equal(await connect(a, late.ip), a.ip);
      assert.ok(rx(n2) > rx1);
    });

    test('status and /metrics count fast-path hits and fallbacks', async () => {
      const n1 = lab.node(1);
      const st = await fetchStatus(n1.statusSocket);
      assert.ok((st.traffic?.fastPath?.fast_tx ?? 0) + (st.traffic?.fastPath?.bypass_tx ?? 0) > 0);
      const metrics = (await getFromSocket(n1.statusSocket, '/metrics')).body;
      for (const r of L.FAST_RESULTS) assert.match(metrics, new RegExp(`^flannel_fastpath_packets_total\\{result="${r}"\\} \\d+`, 'm'));
      const metric = (r: L.FastResult) => Number(new RegExp(`^flannel_fastpath_packets_total\\{result="${r}"\\} (\\d+)`, 'm').exec(metrics)![1]);
      const sent = metric('fast_tx') + metric('bypass_tx');
      assert.ok(sent > 10_000, `fast_tx + bypass_tx ${sent}`);
      assert.equal(metric('bypass_tx') > 0, bypass === 'on', 'bypass counted only where it runs');
      assert.ok(Number(/^flannel_fastpath_packets_total\{result="pass_nat"\} (\d+)/m.exec(metrics)![1]) >= 5);
    });
  });
