// What flannel.<VNI> (classic.ts) and flannel-v6.<VNI> (classic6.ts) share, as flannel programs both:
// per peer a permanent neighbour (the peer subnet's first address -> its VtepMAC), an FDB entry (that
// MAC -> its public address) and an onlink route (the peer subnet via that first address), added in
// that order so the kernel never has to resolve a neighbour on the device; the device repaired when
// deleted by hand; DirectRouting in front of it all. A subclass names its device and its family.
import { execBatch, listFdb, listNeighs, listRoutes, NUD_PERMANENT, RTNH_F_ONLINK, type Link, type NetlinkOp } from '../../kernel/netlink.js';
import type { Lease } from '../../subnet/lease.js';
import { PeerProgrammer, type Entry } from '../peer-programmer.js';
import type { Backend, BackendContext, BackendDescription } from '../types.js';
import { deviceCheck } from '../health.js';
import { repairVxlanDevice, type VxlanDeviceSpec } from './device.js';
import { vxlanOptions, type VxlanOptions } from './options.js';
import { DirectRoutingDriver, type DirectOp, type DirectScope } from './direct-routing.js';

const RTPROT_KERNEL = 2;

export abstract class ClassicVxlanCommon implements Backend {
  readonly leaseType = 'vxlan';
  protected dev!: Link;
  protected devSpec!: VxlanDeviceSpec;
  protected own?: Lease;
  protected readonly opts: VxlanOptions;
  private readonly programmer: PeerProgrammer<DirectOp<NetlinkOp>>;
  private readonly direct: DirectRoutingDriver<NetlinkOp>;
  private repairedDevice = 0;

  constructor(
    protected readonly ctx: BackendContext,
    /** AF_INET or AF_INET6: the family of the device's routes and neighbours */
    private readonly family: number,
  ) {
    this.opts = vxlanOptions(ctx.cfg.backend);
    this.direct = new DirectRoutingDriver<NetlinkOp>(
      { entriesFor: (l) => this.entriesFor(l), currentEntries: () => currentTunnelEntries(this.dev.index, this.family), apply: execBatch },
      { enabled: this.opts.directRouting, scope: this.directScope(), vxlanDev: () => this.dev.index, log: ctx.log },
    );
    this.programmer = new PeerProgrammer(this.direct, ctx.log);
  }

  abstract prepare(): ReturnType<Backend['prepare']>;
  abstract start(own: Lease): Promise<void>;
  /** the peer's neighbour, FDB entry and route (tunnelEntries), or none */
  protected abstract entriesFor(lease: Lease): Entry<NetlinkOp>[];
  /** the family DirectRouting decides for this device (called from the constructor) */
  protected abstract directScope(): DirectScope;

  handle = (events: Parameters<Backend['handle']>[0]) => this.programmer.handle(events);

  async reconcile(peers: Lease[]) {
    // a device deleted by hand takes every route, neighbour and FDB entry with it: the same device
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
}

/** A peer's three entries on a classic device: `gw` is its subnet's first address, `remote` its public address. */
export function tunnelEntries(dev: number, subnet: { gw: string; len: number; cidr: string }, vtepMAC: string, remote: string): Entry<NetlinkOp>[] {
  const { gw, len, cidr } = subnet;
  return [
    { key: `neigh ${gw}`, value: vtepMAC, add: { type: 'neigh', action: 'replace', dev, dst: gw, lladdr: vtepMAC }, del: { type: 'neigh', action: 'delete', dev, dst: gw } },
    { key: `fdb ${vtepMAC}`, value: remote, add: { type: 'fdb', action: 'replace', dev, lladdr: vtepMAC, dst: remote }, del: { type: 'fdb', action: 'delete', dev, lladdr: vtepMAC, dst: remote } },
    {
      key: `route ${cidr}`,
      value: `via ${gw} dev ${dev} onlink`,
      add: { type: 'route', action: 'replace', dst: gw, dstLen: len, gateway: gw, dev, onlink: true },
      del: { type: 'route', action: 'delete', dst: gw, dstLen: len, dev },
    },
  ];
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
