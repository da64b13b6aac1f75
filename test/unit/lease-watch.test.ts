// The lease watch's loop against a fake LeaseStore (the interface EtcdRegistry implements): a watch
// that etcd ends (compaction) is followed by a listing whose diff loses nothing; a watch etcd never
// confirms is abandoned and the store reconnected; events reach the sink in order, one batch at a time.
// The same paths against a real etcd server are in test/integration/subnet-manager.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LeaseWatch } from '../../control/subnet/lease-watch.ts';
import { parseConfig } from '../../control/subnet/config.ts';
import { formatCidr, parseCidr } from '../../control/subnet/ip4.ts';
import type { LeaseStore, RawEvent, RawLease, WatchHandlers } from '../../control/subnet/etcd-registry.ts';
import type { LeaseEvent } from '../../control/subnet/lease.ts';
import { silentLogger } from '../../control/log.ts';
import { leaseKeyName, type LeaseSubnets } from '../../control/subnet/lease-key.ts';

const PREFIX = '/coreos.com/network/subnets/';
const value = (ip: string, mac: string) => JSON.stringify({ PublicIP: ip, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac } });
const own = { subnet: parseCidr('10.244.1.0/24')!, attrs: { publicIP: '10.0.0.1', publicIPv6: null, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: 'aa:00:00:00:00:01' } } };
const lease = (n: number): RawLease => ({ key: `${PREFIX}10.244.${n}.0-24`, value: value(`10.0.0.${n}`, `aa:00:00:00:00:0${n}`), lease: '7', modRevision: '1' });

/** An etcd stand-in: a listing and a revision to hand out, and the handlers of the watches opened. */
class FakeStore implements LeaseStore {
  readonly subnetsPrefix = PREFIX;
  readonly configKey = '/coreos.com/network/config';
  leases: RawLease[] = [{ key: `${PREFIX}10.244.1.0-24`, value: value('10.0.0.1', 'aa:00:00:00:00:01'), lease: '1', modRevision: '1' }];
  rev = 10n;
  lists = 0;
  reconnects = 0;
  /** false: watchLeases never resolves (etcd lost the confirmation) */
  confirm = true;
  readonly watches: { from: string; h: WatchHandlers; cancelled: boolean }[] = [];
  leaseKey(s: LeaseSubnets) {
    return `${PREFIX}${leaseKeyName(s)}`;
  }
  listLeases() {
    this.lists++;
    return Promise.resolve({ leases: [...this.leases], revision: String(this.rev) });
  }
  watchLeases(from: string, h: WatchHandlers) {
    const w = { from, h, cancelled: false };
    this.watches.push(w);
    if (!this.confirm) return new Promise<never>(() => undefined);
    return Promise.resolve({
      cancel: () => {
        w.cancelled = true;
        return Promise.resolve();
      },
    });
  }
  revision() {
    return Promise.resolve(this.rev);
  }
  reconnect() {
    this.reconnects++;
  }
  /** etcd delivers events on the newest watch */
  send(events: RawEvent[]) {
    this.rev += BigInt(events.length);
    this.watches.at(-1)!.h.onEvents(events, String(this.rev));
  }
}

const cfg = parseConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');
const tick = (ms = 20) => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean, what: string) {
  for (let i = 0; i < 200 && !cond(); i++) await tick(10);
  assert.ok(cond(), what);
}

function start(store: FakeStore, watchCreateMs = 10_000) {
  const batches: string[][] = [];
  const lost: string[] = [];
  const sink = (ev: LeaseEvent[]) => {
    batches.push(ev.map((e) => `${e.type === 'added' ? '+' : '-'}${formatCidr(e.lease.subnet)}`));
    return Promise.resolve();
  };
  const w = new LeaseWatch(store, silentLogger, cfg, own, sink, (why) => lost.push(why), undefined, 60_000, watchCreateMs);
  void w.run();
  return { w, batches, lost };
}

test('list, then watch from the next revision; events reach the sink in order, one batch per delivery', async () => {
  const store = new FakeStore();
  store.leases.push(lease(2));
  const { w, batches, lost } = start(store);
  await w.synced;
  await until(() => store.watches.length === 1, 'a watch is opened');
  assert.equal(store.watches[0]!.from, '11', 'from the revision after the listing');
  store.send([{ type: 'put', ...lease(3) }]);
  store.send([
    { type: 'delete', key: lease(2).key },
    { type: 'put', ...lease(4) },
  ]);
  await w.drain();
  assert.deepEqual(batches, [['+10.244.2.0/24'], ['+10.244.3.0/24'], ['-10.244.2.0/24', '+10.244.4.0/24']]);
  assert.deepEqual(lost, []);
  assert.equal(w.stats.events, 3);
  await w.stop();
});

test('a watch etcd ends (compaction) is followed by a listing whose diff loses nothing', async () => {
  const store = new FakeStore();
  store.leases.push(lease(2), lease(3));
  const { w, batches } = start(store);
  await w.synced;
  await until(() => store.watches.length === 1, 'a watch is opened');
  // while the watch is gone, 2 is deleted and 4 is added: no event will ever say so
  store.leases = store.leases.filter((l) => l.key !== lease(2).key).concat(lease(4));
  store.rev = 20n;
  store.watches[0]!.h.onError(new Error('mvcc: required revision has been compacted'));
  await until(() => store.watches.length === 2, 'a new watch after the re-list');
  await w.drain();
  assert.equal(store.lists, 2);
  assert.deepEqual(batches.at(-1), ['-10.244.2.0/24', '+10.244.4.0/24'], 'the listing diff');
  assert.equal(store.watches[1]!.from, '21');
  assert.equal(store.watches[0]!.cancelled, false, 'a watcher etcd ended is not cancelled again (that would wait forever)');
  assert.deepEqual(
    w
      .peers()
      .map((p) => formatCidr(p.subnet))
      .sort(),
    ['10.244.3.0/24', '10.244.4.0/24'],
  );
  await w.stop();
});

test('a watch etcd never confirms is abandoned after watchCreateMs: the store reconnects and the loop lists again', async () => {
  const store = new FakeStore();
  store.confirm = false;
  const { w } = start(store, 50);
  await w.synced;
  await until(() => store.reconnects === 1, 'the store is asked for a new client');
  assert.equal(w.stats.watchStalls, 1);
  store.confirm = true;
  await until(() => store.lists >= 2 && store.watches.length >= 2, 'listed and watched again');
  // a late event on the abandoned watch must not be applied
  store.watches[0]!.h.onEvents([{ type: 'put', ...lease(5) }], '99');
  await w.drain();
  assert.ok(!w.peers().some((p) => p.attrs.publicIP === '10.0.0.5'));
  await w.stop();
});

test('our own lease deleted in a watch event is reported lost', async () => {
  const store = new FakeStore();
  const { w, lost } = start(store);
  await w.synced;
  await until(() => store.watches.length === 1, 'a watch is opened');
  store.send([{ type: 'delete', key: store.leaseKey(own) }]);
  await w.drain();
  assert.match(lost[0] ?? '', /deleted or expired/);
  await w.stop();
});
