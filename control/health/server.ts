// The agent's HTTP face. flannel serves only /healthz on --healthz-ip:port (0.0.0.0 by default, so
// reachable from pods through cni0): that listener serves /healthz and /readyz and nothing more.
// /metrics goes on its own listener only when the operator asks (--metrics-port); /status (every
// peer, every map walked per request) only on the root-only unix socket, which serves everything
// for `flannelctl status`.
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { createConnection } from 'node:net';
import { createServer, type Server } from 'node:http';
import type { Logger } from '../log.js';
import { isReady, type AgentStatus } from '../agent/status.js';
import { AgentMetrics } from './metrics.js';

export interface HealthOptions {
  status: () => Promise<AgentStatus>;
  /** what /readyz needs, without the status's list of every peer and their counters (probes run every few seconds) */
  readiness: () => Promise<Pick<AgentStatus, 'ready' | 'checks'>>;
  /** --healthz-ip/--healthz-port: /healthz and /readyz */
  tcp?: { host: string; port: number };
  /** --metrics-ip/--metrics-port: /metrics (and /healthz) */
  metrics?: { host: string; port: number };
  socketPath?: string;
  log: Logger;
}

type Path = '/healthz' | '/readyz' | '/metrics' | '/status';
const HEALTH: Path[] = ['/healthz', '/readyz'];
const METRICS: Path[] = ['/healthz', '/metrics'];
const ALL: Path[] = ['/healthz', '/readyz', '/metrics', '/status'];

/** true when a process accepts connections on the unix socket at path (a live agent), false when none does */
function socketAnswers(path: string, ms = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const c = createConnection(path);
    const done = (live: boolean) => {
      clearTimeout(t);
      c.destroy();
      resolve(live);
    };
    const t = setTimeout(() => done(true), ms); // a listener too busy to accept is still a listener
    c.once('connect', () => done(true));
    c.once('error', () => done(false));
  });
}

export class HealthServer {
  private readonly servers: Server[] = [];
  private readonly metrics = new AgentMetrics();

  constructor(private readonly o: HealthOptions) {}

  private handler(serves: Path[]) {
    return (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
      const path = (req.url ?? '/').split('?')[0];
      const send = (code: number, type: string, body: string) => {
        res.writeHead(code, { 'content-type': type });
        res.end(body);
      };
      if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'method not allowed\n');
      if (!serves.includes(path as Path)) return send(404, 'text/plain', `not found: ${serves.join(' ')}\n`);
      if (path === '/healthz') return send(200, 'text/plain', 'ok\n');
      if (path === '/readyz')
        return void this.o
          .readiness()
          .then((s) => {
            const failing = s.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`);
            return isReady(s)
              ? send(200, 'text/plain', 'ready\n')
              : send(503, 'text/plain', s.ready ? `not ready: ${failing.join('; ')}\n` : 'not ready: subnet file not written or backend not programmed yet\n');
          })
          .catch((e: Error) => send(500, 'text/plain', `${e.message}\n`));
      this.o
        .status()
        .then(async (s) => {
          if (path === '/metrics') return send(200, this.metrics.registry.contentType, await this.metrics.render(s));
          send(200, 'application/json', JSON.stringify(s, null, 2) + '\n');
        })
        .catch((e: Error) => send(500, 'text/plain', `${e.message}\n`));
    };
  }

  async start(): Promise<void> {
    const listen = (srv: Server, arg: { host: string; port: number } | string) =>
      new Promise<void>((resolve, reject) => {
        srv.once('error', reject);
        if (typeof arg === 'string') srv.listen(arg, () => resolve());
        else srv.listen(arg.port, arg.host, () => resolve());
      });
    for (const [what, addr, serves] of [
      ['health endpoint', this.o.tcp, HEALTH],
      ['metrics endpoint', this.o.metrics, METRICS],
    ] as const) {
      if (!addr) continue;
      const srv = createServer(this.handler(serves));
      await listen(srv, addr).catch((e: Error) => {
        throw new Error(`${what} ${addr.host}:${addr.port}: ${e.message}`);
      });
      this.servers.push(srv);
      this.o.log.info({ address: `${addr.host}:${addr.port}` }, `serving ${serves.join(' ')}`);
    }
    if (this.o.socketPath) {
      const path = this.o.socketPath;
      mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
      // a socket left by a killed agent would make listen fail with EADDRINUSE, so a stale one goes;
      // a live one is another agent's, and taking it would hide that agent from `flannelctl status`
      if (await socketAnswers(path)) throw new Error(`status socket ${path}: another flanneld is running and answers on it (stop it first, or give this one another --status-socket)`);
      rmSync(path, { force: true });
      const srv = createServer(this.handler(ALL));
      await listen(srv, path).catch((e: Error) => {
        throw new Error(`status socket ${path}: ${e.message}`);
      });
      chmodSync(path, 0o600);
      this.servers.push(srv);
    }
  }

  close(): void {
    for (const s of this.servers.splice(0)) s.close();
  }
}
