// Byte-for-byte mirror of bpf/flannel.h: the one place the agent encodes and decodes map entries.
import { formatIp4, parseIp4 } from '../subnet/ip4.js';
import { formatIp6, parseIp6 } from '../subnet/ip6.js';

export const REASONS = ['forwarded', 'no_route', 'unknown_vtep', 'spoofed', 'wrong_vni', 'malformed', 'not_ipv4', 'received', 'guard_passed'] as const;
export type Reason = (typeof REASONS)[number];
export const CFG_KEEP_UDP_CSUM = 1;
/** FL_MARK_MEMBER: the skb mark with which the underlay's tc guard hands flannel.1's ingress a packet it has judged */
export const MARK_MEMBER = 0x0f1a0000;

/**
 * Every struct of bpf/flannel.h this file encodes or decodes: its size, and each field's [offset, size]
 * in bytes. The encoders below take their offsets and sizes from here, and
 * test/integration/layout.test.ts compares every entry with the BTF of the built objects (and the
 * reason lists with the C enums): a change to either side alone fails that test.
 */
export const STRUCTS = {
  fl_subnet_key: { size: 8, fields: { prefixlen: [0, 4], addr: [4, 4] } },
  fl_subnet_val: { size: 8, fields: { vtep_mac: [0, 6], flags: [6, 2] } },
  fl_route: { size: 12, fields: { vtep_mac: [0, 6], flags: [6, 2], remote_ip: [8, 4] } },
  fl_subnet6_key: { size: 20, fields: { prefixlen: [0, 4], addr: [4, 16] } },
  fl_route6: { size: 24, fields: { vtep_mac: [0, 6], flags: [6, 2], remote_ip: [8, 16] } },
  fl_member6_key: { size: 16, fields: { ip: [0, 16] } },
  fl_vtep_key: { size: 8, fields: { mac: [0, 6], pad: [6, 2] } },
  fl_vtep_val: { size: 8, fields: { remote_ip: [0, 4], flags: [4, 4] } },
  fl_member_key: { size: 4, fields: { ip: [0, 4] } },
  fl_member_val: { size: 4, fields: { flags: [0, 4] } },
  fl_config: { size: 16, fields: { vni: [0, 4], port: [4, 2], ttl: [6, 1], flags: [7, 1], local_mac: [8, 6], pad: [14, 2] } },
  fl_counter: { size: 16, fields: { packets: [0, 8], bytes: [8, 8] } },
  fl_peer_stats: { size: 32, fields: { tx_packets: [0, 8], tx_bytes: [8, 8], rx_packets: [16, 8], rx_bytes: [24, 8] } },
  fl_pod_key: { size: 4, fields: { ip: [0, 4] } },
  fl_pod6_key: { size: 16, fields: { ip: [0, 16] } },
  fl_pod_val: { size: 24, fields: { ifindex: [0, 4], pod_mac: [4, 6], gw_mac: [10, 6], host_mac: [16, 6], flags: [22, 2] } },
  fl_fast_cfg: { size: 12, fields: { vtep_ifindex: [0, 4], flags: [4, 4], local_ip: [8, 4] } },
} as const satisfies Record<string, { size: number; fields: Record<string, readonly [number, number]> }>;

const S = STRUCTS;
/** offset of a field, for the encoders */
const at = <T extends keyof typeof S>(t: T, f: keyof (typeof S)[T]['fields']) => (S[t].fields as Record<string, readonly [number, number]>)[f as string]![0];

// Encoders write straight into the entry's buffer: 15000 entries for 5000 peers must cost little.
// Each buffer is a zeroed slice of Node's shared pool: Buffer.alloc() gives every few-byte entry an
// ArrayBuffer and a backing store of its own (about 200 bytes of overhead), 90,000 of them at 10,000 peers.
const entryBuf = (size: number) => Buffer.allocUnsafe(size).fill(0);
function writeIp(ip: string, b: Buffer, off: number): void {
  const v = parseIp4(ip);
  if (v === undefined) throw new Error(`not an IPv4 address: ${ip}`);
  b.writeUInt32BE(v, off);
}
function ipBytes(ip: string, size: number, off: number): Buffer {
  const b = entryBuf(size);
  writeIp(ip, b, off);
  return b;
}
function writeMac(mac: string, b: Buffer, off: number): void {
  mac48(b, off, macValue(mac));
}
const macStr = (b: Buffer) => [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
const macAt = (b: Buffer, off: number) => macStr(b.subarray(off, off + 6));

/** struct fl_subnet_key { u32 prefixlen; u8 addr[4]; } (prefixlen in host order, as LPM tries want) */
export function subnetKey(ip: string, len: number): Buffer {
  const b = entryBuf(S.fl_subnet_key.size);
  b.writeUInt32LE(len, at('fl_subnet_key', 'prefixlen'));
  writeIp(ip, b, at('fl_subnet_key', 'addr'));
  return b;
}
export function decodeSubnetKey(b: Buffer): { ip: string; len: number } {
  return { len: b.readUInt32LE(at('fl_subnet_key', 'prefixlen')), ip: formatIp4(b.readUInt32BE(at('fl_subnet_key', 'addr'))) };
}

/** struct fl_subnet_val { u8 vtep_mac[6]; u16 flags; } */
export function subnetVal(mac: string): Buffer {
  const b = entryBuf(S.fl_subnet_val.size);
  writeMac(mac, b, at('fl_subnet_val', 'vtep_mac'));
  return b;
}
export const decodeSubnetVal = (b: Buffer) => ({ vtepMAC: macAt(b, at('fl_subnet_val', 'vtep_mac')) });

/** struct fl_route { u8 vtep_mac[6]; u16 flags; u8 remote_ip[4]; }: fl_routes, the egress program's one lookup */
export function routeVal(mac: string, ip: string): Buffer {
  const b = entryBuf(S.fl_route.size);
  writeMac(mac, b, at('fl_route', 'vtep_mac'));
  writeIp(ip, b, at('fl_route', 'remote_ip'));
  return b;
}
export const decodeRouteVal = (b: Buffer) => ({ vtepMAC: macAt(b, at('fl_route', 'vtep_mac')), remoteIP: formatIp4(b.readUInt32BE(at('fl_route', 'remote_ip'))) });

function writeIp6(ip: string, b: Buffer, off: number): void {
  const v = parseIp6(ip);
  if (v === undefined) throw new Error(`not an IPv6 address: ${ip}`);
  ip6Into(v, b, off);
}
function readIp6(b: Buffer, off: number): string {
  let v = 0n;
  for (let i = 0; i < 16; i++) v = (v << 8n) | BigInt(b[off + i]!);
  return formatIp6(v);
}

/** struct fl_subnet6_key { u32 prefixlen; u8 addr[16]; } */
export function subnet6Key(ip: string, len: number): Buffer {
  const b = entryBuf(S.fl_subnet6_key.size);
  b.writeUInt32LE(len, at('fl_subnet6_key', 'prefixlen'));
  writeIp6(ip, b, at('fl_subnet6_key', 'addr'));
  return b;
}
export const decodeSubnet6Key = (b: Buffer) => ({ len: b.readUInt32LE(at('fl_subnet6_key', 'prefixlen')), ip: readIp6(b, at('fl_subnet6_key', 'addr')) });

/** struct fl_route6 { u8 vtep_mac[6]; u16 flags; u8 remote_ip[16]; }: fl_routes6, the egress program's IPv6 lookup */
export function route6Val(mac: string, ip6: string): Buffer {
  const b = entryBuf(S.fl_route6.size);
  writeMac(mac, b, at('fl_route6', 'vtep_mac'));
  writeIp6(ip6, b, at('fl_route6', 'remote_ip'));
  return b;
}
export const decodeRoute6Val = (b: Buffer) => ({ vtepMAC: macAt(b, at('fl_route6', 'vtep_mac')), remoteIP: readIp6(b, at('fl_route6', 'remote_ip')) });

/** struct fl_member6_key { u8 ip[16]; }: fl_peer_stats6 */
export function member6Key(ip6: string): Buffer {
  const b = entryBuf(S.fl_member6_key.size);
  writeIp6(ip6, b, at('fl_member6_key', 'ip'));
  return b;
}
export const decodeMember6Key = (b: Buffer) => readIp6(b, at('fl_member6_key', 'ip'));

/** struct fl_vtep_key { u8 mac[6]; u16 pad; } */
export function vtepKey(mac: string): Buffer {
  const b = entryBuf(S.fl_vtep_key.size);
  writeMac(mac, b, at('fl_vtep_key', 'mac'));
  return b;
}
export const decodeVtepKey = (b: Buffer) => macAt(b, at('fl_vtep_key', 'mac'));

/** struct fl_vtep_val { u8 remote_ip[4]; u32 flags; } */
export function vtepVal(ip: string): Buffer {
  const b = entryBuf(S.fl_vtep_val.size);
  writeIp(ip, b, at('fl_vtep_val', 'remote_ip'));
  return b;
}
export const decodeVtepVal = (b: Buffer) => ({ remoteIP: formatIp4(b.readUInt32BE(at('fl_vtep_val', 'remote_ip'))) });

/** struct fl_member_key { u8 ip[4]; } */
export const memberKey = (ip: string) => ipBytes(ip, S.fl_member_key.size, at('fl_member_key', 'ip'));
export const decodeMemberKey = (b: Buffer) => formatIp4(b.readUInt32BE(at('fl_member_key', 'ip')));
/** struct fl_member_val { u32 flags; } */
export const memberVal = () => entryBuf(S.fl_member_val.size);

/**
 * The peer maps' rows, written straight into the buffers the kernel's batch calls take: a reconcile
 * of 10,000 peers writes 50,000 of them, and a Buffer, a string or an object each was most of its time
 * and memory. The addresses come as numbers (a MAC as its 48-bit value, exact in a double), the
 * offsets from STRUCTS; the rows' buffers are zeroed, so pads and flags stay 0. A unit test compares
 * every writer with the Buffer encoders above, byte for byte.
 */
/** A MAC address as its 48-bit value; "not a MAC address" for anything but six hex pairs and colons. */
export function macValue(mac: string): number {
  let v = 0;
  for (let i = 0; i < 17 && mac.length === 17; i++) {
    const c = mac.charCodeAt(i);
    if (i % 3 === 2) {
      if (c !== 58) break;
      continue;
    }
    const l = c | 32;
    const d = c >= 48 && c <= 57 ? c - 48 : l >= 97 && l <= 102 ? l - 87 : -1;
    if (d < 0) break;
    v = v * 16 + d;
    if (i === 16) return v;
  }
  throw new Error(`not a MAC address: ${mac}`);
}
// byte stores, not Buffer's write methods, which validate every argument through a few calls: a cold
// start's first pass runs before V8 has optimized any of it (row writing at 10,000 peers: 9-19 ms
// against 18-28, program-peers.ts)
function u32be(b: Buffer, off: number, v: number): void {
  b[off] = v >>> 24;
  b[off + 1] = v >>> 16;
  b[off + 2] = v >>> 8;
  b[off + 3] = v;
}
function u32le(b: Buffer, off: number, v: number): void {
  b[off] = v;
  b[off + 1] = v >>> 8;
  b[off + 2] = v >>> 16;
  b[off + 3] = v >>> 24;
}
function mac48(b: Buffer, off: number, mac: number): void {
  const hi = Math.floor(mac / 2 ** 32);
  b[off] = hi >>> 8;
  b[off + 1] = hi;
  u32be(b, off + 2, mac >>> 0);
}
function ip6Into(ip: bigint, b: Buffer, off: number): void {
  b.writeBigUInt64BE(ip >> 64n, off);
  b.writeBigUInt64BE(ip & 0xffffffffffffffffn, off + 8);
}
// the offsets once, not an at() lookup per row
const OFF = {
  subnetKeyLen: at('fl_subnet_key', 'prefixlen'),
  subnetKeyAddr: at('fl_subnet_key', 'addr'),
  subnetValMac: at('fl_subnet_val', 'vtep_mac'),
  routeMac: at('fl_route', 'vtep_mac'),
  routeIp: at('fl_route', 'remote_ip'),
  vtepKeyMac: at('fl_vtep_key', 'mac'),
  vtepValIp: at('fl_vtep_val', 'remote_ip'),
  memberIp: at('fl_member_key', 'ip'),
  subnet6KeyLen: at('fl_subnet6_key', 'prefixlen'),
  subnet6KeyAddr: at('fl_subnet6_key', 'addr'),
  route6Mac: at('fl_route6', 'vtep_mac'),
  route6Ip: at('fl_route6', 'remote_ip'),
  member6Ip: at('fl_member6_key', 'ip'),
};
export const W = {
  subnetKey(b: Buffer, off: number, ip: number, len: number) {
    u32le(b, off + OFF.subnetKeyLen, len);
    u32be(b, off + OFF.subnetKeyAddr, ip);
  },
  subnetVal(b: Buffer, off: number, mac: number) {
    mac48(b, off + OFF.subnetValMac, mac);
  },
  routeVal(b: Buffer, off: number, mac: number, ip: number) {
    mac48(b, off + OFF.routeMac, mac);
    u32be(b, off + OFF.routeIp, ip);
  },
  vtepKey(b: Buffer, off: number, mac: number) {
    mac48(b, off + OFF.vtepKeyMac, mac);
  },
  vtepVal(b: Buffer, off: number, ip: number) {
    u32be(b, off + OFF.vtepValIp, ip);
  },
  memberKey(b: Buffer, off: number, ip: number) {
    u32be(b, off + OFF.memberIp, ip);
  },
  subnet6Key(b: Buffer, off: number, ip: bigint, len: number) {
    u32le(b, off + OFF.subnet6KeyLen, len);
    ip6Into(ip, b, off + OFF.subnet6KeyAddr);
  },
  route6Val(b: Buffer, off: number, mac: number, ip: bigint) {
    mac48(b, off + OFF.route6Mac, mac);
    ip6Into(ip, b, off + OFF.route6Ip);
  },
  member6Key(b: Buffer, off: number, ip: bigint) {
    ip6Into(ip, b, off + OFF.member6Ip);
  },
};

export interface FlConfig {
  vni: number;
  port: number;
  ttl: number;
  flags: number;
  localMAC: string;
}
/** struct fl_config { u32 vni; u16 port; u8 ttl; u8 flags; u8 local_mac[6]; u16 pad; } (host order) */
export function configVal(c: FlConfig): Buffer {
  const b = entryBuf(S.fl_config.size);
  b.writeUInt32LE(c.vni, at('fl_config', 'vni'));
  b.writeUInt16LE(c.port, at('fl_config', 'port'));
  b.writeUInt8(c.ttl, at('fl_config', 'ttl'));
  b.writeUInt8(c.flags, at('fl_config', 'flags'));
  writeMac(c.localMAC, b, at('fl_config', 'local_mac'));
  return b;
}
export function decodeConfig(b: Buffer): FlConfig {
  return {
    vni: b.readUInt32LE(at('fl_config', 'vni')),
    port: b.readUInt16LE(at('fl_config', 'port')),
    ttl: b.readUInt8(at('fl_config', 'ttl')),
    flags: b.readUInt8(at('fl_config', 'flags')),
    localMAC: macAt(b, at('fl_config', 'local_mac')),
  };
}

export const u32Key = (n: number) => {
  const b = entryBuf(4);
  b.writeUInt32LE(n);
  return b;
};

/** struct fl_counter { u64 packets; u64 bytes; } summed over CPUs */
export function sumCounters(perCpu: Buffer[]): { packets: number; bytes: number } {
  let packets = 0n,
    bytes = 0n;
  for (const c of perCpu) {
    packets += c.readBigUInt64LE(at('fl_counter', 'packets'));
    bytes += c.readBigUInt64LE(at('fl_counter', 'bytes'));
  }
  return { packets: Number(packets), bytes: Number(bytes) };
}

/** struct fl_peer_stats { u64 tx_packets, tx_bytes, rx_packets, rx_bytes; } summed over CPUs */
export function sumPeerStats(perCpu: Buffer[]) {
  const fields = ['tx_packets', 'tx_bytes', 'rx_packets', 'rx_bytes'] as const;
  const s = [0n, 0n, 0n, 0n];
  for (const c of perCpu) fields.forEach((f, i) => (s[i]! += c.readBigUInt64LE(at('fl_peer_stats', f))));
  return { txPackets: Number(s[0]), txBytes: Number(s[1]), rxPackets: Number(s[2]), rxBytes: Number(s[3]) };
}

// Pod fast path (bpf/flannel.h: fl_pod_*, fl_fast_*)
export const FAST_RESULTS = [
  'fast_tx',
  'fast_rx',
  'pass_not_pod',
  'pass_new_flow',
  'pass_nat',
  'pass_other',
  'pass_ct_error',
  'bypass_tx',
  'bypass_rx',
  'pass_no_fib',
  'pass_gro',
  'pass_too_big',
] as const;
export type FastResult = (typeof FAST_RESULTS)[number];
export const FAST_ON = 1;
/** UNSAFE, for tests only: the fast path stops asking conntrack (replies of NAT'd flows break) */
export const FAST_NO_CT = 2;
/** bypass mode: encapsulation and decapsulation in BPF, flannel.1 skipped (not in flannel) */
export const FAST_BYPASS = 4;

export interface LocalPod {
  ip: string;
  /** the pod's host-side veth */
  ifindex: number;
  podMAC: string;
  /** the bridge's MAC (the pod's gateway) */
  gwMAC: string;
  /** the host-side veth's own MAC, to tell our veth from a later device that got the same ifindex */
  hostMAC: string;
}

/** A pod's key in its family's map: struct fl_pod_key { u8 ip[4]; } (fl_local_pods), or for an IPv6
 * address struct fl_pod6_key { u8 ip[16]; } (fl_local_pods6). */
export function podKey(ip: string): Buffer {
  if (!ip.includes(':')) return ipBytes(ip, S.fl_pod_key.size, at('fl_pod_key', 'ip'));
  const b = entryBuf(S.fl_pod6_key.size);
  writeIp6(ip, b, at('fl_pod6_key', 'ip'));
  return b;
}
export const decodePodKey = (b: Buffer) => (b.length === S.fl_pod6_key.size ? readIp6(b, at('fl_pod6_key', 'ip')) : formatIp4(b.readUInt32BE(at('fl_pod_key', 'ip'))));

/** struct fl_pod_val { u32 ifindex; u8 pod_mac[6]; u8 gw_mac[6]; u8 host_mac[6]; u16 flags; } */
export function podVal(p: Omit<LocalPod, 'ip'>): Buffer {
  const b = entryBuf(S.fl_pod_val.size);
  b.writeUInt32LE(p.ifindex, at('fl_pod_val', 'ifindex'));
  writeMac(p.podMAC, b, at('fl_pod_val', 'pod_mac'));
  writeMac(p.gwMAC, b, at('fl_pod_val', 'gw_mac'));
  writeMac(p.hostMAC, b, at('fl_pod_val', 'host_mac'));
  return b;
}
export function decodePodVal(b: Buffer): Omit<LocalPod, 'ip'> {
  return {
    ifindex: b.readUInt32LE(at('fl_pod_val', 'ifindex')),
    podMAC: macAt(b, at('fl_pod_val', 'pod_mac')),
    gwMAC: macAt(b, at('fl_pod_val', 'gw_mac')),
    hostMAC: macAt(b, at('fl_pod_val', 'host_mac')),
  };
}

/** struct fl_fast_cfg { u32 vtep_ifindex; u32 flags; u8 local_ip[4]; } */
export function fastCfgVal(c: { vtepIfindex: number; flags: number; localIP?: string }): Buffer {
  const b = entryBuf(S.fl_fast_cfg.size);
  b.writeUInt32LE(c.vtepIfindex, at('fl_fast_cfg', 'vtep_ifindex'));
  b.writeUInt32LE(c.flags, at('fl_fast_cfg', 'flags'));
  writeIp(c.localIP ?? '0.0.0.0', b, at('fl_fast_cfg', 'local_ip'));
  return b;
}
export const decodeFastCfg = (b: Buffer) => ({
  vtepIfindex: b.readUInt32LE(at('fl_fast_cfg', 'vtep_ifindex')),
  flags: b.readUInt32LE(at('fl_fast_cfg', 'flags')),
  localIP: formatIp4(b.readUInt32BE(at('fl_fast_cfg', 'local_ip'))),
});

/**
 * Maps that hold only counters, or settings the agent writes at every start (fl_fast_cfg). When a new
 * version changes one's shape (more reasons, another field), libbpf refuses to reuse the old pin and
 * the load would fail: these pins are replaced instead (the counts restart), while the maps holding
 * peers and pods are never thrown away.
 */
export const REPLACEABLE_MAPS = ['fl_stats', 'fl_fast_stats', 'fl_peer_stats', 'fl_fast_cfg'];
