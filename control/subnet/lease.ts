// Lease values as flannel writes them in etcd, byte for byte:
// {"PublicIP":"192.168.56.12","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"..."}}
// Go's encoder omits BackendType and BackendData when empty (udp and host-gw leases), keeps PublicIPv6 as null.
// A dual-stack node adds "PublicIPv6":"fd00::12" and "BackendV6Data" (its flannel-v6.1 VTEP); an IPv6-only
// node's PublicIP is "0.0.0.0" (Go's zero IP4) and it has no BackendData.
import { formatIp4, notAHostAddress, parseIp4, type Subnet } from './ip4.js';
import { formatIp6, notAHostAddress6, parseIp6, type Subnet6 } from './ip6.js';

export interface LeaseAttrs {
  publicIP: string;
  publicIPv6: string | null;
  backendType: string;
  backendData?: unknown;
  /** the vxlan backend's flannel-v6.1 VTEP of a node with IPv6 */
  backendV6Data?: unknown;
}

export interface Lease {
  /** {0.0.0.0, 0} on an IPv6-only node (lease-key.ts hasIPv4) */
  subnet: Subnet;
  ipv6Subnet?: Subnet6;
  attrs: LeaseAttrs;
  /** undefined: a reservation (key without TTL), never expires */
  expiration?: Date;
  /** the etcd lease ID bound to the key, "0" for none */
  etcdLease?: string;
}

export class LeaseFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LeaseFormatError';
  }
}

export function encodeAttrs(a: LeaseAttrs): string {
  const o: Record<string, unknown> = { PublicIP: a.publicIP, PublicIPv6: a.publicIPv6 };
  if (a.backendType) o.BackendType = a.backendType;
  if (a.backendData !== undefined && a.backendData !== null) o.BackendData = a.backendData;
  if (a.backendV6Data !== undefined && a.backendV6Data !== null) o.BackendV6Data = a.backendV6Data;
  return JSON.stringify(o);
}

/** Lenient where flannel's older writers differ (no PublicIPv6, no VNI), strict where a value would be unusable. */
export function decodeAttrs(text: string): LeaseAttrs {
  if (text.length > 64 * 1024) throw new LeaseFormatError(`lease value is ${text.length} bytes, more than any lease can need`);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new LeaseFormatError(`lease value is not JSON: ${(e as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new LeaseFormatError('lease value is not a JSON object');
  const o = raw as Record<string, unknown>;
  const publicIP = typeof o.PublicIP === 'string' ? parseIp4(o.PublicIP) : undefined;
  if (publicIP === undefined) throw new LeaseFormatError(`lease PublicIP is not an IPv4 address: ${JSON.stringify(o.PublicIP)?.slice(0, 64)}`);
  const v6raw = o.PublicIPv6 ?? null;
  if (v6raw !== null && typeof v6raw !== 'string') throw new LeaseFormatError('lease PublicIPv6 is neither null nor a string');
  let publicIPv6: string | null = null;
  if (v6raw !== null) {
    const v6 = parseIp6(v6raw);
    if (v6 === undefined) throw new LeaseFormatError(`lease PublicIPv6 is not an IPv6 address: ${JSON.stringify(v6raw).slice(0, 64)}`);
    const notHost6 = notAHostAddress6(v6);
    if (notHost6) throw new LeaseFormatError(`lease PublicIPv6 ${v6raw} ${notHost6}: no node can be reached there`);
    publicIPv6 = formatIp6(v6);
  }
  // an IPv6-only node has no IPv4 address: flannel writes Go's zero IP4
  const notHost = publicIP === 0 && publicIPv6 !== null ? undefined : notAHostAddress(publicIP);
  if (notHost) throw new LeaseFormatError(`lease PublicIP ${String(o.PublicIP)} ${notHost}: no node can be reached there`);
  const bt = o.BackendType ?? '';
  if (typeof bt !== 'string') throw new LeaseFormatError('lease BackendType is not a string');
  const attrs: LeaseAttrs = { publicIP: formatIp4(publicIP), publicIPv6, backendType: bt };
  if (o.BackendData !== undefined && o.BackendData !== null) attrs.backendData = o.BackendData;
  if (o.BackendV6Data !== undefined && o.BackendV6Data !== null) attrs.backendV6Data = o.BackendV6Data;
  return attrs;
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

export interface VxlanBackendData {
  vni: number;
  vtepMAC: string;
}

/**
 * The vxlan backend's part of a lease (BackendData, or BackendV6Data for the IPv6 VTEP); older flannel
 * versions omit VNI (meaning 1).
 */
export function decodeVxlanData(attrs: LeaseAttrs, family: 4 | 6 = 4): VxlanBackendData {
  const d = family === 4 ? attrs.backendData : attrs.backendV6Data;
  const field = family === 4 ? 'BackendData' : 'BackendV6Data';
  if (typeof d !== 'object' || d === null || Array.isArray(d)) throw new LeaseFormatError(`vxlan lease has no ${field} object`);
  const o = d as Record<string, unknown>;
  const vni = o.VNI ?? 1;
  if (typeof vni !== 'number' || !Number.isInteger(vni) || vni < 0 || vni > 0xffffff) throw new LeaseFormatError(`vxlan lease VNI is invalid: ${JSON.stringify(vni)}`);
  if (typeof o.VtepMAC !== 'string') throw new LeaseFormatError('vxlan lease has no VtepMAC');
  const mac = o.VtepMAC.toLowerCase();
  if (!MAC.test(mac)) throw new LeaseFormatError(`vxlan lease VtepMAC is not a MAC address: ${JSON.stringify(o.VtepMAC).slice(0, 64)}`);
  const first = parseInt(mac.slice(0, 2), 16);
  // a multicast or all-zero MAC cannot be a VTEP: programming it would flood or blackhole
  if (first & 1 || mac === '00:00:00:00:00:00') throw new LeaseFormatError(`vxlan lease VtepMAC ${mac} is not a unicast address`);
  return { vni, vtepMAC: mac };
}

/**
 * The VTEP MAC a lease claims, lower-cased, whatever its backend (undefined when it names none). The
 * watch needs it before any backend parses the lease: the VTEP map and the classic FDB are keyed by MAC,
 * so two leases with one MAC would steer each other's traffic.
 */
export function claimedVtepMAC(attrs: LeaseAttrs, family: 4 | 6 = 4): string | undefined {
  const d = family === 4 ? attrs.backendData : attrs.backendV6Data;
  if (typeof d !== 'object' || d === null || Array.isArray(d)) return undefined;
  const mac = (d as Record<string, unknown>).VtepMAC;
  return typeof mac === 'string' ? mac.toLowerCase() : undefined;
}

export function encodeVxlanData(d: VxlanBackendData): { VNI: number; VtepMAC: string } {
  return { VNI: d.vni, VtepMAC: d.vtepMAC };
}

/** A peer's lease appeared (or changed) or went: what the subnet manager hands the backend. */
export type LeaseEvent = { type: 'added'; lease: Lease } | { type: 'removed'; lease: Lease };
