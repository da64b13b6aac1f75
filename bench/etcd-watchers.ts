// etcd under a cluster's watches: N watchers, each what a node runs (flannel's design: one gRPC
// connection, one watch on <prefix>/subnets/), against one real etcd on loopback, while leases churn.
// Measures the fan-out latency from a put to each watcher and to the last one, etcd's CPU and RSS, and
// the same through etcd's grpc-proxy (which serves many identical watches from one upstream watch).
// The watchers speak gRPC over Node's http2 with hand-encoded protobuf: an etcd3 client per watcher
// would measure the client library, not etcd.
// Usage: node --import tsx bench/etcd-watchers.ts [N ...]   (default 1000 5000 10000)
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startEtcd } from '../control/lab/etcd.ts';
import { percentile, rssBytes, sleep, log } from './lib.ts';

const PREFIX = '/coreos.com/network/subnets/';

// --- protobuf, just what a watch needs ---
const varint = (n: number) => {
  const out: number[] = [];
  do {
    out.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
    n >>>= 7;
  } while (n);
  return Buffer.from(out);
};
const field = (no: number, payload: Buffer) => Buffer.concat([varint((no << 3) | 2), varint(payload.length), payload]);
const grpcFrame = (msg: Buffer) => {
  const h = Buffer.alloc(5);
  h.writeUInt32BE(msg.length, 1);
  return Buffer.concat([h, msg]);
};
/** the length-delimited fields `no` of a message (varints and fixed fields are skipped) */
function fields(msg: Buffer, no: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < msg.length;) {
    let tag = 0,
      shift = 0,
      b: number;
    do {
      b = msg[i++]!;
      tag |= (b & 0x7f) << shift;
      shift += 7;
    } while (b & 0x80);
    const wire = tag & 7;
    if (wire === 0) while (msg[i++]! & 0x80);
    else if (wire === 1) i += 8;
    else if (wire === 5) i += 4;
    else if (wire === 2) {
      let len = 0;
      shift = 0;
      do {
        b = msg[i++]!;
        len |= (b & 0x7f) << shift;
        shift += 7;
      } while (b & 0x80);
      if (tag >>> 3 === no) out.push(msg.subarray(i, i + len));
      i += len;
    } else break;
  }
  return out;
}
const rangeEnd = (p: string) => {
  const b = Buffer.from(p);
  b[b.length - 1]!++;
  return b;
};
// WatchRequest{create_request: WatchCreateRequest{key, range_end}}
const WATCH = grpcFrame(field(1, Buffer.concat([field(1, Buffer.from(PREFIX)), field(2, rangeEnd(PREFIX))])));
const GRPC_HEADERS = { ':method': 'POST', 'content-type': 'application/grpc', te: 'trailers' };

/** One node's watch: keys of the events it receives, with the time each arrived. */
class Watcher {
  private buf: Buffer = Buffer.alloc(0);
  created = false;
  readonly seen = new Map<string, number>();
  private stream?: ClientHttp2Stream;
  constructor(
    private readonly session: ClientHttp2Session,
    private readonly onCreated: () => void,
  ) {
    this.stream = session.request({ ...GRPC_HEADERS, ':path': '/etcdserverpb.Watch/Watch' }, { endStream: false });
    this.stream.on('data', (d: Buffer) => this.data(d));
    this.stream.on('error', () => undefined);
    this.stream.write(WATCH);
  }
  private data(d: Buffer) {
    const now = performance.now();
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    while (this.buf.length >= 5) {
      const len = this.buf.readUInt32BE(1);
      if (this.buf.length < 5 + len) break;
      const msg = this.buf.subarray(5, 5 + len);
      this.buf = this.buf.subarray(5 + len);
      if (!this.created) {
        this.created = true;
        this.onCreated();
      }
      // WatchResponse.events (11) -> Event.kv (2) -> KeyValue.key (1)
      for (const ev of fields(msg, 11)) for (const kv of fields(ev, 2)) for (const k of fields(kv, 1)) this.seen.set(k.toString(), now);
    }
  }
  close() {
    this.stream?.close();
    this.session.close();
  }
}

function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

export interface WatchLoad {
  watchers: number;
  via: 'etcd' | 'grpc-proxy';
  puts: number;
  /** put to each watcher's receipt, ms */
  p50: number;
  p99: number;
  /** put to the last watcher's receipt, ms */
  lastP50: number;
  lastP99: number;
  missed: number;
  setupS: number;
  etcdCpuPerPutMs: number;
  etcdRssMB: number;
  proxyRssMB: number | null;
}

/** N watchers (directly or through a grpc-proxy) on one etcd, `puts` lease puts `gapMs` apart. */
export async function measureWatchLoad(n: number, via: 'etcd' | 'grpc-proxy', puts: number, gapMs: number): Promise<WatchLoad> {
  const dir = mkdtempSync(join(tmpdir(), 'flannel-bench-watch-'));
  const etcd = await startEtcd({ dataDir: join(dir, 'etcd') });
  let proxy: ChildProcess | undefined;
  const watchers: Watcher[] = [];
  const putter = connect(etcd.endpoint);
  putter.on('error', () => undefined);
  try {
    let target = etcd.endpoint;
    if (via === 'grpc-proxy') {
      const port = await freePort();
      proxy = spawn('etcd', ['grpc-proxy', 'start', `--endpoints=${etcd.endpoint}`, `--listen-addr=127.0.0.1:${port}`], { stdio: 'ignore' });
      target = `http://127.0.0.1:${port}`;
      await sleep(1000);
    }
    const t0 = performance.now();
    let created = 0;
    // opened in steps, as nodes start: a burst of 10000 handshakes at once measures the accept queue
    for (let i = 0; i < n; i += 250) {
      const batch = Math.min(250, n - i);
      await new Promise<void>((resolve, reject) => {
        let done = 0;
        const deadline = setTimeout(() => reject(new Error(`watchers not created after 60 s (${created} of ${n})`)), 60_000);
        for (let j = 0; j < batch; j++) {
          const s = connect(target);
          s.on('error', () => undefined);
          watchers.push(
            new Watcher(s, () => {
              created++;
              if (++done === batch) {
                clearTimeout(deadline);
                resolve();
              }
            }),
          );
        }
      });
    }
    const setupS = (performance.now() - t0) / 1000;
    const pid = etcd.pid()!;
    const cpu0 = cpuSeconds(pid);
    const sent = new Map<string, number>();
    for (let i = 0; i < puts; i++) {
      const key = `${PREFIX}10.${100 + (i >> 8)}.${i & 255}.0-24`;
      const value = JSON.stringify({ PublicIP: `100.64.${i >> 8}.${i & 255}`, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '02:00:00:00:00:01' } });
      sent.set(key, performance.now());
      const st = putter.request({ ...GRPC_HEADERS, ':path': '/etcdserverpb.KV/Put' });
      st.on('error', () => undefined);
      st.end(grpcFrame(Buffer.concat([field(1, Buffer.from(key)), field(2, Buffer.from(value))])));
      st.resume();
      await sleep(gapMs);
    }
    // every put reaches every watcher, or 10 s pass
    const end = Date.now() + 10_000;
    while (Date.now() < end && watchers.some((w) => w.seen.size < puts)) await sleep(50);
    const cpu = cpuSeconds(pid) - cpu0;
    const all: number[] = [];
    const last: number[] = [];
    let missed = 0;
    for (const [key, t] of sent) {
      let worst = 0;
      for (const w of watchers) {
        const r = w.seen.get(key);
        if (r === undefined) {
          missed++;
          continue;
        }
        all.push(r - t);
        worst = Math.max(worst, r - t);
      }
      last.push(worst);
    }
    return {
      watchers: n,
      via,
      puts,
      p50: percentile(all, 50),
      p99: percentile(all, 99),
      lastP50: percentile(last, 50),
      lastP99: percentile(last, 99),
      missed,
      setupS,
      etcdCpuPerPutMs: (cpu / puts) * 1000,
      etcdRssMB: rssBytes(pid) / 2 ** 20,
      proxyRssMB: proxy?.pid ? rssBytes(proxy.pid) / 2 ** 20 : null,
    };
  } finally {
    for (const w of watchers) w.close();
    putter.close();
    proxy?.kill('SIGKILL');
    await etcd.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const sizes = process.argv.slice(2).map(Number);
  for (const n of sizes.length ? sizes : [1000, 5000, 10000]) {
    for (const via of ['etcd', 'grpc-proxy'] as const) {
      const r = await measureWatchLoad(n, via, 50, 100);
      log(JSON.stringify(r));
      console.log(
        `${n} watchers via ${via}: put->watcher p50 ${r.p50.toFixed(1)} ms p99 ${r.p99.toFixed(1)} ms; put->last watcher p50 ${r.lastP50.toFixed(1)} ms p99 ${r.lastP99.toFixed(1)} ms; missed ${r.missed}; etcd CPU ${r.etcdCpuPerPutMs.toFixed(1)} ms/put, RSS ${r.etcdRssMB.toFixed(0)} MB${r.proxyRssMB !== null ? `, proxy RSS ${r.proxyRssMB.toFixed(0)} MB` : ''}; watchers set up in ${r.setupS.toFixed(1)} s`,
      );
    }
  }
}
