// flannel's vxlan option DirectRouting: a peer whose public IP the kernel reaches without a gateway
// (`ip route get <PublicIP>` shows no "via": same L2 segment) gets a plain route, `<its subnet> via
// <PublicIP>`, as host-gw would give it; every other peer gets the tunnel. flannel decides this per
// lease event with a route lookup (pkg/ip DirectRouting); so do we, and again at every reconcile, so a
// peer that moves behind a router goes back to the tunnel.
//
// It wraps the mode's own driver (classic: routes, neighbours, FDB; BPF: map entries). A direct peer
// keeps the entries `keepWhenDirect` names (BPF mode: its member and counter entries, so VXLAN it may
// still send us, when it does not see us as direct, passes the guard), and loses the tunnel's route.
// In BPF mode the kernel route is more specific than flannel.1's one route for the whole network, and
// the pod fast path leaves flows it finds no tunnel route for to the stack: direct peers are reached
// by plain routing in every path.
//
// Routes that look like ours on any device but the vxlan one (a gateway, a SubnetLen subnet of the
// network) count as this driver's: a reconcile removes those no peer wants, including what a host-gw
// run or a DirectRouting run of the past left behind, which would otherwise bypass the tunnel.
//
// One driver serves one family. On a dual-stack network flannel decides IPv6 separately, by a route
// lookup of the peer's PublicIPv6, and routes the peer's IPv6 subnet via it: the IPv6 driver wraps the
// IPv4 one (BPF mode) or flannel-v6.1's own driver (classic).
import type { Logger } from '../../log.js';
import { AF_INET, AF_INET6, execBatch, listRoutes, routeGet, type NetlinkOp } from '../../kernel/netlink.js';
import { formatCidr, formatIp4, type Subnet } from '../../subnet/ip4.js';
import { formatCidr6, formatIp6, type Subnet6 } from '../../subnet/ip6.js';
import { hasIPv4 } from '../../subnet/lease-key.js';
import type { Lease } from '../../subnet/lease.js';
import { gone, type BulkReconcile, type Entry, type PeerDriver } from '../peer-programmer.js';
import { peerRoute6Entries, peerRouteEntries } from '../peer-routes.js';

/**
 * A direct route of one family's driver; the inner driver's operations pass through as they are (a
 * reconcile of 10,000 peers would otherwise wrap 50,000 entries, twice on a dual-stack stack, every pass).
 * The family tells the IPv6 layer's own routes from those of the IPv4 layer it wraps.
 */
export type DirectRouteOp = { direct: NetlinkOp; family: 4 | 6 };
export type DirectOp<Op> = Op | DirectRouteOp;

/** Whether an operation is a direct route of this family's driver (not the inner driver's). */
export function isDirectRoute(o: unknown, family?: 4 | 6): o is DirectRouteOp {
  return typeof o === 'object' && o !== null && 'direct' in o && (family === undefined || (o as DirectRouteOp).family === family);
}

/** The family a driver serves: the network and subnet size of that family, and our own subnet in it. */
export type DirectScope =
  { family: 4; network: Subnet; subnetLen: number; own: () => Subnet | undefined } | { family: 6; network: Subnet6 | undefined; subnetLen: number; own: () => Subnet6 | undefined };

export interface DirectRoutingOptions<Op> {
  enabled: boolean;
  scope: DirectScope;
  /** the vxlan device: its routes belong to the inner driver */
  vxlanDev: () => number;
  /** which of the inner driver's entries a direct peer keeps */
  keepWhenDirect?: (e: Entry<Op>) => boolean;
  log: Logger;
}

export class DirectRoutingDriver<Op> implements PeerDriver<DirectOp<Op>> {
  /** public IP -> the route get's answer: the device when directly reachable, null when not */
  private readonly direct = new Map<string, { dev: number } | null>();
  directPeers = 0;
  private changes = 0;

  constructor(
    private readonly inner: PeerDriver<Op>,
    private readonly o: DirectRoutingOptions<Op>,
  ) {}

  /** the peer's public address and subnet in our family; undefined when it has none (an IPv4-only peer of a dual-stack network) */
  private target(lease: Lease): { via: string; dst: string; len: number; cidr: string } | undefined {
    if (this.o.scope.family === 6) {
      const via = lease.attrs.publicIPv6;
      return via && lease.ipv6Subnet ? { via, dst: formatIp6(lease.ipv6Subnet.ip), len: lease.ipv6Subnet.len, cidr: formatCidr6(lease.ipv6Subnet) } : undefined;
    }
    return hasIPv4(lease) ? { via: lease.attrs.publicIP, dst: formatIp4(lease.subnet.ip), len: lease.subnet.len, cidr: formatCidr(lease.subnet) } : undefined;
  }

  /** Looks up what the next entriesFor() calls need: one route get per public IP (all of them on a reconcile). */
  async prepare(leases: Lease[], refresh: boolean): Promise<void> {
    await this.inner.prepare?.(leases, refresh);
    if (!this.o.enabled) return;
    const ips = [...new Set(leases.flatMap((l) => this.target(l)?.via ?? []))].filter((ip) => refresh || !this.direct.has(ip));
    if (refresh) {
      const wanted = new Set(ips);
      for (const ip of [...this.direct.keys()]) if (!wanted.has(ip)) this.direct.delete(ip);
    }
    await Promise.all(
      ips.map(async (ip) => {
        try {
          const r = await routeGet(ip);
          this.note(ip, r.gateway === undefined && r.dev > 0 ? { dev: r.dev } : null);
        } catch (e) {
          // flannel logs the lookup's error and uses the tunnel
          this.o.log.warn({ publicIP: ip, err: (e as Error).message }, 'DirectRouting: no route to the peer; using vxlan');
          this.note(ip, null);
        }
      }),
    );
    this.directPeers = [...this.direct.values()].filter(Boolean).length;
  }

  private note(ip: string, d: { dev: number } | null): void {
    const old = this.direct.get(ip);
    // a first lookup changes no cached answer: entriesFor() only ever runs after the lookup of its lease
    if (old !== undefined && (old?.dev ?? null) !== (d?.dev ?? null)) this.changes++;
    this.direct.set(ip, d);
  }

  version(): number {
    return this.changes + (this.inner.version?.() ?? 0);
  }

  entriesFor(lease: Lease): Entry<DirectOp<Op>>[] {
    const inner = this.inner.entriesFor(lease);
    const t = this.o.enabled ? this.target(lease) : undefined;
    const d = t && this.direct.get(t.via);
    if (!t || !d) return inner;
    const keep = this.o.keepWhenDirect ?? (() => false);
    const family = this.o.scope.family;
    return [
      ...inner.filter((e) => keep(e)),
      {
        key: `direct-route ${t.cidr}`,
        value: `via ${t.via} dev ${d.dev}`,
        add: { direct: { type: 'route', action: 'replace', dst: t.dst, dstLen: t.len, gateway: t.via, dev: d.dev }, family },
        del: { direct: { type: 'route', action: 'delete', dst: t.dst, dstLen: t.len, dev: d.dev }, family },
      },
    ];
  }

  /**
   * Without DirectRouting no peer wants a direct route: the inner driver reconciles its own tables
   * (BPF maps), then every route a host-gw or DirectRouting run left goes. With it, a peer's entries
   * depend on its route lookup, and the entry path decides entry by entry.
   */
  async reconcileAll(peers: Lease[]): Promise<BulkReconcile | undefined> {
    if (this.o.enabled || !this.inner.reconcileAll) return undefined;
    // the route dump runs on libuv's thread pool while the inner driver writes its tables
    const routes = this.ownRoutes();
    const r = await this.inner.reconcileAll(peers).catch(async (e: unknown) => {
      await routes.catch(() => undefined);
      throw e;
    });
    const stale = await routes;
    if (!r) return undefined;
    (await execBatch(stale.map((e) => (e.del as DirectRouteOp).direct))).forEach((err) => {
      if (!err || gone(err)) r.removed++;
      else r.notRemoved.push(err);
    });
    return r;
  }

  async currentEntries(): Promise<Entry<DirectOp<Op>>[]> {
    const [inner, own] = await Promise.all([this.inner.currentEntries(), this.ownRoutes()]);
    return own.length ? [...inner, ...own] : inner;
  }

  /** The routes of this family that look like a peer's on any device but the vxlan one. */
  private async ownRoutes(): Promise<Entry<DirectOp<Op>>[]> {
    const sc = this.o.scope;
    const routes = await listRoutes(sc.family === 6 ? AF_INET6 : AF_INET);
    const vx = this.o.vxlanDev();
    const others = routes.filter((r) => r.dev !== vx);
    // without an IPv6 network (IPv4 only) no IPv6 route is ours
    const plain =
      sc.family === 4 ? peerRouteEntries(others, sc.network, sc.subnetLen, sc.own(), 'direct-route') : sc.network ? peerRoute6Entries(others, sc.network, sc.subnetLen, sc.own(), 'direct-route') : [];
    const family = sc.family;
    return plain.map((e) => ({ key: e.key, value: e.value, add: { direct: e.add, family }, del: { direct: e.del, family } }));
  }

  /** The inner driver's operations in its own order, then the routes: one result per operation, in order. */
  async apply(ops: DirectOp<Op>[]): Promise<(Error | null)[]> {
    const family = this.o.scope.family;
    const innerIdx: number[] = [];
    const routeIdx: number[] = [];
    ops.forEach((o, i) => (isDirectRoute(o, family) ? routeIdx : innerIdx).push(i));
    const res = Array.from<Error | null>({ length: ops.length }).fill(null);
    const a = await this.inner.apply(innerIdx.map((i) => ops[i] as Op));
    a.forEach((e, k) => (res[innerIdx[k]!] = e));
    const b = await execBatch(routeIdx.map((i) => (ops[i] as DirectRouteOp).direct));
    b.forEach((e, k) => (res[routeIdx[k]!] = e));
    return res;
  }
}
