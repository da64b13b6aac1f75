// host-gw's IPv6 half, as flannel programs it: one route per peer IPv6 subnet via the peer's
// PublicIPv6 on the underlay interface. Runs beside the IPv4 half (hostgw.ts) on a dual-stack network,
// alone on an IPv6-only one.
import { LeaseFormatError, type Lease } from '../../subnet/lease.js';
import { formatCidr6, formatIp6, type Subnet6 } from '../../subnet/ip6.js';
import { peerRoute6Entries } from '../peer-routes.js';
import { AF_INET6, execBatch, listRoutes, type NetlinkOp } from '../../kernel/netlink.js';
import { PeerProgrammer, type Entry } from '../peer-programmer.js';
import type { Backend, BackendContext, BackendDescription } from '../types.js';
import { deviceCheck } from '../health.js';

export class HostGw6Backend implements Backend {
  readonly leaseType = 'host-gw';
  private readonly programmer: PeerProgrammer<NetlinkOp>;
  private own?: Subnet6;

  constructor(private readonly ctx: BackendContext) {
    this.programmer = new PeerProgrammer({ entriesFor: (l) => this.entriesFor(l), currentEntries: () => this.currentEntries(), apply: execBatch }, ctx.log);
  }

  prepare() {
    const { ext } = this.ctx;
    if (!ext.ifaceAddr6 || !ext.publicIPv6) return Promise.reject(new Error(`IPv6 is enabled but interface ${ext.iface.name} has no IPv6 address`));
    if (ext.publicIPv6 !== ext.ifaceAddr6)
      return Promise.reject(new Error(`host-gw needs the public IPv6 on the interface: --public-ipv6 ${ext.publicIPv6} differs from ${ext.iface.name}'s address ${ext.ifaceAddr6}`));
    return Promise.resolve({ attrs: { publicIP: '0.0.0.0', publicIPv6: ext.publicIPv6, backendType: 'host-gw' }, mtu: ext.iface.mtu });
  }

  start(own: Lease) {
    if (!own.ipv6Subnet) return Promise.reject(new Error('IPv6 is enabled but our lease has no IPv6 subnet'));
    this.own = own.ipv6Subnet;
    return Promise.resolve();
  }

  handle = (events: Parameters<Backend['handle']>[0]) => this.programmer.handle(events);
  reconcile = (peers: Lease[]) => this.programmer.reconcile(peers);
  checks = async () => [await deviceCheck(this.ctx.ext.iface.name)];

  describe(): BackendDescription {
    return { backend: 'host-gw', device: this.ctx.ext.iface.name, peers: this.programmer.peerCount(), ...this.programmer.stats };
  }

  private entriesFor(lease: Lease): Entry<NetlinkOp>[] {
    if (!lease.ipv6Subnet) return [];
    if (lease.attrs.backendType !== 'host-gw') throw new LeaseFormatError(`peer runs backend ${JSON.stringify(lease.attrs.backendType)}, not host-gw`);
    const via = lease.attrs.publicIPv6;
    if (!via) throw new LeaseFormatError('peer has an IPv6 subnet but no PublicIPv6');
    const dev = this.ctx.ext.iface.index;
    const dst = formatIp6(lease.ipv6Subnet.ip);
    return [
      {
        key: `route ${formatCidr6(lease.ipv6Subnet)}`,
        value: `via ${via} dev ${dev}`,
        add: { type: 'route', action: 'replace', dst, dstLen: lease.ipv6Subnet.len, gateway: via, dev },
        del: { type: 'route', action: 'delete', dst, dstLen: lease.ipv6Subnet.len, dev },
      },
    ];
  }

  /** Routes that look like a peer's: a gateway, an IPv6SubnetLen subnet of IPv6Network, not ours. */
  private async currentEntries(): Promise<Entry<NetlinkOp>[]> {
    const c6 = this.ctx.cfg.ipv6!;
    return peerRoute6Entries(await listRoutes(AF_INET6, { dev: this.ctx.ext.iface.index }), c6.network, c6.subnetLen, this.own, 'route');
  }
}
