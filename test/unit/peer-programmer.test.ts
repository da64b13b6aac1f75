// The peer programmer's logic with an in-memory driver standing in for the kernel: coalescing of a
// batch, entry order, rollback of a peer whose entry fails (never half-programmed), reconcile against
// what the "kernel" holds (stale entries removed, missing and changed ones written). The real drivers
// (netlink, BPF maps) are exercised against the kernel in test/e2e.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PeerProgrammer, type Entry, type PeerDriver } from '../../control/backend/peer-programmer.ts';
import { parseCidr } from '../../control/subnet/ip4.ts';
import { LeaseFormatError, type Lease, type LeaseEvent } from '../../control/subnet/lease.ts';
import { silentLogger } from '../../control/log.ts';

type Op = { action: 'add' | 'del'; key: string; value: string };

/** A "kernel" of key -> value entries; a peer is a neighbour and a route; fail() makes an add fail. */
class FakeDriver implements PeerDriver<Op> {
  readonly kernel = new Map<string, string>();
  readonly log: string[] = [];
  failing = new Set<string>();
  entriesFor(l: Lease): Entry<Op>[] {
    if (l.attrs.backendType !== 'vxlan') throw new LeaseFormatError('not vxlan');
    const s = `${l.subnet.ip}`;
    const mk = (key: string, value: string): Entry<Op> => ({ key, value, add: { action: 'add', key, value }, del: { action: 'del', key, value } });
    return [mk(`neigh ${s}`, l.attrs.publicIP), mk(`route ${s}`, `via ${l.attrs.publicIP}`)];
  }
  currentEntries(): Promise<Entry<Op>[]> {
    return Promise.resolve([...this.kernel].map(([key, value]) => ({ key, value, add: { action: 'add', key, value }, del: { action: 'del', key, value } })));
  }
  apply(ops: Op[]): Promise<(Error | null)[]> {
    return Promise.resolve(
      ops.map((o) => {
        this.log.push(`${o.action} ${o.key}`);
        if (o.action === 'add' && this.failing.has(o.key)) return Object.assign(new Error(`EEXIST ${o.key}`), { code: 'EEXIST' });
        if (o.action === 'add') this.kernel.set(o.key, o.value);
        else this.kernel.delete(o.key);
        return null;
      }),
    );
  }
}

const lease = (n: number, ip = `10.0.0.${n}`, backendType = 'vxlan'): Lease => ({
  subnet: parseCidr(`10.244.${n}.0/24`)!,
  attrs: { publicIP: ip, publicIPv6: null, backendType, backendData: {} },
  etcdLease: '1',
});
const added = (l: Lease): LeaseEvent => ({ type: 'added', lease: l });
const removed = (l: Lease): LeaseEvent => ({ type: 'removed', lease: l });
const mk = () => {
  const d = new FakeDriver();
  return { d, p: new PeerProgrammer<Op>(d, silentLogger) };
};
const ip = (n: number) => parseCidr(`10.244.${n}.0/24`)!.ip;

test("a batch is coalesced: only the last state of each subnet is written; entries go in the driver's order", async () => {
  const { d, p } = mk();
  await p.handle([added(lease(2)), removed(lease(2)), added(lease(3)), added(lease(3, '10.0.0.33'))]);
  assert.deepEqual(d.log, [`add neigh ${ip(3)}`, `add route ${ip(3)}`], 'subnet 2 came and went in one batch: nothing written');
  assert.equal(d.kernel.get(`route ${ip(3)}`), 'via 10.0.0.33');
  assert.equal(p.peerCount(), 1);
});

test('a change rewrites only the entries whose value changed; a removal deletes in reverse order', async () => {
  const { d, p } = mk();
  await p.handle([added(lease(2))]);
  d.log.length = 0;
  await p.handle([added(lease(2))]);
  assert.deepEqual(d.log, [], 'the same lease again writes nothing');
  await p.handle([removed(lease(2))]);
  assert.deepEqual(d.log, [`del route ${ip(2)}`, `del neigh ${ip(2)}`], 'routes before the neighbours they resolve through');
  assert.equal(d.kernel.size, 0);
});

test('a peer whose entry fails is rolled back, never half-programmed; other peers of the batch are not affected; reconcile retries', async () => {
  const { d, p } = mk();
  d.failing.add(`route ${ip(2)}`);
  await p.handle([added(lease(2)), added(lease(3))]);
  assert.deepEqual([...d.kernel.keys()].sort(), [`neigh ${ip(3)}`, `route ${ip(3)}`], 'peer 2 rolled back, peer 3 in place');
  assert.equal(p.stats.failures, 1);
  assert.equal(p.peerCount(), 1);
  d.failing.clear();
  const r = await p.reconcile([lease(2), lease(3)]);
  assert.deepEqual(r, { added: 2, removed: 0 });
  assert.equal(d.kernel.size, 4);
  assert.equal(p.peerCount(), 2);
});

test('reconcile: stale entries go, missing and drifted ones are written, a lease the backend cannot use is counted', async () => {
  const { d, p } = mk();
  await p.handle([added(lease(2)), added(lease(3))]);
  d.kernel.set('route 99', 'left by a crash');
  d.kernel.delete(`neigh ${ip(2)}`);
  d.kernel.set(`route ${ip(3)}`, 'via somewhere else');
  d.log.length = 0;
  const r = await p.reconcile([lease(2), lease(3), lease(4, '10.0.0.4', 'host-gw')]);
  assert.deepEqual(r, { added: 2, removed: 1 });
  assert.equal(d.log[0], 'del route 99', 'deletes first');
  assert.equal(d.kernel.get(`neigh ${ip(2)}`), '10.0.0.2');
  assert.equal(d.kernel.get(`route ${ip(3)}`), 'via 10.0.0.3');
  assert.ok(!d.kernel.has('route 99'));
  assert.equal(p.stats.rejected, 1, 'the host-gw lease is ignored, with a count');
  assert.equal(p.stats.corrections, 3);
});
