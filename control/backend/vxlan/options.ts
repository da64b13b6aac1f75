// The vxlan backend's options in the network config (Backend.VNI, Port, MTU, Learning), shared by both
// modes; flannel's names and defaults.
import { ConfigError } from '../../subnet/config.js';

export const DEFAULT_VXLAN_PORT = 8472;

export interface VxlanOptions {
  vni: number;
  port: number;
  learning: boolean;
  mtu?: number;
}

export function vxlanOptions(backend: Record<string, unknown>): VxlanOptions {
  const num = (k: string, def: number, max: number) => {
    const v = backend[k] ?? def;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) throw new ConfigError(`Backend.${k}`, `must be a whole number from 0 to ${max}, got ${JSON.stringify(v)}`);
    return v;
  };
  const vni = num('VNI', 1, 0xffffff);
  const port = num('Port', 0, 65535) || DEFAULT_VXLAN_PORT; // 0 means the kernel default, 8472 on Linux
  const mtu = num('MTU', 0, 65535);
  if (backend.DirectRouting === true) throw new ConfigError('Backend.DirectRouting', 'not supported by this agent yet');
  return { vni, port, learning: backend.Learning === true, ...(mtu ? { mtu } : {}) };
}
