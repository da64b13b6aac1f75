// Choosing a free subnet, as flannel does: collect up to 100 free subnets from SubnetMin upwards and
// pick one at random, so that agents starting together rarely race for the same key.
import type { NetworkConfig } from './config.js';
import { formatCidr, formatIp4, overlaps, size, type Subnet } from './ip4.js';

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
