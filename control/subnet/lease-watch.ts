// The lease watch: the etcd side of everyone else's leases. Lists, watches from the listing's revision,
// and starts over (list, then watch) when the watch ends, when etcd's revision goes back (it lost its
// data: see recoverStore) or when etcd never confirms a watch. What listings and events mean is the
// lease cache's business (lease-cache.ts); this loop feeds it and hands its events to the backend in
// order, one batch at a time.
import type { Logger } from '../log.js';
import type { NetworkConfig } from './config.js';
import type { LeaseStore, RawEvent, RawLease } from './etcd-registry.js';
import { LeaseCache, type CacheOutcome } from './lease-cache.js';
import { leaseName } from './lease-key.js';
import type { Lease, LeaseEvent } from './lease.js';

export const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
  });

/** What the watch does when etcd comes back without the data it had (wiped, or restored from an old backup). */
export interface StoreRecovery {
  holdMs: number;
  /** writes our lease again; false when someone else holds the key now */
  reRegister(): Promise<boolean>;
  /** writes the config we run with where there is none; false when one is there */
  restoreConfig(): Promise<boolean>;
}

/**
 * Everyone else's leases. Keeps the valid ones in a cache keyed by etcd key so that a delete without
 * the old value, a re-list after compaction or an etcd outage, all turn into exact added/removed events.
 */
export class LeaseWatch {
  private readonly cache: LeaseCache;
  private chain: Promise<void> = Promise.resolve();
  private stopped = false;
  private abort = new AbortController();
  private endWatch?: (err?: Error) => void;
  private readonly ownKey: string;
  private firstSync!: () => void;
  /** resolves once the first listing has been handed to the sink */
  readonly synced = new Promise<void>((r) => (this.firstSync = r));
  /** counters an operator can read (metrics, status) */
  readonly stats = { relists: 0, events: 0, rejected: 0, lastEventAt: 0, disconnects: 0, storeLosses: 0, watchStalls: 0 };
  /** highest store revision seen; a listing below it means etcd lost its data */
  private revision = 0n;
  private holdTimer?: NodeJS.Timeout;

  constructor(
    private readonly registry: LeaseStore,
    private readonly log: Logger,
    cfg: NetworkConfig,
    own: Lease,
    private readonly sink: (events: LeaseEvent[]) => Promise<void>,
    private readonly onOwnLeaseLost: (why: string) => void,
    private readonly recovery?: StoreRecovery,
    private readonly storeCheckMs = 5000,
    private readonly watchCreateMs = 10_000,
  ) {
    this.ownKey = registry.leaseKey(own);
    this.cache = new LeaseCache({
      subnetsPrefix: registry.subnetsPrefix,
      ownKey: this.ownKey,
      cfg,
      own,
      onReject: (key, reason) => {
        this.stats.rejected++;
        this.log.warn({ key, reason }, 'ignoring a malformed or conflicting lease written by someone else');
      },
    });
  }

  peers(): Lease[] {
    return this.cache.peers();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.holdTimer);
    this.abort.abort();
    this.endWatch?.();
    await this.chain;
  }

  /** Waits until every event received so far has been applied by the sink. */
  async drain(): Promise<void> {
    await this.chain;
  }

  async run(): Promise<void> {
    while (!this.stopped) {
      const revision = await this.list();
      if (revision !== undefined) await this.watchFrom(revision);
    }
  }

  /** Lists every lease and applies the listing; the revision to watch from, or undefined to list again. */
  private async list(): Promise<string | undefined> {
    let listing: { leases: RawLease[]; revision: string };
    try {
      listing = await this.registry.listLeases();
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'cannot list leases in etcd, retrying');
      await sleep(1000, this.abort.signal);
      return undefined;
    }
    this.stats.relists++;
    const rev = BigInt(listing.revision);
    if (rev < this.revision) {
      try {
        await this.recoverStore(rev, listing.leases);
      } catch (e) {
        this.log.warn({ err: (e as Error).message }, 'cannot re-register in etcd after it lost its data, retrying');
        await sleep(1000, this.abort.signal);
        return undefined;
      }
      // the listing predates our own re-registration: list again before watching
      this.revision = 0n;
      return undefined;
    }
    this.revision = rev;
    this.emit(this.cache.list(listing.leases));
    this.firstSync();
    return listing.revision;
  }

  /**
   * One watch from just after the listing's revision, until it ends: etcd ended it (compaction, an
   * error), the probe restarted it, etcd never confirmed it, or stop(). The caller lists again.
   */
  private async watchFrom(listedRevision: string): Promise<void> {
    const ended = new Promise<Error | undefined>((resolve) => (this.endWatch = resolve));
    // current: this watch's events still count (false once it is being abandoned);
    // liveWatcher: we ended it, not etcd, so its watcher is still registered and must be cancelled
    const session = { current: true, liveWatcher: false };
    const stopProbe = this.probe(session);
    const abandon = () => {
      stopProbe();
      session.current = false;
    };
    let watcher: { cancel(): Promise<void> } | undefined;
    try {
      const creating = this.registry.watchLeases((BigInt(listedRevision) + 1n).toString(), {
        onEvents: (events, revision) => {
          if (!session.current) return; // a watcher being cancelled must not apply anything any more
          if (BigInt(revision) > this.revision) this.revision = BigInt(revision);
          this.applyEvents(events);
        },
        onError: (err) => this.endWatch?.(err),
        onDisconnect: (err) => {
          this.stats.disconnects++;
          this.log.warn({ err: err.message }, 'lost the etcd lease watch, reconnecting (the data plane keeps forwarding)');
        },
      });
      watcher = await Promise.race([creating, sleep(this.watchCreateMs, this.abort.signal).then(() => undefined)]);
      if (!watcher) {
        // etcd3 creates the watchers of a stream one at a time: one whose confirmation is lost holds
        // every later one, and the probe cannot help a watch that was never created. A new client
        // opens a new stream; the next listing's diff loses nothing.
        abandon();
        void creating
          .then(
            (w) => w.cancel(),
            () => undefined,
          )
          .catch(() => undefined);
        if (this.stopped) return;
        this.stats.watchStalls++;
        this.log.warn({ waitedMs: this.watchCreateMs }, 'etcd did not confirm the lease watch: reconnecting and listing again');
        this.registry.reconnect();
        return;
      }
    } catch (e) {
      abandon();
      this.log.warn({ err: (e as Error).message }, 'cannot watch leases in etcd, retrying');
      await sleep(1000, this.abort.signal);
      return;
    }
    if (this.stopped) this.endWatch?.();
    const err = await ended;
    abandon();
    // etcd3 already dropped a watcher that ended in error; cancelling it again would wait forever
    // for an 'end' event, so only a live watcher is cancelled, and never for more than a second.
    if (this.stopped || session.liveWatcher) await Promise.race([watcher.cancel().catch(() => undefined), sleep(1000)]);
    else this.log.warn({ err: err?.message }, 'the lease watch ended (compaction?): listing all leases again');
  }

  /**
   * etcd3 resumes a watch at the revision it had reached; on a store that lost its data that revision
   * lies in the future and the watch waits, silently, for events that never come (and the client does
   * not always report the disconnect). So ask etcd its revision every few seconds (one small read) and
   * end the watch when it went back. And when etcd was away, its client may take many seconds
   * (backoff) to resume the watch: once the probe gets an answer again, end it too, to list and watch
   * afresh (the listing diff loses nothing). Returns the probe's stop.
   */
  private probe(session: { current: boolean; liveWatcher: boolean }): () => void {
    let failed = false;
    let timer: NodeJS.Timeout | undefined;
    const restart = (why: string) => {
      if (!session.current) return; // answered after this watch ended: the next one is not ours to end
      session.liveWatcher = true;
      this.endWatch?.(new Error(why));
    };
    const schedule = () => {
      const tick = async () => {
        try {
          // a request made while etcd is away may never complete
          const now = await Promise.race([this.registry.revision(), sleep(3000).then(() => Promise.reject(new Error('timeout')))]);
          if (now < this.revision) return restart(`etcd revision went back from ${this.revision} to ${now}`);
          if (failed) return restart('etcd answers again');
        } catch {
          failed = true;
        }
        if (session.current) schedule();
      };
      timer = setTimeout(() => void tick(), failed ? 1000 : this.storeCheckMs);
      timer.unref?.();
    };
    schedule();
    return () => clearTimeout(timer);
  }

  /**
   * etcd came back without the data it had (wiped, or restored from an older backup). Flannel would
   * see its lease gone and exit; instead every agent writes back what it knows: its own lease (same
   * subnet, create-if-absent) and the config if missing. Peers missing from the store keep their
   * entries for holdMs so pods keep talking while those nodes re-register; those that never do go.
   */
  private async recoverStore(rev: bigint, leases: RawLease[]): Promise<void> {
    const r = this.recovery;
    this.stats.storeLosses++;
    this.log.warn({ revisionBefore: String(this.revision), revisionNow: String(rev), leasesNow: leases.length }, 'etcd lost its data (its revision went back): writing our lease and the config back');
    if (!r) return this.onOwnLeaseLost('etcd lost its data');
    if (await r.restoreConfig()) this.log.warn({ key: this.registry.configKey }, 'the network config was missing after etcd lost its data; wrote back the one this node runs with');
    if (!leases.some((l) => l.key === this.ownKey)) {
      if (!(await r.reRegister())) return this.onOwnLeaseLost(`our subnet ${this.ownKey} was taken by another node after etcd lost its data`);
      this.log.warn({ key: this.ownKey }, 're-registered our lease');
    }
    this.cache.holdMissing(new Set(leases.map((l) => l.key)), Date.now() + r.holdMs);
    if (this.cache.heldCount && !this.holdTimer) {
      this.holdTimer = setInterval(() => this.expireHeld(), Math.min(1000, r.holdMs));
      this.holdTimer.unref?.();
    }
  }

  /** Peers that did not re-register within holdMs after a store loss are removed like expired leases. */
  private expireHeld(): void {
    const out = this.cache.expireHeld();
    for (const old of out.expired) this.log.warn({ publicIP: old.attrs.publicIP, subnet: leaseName(old) }, 'a peer did not re-register after etcd lost its data; removing it');
    if (!this.cache.heldCount) {
      clearInterval(this.holdTimer);
      this.holdTimer = undefined;
    }
    this.emit(out);
  }

  private applyEvents(raw: RawEvent[]): void {
    this.stats.events += raw.length;
    const out = this.cache.apply(raw);
    this.stats.lastEventAt = Date.now();
    this.emit(out);
  }

  /** Our lease's loss first (the agent stops using the subnet), then the events, in order, to the sink. */
  private emit({ events, ownLost }: CacheOutcome): void {
    for (const why of ownLost) this.onOwnLeaseLost(why);
    this.chain = this.chain.then(async () => {
      if (events.length === 0 || this.stopped) return;
      try {
        await this.sink(events);
      } catch (e) {
        // a backend failing to program one batch must not stop the watch; the reconcile loop repairs it
        this.log.error({ err: (e as Error).message }, 'backend failed to apply lease events');
      }
    });
  }
}
