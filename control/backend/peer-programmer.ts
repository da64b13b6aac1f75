// Where lease events become kernel entries. Each backend says which entries a peer lease needs
// (routes, neighbours and FDB entries, or BPF map entries), what the kernel holds now, and how to
// apply a list of operations; this turns lease events and periodic reconciles into one batch, and
// rolls a peer back when any of its entries fails, so a peer is either fully programmed or not at all.
// A driver whose state is tables of fixed-size entries (BPF maps) may do a reconcile itself
// (reconcileAll: packed rows, no object per entry); the bookkeeping, logs and counters stay here.
import type { Logger } from '../log.js';
import { isNetlinkError } from '../kernel/netlink.js';
import { hasIPv4, leaseName } from '../subnet/lease-key.js';
import type { Lease } from '../subnet/lease.js';
import type { LeaseEvent } from '../subnet/lease.js';
import type { ReconcileResult } from './types.js';

/**
 * A peer's identity here: its IPv4 subnet's address as an int32 (the lease cache lets no two cached
 * leases share one), or an IPv6-only lease's name. Not a formatted name per lease: at 10,000 peers
 * those strings were a tenth of a reconcile.
 */
type PeerKey = number | string;
const peerKey = (l: Lease): PeerKey => (hasIPv4(l) ? l.subnet.ip | 0 : leaseName(l));
/** the peer of a stale entry: no lease wants it */
const STALE = '(stale)';

type Tagged<Op> = { op: Op; peer: PeerKey; kind: 'add' | 'del'; entry: Entry<Op> };

export interface Entry<Op = unknown> {
  /** the kernel's identity of the entry: what a delete matches (e.g. "route 10.244.3.0/24") */
  key: string;
  /** everything else that must match (e.g. "via 10.244.3.0 dev 5 onlink") */
  value: string;
  add: Op;
  del: Op;
}

/** What a driver's own reconcile of the whole peer set did (PeerDriver.reconcileAll). */
export interface BulkReconcile {
  added: number;
  removed: number;
  /** peers with an entry the kernel refused, and its error: the driver took back what it wrote of them */
  failed: Map<Lease, Error>;
  /** leases the backend cannot use (entriesFor() would throw), and why */
  rejected: Map<Lease, string>;
  /** stale entries the kernel would not remove */
  notRemoved: Error[];
  /** leases that need no entry at all (the entry path does not count them as programmed either) */
  empty: Set<Lease>;
}

export interface PeerDriver<Op> {
  /** Entries for one peer, in the order they must be added. Throws when the lease is unusable. */
  entriesFor(lease: Lease): Entry<Op>[];
  /** The entries this backend owns in the kernel now. */
  currentEntries(): Promise<Entry<Op>[]>;
  /** Runs the operations in order; one result per operation (null = done), never throws for one. */
  apply(ops: Op[]): Promise<(Error | null)[]>;
  /**
   * Kernel lookups entriesFor() depends on (DirectRouting's route get), done before it is called:
   * for the leases of a batch, or for every peer (`refresh`) on a reconcile.
   */
  prepare?(leases: Lease[], refresh: boolean): Promise<void>;
  /**
   * Changes whenever entriesFor() would answer differently for the same lease (DirectRouting's lookups
   * changed). Without it, a lease's entries depend on the lease alone.
   */
  version?(): number;
  /**
   * The whole reconcile, done by the driver on its own tables (BPF maps: one buffer per map, compared
   * with the kernel's dump), with the same outcome as the entry path: deletes first, the same order,
   * a failed peer taken back. Only when its entries depend on the lease alone (the same as entriesFor()
   * gives). Undefined: the entry path runs.
   */
  reconcileAll?(peers: Lease[]): Promise<BulkReconcile | undefined>;
}

/** A delete whose entry is not there (any more): what it asked for is done. */
export const gone = (e: unknown) => isNetlinkError(e, 'ENOENT') || isNetlinkError(e, 'ESRCH') || isNetlinkError(e, 'EADDRNOTAVAIL');

export class PeerProgrammer<Op> {
  /**
   * subnet -> what is programmed for it: its entries, or after a driver's own reconcile its lease (the
   * entries derive from it: at 10,000 peers that keeps no 50,000 entry objects alive)
   */
  private readonly programmed = new Map<PeerKey, Entry<Op>[] | Lease>();
  /**
   * entriesFor() per lease object: the watch hands the same object until the lease changes, so a
   * reconcile of 5000 unchanged peers encodes nothing (it cost 40-80 ms a pass)
   */
  private readonly desiredCache = new WeakMap<Lease, { version: number; entries: Entry<Op>[] | undefined }>();
  readonly stats = { reconciles: 0, corrections: 0, failures: 0, rejected: 0 };

  constructor(
    private readonly driver: PeerDriver<Op>,
    private readonly log: Logger,
  ) {}

  peerCount(): number {
    return this.programmed.size;
  }

  private desired(lease: Lease): Entry<Op>[] | undefined {
    const version = this.driver.version?.() ?? 0;
    const hit = this.desiredCache.get(lease);
    if (hit && hit.version === version) return hit.entries;
    let entries: Entry<Op>[] | undefined;
    try {
      entries = this.driver.entriesFor(lease);
    } catch (e) {
      this.reject(lease, (e as Error).message);
    }
    this.desiredCache.set(lease, { version, entries });
    return entries;
  }

  private reject(lease: Lease, reason: string): void {
    this.stats.rejected++;
    this.log.warn({ subnet: leaseName(lease), publicIP: lease.attrs.publicIP, reason }, 'ignoring a lease this backend cannot use');
  }

  /** What is programmed for a peer, as entries. */
  private entriesOf(peer: PeerKey): Entry<Op>[] {
    const p = this.programmed.get(peer);
    if (p === undefined) return [];
    return Array.isArray(p) ? p : (this.desired(p) ?? []);
  }

  async handle(events: LeaseEvent[]): Promise<void> {
    // coalesce: only the last state of each subnet in this batch matters
    const target = new Map<PeerKey, Lease | null>();
    for (const e of events) target.set(peerKey(e.lease), e.type === 'added' ? e.lease : null);
    await this.driver.prepare?.(
      [...target.values()].filter((l) => l !== null),
      false,
    );
    const ops: Tagged<Op>[] = [];
    const next = new Map<PeerKey, Entry<Op>[]>();
    for (const [peer, lease] of target) {
      const old = this.entriesOf(peer);
      const want = lease ? (this.desired(lease) ?? []) : [];
      next.set(peer, want);
      const wantKeys = new Map(want.map((e) => [e.key, e]));
      // deletes first, routes before the neighbours they resolve through
      for (const o of [...old].reverse()) if (!wantKeys.has(o.key)) ops.push({ op: o.del, peer, kind: 'del', entry: o });
      const oldByKey = new Map(old.map((e) => [e.key, e.value]));
      for (const w of want) if (oldByKey.get(w.key) !== w.value) ops.push({ op: w.add, peer, kind: 'add', entry: w });
    }
    await this.run(ops, next, () => events.map((e) => e.lease));
  }

  async reconcile(peers: Lease[]): Promise<ReconcileResult> {
    this.stats.reconciles++;
    await this.driver.prepare?.(peers, true);
    const bulk = await this.driver.reconcileAll?.(peers);
    if (bulk) return this.afterBulk(peers, bulk);
    // At 10,000 peers a pass compares 50,000 entries with as many in the kernel: one map entry per
    // entry, no wrapper object, and an array only where the kernel holds one key twice (classic routes)
    const want = new Map<string, Entry<Op>>();
    const next = new Map<PeerKey, Entry<Op>[]>();
    for (const lease of peers) {
      const entries = this.desired(lease) ?? [];
      next.set(peerKey(lease), entries);
      for (const entry of entries) want.set(entry.key, entry);
    }
    const current = await this.driver.currentEntries();
    const have = new Map<string, Entry<Op> | Entry<Op>[]>();
    for (const c of current) {
      const had = have.get(c.key);
      if (had === undefined) have.set(c.key, c);
      else if (Array.isArray(had)) had.push(c);
      else have.set(c.key, [had, c]);
    }
    const dels: Tagged<Op>[] = [];
    const adds: Tagged<Op>[] = [];
    let owner: Map<Entry<Op>, PeerKey> | undefined;
    const peerOf = (e: Entry<Op>) => {
      owner ??= new Map([...next].flatMap(([peer, es]) => es.map((x) => [x, peer] as const)));
      return owner.get(e) ?? STALE;
    };
    for (const [key, had] of have) {
      const w = want.get(key);
      if (!Array.isArray(had)) {
        if (!w) dels.push({ op: had.del, peer: STALE, kind: 'del', entry: had });
        continue;
      }
      for (const c of had) {
        if (!w) dels.push({ op: c.del, peer: STALE, kind: 'del', entry: c });
        else if (c.value !== w.value) dels.push({ op: c.del, peer: peerOf(w), kind: 'del', entry: c });
      }
    }
    for (const [peer, entries] of next) {
      for (const e of entries) {
        const cur = have.get(e.key);
        const ok = cur !== undefined && (Array.isArray(cur) ? cur.some((c) => c.value === e.value) : cur.value === e.value);
        if (!ok) adds.push({ op: e.add, peer, kind: 'add', entry: e });
      }
    }
    // deletes first; the kernel wants a peer's entries in order (neighbour before route): peers stay together
    this.programmed.clear();
    return this.corrected(await this.run(dels.length ? [...dels, ...adds] : adds, next, () => peers));
  }

  private corrected(result: ReconcileResult): ReconcileResult {
    if (result.added || result.removed) this.log.info(result, 'reconcile corrected the kernel state');
    this.stats.corrections += result.added + result.removed;
    return result;
  }

  private failedPeer(name: PeerKey, err: Error): void {
    this.stats.failures++;
    this.log.error({ peer: name, err: err.message }, 'failed to program a peer; rolled it back, the next reconcile retries');
  }

  /** A driver's own reconcile: the same bookkeeping, logs and counters as the entry path's. */
  private afterBulk(peers: Lease[], r: BulkReconcile): ReconcileResult {
    const version = this.driver.version?.() ?? 0;
    this.programmed.clear();
    const clean = !r.rejected.size && !r.failed.size && !r.empty.size;
    for (const lease of peers) {
      if (clean) {
        this.programmed.set(peerKey(lease), lease);
        continue;
      }
      const why = r.rejected.get(lease);
      if (why !== undefined) {
        // logged and counted once per lease, as desired() does
        if (this.desiredCache.get(lease)?.version !== version) this.reject(lease, why);
        this.desiredCache.set(lease, { version, entries: undefined });
      } else if (!r.failed.has(lease) && !r.empty.has(lease)) this.programmed.set(peerKey(lease), lease);
    }
    for (const err of r.notRemoved) this.log.warn({ err: err.message }, 'could not remove a kernel entry');
    for (const [lease, err] of r.failed) this.failedPeer(leaseName(lease), err);
    return this.corrected({ added: r.added, removed: r.removed });
  }

  /** `leases`: where the failure log finds a failed peer's name */
  private async run(ops: Tagged<Op>[], next: Map<PeerKey, Entry<Op>[]>, leases: () => Lease[]): Promise<ReconcileResult> {
    const res = await this.driver.apply(ops.map((o) => o.op));
    const failedPeers = new Map<PeerKey, Error>();
    let added = 0;
    let removed = 0;
    res.forEach((err, i) => {
      const o = ops[i]!;
      if (!err) return o.kind === 'add' ? added++ : removed++;
      if (o.kind === 'del' && gone(err)) return removed++;
      if (o.kind === 'add' && !failedPeers.has(o.peer)) failedPeers.set(o.peer, err);
      if (o.kind === 'del') this.log.warn({ err: err.message }, 'could not remove a kernel entry');
    });
    for (const [peer, entries] of next) {
      if (failedPeers.has(peer)) continue;
      if (entries.length) this.programmed.set(peer, entries);
      else this.programmed.delete(peer);
    }
    if (failedPeers.size) {
      // roll back what did get in for those peers, so none is half-programmed; the next reconcile retries
      const rollback = ops.filter((o, i) => o.kind === 'add' && failedPeers.has(o.peer) && res[i] === null).reverse();
      await this.driver.apply(rollback.map((o) => o.entry.del));
      for (const [peer, err] of failedPeers) {
        this.programmed.delete(peer);
        const lease = leases().find((l) => peerKey(l) === peer);
        this.failedPeer(lease ? leaseName(lease) : peer, err);
      }
      added -= rollback.length;
    }
    return { added, removed };
  }
}
