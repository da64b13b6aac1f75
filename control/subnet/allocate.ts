// Choosing a free subnet, as flannel does: collect up to 100 free subnets from SubnetMin upwards and
// pick one at random, so that agents starting together rarely race for the same key.
import type { NetworkConfig } from './config.js';
import { formatCidr, formatIp4, overlaps, size, type Subnet } from './ip4.js';
import { formatCidr6, formatIp6, overlaps6, size6, type Subnet6 } from './ip6.js';
import { hasIPv4, NO_IPV4, type LeaseSubnets } from './lease-key.js';

export class NetworkExhaustedError extends Error {
  constructor(cfg: NetworkConfig, taken: number) {
    super(
      `no free subnet left in ${formatCidr(cfg.network)}: every /${cfg.subnetLen} from SubnetMin ${formatIp4(cfg.subnetMin)} to SubnetMax ${formatIp4(cfg.subnetMax)} is leased (${taken} leases); widen the range or remove stale leases`,
    );
    this.name = 'NetworkExhaustedError';
  }
}

export function freeSubnets(cfg: NetworkConfig, taken: Subnet[], limit = 100): Subnet[] {
  const sameLen = new Set<number>();
  const others: Subnet[] = [];
  for (const t of taken) {
    if (t.len === cfg.subnetLen) sameLen.add(t.ip);
    else others.push(t);
  }
  const out: Subnet[] = [];
  const step = size(cfg.subnetLen);
  for (let ip = cfg.subnetMin; ip <= cfg.subnetMax && out.length < limit; ip += step) {
    const sn = { ip, len: cfg.subnetLen };
    if (sameLen.has(ip) || others.some((o) => overlaps(o, sn))) continue;
    out.push(sn);
  }
  return out;
}

export function pickFreeSubnet(cfg: NetworkConfig, taken: Subnet[], random: () => number = Math.random): Subnet {
  const free = freeSubnets(cfg, taken);
  if (free.length === 0) throw new NetworkExhaustedError(cfg, taken.length);
  return free[Math.floor(random() * free.length)]!;
}

export class Ipv6NetworkExhaustedError extends NetworkExhaustedError {
  constructor(cfg: NetworkConfig, taken: number) {
    super(cfg, taken);
    const c = cfg.ipv6!;
    this.message = `no free IPv6 subnet left in ${formatCidr6(c.network)}: every /${c.subnetLen} from IPv6SubnetMin ${formatIp6(c.subnetMin)} to IPv6SubnetMax ${formatIp6(c.subnetMax)} is leased (${taken} leases); widen the range or remove stale leases`;
  }
}

/** flannel's allocation for the IPv6 half: up to 100 free subnets from IPv6SubnetMin upwards. */
export function freeSubnets6(cfg: NetworkConfig, taken: Subnet6[], limit = 100): Subnet6[] {
  const c = cfg.ipv6;
  if (!c) return [];
  const sameLen = new Set<bigint>();
  const others: Subnet6[] = [];
  for (const t of taken) {
    if (t.len === c.subnetLen) sameLen.add(t.ip);
    else others.push(t);
  }
  const out: Subnet6[] = [];
  const step = size6(c.subnetLen);
  for (let ip = c.subnetMin; ip <= c.subnetMax && out.length < limit; ip += step) {
    const sn = { ip, len: c.subnetLen };
    if (sameLen.has(ip) || others.some((o) => overlaps6(o, sn))) continue;
    out.push(sn);
  }
  return out;
}

/**
 * The subnets of a new lease: an IPv4 one unless the network is IPv6-only, an IPv6 one when IPv6 is on.
 * Both must be free, or the node gets nothing (flannel's "out of subnets").
 */
export function pickFreeSubnets(cfg: NetworkConfig, taken: LeaseSubnets[], random: () => number = Math.random): LeaseSubnets {
  const subnet = cfg.enableIPv4
    ? pickFreeSubnet(
        cfg,
        taken.filter(hasIPv4).map((t) => t.subnet),
        random,
      )
    : NO_IPV4;
  if (!cfg.ipv6) return { subnet };
  const taken6 = taken.flatMap((t) => (t.ipv6Subnet ? [t.ipv6Subnet] : []));
  const free = freeSubnets6(cfg, taken6);
  if (free.length === 0) throw new Ipv6NetworkExhaustedError(cfg, taken6.length);
  return { subnet, ipv6Subnet: free[Math.floor(random() * free.length)]! };
}
