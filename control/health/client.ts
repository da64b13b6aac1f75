// Reads a running agent's endpoints over its unix socket (what `flannelctl status` shows).
import { request } from 'node:http';
import type { AgentStatus } from '../agent/status.js';

/** GET a path from the agent's unix socket: status code and body. */
export function getFromSocket(socketPath: string, path: string, timeoutMs = 5000): Promise<{ code: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ code: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${socketPath} within ${timeoutMs} ms`)));
    req.on('error', (e: NodeJS.ErrnoException) =>
      reject(
        new Error(
          e.code === 'ENOENT' || e.code === 'ECONNREFUSED'
            ? `no agent listening on ${socketPath} (is flanneld running? see --status-socket)`
            : e.code === 'EACCES'
              ? `${socketPath}: permission denied (the socket is root's)`
              : e.message,
        ),
      ),
    );
    req.end();
  });
}

export async function fetchStatus(socketPath: string): Promise<AgentStatus> {
  const { code, body } = await getFromSocket(socketPath, '/status');
  if (code !== 200) throw new Error(`agent answered ${code}: ${body.trim()}`);
  try {
    return JSON.parse(body) as AgentStatus;
  } catch (e) {
    throw new Error(`agent sent something that is not JSON: ${(e as Error).message}`);
  }
}
