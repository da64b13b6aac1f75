// The network config at <prefix>/config, parsed and defaulted exactly as flannel does it
// (pkg/subnet/config.go), with errors that name the field and the value.
import { formatCidr, formatIp4, mask, parseCidr, parseIp4, contains, size, type Subnet } from './ip4.js';
import { contains6, formatCidr6, formatIp6, mask6, parseCidr6, parseIp6, size6, type Subnet6 } from './ip6.js';
import { NO_IPV4, type LeaseSubnets } from './lease-key.js';

export class ConfigError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`network config: ${field}: ${message}`);
    this.name = 'ConfigError';
  }
}

export interface BackendConfig {
  Type: string;
  [option: string]: unknown;
}

/** The IPv6 half of a dual-stack or IPv6-only config (flannel's IPv6Network and its siblings). */
export interface Ipv6Config {
  network: Subnet6;
  subnetLen: number;
  subnetMin: bigint;
  subnetMax: bigint;
}

export interface NetworkConfig {
  /** {0.0.0.0, 0} when EnableIPv4 is false (an IPv6-only network), as flannel's zero IP4Net */
  network: Subnet;
  subnetLen: number;
  subnetMin: number;
  subnetMax: number;
  enableIPv4: boolean;
  enableIPv6: boolean;
  /** present exactly when enableIPv6 */
  ipv6?: Ipv6Config;
  backend: BackendConfig;
  /** flannel's EnableNFTables: masquerade and forward rules in nftables tables instead of iptables chains */
  enableNFTables: boolean;
  /** true when the config had no Backend and flannel's udp fallback applied */
  backendDefaulted: boolean;
  raw: Record<string, unknown>;
}

function ipField(raw: Record<string, unknown>, field: string): number | undefined {
  const v = raw[field];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw new ConfigError(field, `must be an IPv4 address string, got ${JSON.stringify(v)}`);
  const ip = parseIp4(v);
  if (ip === undefined) throw new ConfigError(field, `not an IPv4 address: ${JSON.stringify(v)}`);
  return ip;
}

// The fields flannel's Go structs declare. Go's encoding/json matches a JSON key to a field exactly or,
// failing that, case-insensitively, and a later key for the same field overwrites an earlier one: an
// operator's "network" or "port" works in flannel, so it must work here too.
const CONFIG_FIELDS = ['Network', 'SubnetMin', 'SubnetMax', 'SubnetLen', 'EnableIPv4', 'EnableIPv6', 'IPv6Network', 'IPv6SubnetMin', 'IPv6SubnetMax', 'IPv6SubnetLen', 'Backend', 'EnableNFTables'];
const BACKEND_FIELDS = ['Type', 'VNI', 'Port', 'MTU', 'GBP', 'Learning', 'DirectRouting', 'MacPrefix'];

/** obj with every key that names one of `fields` (in any case) under that field's own spelling. */
function goFieldNames(obj: Record<string, unknown>, fields: readonly string[]): Record<string, unknown> {
  const byLower = new Map(fields.map((f) => [f.toLowerCase(), f]));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) out[byLower.get(k.toLowerCase()) ?? k] = v;
  return out;
}

function ipv4Part(cfg: Record<string, unknown>): Pick<NetworkConfig, 'network' | 'subnetLen' | 'subnetMin' | 'subnetMax'> {
  if (typeof cfg.Network !== 'string') throw new ConfigError('Network', `required, an IPv4 CIDR string such as "10.244.0.0/16", got ${JSON.stringify(cfg.Network)}`);
  const network = parseCidr(cfg.Network);
  if (!network) throw new ConfigError('Network', `not an IPv4 CIDR: ${JSON.stringify(cfg.Network)}`);

  let subnetLen: number;
  if (cfg.SubnetLen !== undefined && cfg.SubnetLen !== 0) {
    if (typeof cfg.SubnetLen !== 'number' || !Number.isInteger(cfg.SubnetLen) || cfg.SubnetLen < 0) throw new ConfigError('SubnetLen', `must be a whole number, got ${JSON.stringify(cfg.SubnetLen)}`);
    subnetLen = cfg.SubnetLen;
    // each host needs room for a tunnel and a bridge address
    if (subnetLen > 30) throw new ConfigError('SubnetLen', `${subnetLen} is too long: it must be at most 30`);
    // the first subnet is never handed out, so the network must split into at least four
    if (subnetLen < network.len + 2)
      throw new ConfigError('SubnetLen', `${subnetLen} is too short for Network ${formatCidr(network)}: it must be at least /${network.len + 2} so the network holds four subnets`);
  } else if (network.len > 28) {
    throw new ConfigError('Network', `${formatCidr(network)} is too small: the minimum useful network is a /28`);
  } else {
    subnetLen = network.len <= 22 ? 24 : network.len + 2;
  }

  const step = size(subnetLen);
  const netEnd = network.ip + size(network.len);
  let subnetMin = ipField(cfg, 'SubnetMin');
  let subnetMax = ipField(cfg, 'SubnetMax');
  if (subnetMin === undefined)
    subnetMin = network.ip + step; // flannel skips the first subnet
  else if (!contains(network, subnetMin)) throw new ConfigError('SubnetMin', `${formatIp4(subnetMin)} is not in Network ${formatCidr(network)}`);
  if (subnetMax === undefined) subnetMax = netEnd - step;
  else if (!contains(network, subnetMax)) throw new ConfigError('SubnetMax', `${formatIp4(subnetMax)} is not in Network ${formatCidr(network)}`);
  if ((subnetMin & mask(subnetLen)) >>> 0 !== subnetMin) throw new ConfigError('SubnetMin', `${formatIp4(subnetMin)} is not on a /${subnetLen} boundary`);
  if ((subnetMax & mask(subnetLen)) >>> 0 !== subnetMax) throw new ConfigError('SubnetMax', `${formatIp4(subnetMax)} is not on a /${subnetLen} boundary`);
  if (subnetMin > subnetMax) throw new ConfigError('SubnetMin', `${formatIp4(subnetMin)} is above SubnetMax ${formatIp4(subnetMax)}`);

  return { network, subnetLen, subnetMin, subnetMax };
}

function ip6Field(raw: Record<string, unknown>, field: string): bigint | undefined {
  const v = raw[field];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw new ConfigError(field, `must be an IPv6 address string, got ${JSON.stringify(v)}`);
  const ip = parseIp6(v);
  if (ip === undefined) throw new ConfigError(field, `not an IPv6 address: ${JSON.stringify(v)}`);
  return ip;
}

// flannel's CheckNetworkConfig for IPv6: the IPv4 rules with 128-bit arithmetic, /64 per node by default
function ipv6Part(cfg: Record<string, unknown>): Ipv6Config {
  if (typeof cfg.IPv6Network !== 'string')
    throw new ConfigError('IPv6Network', `required when EnableIPv6 is true, an IPv6 CIDR string such as "fd00:10:244::/56", got ${JSON.stringify(cfg.IPv6Network)}`);
  const network = parseCidr6(cfg.IPv6Network);
  if (!network) throw new ConfigError('IPv6Network', `not an IPv6 CIDR: ${JSON.stringify(cfg.IPv6Network)}`);
  let subnetLen: number;
  const len = cfg.IPv6SubnetLen;
  if (len !== undefined && len !== 0) {
    if (typeof len !== 'number' || !Number.isInteger(len) || len < 0) throw new ConfigError('IPv6SubnetLen', `must be a whole number, got ${JSON.stringify(len)}`);
    subnetLen = len;
    if (subnetLen > 126) throw new ConfigError('IPv6SubnetLen', `${subnetLen} is too long: it must be at most 126`);
    if (subnetLen < network.len + 2)
      throw new ConfigError('IPv6SubnetLen', `${subnetLen} is too short for IPv6Network ${formatCidr6(network)}: it must be at least /${network.len + 2} so the network holds four subnets`);
  } else if (network.len > 124) {
    throw new ConfigError('IPv6Network', `${formatCidr6(network)} is too small: the minimum useful IPv6 network is a /124`);
  } else {
    subnetLen = network.len <= 62 ? 64 : network.len + 2;
  }
  const step = size6(subnetLen);
  let subnetMin = ip6Field(cfg, 'IPv6SubnetMin');
  let subnetMax = ip6Field(cfg, 'IPv6SubnetMax');
  if (subnetMin === undefined) subnetMin = network.ip + step;
  else if (!contains6(network, subnetMin)) throw new ConfigError('IPv6SubnetMin', `${formatIp6(subnetMin)} is not in IPv6Network ${formatCidr6(network)}`);
  if (subnetMax === undefined) subnetMax = network.ip + size6(network.len) - step;
  else if (!contains6(network, subnetMax)) throw new ConfigError('IPv6SubnetMax', `${formatIp6(subnetMax)} is not in IPv6Network ${formatCidr6(network)}`);
  if ((subnetMin & mask6(subnetLen)) !== subnetMin) throw new ConfigError('IPv6SubnetMin', `${formatIp6(subnetMin)} is not on a /${subnetLen} boundary`);
  if ((subnetMax & mask6(subnetLen)) !== subnetMax) throw new ConfigError('IPv6SubnetMax', `${formatIp6(subnetMax)} is not on a /${subnetLen} boundary`);
  if (subnetMin > subnetMax) throw new ConfigError('IPv6SubnetMin', `${formatIp6(subnetMin)} is above IPv6SubnetMax ${formatIp6(subnetMax)}`);
  return { network, subnetLen, subnetMin, subnetMax };
}

export function parseConfig(text: string): NetworkConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ConfigError('(json)', `not valid JSON: ${(e as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError('(json)', 'must be a JSON object');
  const cfg = goFieldNames(raw as Record<string, unknown>, CONFIG_FIELDS);

  const enableIPv4 = cfg.EnableIPv4 === undefined ? true : cfg.EnableIPv4;
  const enableIPv6 = cfg.EnableIPv6 === undefined ? false : cfg.EnableIPv6;
  if (typeof enableIPv4 !== 'boolean') throw new ConfigError('EnableIPv4', `must be true or false, got ${JSON.stringify(enableIPv4)}`);
  if (typeof enableIPv6 !== 'boolean') throw new ConfigError('EnableIPv6', `must be true or false, got ${JSON.stringify(enableIPv6)}`);
  if (!enableIPv4 && !enableIPv6) throw new ConfigError('EnableIPv4', 'EnableIPv4 and EnableIPv6 are both false: the network has no address family');

  const v4 = enableIPv4 ? ipv4Part(cfg) : { network: NO_IPV4, subnetLen: 0, subnetMin: 0, subnetMax: 0 };
  const ipv6 = enableIPv6 ? ipv6Part(cfg) : undefined;

  let backend: BackendConfig;
  let backendDefaulted = false;
  if (cfg.Backend === undefined || cfg.Backend === null) {
    // flannel's code (not its docs) falls back to udp; a mixed cluster must agree on the backend
    backend = { Type: 'udp' };
    backendDefaulted = true;
  } else {
    if (typeof cfg.Backend !== 'object' || Array.isArray(cfg.Backend)) throw new ConfigError('Backend', `must be an object such as {"Type":"vxlan"}, got ${JSON.stringify(cfg.Backend)}`);
    const b = goFieldNames(cfg.Backend as Record<string, unknown>, BACKEND_FIELDS);
    if (typeof b.Type !== 'string' || b.Type === '') throw new ConfigError('Backend.Type', `required, one of "vxlan", "host-gw", "udp"; got ${JSON.stringify(b.Type)}`);
    // flannel lower-cases the type: "VxLAN" is vxlan
    backend = { ...b, Type: b.Type.toLowerCase() };
  }

  const enableNFTables = cfg.EnableNFTables ?? false;
  if (typeof enableNFTables !== 'boolean') throw new ConfigError('EnableNFTables', `must be true or false, got ${JSON.stringify(enableNFTables)}`);

  return { ...v4, enableIPv4, enableIPv6, ...(ipv6 ? { ipv6 } : {}), backend, enableNFTables, backendDefaulted, raw: cfg };
}

/**
 * Subnets a node may hold under this config: each family's inside [SubnetMin, SubnetMax] and of its
 * SubnetLen; no IPv4 subnet on an IPv6-only network and no IPv6 subnet where IPv6 is off.
 */
export function isCompatible(cfg: NetworkConfig, l: LeaseSubnets): boolean {
  const s = l.subnet;
  const v4 = cfg.enableIPv4 ? s.len === cfg.subnetLen && s.ip >= cfg.subnetMin && s.ip <= cfg.subnetMax && contains(cfg.network, s.ip) : s.len === 0 && s.ip === 0;
  const s6 = l.ipv6Subnet,
    c6 = cfg.ipv6;
  const v6 = c6 ? s6 !== undefined && s6.len === c6.subnetLen && s6.ip >= c6.subnetMin && s6.ip <= c6.subnetMax && contains6(c6.network, s6.ip) : s6 === undefined;
  return v4 && v6;
}
