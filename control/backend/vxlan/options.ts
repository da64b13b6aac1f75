// The vxlan backend's options in the network config (Backend.VNI, Port, MTU, Learning, DirectRouting), shared by both
// modes; flannel's names and defaults.
import { ConfigError } from '../../subnet/config.js';

export const DEFAULT_VXLAN_PORT = 8472;

export interface VxlanOptions {
  vni: number;
  port: number;
  learning: boolean;
  /** Backend.MTU: the underlay's MTU, as in flannel; flannel.<VNI> gets 50 bytes less (see vxlanDeviceMtu) */
  mtu?: number;
  /** Backend.DirectRouting: plain routes to peers reachable without a gateway (direct-routing.ts) */
  directRouting: boolean;
}

/** VXLAN's overhead: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14 */
export const VXLAN_OVERHEAD = 50;

/**
 * flannel.<VNI>'s MTU, and so FLANNEL_MTU: Backend.MTU (flannel's default: the external interface's
 * MTU) less the VXLAN overhead, as flannel's vxlan backend computes it. A node of ours and a flannel
 * node with the same config give their pods the same MTU.
 */
export const vxlanDeviceMtu = (o: VxlanOptions, underlayMtu: number) => (o.mtu ?? underlayMtu) - VXLAN_OVERHEAD;

export function vxlanOptions(backend: Record<string, unknown>): VxlanOptions {
  const num = (k: string, def: number, max: number) => {
    const v = backend[k] ?? def;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) throw new ConfigError(`Backend.${k}`, `must be a whole number from 0 to ${max}, got ${JSON.stringify(v)}`);
    return v;
  };
  const vni = num('VNI', 1, 0xffffff);
  const port = num('Port', 0, 65535) || DEFAULT_VXLAN_PORT; // 0 means the kernel default, 8472 on Linux
  const mtu = num('MTU', 0, 65535);
  const directRouting = backend.DirectRouting ?? false;
  if (typeof directRouting !== 'boolean') throw new ConfigError('Backend.DirectRouting', `must be true or false, got ${JSON.stringify(directRouting)}`);
  // flannel's VXLAN group-based policy extension: refused rather than silently dropped
  if (backend.GBP === true) throw new ConfigError('Backend.GBP', 'not supported by this agent');
  if (mtu && mtu < VXLAN_OVERHEAD + 68) throw new ConfigError('Backend.MTU', `${mtu} is the underlay's MTU (flannel.1 gets ${VXLAN_OVERHEAD} bytes less): it must be at least ${VXLAN_OVERHEAD + 68}`);
  return { vni, port, learning: backend.Learning === true, directRouting, ...(mtu ? { mtu } : {}) };
}
