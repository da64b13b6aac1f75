// Small shared pieces of the benchmark suite: statistics, CPU accounting, process helpers.
import { readFileSync } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';

export const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
export const percentile = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};

/** A repeated measurement: its median and spread, with every sample kept for the JSON file. */
export interface Stat {
  median: number;
  min: number;
  max: number;
  samples: number[];
}
export const stat = (xs: number[]): Stat => ({ median: median(xs), min: Math.min(...xs), max: Math.max(...xs), samples: xs });

/** Busy and total CPU time of the whole machine, in seconds (from /proc/stat). */
export function machineCpu(): { busy: number; total: number; user: number; sys: number; softirq: number } {
  // user nice system idle iowait irq softirq steal, in USER_HZ (100 per second)
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = f[3]! + f[4]!;
  return { busy: (total - idle) / 100, total: total / 100, user: (f[0]! + f[1]!) / 100, sys: f[2]! / 100, softirq: (f[5]! + f[6]!) / 100 };
}

/** Resident memory of a process in bytes (VmRSS). */
export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

/** A long-running server in a namespace (iperf3 -s, qperf), killed by stop() or at exit. */
export async function server(ns: string, cmd: string[], settleMs = 300): Promise<{ stop: () => void }> {
  const c = spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio: 'ignore' });
  children.add(c);
  await new Promise((r) => setTimeout(r, settleMs));
  return {
    stop: () => {
      c.kill('SIGKILL');
      children.delete(c);
    },
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const log = (s: string) => process.stderr.write(s + '\n');

/** The vxlan data planes the tools under bench/tools/ compare, by the names they print. */
export const TOOL_MODES = [
  { name: 'classic vxlan', args: ['--ip-masq', '--no-bpf'] },
  { name: 'BPF without the fast path (tc key)', args: ['--ip-masq', '--fast-path=off'] },
  { name: 'tc key (fast path, flannel.1 encapsulates)', args: ['--ip-masq', '--fast-path=on', '--vxlan-bypass=off'] },
  { name: 'bypass (default)', args: ['--ip-masq', '--fast-path=on', '--vxlan-bypass=on'] },
];

/** A tool's --modes: the named ones of `from` (comma-separated), or all of them. */
export function pickModes(from: typeof TOOL_MODES, csv: string | undefined): typeof TOOL_MODES {
  const wanted = csv?.split(',').map((x) => x.trim());
  const picked = wanted ? from.filter((m) => wanted.includes(m.name)) : from;
  if (!picked.length) throw new Error(`--modes: none of ${csv}; modes: ${from.map((m) => m.name).join(', ')}`);
  return picked;
}
