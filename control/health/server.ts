// The agent's HTTP face: /healthz (alive), /readyz (200 once programmed and every check passes),
// /metrics (Prometheus) and /status (JSON for `flannelctl status`). Served on --healthz-ip:port when a
// port is given (flannel's flags) and always on a root-only unix socket for the local CLI.
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { createServer, type Server } from 'node:http';
import type { Logger } from '../log.js';
import { isReady, type AgentStatus } from '../agent/status.js';
import { AgentMetrics } from './metrics.js';

export interface HealthOptions {
  status: () => Promise<AgentStatus>;
  tcp?: { host: string; port: number };
  socketPath?: string;
  log: Logger;
}

export class HealthServer {
  private readonly servers: Server[] = [];
  private readonly metrics = new AgentMetrics();

  constructor(private readonly o: HealthOptions) {}

  private handler() {
    return (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
      const path = (req.url ?? '/').split('?')[0];
      const send = (code: number, type: string, body: string) => {
        res.writeHead(code, { 'content-type': type });
        res.end(body);
      };
      if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'method not allowed\n');
      if (path === '/healthz') return send(200, 'text/plain', 'ok\n');
      this.o
        .status()
        .then(async (s) => {
          if (path === '/readyz') {
            const failing = s.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`);
            return isReady(s) ? send(200, 'text/plain', 'ready\n') : send(503, 'text/plain', s.ready ? `not ready: ${failing.join('; ')}\n` : 'not ready: subnet file not written or backend not programmed yet\n');
          }
          if (path === '/metrics') return send(200, this.metrics.registry.contentType, await this.metrics.render(s));
          if (path === '/status') return send(200, 'application/json', JSON.stringify(s, null, 2) + '\n');
          send(404, 'text/plain', 'not found: /healthz /readyz /metrics /status\n');
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
    if (this.o.tcp) {
      const srv = createServer(this.handler());
      await listen(srv, this.o.tcp).catch((e: Error) => {
        throw new Error(`health endpoint ${this.o.tcp!.host}:${this.o.tcp!.port}: ${e.message}`);
      });
      this.servers.push(srv);
      this.o.log.info({ address: `${this.o.tcp.host}:${this.o.tcp.port}` }, 'serving /healthz /readyz /metrics /status');
    }
    if (this.o.socketPath) {
      // a socket left by a killed agent would make listen fail with EADDRINUSE
      mkdirSync(dirname(this.o.socketPath), { recursive: true, mode: 0o755 });
      rmSync(this.o.socketPath, { force: true });
      const srv = createServer(this.handler());
      await listen(srv, this.o.socketPath).catch((e: Error) => {
        throw new Error(`status socket ${this.o.socketPath}: ${e.message}`);
      });
      chmodSync(this.o.socketPath, 0o600);
      this.servers.push(srv);
    }
  }

  close(): void {
    for (const s of this.servers.splice(0)) s.close();
  }
}
