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

/** A one-node lab whose etcd holds n synthetic peer leases, its agent started and ready; removed after fn. */
async function withReadyNode<T>(mode: CpMode, n: number, fn: (lab: TestLab, s: AgentStatus) => Promise<T>): Promise<T> {
  const lab = await TestLab.create({ nodes: 1, config: CONFIG, agentArgs: args(mode) });
  try {
    await probe(lab, 'fill', ETCD, String(n));
    const node = lab.node(1);
    lab.startAgent(node);
    await lab.waitReady(node, 120_000);
    const s = await fetchStatus(node.statusSocket);
    if (s.peers.length !== n) throw new Error(`agent knows ${s.peers.length} peers, expected ${n}`);
    return await fn(lab, s);
  } finally {
    await lab.destroy();
  }
}

/** One agent starting on a node whose etcd already holds n peer leases. */
export function measureStartup(mode: CpMode, n: number): Promise<{ programMs: number; readyMs: number; rssMB: number; heapMB: number; reconcileMs: number }> {
  return withReadyNode(mode, n, async (lab, s) => {
    // memory once ready, before anything else runs
    const rssMB = rssBytes(s.pid) / 2 ** 20;
    // the lab reconciles every second: wait for a periodic pass with nothing to do, the steady cost at n peers
    const runs = s.reconcile.runs;
    let after = s;
    for (let i = 0; i < 100 && (after.reconcile.runs < runs + 2 || after.reconcile.lastMs == null); i++) {
      await new Promise((r) => setTimeout(r, 200));
      after = await fetchStatus(lab.node(1).statusSocket);
    }
    return { programMs: s.startup.programMs!, readyMs: s.startup.readyMs!, rssMB, heapMB: s.memory.heapUsed! / 2 ** 20, reconcileMs: after.reconcile.lastMs ?? NaN };
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
