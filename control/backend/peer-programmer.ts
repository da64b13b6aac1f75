// Where lease events become kernel entries. Each backend says which entries a peer lease needs
// (routes, neighbours and FDB entries, or BPF map entries), what the kernel holds now, and how to
// apply a list of operations; this turns lease events and periodic reconciles into one batch, and
// rolls a peer back when any of its entries fails, so a peer is either fully programmed or not at all.
import type { Logger } from '../log.js';
import { isNetlinkError } from '../kernel/netlink.js';
import { leaseName } from '../subnet/lease-key.js';
import type { Lease } from '../subnet/lease.js';
import type { LeaseEvent } from '../subnet/lease.js';
import type { ReconcileResult } from './types.js';

type Tagged<Op> = { op: Op; peer: string; kind: 'add' | 'del'; entry: Entry<Op> };

export interface Entry<Op = unknown> {
  /** the kernel's identity of the entry: what a delete matches (e.g. "route 10.244.3.0/24") */
  key: string;
  /** everything else that must match (e.g. "via 10.244.3.0 dev 5 onlink") */
  value: string;
  add: Op;
  del: Op;
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
}

const gone = (e: unknown) => isNetlinkError(e, 'ENOENT') || isNetlinkError(e, 'ESRCH') || isNetlinkError(e, 'EADDRNOTAVAIL');

export class PeerProgrammer<Op> {
  /** subnet -> the entries programmed for it */
  private readonly programmed = new Map<string, Entry<Op>[]>();
  /**
   * entriesFor() per lease object: the watch hands the same object until the lease changes, so a
   * reconcile of 5000 unchanged peers encodes nothing (it cost 40-80 ms a pass)
   */
  private readonly desiredCache = new WeakMap<Lease, { version: number; entries: Entry<Op>[] | undefined }>();
  /** leaseName() per lease object, for the same reason */
  private readonly names = new WeakMap<Lease, string>();
  readonly stats = { reconciles: 0, corrections: 0, failures: 0, rejected: 0 };

  constructor(
    private readonly driver: PeerDriver<Op>,
    private readonly log: Logger,
  ) {}

  peerCount(): number {
    return this.programmed.size;
  }

  private peerName(lease: Lease): string {
    let name = this.names.get(lease);
    if (name === undefined) this.names.set(lease, (name = leaseName(lease)));
    return name;
  }

  private desired(lease: Lease): Entry<Op>[] | undefined {
    const version = this.driver.version?.() ?? 0;
    const hit = this.desiredCache.get(lease);
    if (hit && hit.version === version) return hit.entries;
    let entries: Entry<Op>[] | undefined;
    try {
      entries = this.driver.entriesFor(lease);
    } catch (e) {
      this.stats.rejected++;
      this.log.warn({ subnet: leaseName(lease), publicIP: lease.attrs.publicIP, reason: (e as Error).message }, 'ignoring a lease this backend cannot use');
    }
    this.desiredCache.set(lease, { version, entries });
    return entries;
  }

  async handle(events: LeaseEvent[]): Promise<void> {
    // coalesce: only the last state of each subnet in this batch matters
    const target = new Map<string, Lease | null>();
    for (const e of events) target.set(this.peerName(e.lease), e.type === 'added' ? e.lease : null);
    await this.driver.prepare?.(
      [...target.values()].filter((l) => l !== null),
      false,
    );
    const ops: Tagged<Op>[] = [];
    const next = new Map<string, Entry<Op>[]>();
    for (const [peer, lease] of target) {
      const old = this.programmed.get(peer) ?? [];
      const want = lease ? (this.desired(lease) ?? []) : [];
      next.set(peer, want);
      const wantKeys = new Map(want.map((e) => [e.key, e]));
      // deletes first, routes before the neighbours they resolve through
      for (const o of [...old].reverse()) if (!wantKeys.has(o.key)) ops.push({ op: o.del, peer, kind: 'del', entry: o });
      const oldByKey = new Map(old.map((e) => [e.key, e.value]));
      for (const w of want) if (oldByKey.get(w.key) !== w.value) ops.push({ op: w.add, peer, kind: 'add', entry: w });
    }
    await this.run(ops, next);
  }

  async reconcile(peers: Lease[]): Promise<ReconcileResult> {
    this.stats.reconciles++;
    await this.driver.prepare?.(peers, true);
    // At 10,000 peers a pass compares 50,000 entries with as many in the kernel: one map entry per
    // entry, no wrapper object, and an array only where the kernel holds one key twice (classic routes)
    const want = new Map<string, Entry<Op>>();
    const next = new Map<string, Entry<Op>[]>();
    for (const lease of peers) {
      const entries = this.desired(lease) ?? [];
      next.set(this.peerName(lease), entries);
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
    let owner: Map<Entry<Op>, string> | undefined;
    const peerOf = (e: Entry<Op>) => {
      owner ??= new Map([...next].flatMap(([peer, es]) => es.map((x) => [x, peer] as const)));
      return owner.get(e) ?? '(stale)';
    };
    for (const [key, had] of have) {
      const w = want.get(key);
      if (!Array.isArray(had)) {
        if (!w) dels.push({ op: had.del, peer: '(stale)', kind: 'del', entry: had });
        continue;
      }
      for (const c of had) {
        if (!w) dels.push({ op: c.del, peer: '(stale)', kind: 'del', entry: c });
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
    const result = await this.run(dels.length ? [...dels, ...adds] : adds, next);
    if (result.added || result.removed) this.log.info(result, 'reconcile corrected the kernel state');
    this.stats.corrections += result.added + result.removed;
    return result;
  }

  private async run(ops: Tagged<Op>[], next: Map<string, Entry<Op>[]>): Promise<ReconcileResult> {
    const res = await this.driver.apply(ops.map((o) => o.op));
    const failedPeers = new Map<string, Error>();
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
        this.stats.failures++;
        this.programmed.delete(peer);
        this.log.error({ peer, err: err.message }, 'failed to program a peer; rolled it back, the next reconcile retries');
      }
      added -= rollback.length;
    }
    return { added, removed };
  }
}
