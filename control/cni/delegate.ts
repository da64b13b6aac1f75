// The flannel CNI plugin's logic, as flannel's plugin does it: read the subnet file, render a
// delegate config for the standard bridge plugin with host-local IPAM, honour `delegate` overrides.
// Pure functions only; control/cni/plugin.ts does the I/O.
import { formatCidr, parseCidr } from '../subnet/ip4.js';
import { parseSubnetFile } from '../subnet/subnet-file.js';

export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0'];

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
  network: string;
  /** the lease as a network (10.244.3.0/24), as flannel's plugin passes it to host-local */
  subnet: string;
  mtu: number;
  ipMasq: boolean;
}

function networkOf(vars: Record<string, string>, key: string): string {
  const sn = parseCidr(vars[key]!);
  if (!sn) throw new CniError(7, `subnet file: ${key} is not an IPv4 CIDR: ${JSON.stringify(vars[key])}`);
  return formatCidr(sn);
}

export function parseSubnetEnv(text: string, path: string): SubnetEnv {
  const vars = parseSubnetFile(text);
  for (const k of ['FLANNEL_NETWORK', 'FLANNEL_SUBNET', 'FLANNEL_MTU', 'FLANNEL_IPMASQ']) if (vars[k] === undefined) throw new CniError(7, `subnet file ${path} has no ${k}`);
  const mtu = Number(vars.FLANNEL_MTU);
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new CniError(7, `subnet file ${path}: FLANNEL_MTU is not an MTU: ${vars.FLANNEL_MTU}`);
  return {
    network: networkOf(vars, 'FLANNEL_NETWORK'),
    subnet: networkOf(vars, 'FLANNEL_SUBNET'),
    mtu,
    ipMasq: vars.FLANNEL_IPMASQ === 'true',
  };
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
  for (const k of ['delegate', 'ipam'] as const) {
    const v = n[k];
    if (v !== undefined && (typeof v !== 'object' || v === null || Array.isArray(v))) throw new CniError(7, `network config "${k}" must be an object`);
  }
  return n;
}

/** The delegate config, exactly as flannel's plugin renders it (keys the operator set in `delegate` win). */
export function renderDelegate(n: FlannelNetConf, env: SubnetEnv): Record<string, unknown> {
  const d: Record<string, unknown> = { ...(n.delegate ?? {}) };
  d.name = n.name;
  d.type ??= 'bridge';
  // if flannel is not masquerading, the bridge plugin should
  d.ipMasq ??= !env.ipMasq;
  d.mtu ??= env.mtu;
  if (d.type === 'bridge') d.isGateway ??= true;
  if (n.cniVersion) d.cniVersion = n.cniVersion;
  const ipam: Record<string, unknown> = { ...(n.ipam ?? {}) };
  ipam.type ??= 'host-local';
  ipam.ranges = [[{ subnet: env.subnet }]];
  const routes = Array.isArray(ipam.routes) ? [...(ipam.routes as unknown[])] : [];
  routes.push({ dst: env.network });
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
 * What the pod fast path needs from the bridge plugin's result: the pod's IPv4 address and MAC, its
 * host-side veth, the bridge's MAC (the pod's gateway). A reason string when the result has none.
 */
export function podFromResult(result: unknown, bridge: string): { ip: string; podMAC: string; hostVeth: string; gwMAC: string } | string {
  const r = result as { interfaces?: ResultIface[]; ips?: ResultIp[] };
  if (!r || !Array.isArray(r.interfaces) || !Array.isArray(r.ips)) return 'the delegate result lists no interfaces or IPs';
  const ifs = r.interfaces;
  const v4 = r.ips.find((i) => typeof i.address === 'string' && /^\d+\.\d+\.\d+\.\d+\//.test(i.address));
  if (!v4) return 'the pod has no IPv4 address';
  const pod = typeof v4.interface === 'number' ? ifs[v4.interface] : ifs.find((i) => i.sandbox);
  const br = ifs.find((i) => i.name === bridge && !i.sandbox);
  const host = ifs.find((i) => !i.sandbox && i !== br && i.name);
  if (!pod?.mac || !pod.sandbox) return 'the delegate result has no pod interface with a MAC';
  if (!br?.mac) return `the delegate result has no bridge ${bridge}`;
  if (!host?.name) return 'the delegate result has no host-side veth';
  const ip = v4.address!.split('/')[0]!;
  return parseCidr(`${ip}/32`) ? { ip, podMAC: pod.mac, hostVeth: host.name, gwMAC: br.mac } : `not an IPv4 address: ${ip}`;
}
