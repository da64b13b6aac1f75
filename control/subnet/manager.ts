// The subnet manager: network config, our lease (acquire, renew), and everyone else's leases as a
// stream of added/removed events. It talks to etcd only, never to the kernel.
import { readFile } from 'node:fs/promises';
import type { Logger } from '../log.js';
import { pickFreeSubnets, NetworkExhaustedError } from './allocate.js';
import { ConfigError, isCompatible, parseConfig, type NetworkConfig } from './config.js';
import type { EtcdRegistry } from './etcd-registry.js';
import { LeaseWatch, sleep, type StoreRecovery } from './lease-watch.js';
import { hasIPv4, leaseName, parseLeaseKey, subnetsOverlap, type LeaseSubnets } from './lease-key.js';
import { decodeAttrs, encodeAttrs, type Lease, type LeaseAttrs, type LeaseEvent } from './lease.js';

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

export type { LeaseEvent, LeaseWatch };

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
  /** --net-config-path: the network config comes from this file (kube-flannel's ConfigMap), not etcd */
  configFile?: string;
  random?: () => number;
}

/**
 * The config file of --net-config-path. Unlike the etcd key, nothing writes it later: a missing or
 * unreadable file is a ConfigError (kube-flannel also stops when it cannot read its net-conf.json).
 */
async function readConfigFile(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    throw new ConfigError('--net-config-path', `cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

export class SubnetManager {
  readonly registry: EtcdRegistry;
  private readonly log: Logger;
  private readonly ttl: number;
  private readonly renewMarginMs: number;
  private readonly retryMs: number;
  private readonly random: () => number;
  private readonly storeLossHoldMs: number;
  private readonly watchCreateMs: number;
  private readonly configFile?: string;
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
    this.configFile = o.configFile;
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
    if (this.configFile) return this.defaulted(parseConfig(await readConfigFile(this.configFile)));
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
      return this.defaulted(parseConfig(text));
    }
  }

  private defaulted(cfg: NetworkConfig): NetworkConfig {
    if (cfg.backendDefaulted) this.log.warn('the network config has no Backend: using udp as flannel does (slow); set "Backend": {"Type": "vxlan"}');
    return cfg;
  }

  /**
   * Flannel's order: our PublicIP's existing lease, then the subnet of the previous run (subnet file),
   * then a random free one; created with create-if-absent so two nodes never share a subnet.
   */
  async acquireLease(cfg: NetworkConfig, attrs: LeaseAttrs, previous?: LeaseSubnets, signal?: AbortSignal): Promise<Lease> {
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

  private async tryAcquire(cfg: NetworkConfig, attrs: LeaseAttrs, value: string, previous?: LeaseSubnets): Promise<Lease | undefined> {
    const { leases } = await this.registry.listLeases();
    const parsed = leases.map((l) => ({ raw: l, subnets: parseLeaseKey(l.key.slice(this.registry.subnetsPrefix.length)) }));
    // flannel finds a node's lease by its PublicIP; an IPv6-only node's PublicIP is 0.0.0.0 for every
    // node, so there its PublicIPv6 is what names it
    const ours = (a: LeaseAttrs) => (attrs.publicIP !== '0.0.0.0' ? a.publicIP === attrs.publicIP : a.publicIPv6 === attrs.publicIPv6);

    for (const { raw, subnets } of parsed) {
      if (!subnets) continue;
      let a: LeaseAttrs;
      try {
        a = decodeAttrs(raw.value);
      } catch {
        continue;
      }
      if (!ours(a)) continue;
      if (isCompatible(cfg, subnets)) {
        const reservation = raw.lease === '0';
        this.log.info({ subnet: leaseName(subnets), reservation }, 'found a lease for our public IP, reusing it');
        // conditioned on the revision we read: a change in between means we lost a race, start over
        const etcdLease = await this.registry.updateLease(subnets, value, reservation ? 0 : this.ttl, { modRevision: raw.modRevision });
        if (etcdLease === undefined) return undefined;
        if (!reservation) await this.registry.revoke(raw.lease);
        return this.lease(subnets, attrs, etcdLease);
      }
      this.log.info({ subnet: leaseName(subnets) }, 'found a lease for our public IP that no longer fits the network config, deleting it');
      await this.registry.deleteLease(subnets);
    }

    const taken = parsed.flatMap((p) => (p.subnets ? [p.subnets] : []));
    let chosen: LeaseSubnets | undefined;
    if (previous) {
      if (!isCompatible(cfg, previous)) this.log.warn({ subnet: leaseName(previous) }, 'the subnet of the previous run does not fit the network config, ignoring it');
      else if (taken.some((t) => subnetsOverlap(t, previous))) this.log.warn({ subnet: leaseName(previous) }, 'the subnet of the previous run is taken, ignoring it');
      else chosen = previous;
    }
    chosen ??= pickFreeSubnets(cfg, taken, this.random);

    const res = await this.registry.createLease(chosen, value, this.ttl);
    if (!res.created) return undefined;
    // A dual-stack key names both subnets, so etcd's create-if-absent guards the pair only: a node
    // racing us may have taken either half under a key of its own (flannel has this race too). Of two
    // leases claiming a subnet the one created first keeps it; the later writer gives its key up and
    // starts over, so every watcher ends with the first one (its lease cache refuses the overlap).
    if (hasIPv4(chosen) && chosen.ipv6Subnet && res.revision) {
      const first = await this.earlierClaim(chosen, res.revision);
      if (first) {
        this.log.info({ subnet: leaseName(chosen), heldBy: first }, 'another node took one of the chosen subnets first, giving them up');
        await this.registry.deleteLeaseIf(chosen, res.revision);
        await this.registry.revoke(res.lease);
        return undefined;
      }
    }
    this.log.info({ subnet: leaseName(chosen) }, 'acquired a new lease');
    return this.lease(chosen, attrs, res.lease);
  }

  /** The key of a lease created before `revision` that overlaps either of our subnets, if any. */
  private async earlierClaim(ours: LeaseSubnets, revision: string): Promise<string | undefined> {
    const { leases } = await this.registry.listLeases();
    for (const l of leases) {
      if (l.createRevision === undefined || BigInt(l.createRevision) >= BigInt(revision)) continue;
      const t = parseLeaseKey(l.key.slice(this.registry.subnetsPrefix.length));
      if (t && subnetsOverlap(t, ours)) return l.key.slice(this.registry.subnetsPrefix.length);
    }
    return undefined;
  }

  private lease(subnets: LeaseSubnets, attrs: LeaseAttrs, etcdLease: string): Lease {
    return {
      subnet: subnets.subnet,
      ...(subnets.ipv6Subnet ? { ipv6Subnet: subnets.ipv6Subnet } : {}),
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
    const etcdLease = await this.registry.updateLease(l, value, this.ttl, { value, lease: old });
    if (etcdLease === undefined) throw new LeaseLostError(`our lease ${this.registry.leaseKey(l)} is no longer ours (gone, or another node's value is on it): not renewing`);
    await this.registry.revoke(old);
    return this.lease(l, l.attrs, etcdLease);
  }

  /** Keeps our lease alive until stopRenewal(); reservations never expire and are left alone. */
  startRenewal(l: Lease, onRenewed?: (l: Lease) => void, onLost?: (why: string) => void): void {
    if (!l.expiration) return;
    const schedule = (lease: Lease, delay: number) => {
      const renew = async () => {
        try {
          const next = await this.renewLease(lease);
          this.log.info({ subnet: leaseName(next), expiration: next.expiration }, 'renewed our lease');
          onRenewed?.(next);
          schedule(next, next.expiration!.getTime() - Date.now() - this.marginMs);
        } catch (e) {
          if (e instanceof LeaseLostError) return onLost?.(e.message);
          this.log.error({ err: (e as Error).message, retryInMs: this.retryMs }, 'failed to renew our lease');
          schedule(lease, this.retryMs);
        }
      };
      this.renewTimer = setTimeout(() => void renew(), Math.max(0, delay));
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
      reRegister: async () => (await this.registry.createLease(own, encodeAttrs(own.attrs), own.etcdLease === '0' ? 0 : this.ttl)).created,
      restoreConfig: () => this.registry.restoreConfig(JSON.stringify(cfg.raw)),
    };
    const w = new LeaseWatch(this.registry, this.log, cfg, own, sink, onOwnLeaseLost, recovery, undefined, this.watchCreateMs);
    void w.run();
    return w;
  }
}
