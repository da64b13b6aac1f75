// vxlan in BPF mode: flannel.<VNI> is an external (collect-metadata) vxlan device with ARP off and one
// route for the whole cluster network; per-peer state lives in pinned BPF maps instead of routes,
// neighbours and FDB entries. The kernel still encapsulates and decapsulates (VNI, UDP 8472, inner
// Ethernet exactly as a classic node sends it), so BPF and classic nodes share one cluster.
import { existsSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { LeaseFormatError, decodeVxlanData, encodeVxlanData, type Lease } from '../../subnet/lease.js';
import { formatCidr, formatIp4 } from '../../subnet/ip4.js';
import { exec, type Link } from '../../kernel/netlink.js';
import { errnoName } from '../../kernel/addon.js';
import { BpfMap, BpfObject, TC_HANDLE, TC_PRIO, ensureBpffs, untrustedPins, tcAttach, tcQuery, xdpAttach, xdpDetach, xdpQuery, progInfo, progInfoById } from '../../kernel/bpf.js';
import * as L from '../../bpf/layout.js';
import { objectPath } from '../../bpf/objects.js';
import { PeerProgrammer, type Entry } from '../peer-programmer.js';
import type { Backend, BackendContext, HealthCheck, TrafficView } from '../types.js';
import { decodeDataPlane, type DataPlaneMaps } from '../../bpf/inspect.js';
import { disableIpv6, ensureDeviceAddress, ensureVxlanDevice, repairVxlanDevice, type VxlanDeviceSpec } from './device.js';
import { vxlanOptions, type VxlanOptions } from './classic.js';
import { FastPath, type BypassMode, type FastPathMaps, type FastPathMode } from './fast-path.js';
import { GUARD_PROGRAMS, describeGuard, removeGuards, xdpModeOf } from './underlay-guard.js';

export type UnderlayHook = 'auto' | 'xdp' | 'xdp-generic' | 'tc' | 'none';

export interface BpfModeOptions {
  pinRoot: string;
  underlayHook: UnderlayHook;
  /** the pod fast path: auto (on when the kernel accepts its programs), on (required), off */
  fastPath?: FastPathMode;
  /** bypass mode on top of the fast path: encapsulation in BPF, flannel.1 skipped (default off here, auto from the CLI) */
  bypass?: BypassMode;
}

type MapName = 'fl_subnets' | 'fl_vteps' | 'fl_members' | 'fl_routes' | 'fl_peer_stats';
// A peer's counters first (their presence is what flannel.1's ingress accepts), then the guard's
// member entry, the VTEP and the subnet, and last the route the egress program reads; deletes the
// other way round. So no program ever finds a half-programmed peer.
const UPDATE_ORDER: MapName[] = ['fl_peer_stats', 'fl_members', 'fl_vteps', 'fl_subnets', 'fl_routes'];
const DELETE_ORDER: MapName[] = ['fl_routes', 'fl_subnets', 'fl_vteps', 'fl_members', 'fl_peer_stats'];
export type MapOp = { map: MapName; action: 'update' | 'delete'; key: Buffer; value?: Buffer; what: string };

// Virtual drivers where native XDP takes packets off the GRO path: measured -70% TCP on veth here.
const TC_KINDS = new Set(['veth', 'bridge', 'vxlan', 'bond', 'team', 'macvlan', 'ipvlan', 'vlan', 'tun', 'tap', 'dummy', 'wireguard', 'geneve']);

/** One map entry as the peer programmer sees it: identity, comparable value, and how to write or remove it. */
function mapEntry(map: MapName, id: string, value: string, key: Buffer, val: Buffer): Entry<MapOp> {
  return { key: id, value, add: { map, action: 'update', key, value: val, what: id }, del: { map, action: 'delete', key, what: id } };
}


export class BpfVxlanBackend implements Backend {
  readonly leaseType = 'vxlan';
  private dev!: Link;
  private readonly opts: VxlanOptions;
  private readonly objects: BpfObject[] = [];
  private maps!: DataPlaneMaps;
  /** the egress program's table, derived from fl_subnets and fl_vteps */
  private routes!: BpfMap;
  private fastMaps!: FastPathMaps;
  private fast!: FastPath;
  private progs!: { egress: number; ingress: number; guardTc: number; guardXdp: number };
  private readonly programmer: PeerProgrammer<MapOp>;
  private underlayHook: string = 'not attached';
  private xdpRefused = false;
  /** the hook our guard holds ("ifindex hook"): when it changes, ours goes from every other hook */
  private guardAt?: string;
  readonly repairs = { attachments: 0, device: 0, pins: 0 };
  private devSpec!: VxlanDeviceSpec;
  private own?: Lease;

  constructor(
    private readonly ctx: BackendContext,
    private readonly bpf: BpfModeOptions,
  ) {
    this.opts = vxlanOptions(ctx.cfg.backend);
    this.programmer = new PeerProgrammer<MapOp>({ entriesFor: (l) => this.entriesFor(l), currentEntries: async () => this.currentEntries(), apply: async (ops) => this.apply(ops) }, ctx.log);
  }

  async prepare() {
    const { ext, log } = this.ctx;
    ensureBpffs(this.bpf.pinRoot);
    const bad = untrustedPins(this.bpf.pinRoot);
    if (bad.length) throw new Error(`refusing to reuse pinned maps that are not root's alone: ${bad.join(', ')}`);
    for (const name of ['egress', 'ingress', 'guard'] as const) this.objects.push(await BpfObject.open(objectPath(name), this.bpf.pinRoot, log, L.REPLACEABLE_MAPS));
    const [egress, ingress, guard] = this.objects as [BpfObject, BpfObject, BpfObject];
    this.maps = {
      fl_subnets: egress.map('fl_subnets'),
      fl_vteps: egress.map('fl_vteps'),
      fl_members: egress.map('fl_members'),
      fl_config: egress.map('fl_config'),
      fl_stats: egress.map('fl_stats'),
      fl_peer_stats: egress.map('fl_peer_stats'),
    };
    this.routes = egress.map('fl_routes');
    this.fastMaps = { fl_local_pods: egress.map('fl_local_pods'), fl_fast_cfg: egress.map('fl_fast_cfg'), fl_fast_stats: egress.map('fl_fast_stats') };
    this.fast = new FastPath(this.bpf.fastPath ?? 'auto', this.bpf.pinRoot, this.fastMaps, log, this.bpf.bypass ?? 'off');
    await this.fast.load(objectPath('fastPath'));
    this.progs = {
      egress: egress.program('fl_vxlan_egress').fd,
      ingress: this.fast.ingressProgram(ingress.program('fl_vxlan_ingress').fd),
      guardTc: this.fast.underlayProgram(guard.program('fl_guard_tc').fd),
      guardXdp: guard.program('fl_guard_xdp').fd,
    };

    this.devSpec = { name: `flannel.${this.opts.vni}`, vni: this.opts.vni, local: '', link: 0, port: this.opts.port, learning: false, external: true, mtu: this.opts.mtu ?? ext.iface.mtu - 50 };
    await this.setupDevice(await ensureVxlanDevice(this.devSpec, log));
    return {
      attrs: { publicIP: ext.publicIP, publicIPv6: null, backendType: 'vxlan', backendData: encodeVxlanData({ vni: this.opts.vni, vtepMAC: this.dev.mac }) },
      mtu: this.dev.mtu,
    };
  }

  private async setupDevice(dev: Link): Promise<void> {
    this.dev = dev;
    // ARP off: the egress program writes the peer's MAC itself; the kernel must not try to resolve it
    await exec({ type: 'link', action: 'set', index: this.dev.index, noarp: true });
    // no IPv6 on the tunnel: router solicitations would only be dropped and counted as not_ipv4
    disableIpv6(this.dev.name);
    this.maps.fl_config.update(L.u32Key(0), L.configVal({ vni: this.opts.vni, port: this.opts.port, ttl: 64, flags: 0, localMAC: this.dev.mac }));
    this.fast.configure(this.dev.index, this.ctx.ext.ifaceAddr);
    // flannel.1's own hooks hold no per-peer state: safe before any peer is known, and replaced in
    // place on a restart so a running data plane never sees an empty hook
    tcAttach(this.dev.index, 'egress', this.progs.egress, TC_HANDLE, TC_PRIO);
    tcAttach(this.dev.index, 'ingress', this.progs.ingress, TC_HANDLE, TC_PRIO);
  }

  async start(own: Lease) {
    this.own = own;
    await ensureDeviceAddress(this.dev, own.subnet);
    const { network } = this.ctx.cfg;
    // one route for the whole cluster network; our own subnet's more specific route (cni0) wins locally
    await exec({ type: 'route', action: 'replace', dst: formatIp4(network.ip), dstLen: network.len, dev: this.dev.index });
  }

  handle = (events: Parameters<Backend['handle']>[0]) => this.programmer.handle(events);

  async reconcile(peers: Lease[]) {
    await this.ensureDevice();
    this.ensurePinned();
    const res = await this.programmer.reconcile(peers);
    await this.ensureAttached();
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
    this.repairs.device++;
  }

  /**
   * A pin removed (or replaced) by hand does not stop the data plane (the programs hold the maps) but
   * hides it from bpftool and from the next agent, which would start with empty maps: pin ours again.
   */
  private ensurePinned(): void {
    let missing = false;
    if (this.fast.ensurePinned()) this.repairs.pins++;
    for (const [name, map] of Object.entries(this.pinnedMaps())) {
      const path = join(this.bpf.pinRoot, name);
      if (BpfMap.pinnedId(path) === map.id()) continue;
      if (!missing) ensureBpffs(this.bpf.pinRoot);
      missing = true;
      if (existsSync(path)) unlinkSync(path);
      map.pin(path);
      this.repairs.pins++;
      this.ctx.log.warn({ map: name, path }, 'a BPF map pin was missing or replaced; pinned ours again');
    }
  }

  /** Re-attaches whatever is missing (a hook removed by hand, a restarted underlay link). */
  private async ensureAttached(): Promise<void> {
    const { log } = this.ctx;
    for (const [dir, fd] of [['egress', this.progs.egress], ['ingress', this.progs.ingress]] as const) {
      if (tcQuery(this.dev.index, dir, TC_HANDLE, TC_PRIO) !== progInfo(fd).id) {
        // prepare() attached both, so reaching here means someone removed one
        tcAttach(this.dev.index, dir, fd, TC_HANDLE, TC_PRIO);
        this.repairs.attachments++;
        log.warn({ hook: `${this.dev.name} ${dir}` }, 're-attached a BPF program that was missing');
      }
    }
    await this.ensureGuard();
  }

  /**
   * The underlay guard goes on only once the members map is filled, or it would drop real peers; and
   * it runs on exactly one hook: ours left elsewhere by an earlier run (another --iface or
   * --underlay-hook) goes, with a frozen members map that would drop nodes joining later.
   */
  private async ensureGuard(): Promise<void> {
    const { ext, log } = this.ctx;
    const want = this.bpf.underlayHook;
    const idx = ext.iface.index;
    let keep: { ifindex: number; hook: 'tc' | 'xdp' } | undefined;
    if (want !== 'none') {
      // auto: native XDP unless the device is a virtual kind (a physical NIC reports no kind) or bypass
      // mode runs (its tc program is the guard and the decapsulation in one); when XDP is refused or
      // another program holds it, tc
      const xdp = want === 'xdp' ? 'native' : want === 'xdp-generic' ? 'generic' : want === 'auto' && !this.fast.bypass && !TC_KINDS.has(ext.iface.kind) ? 'native' : undefined;
      if (xdp && this.tryXdp(idx, xdp)) keep = { ifindex: idx, hook: 'xdp' };
      else {
        if (tcQuery(idx, 'ingress', TC_HANDLE, TC_PRIO) !== progInfo(this.progs.guardTc).id) {
          tcAttach(idx, 'ingress', this.progs.guardTc, TC_HANDLE, TC_PRIO);
          if (this.underlayHook !== 'not attached') log.warn({ hook: `${ext.iface.name} tc ingress` }, 're-attached the underlay guard');
          this.underlayHook = describeGuard({ hook: 'tc', iface: ext.iface.name });
        }
        keep = { ifindex: idx, hook: 'tc' };
      }
    } else this.underlayHook = 'none (--underlay-hook=none)';
    const at = keep ? `${keep.ifindex} ${keep.hook}` : 'none';
    if (at === this.guardAt) return;
    const removed = await removeGuards(keep);
    if (removed.length) log.info({ removed }, 'removed our underlay guard from hooks this run does not use');
    this.guardAt = at;
  }

  /**
   * Native or generic XDP for the guard: over an empty hook, or over our own program of an earlier
   * run, never over someone else's (an XDP load balancer, a DDoS filter): then tc, and the log says so.
   */
  private tryXdp(idx: number, mode: 'native' | 'generic'): boolean {
    if (this.xdpRefused) return false; // asked once: a driver that refused will refuse every reconcile
    const { ext, log } = this.ctx;
    const cur = xdpQuery(idx);
    if (cur.progId === progInfo(this.progs.guardXdp).id) return true;
    let replace = 0;
    if (cur.progId) {
      const name = progInfoById(cur.progId)?.name;
      if (name !== GUARD_PROGRAMS.xdp) {
        this.xdpRefused = true;
        log.warn({ iface: ext.iface.name, program: name ?? `id ${cur.progId}` }, 'another XDP program runs on the underlay interface: leaving it in place; the underlay guard uses tc');
        return false;
      }
      // ours, from an earlier run: swapped atomically in the same mode; in the other mode the old one
      // goes first (the kernel holds only one mode at a time)
      if (xdpModeOf(cur.attachMode) === mode) replace = cur.progId;
      else xdpDetach(idx, xdpModeOf(cur.attachMode));
    }
    try {
      xdpAttach(idx, this.progs.guardXdp, mode, replace);
      this.underlayHook = describeGuard({ hook: 'xdp', iface: ext.iface.name, mode });
      return true;
    } catch (e) {
      this.xdpRefused = true;
      const busy = ['EBUSY', 'EEXIST'].includes((e as NodeJS.ErrnoException).code ?? '');
      log.info({ iface: ext.iface.name, mode, err: (e as Error).message }, busy ? 'another XDP program took the underlay interface meanwhile; the underlay guard uses tc' : 'XDP not available for the underlay guard, using tc');
      return false;
    }
  }

  private pinnedMaps(): Record<string, BpfMap> {
    return { ...this.maps, fl_routes: this.routes, ...this.fastMaps };
  }

  private map(name: MapName): BpfMap {
    return name === 'fl_routes' ? this.routes : this.maps[name];
  }

  traffic(): TrafficView {
    const v = decodeDataPlane(this.bpf.pinRoot, this.maps);
    return {
      ...(this.fast.on ? { fastPath: this.fast.counters() } : {}),
      peers: v.peers.filter((p) => p.hostIP).map((p) => ({ subnet: p.subnet, publicIP: p.hostIP!, txPackets: p.txPackets, txBytes: p.txBytes, rxPackets: p.rxPackets, rxBytes: p.rxBytes })),
      packets: Object.fromEntries(Object.entries(v.counters).map(([r, c]) => [r, c.packets])),
    };
  }

  /** Each hook holds our program, each map is pinned and is the one our programs use. */
  async checks(): Promise<HealthCheck[]> {
    const out: HealthCheck[] = [];
    const attached = (name: string, got: number | null | undefined, fd: number) => {
      const want = progInfo(fd).id;
      out.push({ name, ok: got === want, detail: got === want ? `program ${want}` : got ? `program ${got} instead of ${want}` : 'nothing attached' });
    };
    attached(`tc egress ${this.dev.name}`, tcQuery(this.dev.index, 'egress', TC_HANDLE, TC_PRIO), this.progs.egress);
    attached(`tc ingress ${this.dev.name}`, tcQuery(this.dev.index, 'ingress', TC_HANDLE, TC_PRIO), this.progs.ingress);
    const idx = this.ctx.ext.iface.index;
    if (this.underlayHook.startsWith('xdp')) attached(`underlay guard (${this.underlayHook})`, xdpQuery(idx).progId, this.progs.guardXdp);
    else if (this.underlayHook.startsWith('tc')) attached(`underlay guard (${this.underlayHook})`, tcQuery(idx, 'ingress', TC_HANDLE, TC_PRIO), this.progs.guardTc);
    else if (this.bpf.underlayHook !== 'none') out.push({ name: 'underlay guard', ok: false, detail: 'not attached yet' });
    out.push(...this.fast.checks());
    for (const [name, map] of Object.entries(this.pinnedMaps())) {
      const path = join(this.bpf.pinRoot, name);
      const [a, b] = [BpfMap.pinnedId(path), map.id()];
      const ok = a === b;
      const detail = a === undefined ? 'not pinned' : ok ? `pinned at ${path}, map ${a}` : `${path} is map ${a}, the programs use map ${b}`;
      out.push({ name: `map ${name}`, ok, detail });
    }
    return out;
  }

  /** Closes the loaded objects (programs stay attached where the kernel holds them). */
  close(): void {
    for (const o of this.objects.splice(0)) o.close();
    this.fast?.close();
  }

  describe() {
    return {
      backend: 'vxlan',
      mode: 'bpf',
      device: this.dev?.name,
      vni: this.opts.vni,
      port: this.opts.port,
      pinRoot: this.bpf.pinRoot,
      underlayGuard: this.underlayHook,
      peers: this.programmer.peerCount(),
      ...this.programmer.stats,
      repairedDevice: this.repairs.device,
      repairedPins: this.repairs.pins,
      reattachedPrograms: this.repairs.attachments,
      ...this.fast.describe(),
      // bypass decapsulates in the guard's tc program: with the guard in XDP, only the send side runs
      ...(this.fast.bypass && !this.underlayHook.startsWith('tc') ? { vxlanBypassReceive: `off: the underlay guard runs as ${this.underlayHook}, and bypass decapsulates in its tc program` } : {}),
    };
  }

  private entriesFor(lease: Lease): Entry<MapOp>[] {
    if (lease.attrs.backendType !== 'vxlan') throw new LeaseFormatError(`peer runs backend ${JSON.stringify(lease.attrs.backendType)}, not vxlan`);
    const { vni, vtepMAC } = decodeVxlanData(lease.attrs);
    if (vni !== this.opts.vni) throw new LeaseFormatError(`peer uses VNI ${vni}, this network uses ${this.opts.vni}`);
    const ip = lease.attrs.publicIP;
    const subnetKey = L.subnetKey(formatIp4(lease.subnet.ip), lease.subnet.len);
    // apply() writes them in UPDATE_ORDER: no program ever finds a route without its member
    return [
      // counters start at zero and are never rewritten while the peer stays (the value compared is '')
      mapEntry('fl_peer_stats', `counters ${ip}`, '', L.memberKey(ip), Buffer.alloc(this.maps.fl_peer_stats.lookupSize)),
      mapEntry('fl_members', `member ${ip}`, '', L.memberKey(ip), L.memberVal()),
      mapEntry('fl_vteps', `vtep ${vtepMAC}`, ip, L.vtepKey(vtepMAC), L.vtepVal(ip)),
      mapEntry('fl_subnets', `subnet ${formatCidr(lease.subnet)}`, vtepMAC, subnetKey, L.subnetVal(vtepMAC)),
      mapEntry('fl_routes', `route ${formatCidr(lease.subnet)}`, `${vtepMAC} ${ip}`, subnetKey, L.routeVal(vtepMAC, ip)),
    ];
  }

  private currentEntries(): Entry<MapOp>[] {
    const out: Entry<MapOp>[] = [];
    const m = this.maps;
    for (const k of m.fl_members.keys()) out.push(mapEntry('fl_members', `member ${L.decodeMemberKey(k)}`, '', k, L.memberVal()));
    for (const k of m.fl_vteps.keys()) {
      const v = m.fl_vteps.lookup(k);
      if (v) out.push(mapEntry('fl_vteps', `vtep ${L.decodeVtepKey(k)}`, L.decodeVtepVal(v).remoteIP, k, v));
    }
    for (const k of m.fl_subnets.keys()) {
      const v = m.fl_subnets.lookup(k);
      const { ip, len } = L.decodeSubnetKey(k);
      if (v) out.push(mapEntry('fl_subnets', `subnet ${ip}/${len}`, L.decodeSubnetVal(v).vtepMAC, k, v));
    }
    for (const k of this.routes.keys()) {
      const v = this.routes.lookup(k);
      const { ip, len } = L.decodeSubnetKey(k);
      if (!v) continue;
      const r = L.decodeRouteVal(v);
      out.push(mapEntry('fl_routes', `route ${ip}/${len}`, `${r.vtepMAC} ${r.remoteIP}`, k, v));
    }
    // the value is not read: a peer's counters are only ever created or removed here
    for (const k of m.fl_peer_stats.keys()) out.push(mapEntry('fl_peer_stats', `counters ${L.decodeMemberKey(k)}`, '', k, Buffer.alloc(m.fl_peer_stats.lookupSize)));
    return out;
  }

  /**
   * Runs map operations as a few native calls: every delete before every update (a VTEP MAC or a
   * member IP that moves from one peer to another is freed before it is taken), deletes from the
   * subnet map down to the members, updates from the members up to the subnets, so the egress program
   * never finds a subnet whose VTEP or member entry is missing. Within that order, one call per map.
   */
  private apply(ops: MapOp[]): (Error | null)[] {
    const rank = (o: MapOp) => (o.action === 'delete' ? DELETE_ORDER : UPDATE_ORDER).indexOf(o.map) + (o.action === 'delete' ? 0 : 10);
    const order = ops.map((_, i) => i).sort((a, b) => rank(ops[a]!) - rank(ops[b]!) || a - b);
    const res: (Error | null)[] = new Array(ops.length).fill(null);
    for (let i = 0; i < order.length; ) {
      const first = ops[order[i]!]!;
      let j = i;
      while (j < order.length && ops[order[j]!]!.map === first.map && ops[order[j]!]!.action === first.action) j++;
      const idx = order.slice(i, j);
      const map = this.map(first.map);
      const errnos = first.action === 'update' ? map.updateMany(idx.map((k) => [ops[k]!.key, ops[k]!.value!])) : map.deleteMany(idx.map((k) => ops[k]!.key));
      errnos.forEach((e, k) => {
        if (!e) return;
        const o = ops[idx[k]!]!;
        res[idx[k]!] = Object.assign(new Error(`bpf map ${o.action} ${o.what}: errno ${e}`), { errno: e, code: errnoName(e) ?? `E${e}`, syscall: `bpf map ${o.action}` });
      });
      i = j;
    }
    return res;
  }
}
