// The classic vxlan backend, exactly as flannel programs the kernel: per peer a permanent neighbour
// (peer subnet's .0 -> peer VtepMAC), an FDB entry (VtepMAC -> peer public IP) and an onlink route
// (peer subnet via its .0), added in that order so the kernel never has to ARP on flannel.1.
import { LeaseFormatError, decodeVxlanData, encodeVxlanData, type Lease } from '../../subnet/lease.js';
import { formatCidr, formatIp4 } from '../../subnet/ip4.js';
import { AF_INET, RTNH_F_ONLINK, NUD_PERMANENT, execBatch, listFdb, listNeighs, listRoutes, type Link, type NetlinkOp } from '../../kernel/netlink.js';
import { PeerProgrammer, type Entry } from '../peer-programmer.js';
import type { Backend, BackendContext, BackendDescription } from '../types.js';
import { deviceCheck } from '../health.js';
import { ensureVxlanDevice, repairVxlanDevice, type VxlanDeviceSpec } from './device.js';
import { ensureDeviceAddress } from '../device.js';
import { vxlanDeviceMtu, vxlanOptions, type VxlanOptions } from './options.js';
import { DirectRoutingDriver, type DirectOp } from './direct-routing.js';

const RTPROT_KERNEL = 2;
export class ClassicVxlanBackend implements Backend {
  readonly leaseType = 'vxlan';
  private dev!: Link;
  private readonly programmer: PeerProgrammer<DirectOp<NetlinkOp>>;
  private readonly direct: DirectRoutingDriver<NetlinkOp>;
  private readonly opts: VxlanOptions;
  private devSpec!: VxlanDeviceSpec;
  private own?: Lease;
  private repairedDevice = 0;

  constructor(private readonly ctx: BackendContext) {
    this.opts = vxlanOptions(ctx.cfg.backend);
    const { network, subnetLen } = ctx.cfg;
    this.direct = new DirectRoutingDriver<NetlinkOp>(
      { entriesFor: (l) => this.entriesFor(l), currentEntries: () => this.currentEntries(), apply: execBatch },
      { enabled: this.opts.directRouting, scope: { family: 4, network, subnetLen, own: () => this.own?.subnet }, vxlanDev: () => this.dev.index, log: ctx.log },
    );
    this.programmer = new PeerProgrammer(this.direct, ctx.log);
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

  handle = (events: Parameters<Backend['handle']>[0]) => this.programmer.handle(events);

  async reconcile(peers: Lease[]) {
    // a flannel.1 deleted by hand takes every route, neighbour and FDB entry with it: the same device
    // again (same MAC), then the reconcile below puts the entries back
    const dev = this.own ? await repairVxlanDevice(this.dev, this.devSpec, this.ctx.log) : undefined;
    if (dev) {
      this.dev = dev;
      await this.start(this.own!);
      this.repairedDevice++;
    }
    return this.programmer.reconcile(peers);
  }

  checks = async () => [await deviceCheck(this.dev.name)];

  describe(): BackendDescription {
    return {
      backend: 'vxlan',
      mode: 'classic',
      device: this.dev?.name,
      vni: this.opts.vni,
      port: this.opts.port,
      peers: this.programmer.peerCount(),
      ...this.programmer.stats,
      ...(this.opts.directRouting ? { directRoutingPeers: this.direct.directPeers } : {}),
      repairedDevice: this.repairedDevice,
    };
  }

  private entriesFor(lease: Lease): Entry<NetlinkOp>[] {
    if (lease.attrs.backendType !== 'vxlan') throw new LeaseFormatError(`peer runs backend ${JSON.stringify(lease.attrs.backendType)}, not vxlan`);
    const { vni, vtepMAC } = decodeVxlanData(lease.attrs);
    if (vni !== this.opts.vni) throw new LeaseFormatError(`peer uses VNI ${vni}, this network uses ${this.opts.vni}`);
    const dev = this.dev.index;
    const gw = formatIp4(lease.subnet.ip);
    const dst = lease.attrs.publicIP;
    return [
      {
        key: `neigh ${gw}`,
        value: vtepMAC,
        add: { type: 'neigh', action: 'replace', dev, dst: gw, lladdr: vtepMAC },
        del: { type: 'neigh', action: 'delete', dev, dst: gw },
      },
      {
        key: `fdb ${vtepMAC}`,
        value: dst,
        add: { type: 'fdb', action: 'replace', dev, lladdr: vtepMAC, dst },
        del: { type: 'fdb', action: 'delete', dev, lladdr: vtepMAC, dst },
      },
      {
        key: `route ${formatCidr(lease.subnet)}`,
        value: `via ${gw} dev ${dev} onlink`,
        add: { type: 'route', action: 'replace', dst: gw, dstLen: lease.subnet.len, gateway: gw, dev, onlink: true },
        del: { type: 'route', action: 'delete', dst: gw, dstLen: lease.subnet.len, dev },
      },
    ];
  }

  private currentEntries(): Promise<Entry<NetlinkOp>[]> {
    return currentTunnelEntries(this.dev.index, AF_INET);
  }
}

/**
 * What a classic VXLAN device holds that we manage: its routes (not the kernel's own), permanent
 * neighbours and FDB entries, as peer-programmer entries. flannel.<VNI> (AF_INET) and flannel-v6.<VNI>
 * (AF_INET6) alike.
 */
export async function currentTunnelEntries(dev: number, family: number): Promise<Entry<NetlinkOp>[]> {
  const [routes, neighs, fdb] = await Promise.all([listRoutes(family, { dev }), listNeighs(dev, family), listFdb(dev)]);
  const out: Entry<NetlinkOp>[] = [];
  for (const r of routes) {
    if (r.protocol === RTPROT_KERNEL) continue;
    out.push({
      key: `route ${r.dst}/${r.dstLen}`,
      value: `via ${r.gateway} dev ${r.dev}${r.flags & RTNH_F_ONLINK ? ' onlink' : ''}`,
      add: { type: 'route', action: 'replace', dst: r.dst, dstLen: r.dstLen },
      del: { type: 'route', action: 'delete', dst: r.dst, dstLen: r.dstLen, dev },
    });
  }
  for (const n of neighs) {
    if (!(n.state & NUD_PERMANENT) || !n.dst) continue;
    out.push({ key: `neigh ${n.dst}`, value: n.lladdr ?? '', add: { type: 'neigh', action: 'replace', dev, dst: n.dst }, del: { type: 'neigh', action: 'delete', dev, dst: n.dst } });
  }
  for (const f of fdb) {
    if (!f.lladdr || !f.dst) continue;
    out.push({ key: `fdb ${f.lladdr}`, value: f.dst, add: { type: 'fdb', action: 'replace', dev, lladdr: f.lladdr }, del: { type: 'fdb', action: 'delete', dev, lladdr: f.lladdr, dst: f.dst } });
  }
  return out;
}
