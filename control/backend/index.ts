import type { Backend, BackendContext } from './types.js';
import { VxlanBackend, type VxlanModeOptions } from './vxlan/index.js';
import { HostGwBackend } from './hostgw/hostgw.js';
import { UdpBackend } from './udp/udp.js';

export function createBackend(ctx: BackendContext, bpf: VxlanModeOptions): Backend {
  const type = ctx.cfg.backend.Type;
  switch (type) {
    case 'vxlan':
      return new VxlanBackend(ctx, bpf);
    case 'host-gw':
      return new HostGwBackend(ctx);
    case 'udp':
      return new UdpBackend(ctx);
    default:
      throw new Error(`unknown backend type ${JSON.stringify(type)} in the network config: use "vxlan", "host-gw" or "udp"`);
  }
}
