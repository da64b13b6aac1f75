// `flannelctl lab up|down`: the three-node lab as a user runs it. Each step says what it does; a
// failing step says which and why, and everything built so far is removed.
import { fetchStatus } from '../health/client.js';
import { renderStatus } from '../agent/status.js';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Lab, type LabNode, type Underlay } from './cluster.js';
import { inNs, until } from './netns.js';
import { readDataPlane } from '../datapath/inspect.js';
import * as L from '../datapath/layout.js';
import { MAP } from '../datapath/objects.js';
import { leaseName } from '../subnet/lease-key.js';
import { table as textTable } from '../text.js';

export interface LabUpOptions {
  backend: 'vxlan' | 'vxlan-classic' | 'host-gw' | 'udp';
  nodes: number;
  pods: number;
  name: string;
  stateDir: string;
  measure: boolean;
  underlay: Underlay;
  /** IPv6 in the network config (default off) */
  ipv6?: 'off' | 'dual' | 'only';
}

/** The lab's network config: flannel's usual IPv4 network, and an IPv6 one beside it or instead. */
export function labConfig(backend: string, ipv6: 'off' | 'dual' | 'only' = 'off'): string {
  const v6 = { EnableIPv6: true, IPv6Network: 'fd00:10:244::/56' };
  if (ipv6 === 'only') return JSON.stringify({ EnableIPv4: false, ...v6, Backend: { Type: backend } });
  return JSON.stringify({ Network: '10.244.0.0/16', ...(ipv6 === 'dual' ? v6 : {}), Backend: { Type: backend } });
}

type Out = (s: string) => void;

const table = (rows: string[][]) => textTable(rows, '  ');

function modeOf(lab: Lab, n: LabNode): string {
  const ready = lab
    .logs(n)
    .split('\n')
    .reverse()
    .find((l) => l.includes('"msg":"ready"'));
  if (!ready) return '?';
  const r = JSON.parse(ready) as { backend: string; mode?: string; fallbackReason?: string };
  return r.mode ? `${r.backend} ${r.mode}${r.fallbackReason ? ` (fallback: ${r.fallbackReason})` : ''}` : r.backend;
}

export async function labUp(o: LabUpOptions, out: Out): Promise<number> {
  let step = '';
  const begin = (s: string) => {
    step = s;
    out(`==> ${s}`);
  };
  let lab: Lab | undefined;
  try {
    begin('removing what an earlier lab left behind');
    const removed = await Lab.down(o.stateDir, o.name);
    out(removed.length ? `    removed: ${removed.join(', ')}` : '    nothing to remove');

    begin(
      `starting etcd and ${o.nodes} node namespaces on an underlay bridge (${o.underlay === 'nic' ? 'NIC-like links: segmented before the wire, GRO on receive' : 'veth links: GSO super-packets cross intact'})`,
    );
    const backend = o.backend === 'vxlan-classic' ? 'vxlan' : o.backend;
    const config = labConfig(backend, o.ipv6);
    lab = await Lab.create({
      nodes: o.nodes,
      config,
      name: o.name,
      stateDir: o.stateDir,
      detached: true,
      underlay: o.underlay,
      ipv6: (o.ipv6 ?? 'off') !== 'off',
      agentArgs: ['--ip-masq', ...(o.backend === 'vxlan-classic' ? ['--no-bpf'] : [])],
    });
    out(`    etcd at ${lab.etcd.endpoint} (namespace ${lab.underlay}), config ${config}`);

    begin('starting flanneld on every node');
    for (const n of lab.nodes) lab.startAgent(n);
    const subnets = new Map<LabNode, string>();
    for (const n of lab.nodes) subnets.set(n, leaseName(await lab.waitReady(n)));
    for (const n of lab.nodes) out(`    ${n.ns}: subnet ${subnets.get(n)}, ${modeOf(lab, n)}`);

    begin(`creating ${o.pods} pods per node through the flannel CNI plugin (CNI ADD)`);
    for (const n of lab.nodes) for (let i = 0; i < o.pods; i++) await lab.addPodCni(n);

    begin('checking that every pod reaches every pod on the other nodes');
    const families = o.ipv6 === 'dual' ? 2 : 1;
    const pairs = lab.nodes.reduce((s, n) => s + n.pods.length * (lab!.nodes.length - 1) * o.pods * families, 0);
    await until('connectivity', async () => (await lab!.pingAll()).length === 0 || undefined, 15_000, 500).catch(() => undefined);
    const failed = await lab.pingAll();
    out(`    ${pairs - failed.length}/${pairs} pod pairs answered`);
    if (failed.length) throw new Error(`unreachable: ${failed.join(', ')}`);

    out('\nnodes and pods:');
    const rows = [['NODE', 'UNDERLAY IP', 'SUBNET', 'DATA PLANE', 'PODS']];
    for (const n of lab.nodes)
      rows.push([n.ns, [n.ip, n.ip6].filter(Boolean).join(' '), subnets.get(n)!, modeOf(lab, n), n.pods.map((p) => [...new Set([p.ip, p.ip6].filter(Boolean))].join(' ')).join(' ')]);
    out(table(rows));
    out('\nleases in etcd:');
    out(table([['KEY', 'VALUE'], ...[...(await lab.leases())].map(([k, v]) => [`${'/coreos.com/network/subnets/'}${k}`, JSON.stringify(v)])]));
    const bpfNodes = lab.nodes.filter((n) => existsSync(join(n.pinRoot, MAP.subnets)));
    if (bpfNodes.length) {
      out('\nBPF map entries (fl_subnets: pod subnet -> VTEP MAC -> host):');
      const mrows = [['NODE', 'SUBNET', 'VTEP MAC', 'HOST IP', 'TX PKTS', 'RX PKTS']];
      for (const n of bpfNodes) for (const p of readDataPlane(n.pinRoot).peers) mrows.push([n.ns, p.subnet, p.vtepMAC, p.hostIP ?? '-', String(p.txPackets), String(p.rxPackets)]);
      out(table(mrows));
    }

    out(`\nstatus of ${lab.node(1).ns} (flannelctl status):`);
    out(
      renderStatus(await fetchStatus(lab.node(1).statusSocket))
        .trimEnd()
        .replace(/^/gm, '    '),
    );

    if (o.measure && lab.nodes.length > 1) {
      begin('measuring pod to pod across nodes (iperf3 2 s, 20 pings)');
      const [a, b] = [lab.node(1).pods[0]!, lab.node(2).pods[0]!];
      const server = spawn('ip', ['netns', 'exec', b.ns, 'iperf3', '-s'], { stdio: 'ignore' });
      await new Promise((r) => setTimeout(r, 300));
      try {
        for (const [from, to] of [[a.ip, b.ip], ...(b.ip6 && b.ip6 !== b.ip ? [[a.ip6!, b.ip6]] : [])] as [string, string][]) {
          const r = JSON.parse(await inNs(a.ns, 'iperf3', '-c', to, '-t', '2', '-J')) as { end: { sum_received: { bits_per_second: number } } };
          const ping = await inNs(a.ns, 'ping', '-q', '-c', '20', '-i', '0.05', to);
          const rtt = /= ([\d.]+)\/([\d.]+)\/([\d.]+)/.exec(ping);
          out(`    ${from} -> ${to}: ${(r.end.sum_received.bits_per_second / 1e9).toFixed(2)} Gbit/s TCP (one stream), ping RTT min/avg/max ${rtt?.slice(1, 4).join('/')} ms`);
        }
        const fast = existsSync(join(lab.node(1).pinRoot, MAP.fastStats)) ? readDataPlane(lab.node(1).pinRoot).fastPath : null;
        if (fast?.on) out(`    pod fast path on ${lab.node(1).ns}: ${L.FAST_RESULTS.map((k) => `${k}=${fast.counters[k].packets}`).join('  ')} (pings take the stack: pass_other)`);
      } finally {
        server.kill();
      }
    }

    const n1 = lab.node(1);
    out(`
the lab is up. Try:
  ip netns exec ${n1.pods[0]!.ns} ping ${lab.nodes.at(-1)!.pods[0]!.ip}
  node ${join('dist', 'control', 'cli', 'flannelctl.js')} status --socket ${n1.statusSocket}
  node ${join('dist', 'control', 'cli', 'flannelctl.js')} maps --bpf-pin-root ${n1.pinRoot}
  bpftool map dump pinned ${n1.pinRoot}/fl_subnets
  ip netns exec ${n1.ns} ip route; cat ${n1.logFile}
tear it down with:
  node ${join('dist', 'control', 'cli', 'flannelctl.js')} lab down${o.name !== 'fll' ? ` --name ${o.name}` : ''}${o.stateDir !== '/run/flannel-lab' ? ` --state-dir ${o.stateDir}` : ''}`);
    return 0;
  } catch (e) {
    out(`\nFAILED at step "${step}": ${(e as Error).message}`);
    out('removing everything the lab created');
    await Lab.down(o.stateDir, o.name).catch(() => undefined);
    return 1;
  }
}

export async function labDown(o: { name: string; stateDir: string }, out: Out): Promise<number> {
  const removed = await Lab.down(o.stateDir, o.name);
  out(removed.length ? `removed: ${removed.join(', ')}` : 'nothing to remove: no lab is running');
  return 0;
}
