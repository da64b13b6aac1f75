// Byte-for-byte mirror of bpf/flannel.h: the one place the agent encodes and decodes map entries.
import { formatIp4, parseIp4 } from '../subnet/ip4.js';

export const REASONS = ['forwarded', 'no_route', 'unknown_vtep', 'spoofed', 'wrong_vni', 'malformed', 'not_ipv4', 'received', 'guard_passed'] as const;
export type Reason = (typeof REASONS)[number];
export const CFG_KEEP_UDP_CSUM = 1;

// Encoders write straight into the entry's buffer: 15000 entries for 5000 peers must cost little.
function writeIp(ip: string, b: Buffer, off: number): void {
  const v = parseIp4(ip);
  if (v === undefined) throw new Error(`not an IPv4 address: ${ip}`);
  b.writeUInt32BE(v, off);
}
function ipBytes(ip: string): Buffer {
  const b = Buffer.alloc(4);
  writeIp(ip, b, 0);
  return b;
}
const HEX = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;
function writeMac(mac: string, b: Buffer, off: number): void {
  if (mac.length !== 17 || !HEX.test(mac)) throw new Error(`not a MAC address: ${mac}`);
  for (let i = 0; i < 6; i++) b[off + i] = parseInt(mac.slice(i * 3, i * 3 + 2), 16);
}
const macStr = (b: Buffer) => [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');

/** struct fl_subnet_key { u32 prefixlen; u8 addr[4]; } (prefixlen in host order, as LPM tries want) */
export function subnetKey(ip: string, len: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(len, 0);
  writeIp(ip, b, 4);
  return b;
}
export function decodeSubnetKey(b: Buffer): { ip: string; len: number } {
  return { len: b.readUInt32LE(0), ip: formatIp4(b.readUInt32BE(4)) };
}

/** struct fl_subnet_val { u8 vtep_mac[6]; u16 flags; } */
export function subnetVal(mac: string): Buffer {
  const b = Buffer.alloc(8);
  writeMac(mac, b, 0);
  return b;
}
export const decodeSubnetVal = (b: Buffer) => ({ vtepMAC: macStr(b.subarray(0, 6)) });

/** struct fl_route { u8 vtep_mac[6]; u16 flags; u8 remote_ip[4]; }: fl_routes, the egress program's one lookup */
export function routeVal(mac: string, ip: string): Buffer {
  const b = Buffer.alloc(12);
  writeMac(mac, b, 0);
  writeIp(ip, b, 8);
  return b;
}
export const decodeRouteVal = (b: Buffer) => ({ vtepMAC: macStr(b.subarray(0, 6)), remoteIP: formatIp4(b.readUInt32BE(8)) });

/** struct fl_vtep_key { u8 mac[6]; u16 pad; } */
export function vtepKey(mac: string): Buffer {
  const b = Buffer.alloc(8);
  writeMac(mac, b, 0);
  return b;
}
export const decodeVtepKey = (b: Buffer) => macStr(b.subarray(0, 6));

/** struct fl_vtep_val { u8 remote_ip[4]; u32 flags; } */
export function vtepVal(ip: string): Buffer {
  const b = Buffer.alloc(8);
  writeIp(ip, b, 0);
  return b;
}
export const decodeVtepVal = (b: Buffer) => ({ remoteIP: formatIp4(b.readUInt32BE(0)) });

/** struct fl_member_key { u8 ip[4]; } */
export const memberKey = (ip: string) => ipBytes(ip);
export const decodeMemberKey = (b: Buffer) => formatIp4(b.readUInt32BE(0));
/** struct fl_member_val { u32 flags; } */
export const memberVal = () => Buffer.alloc(4);

export interface FlConfig {
  vni: number;
  port: number;
  ttl: number;
  flags: number;
  localMAC: string;
}
/** struct fl_config { u32 vni; u16 port; u8 ttl; u8 flags; u8 local_mac[6]; u16 pad; } (host order) */
export function configVal(c: FlConfig): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32LE(c.vni, 0);
  b.writeUInt16LE(c.port, 4);
  b.writeUInt8(c.ttl, 6);
  b.writeUInt8(c.flags, 7);
  writeMac(c.localMAC, b, 8);
  return b;
}
export function decodeConfig(b: Buffer): FlConfig {
  return { vni: b.readUInt32LE(0), port: b.readUInt16LE(4), ttl: b.readUInt8(6), flags: b.readUInt8(7), localMAC: macStr(b.subarray(8, 14)) };
}

export const u32Key = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

/** struct fl_counter { u64 packets; u64 bytes; } summed over CPUs */
export function sumCounters(perCpu: Buffer[]): { packets: number; bytes: number } {
  let packets = 0n, bytes = 0n;
  for (const c of perCpu) {
    packets += c.readBigUInt64LE(0);
    bytes += c.readBigUInt64LE(8);
  }
  return { packets: Number(packets), bytes: Number(bytes) };
}

/** struct fl_peer_stats { u64 tx_packets, tx_bytes, rx_packets, rx_bytes; } summed over CPUs */
export function sumPeerStats(perCpu: Buffer[]) {
  const s = [0n, 0n, 0n, 0n];
  for (const c of perCpu) for (let i = 0; i < 4; i++) s[i]! += c.readBigUInt64LE(i * 8);
  return { txPackets: Number(s[0]), txBytes: Number(s[1]), rxPackets: Number(s[2]), rxBytes: Number(s[3]) };
}

// Pod fast path (bpf/flannel.h: fl_pod_*, fl_fast_*)
export const FAST_RESULTS = ['fast_tx', 'fast_rx', 'pass_not_pod', 'pass_new_flow', 'pass_nat', 'pass_other', 'pass_ct_error'] as const;
export type FastResult = (typeof FAST_RESULTS)[number];
export const FAST_ON = 1;
/** UNSAFE, for tests only: the fast path stops asking conntrack (replies of NAT'd flows break) */
export const FAST_NO_CT = 2;

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

/** struct fl_pod_key { u8 ip[4]; } */
export const podKey = (ip: string) => ipBytes(ip);
export const decodePodKey = (b: Buffer) => formatIp4(b.readUInt32BE(0));

/** struct fl_pod_val { u32 ifindex; u8 pod_mac[6]; u8 gw_mac[6]; u8 host_mac[6]; u16 flags; } */
export function podVal(p: Omit<LocalPod, 'ip'>): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt32LE(p.ifindex, 0);
  writeMac(p.podMAC, b, 4);
  writeMac(p.gwMAC, b, 10);
  writeMac(p.hostMAC, b, 16);
  return b;
}
export function decodePodVal(b: Buffer): Omit<LocalPod, 'ip'> {
  return { ifindex: b.readUInt32LE(0), podMAC: macStr(b.subarray(4, 10)), gwMAC: macStr(b.subarray(10, 16)), hostMAC: macStr(b.subarray(16, 22)) };
}

/** struct fl_fast_cfg { u32 vtep_ifindex; u32 flags; } */
export function fastCfgVal(c: { vtepIfindex: number; flags: number }): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(c.vtepIfindex, 0);
  b.writeUInt32LE(c.flags, 4);
  return b;
}
export const decodeFastCfg = (b: Buffer) => ({ vtepIfindex: b.readUInt32LE(0), flags: b.readUInt32LE(4) });

/**
 * Maps that hold only counters. When a new version changes one's shape (more reasons, other flags),
 * libbpf refuses to reuse the old pin and the load would fail: these pins are replaced instead (the
 * counts restart), while the maps holding peers and pods are never thrown away.
 */
export const COUNTER_MAPS = ['fl_stats', 'fl_fast_stats', 'fl_peer_stats'];
