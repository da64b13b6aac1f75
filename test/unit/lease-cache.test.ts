// The lease cache without etcd: what listings and watch events become (added/removed events, our own
// lease's loss), validation, conflicts where the first lease seen keeps its place, and the hold after a
// store loss. The real-etcd behaviour stays in test/integration/subnet-manager.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInThisContext } from 'node:vm';
import { LeaseCache, type CacheOutcome } from '../../control/subnet/lease-cache.ts';
import { parseConfig } from '../../control/subnet/config.ts';
import { parseCidr, formatCidr } from '../../control/subnet/ip4.ts';
import { formatCidr6, parseCidr6 } from '../../control/subnet/ip6.ts';
import type { RawEvent, RawLease } from '../../control/subnet/etcd-registry.ts';

const PREFIX = '/coreos.com/network/subnets/';
const cfg = parseConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');
const value = (ip: string, mac: string) => JSON.stringify({ PublicIP: ip, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac } });
const own = { subnet: parseCidr('10.244.1.0/24')!, attrs: { publicIP: '10.0.0.1', publicIPv6: null, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: 'aa:00:00:00:00:01' } }, etcdLease: '1' };
const OWN_KEY = `${PREFIX}10.244.1.0-24`;
const OWN_VALUE = value('10.0.0.1', 'aa:00:00:00:00:01');
const key = (n: number) => `${PREFIX}10.244.${n}.0-24`;
const lease = (n: number, ip = `10.0.0.${n}`, mac = `aa:00:00:00:00:${n.toString(16).padStart(2, '0')}`): RawLease => ({ key: key(n), value: value(ip, mac), lease: '7', modRevision: '1' });
const put = (l: RawLease): RawEvent => ({ type: 'put', key: l.key, value: l.value, lease: l.lease });
const del = (n: number): RawEvent => ({ type: 'delete', key: key(n) });

function mk() {
  const rejected: [string, string][] = [];
  const c = new LeaseCache({ subnetsPrefix: PREFIX, ownKey: OWN_KEY, cfg, own, onReject: (k, r) => rejected.push([k, r]) });
  return { c, rejected };
}
/** "+10.244.2.0/24 10.0.0.2" per event */
const show = (o: CacheOutcome) => o.events.map((e) => `${e.type === 'added' ? '+' : '-'}${formatCidr(e.lease.subnet)} ${e.lease.attrs.publicIP}`);
const ownEntry: RawLease = { key: OWN_KEY, value: OWN_VALUE, lease: '1', modRevision: '1' };

test('a listing adds every valid peer once; a re-list with the same values is silent; a missing key is removed', () => {
  const { c } = mk();
  assert.deepEqual(show(c.list([ownEntry, lease(2), lease(3)])), ['+10.244.2.0/24 10.0.0.2', '+10.244.3.0/24 10.0.0.3']);
  assert.deepEqual(show(c.list([ownEntry, lease(2), lease(3)])), [], 'renewals and re-lists change nothing');
  assert.deepEqual(show(c.list([ownEntry, lease(3)])), ['-10.244.2.0/24 10.0.0.2'], 'the listing diff finds a delete the watch missed');
  assert.deepEqual(
    c.peers().map((p) => formatCidr(p.subnet)),
    ['10.244.3.0/24'],
  );
});

test('watch events in order: put, changed value, delete; a delete of an unknown key is nothing', () => {
  const { c } = mk();
  c.list([ownEntry]);
  assert.deepEqual(show(c.apply([put(lease(2)), put(lease(2, '10.0.0.22')), del(2), del(9)])), ['+10.244.2.0/24 10.0.0.2', '+10.244.2.0/24 10.0.0.22', '-10.244.2.0/24 10.0.0.22']);
  assert.equal(c.peers().length, 0);
});

test('malformed or foreign leases are rejected with a reason and never reach the backend; a valid lease turned bad is removed', () => {
  const { c, rejected } = mk();
  c.list([ownEntry]);
  const bad: RawEvent[] = [
    { type: 'put', key: `${PREFIX}nonsense`, value: value('10.0.0.5', 'aa:00:00:00:00:05'), lease: '0' },
    { type: 'put', key: key(5), value: '{not json', lease: '0' },
    { type: 'put', key: `${PREFIX}10.99.0.0-24`, value: value('10.0.0.6', 'aa:00:00:00:00:06'), lease: '0' },
    { type: 'put', key: key(7), value: value('10.0.0.1', 'aa:00:00:00:00:07'), lease: '0' },
    { type: 'put', key: key(8), value: value('10.0.0.8', 'aa:00:00:00:00:01'), lease: '0' },
  ];
  assert.deepEqual(show(c.apply(bad)), []);
  assert.equal(rejected.length, 5);
  assert.match(rejected[0]![1], /does not name a subnet/);
  assert.match(rejected[2]![1], /outside Network 10.244.0.0\/16/);
  assert.match(rejected[3]![1], /our own public IP/);
  assert.match(rejected[4]![1], /our own VTEP MAC/);
  assert.deepEqual(show(c.apply([put(lease(2)), { type: 'put', key: key(2), value: '{"PublicIP":"x"}', lease: '7' }])), ['+10.244.2.0/24 10.0.0.2', '-10.244.2.0/24 10.0.0.2']);
});

test('conflicts: the first lease seen keeps its place (public IP, VTEP MAC); the waiting one is taken when the holder goes', () => {
  const { c, rejected } = mk();
  c.list([ownEntry, lease(2)]);
  assert.deepEqual(show(c.apply([put(lease(3, '10.0.0.2'))])), [], 'a second subnet for one public IP');
  assert.deepEqual(show(c.apply([put(lease(4, '10.0.0.4', 'aa:00:00:00:00:02'))])), [], 'a VTEP MAC that is taken');
  assert.equal(rejected.length, 2);
  // the holder goes: both waiting leases are retried in the same batch, and the first that fits wins
  assert.deepEqual(show(c.apply([del(2)])), ['-10.244.2.0/24 10.0.0.2', '+10.244.3.0/24 10.0.0.2', '+10.244.4.0/24 10.0.0.4']);
});

test('a waiting conflicting lease that is deleted meanwhile is not resurrected later', () => {
  const { c } = mk();
  c.list([ownEntry, lease(2)]);
  c.apply([put(lease(3, '10.0.0.2'))]);
  c.apply([del(3)]);
  assert.deepEqual(show(c.apply([del(2)])), ['-10.244.2.0/24 10.0.0.2']);
});

test('our own lease: a foreign value or a delete means lost; a listing without it too; our renewal is silent', () => {
  const { c } = mk();
  assert.deepEqual(c.list([ownEntry]).ownLost, []);
  assert.deepEqual(c.apply([{ type: 'put', key: OWN_KEY, value: OWN_VALUE, lease: '1' }]), { events: [], ownLost: [] });
  assert.match(c.apply([{ type: 'put', key: OWN_KEY, value: value('10.0.0.9', 'aa:00:00:00:00:09'), lease: '9' }]).ownLost[0]!, /another writer's value/);
  assert.match(c.apply([{ type: 'delete', key: OWN_KEY }]).ownLost[0]!, /deleted or expired/);
  assert.match(c.list([lease(2)]).ownLost[0]!, /no longer in etcd/);
  const foreign = c.list([{ key: OWN_KEY, value: value('10.0.0.9', 'aa:00:00:00:00:09'), lease: '9', modRevision: '2' }, lease(3)]);
  assert.deepEqual(show(foreign), [], 'a listing with a foreign value on our key is not applied');
  assert.match(foreign.ownLost[0]!, /another writer's value/);
});

test('after a store loss, peers missing from the store keep their entries until the hold ends, unless they come back', () => {
  const { c } = mk();
  c.list([ownEntry, lease(2), lease(3), lease(4)]);
  c.holdMissing(new Set([OWN_KEY, key(4)]), 10_000);
  assert.equal(c.heldCount, 2);
  assert.deepEqual(show(c.list([ownEntry, lease(4)], 5_000)), [], 'held peers survive a listing without them');
  c.apply([put(lease(3))]);
  assert.equal(c.heldCount, 1, 'a peer that re-registered is no longer held');
  assert.deepEqual(show(c.expireHeld(9_999)), []);
  const gone = c.expireHeld(10_000);
  assert.deepEqual(show(gone), ['-10.244.2.0/24 10.0.0.2']);
  assert.deepEqual(
    gone.expired.map((l) => l.attrs.publicIP),
    ['10.0.0.2'],
  );
  assert.deepEqual(
    c
      .peers()
      .map((p) => p.attrs.publicIP)
      .sort(),
    ['10.0.0.3', '10.0.0.4'],
  );
});

// flannel's dual-stack lease: key "<v4>-<len>&<v6>-<len>", PublicIPv6 and BackendV6Data
const cfg6 = parseConfig('{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}');
const cfg6only = parseConfig('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}');
const v6value = (ip: string, ip6: string | null, mac: string, mac6: string) =>
  JSON.stringify({ PublicIP: ip, PublicIPv6: ip6, BackendType: 'vxlan', BackendData: ip === '0.0.0.0' ? undefined : { VNI: 1, VtepMAC: mac }, BackendV6Data: { VNI: 1, VtepMAC: mac6 } });
const own6 = {
  subnet: parseCidr('10.244.1.0/24')!,
  ipv6Subnet: parseCidr6('fd00:10:244:1::/64')!,
  attrs: { publicIP: '10.0.0.1', publicIPv6: 'fd00::1', backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: 'aa:00:00:00:00:01' }, backendV6Data: { VNI: 1, VtepMAC: 'bb:00:00:00:00:01' } },
  etcdLease: '1',
};
const OWN6_KEY = `${PREFIX}10.244.1.0-24&fd00:10:244:1::-64`;
const dual = (n: number, o: { ip?: string; ip6?: string | null; mac6?: string; sub6?: string } = {}): RawLease => ({
  key: `${PREFIX}10.244.${n}.0-24&${o.sub6 ?? `fd00:10:244:${n}::`}-64`,
  value: v6value(o.ip ?? `10.0.0.${n}`, o.ip6 === undefined ? `fd00::${n}` : o.ip6, `aa:00:00:00:00:0${n}`, o.mac6 ?? `bb:00:00:00:00:0${n}`),
  lease: '7',
  modRevision: '1',
});

test('dual-stack: peers carry their IPv6 subnet; the hostile-lease rules hold for IPv6 (outside, overlapping, our public IPv6 or MAC, a taken one)', () => {
  const rejected: [string, string][] = [];
  const c = new LeaseCache({ subnetsPrefix: PREFIX, ownKey: OWN6_KEY, cfg: cfg6, own: own6, onReject: (k, r) => rejected.push([k, r]) });
  const ownRaw: RawLease = { key: OWN6_KEY, value: v6value('10.0.0.1', 'fd00::1', 'aa:00:00:00:00:01', 'bb:00:00:00:00:01'), lease: '1', modRevision: '1' };
  const v4only = lease(9);
  const out = c.list([
    ownRaw,
    dual(2),
    v4only, // an IPv4-only node in a dual-stack network: flannel programs its IPv4 half
    dual(3, { sub6: 'fd00:10:245:3::' }), // outside IPv6Network
    dual(4, { sub6: 'fd00:10:244:1::' }), // our IPv6 subnet
    dual(5, { ip6: 'fd00::1' }), // our public IPv6
    dual(6, { mac6: 'bb:00:00:00:00:01' }), // our IPv6 VTEP MAC
    dual(7, { sub6: 'fd00:10:244:2::' }), // peer 2's IPv6 subnet
    dual(8, { ip6: 'fd00::2' }), // peer 2's public IPv6
    dual(10, { ip6: 'fe80::10' }), // link-local: no zone in a lease
    dual(11, { ip6: null }), // an IPv6 subnet but no address to reach it
  ]);
  assert.deepEqual(
    out.events.map((e) => `${formatCidr(e.lease.subnet)} ${e.lease.ipv6Subnet ? formatCidr6(e.lease.ipv6Subnet) : '-'}`),
    ['10.244.2.0/24 fd00:10:244:2::/64', '10.244.9.0/24 -'],
  );
  const why: Record<string, string> = Object.fromEntries(rejected.map(([k, r]) => [k.slice(PREFIX.length).split('.')[2]!, r]));
  assert.match(why['3']!, /outside IPv6Network/);
  assert.match(why['4']!, /overlaps our own fd00:10:244:1::\/64/);
  assert.match(why['5']!, /our own public IPv6/);
  assert.match(why['6']!, /our own IPv6 VTEP MAC/);
  assert.match(why['7']!, /IPv6 subnet fd00:10:244:2::\/64 overlaps the lease of 10.0.0.2/);
  assert.match(why['8']!, /public IP fd00::2 already holds/);
  assert.match(why['10']!, /link-local/);
  assert.match(why['11']!, /no PublicIPv6/);
  // the holder goes: the lease that clashed with it over the IPv6 subnet takes its place
  assert.deepEqual(
    c.apply([{ type: 'delete', key: dual(2).key }]).events.map((e) => `${e.type} ${e.lease.ipv6Subnet ? formatCidr6(e.lease.ipv6Subnet) : ''}`),
    ['removed fd00:10:244:2::/64', 'added fd00:10:244:2::/64', 'added fd00:10:244:8::/64'],
    'peer 7 (its IPv6 subnet) and peer 8 (its public IPv6) clashed with peer 2',
  );
});

test('IPv6-only: keys "0.0.0.0-0&<v6>-<len>", PublicIP 0.0.0.0 for everyone; IPv4 keys and leases without IPv6 are refused', () => {
  const ownOnly = {
    subnet: { ip: 0, len: 0 },
    ipv6Subnet: parseCidr6('fd00:10:244:1::/64')!,
    attrs: { publicIP: '0.0.0.0', publicIPv6: 'fd00::1', backendType: 'vxlan', backendV6Data: { VNI: 1, VtepMAC: 'bb:00:00:00:00:01' } },
    etcdLease: '1',
  };
  const ownKey = `${PREFIX}0.0.0.0-0&fd00:10:244:1::-64`;
  const rejected: string[] = [];
  const c = new LeaseCache({ subnetsPrefix: PREFIX, ownKey, cfg: cfg6only, own: ownOnly, onReject: (_k, r) => rejected.push(r) });
  const only = (n: number): RawLease => ({ key: `${PREFIX}0.0.0.0-0&fd00:10:244:${n}::-64`, value: v6value('0.0.0.0', `fd00::${n}`, '', `bb:00:00:00:00:0${n}`), lease: '7', modRevision: '1' });
  const ownRaw: RawLease = { key: ownKey, value: v6value('0.0.0.0', 'fd00::1', '', 'bb:00:00:00:00:01'), lease: '1', modRevision: '1' };
  const out = c.list([ownRaw, only(2), only(3), lease(4), dual(5)]);
  assert.deepEqual(
    out.events.map((e) => formatCidr6(e.lease.ipv6Subnet!)),
    ['fd00:10:244:2::/64', 'fd00:10:244:3::/64'],
    'two nodes with PublicIP 0.0.0.0 are two nodes',
  );
  assert.deepEqual(out.ownLost, []);
  assert.equal(rejected.length, 2, rejected.join('; '));
  assert.ok(
    rejected.every((r) => /is IPv4, and the network is IPv6-only/.test(r)),
    'an IPv4 lease and a dual-stack lease',
  );
});

test('every lease the cache builds shares one hidden class (an object spread gave nearly each its own: memory and megamorphic reads at 10,000 peers)', () => {
  // V8's own answer, through a natives-syntax function made after the flag is set
  setFlagsFromString('--allow-natives-syntax');
  const sameShape = runInThisContext('(a, b) => %HaveSameMap(a, b)') as (a: object, b: object) => boolean;
  const { c } = mk();
  c.list([ownEntry, ...Array.from({ length: 200 }, (_, i) => lease(i + 2))]);
  const peers = c.peers();
  assert.equal(peers.length, 200);
  assert.equal(peers.filter((p) => !sameShape(p, peers[0]!)).length, 0);
});
