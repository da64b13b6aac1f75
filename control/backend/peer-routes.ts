// Plain routes to peer subnets, as host-gw and vxlan's DirectRouting both write them
// (`<subnet> via <PublicIP>`): which routes in the kernel are such routes, as peer-programmer entries.
import type { NetlinkOp, Route } from '../kernel/netlink.js';
import { contains, overlaps, parseIp4, type Subnet } from '../subnet/ip4.js';
import { contains6, overlaps6, parseIp6, type Subnet6 } from '../subnet/ip6.js';
import type { Entry } from './peer-programmer.js';

/**
 * The routes that look like a peer's: a gateway, a SubnetLen-sized subnet of the network, not our own
 * subnet. `key` names the entries (each backend keeps its own key space).
 */
export function peerRouteEntries(routes: Route[], network: Subnet, subnetLen: number, own: Subnet | undefined, key: string): Entry<NetlinkOp>[] {
  return routes
    .filter((r) => {
      const ip = parseIp4(r.dst);
      return r.gateway && ip !== undefined && r.dstLen === subnetLen && contains(network, ip) && !(own && overlaps(own, { ip, len: r.dstLen }));
    })
    .map((r) => asEntry(r, key));
}

/** The same for IPv6 routes: an IPv6SubnetLen subnet of IPv6Network, not our IPv6 subnet. */
export function peerRoute6Entries(routes: Route[], network: Subnet6, subnetLen: number, own: Subnet6 | undefined, key: string): Entry<NetlinkOp>[] {
  return routes
    .filter((r) => {
      const ip = parseIp6(r.dst);
      return r.gateway && ip !== undefined && r.dstLen === subnetLen && contains6(network, ip) && !(own && overlaps6(own, { ip, len: r.dstLen }));
    })
    .map((r) => asEntry(r, key));
}

function asEntry(r: Route, key: string): Entry<NetlinkOp> {
  return {
    key: `${key} ${r.dst}/${r.dstLen}`,
    value: `via ${r.gateway} dev ${r.dev}`,
    add: { type: 'route', action: 'replace', dst: r.dst, dstLen: r.dstLen },
    del: { type: 'route', action: 'delete', dst: r.dst, dstLen: r.dstLen, dev: r.dev },
  };
}
