// Test-only etcd helpers; the server launcher itself is shared with the lab (control/lab/etcd.ts).
import { createServer, type Server, type Socket, connect } from 'node:net';
import { freePort } from '../../control/lab/etcd.ts';

export * from '../../control/lab/etcd.ts';

/** A TCP proxy in front of etcd that a test can cut (every connection closed, new ones refused). */
export interface Proxy {
  endpoint: string;
  cut(): void;
  restore(): void;
  close(): Promise<void>;
}

export async function startProxy(target: string): Promise<Proxy> {
  const u = new URL(target);
  const port = await freePort();
  const sockets = new Set<Socket>();
  let open = true;
  const srv: Server = createServer((c) => {
    if (!open) return c.destroy();
    const up = connect(Number(u.port), u.hostname);
    sockets.add(c).add(up);
    const drop = () => {
      c.destroy();
      up.destroy();
      sockets.delete(c);
      sockets.delete(up);
    };
    c.on('error', drop).on('close', drop);
    up.on('error', drop).on('close', drop);
    c.pipe(up).pipe(c);
  });
  await new Promise<void>((r) => srv.listen(port, '127.0.0.1', r));
  const cut = () => {
    open = false;
    for (const s of sockets) s.destroy();
    sockets.clear();
  };
  return {
    endpoint: `http://127.0.0.1:${port}`,
    cut,
    restore() {
      open = true;
    },
    async close() {
      cut();
      await new Promise((r) => srv.close(r));
    },
  };
}
