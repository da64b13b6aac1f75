// The classic vxlan backend, exactly as flannel programs the kernel: flannel.<VNI> with, per peer, a
// permanent neighbour (peer subnet's .0 -> peer VtepMAC), an FDB entry (VtepMAC -> peer public IP) and
// an onlink route (peer subnet via its .0), added in that order so the kernel never has to ARP on
// flannel.1. What it shares with flannel-v6.<VNI> is in classic-common.ts.
import { LeaseFormatError, decodeVxlanData, encodeVxlanData, type Lease } from '../../subnet/lease.js';
import { formatCidr, formatIp4 } from '../../subnet/ip4.js';
import { AF_INET, type NetlinkOp } from '../../kernel/netlink.js';
import type { Entry } from '../peer-programmer.js';
import type { BackendContext } from '../types.js';
import { ensureVxlanDevice } from './device.js';
import { ensureDeviceAddress } from '../device.js';
import { vxlanDeviceMtu } from './options.js';
import type { DirectScope } from './direct-routing.js';
import { ClassicVxlanCommon, tunnelEntries } from './classic-common.js';

export class ClassicVxlanBackend extends ClassicVxlanCommon {
  constructor(ctx: BackendContext) {
    super(ctx, AF_INET);
  }

  protected directScope(): DirectScope {
    const { network, subnetLen } = this.ctx.cfg;
    return { family: 4, network, subnetLen, own: () => this.own?.subnet };
  }

  async prepare() {
    const { ext } = this.ctx;
    this.devSpec = {
      name: `flannel.${this.opts.vni}`,
      vni: this.opts.vni,
      local: ext.ifaceAddr,
      link: ext.iface.index,
      port: this.opts.port,
      learning: this.opts.learning,
      external: false,
      mtu: vxlanDeviceMtu(this.opts, ext.iface.mtu),
    };
    this.dev = await ensureVxlanDevice(this.devSpec, this.ctx.log);
    return {
      attrs: { publicIP: ext.publicIP, publicIPv6: null, backendType: 'vxlan', backendData: encodeVxlanData({ vni: this.opts.vni, vtepMAC: this.dev.mac }) },
      mtu: this.dev.mtu,
    };
  }

  async start(own: Lease) {
    this.own = own;
    await ensureDeviceAddress(this.dev, own.subnet);
  }

  protected entriesFor(lease: Lease): Entry<NetlinkOp>[] {
    if (lease.attrs.backendType !== 'vxlan') throw new LeaseFormatError(`peer runs backend ${JSON.stringify(lease.attrs.backendType)}, not vxlan`);
    const { vni, vtepMAC } = decodeVxlanData(lease.attrs);
    if (vni !== this.opts.vni) throw new LeaseFormatError(`peer uses VNI ${vni}, this network uses ${this.opts.vni}`);
    return tunnelEntries(this.dev.index, { gw: formatIp4(lease.subnet.ip), len: lease.subnet.len, cidr: formatCidr(lease.subnet) }, vtepMAC, lease.attrs.publicIP);
  }
}
