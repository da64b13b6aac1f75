// The control plane: time to program N peers at start (BPF maps vs routes/neighbours/FDB), the agent's
// memory at N, convergence from an etcd write to the kernel entry, and the agent's CPU under churn.
// Peers beyond the lab's node are synthetic leases written to etcd by bench/tools/cp-probe.ts, which
// runs inside the node's namespace.
import { join } from 'node:path';
import { TestLab, UNDERLAY_GW } from '../test/helpers/lab.ts';
import { sh } from '../test/helpers/netns.ts';
import { fetchStatus } from '../control/health/client.ts';
import type { AgentStatus } from '../control/agent/status.ts';
import { projectRoot } from '../control/paths.ts';
import { percentile, rssBytes } from './lib.ts';

export type CpMode = 'bpf' | 'classic';
const PROBE = join(projectRoot(), 'bench', 'tools', 'cp-probe.ts');
// real nodes take subnets in 10.0.x; synthetic peers live above
const CONFIG = JSON.stringify({ Network: '10.0.0.0/8', SubnetMax: '10.0.255.0', Backend: { Type: 'vxlan' } });
const ETCD = `http://${UNDERLAY_GW}:2379`;
const args = (m: CpMode) => (m === 'classic' ? ['--no-bpf'] : []);

async function probe(lab: TestLab, ...a: string[]): Promise<unknown> {
  return JSON.parse(await sh('ip', ['netns', 'exec', lab.node(1).ns, process.execPath, '--import', 'tsx', PROBE, ...a]));
}

/**
 * A one-node lab whose etcd holds n synthetic peer leases, its agent started and ready; removed after
 * fn. `readyRss`: the agent's resident set the moment its subnet file appears, read from /proc before
 * any status request (a /status answer lists every peer with its counters: a burst of its own).
 */
async function withReadyNode<T>(mode: CpMode, n: number, fn: (lab: TestLab, s: AgentStatus, readyRss: number) => Promise<T>): Promise<T> {
  const lab = await TestLab.create({ nodes: 1, config: CONFIG, agentArgs: args(mode) });
  try {
    await probe(lab, 'fill', ETCD, String(n));
    const node = lab.node(1);
    lab.startAgent(node);
    await lab.waitReady(node, 120_000);
    // `ip netns exec` execs the agent: the lab's child is the agent's own process
    const readyRss = rssBytes(node.agent!.pid!);
    const s = await fetchStatus(node.statusSocket);
    if (s.pid !== node.agent!.pid) throw new Error(`the status answers for pid ${s.pid}, the lab started ${node.agent!.pid}`);
    if (s.peers.length !== n) throw new Error(`agent knows ${s.peers.length} peers, expected ${n}`);
    return await fn(lab, s, readyRss);
  } finally {
    await lab.destroy();
  }
}

/**
 * One agent starting on a node whose etcd already holds n peer leases: cold (the maps or routes are
 * empty, a node's first start), then the same agent restarted (warm: everything is already in the
 * kernel, the restart's reconcile checks it all and writes nothing).
 */
export function measureStartup(
  mode: CpMode,
  n: number,
): Promise<{ programMs: number; warmProgramMs: number; readyMs: number; rssMB: number; steadyRssMB: number; heapMB: number; reconcileMs: number }> {
  return withReadyNode(mode, n, async (lab, s, readyRss) => {
    // then over 5 s of periodic reconciles (the lab runs one a second), read from /proc only
    const steady: number[] = [];
    for (let i = 0; i < 25; i++) {
      await new Promise((r) => setTimeout(r, 200));
      steady.push(rssBytes(s.pid));
    }
    // the lab reconciles every second: wait for a periodic pass with nothing to do, the steady cost at n peers
    const runs = s.reconcile.runs;
    let after = s;
    for (let i = 0; i < 100 && (after.reconcile.runs < runs + 2 || after.reconcile.lastMs == null); i++) {
      await new Promise((r) => setTimeout(r, 200));
      after = await fetchStatus(lab.node(1).statusSocket);
    }
    const node = lab.node(1);
    await lab.stopAgent(node);
    lab.startAgent(node);
    await lab.waitReady(node, 120_000);
    const warm = await fetchStatus(node.statusSocket);
    return {
      programMs: s.startup.programMs!,
      warmProgramMs: warm.startup.programMs!,
      readyMs: s.startup.readyMs!,
      rssMB: readyRss / 2 ** 20,
      steadyRssMB: percentile(steady, 50) / 2 ** 20,
      heapMB: s.memory.heapUsed! / 2 ** 20,
      reconcileMs: after.reconcile.lastMs ?? NaN,
    };
  });
}

/** Convergence (events one at a time) and a churn burst, on a node that already has `background` peers. */
export function measureConvergence(mode: CpMode, events: number, churn: number, background = 100) {
  return withReadyNode(mode, background, async (lab, s) => {
    const { pinRoot } = lab.node(1);
    const conv = (await probe(lab, 'converge', ETCD, String(events), mode, pinRoot)) as { add: number[]; del: number[] };
    const ch = (await probe(lab, 'churn', ETCD, String(churn), mode, pinRoot, String(s.pid))) as { events: number; wallMs: number; cpuMs: number };
    return { add: conv.add, del: conv.del, churn: ch };
  });
}

export interface SoakResult {
  peers: number;
  batch: number;
  seconds: number;
  cycles: number;
  events: number;
  /** the agent's RSS and V8 heap in MB, sampled every `sampleMs` from the start of the churn */
  samples: { t: number; rssMB: number; heapMB: number }[];
  /** median RSS of the first and the last fifth of the samples after the warm-up, and the difference */
  rssFirstMB: number;
  rssLastMB: number;
  rssGrowthMB: number;
  heapFirstMB: number;
  heapLastMB: number;
}

/**
 * The leak test: `peers` leases present, then `batch` more put and deleted again and again for
 * `seconds` (bounded), the agent's RSS and heap sampled throughout. Growth is the last fifth's median
 * minus the first fifth's, after a warm-up of a tenth: a leak grows with the cycles, garbage collection
 * only oscillates.
 */
export function measureSoak(mode: CpMode, peers: number, seconds: number, batch = 500, sampleMs = 2000, periodMs = 0): Promise<SoakResult> {
  return withReadyNode(mode, peers, async (lab, s) => {
    const samples: SoakResult['samples'] = [];
    const t0 = Date.now();
    const sample = async () => {
      // the RSS before the status request, whose answer (every peer, every counter) is a burst of its own
      const rss = rssBytes(s.pid);
      const st = await fetchStatus(lab.node(1).statusSocket);
      samples.push({ t: (Date.now() - t0) / 1000, rssMB: rss / 2 ** 20, heapMB: st.memory.heapUsed! / 2 ** 20 });
    };
    await sample();
    const timer = setInterval(() => void sample().catch(() => undefined), sampleMs);
    let r: { cycles: number; events: number };
    try {
      r = (await probe(lab, 'soak', ETCD, String(seconds), mode, lab.node(1).pinRoot, String(batch), String(periodMs))) as { cycles: number; events: number };
    } finally {
      clearInterval(timer);
    }
    await sample();
    // the first tenth is the warm-up (V8 grows its heap to the churn's working set): a leak keeps
    // growing after it, a steady agent stays at its level
    const steady = samples.filter((x) => x.t >= seconds / 10);
    const fifth = Math.max(1, Math.floor(steady.length / 5));
    const med = (xs: number[]) => percentile(xs, 50);
    const first = steady.slice(0, fifth);
    const last = steady.slice(-fifth);
    const rssFirstMB = med(first.map((x) => x.rssMB));
    const rssLastMB = med(last.map((x) => x.rssMB));
    return {
      peers,
      batch,
      seconds,
      ...r,
      samples,
      rssFirstMB,
      rssLastMB,
      rssGrowthMB: rssLastMB - rssFirstMB,
      heapFirstMB: med(first.map((x) => x.heapMB)),
      heapLastMB: med(last.map((x) => x.heapMB)),
    };
  });
}

// node --import tsx bench/control-plane.ts soak <bpf|classic> <peers> <seconds> [batch] [periodMs]: the
// leak test (RSS and heap under a bounded loop of lease puts and deletes, a cycle every periodMs at
// most); the full benchmark runs a short one
if (import.meta.url === `file://${process.argv[1]}` && process.argv[2] === 'soak') {
  const [mode, peers, seconds, batch, period] = [
    process.argv[3] as CpMode,
    Number(process.argv[4] ?? 10_000),
    Number(process.argv[5] ?? 3600),
    Number(process.argv[6] ?? 100),
    Number(process.argv[7] ?? 1000),
  ];
  const r = await measureSoak(mode, peers, seconds, batch, Math.max(2000, seconds * 10), period);
  for (const x of r.samples) console.log(`t ${x.t.toFixed(0).padStart(5)} s  RSS ${x.rssMB.toFixed(1)} MB  heap ${x.heapMB.toFixed(1)} MB`);
  console.log(
    `${mode}, ${peers} peers, ${r.seconds} s of churn (${r.cycles} cycles of ${batch} puts and deletes, ${r.events} events): RSS ${r.rssFirstMB.toFixed(1)} -> ${r.rssLastMB.toFixed(1)} MB (growth ${r.rssGrowthMB.toFixed(1)} MB), heap ${r.heapFirstMB.toFixed(1)} -> ${r.heapLastMB.toFixed(1)} MB`,
  );
}

// node --import tsx bench/control-plane.ts startup <bpf|classic> <peers> [runs]: programming time and
// memory of an agent starting with that many peers in etcd, outside the full benchmark
if (import.meta.url === `file://${process.argv[1]}` && process.argv[2] === 'startup') {
  const [mode, n, runs] = [process.argv[3] as CpMode, Number(process.argv[4] ?? 10_000), Number(process.argv[5] ?? 1)];
  for (let i = 0; i < runs; i++) {
    const r = await measureStartup(mode, n);
    console.log(
      `${mode}, ${n} peers: programming ${r.programMs.toFixed(0)} ms cold, ${r.warmProgramMs.toFixed(0)} ms warm (a restart), ready ${r.readyMs} ms, RSS ${r.rssMB.toFixed(1)} MB once ready, ${r.steadyRssMB.toFixed(1)} MB over the next 5 s, heap ${r.heapMB.toFixed(1)} MB, idle reconcile ${r.reconcileMs.toFixed(0)} ms`,
    );
  }
}

// node --import tsx bench/control-plane.ts converge <bpf|classic> <background peers> [events]: convergence
// with many peers present (the scale issue's "p99 with 10,000 present"), outside the full benchmark
if (import.meta.url === `file://${process.argv[1]}` && process.argv[2] === 'converge') {
  const [mode, background, events] = [process.argv[3] as CpMode, Number(process.argv[4] ?? 10_000), Number(process.argv[5] ?? 200)];
  const r = await measureConvergence(mode, events, 1000, background);
  const p = (xs: number[], q: number) => percentile(xs, q);
  console.log(
    `${mode}, ${background} peers present, ${events} events: add p50 ${p(r.add, 50).toFixed(1)} ms p99 ${p(r.add, 99).toFixed(1)} ms; delete p50 ${p(r.del, 50).toFixed(1)} ms p99 ${p(r.del, 99).toFixed(1)} ms; churn of ${r.churn.events} events ${r.churn.wallMs.toFixed(0)} ms wall, agent CPU ${((r.churn.cpuMs / r.churn.events) * 1000).toFixed(0)} ms per 1000 events`,
  );
}
