// flannel's etcd key name for a lease: "10.244.1.0-24", and for a dual-stack node
// "10.244.1.0-24&fd00:10:244:1::-64" (pkg/subnet MakeSubnetKey). An IPv6-only node's key carries the
// empty IPv4 subnet, "0.0.0.0-0&fd00:10:244:1::-64", as flannel's zero IP4Net prints.
import { formatCidr, overlaps, parseCidr, subnetKey, type Subnet } from './ip4.js';
import { formatCidr6, formatIp6, overlaps6, parseCidr6, type Subnet6 } from './ip6.js';

/** What names a lease: its IPv4 subnet ({0.0.0.0, 0} on an IPv6-only node) and its IPv6 subnet, if any. */
export interface LeaseSubnets {
  subnet: Subnet;
  ipv6Subnet?: Subnet6;
}

export const NO_IPV4: Subnet = Object.freeze({ ip: 0, len: 0 });

/** The lease holds an IPv4 subnet (false on an IPv6-only node). */
export const hasIPv4 = (l: LeaseSubnets): boolean => l.subnet.len !== 0;

/** Two leases claim a common address in either family: they cannot both be held. */
export const subnetsOverlap = (a: LeaseSubnets, b: LeaseSubnets): boolean =>
  (hasIPv4(a) && hasIPv4(b) && overlaps(a.subnet, b.subnet)) || (a.ipv6Subnet !== undefined && b.ipv6Subnet !== undefined && overlaps6(a.ipv6Subnet, b.ipv6Subnet));

export function leaseKeyName(l: LeaseSubnets): string {
  return l.ipv6Subnet ? `${subnetKey(l.subnet)}&${formatIp6(l.ipv6Subnet.ip)}-${l.ipv6Subnet.len}` : subnetKey(l.subnet);
}

/**
 * The subnets a key names, or undefined. Only canonical names are accepted (host bits zero, Go's
 * formatting of the IPv6 address, no leading zeros), so one subnet never has two keys; "0.0.0.0-0"
 * is accepted only with an IPv6 part.
 */
export function parseLeaseKey(k: string): LeaseSubnets | undefined {
  const amp = k.indexOf('&');
  const v4 = amp < 0 ? k : k.slice(0, amp);
  const dash = v4.lastIndexOf('-');
  if (dash < 0) return undefined;
  const subnet = parseCidr(`${v4.slice(0, dash)}/${v4.slice(dash + 1)}`, true);
  if (!subnet) return undefined;
  if (amp < 0) return subnet.len === 0 ? undefined : { subnet };
  const v6 = k.slice(amp + 1);
  const dash6 = v6.lastIndexOf('-');
  if (dash6 < 0) return undefined;
  const addr = v6.slice(0, dash6),
    len = v6.slice(dash6 + 1);
  if (!/^(0|[1-9]\d{0,2})$/.test(len)) return undefined;
  const ipv6Subnet = parseCidr6(`${addr}/${len}`);
  if (!ipv6Subnet || formatIp6(ipv6Subnet.ip) !== addr) return undefined;
  return { subnet, ipv6Subnet };
}

/** For logs and errors: "10.244.1.0/24", "10.244.1.0/24 fd00:10:244:1::/64" or, IPv6-only, "fd00:10:244:1::/64". */
export function leaseName(l: LeaseSubnets): string {
  const v6 = l.ipv6Subnet ? formatCidr6(l.ipv6Subnet) : undefined;
  if (!hasIPv4(l)) return v6 ?? formatCidr(l.subnet);
  return v6 ? `${formatCidr(l.subnet)} ${v6}` : formatCidr(l.subnet);
}
