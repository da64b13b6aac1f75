// Everyone else's leases, as flannel's pkg/lease keeps them: a cache keyed by etcd key, fed by listings
// and watch events, that turns them into exact added/removed events (a delete without the old value, a
// re-list after compaction or an outage: the listing's diff). Pure: no etcd, no timers, no kernel; the
// watch loop (manager.ts) feeds it and hands its events on. Validation, conflicts (first one seen
// keeps its place) and the hold after a store loss live here, so they are unit-tested without etcd.
import type { NetworkConfig } from './config.js';
import type { RawEvent, RawLease } from './etcd-registry.js';
import { contains, formatCidr, overlaps, sameSubnet } from './ip4.js';
import { contains6, formatCidr6, overlaps6, sameSubnet6 } from './ip6.js';
import { hasIPv4, leaseName, parseLeaseKey } from './lease-key.js';
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
  /** IPv6 subnet address -> key of the cached lease holding it */
  private readonly byAddress6 = new Map<bigint, string>();
  /** public IP (IPv4, or "6:" and the IPv6 one) -> key of the cached lease holding it: one node, one lease (flannel reuses by PublicIP) */
  private readonly byPublicIP = new Map<string, string>();
  /** VTEP MAC -> key of the cached lease holding it: the VTEP map and the FDB are keyed by MAC (the IPv6 VTEP's with "6:") */
  private readonly byVtepMAC = new Map<string, string>();
  /** leases rejected for a conflict with a cached one: retried when that one goes */
  private readonly conflicting = new Map<string, string>();
  /** peers missing after a store loss: key -> time their entries go unless they re-register */
  private readonly held = new Map<string, number>();
  private readonly ownValue: string;
  private readonly ownMAC?: string;
  private readonly ownMAC6?: string;

  constructor(private readonly o: LeaseCacheOptions) {
    this.ownValue = encodeAttrs(o.own.attrs);
    this.ownMAC = claimedVtepMAC(o.own.attrs);
    this.ownMAC6 = claimedVtepMAC(o.own.attrs, 6);
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

  /** The index names a lease holds: its public addresses and VTEP MACs (an IPv6-only node has no IPv4 ones). */
  private static names(l: Lease): { ips: string[]; macs: string[] } {
    const ips = l.attrs.publicIP !== '0.0.0.0' ? [l.attrs.publicIP] : [];
    if (l.attrs.publicIPv6) ips.push(`6:${l.attrs.publicIPv6}`);
    const macs: string[] = [];
    const mac = claimedVtepMAC(l.attrs),
      mac6 = claimedVtepMAC(l.attrs, 6);
    if (mac) macs.push(mac);
    if (mac6) macs.push(`6:${mac6}`);
    return { ips, macs };
  }

  private set(key: string, l: Lease): void {
    const old = this.cache.get(key);
    if (old) this.unindex(key, old);
    this.cache.set(key, l);
    if (hasIPv4(l)) this.byAddress.set(l.subnet.ip, key);
    if (l.ipv6Subnet) this.byAddress6.set(l.ipv6Subnet.ip, key);
    const { ips, macs } = LeaseCache.names(l);
    for (const ip of ips) this.byPublicIP.set(ip, key);
    for (const mac of macs) this.byVtepMAC.set(mac, key);
  }

  private unindex(key: string, old: Lease): void {
    if (this.byAddress.get(old.subnet.ip) === key) this.byAddress.delete(old.subnet.ip);
    if (old.ipv6Subnet && this.byAddress6.get(old.ipv6Subnet.ip) === key) this.byAddress6.delete(old.ipv6Subnet.ip);
    const { ips, macs } = LeaseCache.names(old);
    for (const ip of ips) if (this.byPublicIP.get(ip) === key) this.byPublicIP.delete(ip);
    for (const mac of macs) if (this.byVtepMAC.get(mac) === key) this.byVtepMAC.delete(mac);
  }

  private remove(key: string): void {
    const old = this.cache.get(key);
    if (old) this.unindex(key, old);
    this.cache.delete(key);
  }

  private validate(key: string, value: string): Lease | string {
    const { cfg, own } = this.o;
    const subnets = parseLeaseKey(key.slice(this.o.subnetsPrefix.length));
    if (!subnets) return 'key does not name a subnet';
    let attrs: LeaseAttrs;
    try {
      attrs = decodeAttrs(value);
    } catch (e) {
      return (e as Error).message;
    }
    const { subnet, ipv6Subnet } = subnets;
    // peers outside [SubnetMin, SubnetMax] are fine (operator reservations), outside Network or of another size are not
    if (cfg.enableIPv4) {
      if (subnet.len !== cfg.subnetLen || !contains(cfg.network, subnet.ip)) return `subnet ${formatCidr(subnet)} is outside Network ${formatCidr(cfg.network)} or not a /${cfg.subnetLen}`;
      if (overlaps(subnet, own.subnet)) return `subnet ${formatCidr(subnet)} overlaps our own ${formatCidr(own.subnet)}`;
      if (attrs.publicIP === own.attrs.publicIP) return `lease claims our own public IP ${attrs.publicIP}`;
    } else if (hasIPv4(subnets)) return `subnet ${formatCidr(subnet)} is IPv4, and the network is IPv6-only`;
    const c6 = cfg.ipv6;
    // a peer without IPv6 in a dual-stack network is an IPv4-only node (flannel programs its IPv4 half);
    // in an IPv6-only network it has nothing to route
    if (c6 && ipv6Subnet) {
      if (ipv6Subnet.len !== c6.subnetLen || !contains6(c6.network, ipv6Subnet.ip))
        return `IPv6 subnet ${formatCidr6(ipv6Subnet)} is outside IPv6Network ${formatCidr6(c6.network)} or not a /${c6.subnetLen}`;
      if (own.ipv6Subnet && overlaps6(ipv6Subnet, own.ipv6Subnet)) return `IPv6 subnet ${formatCidr6(ipv6Subnet)} overlaps our own ${formatCidr6(own.ipv6Subnet)}`;
      if (!attrs.publicIPv6) return `lease has IPv6 subnet ${formatCidr6(ipv6Subnet)} but no PublicIPv6`;
      if (attrs.publicIPv6 === own.attrs.publicIPv6) return `lease claims our own public IPv6 ${attrs.publicIPv6}`;
      const mac6 = claimedVtepMAC(attrs, 6);
      if (mac6 && mac6 === this.ownMAC6) return `lease claims our own IPv6 VTEP MAC ${mac6}`;
    } else if (!cfg.enableIPv4) return 'lease has no IPv6 subnet, and the network is IPv6-only';
    const mac = claimedVtepMAC(attrs);
    if (mac && mac === this.ownMAC) return `lease claims our own VTEP MAC ${mac}`;
    // a literal, not { ...subnets, attrs }: V8 (Node 20) gave almost every lease built by that spread a
    // hidden class of its own (9,928 for 10,000 leases in a heap snapshot), which the agent kept for
    // as long as the lease and which made every read of a lease's fields megamorphic
    const lease: Lease = { subnet, attrs };
    if (ipv6Subnet) lease.ipv6Subnet = ipv6Subnet;
    return lease;
  }

  /** A valid lease can still clash with one we hold: the first one seen keeps its place. */
  private conflict(key: string, l: Lease): string | undefined {
    // every cached subnet has the network's SubnetLen and is aligned (strict key parsing), so two
    // overlap exactly when they start at the same address: an index lookup, not a scan of all peers
    const holder = hasIPv4(l) ? this.byAddress.get(l.subnet.ip) : undefined;
    if (holder !== undefined && holder !== key) return `subnet ${formatCidr(l.subnet)} overlaps the lease of ${this.holderName(holder)}`;
    const holder6 = l.ipv6Subnet && this.byAddress6.get(l.ipv6Subnet.ip);
    if (holder6 && holder6 !== key) return `IPv6 subnet ${formatCidr6(l.ipv6Subnet!)} overlaps the lease of ${this.holderName(holder6)}`;
    const { ips, macs } = LeaseCache.names(l);
    // two subnets for one host: one of them is not what it claims (and a VTEP lookup would pick either)
    for (const ip of ips) {
      const h = this.byPublicIP.get(ip);
      if (h !== undefined && h !== key) return `public IP ${ip.replace(/^6:/, '')} already holds ${leaseName(this.cache.get(h)!)}`;
    }
    // one VTEP, one host: a second lease with a taken MAC would redirect the holder's traffic
    for (const mac of macs) {
      const h = this.byVtepMAC.get(mac);
      if (h !== undefined && h !== key) return `VTEP MAC ${mac.replace(/^6:/, '')} is already held by ${this.holderName(h)}`;
    }
    return undefined;
  }

  private holderName(key: string): string {
    const a = this.cache.get(key)!.attrs;
    return a.publicIP !== '0.0.0.0' ? a.publicIP : (a.publicIPv6 ?? a.publicIP);
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
    const same6 = old?.ipv6Subnet && res.ipv6Subnet ? sameSubnet6(old.ipv6Subnet, res.ipv6Subnet) : old?.ipv6Subnet === res.ipv6Subnet;
    if (old && sameSubnet(old.subnet, res.subnet) && same6 && encodeAttrs(old.attrs) === encodeAttrs(res.attrs)) return; // a renewal
    this.set(key, res);
    out.push({ type: 'added', lease: res });
  }

  /** After a removal, a lease that clashed with the removed one may be the rightful one now. */
  private retryConflicting(events: LeaseEvent[]): void {
    if (!this.conflicting.size || !events.some((e) => e.type === 'removed')) return;
    for (const [key, value] of [...this.conflicting]) this.put(key, value, events, true);
  }
}
