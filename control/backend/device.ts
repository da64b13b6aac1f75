// What every backend with a device of its own does to it (flannel.<VNI> for vxlan, flannel0 for udp):
// the subnet's address, and no IPv6 on an IPv4-only network.
import { writeFileSync } from 'node:fs';
import { AF_INET, AF_INET6, exec, listAddrs, type Link } from '../kernel/netlink.js';
import { formatIp4, type Subnet } from '../subnet/ip4.js';
import { formatIp6, type Subnet6 } from '../subnet/ip6.js';

/** Our subnet's network address as <ip>/32 on the device, and no other IPv4 address, as flannel does. */
export async function ensureDeviceAddress(link: Pick<Link, 'index'>, subnet: Subnet): Promise<void> {
  const want = formatIp4(subnet.ip);
  const addrs = await listAddrs(AF_INET, link.index);
  for (const a of addrs) {
    if (a.address !== want || a.prefixLen !== 32) await exec({ type: 'addr', action: 'delete', dev: link.index, address: a.address, prefixLen: a.prefixLen });
  }
  if (!addrs.some((a) => a.address === want && a.prefixLen === 32)) await exec({ type: 'addr', action: 'replace', dev: link.index, address: want, prefixLen: 32 });
}

/** Tunnels of an IPv4-only network carry no IPv6: its router solicitations would only be dropped. */
export function disableIpv6(device: string): void {
  try {
    writeFileSync(`/proc/sys/net/ipv6/conf/${device}/disable_ipv6`, '1');
  } catch {
    /* IPv6 disabled in this kernel: nothing to do */
  }
}

/** flannel's ConfigureIPv6: our IPv6 subnet's first address as <ip>/128 on the device, no other global IPv6. */
export async function ensureDeviceAddress6(link: Pick<Link, 'index'>, subnet: Subnet6): Promise<void> {
  const want = formatIp6(subnet.ip);
  const addrs = (await listAddrs(AF_INET6, link.index)).filter((a) => a.scope === 0);
  for (const a of addrs) {
    if (a.address !== want || a.prefixLen !== 128) await exec({ type: 'addr', action: 'delete', dev: link.index, address: a.address, prefixLen: a.prefixLen });
  }
  if (!addrs.some((a) => a.address === want && a.prefixLen === 128)) await exec({ type: 'addr', action: 'replace', dev: link.index, address: want, prefixLen: 128 });
}

/**
 * IPv6 on a tunnel of a dual-stack network, without the chatter a normal interface makes: no link-local
 * address (addr_gen_mode 1), no router solicitations. The BPF egress program would find no peer for
 * those multicast packets and count each as no_route.
 */
export async function enableIpv6Quietly(link: Pick<Link, 'index' | 'name'>): Promise<void> {
  const device = link.name;
  const settings: [string, string][] = [
    ['addr_gen_mode', '1'],
    ['router_solicitations', '0'],
    ['disable_ipv6', '0'],
  ];
  for (const [key, value] of settings) {
    try {
      writeFileSync(`/proc/sys/net/ipv6/conf/${device}/${key}`, value);
    } catch {
      /* IPv6 disabled in this kernel: the agent's IPv6 checks say so */
    }
  }
  // the device came up before addr_gen_mode was set: the link-local address it got then goes (with
  // it, the multicast listener reports sent from it)
  for (const a of await listAddrs(AF_INET6, link.index)) if (a.scope === 253) await exec({ type: 'addr', action: 'delete', dev: link.index, address: a.address, prefixLen: a.prefixLen });
}
