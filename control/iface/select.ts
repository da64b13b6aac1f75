// Which interface carries the overlay and which address the node publishes, as flannel decides it:
// --iface entries in order (name or IP), then --iface-regex entries (matched against IPs, then names),
// then --iface-can-reach (the interface and source address of `ip route get <ip>`), else, with --public-ip, the interface that holds that address (none: an error, as flannel's
// LookupExtIface(publicIP) gives), else the interface of the default route. Public IP: --public-ip,
// else the interface's first IPv4. With IPv6 on, the same interface's first global IPv6 address is the
// IPv6 VTEP's, --public-ipv6 overrides what is published; on an IPv6-only network an --iface address,
// --iface-regex and the default route are IPv6 ones (flannel's LookupExtIface with its IP stack).
import { AF_INET, AF_INET6, listAddrs, listLinks, listRoutes, routeGet, type Addr, type Link, type Route } from '../kernel/netlink.js';
import { parseIp4 } from '../subnet/ip4.js';
import { parseIp6 } from '../subnet/ip6.js';

export interface ExternalInterface {
  iface: Link;
  /** the interface's own IPv4 address: the VXLAN local address ("" on an IPv6-only network) */
  ifaceAddr: string;
  /** the address published in the lease (differs from ifaceAddr behind NAT; "0.0.0.0" on an IPv6-only network, as flannel) */
  publicIP: string;
  /** with IPv6 on: the interface's own global IPv6 address (flannel-v6.1's local address) */
  ifaceAddr6?: string;
  /** with IPv6 on: the IPv6 address published in the lease (--public-ipv6, else ifaceAddr6) */
  publicIPv6?: string;
}

/** Which families the network runs: flannel's IP stack (EnableIPv4 / EnableIPv6). */
export type IpStack = 'ipv4' | 'dual' | 'ipv6';

export interface IfaceOptions {
  iface: string[];
  ifaceRegex: string[];
  publicIP?: string;
  /** flannel's --public-ipv6 */
  publicIPv6?: string;
  /** default ipv4 */
  stack?: IpStack;
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
  const stack = o.stack ?? 'ipv4';
  const v4 = (l: Link) => addrs.filter((a) => a.index === l.index && a.family === AF_INET);
  // a global address (scope universe): a link-local one needs a zone no lease can carry
  const v6 = (l: Link) => addrs.filter((a) => a.index === l.index && a.family === AF_INET6 && a.scope === 0);
  const usable = (l: Link) => (stack === 'ipv6' ? v6(l) : v4(l)).length > 0;
  const result = (iface: Link, addr?: string, addr6?: string): ExternalInterface => {
    let out: ExternalInterface = { iface, ifaceAddr: '', publicIP: '0.0.0.0' };
    if (stack !== 'ipv6') {
      const ifaceAddr = addr ?? v4(iface)[0]?.address;
      if (!ifaceAddr) throw new InterfaceError(`interface ${iface.name} has no IPv4 address`);
      out = { iface, ifaceAddr, publicIP: o.publicIP ?? ifaceAddr };
    }
    if (stack !== 'ipv4') {
      const ifaceAddr6 = addr6 ?? v6(iface)[0]?.address;
      if (!ifaceAddr6) throw new InterfaceError(`interface ${iface.name} has no global IPv6 address, and the network config enables IPv6`);
      out.ifaceAddr6 = ifaceAddr6;
      out.publicIPv6 = o.publicIPv6 ?? ifaceAddr6;
    }
    return out;
  };
  const byAddr = (spec: string): ExternalInterface | undefined => {
    const six = parseIp6(spec) !== undefined;
    const a = addrs.find((x) => x.family === (six ? AF_INET6 : AF_INET) && x.address === spec);
    const l = a && links.find((x) => x.index === a.index);
    return l && (six ? result(l, undefined, spec) : result(l, spec));
  };

  for (const spec of o.iface) {
    if (parseIp4(spec) !== undefined || parseIp6(spec) !== undefined) {
      const r = byAddr(spec);
      if (r) return r;
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
    const a = addrs.find((x) => (x.family === AF_INET || (x.family === AF_INET6 && x.scope === 0)) && re.test(x.address));
    const byIp = a && byAddr(a.address);
    if (byIp) return byIp;
    const byName = links.find((x) => x.name !== 'lo' && re.test(x.name) && usable(x));
    if (byName) return result(byName);
  }
  if (o.ifaceCanReach) {
    if (!reach || 'error' in reach) throw new InterfaceError(`--iface-can-reach ${o.ifaceCanReach}: no route: ${reach && 'error' in reach ? reach.error : 'not looked up'}`);
    const l = links.find((x) => x.index === reach.route.dev);
    if (!l) throw new InterfaceError(`--iface-can-reach ${o.ifaceCanReach}: the route's device #${reach.route.dev} is gone`);
    const six = reach.route.prefsrc !== undefined && parseIp6(reach.route.prefsrc) !== undefined;
    return six ? result(l, undefined, reach.route.prefsrc) : result(l, reach.route.prefsrc);
  }
  if (o.iface.length || o.ifaceRegex.length) throw new InterfaceError(`no interface matches --iface ${JSON.stringify(o.iface)} / --iface-regex ${JSON.stringify(o.ifaceRegex)}`);
  const pub = stack === 'ipv6' ? o.publicIPv6 : o.publicIP;
  if (pub) {
    const r = byAddr(pub);
    const flag = stack === 'ipv6' ? '--public-ipv6' : '--public-ip';
    if (!r)
      throw new InterfaceError(
        `${flag} ${pub} is on no interface of this node: without --iface or --iface-regex the interface is the one that holds the public IP, as in flannel (behind NAT, name the interface with --iface)`,
      );
    return r;
  }

  // routes: the IPv6 table on an IPv6-only network, else the IPv4 one
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
  const six = o.stack === 'ipv6';
  const [links, addrs4, addrs6, routes, reach] = await Promise.all([
    listLinks(),
    listAddrs(AF_INET),
    (o.stack ?? 'ipv4') === 'ipv4' ? [] : listAddrs(AF_INET6),
    listRoutes(six ? AF_INET6 : AF_INET),
    o.ifaceCanReach ? reachOf(o.ifaceCanReach) : undefined,
  ]);
  return chooseInterface(links, [...addrs4, ...addrs6], routes, o, reach);
}
