// A real etcd server (Debian's etcd-server) for the lab and the tests: its own data dir and ports,
// optionally inside a network namespace; stopped and removed afterwards.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, openSync, closeSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface EtcdServer {
  endpoint: string;
  dataDir: string;
  /** a client from this process; only when etcd runs in this process's namespace */
  client: Etcd3;
  /** runs etcdctl against this server (inside its namespace), returns stdout */
  ctl(...args: string[]): Promise<string>;
  stop(): Promise<void>;
  start(): Promise<void>;
  /** the etcd process id while it runs */
  pid(): number | undefined;
  /** stops etcd and removes its data dir */
  destroy(): Promise<void>;
  /** for process 'exit' handlers: SIGKILL and remove the data dir, synchronously */
  killSync(): void;
}

const live = new Set<EtcdServer>();
process.once('exit', () => {
  for (const e of live) e.killSync();
});

export interface EtcdOptions {
  netns?: string;
  host?: string;
  clientPort?: number;
  /** default: a new temporary directory */
  dataDir?: string;
  /** outlives this process (the lab's `up` returns while the cluster runs); no exit-time cleanup */
  detached?: boolean;
  /** serve https and require client certificates signed by caFile; our own client uses clientCert/Key */
  tls?: { certFile: string; keyFile: string; caFile: string; clientCertFile: string; clientKeyFile: string };
}

export async function startEtcd(opts: EtcdOptions = {}): Promise<EtcdServer> {
  const host = opts.host ?? '127.0.0.1';
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'flannel-test-etcd-'));
  mkdirSync(dataDir, { recursive: true });
  const clientPort = opts.clientPort ?? (await freePort());
  const peerPort = await freePort();
  const tls = opts.tls;
  const endpoint = `${tls ? 'https' : 'http'}://${host}:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const args = [
    '--name',
    'test',
    '--data-dir',
    dataDir,
    '--listen-client-urls',
    endpoint,
    '--advertise-client-urls',
    endpoint,
    '--listen-peer-urls',
    peer,
    '--initial-advertise-peer-urls',
    peer,
    '--initial-cluster',
    `test=${peer}`,
    '--log-outputs',
    join(dataDir, 'etcd.log'),
    '--logger',
    'zap',
    ...(tls ? ['--cert-file', tls.certFile, '--key-file', tls.keyFile, '--client-cert-auth', '--trusted-ca-file', tls.caFile] : []),
  ];
  let proc: ChildProcess | undefined;
  const client = new Etcd3({
    hosts: endpoint,
    dialTimeout: 2000,
    ...(tls ? { credentials: { rootCertificate: readFileSync(tls.caFile), certChain: readFileSync(tls.clientCertFile), privateKey: readFileSync(tls.clientKeyFile) } } : {}),
  });
  const ctlTls = tls ? [`--cacert=${tls.caFile}`, `--cert=${tls.clientCertFile}`, `--key=${tls.clientKeyFile}`] : [];
  const ctl = async (...a: string[]) => {
    const argv = ['etcdctl', `--endpoints=${endpoint}`, ...ctlTls, ...a];
    const { stdout } = opts.netns ? await run('ip', ['netns', 'exec', opts.netns, ...argv]) : await run(argv[0]!, argv.slice(1));
    return stdout;
  };

  const server: EtcdServer = {
    endpoint,
    dataDir,
    client,
    ctl,
    async start() {
      const log = openSync(join(dataDir, 'stdout.log'), 'a');
      const cmd = opts.netns ? 'ip' : 'etcd';
      const argv = opts.netns ? ['netns', 'exec', opts.netns, 'etcd', ...args] : args;
      proc = spawn(cmd, argv, { stdio: ['ignore', log, log], detached: opts.detached === true });
      if (opts.detached) proc.unref();
      closeSync(log);
      const deadline = Date.now() + 20_000;
      for (;;) {
        if (proc.exitCode !== null) throw new Error(`etcd exited with ${proc.exitCode}; see ${dataDir}`);
        try {
          if (opts.netns) await ctl('get', 'health-probe');
          else await client.get('health-probe').string();
          return;
        } catch {
          if (Date.now() > deadline) throw new Error(`etcd at ${endpoint} did not answer within 20 s`);
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    },
    async stop() {
      const p = proc;
      proc = undefined;
      if (!p || p.exitCode !== null) return;
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
    pid: () => proc?.pid,
    killSync() {
      live.delete(server);
      proc?.kill('SIGKILL');
      rmSync(dataDir, { recursive: true, force: true });
    },
    async destroy() {
      live.delete(server);
      client.close();
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  if (!opts.detached) live.add(server);
  await server.start();
  return server;
}
