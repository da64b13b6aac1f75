// Security of the agent's edges, with the real flanneld in a namespace of its own: etcd over TLS with
// client certificates (a CA and certificates generated here), etcd users and passwords, the clear
// error for each wrong credential, the capabilities it refuses to run without, and the modes of the
// files it leaves for others to read.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { startEtcd, freePort, type EtcdServer } from '../helpers/etcd.ts';
import { FLANNELD } from '../helpers/lab.ts';
import { parseSubnetFile } from '../../control/subnet/subnet-file.ts';
import { getFromSocket } from '../../control/health/client.ts';

const ns = `flsec${randomBytes(3).toString('hex')}`;
const tmp = mkdtempSync(join(tmpdir(), 'flannel-test-sec-'));
const f = (n: string) => join(tmp, n);
const CONFIG = JSON.stringify({ Network: '10.233.0.0/16', Backend: { Type: 'host-gw' } });
let tlsEtcd: EtcdServer, authEtcd: EtcdServer;

function openssl(...args: string[]) {
  execFileSync('openssl', args, { stdio: 'pipe' });
}

/** An EC key and a certificate signed by `ca` (self-signed when ca is undefined). */
function cert(name: string, cn: string, ext: string, ca?: string) {
  const key = f(`${name}.key`),
    crt = f(`${name}.crt`);
  if (!ca) {
    openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', crt, '-days', '1', '-subj', `/CN=${cn}`);
    return;
  }
  writeFileSync(f(`${name}.ext`), ext);
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', f(`${name}.csr`), '-subj', `/CN=${cn}`);
  openssl('x509', '-req', '-in', f(`${name}.csr`), '-CA', f(`${ca}.crt`), '-CAkey', f(`${ca}.key`), '-CAcreateserial', '-out', crt, '-days', '1', '-extfile', f(`${name}.ext`));
}

before(async () => {
  cert('ca', 'flannel test CA', '');
  cert('server', 'etcd', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n', 'ca');
  cert('client', 'flanneld', 'extendedKeyUsage=clientAuth\n', 'ca');
  cert('rogue-ca', 'someone else', '');
  cert('rogue', 'flanneld', 'extendedKeyUsage=clientAuth\n', 'rogue-ca');
  // a node of its own: etcd listens on its loopback, flanneld uses "eth0"
  execFileSync('ip', ['netns', 'add', ns]);
  const inNs = (...a: string[]) => execFileSync('ip', ['netns', 'exec', ns, ...a]);
  inNs('ip', 'link', 'set', 'lo', 'up');
  // no dummy driver on this kernel: a veth pair with both ends inside the namespace
  inNs('ip', 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0p');
  inNs('ip', 'link', 'set', 'eth0p', 'up');
  inNs('ip', 'addr', 'add', '10.99.0.2/24', 'dev', 'eth0');
  inNs('ip', 'link', 'set', 'eth0', 'up');
  inNs('ip', 'route', 'add', 'default', 'via', '10.99.0.1');
  tlsEtcd = await startEtcd({
    netns: ns,
    clientPort: await freePort(),
    tls: { certFile: f('server.crt'), keyFile: f('server.key'), caFile: f('ca.crt'), clientCertFile: f('client.crt'), clientKeyFile: f('client.key') },
  });
  await tlsEtcd.ctl('put', '/coreos.com/network/config', CONFIG);
  authEtcd = await startEtcd({ netns: ns, clientPort: await freePort() });
  await authEtcd.ctl('user', 'add', 'root:rootpw');
  await authEtcd.ctl('user', 'add', 'flannel:s3cret');
  await authEtcd.ctl('role', 'add', 'flannel');
  await authEtcd.ctl('role', 'grant-permission', 'flannel', '--prefix=true', 'readwrite', '/coreos.com/network/');
  await authEtcd.ctl('user', 'grant-role', 'flannel', 'flannel');
  await authEtcd.ctl('auth', 'enable');
  await authEtcd.ctl('--user=root:rootpw', 'put', '/coreos.com/network/config', CONFIG);
});

after(async () => {
  await tlsEtcd?.destroy();
  await authEtcd?.destroy();
  try {
    execFileSync('ip', ['netns', 'del', ns]);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

interface Run {
  code: number | null;
  log: string;
  ready: boolean;
  /** still running when the deadline came (or when ready), and stopped by us */
  stoppedByUs: boolean;
  /** what onReady collected while the agent ran */
  probed: string;
}

/** Runs flanneld in the namespace until it writes its subnet file (then stops it) or exits on its own. */
async function flanneld(args: string[], o: { wrap?: string[]; ms?: number; onReady?: (socket: string) => Promise<string> } = {}): Promise<Run> {
  const id = randomBytes(3).toString('hex');
  const subnetFile = f(`subnet-${id}.env`);
  const argv = ['netns', 'exec', ns, ...(o.wrap ?? []), process.execPath, FLANNELD, '--iface=eth0', `--subnet-file=${subnetFile}`, `--status-socket=${f(`s-${id}.sock`)}`, ...args];
  const p = spawn('ip', argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  p.stdout.on('data', (d) => (log += d));
  p.stderr.on('data', (d) => (log += d));
  const exited = new Promise<number | null>((r) => p.once('exit', (c) => r(c)));
  const deadline = Date.now() + (o.ms ?? 15_000);
  let ready = false;
  let probed = '';
  while (Date.now() < deadline && p.exitCode === null) {
    if (existsSync(subnetFile)) {
      ready = true;
      // the modes an operator would check: the CNI plugin reads the file, nobody else writes it
      assert.equal(statSync(subnetFile).mode & 0o777, 0o644, 'subnet file is 0644');
      assert.equal(statSync(f(`s-${id}.sock`)).mode & 0o077, 0, 'status socket is root-only');
      assert.ok(parseSubnetFile(readFileSync(subnetFile, 'utf8')).FLANNEL_SUBNET?.startsWith('10.233.'));
      if (o.onReady) probed = await o.onReady(f(`s-${id}.sock`));
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const stoppedByUs = p.exitCode === null;
  if (stoppedByUs) p.kill('SIGTERM');
  const code = await exited;
  return { code, log, ready, stoppedByUs, probed };
}

const lastError = (log: string) => {
  const lines = log
    .trim()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { msg: string; err?: string; level: number });
  return lines
    .filter((l) => l.level >= 50)
    .map((l) => `${l.msg}: ${l.err}`)
    .join('\n');
};

test("etcd over TLS with client certificates: flanneld gets its lease; etcd holds flannel's JSON", async () => {
  const r = await flanneld([`--etcd-endpoints=${tlsEtcd.endpoint}`, `--etcd-cafile=${f('ca.crt')}`, `--etcd-certfile=${f('client.crt')}`, `--etcd-keyfile=${f('client.key')}`]);
  assert.ok(r.ready, r.log.slice(-2000));
  const leases = await tlsEtcd.ctl('get', '--prefix', '/coreos.com/network/subnets/');
  assert.match(leases, /\{"PublicIP":"10\.99\.0\.2","PublicIPv6":null,"BackendType":"host-gw"\}/);
});

test("without --etcd-cafile the system's roots verify etcd, as flannel's (Go's SSL_CERT_FILE names them): with our CA there it works, otherwise a clear error", async () => {
  const args = [`--etcd-endpoints=${tlsEtcd.endpoint}`, `--etcd-certfile=${f('client.crt')}`, `--etcd-keyfile=${f('client.key')}`];
  const trusted = await flanneld(args, { wrap: ['env', `SSL_CERT_FILE=${f('ca.crt')}`] });
  assert.ok(trusted.ready, trusted.log.slice(-2000));
  const untrusted = await flanneld(args, { ms: 30_000 });
  assert.equal(untrusted.code, 1);
  assert.match(lastError(untrusted.log), /etcd's server certificate is not trusted/);
});

test('wrong certificates fail at once with an error that says which and what to check', async () => {
  const base = [`--etcd-endpoints=${tlsEtcd.endpoint}`];
  const cases: [string, string[], RegExp][] = [
    [
      'a client certificate from another CA',
      [`--etcd-cafile=${f('ca.crt')}`, `--etcd-certfile=${f('rogue.crt')}`, `--etcd-keyfile=${f('rogue.key')}`],
      /TLS with etcd at https:\/\/127\.0\.0\.1:\d+ fails: etcd rejected our client certificate \(TLS alert "(bad certificate|unknown ca)"\) \(check --etcd-cafile, --etcd-certfile, --etcd-keyfile\)$/,
    ],
    [
      'a CA that did not sign the server',
      [`--etcd-cafile=${f('rogue-ca.crt')}`, `--etcd-certfile=${f('client.crt')}`, `--etcd-keyfile=${f('client.key')}`],
      /TLS with etcd at .* fails: etcd's server certificate is not trusted: (self[- ]signed certificate|unable to (get local issuer|verify)).*check --etcd-cafile/,
    ],
    [
      'no client certificate at all',
      [`--etcd-cafile=${f('ca.crt')}`],
      /TLS with etcd at .* fails: etcd rejected our client certificate \(TLS alert "(certificate required|handshake failure|bad certificate)"\)/,
    ],
    ['a missing key file', [`--etcd-cafile=${f('ca.crt')}`, `--etcd-certfile=${f('client.crt')}`, `--etcd-keyfile=${f('nope.key')}`], /--etcd-keyfile \S+nope\.key: no such file/],
  ];
  for (const [what, args, want] of cases) {
    const t0 = Date.now();
    const r = await flanneld([...base, ...args], { ms: 30_000 });
    assert.equal(r.code, 1, `${what}: exit code`);
    assert.ok(!r.ready, what);
    assert.match(lastError(r.log), want, what);
    assert.ok(Date.now() - t0 < 15_000, `${what}: fails within seconds, no endless retry`);
  }
});

test('etcd with users and passwords: the right one works, a wrong one is a clear error', async () => {
  // at trace verbosity, and with everything the status socket serves read while it runs
  const ok = await flanneld([`--etcd-endpoints=${authEtcd.endpoint}`, '--etcd-username=flannel', '--etcd-password=s3cret', '-v=3'], {
    onReady: async (sock) => {
      let all = '';
      for (const path of ['/status', '/metrics', '/readyz']) {
        const r = await getFromSocket(sock, path);
        assert.ok(r.code === 200 || (path === '/readyz' && r.code === 503), `${path}: ${r.code}`);
        all += r.body;
      }
      return all;
    },
  });
  assert.ok(ok.ready, ok.log.slice(-2000));
  assert.match(ok.probed, /flannel_lease_info/, 'the socket answered while the agent ran');
  assert.match(ok.log, /"msg":"CLI flags config"/, 'the flags were logged');
  assert.match(ok.log, /"etcdUsername":"flannel","etcdPassword":"\(set, not shown\)"/);
  assert.doesNotMatch(ok.log, /s3cret/, 'the password never appears in the logs');
  assert.doesNotMatch(ok.probed, /s3cret/, 'nor in /status, /metrics or /readyz');
  const bad = await flanneld([`--etcd-endpoints=${authEtcd.endpoint}`, '--etcd-username=flannel', '--etcd-password=wrong'], { ms: 30_000 });
  assert.equal(bad.code, 1);
  assert.match(lastError(bad.log), /etcd refused our credentials \(--etcd-username\/--etcd-password\): .*authentication failed/);
  // no credentials against an etcd with auth on: a clear, fatal error naming the flags, within
  // seconds (not a crash, not an endless wait for a config it may not read)
  const t0 = Date.now();
  const none = await flanneld([`--etcd-endpoints=${authEtcd.endpoint}`], { ms: 20_000 });
  assert.ok(!none.ready);
  assert.ok(!none.stoppedByUs, 'it exited on its own');
  assert.equal(none.code, 1);
  assert.match(lastError(none.log), /^failed to start: etcd refused our credentials \(--etcd-username\/--etcd-password\): .*user name is empty/);
  assert.doesNotMatch(none.log, /TypeError|ReferenceError|at .*\.js:\d+/, 'no stack trace: an error for the operator');
  assert.ok(Date.now() - t0 < 15_000);
});

test('without the capabilities it needs, flanneld refuses to start and names them', async () => {
  const auth = [`--etcd-endpoints=${authEtcd.endpoint}`, '--etcd-username=flannel', '--etcd-password=s3cret'];
  const noNetAdmin = await flanneld(auth, { wrap: ['setpriv', '--bounding-set=-net_admin', '--'] });
  assert.equal(noNetAdmin.code, 1);
  assert.match(lastError(noNetAdmin.log), /lacks capabilities it needs: CAP_NET_ADMIN/);
  // BPF mode (a vxlan config) without CAP_BPF and CAP_SYS_ADMIN
  await authEtcd.ctl('--user=root:rootpw', 'put', '/coreos.com/network/config', JSON.stringify({ Network: '10.233.0.0/16', Backend: { Type: 'vxlan' } }));
  try {
    const noBpf = await flanneld(auth, { wrap: ['setpriv', '--bounding-set=-bpf,-sys_admin', '--'] });
    assert.equal(noBpf.code, 1);
    assert.match(lastError(noBpf.log), /CAP_BPF or CAP_SYS_ADMIN .*--no-bpf/);
    assert.doesNotMatch(lastError(noBpf.log), /CAP_NET_ADMIN/, 'only what is missing is named');
  } finally {
    await authEtcd.ctl('--user=root:rootpw', 'put', '/coreos.com/network/config', CONFIG);
  }
});

test("flannelctl leases takes flanneld's etcd TLS and password flags, and prints each lease under its subnet", () => {
  const ctl = join(dirname(FLANNELD), 'flannelctl.js');
  const run = (...args: string[]) => spawnSync('ip', ['netns', 'exec', ns, process.execPath, ctl, 'leases', ...args], { encoding: 'utf8' });
  // the TLS test above left flanneld's lease in this etcd
  const tls = run(`--etcd-endpoints=${tlsEtcd.endpoint}`, `--etcd-cafile=${f('ca.crt')}`, `--etcd-certfile=${f('client.crt')}`, `--etcd-keyfile=${f('client.key')}`);
  assert.equal(tls.status, 0, tls.stderr);
  assert.match(tls.stdout, /^10\.233\.\d+\.0\/24 +\{"PublicIP":"10\.99\.0\.2"/m);
  const auth = run(`--etcd-endpoints=${authEtcd.endpoint}`, '--etcd-username=flannel', '--etcd-password=s3cret');
  assert.equal(auth.status, 0, auth.stderr);
  assert.match(auth.stdout, /^10\.233\.\d+\.0\/24 +\{"PublicIP":"10\.99\.0\.2"/m);
  // the same combination rules as flanneld
  const half = run(`--etcd-endpoints=${tlsEtcd.endpoint}`, `--etcd-certfile=${f('client.crt')}`);
  assert.equal(half.status, 2);
  assert.match(half.stderr, /--etcd-certfile and --etcd-keyfile go together/);
});
