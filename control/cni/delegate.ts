// The flannel CNI plugin's logic, as flannel's plugin does it: read the subnet file, render a
// delegate config for the standard bridge plugin with host-local IPAM, honour `delegate` overrides.
// Pure functions only; control/cni/plugin.ts does the I/O.
import { formatCidr, parseCidr } from '../subnet/ip4.js';
import { formatCidr6, formatIp6, parseCidr6, parseIp6 } from '../subnet/ip6.js';
import { parseSubnetFile } from '../subnet/subnet-file.js';

/** what flannel's plugin accepts (libcni's version.All) */
export const SUPPORTED_VERSIONS = ['0.1.0', '0.2.0', '0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'];
/** the version VERSION reports as current, as libcni 1.3 (flannel's plugin) does */
export const CURRENT_VERSION = '1.1.0';

/** a < b for CNI versions ("0.3.1" < "0.4.0"); an unknown version sorts first */
export function versionBefore(a: string, b: string): boolean {
  const n = (v: string) => v.split('.').map(Number);
  const [x, y] = [n(a), n(b)];
  for (let i = 0; i < 3; i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) < (y[i] ?? 0);
  return false;
}

/** CNI error codes (spec): 1 incompatible version, 4 invalid env, 6 decoding failure, 7 invalid config, 11 try again later. */
export class CniError extends Error {
  override name = 'CniError';
  constructor(
    readonly code: number,
    msg: string,
    readonly details = '',
  ) {
    super(msg);
  }
}

export interface SubnetEnv {
  /** FLANNEL_NETWORK: one or more IPv4 networks (comma-separated in a multi-network file), duplicates dropped */
  networks: string[];
  /** the lease as a network (10.244.3.0/24), as flannel's plugin passes it to host-local */
  subnet?: string;
  ipv6Networks: string[];
  ipv6Subnet?: string;
  mtu: number;
  ipMasq: boolean;
}

/** A CIDR of the file as a network (host bits cleared), as Go's net.ParseCIDR gives it to flannel's plugin. */
function cidr(path: string, key: string, text: string, v6: boolean): string {
  const v4net = v6 ? undefined : parseCidr(text);
  const v6net = v6 ? parseCidr6(text) : undefined;
  if (v4net) return formatCidr(v4net);
  if (v6net) return formatCidr6(v6net);
  throw new CniError(7, `subnet file ${path}: ${key} is not an ${v6 ? 'IPv6' : 'IPv4'} CIDR: ${JSON.stringify(text)}`);
}

/**
 * The subnet file as flannel's plugin reads it (loadFlannelSubnetEnv): an IPv4 or an IPv6 network and
 * subnet, or both (dual stack); networks may be comma-separated lists.
 */
export function parseSubnetEnv(text: string, path: string): SubnetEnv {
  const vars = parseSubnetFile(text);
  const list = (key: string, v6: boolean) => [...new Set(vars[key]!.split(',').map((c) => cidr(path, key, c, v6)))];
  const networks = vars.FLANNEL_NETWORK === undefined ? [] : list('FLANNEL_NETWORK', false);
  const ipv6Networks = vars.FLANNEL_IPV6_NETWORK === undefined ? [] : list('FLANNEL_IPV6_NETWORK', true);
  const subnet = vars.FLANNEL_SUBNET === undefined ? undefined : cidr(path, 'FLANNEL_SUBNET', vars.FLANNEL_SUBNET, false);
  const ipv6Subnet = vars.FLANNEL_IPV6_SUBNET === undefined ? undefined : cidr(path, 'FLANNEL_IPV6_SUBNET', vars.FLANNEL_IPV6_SUBNET, true);
  const missing = [
    ...(networks.length || ipv6Networks.length ? [] : ['FLANNEL_NETWORK', 'FLANNEL_IPV6_NETWORK']),
    ...(subnet || ipv6Subnet ? [] : ['FLANNEL_SUBNET', 'FLANNEL_IPV6_SUBNET']),
    ...(vars.FLANNEL_MTU === undefined ? ['FLANNEL_MTU'] : []),
    ...(vars.FLANNEL_IPMASQ === undefined ? ['FLANNEL_IPMASQ'] : []),
  ];
  if (missing.length) throw new CniError(7, `subnet file ${path} is missing ${missing.join(', ')}`);
  const mtu = Number(vars.FLANNEL_MTU);
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new CniError(7, `subnet file ${path}: FLANNEL_MTU is not an MTU: ${vars.FLANNEL_MTU}`);
  return { networks, subnet, ipv6Networks, ipv6Subnet, mtu, ipMasq: vars.FLANNEL_IPMASQ === 'true' };
}

export interface FlannelNetConf {
  cniVersion?: string;
  name: string;
  type: string;
  subnetFile?: string;
  dataDir?: string;
  /** where the agent pins its BPF maps (its --bpf-pin-root); the pod fast path is used when its program is pinned there */
  bpfPinRoot?: string;
  delegate?: Record<string, unknown>;
  ipam?: Record<string, unknown>;
  /** the runtime's capability arguments (ips, mac, portMappings...): passed on to the delegate */
  runtimeConfig?: Record<string, unknown>;
  prevResult?: unknown;
  [k: string]: unknown;
}

export function parseNetConf(text: string): FlannelNetConf {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new CniError(6, 'network config on stdin is not valid JSON', (e as Error).message);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new CniError(6, 'network config on stdin is not a JSON object');
  const n = raw as FlannelNetConf;
  if (typeof n.name !== 'string' || n.name === '') throw new CniError(7, 'network config has no "name"');
  if (n.cniVersion !== undefined && !SUPPORTED_VERSIONS.includes(n.cniVersion))
    throw new CniError(1, `CNI version ${JSON.stringify(n.cniVersion)} is not supported`, `supported: ${SUPPORTED_VERSIONS.join(', ')}`);
  for (const k of ['delegate', 'ipam', 'runtimeConfig'] as const) {
    const v = n[k];
    if (v !== undefined && (typeof v !== 'object' || v === null || Array.isArray(v))) throw new CniError(7, `network config "${k}" must be an object`);
  }
  return n;
}

/** What flannel's cmdAdd refuses in the operator's `delegate`, with its words: flannel sets these itself. */
export function checkDelegate(n: FlannelNetConf): void {
  const d = n.delegate;
  if (!d) return;
  if ('type' in d && typeof d.type !== 'string') throw new CniError(7, "'delegate' dictionary, if present, must have (string) 'type' field");
  if ('name' in d) throw new CniError(7, "'delegate' dictionary must not have 'name' field, it'll be set by flannel");
  if ('ipam' in d) throw new CniError(7, "'delegate' dictionary must not have 'ipam' field, it'll be set by flannel");
}

/** The delegate config, exactly as flannel's plugin renders it (keys the operator set in `delegate` win). */
export function renderDelegate(n: FlannelNetConf, env: SubnetEnv): Record<string, unknown> {
  const d: Record<string, unknown> = { ...(n.delegate ?? {}) };
  if (n.runtimeConfig) d.runtimeConfig = n.runtimeConfig;
  d.name = n.name;
  d.type ??= 'bridge';
  // if flannel is not masquerading, the bridge plugin should
  d.ipMasq ??= !env.ipMasq;
  d.mtu ??= env.mtu;
  if (d.type === 'bridge') d.isGateway ??= true;
  if (n.cniVersion) d.cniVersion = n.cniVersion;
  const ipam: Record<string, unknown> = { ...(n.ipam ?? {}) };
  ipam.type ??= 'host-local';
  ipam.ranges = [...(env.subnet ? [[{ subnet: env.subnet }]] : []), ...(env.ipv6Subnet ? [[{ subnet: env.ipv6Subnet }]] : [])];
  const routes = Array.isArray(ipam.routes) ? [...(ipam.routes as unknown[])] : [];
  for (const dst of [...env.networks, ...env.ipv6Networks]) routes.push({ dst });
  ipam.routes = routes;
  d.ipam = ipam;
  return d;
}

interface ResultIface {
  name?: string;
  mac?: string;
  sandbox?: string;
}
interface ResultIp {
  address?: string;
  interface?: number;
}

/**
 * What the pod fast path needs from the bridge plugin's result: the pod's addresses (its first IPv4 and
 * its first IPv6, IPv4 first; a dual-stack pod has both), its MAC, its host-side veth and the bridge's
 * MAC (the pod's gateway). A reason string when the result has none.
 */
export function podFromResult(result: unknown, bridge: string): { ips: string[]; podMAC: string; hostVeth: string; gwMAC: string } | string {
  const r = result as { interfaces?: ResultIface[]; ips?: ResultIp[] };
  if (!r || !Array.isArray(r.interfaces) || !Array.isArray(r.ips)) return 'the delegate result lists no interfaces or IPs';
  const ifs = r.interfaces;
  const addr = (i: ResultIp) => (typeof i.address === 'string' ? i.address.split('/')[0]! : '');
  const v4 = r.ips.find((i) => parseCidr(`${addr(i)}/32`));
  const v6 = r.ips.find((i) => addr(i).includes(':') && parseCidr6(`${addr(i)}/128`));
  const first = v4 ?? v6;
  if (!first) return 'the pod has no IPv4 or IPv6 address';
  const pod = typeof first.interface === 'number' ? ifs[first.interface] : ifs.find((i) => i.sandbox);
  const br = ifs.find((i) => i.name === bridge && !i.sandbox);
  const host = ifs.find((i) => !i.sandbox && i !== br && i.name);
  if (!pod?.mac || !pod.sandbox) return 'the delegate result has no pod interface with a MAC';
  if (!br?.mac) return `the delegate result has no bridge ${bridge}`;
  if (!host?.name) return 'the delegate result has no host-side veth';
  // an IPv6 address on another interface than the pod's IPv4 one is not this veth's to serve
  const sameIface = (i: ResultIp) => typeof i.interface !== 'number' || ifs[i.interface] === pod;
  const ips = [v4, v6].filter((i): i is ResultIp => i !== undefined && sameIface(i)).map((i) => (i === v6 ? formatIp6(parseIp6(addr(i))!) : addr(i)));
  return { ips, podMAC: pod.mac, hostVeth: host.name, gwMAC: br.mac };
}
