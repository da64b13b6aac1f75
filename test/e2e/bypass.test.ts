// vxlan bypass end to end: two nodes encapsulate and decapsulate in BPF (flannel.1 skipped), a third runs
// classic flannel.1. What an operator checks: traffic flows both ways between every pair, and the
// bypass programs carry it (also to and from the classic node, whose kernel builds and reads our
// packets); VXLAN from a stranger is still dropped; kill -9 of the agents loses no ping; each step of
// the fallback chain (bypass -> tc key on flannel.1 -> classic) says why in status.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TestLab, packetsByVerdict, type LabNode, type Pod } from '../helpers/lab.ts';
import { inNs, until } from '../helpers/netns.ts';
import { readDataPlane } from '../../control/datapath/inspect.ts';
import type { FastResult } from '../../control/datapath/layout.ts';
import { fetchStatus } from '../../control/health/client.ts';
import { renderStatus } from '../../control/agent/status.ts';
import { formatIp4 } from '../../control/subnet/ip4.ts';

const SEND = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'send-vxlan.ts');
const BYPASS = ['--fast-path=on', '--vxlan-bypass=on'];

const fast = (n: LabNode, r: FastResult) => readDataPlane(n.pinRoot).fastPath!.counters[r].packets;

/** One second of TCP from pod a to pod b through iperf3; the bytes the receiver got. */
async function tcp(a: Pod, b: Pod, seconds = 1): Promise<number> {
  const srv = spawn('ip', ['netns', 'exec', b.ns, 'iperf3', '-s', '-1'], { stdio: 'ignore' });
  try {
    for (let i = 0; i < 50; i++) {
      try {
        const r = JSON.parse(await inNs(a.ns, 'iperf3', '-c', b.ip, '-J', '-t', String(seconds))) as { end?: { sum_received?: { bytes: number } }; error?: string };
        if (r.end?.sum_received) return r.end.sum_received.bytes;
        throw new Error(`iperf3 ${a.ns} -> ${b.ns} (${b.ip}): ${r.error ?? JSON.stringify(r).slice(0, 300)}`);
      } catch (e) {
        if (!/Connection refused/.test(String(e))) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    throw new Error(`iperf3 server in ${b.ns} never listened`);
  } finally {
    srv.kill('SIGKILL');
  }
}

describe('vxlan bypass: two bypass nodes and a classic one', { timeout: 300_000 }, () => {
  let lab: TestLab;
  let n1: LabNode, n2: LabNode, n3: LabNode;
  before(async () => {
    lab = await TestLab.create({ nodes: 3, config: JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }), agentArgs: ['--ip-masq'] });
    [n1, n2, n3] = lab.nodes as [LabNode, LabNode, LabNode];
    lab.startAgent(n1, BYPASS);
    lab.startAgent(n2, BYPASS);
    lab.startAgent(n3, ['--no-bpf']);
    for (const n of lab.nodes) await lab.waitReady(n);
    for (const n of lab.nodes) await lab.addPodCni(n);
  });
  after(async () => lab?.destroy());

  test('bypass on where asked, with its program on the underlay; the classic node is classic', async () => {
    for (const n of [n1, n2]) {
      const st = await fetchStatus(n.statusSocket);
      assert.equal(st.backend?.vxlanBypass, 'on', JSON.stringify(st.backend));
      assert.match(renderStatus(st), /bypass: +on/);
      assert.match(await inNs(n.ns, 'tc', 'filter', 'show', 'dev', 'eth0', 'ingress'), /fl_guard_bypass/, 'the guard that also decapsulates');
    }
    assert.equal((await fetchStatus(n3.statusSocket)).backend?.mode, 'classic');
  });

  test('TCP both ways between every pair of nodes; bypass carries it, to and from the classic node too', async () => {
    await until('all pods reachable', async () => (await lab.pingAll()).length === 0 || undefined, 20_000, 500).catch(() => undefined);
    assert.deepEqual(await lab.pingAll(), []);
    for (const [a, b] of [
      [n1, n2],
      [n2, n1],
      [n1, n3],
      [n3, n1],
    ] as const) {
      const tx = [fast(n1, 'bypass_tx'), fast(n2, 'bypass_tx')];
      const rx = [fast(n1, 'bypass_rx'), fast(n2, 'bypass_rx')];
      const bytes = await tcp(a.pods[0]!, b.pods[0]!);
      assert.ok(bytes > 1e6, `${a.ns} -> ${b.ns}: ${bytes} bytes`);
      // the sender's data leaves by bypass; the receiver's ACKs (single packets) come back by bypass
      if (a !== n3) assert.ok(fast(a, 'bypass_tx') - tx[a === n1 ? 0 : 1]! > 100, `${a.ns} sent by bypass`);
      if (a !== n3) assert.ok(fast(a, 'bypass_rx') - rx[a === n1 ? 0 : 1]! > 10, `${a.ns} received ${b === n3 ? "the classic node's ACKs" : 'ACKs'} by bypass`);
      if (a === n3) assert.ok(fast(n1, 'bypass_tx') - tx[0]! > 10, `${n1.ns} sent its ACKs to the classic node by bypass`);
    }
  });

  test("VXLAN from a stranger is dropped by the bypass guard; a member's passes", async () => {
    const mac1 = (await lab.leases()).get(`${formatIp4((await lab.waitReady(n1)).subnet.ip)}-24`)!.BackendData!.VtepMAC;
    const attacker = await lab.addStranger();
    const send = (ns: string, count: number, src: string) => inNs(ns, process.execPath, '--import', 'tsx', SEND, n1.ip, '8472', '1', String(count), mac1, src, n1.pods[0]!.ip);
    const s0 = packetsByVerdict(n1);
    await send(attacker, 50, '10.244.99.9');
    await until('spoofed counted', () => packetsByVerdict(n1).spoofed - s0.spoofed === 50 || undefined, 5000);
    const s1 = packetsByVerdict(n1);
    await send(n2.ns, 20, n2.pods[0]!.ip);
    await until('member passes', () => packetsByVerdict(n1).guard_passed - s1.guard_passed >= 20 || undefined, 5000);
    assert.equal(packetsByVerdict(n1).spoofed, s1.spoofed);
  });

  test('kill -9 of both bypass agents under a ping and a TCP stream: no ping lost, the stream goes on', async () => {
    const [a, b] = [n1.pods[0]!, n2.pods[0]!];
    const ping = inNs(a.ns, 'ping', '-c', '150', '-i', '0.04', '-W', '1', b.ip);
    const stream = tcp(a, b, 6);
    await new Promise((r) => setTimeout(r, 1500));
    const before = fast(n1, 'bypass_tx');
    for (const n of [n1, n2]) {
      await lab.stopAgent(n, 'SIGKILL');
      lab.startAgent(n, BYPASS);
    }
    for (const n of [n1, n2]) await lab.waitReady(n);
    const out = await ping;
    assert.match(out, / 0% packet loss/, out.split('\n').slice(-3).join('\n'));
    assert.ok((await stream) > 1e6);
    assert.ok(fast(n1, 'bypass_tx') > before, 'bypass carried the stream across the restart');
    assert.equal((await inNs(n1.ns, 'tc', 'filter', 'show', 'dev', 'eth0', 'ingress')).split('\n').filter((l) => l.includes('fl_guard_bypass')).length, 1, 'replaced, not stacked');
  });

  test('fallback chain: --vxlan-bypass=on without the fast path refuses to start; auto falls back to the tc key with the reason in status', async () => {
    await lab.stopAgent(n2);
    lab.startAgent(n2, ['--fast-path=off', '--vxlan-bypass=on']);
    await assert.rejects(lab.waitReady(n2, 10_000), /agent exited/);
    assert.match(lab.logs(n2), /--vxlan-bypass=on: it is part of the pod fast path, which is off/);
    lab.startAgent(n2, ['--fast-path=off', '--vxlan-bypass=auto']);
    await lab.waitReady(n2);
    const st = await fetchStatus(n2.statusSocket);
    assert.equal(st.backend?.mode, 'bpf');
    assert.equal(st.backend?.vxlanBypass, 'off');
    assert.match(String(st.backend?.vxlanBypassOffBecause), /pod fast path, which is off: disabled with --fast-path=off/);
    assert.match(renderStatus(st), /bypass: +off \(it is part of the pod fast path/);
    assert.match(await inNs(n2.ns, 'tc', 'filter', 'show', 'dev', 'eth0', 'ingress'), /fl_guard_tc/, 'the plain guard is back on the underlay');
    assert.doesNotMatch(await inNs(n2.ns, 'tc', 'filter', 'show', 'dev', 'eth0', 'ingress'), /fl_guard_bypass/);
    await until('mixed cluster converges', async () => (await lab.pingAll()).length === 0 || undefined, 20_000, 500).catch(() => undefined);
    assert.deepEqual(await lab.pingAll(), []);
    assert.ok((await tcp(n1.pods[0]!, n2.pods[0]!)) > 1e6, 'bypass node -> tc-key node');
    assert.ok((await tcp(n2.pods[0]!, n1.pods[0]!)) > 1e6, 'tc-key node -> bypass node');
  });
});
