// Which interface carries the overlay and which address the node publishes, as flannel decides it:
// --iface entries in order (name or IP), then --iface-regex entries (matched against IPs, then names),
// then --iface-can-reach (the interface and source address of `ip route get <ip>`), else, with --public-ip, the interface that holds that address (none: an error, as flannel's
// LookupExtIface(publicIP) gives), else the interface of the default route. Public IP: --public-ip,
// else the interface's first IPv4.
import { AF_INET, listAddrs, listLinks, listRoutes, routeGet, type Addr, type Link, type Route } from '../kernel/netlink.js';
import { parseIp4 } from '../subnet/ip4.js';

export interface ExternalInterface {
  iface: Link;
  /** the interface's own IPv4 address: the VXLAN local address */
  ifaceAddr: string;
  /** the address published in the lease (differs from ifaceAddr behind NAT) */
  publicIP: string;
}

export interface IfaceOptions {
  iface: string[];
  ifaceRegex: string[];
  publicIP?: string;
  /** flannel's --iface-can-reach: an IPv4 address the overlay must reach */
  ifaceCanReach?: string;
}

/** What `ip route get <--iface-can-reach>` answered: the route, or why there is none. */
export type Reach = { route: Route } | { error: string };

export class InterfaceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InterfaceError';
  }
}

export function chooseInterface(links: Link[], addrs: Addr[], routes: Route[], o: IfaceOptions, reach?: Reach): ExternalInterface {
  const v4 = (l: Link) => addrs.filter((a) => a.index === l.index && a.family === AF_INET);
  const result = (iface: Link, addr?: string): ExternalInterface => {
    const ifaceAddr = addr ?? v4(iface)[0]?.address;
    if (!ifaceAddr) throw new InterfaceError(`interface ${iface.name} has no IPv4 address`);
    return { iface, ifaceAddr, publicIP: o.publicIP ?? ifaceAddr };
  };

  for (const spec of o.iface) {
    if (parseIp4(spec) !== undefined) {
      const a = addrs.find((x) => x.family === AF_INET && x.address === spec);
      const l = a && links.find((x) => x.index === a.index);
      if (l) return result(l, spec);
    } else {
      const l = links.find((x) => x.name === spec);
      if (l) return result(l);
    }
  }
  for (const spec of o.ifaceRegex) {
    let re: RegExp;
    try {
      re = new RegExp(spec);
    } catch (e) {
      throw new InterfaceError(`--iface-regex ${JSON.stringify(spec)} is not a valid regular expression: ${(e as Error).message}`);
    }
    const a = addrs.find((x) => x.family === AF_INET && re.test(x.address));
    const byIp = a && links.find((x) => x.index === a.index);
    if (byIp) return result(byIp, a.address);
    const byName = links.find((x) => x.name !== 'lo' && re.test(x.name) && v4(x).length > 0);
    if (byName) return result(byName);
  }
  if (o.ifaceCanReach) {
    if (!reach || 'error' in reach) throw new InterfaceError(`--iface-can-reach ${o.ifaceCanReach}: no route: ${reach && 'error' in reach ? reach.error : 'not looked up'}`);
    const l = links.find((x) => x.index === reach.route.dev);
    if (!l) throw new InterfaceError(`--iface-can-reach ${o.ifaceCanReach}: the route's device #${reach.route.dev} is gone`);
    return result(l, reach.route.prefsrc);
  }
  if (o.iface.length || o.ifaceRegex.length) throw new InterfaceError(`no interface matches --iface ${JSON.stringify(o.iface)} / --iface-regex ${JSON.stringify(o.ifaceRegex)}`);
  if (o.publicIP) {
    const a = addrs.find((x) => x.family === AF_INET && x.address === o.publicIP);
    const l = a && links.find((x) => x.index === a.index);
    if (!l)
      throw new InterfaceError(
        `--public-ip ${o.publicIP} is on no interface of this node: without --iface or --iface-regex the interface is the one that holds the public IP, as in flannel (behind NAT, name the interface with --iface)`,
      );
    return result(l, o.publicIP);
  }

  const def = routes.find((r) => r.dstLen === 0 && r.dev > 0);
  const l = def && links.find((x) => x.index === def.dev);
  if (!l) throw new InterfaceError('no default route: name the interface with --iface');
  return result(l);
}

export async function lookupExternalInterface(o: IfaceOptions): Promise<ExternalInterface> {
  const reachOf = async (ip: string): Promise<Reach> => {
    try {
      return { route: await routeGet(ip) };
    } catch (e) {
      return { error: (e as Error).message };
    }
  };
  const [links, addrs, routes, reach] = await Promise.all([listLinks(), listAddrs(AF_INET), listRoutes(AF_INET), o.ifaceCanReach ? reachOf(o.ifaceCanReach) : undefined]);
  return chooseInterface(links, addrs, routes, o, reach);
}
