// Where the time goes, per data plane: perf samples of the whole machine (self time per kernel or user
// symbol) during one iperf3 stream pod to pod across two lab nodes, grouped into the stages of the
// path, for classic vxlan, the fast path with flannel.1 encapsulating (tc key) and bypass mode. Each
// mode's share of samples per stage, and per stage the CPU share times the machine's busy time per
// Gbit: stage seconds per Gbit, comparable across modes. Modes run interleaved, `--rounds` times.
// In this VM softirq time also shows up as _raw_spin_unlock_irqrestore (../shared/reference): the
// "locks and irq" row holds it; compare modes, not absolute shares.
//   node --import tsx bench/tools/profile.ts [--seconds 4] [--rounds 2] [--underlay veth|nic]
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { TestLab, type Underlay } from '../../test/helpers/lab.ts';
import { inNs, sh } from '../../test/helpers/netns.ts';
import { machineCpu, pickModes, server, TOOL_MODES } from '../lib.ts';

const o = new Command('profile')
  .option('--seconds <s>', 'length of each profiled stream', (v) => Number(v), 4)
  .option('--rounds <n>', 'interleaved rounds', (v) => Number(v), 2)
  .option('--underlay <kind>', 'veth or nic', 'veth')
  .option('--modes <names>', 'comma-separated mode names (default: all)')
  .option('--top <n>', 'also print the n hottest symbols of each mode, in % of samples', (v) => Number(v), 0)
  .parse()
  .opts<{ seconds: number; rounds: number; underlay: Underlay; modes?: string; top: number }>();

const MODES = pickModes(TOOL_MODES, o.modes);

// first match wins: the order puts the specific stages before the generic ones
const STAGES: [string, RegExp][] = [
  ['idle', /idle|mwait|cpuidle|acpi_|poll_idle|hlt|safe_halt/],
  ['BPF programs and helpers', /^bpf_|^cls_bpf|^tcf_|^sch_handle|^tcx_|bpf_prog_|^___bpf/],
  ['vxlan device', /^vxlan_/],
  ['UDP tunnel and UDP', /udp_tunnel|iptunnel|ip_tunnel|^udp|^__udp|^udp4/],
  ['bridge', /^br_|^nbp_/],
  ['netfilter and conntrack', /^nf_|^ipt_|^nft_|conntrack|^xt_|^__nf_/],
  ['IP routing and forwarding', /^ip_|^__ip_|^fib_|^dst_|^ipv4_|^rt_|^inet_gro|^inet_gso/],
  ['TCP', /^tcp_|^__tcp|^inet_|^sk_|^__sk_|^sock_|^release_sock|^lock_sock/],
  ['copy to and from user', /copy_user|copy_to_user|copy_from_user|_copy_to_iter|_copy_from_iter|rep_movs|memcpy|memmove|copy_page|skb_copy_datagram/],
  ['GRO, GSO, checksum', /gro|gso|segment|csum|checksum/],
  ['veth and device queue', /^veth_|dev_queue_xmit|^__dev_|^netif_|^__netif|^dev_hard_start|validate_xmit|^napi_|^net_rx_action|^process_backlog|^enqueue_to_backlog/],
  ['skb memory', /kmem|kfree|__alloc|slab|page_frag|skb_release|kmalloc|consume_skb|^skb_|^__skb|^alloc_skb|^build_skb|page_pool|folio/],
  ['locks and irq (and, in this VM, softirq)', /spin_|_raw_|irq|softirq|local_bh/],
  ['user space (iperf3, node)', /^\[\.\]|^0x|iperf|node::|v8::/],
];
const stageOf = (sym: string) => STAGES.find(([, re]) => re.test(sym))?.[0] ?? 'other kernel';

async function profileOnce(m: (typeof MODES)[number], dir: string): Promise<{ gbps: number; busyPerGbit: number; shares: Record<string, number>; top: [string, number][] }> {
  const lab = await TestLab.create({ nodes: 2, config: JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }), agentArgs: m.args, underlay: o.underlay });
  try {
    await lab.bringUp({ cni: true });
    const [a, b] = [lab.node(1).pods[0]!, lab.node(2).pods[0]!];
    for (
      let i = 0;
      i < 50 &&
      !(await inNs(a.ns, 'ping', '-c', '1', '-W', '1', b.ip).then(
        () => true,
        () => false,
      ));
      i++
    );
    const srv = await server(b.ns, ['iperf3', '-s']);
    try {
      const data = join(dir, 'perf.data');
      const client = inNs(a.ns, 'iperf3', '-c', b.ip, '-J', '-t', String(o.seconds + 1));
      await new Promise((r) => setTimeout(r, 500));
      const c0 = machineCpu();
      const perf = spawn('perf', ['record', '-a', '-F', '999', '-o', data, '--', 'sleep', String(o.seconds)], { stdio: 'ignore' });
      await new Promise((r) => perf.once('exit', r));
      const c1 = machineCpu();
      const run = JSON.parse(await client) as { end: { sum_received: { bits_per_second: number } } };
      const gbps = run.end.sum_received.bits_per_second / 1e9;
      const report = await sh('perf', ['report', '-i', data, '--stdio', '--no-children', '--sort', 'sym', '-q', '--percent-limit', '0.01']);
      const shares: Record<string, number> = {};
      const top: [string, number][] = [];
      for (const line of report.split('\n')) {
        const mm = /^\s*([\d.]+)%\s+\[(.)\]\s+(.+?)\s*$/.exec(line);
        if (!mm) continue;
        const pct = Number(mm[1]);
        const sym = mm[2] === '.' ? `[.] ${mm[3]}` : mm[3]!;
        shares[stageOf(sym)] = (shares[stageOf(sym)] ?? 0) + pct;
        if (top.length < Math.max(8, o.top)) top.push([sym, pct]);
      }
      // busy machine seconds per Gbit moved while perf sampled
      return { gbps, busyPerGbit: (c1.busy - c0.busy) / (gbps * o.seconds), shares, top };
    } finally {
      srv.stop();
    }
  } finally {
    await lab.destroy();
  }
}

const dir = mkdtempSync(join(tmpdir(), 'flannel-profile-'));
const runs: Record<string, Awaited<ReturnType<typeof profileOnce>>[]> = {};
try {
  for (let r = 1; r <= o.rounds; r++)
    for (const m of MODES) {
      const x = await profileOnce(m, dir);
      (runs[m.name] ??= []).push(x);
      console.error(
        `round ${r} ${m.name}: ${x.gbps.toFixed(2)} Gbit/s, busy ${x.busyPerGbit.toFixed(3)} s/Gbit; top: ${x.top
          .slice(0, 4)
          .map(([s, p]) => `${s} ${p.toFixed(1)}%`)
          .join(', ')}`,
      );
    }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const stages = [...STAGES.map(([s]) => s), 'other kernel'];
const names = Object.keys(runs);
console.log(`perf, whole machine, ${o.seconds} s of one iperf3 stream, ${o.underlay} underlay, mean of ${o.rounds} interleaved rounds; cells: share of samples % / machine ms per Gbit`);
console.log(`| stage | ${names.join(' | ')} |`);
console.log(`|---|${names.map(() => '---').join('|')}|`);
console.log(`| Gbit/s | ${names.map((n) => mean(runs[n]!.map((x) => x.gbps)).toFixed(2)).join(' | ')} |`);
console.log(`| busy s/Gbit | ${names.map((n) => mean(runs[n]!.map((x) => x.busyPerGbit)).toFixed(3)).join(' | ')} |`);
for (const s of stages) {
  const cells = names.map((n) => {
    const share = mean(runs[n]!.map((x) => x.shares[s] ?? 0));
    // a share of all samples (idle included) times the machine's total seconds per Gbit
    const perGbit = mean(runs[n]!.map((x) => (((x.shares[s] ?? 0) / 100) * (cpus().length * o.seconds)) / (x.gbps * o.seconds))) * 1000;
    return `${share.toFixed(1)} / ${perGbit.toFixed(1)}`;
  });
  console.log(`| ${s} | ${cells.join(' | ')} |`);
}
if (o.top > 0) {
  for (const n of names) {
    const acc = new Map<string, number>();
    for (const x of runs[n]!) for (const [sym, pct] of x.top) acc.set(sym, (acc.get(sym) ?? 0) + pct / runs[n]!.length);
    console.log(`\n${n}: hottest symbols, % of samples (mean of ${runs[n]!.length})`);
    for (const [sym, pct] of [...acc].sort((a, b) => b[1] - a[1]).slice(0, o.top)) console.log(`  ${pct.toFixed(2).padStart(6)}  ${sym}`);
  }
}
