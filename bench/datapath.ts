// Pod-to-pod across two lab nodes, for each data plane, interleaved rounds in one run:
// iperf3 TCP throughput (one stream) and ping RTT. Prints a Markdown table and writes JSON.
// Usage: node --import tsx bench/datapath.ts [rounds=3] [seconds=4] [out.json]
import { writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { Lab } from '../test/helpers/lab.ts';
import { inNs } from '../test/helpers/netns.ts';
import { join } from 'node:path';
import { BpfMap } from '../control/kernel/bpf.ts';
import * as L from '../control/bpf/layout.ts';

const rounds = Number(process.argv[2] ?? 3);
const seconds = Number(process.argv[3] ?? 4);
const out = process.argv[4] ?? 'bench/datapath.json';
const modes = [
  { name: 'BPF vxlan', backend: 'vxlan', args: [] as string[] },
  { name: 'BPF vxlan, outer UDP csum', backend: 'vxlan', args: [] as string[], keepCsum: true },
  { name: 'BPF vxlan, no underlay guard', backend: 'vxlan', args: ['--underlay-hook=none'] },
  { name: 'classic vxlan', backend: 'vxlan', args: ['--no-bpf'] },
  { name: 'host-gw', backend: 'host-gw', args: [] },
  { name: 'udp', backend: 'udp', args: [] },
];
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function measure(m: (typeof modes)[number]) {
  const lab = await Lab.create({ nodes: 2, config: JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: m.backend } }), agentArgs: m.args });
  try {
    await lab.bringUp();
    if ('keepCsum' in m && m.keepCsum) {
      for (const n of lab.nodes) {
        const cfg = BpfMap.openPinned(join(n.pinRoot, 'fl_config'));
        const c = L.decodeConfig(cfg.lookup(L.u32Key(0))!);
        cfg.update(L.u32Key(0), L.configVal({ ...c, flags: c.flags | L.CFG_KEEP_UDP_CSUM }));
        cfg.close();
      }
    }
    const [a, b] = [lab.node(1).pods[0]!, lab.node(2).pods[0]!];
    for (let i = 0; i < 50 && !(await lab.ping(a, b.ip)); i++) await new Promise((r) => setTimeout(r, 100));
    const server = spawn('ip', ['netns', 'exec', b.ns, 'iperf3', '-s', '-1'], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 300));
    const iperf = JSON.parse(await inNs(a.ns, 'iperf3', '-c', b.ip, '-t', String(seconds), '-J'));
    server.kill();
    const gbps = iperf.end.sum_received.bits_per_second / 1e9;
    const ping = await inNs(a.ns, 'ping', '-q', '-c', '100', '-i', '0.01', b.ip);
    const rtt = Number(/= [\d.]+\/([\d.]+)\//.exec(ping)![1]);
    return { gbps, rtt };
  } finally {
    await lab.destroy();
  }
}

const results: Record<string, { gbps: number[]; rtt: number[] }> = Object.fromEntries(modes.map((m) => [m.name, { gbps: [], rtt: [] }]));
for (let r = 1; r <= rounds; r++) {
  for (const m of modes) {
    const x = await measure(m);
    results[m.name]!.gbps.push(x.gbps);
    results[m.name]!.rtt.push(x.rtt);
    console.error(`round ${r} ${m.name}: ${x.gbps.toFixed(2)} Gbit/s, RTT ${x.rtt.toFixed(3)} ms`);
  }
}
const classic = median(results['classic vxlan']!.gbps);
console.log(`| data plane | TCP Gbit/s (median of ${rounds}, min-max) | vs classic | ping RTT ms (median) |\n|---|---|---|---|`);
for (const m of modes) {
  const x = results[m.name]!;
  console.log(`| ${m.name} | ${median(x.gbps).toFixed(2)} (${Math.min(...x.gbps).toFixed(2)}-${Math.max(...x.gbps).toFixed(2)}) | ${(median(x.gbps) / classic).toFixed(2)}x | ${median(x.rtt).toFixed(3)} |`);
}
writeFileSync(out, JSON.stringify({ rounds, seconds, results }, null, 2));
