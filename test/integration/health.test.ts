// The agent's HTTP face with real sockets: what each listener serves, the status socket's ownership,
// and /metrics counters that must not move between scrapes when nothing happened.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HealthServer } from '../../control/health/server.ts';
import { AgentMetrics } from '../../control/health/metrics.ts';
import { getFromSocket } from '../../control/health/client.ts';
import { freePort } from '../../control/lab/etcd.ts';
import { silentLogger } from '../../control/log.ts';
import type { AgentStatus } from '../../control/agent/status.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flannel-test-health-'));
const servers: HealthServer[] = [];
after(() => {
  for (const s of servers) s.close();
  rmSync(tmp, { recursive: true, force: true });
});

function status(): AgentStatus {
  return {
    ready: true,
    pid: 1,
    memory: { rss: 1 },
    startedAt: new Date(0).toISOString(),
    node: { iface: 'eth0', ifaceAddr: '10.0.0.1', publicIP: '10.0.0.1' },
    network: '10.244.0.0/16',
    lease: { subnet: '10.244.1.0/24', expiration: null, expiresInSeconds: null },
    backend: { backend: 'vxlan', mode: 'bpf', peers: 1, reconciles: 0, corrections: 0, failures: 0, rejected: 0 },
    peers: [{ subnet: '10.244.2.0/24', publicIP: '10.0.0.2' }],
    watch: { events: 7, relists: 2, rejected: 1, reconnects: 3, storeLosses: 2, watchStalls: 1, lastEventAgeSeconds: 1 },
    startup: { programMs: 1, readyMs: 2 },
    reconcile: { runs: 5, corrections: 1, failures: 0, rejected: 0 },
    firewall: { ipMasq: true, forwardRules: true, repairs: 4, lastError: null },
    traffic: {
      peers: [{ subnet: '10.244.2.0/24', publicIP: '10.0.0.2', txPackets: 10, txBytes: 1000, rxPackets: 11, rxBytes: 1100 }],
      packets: { forwarded: 10, received: 11 },
      fastPath: { fast_tx: 6, fast_rx: 5, pass_new_flow: 2 },
    },
    checks: [{ name: 'tc egress flannel.1', ok: true, detail: 'program 1' }],
  };
}

const counterLines = (text: string) =>
  text
    .split('\n')
    .filter((l) => /^flannel_\w+_total(\{|\s)/.test(l))
    .sort();

test('/metrics: two scrapes with nothing new in between give the same counter values', async () => {
  const m = new AgentMetrics();
  const first = counterLines(await m.render(status()));
  const second = counterLines(await m.render(status()));
  assert.ok(
    first.some((l) => l.startsWith('flannel_etcd_store_losses_total 2')),
    first.join('\n'),
  );
  assert.ok(
    first.some((l) => l.startsWith('flannel_fastpath_packets_total{result="fast_tx"} 6')),
    first.join('\n'),
  );
  assert.deepEqual(second, first);
});

function get(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

async function serve(o: Partial<ConstructorParameters<typeof HealthServer>[0]>): Promise<HealthServer> {
  const s = new HealthServer({ status: () => Promise.resolve(status()), readiness: () => Promise.resolve(status()), log: silentLogger, ...o });
  await s.start();
  servers.push(s);
  return s;
}

test('--healthz-port serves /healthz and /readyz only; /metrics only on --metrics-port; the socket serves all', async () => {
  const port = await freePort();
  const socketPath = join(tmp, 'a.sock');
  await serve({ tcp: { host: '127.0.0.1', port }, socketPath });
  assert.equal(await get(port, '/healthz'), 200);
  assert.equal(await get(port, '/readyz'), 200);
  assert.equal(await get(port, '/status'), 404, 'the status (every peer, every map) is not for pods on cni0');
  assert.equal(await get(port, '/metrics'), 404, 'metrics only where the operator asked for them');
  for (const p of ['/healthz', '/readyz', '/status', '/metrics']) assert.equal((await getFromSocket(socketPath, p)).code, 200, p);
  const mport = await freePort();
  await serve({ metrics: { host: '127.0.0.1', port: mport } });
  assert.equal(await get(mport, '/metrics'), 200);
  assert.equal(await get(mport, '/status'), 404);
});

test("/readyz asks for readiness only, never the status: at 10,000 peers a status lists every peer and reads every peer's counters", async () => {
  let statuses = 0;
  let checks = [{ name: 'programs attached', ok: true, detail: '' }];
  const port = await freePort();
  await serve({
    tcp: { host: '127.0.0.1', port },
    status: () => {
      statuses++;
      return Promise.resolve(status());
    },
    readiness: () => Promise.resolve({ ready: true, checks }),
  });
  for (let i = 0; i < 3; i++) assert.equal(await get(port, '/readyz'), 200);
  checks = [{ name: 'programs attached', ok: false, detail: 'fl_guard_tc missing on eth0' }];
  assert.equal(await get(port, '/readyz'), 503);
  assert.equal(statuses, 0, 'no status built for a readiness probe');
});

test('a second agent does not take over a live status socket; a stale one is replaced', async () => {
  const socketPath = join(tmp, 'b.sock');
  await serve({ socketPath });
  const second = new HealthServer({ status: () => Promise.resolve({ ...status(), pid: 2 }), readiness: () => Promise.resolve(status()), log: silentLogger, socketPath });
  await assert.rejects(second.start(), /b\.sock: another flanneld is running and answers on it/);
  second.close();
  const st = JSON.parse((await getFromSocket(socketPath, '/status')).body) as AgentStatus;
  assert.equal(st.pid, 1, 'the first agent still answers on its socket');

  // a socket left by a killed agent: nobody listens, so it is removed and taken
  const stale = join(tmp, 'c.sock');
  const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((r) => child.stdout.once('data', r));
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  assert.ok(existsSync(stale), 'the killed process left its socket file');
  await serve({ socketPath: stale });
  assert.equal((await getFromSocket(stale, '/healthz')).code, 200);
});
