// What an operator runs and watches, on a three-node BPF lab with --ip-masq: /healthz and /readyz,
// /metrics, `flannelctl status`, and flannel's masquerading (pods reach the outside as their node,
// pod-to-pod keeps pod addresses, a restart rewrites no rule).
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { TestLab, ROOT, UNDERLAY_GW, type LabNode } from '../helpers/lab.ts';
import { inNs, until } from '../helpers/netns.ts';
import { startWhoAmI, whoAmI } from '../helpers/tcp.ts';
import { getFromSocket } from '../../control/health/client.ts';
import { formatCidr, type Subnet } from '../../control/subnet/ip4.ts';
import type { AgentStatus } from '../../control/agent/status.ts';

const FLANNELCTL = join(ROOT, 'dist', 'control', 'cli', 'flannelctl.js');
const CONFIG = JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } });
const HEALTHZ_PORT = 8471;

/** One sample of a metric from the Prometheus text, matched by name and label subset. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1]!, x[2]!] as const));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

const ctl = (n: LabNode, ...args: string[]) => spawnSync(process.execPath, [FLANNELCTL, ...args, `--socket=${n.statusSocket}`], { encoding: 'utf8' });

describe('operations: health, metrics, status and ip-masq on three BPF nodes', { timeout: 300_000 }, () => {
  let lab: TestLab;
  let subnets: Map<LabNode, Subnet>;
  const stops: (() => void)[] = [];
  after(async () => {
    for (const s of stops) s();
    await lab?.destroy();
  });

  test('/healthz answers while the agent waits for its config; /readyz is 503 until the node is programmed, then 200', async () => {
    lab = await TestLab.create({ nodes: 3, config: CONFIG, agentArgs: ['--ip-masq', `--healthz-port=${HEALTHZ_PORT}`] });
    await lab.etcd.ctl('del', '/coreos.com/network/config');
    const n1 = lab.node(1);
    lab.startAgent(n1);
    await until('status socket', async () => (await getFromSocket(n1.statusSocket, '/healthz')).code === 200 || undefined, 15_000);
    // flannel's TCP endpoint too, inside the node's namespace
    const tcp = await inNs(n1.ns, process.execPath, '-e', `fetch('http://127.0.0.1:${HEALTHZ_PORT}/healthz').then(async (r) => console.log(r.status, (await r.text()).trim()))`);
    assert.equal(tcp.trim(), '200 ok');
    await new Promise((r) => setTimeout(r, 1000));
    const notReady = await getFromSocket(n1.statusSocket, '/readyz');
    assert.equal(notReady.code, 503);
    assert.match(notReady.body, /not ready/);
    await lab.etcd.ctl('put', '/coreos.com/network/config', CONFIG);
    for (const n of lab.nodes.slice(1)) lab.startAgent(n);
    subnets = new Map();
    for (const n of lab.nodes) {
      const { subnet, mtu, env } = await lab.waitReady(n);
      assert.equal(env.FLANNEL_IPMASQ, 'true');
      subnets.set(n, subnet);
      await lab.addPod(n, subnet, mtu);
    }
    await until('readyz 200', async () => (await getFromSocket(n1.statusSocket, '/readyz')).code === 200 || undefined, 15_000);
  });

  test('/metrics: lease, backend, watch and reconcile figures; per-peer counters grow when pods talk', async () => {
    const [n1, n2] = [lab.node(1), lab.node(2)];
    await until('all pods reachable', async () => (await lab.pingAll()).length === 0 || undefined, 15_000, 500).catch(() => undefined);
    const peer = { subnet: formatCidr(subnets.get(n2)!), public_ip: n2.ip };
    const before = (await getFromSocket(n1.statusSocket, '/metrics')).body;
    assert.equal(sample(before, 'flannel_ready'), 1);
    assert.equal(sample(before, 'flannel_lease_info', { subnet: formatCidr(subnets.get(n1)!), public_ip: n1.ip }), 1);
    const expiry = sample(before, 'flannel_lease_expiry_seconds')!;
    assert.ok(expiry > 86_000 && expiry <= 86_400, `expiry ${expiry}`);
    assert.equal(sample(before, 'flannel_peers'), 2);
    assert.equal(sample(before, 'flannel_backend_info', { backend: 'vxlan', mode: 'bpf', fallback_reason: '' }), 1);
    assert.equal(sample(before, 'flannel_etcd_watch_reconnects_total'), 0);
    assert.ok(sample(before, 'flannel_reconcile_runs_total')! >= 1);
    assert.ok(sample(before, 'flannel_datapath_check', { check: 'tc egress flannel.1' }) === 1);
    assert.ok(sample(before, 'process_resident_memory_bytes')! > 0);
    const tx0 = sample(before, 'flannel_peer_packets_total', { ...peer, direction: 'tx' }) ?? 0;
    const rx0 = sample(before, 'flannel_peer_packets_total', { ...peer, direction: 'rx' }) ?? 0;
    await inNs(n1.pods[0]!.ns, 'ping', '-c', '10', '-i', '0.05', '-W', '1', n2.pods[0]!.ip);
    const after = (await getFromSocket(n1.statusSocket, '/metrics')).body;
    assert.ok(sample(after, 'flannel_peer_packets_total', { ...peer, direction: 'tx' })! >= tx0 + 10, 'tx packets grew by the pings');
    assert.ok(sample(after, 'flannel_peer_packets_total', { ...peer, direction: 'rx' })! >= rx0 + 10, 'rx packets grew by the replies');
    assert.ok(sample(after, 'flannel_peer_bytes_total', { ...peer, direction: 'tx' })! > 0);
    assert.ok(sample(after, 'flannel_datapath_packets_total', { verdict: 'forwarded' })! >= 10);
  });

  test('flannelctl status: lease, backend, peers with counters and checks, as a table and as JSON', () => {
    const n1 = lab.node(1);
    const t = ctl(n1, 'status');
    assert.equal(t.status, 0, t.stderr);
    assert.match(t.stdout, /^ready: +yes/m);
    assert.match(t.stdout, new RegExp(`lease: +${formatCidr(subnets.get(n1)!).replaceAll('.', '\\.')}, expires in 2[34]h`));
    assert.match(t.stdout, /backend: +vxlan \(bpf\) on flannel\.1, underlay guard: tc ingress on eth0/);
    for (const n of [lab.node(2), lab.node(3)]) assert.match(t.stdout, new RegExp(`${formatCidr(subnets.get(n)!).replaceAll('.', '\\.')} +${n.ip.replaceAll('.', '\\.')} +[1-9]`));
    assert.match(t.stdout, /ok +tc egress flannel\.1: program \d+/);
    assert.match(t.stdout, /ok +map fl_subnets: pinned at /);
    const j = JSON.parse(ctl(n1, 'status', '--json').stdout) as AgentStatus;
    assert.equal(j.lease!.subnet, formatCidr(subnets.get(n1)!));
    assert.equal(j.peers.length, 2);
    assert.ok(j.checks.length >= 9 && j.checks.every((c: { ok: boolean }) => c.ok));
    const none = spawnSync(process.execPath, [FLANNELCTL, 'status', '--socket=/nonexistent/flanneld.sock'], { encoding: 'utf8' });
    assert.equal(none.status, 1);
    assert.match(none.stderr, /no agent listening on \/nonexistent\/flanneld\.sock/);
  });

  test('a node forced to classic says why in status and metrics', async () => {
    const n3 = lab.node(3);
    await lab.stopAgent(n3);
    lab.startAgent(n3, ['--no-bpf']);
    await lab.waitReady(n3);
    await until('n3 ready', () => ctl(n3, 'status').status === 0 || undefined, 15_000);
    assert.match(ctl(n3, 'status').stdout, /backend: +vxlan \(classic\) on flannel\.1, classic because: disabled with --no-bpf/);
    const m = (await getFromSocket(n3.statusSocket, '/metrics')).body;
    assert.equal(sample(m, 'flannel_backend_info', { backend: 'vxlan', mode: 'classic', fallback_reason: 'disabled with --no-bpf' }), 1);
  });

  test("ip-masq: a pod reaches the outside as its node; pod-to-pod keeps the pod address; flannel's chains are in place", async () => {
    const [n1, n2] = [lab.node(1), lab.node(2)];
    stops.push((await startWhoAmI(lab.underlay, 7777)).stop);
    stops.push((await startWhoAmI(n2.pods[0]!.ns, 7778)).stop);
    assert.equal(await whoAmI(n1.pods[0]!.ns, UNDERLAY_GW, 7777), n1.ip, 'outside sees the node address');
    assert.equal(await whoAmI(n1.pods[0]!.ns, n2.pods[0]!.ip, 7778), n1.pods[0]!.ip, 'the other pod sees the pod address');
    const nat = await inNs(n1.ns, 'iptables-save', '-t', 'nat');
    assert.match(nat, /-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG/);
    assert.match(nat, /-A FLANNEL-POSTRTG -s 10\.244\.0\.0\/16 ! -d 224\.0\.0\.0\/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully/);
  });

  test('an agent restart rewrites no rule (counters kept); a rule deleted by hand is restored within the resync period', async () => {
    const n1 = lab.node(1);
    const counters = async () => (await inNs(n1.ns, 'iptables-save', '-c', '-t', 'nat')).split('\n').filter((l) => l.includes('FLANNEL-POSTRTG') && l.includes('MASQUERADE'));
    const before = await counters();
    assert.match(before[0]!, /^\[[1-9]\d*:\d+\]/, 'the MASQUERADE rule has counted the connection to the outside');
    await lab.stopAgent(n1);
    lab.startAgent(n1);
    await lab.waitReady(n1);
    assert.deepEqual(await counters(), before);
    await inNs(n1.ns, 'iptables', '-t', 'nat', '-D', 'POSTROUTING', '-m', 'comment', '--comment', 'flanneld masq', '-j', 'FLANNEL-POSTRTG');
    const t0 = Date.now();
    await until('jump restored', async () => /-j FLANNEL-POSTRTG/.test(await inNs(n1.ns, 'iptables-save', '-t', 'nat')) || undefined, 10_000);
    assert.ok(Date.now() - t0 < 7000, 'restored within the 5 s resync');
    assert.equal(await whoAmI(n1.pods[0]!.ns, UNDERLAY_GW, 7777), n1.ip);
  });
});
