// BPF mode's map driver for the peer programmer: what a peer's lease becomes in the pinned maps (its
// counters, its member entry, its VTEP, its subnet, and the route the egress program reads), what the
// maps hold now, and the order writes go in so no program ever meets a half-programmed peer. This is
// where a lease event becomes a map entry.
import { LeaseFormatError, decodeVxlanData, type Lease } from '../../subnet/lease.js';
import { formatCidr, formatIp4 } from '../../subnet/ip4.js';
import { formatCidr6, formatIp6 } from '../../subnet/ip6.js';
import { hasIPv4 } from '../../subnet/lease-key.js';
import { errnoName } from '../../kernel/addon.js';
import type { BpfMap } from '../../kernel/bpf.js';
import * as L from '../../datapath/layout.js';
import type { MAP } from '../../datapath/objects.js';
import type { Entry, PeerDriver } from '../peer-programmer.js';

/** the maps a peer has entries in (their names are checked against MAP by the compiler) */
export type PeerMapName = (typeof MAP)['subnets' | 'vteps' | 'members' | 'routes' | 'peerStats' | 'routes6' | 'peerStats6'];
export type PeerMaps = Record<PeerMapName, BpfMap>;
export type MapOp = { map: PeerMapName; action: 'update' | 'delete'; key: Buffer; value?: Buffer; what: string };

// A peer's counters first (their presence is what flannel.1's ingress accepts), then the guard's
// member entry, the VTEP and the subnet, and last the route the egress program reads; deletes the
// other way round. So no program ever finds a half-programmed peer. A peer's IPv6 half (a dual-stack
// network) follows the same rule: its counters (its membership over IPv6) before its IPv6 route.
const UPDATE_ORDER: PeerMapName[] = ['fl_peer_stats', 'fl_peer_stats6', 'fl_members', 'fl_vteps', 'fl_subnets', 'fl_routes', 'fl_routes6'];
const DELETE_ORDER: PeerMapName[] = ['fl_routes6', 'fl_routes', 'fl_subnets', 'fl_vteps', 'fl_members', 'fl_peer_stats6', 'fl_peer_stats'];

/** One map entry as the peer programmer sees it: identity, comparable value, and how to write or remove it. */
function mapEntry(map: PeerMapName, id: string, value: string, key: Buffer, val: Buffer): Entry<MapOp> {
  return { key: id, value, add: { map, action: 'update', key, value: val, what: id }, del: { map, action: 'delete', key, what: id } };
}

export class BpfMapDriver implements PeerDriver<MapOp> {
  // A new peer's counters start at zero and are never rewritten while it stays: one zero value serves
  // every peer (it is only ever read), not a buffer each
  private readonly zeroStats: Buffer;
  private readonly zeroStats6: Buffer;

  constructor(
    private readonly maps: PeerMaps,
    private readonly vni: number,
    /** the network runs IPv6 too: peers' IPv6 halves go into fl_routes6 and fl_peer_stats6 */
    private readonly ipv6 = false,
  ) {
    this.zeroStats = Buffer.alloc(maps.fl_peer_stats.lookupSize);
    this.zeroStats6 = Buffer.alloc(maps.fl_peer_stats6.lookupSize);
  }

  entriesFor(lease: Lease): Entry<MapOp>[] {
    if (lease.attrs.backendType !== 'vxlan') throw new LeaseFormatError(`peer runs backend ${JSON.stringify(lease.attrs.backendType)}, not vxlan`);
    // an IPv6-only peer has no IPv4 half
    if (!hasIPv4(lease)) return this.entries6For(lease);
    const { vni, vtepMAC } = decodeVxlanData(lease.attrs);
    if (vni !== this.vni) throw new LeaseFormatError(`peer uses VNI ${vni}, this network uses ${this.vni}`);
    const ip = lease.attrs.publicIP;
    const subnetKey = L.subnetKey(formatIp4(lease.subnet.ip), lease.subnet.len);
    // apply() writes them in UPDATE_ORDER: no program ever finds a route without its member
    return [
      // counters start at zero and are never rewritten while the peer stays (the value compared is '')
      mapEntry('fl_peer_stats', `counters ${ip}`, '', L.memberKey(ip), this.zeroStats),
      mapEntry('fl_members', `member ${ip}`, '', L.memberKey(ip), L.memberVal()),
      mapEntry('fl_vteps', `vtep ${vtepMAC}`, ip, L.vtepKey(vtepMAC), L.vtepVal(ip)),
      mapEntry('fl_subnets', `subnet ${formatCidr(lease.subnet)}`, vtepMAC, subnetKey, L.subnetVal(vtepMAC)),
      mapEntry('fl_routes', `route ${formatCidr(lease.subnet)}`, `${vtepMAC} ${ip}`, subnetKey, L.routeVal(vtepMAC, ip)),
      ...this.entries6For(lease),
    ];
  }

  /** A peer's IPv6 half, as flannel-v6.1 would reach it: its IPv6 VTEP (BackendV6Data) at its PublicIPv6. */
  private entries6For(lease: Lease): Entry<MapOp>[] {
    // an IPv4-only peer in a dual-stack network has no IPv6 half, as in flannel
    if (!this.ipv6 || !lease.ipv6Subnet) return [];
    const { vni, vtepMAC } = decodeVxlanData(lease.attrs, 6);
    if (vni !== this.vni) throw new LeaseFormatError(`peer's IPv6 VTEP uses VNI ${vni}, this network uses ${this.vni}`);
    const ip6 = lease.attrs.publicIPv6;
    if (!ip6) throw new LeaseFormatError('peer has an IPv6 subnet but no PublicIPv6');
    const s6 = formatCidr6(lease.ipv6Subnet);
    return [
      mapEntry('fl_peer_stats6', `counters ${ip6}`, '', L.member6Key(ip6), this.zeroStats6),
      mapEntry('fl_routes6', `route ${s6}`, `${vtepMAC} ${ip6}`, L.subnet6Key(formatIp6(lease.ipv6Subnet.ip), lease.ipv6Subnet.len), L.route6Val(vtepMAC, ip6)),
    ];
  }

  currentEntries(): Promise<Entry<MapOp>[]> {
    return Promise.resolve(this.entriesNow());
  }

  private entriesNow(): Entry<MapOp>[] {
    const out: Entry<MapOp>[] = [];
    const m = this.maps;
    // entries(), not keys(), even where the value is not read: one batched call instead of a syscall per key
    for (const [k] of m.fl_members.entries()) out.push(mapEntry('fl_members', `member ${L.decodeMemberKey(k)}`, '', k, L.memberVal()));
    for (const [k, v] of m.fl_vteps.entries()) out.push(mapEntry('fl_vteps', `vtep ${L.decodeVtepKey(k)}`, L.decodeVtepVal(v).remoteIP, k, v));
    for (const [k, v] of m.fl_subnets.entries()) {
      const { ip, len } = L.decodeSubnetKey(k);
      out.push(mapEntry('fl_subnets', `subnet ${ip}/${len}`, L.decodeSubnetVal(v).vtepMAC, k, v));
    }
    for (const [k, v] of m.fl_routes.entries()) {
      const { ip, len } = L.decodeSubnetKey(k);
      const r = L.decodeRouteVal(v);
      out.push(mapEntry('fl_routes', `route ${ip}/${len}`, `${r.vtepMAC} ${r.remoteIP}`, k, v));
    }
    // the value is not read: a peer's counters are only ever created or removed here
    const zero = Buffer.alloc(m.fl_peer_stats.lookupSize);
    for (const [k] of m.fl_peer_stats.entries()) out.push(mapEntry('fl_peer_stats', `counters ${L.decodeMemberKey(k)}`, '', k, zero));
    // read even when IPv6 is off: what a dual-stack run left there is stale now
    for (const [k, v] of m.fl_routes6.entries()) {
      const { ip, len } = L.decodeSubnet6Key(k);
      const r = L.decodeRoute6Val(v);
      out.push(mapEntry('fl_routes6', `route ${ip}/${len}`, `${r.vtepMAC} ${r.remoteIP}`, k, v));
    }
    for (const [k] of m.fl_peer_stats6.entries()) out.push(mapEntry('fl_peer_stats6', `counters ${L.decodeMember6Key(k)}`, '', k, zero));
    return out;
  }

  /**
   * Runs map operations as a few native calls: every delete before every update (a VTEP MAC or a
   * member IP that moves from one peer to another is freed before it is taken), deletes from the
   * route map down to the counters, updates from the counters up to the routes, so the egress program
   * never finds a route whose member entry is missing. Within that order, one call per map.
   */
  apply(ops: MapOp[]): Promise<(Error | null)[]> {
    return Promise.resolve(this.applyNow(ops));
  }

  private applyNow(ops: MapOp[]): (Error | null)[] {
    const rank = (o: MapOp) => (o.action === 'delete' ? DELETE_ORDER : UPDATE_ORDER).indexOf(o.map) + (o.action === 'delete' ? 0 : 10);
    const order = ops.map((_, i) => i).sort((a, b) => rank(ops[a]!) - rank(ops[b]!) || a - b);
    const res = Array.from<Error | null>({ length: ops.length }).fill(null);
    for (let i = 0; i < order.length;) {
      const first = ops[order[i]!]!;
      let j = i;
      while (j < order.length && ops[order[j]!]!.map === first.map && ops[order[j]!]!.action === first.action) j++;
      const idx = order.slice(i, j);
      const map = this.maps[first.map];
      const errnos = first.action === 'update' ? map.updateMany(idx.map((k) => [ops[k]!.key, ops[k]!.value!])) : map.deleteMany(idx.map((k) => ops[k]!.key));
      errnos.forEach((e, k) => {
        if (!e) return;
        const o = ops[idx[k]!]!;
        res[idx[k]!] = Object.assign(new Error(`bpf map ${o.action} ${o.what}: errno ${e}`), { errno: e, code: errnoName(e) ?? `E${e}`, syscall: `bpf map ${o.action}` });
      });
      i = j;
    }
    return res;
  }
}
