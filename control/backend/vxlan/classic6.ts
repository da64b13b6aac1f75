// The IPv6 half of the vxlan backend, as flannel programs it for a node with IPv6: a second device,
// flannel-v6.<VNI>, VXLAN over the IPv6 underlay (its local address is the node's IPv6, same VNI and
// port as flannel.<VNI>: the kernel keeps one socket per family), and per peer a permanent neighbour
// (peer IPv6 subnet's first address -> the peer's BackendV6Data VtepMAC), an FDB entry (that MAC ->
// PublicIPv6) and an onlink route (peer IPv6 subnet via that address). Runs beside classic IPv4 (with
// --no-bpf or the fallback); the BPF data plane carries IPv6 through flannel.1 itself.
import { LeaseFormatError, decodeVxlanData, encodeVxlanData, type Lease } from '../../subnet/lease.js';
import { formatCidr6, formatIp6 } from '../../subnet/ip6.js';
import { AF_INET6, exec, getLink, type NetlinkOp } from '../../kernel/netlink.js';
import type { Entry } from '../peer-programmer.js';
import type { BackendContext } from '../types.js';
import { ensureVxlanDevice } from './device.js';
import { ensureDeviceAddress6 } from '../device.js';
import { vxlanDeviceMtu } from './options.js';
import type { DirectScope } from './direct-routing.js';
import { ClassicVxlanCommon, tunnelEntries } from './classic-common.js';

/** outer IPv6 (40) + UDP (8) + VXLAN (8) + inner Ethernet (14): the kernel's VXLAN6_HEADROOM */
export const VXLAN6_OVERHEAD = 70;

export class ClassicVxlan6Backend extends ClassicVxlanCommon {
  constructor(ctx: BackendContext) {
    super(ctx, AF_INET6);
  }

  // flannel: a peer whose PublicIPv6 is on our segment gets `<its IPv6 subnet> via <PublicIPv6>` and
  // no neighbour, FDB entry or route on flannel-v6.1
  protected directScope(): DirectScope {
    const c6 = this.ctx.cfg.ipv6!;
    return { family: 6, network: c6.network, subnetLen: c6.subnetLen, own: () => this.own?.ipv6Subnet };
  }

  async prepare() {
    const { ext } = this.ctx;
    if (!ext.ifaceAddr6 || !ext.publicIPv6) throw new Error(`IPv6 is enabled but interface ${ext.iface.name} has no IPv6 address`);
    this.devSpec = {
      name: `flannel-v6.${this.opts.vni}`,
      vni: this.opts.vni,
      local: ext.ifaceAddr6,
      link: ext.iface.index,
      port: this.opts.port,
      learning: this.opts.learning,
      external: false,
      // the kernel caps an IPv6-underlay VXLAN device at the underlay's MTU less 70; flannel asks for
      // 50 less and gets the cap, so asking for the cap gives the same device
      mtu: (this.opts.mtu ?? ext.iface.mtu) - VXLAN6_OVERHEAD,
    };
    // a BPF run's flannel.<VNI> (collect-metadata) holds the VXLAN port for IPv6 too: on an IPv6-only
    // network nothing else removes it, and flannel-v6.1 could not come up beside it
    const bpfDev = await getLink(`flannel.${this.opts.vni}`);
    if (!this.ctx.cfg.enableIPv4 && bpfDev?.vxlan?.external) {
      this.ctx.log.info({ device: bpfDev.name }, "removing the BPF data plane's VXLAN device of an earlier IPv4 run: it holds the port flannel-v6.1 needs");
      await exec({ type: 'link', action: 'delete', index: bpfDev.index });
    }
    this.dev = await ensureVxlanDevice(this.devSpec, this.ctx.log);
    return {
      attrs: { publicIP: '0.0.0.0', publicIPv6: ext.publicIPv6, backendType: 'vxlan', backendV6Data: encodeVxlanData({ vni: this.opts.vni, vtepMAC: this.dev.mac }) },
      // FLANNEL_MTU: flannel's network MTU is the underlay's less 50 whatever the family
      mtu: vxlanDeviceMtu(this.opts, ext.iface.mtu),
    };
  }

  async start(own: Lease) {
    this.own = own;
    if (!own.ipv6Subnet) throw new Error('IPv6 is enabled but our lease has no IPv6 subnet');
    await ensureDeviceAddress6(this.dev, own.ipv6Subnet);
  }

  protected entriesFor(lease: Lease): Entry<NetlinkOp>[] {
    // an IPv4-only node in a dual-stack network: nothing to program on this side
    if (!lease.ipv6Subnet) return [];
    if (lease.attrs.backendType !== 'vxlan') throw new LeaseFormatError(`peer runs backend ${JSON.stringify(lease.attrs.backendType)}, not vxlan`);
    const { vni, vtepMAC } = decodeVxlanData(lease.attrs, 6);
    if (vni !== this.opts.vni) throw new LeaseFormatError(`peer's IPv6 VTEP uses VNI ${vni}, this network uses ${this.opts.vni}`);
    const dst = lease.attrs.publicIPv6;
    if (!dst) throw new LeaseFormatError('peer has an IPv6 subnet but no PublicIPv6');
    return tunnelEntries(this.dev.index, { gw: formatIp6(lease.ipv6Subnet.ip), len: lease.ipv6Subnet.len, cidr: formatCidr6(lease.ipv6Subnet) }, vtepMAC, dst);
  }
}
