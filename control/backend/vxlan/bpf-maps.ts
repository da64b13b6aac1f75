// BPF mode's map driver for the peer programmer: what a peer's lease becomes in the pinned maps (its
// counters, its member entry, its VTEP, its subnet, and the route the egress program reads), what the
// maps hold now, and the order writes go in so no program ever meets a half-programmed peer. This is
// where a lease event becomes a map entry.
import { LeaseFormatError, decodeVxlanData, type Lease } from '../../subnet/lease.js';
import { parseIp4 } from '../../subnet/ip4.js';
import { formatIp6 } from '../../subnet/ip6.js';
import { hasIPv4 } from '../../subnet/lease-key.js';
import { errnoName } from '../../kernel/addon.js';
import type { BpfMap } from '../../kernel/bpf.js';
import * as L from '../../datapath/layout.js';
import type { MAP } from '../../datapath/objects.js';
import type { Entry, PeerDriver } from '../peer-programmer.js';

/** the maps a peer has entries in (their names are checked against MAP by the compiler) */
export type PeerMapName = (typeof MAP)['subnets' | 'vteps' | 'members' | 'routes' | 'peerStats' | 'routes6' | 'peerStats6'];
export type PeerMaps = Record<PeerMapName, BpfMap>;
/**
 * Keys and values travel as latin1 strings, one character a byte: an entry is then two short strings
 * (its identity and its value, what a reconcile compares) instead of Buffers, objects and formatted
 * text; at 10,000 peers a reconcile compares 50,000 of them. A shared value (the zero counters) is a Buffer.
 */
export type MapOp = { map: PeerMapName; action: 'update' | 'delete'; key: string; value?: string | Buffer };

// A peer's counters first (their presence is what the tc guard and flannel.1's ingress accept), then
// the XDP guard's member entry, the VTEP and the subnet, and last the route the egress program reads;
// deletes the other way round. So no program ever finds a half-programmed peer. A peer's IPv6 half (a
// dual-stack network) follows the same rule: its counters (its membership over IPv6) before its IPv6
// route.
const UPDATE_ORDER: PeerMapName[] = ['fl_peer_stats', 'fl_peer_stats6', 'fl_members', 'fl_vteps', 'fl_subnets', 'fl_routes', 'fl_routes6'];
const DELETE_ORDER: PeerMapName[] = ['fl_routes6', 'fl_routes', 'fl_subnets', 'fl_vteps', 'fl_members', 'fl_peer_stats6', 'fl_peer_stats'];

const rankOf = (order: PeerMapName[]) => Object.fromEntries(order.map((m, i) => [m, i])) as Record<PeerMapName, number>;
const UPDATE_RANK = rankOf(UPDATE_ORDER);
const DELETE_RANK = rankOf(DELETE_ORDER);

/** One character per map, the first of an entry's identity: keys of two maps never meet. */
const TAG: Record<PeerMapName, string> = { fl_peer_stats: 'c', fl_peer_stats6: 'C', fl_members: 'm', fl_vteps: 'v', fl_subnets: 's', fl_routes: 'r', fl_routes6: 'R' };
/**
 * Maps whose value a reconcile compares. A member's value is always the same, and a peer's counters
 * are only ever created or removed here (rewriting them would zero them).
 */
const COMPARED: ReadonlySet<PeerMapName> = new Set(['fl_vteps', 'fl_subnets', 'fl_routes', 'fl_routes6']);

const latin1 = (b: Buffer) => b.toString('latin1');

/** One map entry as the peer programmer sees it; its operations are made when the programmer asks for them. */
class MapEntry implements Entry<MapOp> {
  constructor(
    readonly map: PeerMapName,
    /** TAG + the key's bytes */
    readonly key: string,
    /** the value's bytes where they are compared, '' where not */
    readonly value: string,
    /** what an update writes */
    private readonly bytes: string | Buffer,
  ) {}
  get add(): MapOp {
    return { map: this.map, action: 'update', key: this.key.slice(1), value: this.bytes };
  }
  get del(): MapOp {
    return { map: this.map, action: 'delete', key: this.key.slice(1) };
  }
}

function mapEntry(map: PeerMapName, key: Buffer, value: Buffer): MapEntry {
  const v = COMPARED.has(map) ? latin1(value) : '';
  return new MapEntry(map, TAG[map] + latin1(key), v, v || value);
}

/** An entry whose key and value are already latin1 strings (layout.ts P), its value compared. */
const packedEntry = (map: PeerMapName, key: string, value: string) => new MapEntry(map, TAG[map] + key, value, value);

/** An entry in words, for errors and logs (only ever made for those). */
export function describeEntry(map: PeerMapName, key: Buffer): string {
  switch (map) {
    case 'fl_peer_stats':
      return `counters ${L.decodeMemberKey(key)}`;
    case 'fl_members':
      return `member ${L.decodeMemberKey(key)}`;
    case 'fl_vteps':
      return `vtep ${L.decodeVtepKey(key)}`;
    case 'fl_subnets':
    case 'fl_routes': {
      const { ip, len } = L.decodeSubnetKey(key);
      return `${map === 'fl_routes' ? 'route' : 'subnet'} ${ip}/${len}`;
    }
    case 'fl_routes6': {
      const { ip, len } = L.decodeSubnet6Key(key);
      return `route ${ip}/${len}`;
    }
    case 'fl_peer_stats6':
      return `counters ${L.decodeMember6Key(key)}`;
  }
}

export class BpfMapDriver implements PeerDriver<MapOp> {
  // A new peer's counters start at zero and are never rewritten while it stays: one zero value serves
  // every peer (it is only ever read), not a buffer each
  private readonly zeroStats: Buffer;
  private readonly zeroStats6: Buffer;
  private readonly memberVal = L.memberVal();

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
    const ip = parseIp4(lease.attrs.publicIP)!;
    const mac = L.packedMac(vtepMAC);
    const subnetKey = L.P.subnetKey(lease.subnet.ip, lease.subnet.len);
    const memberKey = L.P.memberKey(ip);
    // apply() writes them in UPDATE_ORDER: no program ever finds a route without its member
    return [
      new MapEntry('fl_peer_stats', TAG.fl_peer_stats + memberKey, '', this.zeroStats),
      new MapEntry('fl_members', TAG.fl_members + memberKey, '', this.memberVal),
      packedEntry('fl_vteps', L.P.vtepKey(mac), L.P.vtepVal(ip)),
      packedEntry('fl_subnets', subnetKey, L.P.subnetVal(mac)),
      packedEntry('fl_routes', subnetKey, L.P.routeVal(mac, ip)),
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
    return [mapEntry('fl_peer_stats6', L.member6Key(ip6), this.zeroStats6), mapEntry('fl_routes6', L.subnet6Key(formatIp6(lease.ipv6Subnet.ip), lease.ipv6Subnet.len), L.route6Val(vtepMAC, ip6))];
  }

  currentEntries(): Promise<Entry<MapOp>[]> {
    return Promise.resolve(this.entriesNow());
  }

  // fl_routes6 is read even when IPv6 is off: what a dual-stack run left there is stale now
  private entriesNow(): Entry<MapOp>[] {
    const out: Entry<MapOp>[] = [];
    for (const name of UPDATE_ORDER) {
      const map = this.maps[name];
      // one batched call per map; keys and values are cut from its two buffers as strings, no Buffer each
      const { keys, values, count } = map.packedEntries();
      const ks = map.desc.keySize;
      const vs = map.lookupSize;
      const compared = COMPARED.has(name);
      const tag = TAG[name];
      for (let i = 0; i < count; i++) {
        const v = compared ? values.toString('latin1', i * vs, (i + 1) * vs) : '';
        out.push(new MapEntry(name, tag + keys.toString('latin1', i * ks, (i + 1) * ks), v, v));
      }
    }
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
    // a stable bucket sort by (action, map) rank: 50,000 operations at a cold start of 10,000 peers
    const buckets: number[][] = Array.from({ length: DELETE_ORDER.length + UPDATE_ORDER.length }, () => []);
    ops.forEach((o, i) => buckets[o.action === 'delete' ? DELETE_RANK[o.map] : DELETE_ORDER.length + UPDATE_RANK[o.map]]!.push(i));
    const order = buckets.flat();
    const res = Array.from<Error | null>({ length: ops.length }).fill(null);
    for (let i = 0; i < order.length;) {
      const first = ops[order[i]!]!;
      let j = i;
      while (j < order.length && ops[order[j]!]!.map === first.map && ops[order[j]!]!.action === first.action) j++;
      const idx = order.slice(i, j);
      const map = this.maps[first.map];
      // keys (and values, where they are strings) joined and converted in one native call: a
      // Buffer.write per entry was a third of a cold start's map writes at 10,000 peers
      const keys = Buffer.from(idx.map((k) => ops[k]!.key).join(''), 'latin1');
      let errnos: number[];
      if (first.action === 'update') {
        const vs = map.lookupSize;
        const strings = idx.every((k) => typeof ops[k]!.value === 'string');
        let values: Buffer;
        if (strings) values = Buffer.from(idx.map((k) => ops[k]!.value as string).join(''), 'latin1');
        else {
          values = Buffer.alloc(idx.length * vs);
          idx.forEach((k, n) => {
            const v = ops[k]!.value!;
            if (typeof v === 'string') values.write(v, n * vs, vs, 'latin1');
            else v.copy(values, n * vs, 0, vs);
          });
        }
        errnos = map.updatePacked(keys, values);
      } else {
        errnos = map.deletePacked(keys);
      }
      errnos.forEach((e, k) => {
        if (!e) return;
        const o = ops[idx[k]!]!;
        const what = describeEntry(o.map, Buffer.from(o.key, 'latin1'));
        res[idx[k]!] = Object.assign(new Error(`bpf map ${o.action} ${what}: errno ${e}`), { errno: e, code: errnoName(e) ?? `E${e}`, syscall: `bpf map ${o.action}` });
      });
      i = j;
    }
    return res;
  }
}
