// host-gw: one route per peer subnet via the peer's public IP on the underlay interface. Needs every
// node on one L2 segment, so a node behind NAT (public IP not on the interface) is refused.
import { LeaseFormatError, type Lease } from '../../subnet/lease.js';
import { contains, formatCidr, formatIp4, overlaps, parseIp4, type Subnet } from '../../subnet/ip4.js';
import { execBatch, listRoutes, type NetlinkOp } from '../../kernel/netlink.js';
import { PeerProgrammer, type Entry } from '../peer-programmer.js';
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

  /** Routes that look like host-gw's: a gateway, on our interface, a SubnetLen-sized subnet of Network. */
  private async currentEntries(): Promise<Entry<NetlinkOp>[]> {
    const dev = this.ctx.ext.iface.index;
    const { network, subnetLen } = this.ctx.cfg;
    const out: Entry<NetlinkOp>[] = [];
    for (const r of await listRoutes(undefined, { dev })) {
      const ip = parseIp4(r.dst);
      if (!r.gateway || ip === undefined || r.dstLen !== subnetLen || !contains(network, ip)) continue;
      if (this.own && overlaps(this.own, { ip, len: r.dstLen })) continue;
      out.push({
        key: `route ${r.dst}/${r.dstLen}`,
        value: `via ${r.gateway} dev ${r.dev}`,
        add: { type: 'route', action: 'replace', dst: r.dst, dstLen: r.dstLen },
        del: { type: 'route', action: 'delete', dst: r.dst, dstLen: r.dstLen, dev },
      });
    }
    return out;
  }
}
