// The subnet manager: network config, our lease (acquire, renew), and everyone else's leases as a
// stream of added/removed events. It talks to etcd only, never to the kernel.
import type { Logger } from '../log.js';
import { pickFreeSubnet, NetworkExhaustedError } from './allocate.js';
import { ConfigError, isCompatible, parseConfig, type NetworkConfig } from './config.js';
import type { EtcdRegistry, RawEvent, RawLease } from './etcd-registry.js';
import { contains, formatCidr, overlaps, parseSubnetKey, sameSubnet, type Subnet } from './ip4.js';
import { claimedVtepMAC, decodeAttrs, encodeAttrs, type Lease, type LeaseAttrs } from './lease.js';

export const DEFAULT_SUBNET_TTL_S = 24 * 3600;
const RACE_RETRIES = 10;

/** Other agents kept taking the subnets we chose: retrying more would not help. */
export class SubnetRaceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SubnetRaceError';
  }
}

/** Our key holds someone else's value, or another etcd lease: the subnet is no longer ours. */
export class LeaseLostError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LeaseLostError';
  }
}

export type LeaseEvent = { type: 'added'; lease: Lease } | { type: 'removed'; lease: Lease };

export interface SubnetManagerOptions {
  registry: EtcdRegistry;
  log: Logger;
  /** TTL of our lease key; flannel uses 24 h */
  subnetTTLSeconds?: number;
  /** renew this long before expiry (--subnet-lease-renew-margin, flannel default 60 min) */
  renewMarginMs?: number;
  /** wait between failed attempts to reach etcd (renewal: flannel retries every minute) */
  retryMs?: number;
  /** after etcd lost its data, how long peers missing from it keep their entries while they re-register */
  storeLossHoldMs?: number;
  /** how long a new lease watch may wait for etcd's confirmation before a new client tries again */
  watchCreateMs?: number;
  random?: () => number;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
  });

export class SubnetManager {
  readonly registry: EtcdRegistry;
  private readonly log: Logger;
  private readonly ttl: number;
  private readonly renewMarginMs: number;
  private readonly retryMs: number;
  private readonly random: () => number;
  private readonly storeLossHoldMs: number;
  private readonly watchCreateMs: number;
  private renewTimer?: NodeJS.Timeout;

  constructor(o: SubnetManagerOptions) {
    this.registry = o.registry;
    this.log = o.log;
    this.ttl = o.subnetTTLSeconds ?? DEFAULT_SUBNET_TTL_S;
    this.renewMarginMs = o.renewMarginMs ?? 60 * 60_000;
    this.retryMs = o.retryMs ?? 60_000;
    this.random = o.random ?? Math.random;
    this.storeLossHoldMs = o.storeLossHoldMs ?? 5 * 60_000;
    this.watchCreateMs = o.watchCreateMs ?? 10_000;
  }

  /**
   * How long before expiry we renew: --subnet-lease-renew-margin, but never more than half the TTL
   * (a short test TTL with the default 60 min margin would otherwise renew in a loop).
   */
  private get marginMs(): number {
    return Math.min(this.renewMarginMs, this.ttl * 500);
  }

  /**
   * Waits until the operator has written <prefix>/config and etcd answers. A config that is there but
   * invalid is a ConfigError: retrying would not fix it.
   */
  async waitForConfig(signal?: AbortSignal, pollMs = 1000): Promise<NetworkConfig> {
    let warned = false;
    for (;;) {
      signal?.throwIfAborted();
      let text: string | undefined;
      try {
        text = await this.registry.getConfig();
      } catch (e) {
        const fatal = await this.registry.diagnose(e as Error);
        if (fatal) throw fatal;
        this.log.warn({ err: (e as Error).message }, 'cannot reach etcd to read the network config, retrying');
        await sleep(pollMs, signal);
        continue;
      }
      if (text === undefined) {
        if (!warned) this.log.warn({ key: this.registry.configKey }, 'network config not found in etcd yet, waiting for it');
        warned = true;
        await sleep(pollMs, signal);
        continue;
      }
      const cfg = parseConfig(text);
      if (cfg.backendDefaulted)
        this.log.warn('the network config has no Backend: using udp as flannel does (slow); set "Backend": {"Type": "vxlan"}');
      return cfg;
    }
  }

  /**
   * Flannel's order: our PublicIP's existing lease, then the subnet of the previous run (subnet file),
   * then a random free one; created with create-if-absent so two nodes never share a subnet.
   */
  async acquireLease(cfg: NetworkConfig, attrs: LeaseAttrs, previous?: Subnet, signal?: AbortSignal): Promise<Lease> {
    const value = encodeAttrs(attrs);
    for (let attempt = 1; ; attempt++) {
      signal?.throwIfAborted();
      try {
        const lease = await this.tryAcquire(cfg, attrs, value, previous);
        if (lease) return lease;
        if (attempt >= RACE_RETRIES) throw new SubnetRaceError(`could not acquire a subnet after ${RACE_RETRIES} attempts: other agents kept taking the chosen subnets`);
        this.log.info({ attempt }, 'lost a race for a subnet, trying again');
      } catch (e) {
        if (e instanceof NetworkExhaustedError || e instanceof ConfigError || e instanceof SubnetRaceError) throw e;
        this.log.warn({ err: (e as Error).message }, 'failed to acquire a lease (etcd unreachable?), retrying');
        await sleep(Math.min(this.retryMs, 1000), signal);
      }
    }
  }

  private async tryAcquire(cfg: NetworkConfig, attrs: LeaseAttrs, value: string, previous?: Subnet): Promise<Lease | undefined> {
    const { leases } = await this.registry.listLeases();
    const parsed = leases.map((l) => ({ raw: l, subnet: parseSubnetKey(l.key.slice(this.registry.subnetsPrefix.length)) }));

    for (const { raw, subnet } of parsed) {
      if (!subnet) continue;
      let a: LeaseAttrs;
      try {
        a = decodeAttrs(raw.value);
      } catch {
        continue;
      }
      if (a.publicIP !== attrs.publicIP) continue;
      if (isCompatible(cfg, subnet)) {
        const reservation = raw.lease === '0';
        this.log.info({ subnet: formatCidr(subnet), reservation }, 'found a lease for our public IP, reusing it');
        // conditioned on the revision we read: a change in between means we lost a race, start over
        const etcdLease = await this.registry.updateLease(subnet, value, reservation ? 0 : this.ttl, { modRevision: raw.modRevision });
        if (etcdLease === undefined) return undefined;
        if (!reservation) await this.registry.revoke(raw.lease);
        return this.lease(subnet, attrs, etcdLease);
      }
      this.log.info({ subnet: formatCidr(subnet) }, 'found a lease for our public IP that no longer fits the network config, deleting it');
      await this.registry.deleteLease(subnet);
    }

    const taken = parsed.flatMap((p) => (p.subnet ? [p.subnet] : []));
    let chosen: Subnet | undefined;
    if (previous) {
      if (!isCompatible(cfg, previous)) this.log.warn({ subnet: formatCidr(previous) }, 'the subnet of the previous run does not fit the network config, ignoring it');
      else if (taken.some((t) => overlaps(t, previous))) this.log.warn({ subnet: formatCidr(previous) }, 'the subnet of the previous run is taken, ignoring it');
      else chosen = previous;
    }
    chosen ??= pickFreeSubnet(cfg, taken, this.random);

    const res = await this.registry.createLease(chosen, value, this.ttl);
    if (!res.created) return undefined;
    this.log.info({ subnet: formatCidr(chosen) }, 'acquired a new lease');
    return this.lease(chosen, attrs, res.lease);
  }

  private lease(subnet: Subnet, attrs: LeaseAttrs, etcdLease: string): Lease {
    return {
      subnet,
      attrs,
      etcdLease,
      ...(etcdLease === '0' ? {} : { expiration: new Date(Date.now() + this.ttl * 1000) }),
    };
  }

  /**
   * Rewrites our key with a fresh TTL (flannel grants a new etcd lease and writes the key again), in a
   * transaction that holds only while the key still carries our value and our etcd lease. flannel's
   * unconditional put would overwrite the lease of a node that got our subnet after we were cut off
   * for longer than the TTL: both would then route the subnet. LeaseLostError when it is not ours.
   */
  async renewLease(l: Lease): Promise<Lease> {
    const old = l.etcdLease ?? '0';
    const value = encodeAttrs(l.attrs);
    const etcdLease = await this.registry.updateLease(l.subnet, value, this.ttl, { value, lease: old });
    if (etcdLease === undefined) throw new LeaseLostError(`our lease ${this.registry.leaseKey(l.subnet)} is no longer ours (gone, or another node's value is on it): not renewing`);
    await this.registry.revoke(old);
    return this.lease(l.subnet, l.attrs, etcdLease);
  }

  /** Keeps our lease alive until stopRenewal(); reservations never expire and are left alone. */
  startRenewal(l: Lease, onRenewed?: (l: Lease) => void, onLost?: (why: string) => void): void {
    if (!l.expiration) return;
    const schedule = (lease: Lease, delay: number) => {
      this.renewTimer = setTimeout(async () => {
        try {
          const next = await this.renewLease(lease);
          this.log.info({ subnet: formatCidr(next.subnet), expiration: next.expiration }, 'renewed our lease');
          onRenewed?.(next);
          schedule(next, next.expiration!.getTime() - Date.now() - this.marginMs);
        } catch (e) {
          if (e instanceof LeaseLostError) return onLost?.(e.message);
          this.log.error({ err: (e as Error).message, retryInMs: this.retryMs }, 'failed to renew our lease');
          schedule(lease, this.retryMs);
        }
      }, Math.max(0, delay));
      this.renewTimer.unref?.();
    };
    schedule(l, l.expiration.getTime() - Date.now() - this.marginMs);
  }

  stopRenewal(): void {
    clearTimeout(this.renewTimer);
  }

  watchLeases(cfg: NetworkConfig, own: Lease, sink: (events: LeaseEvent[]) => Promise<void>, onOwnLeaseLost: (why: string) => void): LeaseWatch {
    const recovery: StoreRecovery = {
      holdMs: this.storeLossHoldMs,
      // the same subnet, value and kind (lease or reservation) as before; create-if-absent, so a node
      // that grabbed our subnet in the meantime wins and we stop as if revoked
      reRegister: async () => (await this.registry.createLease(own.subnet, encodeAttrs(own.attrs), own.etcdLease === '0' ? 0 : this.ttl)).created,
      restoreConfig: () => this.registry.restoreConfig(JSON.stringify(cfg.raw)),
    };
    const w = new LeaseWatch(this.registry, this.log, cfg, own, sink, onOwnLeaseLost, recovery, undefined, this.watchCreateMs);
    void w.run();
    return w;
  }
}

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
  private readonly cache = new Map<string, Lease>();
  /** subnet address -> key of the cached lease holding it */
  private readonly byAddress = new Map<number, string>();
  /** public IP -> key of the cached lease holding it: one node, one lease (flannel reuses by PublicIP) */
  private readonly byPublicIP = new Map<string, string>();
  /** VTEP MAC -> key of the cached lease holding it: the VTEP map and the FDB are keyed by MAC */
  private readonly byVtepMAC = new Map<string, string>();
  /** leases rejected for a conflict with a cached one: retried when that one goes */
  private readonly conflicting = new Map<string, string>();
  private chain: Promise<void> = Promise.resolve();
  private stopped = false;
  private abort = new AbortController();
  private endWatch?: (err?: Error) => void;
  private readonly ownKey: string;
  private readonly ownValue: string;
  private readonly ownMAC?: string;
  private firstSync!: () => void;
  /** resolves once the first listing has been handed to the sink */
  readonly synced = new Promise<void>((r) => (this.firstSync = r));
  /** counters an operator can read (metrics, status) */
  readonly stats = { relists: 0, events: 0, rejected: 0, lastEventAt: 0, disconnects: 0, storeLosses: 0, watchStalls: 0 };
  /** highest store revision seen; a listing below it means etcd lost its data */
  private revision = 0n;
  /** peers missing after a store loss: key -> time their entries go unless they re-register */
  private readonly held = new Map<string, number>();
  private holdTimer?: NodeJS.Timeout;

  constructor(
    private readonly registry: EtcdRegistry,
    private readonly log: Logger,
    private readonly cfg: NetworkConfig,
    private readonly own: Lease,
    private readonly sink: (events: LeaseEvent[]) => Promise<void>,
    private readonly onOwnLeaseLost: (why: string) => void,
    private readonly recovery?: StoreRecovery,
    private readonly storeCheckMs = 5000,
    private readonly watchCreateMs = 10_000,
  ) {
    this.ownKey = registry.leaseKey(own.subnet);
    this.ownValue = encodeAttrs(own.attrs);
    this.ownMAC = claimedVtepMAC(own.attrs);
  }

  peers(): Lease[] {
    return [...this.cache.values()];
  }

  private cacheSet(key: string, l: Lease): void {
    const old = this.cache.get(key);
    if (old) this.unindex(key, old);
    this.cache.set(key, l);
    this.byAddress.set(l.subnet.ip, key);
    this.byPublicIP.set(l.attrs.publicIP, key);
    const mac = claimedVtepMAC(l.attrs);
    if (mac) this.byVtepMAC.set(mac, key);
  }

  private unindex(key: string, old: Lease): void {
    if (this.byAddress.get(old.subnet.ip) === key) this.byAddress.delete(old.subnet.ip);
    if (this.byPublicIP.get(old.attrs.publicIP) === key) this.byPublicIP.delete(old.attrs.publicIP);
    const mac = claimedVtepMAC(old.attrs);
    if (mac && this.byVtepMAC.get(mac) === key) this.byVtepMAC.delete(mac);
  }

  private cacheDelete(key: string): void {
    const old = this.cache.get(key);
    if (old) this.unindex(key, old);
    this.cache.delete(key);
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
      let listing: { leases: RawLease[]; revision: string };
      try {
        listing = await this.registry.listLeases();
      } catch (e) {
        this.log.warn({ err: (e as Error).message }, 'cannot list leases in etcd, retrying');
        await sleep(1000, this.abort.signal);
        continue;
      }
      this.stats.relists++;
      const rev = BigInt(listing.revision);
      const lost = rev < this.revision;
      if (lost) {
        try {
          await this.recoverStore(rev, listing.leases);
        } catch (e) {
          this.log.warn({ err: (e as Error).message }, 'cannot re-register in etcd after it lost its data, retrying');
          await sleep(1000, this.abort.signal);
          continue;
        }
        // the listing predates our own re-registration: list again before watching
        this.revision = 0n;
        continue;
      }
      this.revision = rev;
      this.applyListing(listing.leases);
      this.firstSync();
      const ended = new Promise<Error | undefined>((resolve) => (this.endWatch = resolve));
      // etcd3 resumes a watch at the revision it had reached; on a store that lost its data that revision
      // lies in the future and the watch waits, silently, for events that never come (and the client
      // does not always report the disconnect). So ask etcd its revision every few seconds (one small
      // read) and start over when it went back.
      // And when etcd was away, its client may take many seconds (backoff) to resume the watch: once
      // the probe gets an answer again, list and watch afresh (the listing diff loses nothing).
      /** the watch was ended by us, not by etcd: its watcher is still registered and must be cancelled */
      let liveWatcher = false;
      let current = true;
      let failed = false;
      let probe: NodeJS.Timeout | undefined;
      const restart = (why: string) => {
        liveWatcher = true;
        this.endWatch?.(new Error(why));
      };
      const schedule = () => {
        probe = setTimeout(async () => {
          try {
            // a request made while etcd is away may never complete
            const now = await Promise.race([this.registry.revision(), sleep(3000).then(() => Promise.reject(new Error('timeout')))]);
            if (now < this.revision) return restart(`etcd revision went back from ${this.revision} to ${now}`);
            if (failed) return restart('etcd answers again');
          } catch {
            failed = true;
          }
          if (current) schedule();
        }, failed ? 1000 : this.storeCheckMs);
        probe.unref?.();
      };
      schedule();
      let watcher;
      try {
        const creating = this.registry.watchLeases((BigInt(listing.revision) + 1n).toString(), {
          onEvents: (events, revision) => {
            if (!current) return; // a watcher being cancelled must not apply anything any more
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
          // every later one, and the probe above cannot help a watch that was never created. A new
          // client opens a new stream; the next listing's diff loses nothing.
          clearTimeout(probe);
          current = false;
          void creating.then((w) => w.cancel(), () => undefined).catch(() => undefined);
          if (this.stopped) continue;
          this.stats.watchStalls++;
          this.log.warn({ waitedMs: this.watchCreateMs }, 'etcd did not confirm the lease watch: reconnecting and listing again');
          this.registry.reconnect();
          continue;
        }
      } catch (e) {
        clearTimeout(probe);
        current = false;
        this.log.warn({ err: (e as Error).message }, 'cannot watch leases in etcd, retrying');
        await sleep(1000, this.abort.signal);
        continue;
      }
      if (this.stopped) this.endWatch?.();
      const err = await ended;
      clearTimeout(probe);
      current = false;
      // etcd3 already dropped a watcher that ended in error; cancelling it again would wait forever
      // for an 'end' event, so only a live watcher is cancelled, and never for more than a second.
      if (this.stopped || liveWatcher) await Promise.race([watcher.cancel().catch(() => undefined), sleep(1000)]);
      else this.log.warn({ err: err?.message }, 'the lease watch ended (compaction?): listing all leases again');
    }
  }

  private validate(key: string, value: string): Lease | string {
    const subnet = parseSubnetKey(key.slice(this.registry.subnetsPrefix.length));
    if (!subnet) return 'key does not name a subnet';
    let attrs: LeaseAttrs;
    try {
      attrs = decodeAttrs(value);
    } catch (e) {
      return (e as Error).message;
    }
    // peers outside [SubnetMin, SubnetMax] are fine (operator reservations), outside Network or of another size are not
    if (subnet.len !== this.cfg.subnetLen || !contains(this.cfg.network, subnet.ip))
      return `subnet ${formatCidr(subnet)} is outside Network ${formatCidr(this.cfg.network)} or not a /${this.cfg.subnetLen}`;
    if (overlaps(subnet, this.own.subnet)) return `subnet ${formatCidr(subnet)} overlaps our own ${formatCidr(this.own.subnet)}`;
    if (attrs.publicIP === this.own.attrs.publicIP) return `lease claims our own public IP ${attrs.publicIP}`;
    const mac = claimedVtepMAC(attrs);
    if (mac && mac === this.ownMAC) return `lease claims our own VTEP MAC ${mac}`;
    return { subnet, attrs };
  }

  /** A valid lease can still clash with one we hold: the first one seen keeps its place. */
  private conflict(key: string, { subnet, attrs }: Lease): string | undefined {
    // every cached subnet has the network's SubnetLen and is aligned (strict key parsing), so two
    // overlap exactly when they start at the same address: an index lookup, not a scan of all peers
    const holder = this.byAddress.get(subnet.ip);
    if (holder !== undefined && holder !== key) return `subnet ${formatCidr(subnet)} overlaps the lease of ${this.cache.get(holder)!.attrs.publicIP}`;
    const ipHolder = this.byPublicIP.get(attrs.publicIP);
    // two subnets for one host: one of them is not what it claims (and a VTEP lookup would pick either)
    if (ipHolder !== undefined && ipHolder !== key) return `public IP ${attrs.publicIP} already holds ${formatCidr(this.cache.get(ipHolder)!.subnet)}`;
    // one VTEP, one host: a second lease with a taken MAC would redirect the holder's traffic
    const mac = claimedVtepMAC(attrs);
    const macHolder = mac && this.byVtepMAC.get(mac);
    if (macHolder && macHolder !== key) return `VTEP MAC ${mac} is already held by ${this.cache.get(macHolder)!.attrs.publicIP}`;
    return undefined;
  }

  private put(key: string, value: string, out: LeaseEvent[], retry = false): void {
    let res = this.validate(key, value);
    const old = this.cache.get(key);
    const clash = typeof res === 'string' ? undefined : this.conflict(key, res);
    if (clash) {
      this.conflicting.set(key, value);
      if (retry) return;
      res = clash;
    } else this.conflicting.delete(key);
    if (typeof res === 'string') {
      this.stats.rejected++;
      this.log.warn({ key, reason: res }, 'ignoring a malformed or conflicting lease written by someone else');
      if (old) {
        this.cacheDelete(key);
        out.push({ type: 'removed', lease: old });
      }
      return;
    }
    if (old && sameSubnet(old.subnet, res.subnet) && encodeAttrs(old.attrs) === encodeAttrs(res.attrs)) return; // a renewal
    this.cacheSet(key, res);
    out.push({ type: 'added', lease: res });
  }

  private foreignValueOnOwnKey(): void {
    this.onOwnLeaseLost(`another writer's value is on our lease ${this.ownKey}: the subnet is no longer ours`);
  }

  private applyListing(leases: RawLease[]): void {
    const events: LeaseEvent[] = [];
    const seen = new Set<string>();
    let ownSeen = false;
    for (const l of leases) {
      if (l.key === this.ownKey) {
        ownSeen = true;
        if (l.value !== this.ownValue) return this.foreignValueOnOwnKey();
        continue;
      }
      seen.add(l.key);
    }
    for (const k of [...this.conflicting.keys()]) if (!seen.has(k)) this.conflicting.delete(k);
    const now = Date.now();
    for (const [key, lease] of this.cache) {
      if (!seen.has(key) && !((this.held.get(key) ?? 0) > now)) {
        this.cacheDelete(key);
        this.held.delete(key);
        events.push({ type: 'removed', lease });
      }
    }
    for (const l of leases) {
      if (l.key === this.ownKey) continue;
      this.held.delete(l.key);
      this.put(l.key, l.value, events);
    }
    if (!ownSeen) this.onOwnLeaseLost(`our lease ${this.ownKey} is no longer in etcd`);
    this.emit(events);
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
    const present = new Set(leases.map((l) => l.key));
    const until = Date.now() + r.holdMs;
    for (const key of this.cache.keys()) if (!present.has(key)) this.held.set(key, until);
    if (this.held.size && !this.holdTimer) {
      this.holdTimer = setInterval(() => this.expireHeld(), Math.min(1000, r.holdMs));
      this.holdTimer.unref?.();
    }
  }

  /** Peers that did not re-register within holdMs after a store loss are removed like expired leases. */
  private expireHeld(): void {
    const now = Date.now();
    const events: LeaseEvent[] = [];
    for (const [key, until] of this.held) {
      if (until > now) continue;
      this.held.delete(key);
      const old = this.cache.get(key);
      if (!old) continue;
      this.log.warn({ key, publicIP: old.attrs.publicIP }, 'a peer did not re-register after etcd lost its data; removing it');
      this.cacheDelete(key);
      events.push({ type: 'removed', lease: old });
    }
    if (!this.held.size) {
      clearInterval(this.holdTimer);
      this.holdTimer = undefined;
    }
    this.emit(events);
  }

  private applyEvents(raw: RawEvent[]): void {
    const events: LeaseEvent[] = [];
    for (const e of raw) {
      this.stats.events++;
      if (e.key === this.ownKey) {
        if (e.type === 'delete') this.onOwnLeaseLost(`our lease ${this.ownKey} was deleted or expired`);
        // our renewal writes the same value; anything else means another node holds the subnet now
        else if (e.value !== this.ownValue) this.foreignValueOnOwnKey();
        continue;
      }
      this.held.delete(e.key);
      if (e.type === 'delete') this.conflicting.delete(e.key);
      if (e.type === 'put') {
        this.put(e.key, e.value, events);
      } else {
        const old = this.cache.get(e.key);
        if (old) {
          this.cacheDelete(e.key);
          events.push({ type: 'removed', lease: old });
        }
      }
    }
    this.stats.lastEventAt = Date.now();
    this.emit(events);
  }

  /** After a removal, a lease that clashed with the removed one may be the rightful one now. */
  private retryConflicting(events: LeaseEvent[]): void {
    if (!this.conflicting.size || !events.some((e) => e.type === 'removed')) return;
    for (const [key, value] of [...this.conflicting]) this.put(key, value, events, true);
  }

  private emit(events: LeaseEvent[]): void {
    this.retryConflicting(events);
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
