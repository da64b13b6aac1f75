// Where an agent's resident memory is, once ready with N peers: a one-node lab whose etcd holds N
// synthetic leases (bench/tools/cp-probe.ts), the agent started and ready, then its resident set split
// into anonymous memory and mapped files (the node binary is about 44 MB of it), the biggest mappings,
// V8's heap, and the resident set over the next 10 s. With FLANNEL_LAB_NODE_FLAGS="--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=DIR" it
// also has the agent write a heap snapshot into DIR.
//   node --import tsx bench/tools/agent-memory.ts [peers=10000] [bpf|classic]
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestLab, UNDERLAY_GW } from '../../test/helpers/lab.ts';
import { sh } from '../../test/helpers/netns.ts';
import { fetchStatus } from '../../control/health/client.ts';
import { projectRoot } from '../../control/paths.ts';

const n = Number(process.argv[2] ?? 10_000);
const mode = process.argv[3] ?? 'bpf';
const PROBE = join(projectRoot(), 'bench', 'tools', 'cp-probe.ts');
const CONFIG = JSON.stringify({ Network: '10.0.0.0/8', SubnetMax: '10.0.255.0', Backend: { Type: 'vxlan' } });
const mb = (kb: number) => `${(kb / 1024).toFixed(1)} MB`;
const lab = await TestLab.create({ nodes: 1, config: CONFIG, agentArgs: mode === 'classic' ? ['--no-bpf'] : [] });
try {
  await sh('ip', ['netns', 'exec', lab.node(1).ns, process.execPath, '--import', 'tsx', PROBE, 'fill', `http://${UNDERLAY_GW}:2379`, String(n)]);
  const node = lab.node(1);
  lab.startAgent(node);
  await lab.waitReady(node, 120_000);
  // read before any status request: an answer lists every peer with its counters, a burst of its own
  // (`ip netns exec` execs the agent: the lab's child is the agent's own process)
  const pid = node.agent!.pid!;
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const smaps = readFileSync(`/proc/${pid}/smaps`, 'utf8');
  const s = await fetchStatus(node.statusSocket);
  const field = (f: string) => Number(new RegExp(`${f}:\\s+(\\d+) kB`).exec(status)![1]);
  console.log(`${mode}, ${n} peers, once ready: RSS ${mb(field('VmRSS'))} = anonymous ${mb(field('RssAnon'))} + files ${mb(field('RssFile'))}`);
  console.log(
    `V8 heap (as the status request found it): used ${(s.memory.heapUsed! / 2 ** 20).toFixed(1)} MB of ${(s.memory.heapTotal! / 2 ** 20).toFixed(1)} MB; outside it (Buffers, native): ${(s.memory.external! / 2 ** 20).toFixed(1)} MB`,
  );
  const agg = new Map<string, number>();
  for (const b of smaps.split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/)) {
    const name = b.split('\n')[0]!.split(/\s+/).slice(5).join(' ') || '[anonymous]';
    agg.set(name, (agg.get(name) ?? 0) + Number(/\nRss:\s+(\d+)/.exec(b)?.[1] ?? 0));
  }
  for (const [k, v] of [...agg].sort((a, b) => b[1] - a[1]).slice(0, 6)) console.log(`  ${mb(v).padStart(9)}  ${k}`);
  // the lab reconciles every second: the resident set over the next seconds, through those passes
  const samples: number[] = [];
  for (let i = 0; i < 50; i++) {
    await new Promise((r) => setTimeout(r, 200));
    samples.push(Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]));
  }
  samples.sort((a, b) => a - b);
  console.log(`RSS over the next 10 s (a reconcile a second): min ${mb(samples[0]!)}, median ${mb(samples[25]!)}, max ${mb(samples[49]!)}`);
  if (process.env.FLANNEL_LAB_NODE_FLAGS?.includes('--heapsnapshot-signal=SIGUSR2')) {
    process.kill(s.pid, 'SIGUSR2');
    await new Promise((r) => setTimeout(r, 10_000));
  }
} finally {
  await lab.destroy();
}
