// BPF mode's map driver for the peer programmer: what a peer's lease becomes in the pinned maps (its
// counters, its member entry, its VTEP, its subnet, and the route the egress program reads), what the
// maps hold now, and the order writes go in so no program ever meets a half-programmed peer. This is
// where a lease event becomes a map entry: writePeer() writes a lease's rows, for one lease event
// (entriesFor) and for a whole reconcile (reconcileAll) alike.
import { LeaseFormatError, decodeVxlanData, type Lease } from '../../subnet/lease.js';
import { parseIp4 } from '../../subnet/ip4.js';
import { parseIp6 } from '../../subnet/ip6.js';
import { hasIPv4 } from '../../subnet/lease-key.js';
import { errnoName } from '../../kernel/addon.js';
import type { BpfMap } from '../../kernel/bpf.js';
import * as L from '../../datapath/layout.js';
import type { MAP } from '../../datapath/objects.js';
import type { BulkReconcile, Entry, PeerDriver } from '../peer-programmer.js';

/** the maps a peer has entries in (their names are checked against MAP by the compiler) */
export type PeerMapName = (typeof MAP)['subnets' | 'vteps' | 'members' | 'routes' | 'peerStats' | 'routes6' | 'peerStats6'];
export type PeerMaps = Record<PeerMapName, BpfMap>;
/**
 * A lease event's entries carry keys and values as latin1 strings, one character a byte: two short
 * strings (its identity and its value, what the programmer compares) instead of Buffers and formatted
 * text. A shared value (the zero counters) is a Buffer.
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
 * Maps whose value a reconcile compares. A member's value is always zero, and a peer's counters are
 * only ever created (zero) or removed here (rewriting them would zero them).
 */
const COMPARED: ReadonlySet<PeerMapName> = new Set(['fl_vteps', 'fl_subnets', 'fl_routes', 'fl_routes6']);

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

/**
 * One peer map's wanted rows, laid end to end as the kernel's batch calls take them, and the peer each
 * row belongs to. A map whose value is never compared (COMPARED) holds zeros in every row: its values
 * are made when they are written, not kept here.
 */
class Rows {
  readonly keys: Buffer;
  readonly values: Buffer;
  readonly peer: Int32Array;
  n = 0;
  constructor(
    readonly ks: number,
    readonly vs: number,
    capacity: number,
  ) {
    this.keys = Buffer.alloc(capacity * ks);
    this.values = Buffer.alloc(capacity * vs);
    this.peer = new Int32Array(capacity);
  }
  next(peer: number): number {
    this.peer[this.n] = peer;
    return this.n++;
  }
}
type Tables = Record<PeerMapName, Rows>;

/**
 * The rows of a map dump, found by key: an open-addressing table of row numbers over the dump's own
 * bytes, no object, number or string per row (a JS Map of 50,000 keys was most of a restart's compare).
 */
class KeyIndex {
  private readonly slots: Int32Array;
  private readonly mask: number;
  constructor(
    private readonly keys: Buffer,
    private readonly ks: number,
    count: number,
  ) {
    let size = 16;
    while (size < count * 2) size *= 2;
    this.slots = new Int32Array(size).fill(-1);
    this.mask = size - 1;
    for (let i = 0; i < count; i++) {
      let h = hashKey(keys, i * ks, ks) & this.mask;
      while (this.slots[h] !== -1) h = (h + 1) & this.mask;
      this.slots[h] = i;
    }
  }
  /** the dump's row holding this key, or -1 */
  find(b: Buffer, off: number): number {
    for (let h = hashKey(b, off, this.ks) & this.mask; ; h = (h + 1) & this.mask) {
      const i = this.slots[h]!;
      if (i === -1 || sameBytes(b, off, this.keys, i * this.ks, this.ks)) return i;
    }
  }
}

function hashKey(b: Buffer, off: number, ks: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < ks; i++) h = Math.imul(h ^ b[off + i]!, 0x01000193);
  return (h ^ (h >>> 15)) >>> 0;
}

function sameBytes(a: Buffer, ao: number, b: Buffer, bo: number, n: number): boolean {
  for (let i = 0; i < n; i++) if (a[ao + i] !== b[bo + i]) return false;
  return true;
}

const errnoError = (map: PeerMapName, action: 'update' | 'delete', key: Buffer, e: number) =>
  Object.assign(new Error(`bpf map ${action} ${describeEntry(map, key)}: errno ${e}`), { errno: e, code: errnoName(e) ?? `E${e}`, syscall: `bpf map ${action}` });

const ENOENT = 2;

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
  // A new peer's counters and member entry start at zero and are never rewritten while it stays: one
  // zero value serves every peer's entry (it is only ever read), not a buffer each
  private readonly zeros: Record<PeerMapName, Buffer>;
  /** entriesFor()'s tables: one row per map, reused */
  private readonly one: Tables;

  constructor(
    private readonly maps: PeerMaps,
    private readonly vni: number,
    /** the network runs IPv6 too: peers' IPv6 halves go into fl_routes6 and fl_peer_stats6 */
    private readonly ipv6 = false,
  ) {
    this.zeros = Object.fromEntries(UPDATE_ORDER.map((m) => [m, Buffer.alloc(maps[m].lookupSize)])) as Record<PeerMapName, Buffer>;
    this.one = this.tables(1);
  }

  private tables(capacity: number): Tables {
    return Object.fromEntries(UPDATE_ORDER.map((m) => [m, new Rows(this.maps[m].desc.keySize, COMPARED.has(m) ? this.maps[m].lookupSize : 0, capacity)])) as Tables;
  }

  /**
   * A peer's rows: its counters and member entry, its VTEP, its subnet and its route; its IPv6 half's.
   * Everything is read and checked before the first row is written: a lease this backend cannot use
   * throws (LeaseFormatError) and leaves no row. Returns whether the lease has any row at all.
   */
  private writePeer(lease: Lease, t: Tables, peer: number): boolean {
    if (lease.attrs.backendType !== 'vxlan') throw new LeaseFormatError(`peer runs backend ${JSON.stringify(lease.attrs.backendType)}, not vxlan`);
    // an IPv6-only peer has no IPv4 half
    const v4 = hasIPv4(lease);
    let ip = 0;
    let mac = 0;
    if (v4) {
      const d = decodeVxlanData(lease.attrs);
      if (d.vni !== this.vni) throw new LeaseFormatError(`peer uses VNI ${d.vni}, this network uses ${this.vni}`);
      const a = parseIp4(lease.attrs.publicIP);
      if (a === undefined) throw new LeaseFormatError(`peer's PublicIP is not an IPv4 address: ${JSON.stringify(lease.attrs.publicIP)}`);
      ip = a;
      mac = L.macValue(d.vtepMAC);
    }
    // an IPv4-only peer in a dual-stack network has no IPv6 half, as in flannel; flannel-v6.1 would
    // reach the IPv6 half at the peer's IPv6 VTEP (BackendV6Data) at its PublicIPv6
    const v6 = this.ipv6 && lease.ipv6Subnet !== undefined;
    let ip6 = 0n;
    let mac6 = 0;
    if (v6) {
      const d = decodeVxlanData(lease.attrs, 6);
      if (d.vni !== this.vni) throw new LeaseFormatError(`peer's IPv6 VTEP uses VNI ${d.vni}, this network uses ${this.vni}`);
      const a = lease.attrs.publicIPv6;
      if (!a) throw new LeaseFormatError('peer has an IPv6 subnet but no PublicIPv6');
      const parsed = parseIp6(a);
      if (parsed === undefined) throw new LeaseFormatError(`peer's PublicIPv6 is not an IPv6 address: ${JSON.stringify(a)}`);
      ip6 = parsed;
      mac6 = L.macValue(d.vtepMAC);
    }
    let r: Rows;
    let i: number;
    if (v4) {
      const { ip: subnet, len } = lease.subnet;
      r = t.fl_peer_stats;
      L.W.memberKey(r.keys, r.next(peer) * r.ks, ip);
      r = t.fl_members;
      L.W.memberKey(r.keys, r.next(peer) * r.ks, ip);
      r = t.fl_vteps;
      i = r.next(peer);
      L.W.vtepKey(r.keys, i * r.ks, mac);
      L.W.vtepVal(r.values, i * r.vs, ip);
      r = t.fl_subnets;
      i = r.next(peer);
      L.W.subnetKey(r.keys, i * r.ks, subnet, len);
      L.W.subnetVal(r.values, i * r.vs, mac);
      r = t.fl_routes;
      i = r.next(peer);
      L.W.subnetKey(r.keys, i * r.ks, subnet, len);
      L.W.routeVal(r.values, i * r.vs, mac, ip);
    }
    if (v6) {
      const { ip: subnet, len } = lease.ipv6Subnet!;
      r = t.fl_peer_stats6;
      L.W.member6Key(r.keys, r.next(peer) * r.ks, ip6);
      r = t.fl_routes6;
      i = r.next(peer);
      L.W.subnet6Key(r.keys, i * r.ks, subnet, len);
      L.W.route6Val(r.values, i * r.vs, mac6, ip6);
    }
    return v4 || v6;
  }

  entriesFor(lease: Lease): Entry<MapOp>[] {
    const t = this.one;
    for (const m of UPDATE_ORDER) {
      t[m].keys.fill(0);
      t[m].values.fill(0);
      t[m].n = 0;
    }
    this.writePeer(lease, t, 0);
    // apply() writes them in UPDATE_ORDER: no program ever finds a route without its member
    const out: Entry<MapOp>[] = [];
    for (const m of UPDATE_ORDER) {
      const r = t[m];
      if (!r.n) continue;
      const key = TAG[m] + r.keys.toString('latin1', 0, r.ks);
      if (!r.vs) out.push(new MapEntry(m, key, '', this.zeros[m]));
      else {
        const v = r.values.toString('latin1', 0, r.vs);
        out.push(new MapEntry(m, key, v, v));
      }
    }
    return out;
  }

  /**
   * A reconcile by tables (PeerDriver.reconcileAll): every peer's rows written into one buffer per
   * map, compared with the kernel's batch dump of that map, and only what differs written, in the
   * order apply() keeps. At 10,000 peers that is 50,000 entries with no object, string or Buffer
   * each; a cold start writes each map's buffer as it is.
   */
  reconcileAll(peers: Lease[]): Promise<BulkReconcile> {
    return Promise.resolve(this.reconcileNow(peers));
  }

  private reconcileNow(peers: Lease[]): BulkReconcile {
    const t = this.tables(peers.length);
    const rejected = new Map<Lease, string>();
    const empty = new Set<Lease>();
    for (let i = 0; i < peers.length; i++) {
      try {
        if (!this.writePeer(peers[i]!, t, i)) empty.add(peers[i]!);
      } catch (e) {
        rejected.set(peers[i]!, (e as Error).message);
      }
    }
    const plan = Object.fromEntries(UPDATE_ORDER.map((m) => [m, this.compare(m, t[m])])) as Record<PeerMapName, { missing: number[] | null; stale: Buffer }>;
    let removed = 0;
    const notRemoved: Error[] = [];
    for (const m of DELETE_ORDER) {
      const { stale } = plan[m];
      const ks = t[m].ks;
      this.maps[m].deletePacked(stale).forEach((e, k) => {
        if (!e || e === ENOENT) removed++;
        else notRemoved.push(errnoError(m, 'delete', stale.subarray(k * ks, (k + 1) * ks), e));
      });
    }
    let added = 0;
    const failed = new Map<number, Error>();
    const written = {} as Record<PeerMapName, number[]>;
    for (const m of UPDATE_ORDER) {
      const r = t[m];
      const rows = plan[m].missing;
      const count = rows ? rows.length : r.n;
      written[m] = [];
      if (!count) continue;
      let keys: Buffer;
      let values: Buffer;
      const vs = this.maps[m].lookupSize;
      if (!rows) {
        keys = r.keys.subarray(0, r.n * r.ks);
        values = r.vs ? r.values.subarray(0, r.n * r.vs) : Buffer.alloc(r.n * vs);
      } else {
        keys = Buffer.allocUnsafe(count * r.ks);
        values = Buffer.alloc(count * vs);
        rows.forEach((row, j) => {
          r.keys.copy(keys, j * r.ks, row * r.ks, (row + 1) * r.ks);
          if (r.vs) r.values.copy(values, j * vs, row * r.vs, (row + 1) * r.vs);
        });
      }
      const errnos = this.maps[m].updatePacked(keys, values);
      for (let j = 0; j < count; j++) {
        const row = rows ? rows[j]! : j;
        const e = errnos[j];
        if (!e) {
          added++;
          written[m].push(row);
        } else if (!failed.has(r.peer[row]!)) failed.set(r.peer[row]!, errnoError(m, 'update', keys.subarray(j * r.ks, (j + 1) * r.ks), e));
      }
    }
    // a peer with any entry refused loses what this pass wrote of it: none is left half-programmed
    if (failed.size)
      for (const m of DELETE_ORDER) {
        const r = t[m];
        const back = written[m].filter((row) => failed.has(r.peer[row]!));
        const keys = Buffer.allocUnsafe(back.length * r.ks);
        back.forEach((row, j) => r.keys.copy(keys, j * r.ks, row * r.ks, (row + 1) * r.ks));
        added -= back.length;
        this.maps[m].deletePacked(keys);
      }
    return { added, removed, failed: new Map([...failed].map(([i, e]) => [peers[i]!, e])), rejected, notRemoved, empty };
  }

  /** Which rows the kernel lacks or holds with another value (null: all, the map is empty), and the keys it holds that no row has. */
  private compare(m: PeerMapName, r: Rows): { missing: number[] | null; stale: Buffer } {
    const map = this.maps[m];
    const { keys, values, count } = map.packedEntries();
    if (!count) return { missing: null, stale: keys };
    const ks = r.ks;
    const vs = map.lookupSize;
    const have = new KeyIndex(keys, ks, count);
    const wanted = new Uint8Array(count);
    const missing: number[] = [];
    for (let row = 0; row < r.n; row++) {
      const i = have.find(r.keys, row * ks);
      if (i < 0) missing.push(row);
      else {
        wanted[i] = 1;
        if (r.vs && !sameBytes(r.values, row * r.vs, values, i * vs, r.vs)) missing.push(row);
      }
    }
    const stale = Buffer.allocUnsafe((count - wanted.reduce((a, b) => a + b, 0)) * ks);
    for (let i = 0, j = 0; i < count; i++) if (!wanted[i]) keys.copy(stale, j++ * ks, i * ks, (i + 1) * ks);
    return { missing, stale };
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
        res[idx[k]!] = errnoError(o.map, o.action, Buffer.from(o.key, 'latin1'), e);
      });
      i = j;
    }
    return res;
  }
}
