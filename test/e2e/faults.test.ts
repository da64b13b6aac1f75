// Fault injection on a three-node BPF lab: what clusters do to a network agent (etcd outages and data
// loss, compaction, bursts, a slow etcd, kill -9 at any moment, expiring and revoked leases, vanished
// nodes, link flaps, state deleted by hand, hostile leases and hostile packets). Each case checks that
// pods keep talking (or says how long they did not) and that no state is lost, duplicated or left over.
// At the end a table (case, check, result, time to recover) is printed, and written to $FAULTS_REPORT.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TestLab, PREFIX, UNDERLAY_GW, packetsByVerdict, type LabNode, type Pod } from '../helpers/lab.ts';
import { inNs, inNsMaybe, ip, sh, until } from '../helpers/netns.ts';
import { BpfMap } from '../../control/kernel/bpf.ts';
import { fetchStatus } from '../../control/health/client.ts';
import { formatIp4, type Subnet } from '../../control/subnet/ip4.ts';
import { table } from '../../control/text.ts';

const FIX = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');
const ETCD_DOWN_S = Number(process.env.FAULT_ETCD_DOWN_S ?? 60);
const ENDPOINT = `http://${UNDERLAY_GW}:2379`;

type Row = { case: string; check: string; result: string; recovery: string };
const report: Row[] = [];
const row = (c: string, check: string, result: string, recovery: string) => report.push({ case: c, check, result, recovery });
const secs = (s: number) => `${s.toFixed(2)} s`;

function mapKeys(n: LabNode, name: string): number {
  const m = BpfMap.openPinned(join(n.pinRoot, name));
  try {
    return m.keys().length;
  } finally {
    m.close();
  }
}

const alive = (n: LabNode) => !!n.agent && n.agent.exitCode === null && n.agent.signalCode === null;

/** Times fn until it holds, polling every 50 ms; seconds. */
async function timeTo(what: string, fn: () => Promise<boolean> | boolean, ms = 30_000): Promise<number> {
  const t0 = performance.now();
  await until(what, async () => (await fn()) || undefined, ms, 50);
  return (performance.now() - t0) / 1000;
}

const pingOnce = async (from: Pod, to: string) => (await inNsMaybe(from.ns, 'ping', '-c', '1', '-W', '1', to)).includes(' 0% packet loss');

/** A ping running in the background; resolves with sent and lost counts. */
function pingDuring(from: Pod, to: string, seconds: number, interval = 0.1): Promise<{ sent: number; lost: number }> {
  const count = Math.round(seconds / interval);
  return inNsMaybe(from.ns, 'ping', '-c', String(count), '-i', String(interval), '-W', '1', to).then((out) => {
    const m = /(\d+) packets transmitted, (\d+) received/.exec(out);
    assert.ok(m, out);
    return { sent: Number(m[1]), lost: Number(m[1]) - Number(m[2]) };
  });
}

// the default mode is bypass, whose tc program on the underlay is the guard that also decapsulates
const TC_GUARD = 'fl_guard_bypass';
const ourTcGuard = (name: string) => name === 'fl_guard_tc' || name === TC_GUARD;

describe('faults on three BPF nodes', { timeout: 900_000 }, () => {
  let lab: TestLab;
  let subnets: Map<LabNode, Subnet>;
  let n1: LabNode, n2: LabNode, n3: LabNode;
  const helpers: ChildProcess[] = [];

  /** Every running node holds exactly one entry per other node in each map; etcd one lease per node. */
  async function exactState(nodes = lab.nodes) {
    const leases = await lab.leases();
    assert.equal(leases.size, nodes.length, `etcd holds one lease per node: ${[...leases.keys()].join(', ')}`);
    assert.equal(new Set([...leases.values()].map((l) => l.PublicIP)).size, nodes.length, 'no two leases for one node');
    for (const n of nodes) for (const m of ['fl_subnets', 'fl_vteps', 'fl_members']) assert.equal(mapKeys(n, m), nodes.length - 1, `${n.ns} ${m}`);
  }
  const ctl = (...a: string[]) => lab.etcd.ctl(...a);
  const burst = (action: 'put' | 'del', count: number) => inNs(lab.underlay, process.execPath, '--import', 'tsx', join(FIX, 'etcd-burst.ts'), ENDPOINT, PREFIX, action, String(count));

  before(async () => {
    // /8 so that a burst of 500 synthetic /24 leases fits next to the real ones
    lab = await TestLab.create({ nodes: 3, config: JSON.stringify({ Network: '10.0.0.0/8', SubnetLen: 24, SubnetMax: '10.0.100.0', Backend: { Type: 'vxlan' } }) });
    subnets = await lab.bringUp();
    [n1, n2, n3] = lab.nodes as [LabNode, LabNode, LabNode];
    await until('all pods reachable', async () => (await lab.pingAll()).length === 0 || undefined, 20_000, 500);
  });

  after(async () => {
    for (const h of helpers) h.kill('SIGKILL');
    await lab?.destroy();
    const text = table([['case', 'what was checked', 'result', 'time to recover'], ...report.map((r) => [r.case, r.check, r.result, r.recovery])], '');
    console.log(`\n${text}`);
    if (process.env.FAULTS_REPORT) {
      const md = ['| case | what was checked | result | time to recover |', '|---|---|---|---|', ...report.map((r) => `| ${r.case} | ${r.check} | ${r.result} | ${r.recovery} |`)].join('\n');
      writeFileSync(process.env.FAULTS_REPORT, `${md}\n`);
    }
  });

  test(`etcd stopped for ${ETCD_DOWN_S} s: pods keep talking, the watch resumes, no peer lost or doubled`, async () => {
    const ping = pingDuring(n1.pods[0]!, n2.pods[0]!.ip, ETCD_DOWN_S + 6, 0.2);
    await new Promise((r) => setTimeout(r, 1000));
    await lab.etcd.stop();
    await new Promise((r) => setTimeout(r, ETCD_DOWN_S * 1000));
    await lab.etcd.start();
    // a lease written right after etcd is back must reach every node: the watches resumed
    const t0 = performance.now();
    await burst('put', 1);
    await until('new lease programmed everywhere', () => lab.nodes.every((n) => mapKeys(n, 'fl_subnets') === 3) || undefined, 30_000, 50);
    const resumed = (performance.now() - t0) / 1000;
    await burst('del', 1);
    await until('removed everywhere', () => lab.nodes.every((n) => mapKeys(n, 'fl_subnets') === 2) || undefined, 15_000, 50);
    const p = await ping;
    assert.equal(p.lost, 0, `${p.lost} of ${p.sent} pings lost while etcd was down`);
    assert.ok(lab.nodes.every(alive), 'no agent gave up');
    await exactState();
    row(
      `etcd down ${ETCD_DOWN_S} s`,
      'pod ping every 0.2 s throughout; new lease after restart; maps and leases exact',
      `0/${p.sent} pings lost`,
      `watch resumed: ${secs(resumed)} from etcd up to the new lease in every map`,
    );
  });

  test('etcd data wiped: agents write their leases and the config back, pods keep talking', async () => {
    const before = await lab.leases();
    const ping = pingDuring(n1.pods[0]!, n3.pods[0]!.ip, 20, 0.1);
    await new Promise((r) => setTimeout(r, 500));
    await lab.etcd.stop();
    rmSync(join(lab.etcd.dataDir, 'member'), { recursive: true, force: true });
    await lab.etcd.start();
    const back = await timeTo('leases and config back', async () => (await lab.leases()).size === 3 && (await ctl('get', `${PREFIX}/config`)).includes('10.0.0.0/8'), 30_000);
    const p = await ping;
    assert.equal(p.lost, 0, `${p.lost} of ${p.sent} pings lost`);
    assert.ok(lab.nodes.every(alive), 'no agent exited');
    assert.deepEqual(await lab.leases(), before, 'the same leases, byte for byte');
    await exactState();
    const st = await fetchStatus(n1.statusSocket);
    assert.ok(st.watch.storeLosses >= 1, 'the loss is counted');
    row(
      'etcd data wiped',
      'same leases and config re-written by the agents; pods ping throughout; maps exact',
      `0/${p.sent} pings lost; leases identical`,
      `${secs(back)} from etcd up to all leases back`,
    );
  });

  test('compaction while watching, then a burst of 1000 lease events (500 puts, 500 deletes)', async () => {
    const rev = (JSON.parse(await ctl('endpoint', 'status', '-w', 'json')) as { Status: { header: { revision: number } } }[])[0]!.Status.header.revision;
    await ctl('compact', String(rev));
    const ping = pingDuring(n1.pods[0]!, n2.pods[0]!.ip, 15, 0.1);
    const t0 = performance.now();
    await burst('put', 500);
    await until('500 peers everywhere', () => lab.nodes.every((n) => mapKeys(n, 'fl_subnets') === 502 && mapKeys(n, 'fl_members') === 502) || undefined, 60_000, 50);
    const up = (performance.now() - t0) / 1000;
    const t1 = performance.now();
    await burst('del', 500);
    await until('back to 2 peers', () => lab.nodes.every((n) => mapKeys(n, 'fl_subnets') === 2 && mapKeys(n, 'fl_vteps') === 2 && mapKeys(n, 'fl_members') === 2) || undefined, 60_000, 50);
    const down = (performance.now() - t1) / 1000;
    const p = await ping;
    assert.equal(p.lost, 0);
    await exactState();
    row(
      'compaction + 1000 lease events',
      'maps reach 502 entries on every node, then exactly 2 again; pods ping throughout',
      `0/${p.sent} pings lost`,
      `500 puts in every map: ${secs(up)}; 500 deletes: ${secs(down)}`,
    );
  });

  test('a slow etcd (200 ms each way through a delaying proxy): the agent starts and follows events', async () => {
    const proxy = spawn('ip', ['netns', 'exec', lab.underlay, process.execPath, '--import', 'tsx', join(FIX, 'delay-proxy.ts'), UNDERLAY_GW, '23790', UNDERLAY_GW, '2379', '200'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    helpers.push(proxy);
    await new Promise((r) => proxy.stdout.once('data', r));
    await lab.stopAgent(n3);
    const t0 = performance.now();
    lab.startAgent(n3, [`--etcd-endpoints=http://${UNDERLAY_GW}:23790`]);
    await lab.waitReady(n3, 60_000);
    const ready = (performance.now() - t0) / 1000;
    const t1 = performance.now();
    await burst('put', 1);
    await until('slow node sees the new lease', () => mapKeys(n3, 'fl_subnets') === 3 || undefined, 30_000, 20);
    const follow = (performance.now() - t1) / 1000;
    await burst('del', 1);
    await until('and its removal', () => mapKeys(n3, 'fl_subnets') === 2 || undefined, 30_000, 20);
    assert.deepEqual(await lab.pingAll(), []);
    await lab.stopAgent(n3);
    proxy.kill('SIGKILL');
    lab.startAgent(n3);
    await lab.waitReady(n3);
    await exactState();
    row('etcd slow (+400 ms RTT)', 'agent starts through the proxy, follows a put and a delete; all pods ping', 'ok', `start to ready ${secs(ready)}; event to map ${secs(follow)}`);
  });

  test('kill -9 twenty times at random moments of start, programming and renewal: subnet kept, nothing stale or doubled', async () => {
    const subnet = formatIp4(subnets.get(n3)!.ip);
    const phases = { starting: 0, ready: 0, renewing: 0 };
    // a 6 s TTL renews every 3 s, so kills land in renewals too
    const short = ['--subnet-lease-ttl=6'];
    let seed = 7;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    await lab.stopAgent(n3);
    for (let i = 0; i < 20; i++) {
      lab.startAgent(n3, short);
      const wait = Math.floor(rand() * 4500);
      await new Promise((r) => setTimeout(r, wait));
      const log = lab.logs(n3);
      phases[log.includes('renewed our lease') ? 'renewing' : log.includes('"msg":"ready"') ? 'ready' : 'starting']++;
      await lab.stopAgent(n3, 'SIGKILL');
    }
    const t0 = performance.now();
    lab.startAgent(n3);
    const { subnet: got } = await lab.waitReady(n3);
    assert.equal(formatIp4(got.ip), subnet, 'the subnet is kept');
    await until('maps settled', () => lab.nodes.every((n) => mapKeys(n, 'fl_subnets') === 2) || undefined, 15_000, 50);
    const rec = (performance.now() - t0) / 1000;
    await exactState();
    for (const [dev, dir] of [
      ['flannel.1', 'egress'],
      ['flannel.1', 'ingress'],
      ['eth0', 'ingress'],
    ] as const) {
      const filters = (await inNs(n3.ns, 'tc', 'filter', 'show', 'dev', dev, dir)).split('\n').filter((l) => /fl_\w+/.test(l) && l.includes('jited'));
      assert.equal(filters.length, 1, `one program on ${dev} ${dir}, not stacked`);
    }
    assert.deepEqual(await lab.pingAll(), []);
    row(
      'kill -9 x20 (start/programming/renewal)',
      `kills while starting ${phases.starting}, ready ${phases.ready}, renewing ${phases.renewing}; then subnet, leases, maps, tc filters`,
      'subnet kept; 1 lease; no stale/duplicate entry or filter',
      `restart to programmed ${secs(rec)}`,
    );
  });

  test('lease expiry: renewed with a 6 s TTL it lives on; an agent that stops renewing loses it and its entries go everywhere', async () => {
    await lab.stopAgent(n3);
    lab.startAgent(n3, ['--subnet-lease-ttl=6']);
    await lab.waitReady(n3);
    const key = `${PREFIX}/subnets/${formatIp4(subnets.get(n3)!.ip)}-24`;
    // lease IDs are int64: read the digits, JSON.parse would round neighbouring IDs to one double
    const leaseId = async () => /"lease":(\d+)/.exec(await ctl('get', key, '-w', 'json'))?.[1];
    const first = await leaseId();
    await new Promise((r) => setTimeout(r, 14_000));
    assert.ok((await leaseId()) && (await leaseId()) !== first, 'still there after 14 s, under a new etcd lease');
    assert.ok(await pingOnce(n1.pods[0]!, n3.pods[0]!.ip));
    // hung agent: renewals stop, the data plane stays
    process.kill(n3.agent!.pid!, 'SIGSTOP');
    const goneAfter = await timeTo('lease expired', async () => (await leaseId()) === undefined, 20_000);
    const removed = await timeTo('entries removed on the others', () => mapKeys(n1, 'fl_subnets') === 1 && mapKeys(n2, 'fl_subnets') === 1, 10_000);
    process.kill(n3.agent!.pid!, 'SIGCONT');
    const code = await n3.exited;
    assert.equal(code, 0, 'an agent that finds its lease gone stops and exits 0, as flannel');
    assert.match(lab.logs(n3), /our lease is gone/);
    lab.startAgent(n3);
    const { subnet } = await lab.waitReady(n3);
    assert.equal(subnet.ip, subnets.get(n3)!.ip, 'restarted, it takes its subnet back');
    await until('peers re-added', () => lab.nodes.every((n) => mapKeys(n, 'fl_subnets') === 2) || undefined, 10_000, 50);
    await exactState();
    row(
      'lease TTL 6 s renewed / not renewed',
      'renewed: key alive after 14 s under new etcd leases; agent frozen: key expires, peers drop it, agent stops (exit 0) on resume',
      'ok',
      `expiry ${secs(goneAfter)} after freeze; peers dropped it ${secs(removed)} after expiry`,
    );
  });

  test('a node vanishes (agent killed, link down) without deleting its lease: entries stay until the lease expires, then go everywhere', async () => {
    await lab.stopAgent(n3);
    lab.startAgent(n3, ['--subnet-lease-ttl=6']);
    await lab.waitReady(n3);
    await lab.stopAgent(n3, 'SIGKILL');
    await ip('-n', n3.ns, 'link', 'set', 'eth0', 'down');
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal(mapKeys(n1, 'fl_subnets'), 2, 'kept while the lease lives (the node may only be partitioned)');
    await until('entries removed on the others', () => (mapKeys(n1, 'fl_subnets') === 1 && mapKeys(n2, 'fl_subnets') === 1) || undefined, 15_000, 50);
    const gone = (performance.now() - t0) / 1000;
    assert.ok(gone <= 8, `gone within TTL + 2 s (${gone} s)`);
    assert.equal((await lab.leases()).size, 2);
    await ip('-n', n3.ns, 'link', 'set', 'eth0', 'up');
    await ip('-n', n3.ns, 'route', 'replace', 'default', 'via', UNDERLAY_GW);
    lab.startAgent(n3);
    await lab.waitReady(n3);
    await until('back everywhere', () => lab.nodes.every((n) => mapKeys(n, 'fl_subnets') === 2) || undefined, 10_000, 50);
    assert.deepEqual(await lab.pingAll(), []);
    row('node vanishes, lease left behind', 'entries kept 2 s later, removed on every node once the 6 s lease expired', 'ok', `${secs(gone)} from the kill to removal everywhere`);
  });

  test('our lease revoked by an operator: the agent stops (exit 0, as flannel) and says why; the others drop it', async () => {
    const key = `${PREFIX}/subnets/${formatIp4(subnets.get(n2)!.ip)}-24`;
    const id = /"lease":(\d+)/.exec(await ctl('get', key, '-w', 'json'))![1]!;
    await ctl('lease', 'revoke', BigInt(id).toString(16));
    assert.equal(await n2.exited, 0);
    assert.match(lab.logs(n2), /our lease is gone/);
    const dropped = await timeTo('others drop it', () => mapKeys(n1, 'fl_subnets') === 1 && mapKeys(n3, 'fl_subnets') === 1, 10_000);
    lab.startAgent(n2);
    await lab.waitReady(n2);
    await until('back', () => lab.nodes.every((n) => mapKeys(n, 'fl_subnets') === 2) || undefined, 10_000, 50);
    assert.deepEqual(await lab.pingAll(), []);
    row('own lease revoked (etcdctl lease revoke)', 'agent stops (exit 0) with "our lease is gone", peers drop it, a restart takes it back', 'ok', `peers dropped it in ${secs(dropped)}`);
  });

  test('underlay link flap, flannel.1 deleted, pins deleted, programs detached by hand: repaired', async () => {
    const [a, b] = [n1.pods[0]!, n2.pods[0]!];
    // link flap
    await ip('-n', n2.ns, 'link', 'set', 'eth0', 'down');
    await new Promise((r) => setTimeout(r, 2000));
    await ip('-n', n2.ns, 'link', 'set', 'eth0', 'up');
    const flap = await timeTo('pods talk after the flap', () => pingOnce(a, b.ip));
    await ip('-n', n2.ns, 'route', 'replace', 'default', 'via', UNDERLAY_GW);
    row('underlay link down 2 s, up', 'pod ping resumes; programs still attached', 'ok', `${secs(flap)} after link up`);

    // flannel.1 deleted
    const mac = (await inNs(n2.ns, 'cat', '/sys/class/net/flannel.1/address')).trim();
    await ip('-n', n2.ns, 'link', 'del', 'flannel.1');
    const dev = await timeTo('flannel.1 repaired', async () => (await pingOnce(a, b.ip)) && (await pingOnce(b, a.ip)));
    assert.equal((await inNs(n2.ns, 'cat', '/sys/class/net/flannel.1/address')).trim(), mac, 'recreated with the same MAC: peers need nothing');
    assert.match(lab.logs(n2), /VXLAN device disappeared/);
    row('flannel.1 deleted by hand', 'recreated with the same MAC, address, route and programs; pods ping both ways', 'ok', `${secs(dev)} (reconcile every 1 s in the lab, 10 s by default)`);

    // pins removed: the data plane keeps running on the maps the programs hold; the pins come back
    const ping = pingDuring(a, b.ip, 4, 0.1);
    for (const f of readdirSync(n2.pinRoot).filter((x) => x.startsWith('fl_'))) unlinkSync(join(n2.pinRoot, f));
    const pins = await timeTo('pins back', () => ['fl_subnets', 'fl_vteps', 'fl_members', 'fl_config', 'fl_stats', 'fl_peer_stats'].every((m) => existsSync(join(n2.pinRoot, m))));
    const p = await ping;
    assert.equal(p.lost, 0);
    assert.equal(mapKeys(n2, 'fl_subnets'), 2, 'the pinned map is the live one');
    row('BPF pins deleted by hand', 'pods ping throughout; every map pinned again and is the live map', `0/${p.sent} pings lost`, `${secs(pins)} to re-pin`);

    // programs detached
    await inNs(n2.ns, 'tc', 'filter', 'del', 'dev', 'flannel.1', 'egress');
    await inNs(n2.ns, 'tc', 'filter', 'del', 'dev', 'eth0', 'ingress');
    const att = await timeTo(
      'programs back',
      async () =>
        (await inNs(n2.ns, 'tc', 'filter', 'show', 'dev', 'flannel.1', 'egress')).includes('fl_vxlan_egress') &&
        (await inNs(n2.ns, 'tc', 'filter', 'show', 'dev', 'eth0', 'ingress')).includes(TC_GUARD) &&
        (await pingOnce(b, a.ip)),
    );
    const st = await fetchStatus(n2.statusSocket);
    assert.ok(
      st.checks.every((c) => c.ok),
      JSON.stringify(st.checks.filter((c) => !c.ok)),
    );
    row('tc programs detached by hand', 'egress program and underlay guard re-attached; status checks all ok', 'ok', `${secs(att)}`);
  });

  test('hostile leases from another writer: skipped and reported, never programmed', async () => {
    const vx = (o: Record<string, unknown>) => JSON.stringify({ PublicIP: '172.20.0.77', PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '02:00:00:00:77:01' }, ...o });
    // keys beyond SubnetMax (10.0.100.0): inside the network but never a real node's, which a put would overwrite
    const bad: [string, string, string][] = [
      ['wider subnet over the nodes', '10.0.0.0-16', vx({})],
      ['outside the network', '192.168.7.0-24', vx({})],
      ["claims node 1's public IP", '10.9.99.0-24', vx({ PublicIP: n1.ip })],
      ['multicast VTEP MAC', '10.9.98.0-24', vx({ BackendData: { VNI: 1, VtepMAC: '01:00:5e:00:00:01' } })],
      ['absurd VNI', '10.9.97.0-24', vx({ BackendData: { VNI: 2 ** 40, VtepMAC: '02:00:00:00:77:02' } })],
      ['huge value', '10.9.96.0-24', vx({ Pad: 'x'.repeat(100_000) })],
      ['not JSON', '10.9.95.0-24', '{"PublicIP":'],
      ['key is no subnet', 'not-a-subnet', vx({})],
      // a free subnet and a stranger's address, but node 2's VTEP MAC: would steer node 2's traffic to it
      ["reuses node 2's VTEP MAC", '10.9.94.0-24', vx({ BackendData: { VNI: 1, VtepMAC: (await lab.leases()).get(`${formatIp4(subnets.get(n2)!.ip)}-24`)!.BackendData!.VtepMAC.toUpperCase() } })],
    ];
    // the watch rejects what no backend could use; the vxlan backend rejects the bad VNI (once: a lease
    // it cannot use is counted when it arrives, not again at every reconcile)
    const rejected = async () => {
      const s = await fetchStatus(n1.statusSocket);
      return { watch: s.watch.rejected, backend: s.reconcile.rejected };
    };
    const r0 = await rejected();
    for (const [, k, v] of bad) await ctl('put', `${PREFIX}/subnets/${k}`, v);
    await until(
      'rejections counted',
      async () => {
        const r = await rejected();
        return (r.watch - r0.watch >= bad.length - 2 && r.backend - r0.backend >= 1) || undefined;
      },
      10_000,
    );
    await new Promise((r) => setTimeout(r, 1500)); // two reconciles
    for (const n of lab.nodes) {
      assert.ok(alive(n), `${n.ns} still running`);
      for (const m of ['fl_subnets', 'fl_vteps', 'fl_members']) assert.equal(mapKeys(n, m), 2, `${n.ns} ${m} unchanged`);
    }
    assert.deepEqual(await lab.pingAll(), []);
    assert.match(lab.logs(n1), /ignoring a malformed or conflicting lease/);
    await ctl('del', '--prefix', `${PREFIX}/subnets/not-a-subnet`);
    for (const [, k] of bad) await ctl('del', `${PREFIX}/subnets/${k}`);
    await exactState();
    row(`${bad.length} hostile leases`, bad.map((b) => b[0]).join(', '), 'none programmed; counted (watch.rejected, or reconcile.rejected for VNI/MAC) and logged; all pods ping', '-');
  });

  test('VXLAN injection: from a non-member and with the wrong VNI, dropped and counted (drop rate)', async () => {
    const attacker = await lab.addStranger();
    try {
      const mac1 = (await lab.leases()).get(`${formatIp4(subnets.get(n1)!.ip)}-24`)!.BackendData!.VtepMAC;
      const send = (ns: string, vni: number, count: number, src: string) =>
        inNs(ns, process.execPath, '--import', 'tsx', join(FIX, 'send-vxlan.ts'), n1.ip, '8472', String(vni), String(count), mac1, src, n1.pods[0]!.ip);
      const N = 20_000;
      const s0 = packetsByVerdict(n1);
      const t0 = performance.now();
      await send(attacker, 1, N, '10.0.77.9');
      const sendS = (performance.now() - t0) / 1000;
      await until('all counted', () => packetsByVerdict(n1).spoofed - s0.spoofed >= N || undefined, 10_000);
      const s1 = packetsByVerdict(n1);
      assert.equal(s1.spoofed - s0.spoofed, N, 'every spoofed datagram dropped and counted');
      assert.ok(s1.received - s0.received < 10, 'none reached the pod side');
      await send(n2.ns, 5, 5000, n2.pods[0]!.ip);
      await until('wrong VNI counted', () => packetsByVerdict(n1).wrong_vni - s1.wrong_vni >= 5000 || undefined, 10_000);
      assert.equal(packetsByVerdict(n1).wrong_vni - s1.wrong_vni, 5000);
      row(
        'VXLAN injection',
        `${N} datagrams from a non-member; 5000 from a member with VNI 5`,
        `${N}/${N} dropped as spoofed (100 %), 5000/5000 as wrong_vni; sent at ${Math.round(N / sendS)} pps (sender-bound)`,
        '-',
      );
    } finally {
      await ip('netns', 'del', attacker);
    }
  });

  // --- our programs among others' on shared hooks; mode switches ---
  const tmp = mkdtempSync(join(tmpdir(), 'flannel-test-faults-'));
  after(() => rmSync(tmp, { recursive: true, force: true }));
  const compile = (name: string) => {
    const out = join(tmp, `${name}.o`);
    if (!existsSync(out)) execFileSync('clang', ['-g', '-O2', '-target', 'bpf', `-I/usr/include/${process.arch === 'x64' ? 'x86_64' : 'aarch64'}-linux-gnu`, '-c', join(FIX, `${name}.c`), '-o', out]);
    return out;
  };
  const progName = async (id: number) => (JSON.parse(await sh('bpftool', ['-j', 'prog', 'show', 'id', String(id)])) as { name: string }).name;
  /** what runs on a node's eth0: the XDP program's name, the names of the tc ingress programs */
  async function underlayHooks(n: LabNode): Promise<{ xdp?: string; tc: string[] }> {
    // by id: bpftool's tc "name" carries the id as a suffix ("fl_guard_tc:[508]")
    const net = (JSON.parse(await inNs(n.ns, 'bpftool', '-j', 'net', 'show', 'dev', 'eth0')) as { xdp: { id: number }[]; tc: { kind: string; id: number }[] }[])[0]!;
    const tc = await Promise.all(net.tc.filter((t) => t.kind === 'clsact/ingress').map((t) => progName(t.id)));
    return { xdp: net.xdp[0] ? await progName(net.xdp[0].id) : undefined, tc };
  }
  /** until(), with the node's log tail in the error: what the agent did instead */
  const untilOn = <T>(n: LabNode, what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, ms = 10_000) =>
    until(what, fn, ms).catch((e: Error) => {
      throw new Error(`${e.message}\n--- ${n.ns} log ---\n${lab.logs(n).slice(-3000)}`);
    });
  async function restart(n: LabNode, args: string[] = []) {
    await lab.stopAgent(n);
    lab.startAgent(n, args);
    await lab.waitReady(n);
  }

  test('a second tc filter behind ours still sees the packets (underlay eth0 ingress, flannel.1 ingress and egress)', async () => {
    const obj = compile('second_filter');
    const [a, b] = [n1.pods[0]!, n2.pods[0]!];
    const seen: string[] = [];
    for (const [dev, dir] of [
      ['eth0', 'ingress'],
      ['flannel.1', 'ingress'],
      ['flannel.1', 'egress'],
    ] as const) {
      await sh('tc', ['-n', n1.ns, 'filter', 'add', 'dev', dev, dir, 'prio', '2', 'bpf', 'da', 'obj', obj, 'sec', 'tc']);
      try {
        assert.ok(await lab.ping(b, a.ip, 3), 'pods still talk');
        const prog = JSON.parse(await sh('bpftool', ['-j', 'prog', 'show', 'name', 'second_filter'])) as { map_ids: number[] } | { map_ids: number[] }[];
        const mapId = (Array.isArray(prog) ? prog[0]! : prog).map_ids[0]!;
        const v = JSON.parse(await sh('bpftool', ['-j', 'map', 'lookup', 'id', String(mapId), 'key', '0', '0', '0', '0'])) as { value: string[] | number };
        const count = typeof v.value === 'number' ? v.value : Buffer.from(v.value.map((x) => parseInt(x, 16))).readBigUInt64LE();
        assert.ok(Number(count) >= 3, `${dev} ${dir}: the filter behind ours saw ${count} packets`);
        seen.push(`${dev} ${dir}: ${count}`);
      } finally {
        await sh('tc', ['-n', n1.ns, 'filter', 'del', 'dev', dev, dir, 'prio', '2']);
      }
    }
    row('another tc filter behind ours', 'a counting cls_bpf filter at prio 2 on eth0 ingress, flannel.1 ingress and egress, 3 pings', `it saw the packets (${seen.join(', ')})`, '-');
  });

  test('--underlay-hook changed, and a foreign XDP program: our guard runs on exactly one hook and never replaces another program', async () => {
    await restart(n2, ['--underlay-hook=xdp-generic']);
    await untilOn(n2, 'guard moved to XDP, tc guard gone', async () => {
      const h = await underlayHooks(n2);
      return (h.xdp === 'fl_guard_xdp' && !h.tc.some(ourTcGuard)) || undefined;
    });
    await restart(n2);
    await untilOn(n2, 'guard back on tc, XDP guard gone', async () => {
      const h = await underlayHooks(n2);
      return (h.xdp === undefined && h.tc.includes(TC_GUARD)) || undefined;
    });
    assert.deepEqual(await lab.pingAll(), []);
    // another program holds XDP: asked for XDP, the agent leaves it and guards with tc
    await ip('-n', n2.ns, 'link', 'set', 'dev', 'eth0', 'xdpgeneric', 'obj', compile('foreign_xdp'), 'sec', 'xdp');
    try {
      await restart(n2, ['--underlay-hook=xdp-generic']);
      await untilOn(n2, 'guard on tc beside the foreign XDP program', async () => {
        const h = await underlayHooks(n2);
        return h.tc.includes(TC_GUARD) || h.xdp !== 'foreign_xdp' || undefined;
      });
      const h = await underlayHooks(n2);
      assert.equal(h.xdp, 'foreign_xdp', 'the foreign XDP program is still attached');
      assert.ok(h.tc.includes(TC_GUARD));
      assert.match(lab.logs(n2), /another XDP program runs on the underlay interface/);
      assert.equal((await fetchStatus(n2.statusSocket)).backend?.underlayGuard, 'tc ingress on eth0');
      assert.deepEqual(await lab.pingAll(), []);
    } finally {
      await ip('-n', n2.ns, 'link', 'set', 'dev', 'eth0', 'xdpgeneric', 'off');
    }
    await restart(n2);
    await exactState();
    row(
      'underlay hook changed; foreign XDP program',
      'xdp-generic then auto (tc) on node 2; then xdp-generic over another XDP program',
      'the guard is on one hook each time (the other removed); the foreign program stays, the guard falls back to tc and says so',
      '-',
    );
  });

  test('BPF -> classic switch (--no-bpf): our guard leaves the underlay; a node that joins later is reached', async () => {
    // node 3 leaves the cluster (agent stopped, lease deleted): the others forget it
    await lab.stopAgent(n3);
    await ctl('del', `${PREFIX}/subnets/${formatIp4(subnets.get(n3)!.ip)}-24`);
    await until('node 3 forgotten', () => (mapKeys(n1, 'fl_members') === 1 && mapKeys(n2, 'fl_members') === 1) || undefined, 10_000, 50);
    await restart(n1, ['--no-bpf']);
    const h = await underlayHooks(n1);
    assert.ok(h.xdp === undefined && !h.tc.some(ourTcGuard), `no guard of ours left on node 1's eth0: ${JSON.stringify(h)}`);
    const st = await fetchStatus(n1.statusSocket);
    assert.equal(st.backend?.mode, 'classic');
    assert.match(String(st.backend?.underlayGuard), /^none \(removed at start: tc ingress on eth0\)$/);
    // node 3 joins again: node 1's old guard, had it stayed, would drop it as spoofed (frozen members map)
    lab.startAgent(n3);
    const { subnet } = await lab.waitReady(n3);
    assert.equal(formatIp4(subnet.ip), formatIp4(subnets.get(n3)!.ip), 'node 3 took its subnet back (subnet file)');
    const t = await timeTo('every pod reaches every pod', async () => (await lab.pingAll()).length === 0, 20_000);
    await restart(n1);
    await untilOn(n1, 'node 1 back in BPF mode', async () => (await underlayHooks(n1)).tc.includes(TC_GUARD) || undefined);
    await exactState();
    assert.deepEqual(await lab.pingAll(), []);
    row(
      'BPF -> classic switch, a node joins later',
      'node 1 restarted with --no-bpf while node 3 was away; node 3 joins',
      'no guard of ours left on node 1 (status: none, removed at start); node 3 reaches node 1',
      `all pods reach each other ${secs(t)} after node 3 was ready`,
    );
  });

  test('pinned maps and state files are not writable by other users', () => {
    for (const n of lab.nodes) {
      const dir = statSync(n.pinRoot);
      assert.equal(dir.mode & 0o077, 0, `${n.pinRoot} is 0700`);
      for (const f of readdirSync(n.pinRoot)) {
        const st = statSync(join(n.pinRoot, f));
        assert.equal(st.uid, 0);
        assert.equal(st.mode & 0o077, 0, `${f} is 0600`);
      }
      assert.equal(statSync(n.subnetFile).mode & 0o777, 0o644, 'subnet file 0644 (the CNI plugin reads it)');
      assert.equal(statSync(n.statusSocket).mode & 0o077, 0, 'status socket root only');
    }
    assert.ok(readFileSync(n1.subnetFile, 'utf8').includes('FLANNEL_SUBNET='));
    row('file modes', 'pin dirs 0700, pins 0600 root, subnet.env 0644, status socket 0600', 'ok', '-');
  });
});
