// host-gw: one route per peer subnet via the peer's public IP on the underlay interface. Needs every
// node on one L2 segment, so a node behind NAT (public IP not on the interface) is refused.
import { LeaseFormatError, type Lease } from '../../subnet/lease.js';
import { formatCidr, formatIp4, type Subnet } from '../../subnet/ip4.js';
import { execBatch, listRoutes, type NetlinkOp } from '../../kernel/netlink.js';
import { PeerProgrammer, type Entry } from '../peer-programmer.js';
import { peerRouteEntries } from '../peer-routes.js';
import type { Backend, BackendContext, BackendDescription } from '../types.js';
import { deviceCheck } from '../health.js';

export class HostGwBackend implements Backend {
  readonly leaseType = 'host-gw';
  private readonly programmer: PeerProgrammer<NetlinkOp>;
  private own?: Subnet;

  constructor(private readonly ctx: BackendContext) {
    this.programmer = new PeerProgrammer({ entriesFor: (l) => this.entriesFor(l), currentEntries: () => this.currentEntries(), apply: execBatch }, ctx.log);
  }

  prepare() {
    const { ext } = this.ctx;
    if (ext.publicIP !== ext.ifaceAddr)
      return Promise.reject(
        new Error(`host-gw needs the public IP on the interface: --public-ip ${ext.publicIP} differs from ${ext.iface.name}'s address ${ext.ifaceAddr} (NAT is not supported by host-gw)`),
      );
    return Promise.resolve({ attrs: { publicIP: ext.publicIP, publicIPv6: null, backendType: 'host-gw' }, mtu: ext.iface.mtu });
  }

  start(own: Lease) {
    this.own = own.subnet;
    return Promise.resolve();
  }

  handle = (events: Parameters<Backend['handle']>[0]) => this.programmer.handle(events);
  reconcile = (peers: Lease[]) => this.programmer.reconcile(peers);

  checks = async () => [await deviceCheck(this.ctx.ext.iface.name)];

  describe(): BackendDescription {
    return { backend: 'host-gw', device: this.ctx.ext.iface.name, peers: this.programmer.peerCount(), ...this.programmer.stats };
  }

  private entriesFor(lease: Lease): Entry<NetlinkOp>[] {
    if (lease.attrs.backendType !== 'host-gw') throw new LeaseFormatError(`peer runs backend ${JSON.stringify(lease.attrs.backendType)}, not host-gw`);
    const dev = this.ctx.ext.iface.index;
    const via = lease.attrs.publicIP;
    const dst = formatIp4(lease.subnet.ip);
    return [
      {
        key: `route ${formatCidr(lease.subnet)}`,
        value: `via ${via} dev ${dev}`,
        add: { type: 'route', action: 'replace', dst, dstLen: lease.subnet.len, gateway: via, dev },
        del: { type: 'route', action: 'delete', dst, dstLen: lease.subnet.len, dev },
      },
    ];
  }

  /** Routes that look like host-gw's: peer routes (peer-routes.ts) on our interface. */
  private async currentEntries(): Promise<Entry<NetlinkOp>[]> {
    const { network, subnetLen } = this.ctx.cfg;
    return peerRouteEntries(await listRoutes(undefined, { dev: this.ctx.ext.iface.index }), network, subnetLen, this.own, 'route');
  }
}
