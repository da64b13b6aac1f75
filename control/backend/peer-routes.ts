// Plain routes to peer subnets, as host-gw and vxlan's DirectRouting both write them
// (`<subnet> via <PublicIP>`): which routes in the kernel are such routes, as peer-programmer entries.
import type { NetlinkOp, Route } from '../kernel/netlink.js';
import { contains, overlaps, parseIp4, type Subnet } from '../subnet/ip4.js';
import type { Entry } from './peer-programmer.js';

/**
 * The routes that look like a peer's: a gateway, a SubnetLen-sized subnet of the network, not our own
 * subnet. `key` names the entries (each backend keeps its own key space).
 */
export function peerRouteEntries(routes: Route[], network: Subnet, subnetLen: number, own: Subnet | undefined, key: string): Entry<NetlinkOp>[] {
  const out: Entry<NetlinkOp>[] = [];
  for (const r of routes) {
    const ip = parseIp4(r.dst);
    if (!r.gateway || ip === undefined || r.dstLen !== subnetLen || !contains(network, ip)) continue;
    if (own && overlaps(own, { ip, len: r.dstLen })) continue;
    out.push({
      key: `${key} ${r.dst}/${r.dstLen}`,
      value: `via ${r.gateway} dev ${r.dev}`,
      add: { type: 'route', action: 'replace', dst: r.dst, dstLen: r.dstLen },
      del: { type: 'route', action: 'delete', dst: r.dst, dstLen: r.dstLen, dev: r.dev },
    });
  }
  return out;
}
