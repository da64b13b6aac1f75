// Packets lost while a node's agent restarts: a ping every 10 ms from a pod on node 1 to a pod on node
// 2 while node 1's agent is stopped (SIGTERM, or kill -9) and started again until ready.
import { spawn } from 'node:child_process';
import { TestLab } from '../test/helpers/lab.ts';
import { sleep } from './lib.ts';

export async function measureRestart(mode: 'bpf' | 'classic', signal: 'SIGTERM' | 'SIGKILL'): Promise<{ sent: number; lost: number; restartMs: number }> {
  const lab = await TestLab.create({ nodes: 2, config: JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }), agentArgs: mode === 'classic' ? ['--no-bpf'] : [] });
  try {
    await lab.bringUp();
    const [n1, n2] = [lab.node(1), lab.node(2)];
    const [a, b] = [n1.pods[0]!, n2.pods[0]!];
    for (let i = 0; i < 50 && !(await lab.ping(a, b.ip)); i++) await sleep(100);
    // -i 0.01: 100 packets a second; -W 1: a reply later than 1 s counts as lost
    const ping = spawn('ip', ['netns', 'exec', a.ns, 'ping', '-q', '-i', '0.01', '-W', '1', '-w', '6', b.ip], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    ping.stdout.on('data', (d) => (out += d));
    const done = new Promise((r) => ping.once('exit', r));
    await sleep(1000);
    const t0 = Date.now();
    await lab.stopAgent(n1, signal);
    lab.startAgent(n1);
    await lab.waitReady(n1);
    const restartMs = Date.now() - t0;
    await done;
    const m = /(\d+) packets transmitted, (\d+) received/.exec(out);
    if (!m) throw new Error(`cannot read ping's summary: ${out}`);
    return { sent: Number(m[1]), lost: Number(m[1]) - Number(m[2]), restartMs };
  } finally {
    await lab.destroy();
  }
}
