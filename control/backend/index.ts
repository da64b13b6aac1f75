// Which backend a network config asks for. With IPv6 on, each backend runs an IPv6 half beside its
// IPv4 half (dual-stack.ts), or alone on an IPv6-only network.
import type { Backend, BackendContext } from './types.js';
import { VxlanBackend, type VxlanModeOptions } from './vxlan/index.js';
import { ClassicVxlan6Backend } from './vxlan/classic6.js';
import { HostGwBackend } from './hostgw/hostgw.js';
import { HostGw6Backend } from './hostgw/hostgw6.js';
import { UdpBackend } from './udp/udp.js';
import { DualStackBackend } from './dual-stack.js';

function ipv4Backend(ctx: BackendContext, bpf: VxlanModeOptions): Backend {
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

function ipv6Backend(ctx: BackendContext): Backend {
  const type = ctx.cfg.backend.Type;
  switch (type) {
    case 'vxlan':
      return new ClassicVxlan6Backend(ctx);
    case 'host-gw':
      return new HostGw6Backend(ctx);
    case 'udp':
      // flannel's udp backend is IPv4 only too
      throw new Error('the udp backend carries IPv4 only (as in flannel): with EnableIPv6 use "vxlan" or "host-gw"');
    default:
      throw new Error(`unknown backend type ${JSON.stringify(type)} in the network config: use "vxlan", "host-gw" or "udp"`);
  }
}

export function createBackend(ctx: BackendContext, bpf: VxlanModeOptions): Backend {
  if (!ctx.cfg.enableIPv6) return ipv4Backend(ctx, bpf);
  // vxlan chooses for both families at once: BPF mode carries IPv6 through its one external device
  // (which holds the VXLAN port for both families, so flannel-v6.1 could not run beside it), classic
  // mode runs flannel.1 and flannel-v6.1 (IPv6-only: flannel-v6.1 alone)
  if (ctx.cfg.backend.Type === 'vxlan') return ipv4Backend(ctx, bpf);
  const v6 = ipv6Backend(ctx);
  return new DualStackBackend(ctx.cfg.enableIPv4 ? ipv4Backend(ctx, bpf) : undefined, v6);
}
