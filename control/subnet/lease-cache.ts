// Everyone else's leases, as flannel's pkg/lease keeps them: a cache keyed by etcd key, fed by listings
// and watch events, that turns them into exact added/removed events (a delete without the old value, a
// re-list after compaction or an outage: the listing's diff). Pure: no etcd, no timers, no kernel; the
// watch loop (manager.ts) feeds it and hands its events on. Validation, conflicts (first one seen
// keeps its place) and the hold after a store loss live here, so they are unit-tested without etcd.
import type { NetworkConfig } from './config.js';
import type { RawEvent, RawLease } from './etcd-registry.js';
import { contains, formatCidr, overlaps, parseSubnetKey, sameSubnet } from './ip4.js';
import { claimedVtepMAC, decodeAttrs, encodeAttrs, type Lease, type LeaseAttrs, type LeaseEvent } from './lease.js';

/** What one listing, batch of events or expiry makes of the cache: events for the backend, and why our own lease is lost. */
export interface CacheOutcome {
  events: LeaseEvent[];
  /** reasons our own lease is no longer ours (foreign value on our key, our key deleted or missing) */
  ownLost: string[];
}

export interface LeaseCacheOptions {
  /** the etcd prefix of lease keys: a key is this prefix and "<ip>-<len>" */
  subnetsPrefix: string;
  ownKey: string;
  cfg: NetworkConfig;
  own: Lease;
  /** a lease someone else wrote that we do not use, and why */
  onReject?: (key: string, reason: string) => void;
}

export class LeaseCache {
  private readonly cache = new Map<string, Lease>();
  /** subnet address -> key of the cached lease holding it */
  private readonly byAddress = new Map<number, string>();
  /** public IP -> key of the cached lease holding it: one node, one lease (flannel reuses by PublicIP) */
  private readonly byPublicIP = new Map<string, string>();
  /** VTEP MAC -> key of the cached lease holding it: the VTEP map and the FDB are keyed by MAC */
  private readonly byVtepMAC = new Map<string, string>();
  /** leases rejected for a conflict with a cached one: retried when that one goes */
  private readonly conflicting = new Map<string, string>();
  /** peers missing after a store loss: key -> time their entries go unless they re-register */
  private readonly held = new Map<string, number>();
  private readonly ownValue: string;
  private readonly ownMAC?: string;

  constructor(private readonly o: LeaseCacheOptions) {
    this.ownValue = encodeAttrs(o.own.attrs);
    this.ownMAC = claimedVtepMAC(o.own.attrs);
  }

  peers(): Lease[] {
    return [...this.cache.values()];
  }

  get heldCount(): number {
    return this.held.size;
  }

  /** A full listing: everything not in it goes (unless held), everything in it is put. */
  list(leases: RawLease[], now = Date.now()): CacheOutcome {
    const out: CacheOutcome = { events: [], ownLost: [] };
    const seen = new Set<string>();
    let ownSeen = false;
    for (const l of leases) {
      if (l.key === this.o.ownKey) {
        ownSeen = true;
        // nothing else of this listing is applied: the agent stops using the subnet
        if (l.value !== this.ownValue) return { events: [], ownLost: [this.foreignValue()] };
        continue;
      }
      seen.add(l.key);
    }
    for (const k of [...this.conflicting.keys()]) if (!seen.has(k)) this.conflicting.delete(k);
    for (const [key, lease] of this.cache) {
      if (!seen.has(key) && !((this.held.get(key) ?? 0) > now)) {
        this.remove(key);
        this.held.delete(key);
        out.events.push({ type: 'removed', lease });
      }
    }
    for (const l of leases) {
      if (l.key === this.o.ownKey) continue;
      this.held.delete(l.key);
      this.put(l.key, l.value, out.events);
    }
    if (!ownSeen) out.ownLost.push(`our lease ${this.o.ownKey} is no longer in etcd`);
    this.retryConflicting(out.events);
    return out;
  }

  /** Watch events, in etcd's order. */
  apply(raw: RawEvent[]): CacheOutcome {
    const out: CacheOutcome = { events: [], ownLost: [] };
    for (const e of raw) {
      if (e.key === this.o.ownKey) {
        if (e.type === 'delete') out.ownLost.push(`our lease ${this.o.ownKey} was deleted or expired`);
        // our renewal writes the same value; anything else means another node holds the subnet now
        else if (e.value !== this.ownValue) out.ownLost.push(this.foreignValue());
        continue;
      }
      this.held.delete(e.key);
      if (e.type === 'put') {
        this.put(e.key, e.value, out.events);
        continue;
      }
      this.conflicting.delete(e.key);
      const old = this.cache.get(e.key);
      if (old) {
        this.remove(e.key);
        out.events.push({ type: 'removed', lease: old });
      }
    }
    this.retryConflicting(out.events);
    return out;
  }

  /** After a store loss: cached peers not in `present` keep their entries until `until`. */
  holdMissing(present: Set<string>, until: number): void {
    for (const key of this.cache.keys()) if (!present.has(key)) this.held.set(key, until);
  }

  /** Held peers whose time is up are removed like expired leases; returns them too, for the log. */
  expireHeld(now = Date.now()): CacheOutcome & { expired: Lease[] } {
    const out = { events: [] as LeaseEvent[], ownLost: [] as string[], expired: [] as Lease[] };
    for (const [key, until] of this.held) {
      if (until > now) continue;
      this.held.delete(key);
      const old = this.cache.get(key);
      if (!old) continue;
      this.remove(key);
      out.expired.push(old);
      out.events.push({ type: 'removed', lease: old });
    }
    this.retryConflicting(out.events);
    return out;
  }

  private foreignValue(): string {
    return `another writer's value is on our lease ${this.o.ownKey}: the subnet is no longer ours`;
  }

  private set(key: string, l: Lease): void {
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

  private remove(key: string): void {
    const old = this.cache.get(key);
    if (old) this.unindex(key, old);
    this.cache.delete(key);
  }

  private validate(key: string, value: string): Lease | string {
    const { cfg, own } = this.o;
    const subnet = parseSubnetKey(key.slice(this.o.subnetsPrefix.length));
    if (!subnet) return 'key does not name a subnet';
    let attrs: LeaseAttrs;
    try {
      attrs = decodeAttrs(value);
    } catch (e) {
      return (e as Error).message;
    }
    // peers outside [SubnetMin, SubnetMax] are fine (operator reservations), outside Network or of another size are not
    if (subnet.len !== cfg.subnetLen || !contains(cfg.network, subnet.ip)) return `subnet ${formatCidr(subnet)} is outside Network ${formatCidr(cfg.network)} or not a /${cfg.subnetLen}`;
    if (overlaps(subnet, own.subnet)) return `subnet ${formatCidr(subnet)} overlaps our own ${formatCidr(own.subnet)}`;
    if (attrs.publicIP === own.attrs.publicIP) return `lease claims our own public IP ${attrs.publicIP}`;
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
      this.o.onReject?.(key, res);
      if (old) {
        this.remove(key);
        out.push({ type: 'removed', lease: old });
      }
      return;
    }
    if (old && sameSubnet(old.subnet, res.subnet) && encodeAttrs(old.attrs) === encodeAttrs(res.attrs)) return; // a renewal
    this.set(key, res);
    out.push({ type: 'added', lease: res });
  }

  /** After a removal, a lease that clashed with the removed one may be the rightful one now. */
  private retryConflicting(events: LeaseEvent[]): void {
    if (!this.conflicting.size || !events.some((e) => e.type === 'removed')) return;
    for (const [key, value] of [...this.conflicting]) this.put(key, value, events, true);
  }
}
