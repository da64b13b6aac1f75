// vxlan in BPF mode: flannel.<VNI> is an external (collect-metadata) vxlan device with ARP off and one
// route for the whole cluster network; per-peer state lives in pinned BPF maps instead of routes,
// neighbours and FDB entries. The kernel still encapsulates and decapsulates (VNI, UDP 8472, inner
// Ethernet exactly as a classic node sends it), so BPF and classic nodes share one cluster.
// The parts: bpf-maps.ts (a lease becomes map entries), bpf-hooks.ts (programs on their hooks, pins,
// checks), fast-path.ts (the pod fast path and bypass mode); this file loads and wires them.
import { encodeVxlanData, type Lease } from '../../subnet/lease.js';
import { formatIp4 } from '../../subnet/ip4.js';
import { exec, getLink, type Link } from '../../kernel/netlink.js';
import { BpfMap, BpfObject, ensureBpffs, untrustedPins } from '../../kernel/bpf.js';
import * as L from '../../datapath/layout.js';
import { MAP, PROGRAM, mapLayout, objectPath, peerCapacity } from '../../datapath/objects.js';
import { sizePeerMaps } from './map-sizes.js';
import { addon } from '../../kernel/addon.js';
import { PeerProgrammer } from '../peer-programmer.js';
import type { Backend, BackendContext, BackendDescription, HealthCheck, TrafficView } from '../types.js';
import { decodeDataPlane, type DataPlaneMaps } from '../../datapath/inspect.js';
import { ensureVxlanDevice, repairVxlanDevice, type VxlanDeviceSpec } from './device.js';
import { disableIpv6, enableIpv6Quietly, ensureDeviceAddress, ensureDeviceAddress6 } from '../device.js';
import { formatIp6 } from '../../subnet/ip6.js';
import { hasIPv4 } from '../../subnet/lease-key.js';
import { VXLAN6_OVERHEAD } from './classic6.js';
import { vxlanDeviceMtu, vxlanOptions, type VxlanOptions } from './options.js';
import { FastPath, type BypassMode, type FastPathMaps, type FastPathMode } from './fast-path.js';
import { BpfMapDriver, type MapOp } from './bpf-maps.js';
import { DirectRoutingDriver, isDirectRoute, type DirectOp } from './direct-routing.js';
import { BpfHooks, type UnderlayHook } from './bpf-hooks.js';

export type { UnderlayHook };

export interface BpfModeOptions {
  pinRoot: string;
  underlayHook: UnderlayHook;
  /** the pod fast path: auto (on when the kernel accepts its programs), on (required), off */
  fastPath?: FastPathMode;
  /** bypass mode on top of the fast path: encapsulation in BPF, flannel.1 skipped (default off here, auto from the CLI) */
  bypass?: BypassMode;
}

export class BpfVxlanBackend implements Backend {
  readonly leaseType = 'vxlan';
  private dev!: Link;
  private readonly opts: VxlanOptions;
  private readonly objects: BpfObject[] = [];
  private maps!: DataPlaneMaps;
  /** the egress program's table, derived from fl_subnets and fl_vteps */
  private routes!: BpfMap;
  /** a dual-stack network's IPv6 halves: the egress program's IPv6 table and the IPv6 members */
  private maps6!: { fl_routes6: BpfMap; fl_peer_stats6: BpfMap };
  private fastMaps!: FastPathMaps;
  private fast!: FastPath;
  private hooks!: BpfHooks;
  private programmer!: PeerProgrammer<DirectOp<DirectOp<MapOp>>>;
  private direct!: DirectRoutingDriver<MapOp>;
  private direct6!: DirectRoutingDriver<DirectOp<MapOp>>;
  private repairedDevice = 0;
  private devSpec!: VxlanDeviceSpec;
  private own?: Lease;

  constructor(
    private readonly ctx: BackendContext,
    private readonly bpf: BpfModeOptions,
  ) {
    this.opts = vxlanOptions(ctx.cfg.backend);
  }

  async prepare() {
    const { ext, log } = this.ctx;
    ensureBpffs(this.bpf.pinRoot);
    const bad = untrustedPins(this.bpf.pinRoot);
    if (bad.length) throw new Error(`refusing to reuse pinned maps that are not root's alone: ${bad.join(', ')}`);
    const sized = sizePeerMaps(this.bpf.pinRoot, peerCapacity(this.ctx.cfg), log);
    const layout = mapLayout(addon().numPossibleCpus, sized.sizes);
    for (const name of ['egress', 'ingress', 'guard'] as const) this.objects.push(await BpfObject.open(objectPath(name), this.bpf.pinRoot, log, L.REPLACEABLE_MAPS, layout.flags, layout.sizes));
    const [egress, ingress, guard] = this.objects as [BpfObject, BpfObject, BpfObject];
    sized.restore((name) => egress.map(name));
    this.maps = {
      fl_subnets: egress.map(MAP.subnets),
      fl_vteps: egress.map(MAP.vteps),
      fl_members: egress.map(MAP.members),
      fl_config: egress.map(MAP.config),
      fl_stats: egress.map(MAP.stats),
      fl_peer_stats: egress.map(MAP.peerStats),
    };
    this.routes = egress.map(MAP.routes);
    this.maps6 = { fl_routes6: egress.map(MAP.routes6), fl_peer_stats6: egress.map(MAP.peerStats6) };
    this.seedPeerStats();
    const driver = new BpfMapDriver({ ...this.maps, fl_routes: this.routes, ...this.maps6 }, this.opts.vni, this.ctx.cfg.ipv6 !== undefined);
    const { network, subnetLen } = this.ctx.cfg;
    const c6 = this.ctx.cfg.ipv6;
    // flannel decides DirectRouting per family: IPv4 by the peer's PublicIP, IPv6 by its PublicIPv6
    this.direct = new DirectRoutingDriver<MapOp>(driver, {
      enabled: this.opts.directRouting && this.ctx.cfg.enableIPv4,
      scope: { family: 4, network, subnetLen, own: () => this.own?.subnet },
      vxlanDev: () => this.dev.index,
      // a direct peer stays a member: VXLAN it sends us (it may not see us as direct) passes the guard;
      // its IPv6 half is the IPv6 layer's to decide
      keepWhenDirect: (e) => e.add.map === MAP.members || e.add.map === MAP.peerStats || e.add.map === MAP.routes6 || e.add.map === MAP.peerStats6,
      log,
    });
    this.direct6 = new DirectRoutingDriver<DirectOp<MapOp>>(this.direct, {
      enabled: this.opts.directRouting && c6 !== undefined,
      scope: { family: 6, network: c6?.network, subnetLen: c6?.subnetLen ?? 0, own: () => this.own?.ipv6Subnet },
      vxlanDev: () => this.dev.index,
      // a peer direct over IPv6 loses its IPv6 tunnel route only: the IPv4 layer's entries, and its
      // IPv6 membership, stay
      keepWhenDirect: (e) => isDirectRoute(e.add) || e.add.map !== MAP.routes6,
      log,
    });
    this.programmer = new PeerProgrammer(this.direct6, log);
    this.fastMaps = { fl_local_pods: egress.map(MAP.localPods), fl_local_pods6: egress.map(MAP.localPods6), fl_fast_cfg: egress.map(MAP.fastCfg), fl_fast_stats: egress.map(MAP.fastStats) };
    // bypass encapsulates over the IPv4 underlay only: on an IPv6-only network it would never engage
    const noBypass = this.ctx.cfg.enableIPv4 ? undefined : 'an IPv6-only network: bypass encapsulates over the IPv4 underlay only';
    this.fast = new FastPath(this.bpf.fastPath ?? 'auto', this.bpf.pinRoot, this.fastMaps, log, this.bpf.bypass ?? 'off', noBypass);
    await this.fast.load(objectPath('fastPath'), layout);
    this.hooks = new BpfHooks(
      ext,
      this.bpf.underlayHook,
      this.bpf.pinRoot,
      {
        egress: egress.program(PROGRAM.egress).fd,
        ingress: this.fast.ingressProgram(ingress.program(PROGRAM.ingress).fd),
        guardTc: this.fast.underlayProgram(guard.program(PROGRAM.guardTc).fd),
        guardXdp: guard.program(PROGRAM.guardXdp).fd,
      },
      this.fast,
      log,
    );

    // a classic dual-stack run's flannel-v6.<VNI> holds the VXLAN port over IPv6, which our external
    // device opens too: it must go before flannel.<VNI> comes up (EADDRINUSE otherwise)
    const v6dev = await getLink(`flannel-v6.${this.opts.vni}`);
    if (v6dev) {
      log.info({ device: v6dev.name }, 'removing the classic IPv6 VXLAN device of an earlier run: the BPF data plane carries IPv6 through flannel.1');
      await exec({ type: 'link', action: 'delete', index: v6dev.index });
    }
    this.devSpec = { name: `flannel.${this.opts.vni}`, vni: this.opts.vni, local: '', link: 0, port: this.opts.port, learning: false, external: true, mtu: vxlanDeviceMtu(this.opts, ext.iface.mtu) };
    await this.setupDevice(await ensureVxlanDevice(this.devSpec, log));
    const vtep = encodeVxlanData({ vni: this.opts.vni, vtepMAC: this.dev.mac });
    // a dual-stack node: flannel.1 is our IPv6 VTEP as well (the external device receives VXLAN over
    // IPv6 too), so BackendV6Data names its MAC; flannel nodes reach it from their flannel-v6.1
    const six = this.ctx.cfg.ipv6 ? { publicIPv6: ext.publicIPv6!, backendV6Data: vtep } : { publicIPv6: null };
    if (this.ctx.cfg.ipv6 && !ext.publicIPv6) throw new Error(`IPv6 is enabled but interface ${ext.iface.name} has no IPv6 address`);
    // an IPv6-only node publishes no IPv4 VTEP (flannel: PublicIP 0.0.0.0, no BackendData)
    const four = this.ctx.cfg.enableIPv4 ? { backendData: vtep } : {};
    return { attrs: { publicIP: ext.publicIP, backendType: 'vxlan', ...four, ...six }, mtu: this.dev.mtu };
  }

  /**
   * A replaced fl_peer_stats (an older layout or other flags, see BpfObject.open) starts empty, and
   * flannel.1's ingress reads its entries as membership: until the first reconcile every member's
   * traffic would be dropped. Its keys are fl_members' (kept): give every member its counters now,
   * before the programs are attached.
   */
  private seedPeerStats(): void {
    const stats = this.maps.fl_peer_stats;
    const have = new Set(stats.entries().map(([k]) => k.toString('hex')));
    const missing = this.maps.fl_members.entries().filter(([k]) => !have.has(k.toString('hex')));
    if (!missing.length) return;
    const zero = Buffer.alloc(stats.lookupSize);
    stats.updateMany(missing.map(([k]) => [k, zero]));
    this.ctx.log.info({ members: missing.length }, 'gave the members of a previous run their counter entries (fl_peer_stats was replaced)');
  }

  private async setupDevice(dev: Link): Promise<void> {
    this.dev = dev;
    // ARP off: the egress program writes the peer's MAC itself; the kernel must not try to resolve it
    await exec({ type: 'link', action: 'set', index: this.dev.index, noarp: true });
    // no IPv6 on the tunnel of an IPv4-only network: router solicitations would only be dropped and
    // counted as no_route; a dual-stack network carries IPv6, without the chatter
    if (this.ctx.cfg.ipv6) await enableIpv6Quietly(this.dev);
    else disableIpv6(this.dev.name);
    this.maps.fl_config.update(L.u32Key(0), L.configVal({ vni: this.opts.vni, port: this.opts.port, ttl: 64, flags: 0, localMAC: this.dev.mac }));
    this.fast.configure(this.dev.index, this.ctx.ext.ifaceAddr || '0.0.0.0');
    // replaced in place on a restart, so a running data plane never sees an empty hook
    this.hooks.attachDevice(this.dev);
  }

  async start(own: Lease) {
    this.own = own;
    const { network } = this.ctx.cfg;
    if (hasIPv4(own)) {
      await ensureDeviceAddress(this.dev, own.subnet);
      // one route for the whole cluster network; our own subnet's more specific route (cni0) wins locally
      await exec({ type: 'route', action: 'replace', dst: formatIp4(network.ip), dstLen: network.len, dev: this.dev.index });
    }
    const c6 = this.ctx.cfg.ipv6;
    if (c6 && own.ipv6Subnet) {
      // flannel's ConfigureIPv6 (the /128 is the source of host-to-pod traffic), and one route for the IPv6 network
      await ensureDeviceAddress6(this.dev, own.ipv6Subnet);
      // flannel.1's MTU leaves room for IPv4's 50 bytes of VXLAN; over IPv6 they are 70 (as flannel-v6.1's
      // MTU is). The route carries that MTU, so the node answers bigger IPv6 packets with "packet too
      // big" (the external device's own PMTU reply would arrive untunnelled, and its ingress drops it)
      await exec({ type: 'route', action: 'replace', dst: formatIp6(c6.network.ip), dstLen: c6.network.len, dev: this.dev.index, mtu: (this.opts.mtu ?? this.ctx.ext.iface.mtu) - VXLAN6_OVERHEAD });
    }
  }

  handle = (events: Parameters<Backend['handle']>[0]) => this.programmer.handle(events);

  async reconcile(peers: Lease[]) {
    // the device check (a link dump on libuv's thread pool: 4-11 ms on a first start) runs while the
    // maps are written, which do not depend on the device; both are settled before the hooks are checked
    const programming = async () => {
      this.hooks.ensurePinned(this.pinnedMaps());
      return this.programmer.reconcile(peers);
    };
    const [device, programmed] = await Promise.allSettled([this.ensureDevice(), programming()]);
    if (device.status === 'rejected') throw device.reason;
    if (programmed.status === 'rejected') throw programmed.reason;
    const res = programmed.value;
    // the guard goes on after the members map is filled, or it would drop real peers
    await this.hooks.ensureAttached(this.dev);
    await this.fast.reconcile();
    return res;
  }

  /** flannel.1 deleted or set down by hand: the same device again, with its hooks, address and route. */
  private async ensureDevice(): Promise<void> {
    if (!this.own) return;
    const dev = await repairVxlanDevice(this.dev, this.devSpec, this.ctx.log);
    if (!dev) return;
    await this.setupDevice(dev);
    await this.start(this.own);
    this.repairedDevice++;
  }

  private pinnedMaps(): Record<string, BpfMap> {
    return { ...this.maps, fl_routes: this.routes, ...this.maps6, ...this.fastMaps };
  }

  traffic(): TrafficView {
    const v = decodeDataPlane(this.bpf.pinRoot, { ...this.maps, ...(this.ctx.cfg.ipv6 ? this.maps6 : {}) });
    return {
      ...(this.fast.on ? { fastPath: this.fast.counters() } : {}),
      peers: v.peers.filter((p) => p.hostIP).map((p) => ({ subnet: p.subnet, publicIP: p.hostIP!, txPackets: p.txPackets, txBytes: p.txBytes, rxPackets: p.rxPackets, rxBytes: p.rxBytes })),
      packets: Object.fromEntries(Object.entries(v.counters).map(([r, c]) => [r, c.packets])),
    };
  }

  checks(): Promise<HealthCheck[]> {
    return Promise.resolve(this.hooks.checks(this.dev, this.pinnedMaps()));
  }

  /** Closes the loaded objects (programs stay attached where the kernel holds them). */
  close(): void {
    for (const o of this.objects.splice(0)) o.close();
    this.fast?.close();
  }

  describe(): BackendDescription {
    return {
      backend: 'vxlan',
      mode: 'bpf',
      device: this.dev?.name,
      vni: this.opts.vni,
      port: this.opts.port,
      pinRoot: this.bpf.pinRoot,
      // before prepare() (a failed start) there is nothing loaded to describe
      underlayGuard: this.hooks?.underlayHook ?? 'not attached',
      peers: this.programmer?.peerCount() ?? 0,
      ...(this.opts.directRouting ? { directRoutingPeers: this.direct?.directPeers ?? 0 } : {}),
      // the peers with an IPv6 half: their IPv6 memberships (entries(): one batched call, not one per key)
      ...(this.ctx.cfg.ipv6 && this.maps6
        ? { ipv6: { device: this.dev?.name, peers: this.maps6.fl_peer_stats6.entries().length, ...(this.opts.directRouting ? { directRoutingPeers: this.direct6.directPeers } : {}) } }
        : {}),
      ...(this.programmer?.stats ?? { reconciles: 0, corrections: 0, failures: 0, rejected: 0 }),
      repairedDevice: this.repairedDevice,
      repairedPins: this.hooks?.repairs.pins ?? 0,
      reattachedPrograms: this.hooks?.repairs.attachments ?? 0,
      ...this.fast?.describe(),
      // bypass decapsulates in the guard's tc program: with the guard in XDP, only the send side runs
      ...(this.fast?.bypass && !this.hooks.underlayHook.startsWith('tc')
        ? { vxlanBypassReceive: `off: the underlay guard runs as ${this.hooks.underlayHook}, and bypass decapsulates in its tc program` }
        : {}),
    };
  }
}
