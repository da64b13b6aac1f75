// The subnet manager against a real etcd server: flannel's key layout, JSON, TTLs and races.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEtcd, startProxy, type EtcdServer } from '../helpers/etcd.ts';
import { EtcdRegistry } from '../../control/subnet/etcd-registry.ts';
import { SubnetManager, type LeaseEvent } from '../../control/subnet/manager.ts';
import { parseConfig } from '../../control/subnet/config.ts';
import { formatCidr, parseCidr, type Subnet } from '../../control/subnet/ip4.ts';
import { readPreviousSubnet, writeSubnetFile } from '../../control/subnet/subnet-file.ts';
import { silentLogger } from '../../control/log.ts';
import { formatCidr6, formatIp6 } from '../../control/subnet/ip6.ts';
import type { LeaseAttrs } from '../../control/subnet/lease.ts';

let etcd: EtcdServer;
const registries: EtcdRegistry[] = [];
const tmp = mkdtempSync(join(tmpdir(), 'flannel-test-sm-'));

before(async () => {
  etcd = await startEtcd();
});
after(async () => {
  for (const r of registries) r.close();
  await etcd.destroy();
  rmSync(tmp, { recursive: true, force: true });
});

const CONFIG = '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}';

async function setup(config = CONFIG, endpoint = etcd.endpoint) {
  const prefix = `/t-${randomBytes(4).toString('hex')}/network`;
  await etcd.client.put(`${prefix}/config`).value(config);
  const mk = (o: Partial<ConstructorParameters<typeof SubnetManager>[0]> = {}, ep = endpoint) => {
    const registry = new EtcdRegistry({ endpoints: [ep], prefix });
    registries.push(registry);
    return new SubnetManager({ registry, log: silentLogger, retryMs: 200, ...o });
  };
  return { prefix, mk, cfg: parseConfig(config) };
}

const attrs = (ip: string, mac = 'aa:bb:cc:dd:ee:01'): LeaseAttrs => ({
  publicIP: ip,
  publicIPv6: null,
  backendType: 'vxlan',
  backendData: { VNI: 1, VtepMAC: mac },
});

async function ttlOf(key: string): Promise<{ lease: string; ttl: number }> {
  const res = await etcd.client.getAll().prefix(key).exec();
  const lease = res.kvs[0]!.lease;
  if (lease === '0') return { lease, ttl: 0 };
  const t = await etcd.client.leaseClient.leaseTimeToLive({ ID: lease });
  return { lease, ttl: Number(t.TTL) };
}

/**
 * n subnets "10.244.X.0" from `from` up that none of `held` is: leases are allocated at random, and a
 * test's hand-written lease on a held key would replace that lease instead of competing with it.
 */
const freeSubnets = (n: number, from: number, ...held: Subnet[]) =>
  Array.from({ length: n + held.length }, (_, i) => `10.244.${from + i}.0`)
    .filter((s) => !held.some((h) => formatCidr(h) === `${s}/24`))
    .slice(0, n);

test('acquire writes flannel-exact JSON under <prefix>/subnets/<ip>-<len> with a 24 h TTL', async () => {
  const { prefix, mk } = await setup();
  const sm = mk();
  const cfg = await sm.waitForConfig();
  const lease = await sm.acquireLease(cfg, attrs('192.168.56.12', 'c6:d2:32:6f:8f:44'));
  const key = `${prefix}/subnets/${formatCidr(lease.subnet).replace('/', '-')}`;
  assert.equal(await etcd.client.get(key).string(), '{"PublicIP":"192.168.56.12","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}');
  const { ttl } = await ttlOf(key);
  assert.ok(ttl > 86000 && ttl <= 86400, `ttl ${ttl}`);
  assert.notEqual(formatCidr(lease.subnet), '10.244.0.0/24', 'the first subnet is never handed out');
});

test('an agent restarting with the same PublicIP gets its lease back (and a fresh TTL)', async () => {
  const { mk, cfg } = await setup();
  const first = await mk().acquireLease(cfg, attrs('10.0.0.1'));
  const second = await mk().acquireLease(cfg, attrs('10.0.0.1', 'aa:bb:cc:dd:ee:99'));
  assert.equal(formatCidr(second.subnet), formatCidr(first.subnet));
  assert.notEqual(second.etcdLease, first.etcdLease);
});

test('the subnet of the previous run (subnet file) is reused when free', async () => {
  const { mk, cfg } = await setup();
  const file = join(tmp, 'prev.env');
  await writeSubnetFile(file, { network: cfg.network, subnet: parseCidr('10.244.77.0/24')!, mtu: 1450, ipMasq: false });
  const prev = await readPreviousSubnet(file);
  assert.equal(formatCidr(prev!.subnet), '10.244.77.0/24');
  const l = await mk().acquireLease(cfg, attrs('10.0.0.2'), prev);
  assert.equal(formatCidr(l.subnet), '10.244.77.0/24');
  // and a taken previous subnet is not stolen
  const other = await mk().acquireLease(cfg, attrs('10.0.0.3'), prev);
  assert.notEqual(formatCidr(other.subnet), '10.244.77.0/24');
});

test('a reservation (key without TTL) is honoured: its owner keeps it without TTL, nobody else gets it', async () => {
  const { prefix, mk } = await setup('{"Network":"10.9.0.0/28","Backend":{"Type":"vxlan"}}');
  const cfg = parseConfig('{"Network":"10.9.0.0/28","Backend":{"Type":"vxlan"}}');
  // three usable /30s; reserve two of them for other hosts, one for us
  await etcd.client.put(`${prefix}/subnets/10.9.0.4-30`).value('{"PublicIP":"10.0.0.50","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:aa:aa:aa:aa:01"}}');
  await etcd.client.put(`${prefix}/subnets/10.9.0.8-30`).value('{"PublicIP":"10.0.0.51","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:aa:aa:aa:aa:02"}}');
  const mine = await mk().acquireLease(cfg, attrs('10.0.0.51'));
  assert.equal(formatCidr(mine.subnet), '10.9.0.8/30');
  assert.equal(mine.expiration, undefined);
  assert.equal((await ttlOf(`${prefix}/subnets/10.9.0.8-30`)).lease, '0', 'still a reservation');
  const other = await mk().acquireLease(cfg, attrs('10.0.0.60'));
  assert.equal(formatCidr(other.subnet), '10.9.0.12/30');
  await assert.rejects(mk().acquireLease(cfg, attrs('10.0.0.61')), /no free subnet left/);
});

test('ten agents starting at the same instant get ten distinct subnets', async () => {
  const { prefix, mk } = await setup('{"Network":"10.10.0.0/24","SubnetLen":28,"Backend":{"Type":"vxlan"}}');
  const cfg = parseConfig('{"Network":"10.10.0.0/24","SubnetLen":28,"Backend":{"Type":"vxlan"}}');
  const leases = await Promise.all(Array.from({ length: 10 }, (_, i) => mk().acquireLease(cfg, attrs(`10.1.0.${i + 1}`))));
  const subnets = new Set(leases.map((l) => formatCidr(l.subnet)));
  assert.equal(subnets.size, 10);
  const keys = await etcd.client.getAll().prefix(`${prefix}/subnets/`).keys();
  assert.equal(keys.length, 10);
});

test('ten agents racing for the last four subnets: four distinct winners, six clear "exhausted" errors', async () => {
  const text = '{"Network":"10.20.0.0/16","SubnetMin":"10.20.1.0","SubnetMax":"10.20.4.0","Backend":{"Type":"vxlan"}}';
  const { prefix, mk } = await setup(text);
  const cfg = parseConfig(text);
  const res = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => mk().acquireLease(cfg, attrs(`10.2.0.${i + 1}`))));
  const won = res.flatMap((r) => (r.status === 'fulfilled' ? [formatCidr(r.value.subnet)] : []));
  const lost = res.flatMap((r) => (r.status === 'rejected' ? [(r.reason as Error).message] : []));
  assert.deepEqual(won.sort(), ['10.20.1.0/24', '10.20.2.0/24', '10.20.3.0/24', '10.20.4.0/24']);
  assert.equal(lost.length, 6);
  for (const m of lost) assert.match(m, /^no free subnet left in 10\.20\.0\.0\/16: every \/24 from SubnetMin 10\.20\.1\.0 to SubnetMax 10\.20\.4\.0 is leased/);
  const keys = await etcd.client.getAll().prefix(`${prefix}/subnets/`).keys();
  assert.equal(keys.length, 4, 'no lease left behind by a loser');
});

test('renewal rewrites the key with a new etcd lease before expiry', async () => {
  const { prefix, mk, cfg } = await setup();
  const sm = mk({ subnetTTLSeconds: 4, renewMarginMs: 2500 });
  const l = await sm.acquireLease(cfg, attrs('10.0.1.1'));
  const key = `${prefix}/subnets/${formatCidr(l.subnet).replace('/', '-')}`;
  const renewed: string[] = [];
  sm.startRenewal(l, (n) => renewed.push(n.etcdLease!));
  await new Promise((r) => setTimeout(r, 6000));
  sm.stopRenewal();
  assert.ok(renewed.length >= 2, `renewed ${renewed.length} times`);
  const now = await ttlOf(key);
  assert.equal(now.lease, renewed.at(-1));
  assert.ok(await etcd.client.get(key).string(), 'key survived beyond its original 4 s TTL');
});

function collector() {
  const events: LeaseEvent[] = [];
  const peers = new Map<string, string>();
  return {
    events,
    peers,
    sink: (ev: LeaseEvent[]) => {
      for (const e of ev) {
        events.push(e);
        if (e.type === 'added') peers.set(formatCidr(e.lease.subnet), e.lease.attrs.publicIP);
        else peers.delete(formatCidr(e.lease.subnet));
      }
      return Promise.resolve();
    },
  };
}

async function until(cond: () => boolean | Promise<boolean>, ms = 10_000, what = 'condition') {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('watch: peers added and removed, malformed leases skipped, own-key deletion reported', async () => {
  const { prefix, mk, cfg } = await setup();
  const sm = mk();
  const own = await sm.acquireLease(cfg, attrs('10.0.2.1'));
  const c = collector();
  let lost = '';
  const w = sm.watchLeases(cfg, own, c.sink, (why) => (lost = why));
  await w.synced;
  const peer = await mk().acquireLease(cfg, attrs('10.0.2.2', 'aa:bb:cc:dd:ee:02'));
  await until(() => c.peers.size === 1, 10_000, 'peer added');
  assert.equal(c.peers.get(formatCidr(peer.subnet)), '10.0.2.2');
  // garbage from another writer: logged and skipped, never fatal
  const [g1, g2] = freeSubnets(2, 200, own.subnet, peer.subnet);
  await etcd.client.put(`${prefix}/subnets/${g1}-24`).value('{not json');
  await etcd.client.put(`${prefix}/subnets/10.99.0.0-24`).value('{"PublicIP":"10.0.2.9","PublicIPv6":null}');
  await etcd.client.put(`${prefix}/subnets/nonsense`).value('{"PublicIP":"10.0.2.9","PublicIPv6":null}');
  await etcd.client.put(`${prefix}/subnets/${g2}-24`).value('{"PublicIP":"10.0.2.1","PublicIPv6":null}');
  await until(() => w.stats.rejected >= 4, 10_000, 'rejections');
  assert.equal(c.peers.size, 1);
  await mk().registry.deleteLease(peer);
  await until(() => c.peers.size === 0, 10_000, 'peer removed');
  await etcd.client.delete().key(`${prefix}/subnets/${formatCidr(own.subnet).replace('/', '-')}`);
  await until(() => lost !== '', 10_000, 'own lease lost');
  assert.match(lost, /deleted or expired/);
  await w.stop();
});

test('two leases claiming one public IP: the first keeps its place, the second is taken once the first goes', async () => {
  const { prefix, mk, cfg } = await setup();
  const sm = mk();
  const own = await sm.acquireLease(cfg, attrs('10.0.7.1'));
  const c = collector();
  const w = sm.watchLeases(cfg, own, c.sink, () => undefined);
  await w.synced;
  const v = JSON.stringify({ PublicIP: '10.0.7.9', PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: 'aa:bb:cc:dd:ee:09' } });
  const [a, b] = freeSubnets(2, 70, own.subnet);
  await etcd.client.put(`${prefix}/subnets/${a}-24`).value(v);
  await until(() => c.peers.size === 1);
  await etcd.client.put(`${prefix}/subnets/${b}-24`).value(v);
  await until(() => w.stats.rejected === 1, 5000, 'the second claim rejected');
  assert.deepEqual([...c.peers.keys()], [`${a}/24`]);
  await etcd.client.delete().key(`${prefix}/subnets/${a}-24`);
  await until(() => c.peers.has(`${b}/24`) && c.peers.size === 1, 5000, 'the remaining claim programmed');
  await w.stop();
});

test('etcd restarted mid-watch: no event is lost', async () => {
  const server = await startEtcd();
  try {
    const { mk, cfg } = await setupOn(server);
    const sm = mk();
    const own = await sm.acquireLease(cfg, attrs('10.0.3.1'));
    const c = collector();
    const w = sm.watchLeases(cfg, own, c.sink, () => undefined);
    await w.synced;
    await mk().acquireLease(cfg, attrs('10.0.3.2', 'aa:bb:cc:dd:ee:02'));
    await until(() => c.peers.size === 1);
    await server.stop();
    await server.start();
    // written the moment etcd is back, before the watch has necessarily reconnected
    await Promise.all(Array.from({ length: 20 }, (_, i) => mk().acquireLease(cfg, attrs(`10.0.4.${i + 1}`, `aa:bb:cc:dd:e4:${(i + 1).toString(16).padStart(2, '0')}`))));
    await until(() => c.peers.size === 21, 20_000, '21 peers after restart');
    await w.stop();
  } finally {
    await server.destroy();
  }
});

test('etcd lost its data: agents write their leases and the config back; absent peers are held, then dropped', async () => {
  const server = await startEtcd();
  try {
    const { prefix, mk, cfg } = await setupOn(server);
    const [a, b, c] = [mk({ storeLossHoldMs: 4000 }), mk({ storeLossHoldMs: 4000 }), mk()];
    const la = await a.acquireLease(cfg, attrs('10.0.5.1', 'aa:bb:cc:dd:ee:01'));
    const lb = await b.acquireLease(cfg, attrs('10.0.5.2', 'aa:bb:cc:dd:ee:02'));
    // c's node is gone: its lease is in etcd but nothing will write it back
    const lc = await c.acquireLease(cfg, attrs('10.0.5.3', 'aa:bb:cc:dd:ee:03'));
    const [ca, cb] = [collector(), collector()];
    let lost = '';
    const wa = a.watchLeases(cfg, la, ca.sink, (why) => (lost = why));
    const wb = b.watchLeases(cfg, lb, cb.sink, (why) => (lost = why));
    await Promise.all([wa.synced, wb.synced]);
    await until(() => ca.peers.size === 2 && cb.peers.size === 2);
    const before = (await server.client.getAll().prefix(prefix).strings()) as Record<string, string>;

    await server.stop();
    rmSync(join(server.dataDir, 'member'), { recursive: true, force: true });
    await server.start();
    const t0 = Date.now();
    const keyA = `${prefix}/subnets/${formatCidr(la.subnet).replace('/', '-')}`;
    const keyB = `${prefix}/subnets/${formatCidr(lb.subnet).replace('/', '-')}`;
    await until(async () => Object.keys(await server.client.getAll().prefix(prefix).strings()).length === 3, 20_000, 'leases and config written back');
    const now = (await server.client.getAll().prefix(prefix).strings()) as Record<string, string>;
    assert.equal(lost, '', 'no agent gave up its lease');
    // the same JSON under the same keys, and the config the nodes run with
    assert.equal(now[keyA], before[keyA]);
    assert.equal(now[keyB], before[keyB]);
    assert.deepEqual(JSON.parse(now[`${prefix}/config`]!), JSON.parse(CONFIG));
    const ttl = await server.client.leaseClient.leaseTimeToLive({ ID: (await server.client.getAll().prefix(keyA).exec()).kvs[0]!.lease });
    assert.ok(Number(ttl.TTL) > 86000, 're-registered with the full TTL');
    // c is held (pods on it may still be alive) until the hold ends, b was never dropped
    assert.ok(ca.peers.has(formatCidr(lc.subnet)) && ca.peers.has(formatCidr(lb.subnet)));
    assert.equal(ca.events.filter((e) => e.type === 'removed').length, 0, 'nothing removed while nodes re-register');
    // a node joining after the loss reaches the running watches: they resumed on the new store
    const ld = await mk().acquireLease(cfg, attrs('10.0.5.4', 'aa:bb:cc:dd:ee:04'));
    await until(() => ca.peers.has(formatCidr(ld.subnet)) && cb.peers.has(formatCidr(ld.subnet)), 10_000, 'new node seen');
    await until(() => !ca.peers.has(formatCidr(lc.subnet)) && !cb.peers.has(formatCidr(lc.subnet)), 10_000, 'vanished node dropped after the hold');
    assert.ok(Date.now() - t0 >= 3000, 'not dropped before the hold ended');
    assert.deepEqual([...ca.peers.keys()].sort(), [formatCidr(lb.subnet), formatCidr(ld.subnet)].sort());
    await Promise.all([wa.stop(), wb.stop()]);
  } finally {
    await server.destroy();
  }
});

async function setupOn(server: EtcdServer, endpoint = server.endpoint) {
  const prefix = `/t-${randomBytes(4).toString('hex')}/network`;
  await server.client.put(`${prefix}/config`).value(CONFIG);
  const mk = (o: Partial<ConstructorParameters<typeof SubnetManager>[0]> = {}) => {
    const registry = new EtcdRegistry({ endpoints: [endpoint], prefix });
    registries.push(registry);
    return new SubnetManager({ registry, log: silentLogger, retryMs: 200, ...o });
  };
  return { prefix, mk, cfg: parseConfig(CONFIG) };
}

test('compaction of the revision the watch needs: re-list, resume, nothing lost or duplicated', async () => {
  const proxy = await startProxy(etcd.endpoint);
  try {
    const { prefix, cfg } = await setupOn(etcd);
    const watching = new SubnetManager({ registry: new EtcdRegistry({ endpoints: [proxy.endpoint], prefix }), log: silentLogger, retryMs: 200 });
    registries.push(watching.registry);
    const direct = () => {
      const r = new EtcdRegistry({ endpoints: [etcd.endpoint], prefix });
      registries.push(r);
      return new SubnetManager({ registry: r, log: silentLogger });
    };
    const own = await watching.acquireLease(cfg, attrs('10.0.5.1'));
    const gone = await direct().acquireLease(cfg, attrs('10.0.5.2', 'aa:bb:cc:dd:ee:02'));
    const c = collector();
    const w = watching.watchLeases(cfg, own, c.sink, () => undefined);
    await w.synced;
    await until(() => c.peers.size === 1);
    // the watcher is cut off while leases change and history is compacted away
    proxy.cut();
    await direct().registry.deleteLease(gone);
    for (let i = 0; i < 5; i++) await direct().acquireLease(cfg, attrs(`10.0.6.${i + 1}`, `aa:bb:cc:dd:e6:0${i + 1}`));
    const rev = (await etcd.client.getAll().prefix(prefix).exec()).header.revision;
    await etcd.client.kv.compact({ revision: rev, physical: true });
    proxy.restore();
    await until(() => c.peers.size === 5 && !c.peers.has(formatCidr(gone.subnet)), 30_000, 'resync after compaction');
    assert.ok(w.stats.relists >= 2, `relists ${w.stats.relists}`);
    const added = c.events.filter((e) => e.type === 'added').map((e) => formatCidr(e.lease.subnet));
    assert.equal(new Set(added).size, added.length, 'no duplicate added events');
    await w.stop();
  } finally {
    await proxy.close();
  }
});

test('a missing config is waited for; a bad one is a ConfigError naming the field', async () => {
  const { prefix, mk } = await setup();
  await etcd.client.delete().key(`${prefix}/config`);
  const sm = mk();
  const p = sm.waitForConfig(undefined, 100);
  await new Promise((r) => setTimeout(r, 300));
  await etcd.client.put(`${prefix}/config`).value('{"Network":"10.50.0.0/16","Backend":{"Type":"host-gw"}}');
  assert.equal((await p).backend.Type, 'host-gw');
  await etcd.client.put(`${prefix}/config`).value('{"Network":"10.50.0.0/16","SubnetLen":40}');
  await assert.rejects(sm.waitForConfig(), /SubnetLen: 40 is too long/);
});

test('a lease reusing a VTEP MAC that another lease (or we) hold is rejected; it is taken once the holder goes', async () => {
  const { prefix, mk, cfg } = await setup();
  const sm = mk();
  const own = await sm.acquireLease(cfg, attrs('10.0.8.1', 'aa:bb:cc:dd:e8:01'));
  const c = collector();
  const w = sm.watchLeases(cfg, own, c.sink, () => undefined);
  await w.synced;
  const x = await mk().acquireLease(cfg, attrs('10.0.8.2', 'aa:bb:cc:dd:e8:02'));
  await until(() => c.peers.size === 1, 5000, 'node X programmed');
  // the review's case: a free subnet, a stranger's public IP, node X's VTEP MAC (in another case);
  // free, not fixed: CI once allocated X 10.244.81.0/24, the key this test then wrote over
  const [k1, k2] = freeSubnets(2, 80, own.subnet, x.subnet);
  const steal = (mac: string) => JSON.stringify({ PublicIP: '203.0.113.9', PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac } });
  await etcd.client.put(`${prefix}/subnets/${k1}-24`).value(steal('AA:BB:CC:DD:E8:02'));
  await until(() => w.stats.rejected === 1, 5000, 'the MAC thief rejected');
  await etcd.client
    .put(`${prefix}/subnets/${k2}-24`)
    .value(JSON.stringify({ PublicIP: '203.0.113.10', PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: 'aa:bb:cc:dd:e8:01' } }));
  await until(() => w.stats.rejected === 2, 5000, 'a lease with our own MAC rejected');
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual([...c.peers.entries()], [[formatCidr(x.subnet), '10.0.8.2']], 'node X keeps its VTEP');
  assert.ok(!c.events.some((e) => e.lease.attrs.publicIP.startsWith('203.')), 'nothing of the thieves reached the backend');
  await mk().registry.deleteLease(x);
  await until(() => c.peers.has(`${k1}/24`) && c.peers.size === 1, 5000, 'the MAC is free again: the waiting lease is taken');
  await w.stop();
});

test('renewal is conditional: a foreign value on our key is never overwritten, and means our lease is lost', async () => {
  const { prefix, mk, cfg } = await setup();
  const sm = mk();
  const own = await sm.acquireLease(cfg, attrs('10.0.9.1', 'aa:bb:cc:dd:e9:01'));
  const key = `${prefix}/subnets/${formatCidr(own.subnet).replace('/', '-')}`;
  let lost = '';
  const w = sm.watchLeases(cfg, own, collector().sink, (why) => (lost ||= why));
  await w.synced;
  // after a partition longer than the TTL another node got our subnet: its lease now sits on our key
  const foreign = JSON.stringify({ PublicIP: '10.0.9.2', PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: 'aa:bb:cc:dd:e9:02' } });
  await etcd.client.put(key).value(foreign);
  await until(() => lost !== '', 5000, 'the watch reports the foreign value on our key');
  assert.match(lost, /another writer|no longer ours/);
  await assert.rejects(sm.renewLease(own), /no longer ours|lost/);
  assert.equal(await etcd.client.get(key).string(), foreign, "the other node's lease is intact");
  // startRenewal reports the loss instead of retrying forever
  let renewLost = '';
  const short = mk({ subnetTTLSeconds: 4, renewMarginMs: 2500 });
  const l2 = await short.acquireLease(cfg, attrs('10.0.9.3', 'aa:bb:cc:dd:e9:03'));
  const key2 = `${prefix}/subnets/${formatCidr(l2.subnet).replace('/', '-')}`;
  await etcd.client.put(key2).value(foreign.replace('10.0.9.2', '10.0.9.4'));
  short.startRenewal(l2, undefined, (why) => (renewLost = why));
  await until(() => renewLost !== '', 5000, 'renewal reports the loss');
  short.stopRenewal();
  assert.equal((JSON.parse((await etcd.client.get(key2).string())!) as { PublicIP: string }).PublicIP, '10.0.9.4');
  await w.stop();
});

test('a lease watch that etcd never confirms is abandoned: a new client lists and watches again, no event is lost', async () => {
  const { prefix, cfg } = await setup();
  // the real registry and etcd, with the first watch creation never confirmed: what etcd3 does when
  // one create response on its watch stream is lost (every later watcher on that stream waits too)
  class StallingRegistry extends EtcdRegistry {
    stalls = 1;
    override watchLeases(from: string, h: Parameters<EtcdRegistry['watchLeases']>[1]) {
      if (this.stalls-- > 0) return new Promise<never>(() => undefined);
      return super.watchLeases(from, h);
    }
  }
  const registry = new StallingRegistry({ endpoints: [etcd.endpoint], prefix });
  registries.push(registry);
  const sm = new SubnetManager({ registry, log: silentLogger, retryMs: 200, watchCreateMs: 1000 });
  const own = await sm.acquireLease(cfg, attrs('10.0.10.1', 'aa:bb:cc:dd:ea:01'));
  const c = collector();
  const w = sm.watchLeases(cfg, own, c.sink, () => undefined);
  await w.synced;
  const peer = await mk().acquireLease(cfg, attrs('10.0.10.2', 'aa:bb:cc:dd:ea:02'));
  await until(() => c.peers.size === 1, 10_000, 'the peer seen after the stalled watch was replaced');
  assert.equal(c.peers.get(formatCidr(peer.subnet)), '10.0.10.2');
  assert.ok(w.stats.relists >= 2, `relists ${w.stats.relists}`);
  assert.equal(w.stats.watchStalls, 1, 'counted (status watch.watchStalls, flannel_etcd_watch_stalls_total)');
  await w.stop();

  function mk() {
    const r = new EtcdRegistry({ endpoints: [etcd.endpoint], prefix });
    registries.push(r);
    return new SubnetManager({ registry: r, log: silentLogger });
  }
});

test('dual-stack: the lease is flannel\'s key "<v4>-<len>&<v6>-<len>" and JSON; a restart reuses both subnets; the subnet file round-trips', async () => {
  const config = '{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}';
  const { prefix, mk, cfg } = await setup(config);
  const a: LeaseAttrs = { ...attrs('10.0.0.2'), publicIPv6: 'fd00::2', backendV6Data: { VNI: 1, VtepMAC: 'aa:bb:cc:dd:ee:61' } };
  const l = await mk().acquireLease(cfg, a);
  assert.ok(l.ipv6Subnet, 'an IPv6 subnet was allocated');
  const key = `${prefix}/subnets/${formatCidr(l.subnet).replace('/', '-')}&${formatIp6(l.ipv6Subnet.ip)}-64`;
  const kv = await etcd.client.get(key).string();
  assert.equal(
    kv,
    '{"PublicIP":"10.0.0.2","PublicIPv6":"fd00::2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"},"BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:61"}}',
  );
  assert.equal(l.ipv6Subnet.len, 64);
  assert.ok(l.ipv6Subnet.ip >= cfg.ipv6!.subnetMin && l.ipv6Subnet.ip <= cfg.ipv6!.subnetMax);
  // the same node again: the same key, not a second lease
  const again = await mk().acquireLease(cfg, a);
  assert.equal(formatCidr6(again.ipv6Subnet!), formatCidr6(l.ipv6Subnet));
  assert.equal((await etcd.client.getAll().prefix(`${prefix}/subnets/`).keys()).length, 1);
  // subnet.env as flannel writes it, and read back as the previous run's subnets
  const file = join(tmp, 'dual.env');
  await writeSubnetFile(file, { network: cfg.network, subnet: l.subnet, ipv6Network: cfg.ipv6!.network, ipv6Subnet: l.ipv6Subnet, mtu: 1450, ipMasq: true });
  const text = readFileSync(file, 'utf8');
  assert.match(
    text,
    /^FLANNEL_NETWORK=10\.244\.0\.0\/16\nFLANNEL_SUBNET=10\.244\.\d+\.1\/24\nFLANNEL_IPV6_NETWORK=fd00:10:244::\/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:[0-9a-f]+::1\/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n$/,
  );
  const prev = await readPreviousSubnet(file);
  assert.equal(formatCidr6(prev!.ipv6Subnet!), formatCidr6(l.ipv6Subnet));
});

test('dual-stack reservation (a key without TTL, both subnets): its owner keeps it as a reservation, nobody else gets either subnet', async () => {
  const config =
    '{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","SubnetMin":"10.244.9.0","SubnetMax":"10.244.10.0","IPv6SubnetMin":"fd00:10:244:9::","IPv6SubnetMax":"fd00:10:244:a::","Backend":{"Type":"vxlan"}}';
  const { prefix, mk, cfg } = await setup(config);
  const key = `${prefix}/subnets/10.244.9.0-24&fd00:10:244:9::-64`;
  await etcd.client
    .put(key)
    .value('{"PublicIP":"10.0.0.70","PublicIPv6":"fd00::70","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:aa:aa:aa:aa:70"},"BackendV6Data":{"VNI":1,"VtepMAC":"aa:aa:aa:aa:aa:71"}}');
  const dual = (n: number): LeaseAttrs => ({ ...attrs(`10.0.0.${n}`), publicIPv6: `fd00::${n}`, backendV6Data: { VNI: 1, VtepMAC: `aa:bb:cc:dd:ee:${n}` } });
  const mine = await mk().acquireLease(cfg, dual(70));
  assert.deepEqual([formatCidr(mine.subnet), formatCidr6(mine.ipv6Subnet!), mine.expiration], ['10.244.9.0/24', 'fd00:10:244:9::/64', undefined]);
  assert.equal((await ttlOf(key)).lease, '0', 'still a reservation');
  assert.match((await etcd.client.get(key).string()) ?? '', /"PublicIPv6":"fd00::70".*"BackendV6Data":\{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:70"\}/);
  const other = await mk().acquireLease(cfg, dual(71));
  assert.deepEqual([formatCidr(other.subnet), formatCidr6(other.ipv6Subnet!)], ['10.244.10.0/24', 'fd00:10:244:a::/64']);
  await assert.rejects(mk().acquireLease(cfg, dual(72)), /no free subnet left/);
});

test('dual-stack race: two nodes that pick different IPv4 but the same IPv6 subnet write two different keys; the later one gives its lease up and takes another', async () => {
  const config = '{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}';
  const { prefix, cfg } = await setup(config);
  const registry = new EtcdRegistry({ endpoints: [etcd.endpoint], prefix });
  registries.push(registry);
  // the racer: between our listing and our write it takes the IPv6 subnet we are about to take, with
  // another IPv4 subnet, so its key differs from ours and both writes succeed
  let racer: string | undefined;
  const create = registry.createLease.bind(registry);
  registry.createLease = async (s, value, ttl) => {
    if (!racer && s.ipv6Subnet) {
      racer = `${prefix}/subnets/10.244.250.0-24&${formatIp6(s.ipv6Subnet.ip)}-64`;
      await etcd.client
        .put(racer)
        .value('{"PublicIP":"10.0.0.99","PublicIPv6":"fd00::99","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:aa:aa:aa:aa:99"},"BackendV6Data":{"VNI":1,"VtepMAC":"aa:aa:aa:aa:aa:98"}}');
    }
    return create(s, value, ttl);
  };
  const sm = new SubnetManager({ registry, log: silentLogger, retryMs: 200 });
  const l = await sm.acquireLease(cfg, { ...attrs('10.0.0.5'), publicIPv6: 'fd00::5', backendV6Data: { VNI: 1, VtepMAC: 'aa:bb:cc:dd:ee:65' } });
  const racerV6 = racer!.slice(racer!.indexOf('&') + 1);
  assert.notEqual(`${formatIp6(l.ipv6Subnet!.ip)}-64`, racerV6, 'we do not keep the IPv6 subnet the racer holds');
  const keys = (await etcd.client.getAll().prefix(`${prefix}/subnets/`).keys()).sort();
  assert.deepEqual(keys, [racer!, `${prefix}/subnets/${formatCidr(l.subnet).replace('/', '-')}&${formatIp6(l.ipv6Subnet!.ip)}-64`].sort(), 'our first key is gone: two leases, no overlap');
});

test('ten dual-stack agents starting at the same instant, 15 IPv6 subnets for them: ten distinct IPv4 and ten distinct IPv6 subnets', async () => {
  const config = '{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/60","IPv6SubnetLen":64,"Backend":{"Type":"vxlan"}}';
  const { prefix, mk, cfg } = await setup(config);
  const dual = (n: number): LeaseAttrs => ({ ...attrs(`10.3.0.${n}`), publicIPv6: `fd00::3:${n}`, backendV6Data: { VNI: 1, VtepMAC: `aa:bb:cc:dd:e3:${n}` } });
  const leases = await Promise.all(Array.from({ length: 10 }, (_, i) => mk().acquireLease(cfg, dual(i + 10))));
  assert.equal(new Set(leases.map((l) => formatCidr(l.subnet))).size, 10);
  assert.equal(new Set(leases.map((l) => formatCidr6(l.ipv6Subnet!))).size, 10, 'no IPv6 subnet held twice');
  assert.equal((await etcd.client.getAll().prefix(`${prefix}/subnets/`).keys()).length, 10);
});

test('IPv6-only: key "0.0.0.0-0&<v6>-<len>", PublicIP 0.0.0.0; nodes are told apart by PublicIPv6', async () => {
  const config = '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}';
  const { prefix, mk, cfg } = await setup(config);
  const a = (n: number): LeaseAttrs => ({ publicIP: '0.0.0.0', publicIPv6: `fd00::${n}`, backendType: 'vxlan', backendV6Data: { VNI: 1, VtepMAC: `aa:bb:cc:dd:ee:7${n}` } });
  const l1 = await mk().acquireLease(cfg, a(1));
  const l2 = await mk().acquireLease(cfg, a(2));
  assert.notEqual(formatCidr6(l1.ipv6Subnet!), formatCidr6(l2.ipv6Subnet!));
  const keys = (await etcd.client.getAll().prefix(`${prefix}/subnets/`).keys()).map((k) => k.slice(`${prefix}/subnets/`.length)).sort();
  assert.equal(keys.length, 2);
  for (const k of keys) assert.match(k, /^0\.0\.0\.0-0&fd00:10:244:[0-9a-f]+::-64$/);
  assert.equal(
    await etcd.client.get(`${prefix}/subnets/0.0.0.0-0&${formatIp6(l1.ipv6Subnet!.ip)}-64`).string(),
    '{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::1","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:71"}}',
  );
  const again = await mk().acquireLease(cfg, a(1));
  assert.equal(formatCidr6(again.ipv6Subnet!), formatCidr6(l1.ipv6Subnet!), 'node 1 found its lease by its PublicIPv6');
});
