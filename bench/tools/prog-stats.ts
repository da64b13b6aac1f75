// What each attached BPF program costs on the real path: the kernel's own run-time statistics
// (kernel.bpf_stats_enabled: run count and run time of every program, as `bpftool prog show` prints
// them) during one iperf3 stream pod to pod across two lab nodes, for each BPF mode, on the sender and
// on the receiver. Per program: runs per second (per skb on its hook: a GSO super-packet over veth, a
// GRO aggregate or a single frame on a NIC-like underlay), ns per run, and CPU ms per Gbit moved.
// Modes run interleaved, `--rounds` times; the sysctl is put back as it was.
//   node --import tsx bench/tools/prog-stats.ts [--seconds 4] [--rounds 2] [--underlay veth|nic] [--modes a,b]
import { readFileSync, writeFileSync } from 'node:fs';
import { Command } from 'commander';
import { TestLab, type Underlay } from '../../test/helpers/lab.ts';
import { inNs, sh } from '../../test/helpers/netns.ts';
import { median, pickModes, server, TOOL_MODES } from '../lib.ts';

const o = new Command('prog-stats')
  .option('--seconds <s>', 'length of each stream', (v) => Number(v), 4)
  .option('--rounds <n>', 'interleaved rounds', (v) => Number(v), 2)
  .option('--underlay <kind>', 'veth or nic', 'veth')
  .option('--modes <names>', 'comma-separated mode names (default: all)')
  .parse()
  .opts<{ seconds: number; rounds: number; underlay: Underlay; modes?: string }>();

// BPF mode's three data planes (classic runs no program)
const MODES = pickModes(
  TOOL_MODES.filter((m) => !m.args.includes('--no-bpf')),
  o.modes,
);

interface ProgRun {
  runs: number;
  ns: number;
}
/** node -> "device hook program" -> its counters, for every tc and XDP program attached in the node */
async function programs(nodes: string[]): Promise<Map<string, ProgRun>> {
  const out = new Map<string, ProgRun>();
  for (const [i, ns] of nodes.entries()) {
    type Att = { devname: string; id: number; name: string };
    const [net] = JSON.parse(await inNs(ns, 'bpftool', 'net', 'show', '-j')) as { xdp: (Att & { mode: string })[]; tc: (Att & { kind: string })[] }[];
    const atts = [...(net?.xdp ?? []).map((a) => ({ ...a, hook: 'xdp' })), ...(net?.tc ?? []).map((a) => ({ ...a, hook: a.kind.replace('clsact/', 'tc ') }))];
    for (const a of atts) {
      const p = JSON.parse(await sh('bpftool', ['prog', 'show', 'id', String(a.id), '-j'])) as { name: string; run_cnt?: number; run_time_ns?: number };
      out.set(`node ${i + 1} ${a.devname.replace(/^veth[0-9a-f]+$/, 'pod veth')} ${a.hook} ${p.name}`, { runs: p.run_cnt ?? 0, ns: p.run_time_ns ?? 0 });
    }
  }
  return out;
}

const SYSCTL = '/proc/sys/kernel/bpf_stats_enabled';
const before = readFileSync(SYSCTL, 'utf8').trim();
// per mode and program: [runs per second, ns per run, ms per Gbit] of each round
const results = new Map<string, Map<string, [number, number, number][]>>();
const gbps = new Map<string, number[]>();
writeFileSync(SYSCTL, '1');
try {
  for (let r = 0; r < o.rounds; r++) {
    for (const m of MODES) {
      const lab = await TestLab.create({ nodes: 2, config: JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }), agentArgs: m.args, underlay: o.underlay });
      try {
        await lab.bringUp({ cni: true });
        const [a, b] = [lab.node(1).pods[0]!, lab.node(2).pods[0]!];
        await inNs(a.ns, 'ping', '-c', '3', '-i', '0.2', b.ip);
        const srv = await server(b.ns, ['iperf3', '-s']);
        try {
          const nodes = [lab.node(1).ns, lab.node(2).ns];
          const p0 = await programs(nodes);
          const rep = JSON.parse(await inNs(a.ns, 'iperf3', '-c', b.ip, '-J', '-t', String(o.seconds))) as { end: { sum_received: { bits_per_second: number } } };
          const p1 = await programs(nodes);
          const g = rep.end.sum_received.bits_per_second / 1e9;
          gbps.set(m.name, [...(gbps.get(m.name) ?? []), g]);
          const per = results.get(m.name) ?? new Map<string, [number, number, number][]>();
          for (const [k, v1] of p1) {
            const v0 = p0.get(k) ?? { runs: 0, ns: 0 };
            const runs = v1.runs - v0.runs;
            const ns = v1.ns - v0.ns;
            per.set(k, [...(per.get(k) ?? []), [runs / o.seconds, runs ? ns / runs : 0, ns / 1e6 / (g * o.seconds)]]);
          }
          results.set(m.name, per);
        } finally {
          srv.stop();
        }
      } finally {
        await lab.destroy();
      }
    }
  }
} finally {
  writeFileSync(SYSCTL, before);
}

console.log(`BPF programs on the real path (kernel.bpf_stats_enabled), one iperf3 stream pod 1 -> pod 2, ${o.seconds} s, ${o.underlay} underlay, median of ${o.rounds} interleaved rounds`);
for (const m of MODES) {
  console.log(`\n${m.name}: ${median(gbps.get(m.name)!).toFixed(2)} Gbit/s`);
  console.log('| program (node, device, hook) | runs/s | ns/run | ms per Gbit |');
  console.log('|---|---|---|---|');
  for (const [k, xs] of [...results.get(m.name)!].sort(([a], [b]) => a.localeCompare(b))) {
    if (!xs.some((x) => x[0] > 0)) continue;
    const col = (i: number, d: number) => median(xs.map((x) => x[i]!)).toFixed(d);
    console.log(`| ${k} | ${col(0, 0)} | ${col(1, 0)} | ${col(2, 3)} |`);
  }
}
