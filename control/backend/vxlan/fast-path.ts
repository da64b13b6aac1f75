// The pod fast path in BPF mode (not in flannel): which ingress program flannel.1 runs, the program
// on pod veths, and their upkeep. The CNI plugin registers pods (control/datapath/local-pods.ts); here the
// agent decides whether the fast path runs at all, attaches the program to veths registered before
// it ran, detaches it when off, and drops entries whose veth is gone.
import { existsSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { constants as osConstants } from 'node:os';
import { BpfObject, type BpfMap, progInfo, testRun } from '../../kernel/bpf.js';
import { addon, errnoName } from '../../kernel/addon.js';
import { listLinks } from '../../kernel/netlink.js';
import * as L from '../../datapath/layout.js';
import { countersByIndex } from '../../datapath/inspect.js';
import { PROGRAM, mapLayout, type MapLayout } from '../../datapath/objects.js';
import { POD_PROGRAM_PIN, attachPodProgramFd, detachPodProgram, listPods, podProgramOn } from '../../datapath/local-pods.js';
import type { BackendDescription, HealthCheck } from '../types.js';

export type FastPathMode = 'auto' | 'on' | 'off';
/** bypass mode: the pod fast path also encapsulates and decapsulates itself, skipping flannel.1 */
export type BypassMode = 'auto' | 'on' | 'off';

/**
 * The frame both load-time probes run on: an IPv4 datagram with a payload, which the encap probe can
 * add VXLAN room to (the conntrack probe looks up a fixed tuple, not the packet).
 */
const PROBE_PACKET = Buffer.concat([Buffer.alloc(12), Buffer.from([0x08, 0x00]), Buffer.from('450000300000000040110000' + '0a000001' + '0a000002', 'hex'), Buffer.alloc(28)]);

/** --fast-path=on (or --vxlan-bypass=on) and the kernel refused: the agent stops rather than run without it. */
export class FastPathRequiredError extends Error {
  override name = 'FastPathRequiredError';
}

export interface FastPathMaps {
  fl_local_pods: BpfMap;
  /** the same pods by IPv6 address */
  fl_local_pods6: BpfMap;
  fl_fast_cfg: BpfMap;
  fl_fast_stats: BpfMap;
}

export class FastPath {
  private obj?: BpfObject;
  /** why the fast path is off, undefined while it runs */
  reason?: string;
  /** bypass mode runs (send side; the receive side needs the underlay's tc hook, see underlayProgram) */
  bypass = false;
  /** why bypass mode is off, undefined while it runs */
  bypassReason?: string;
  readonly stats = { attached: 0, detached: 0, stalePods: 0 };

  constructor(
    private readonly mode: FastPathMode,
    private readonly pinRoot: string,
    private readonly maps: FastPathMaps,
    private readonly log: Logger,
    private readonly bypassMode: BypassMode = 'off',
    /** why bypass cannot serve this network at all (it is refused like a kernel that cannot) */
    private readonly bypassUnsupported?: string,
  ) {}

  get on(): boolean {
    return this.obj !== undefined;
  }

  /**
   * Loads the fast-path programs. The kernel's verifier is the safety check: it refuses them without
   * the conntrack kfuncs (bpf_skb_ct_lookup), bpf_redirect_peer or BTF. --fast-path=on makes a refusal
   * fatal; the default turns the fast path off and says why.
   */
  /** `layout`: the maps' flags and sizes, as the other objects of this pin root were loaded with */
  async load(path: string, layout: MapLayout = mapLayout(addon().numPossibleCpus)): Promise<void> {
    await this.loadFastPath(path, layout);
    if (this.bypassMode === 'off') {
      this.bypassReason = 'disabled with --vxlan-bypass=off';
      return;
    }
    let why: string | undefined;
    if (!this.obj) why = `it is part of the pod fast path, which is off: ${this.reason}`;
    else if (this.bypassUnsupported) why = this.bypassUnsupported;
    else {
      // the verifier accepts the helper with any flags; whether the kernel does UDP-tunnel room (and
      // so GSO that segments as flannel.1 would) shows only when it runs
      const errno = (await testRun(this.obj.program(PROGRAM.encapProbe).fd, PROBE_PACKET)).retval;
      if (errno !== 0) why = `the kernel refuses VXLAN encapsulation from BPF (bpf_skb_adjust_room with the UDP tunnel flags: errno ${errno}${errnoName(errno) ? ` ${errnoName(errno)}` : ''})`;
    }
    if (!why) {
      this.bypass = true;
      return;
    }
    if (this.bypassMode === 'on') throw new FastPathRequiredError(`--vxlan-bypass=on: ${why}`);
    this.bypassReason = why;
    this.log.warn({ reason: why }, 'vxlan bypass off: flannel.1 encapsulates');
  }

  private async loadFastPath(path: string, layout: MapLayout): Promise<void> {
    if (this.mode === 'off') {
      this.reason = 'disabled with --fast-path=off';
      return;
    }
    let why: string | undefined;
    try {
      this.obj = await BpfObject.open(path, this.pinRoot, this.log, L.REPLACEABLE_MAPS, layout.flags, layout.sizes);
      // the verifier accepting the programs does not prove the conntrack lookup works as we call it
      // (a kernel may refuse our options at run time): ask it once, so that "on" means it can engage
      const errno = (await testRun(this.obj.program(PROGRAM.ctProbe).fd, PROBE_PACKET)).retval;
      if (errno !== osConstants.errno.ENOENT) {
        why = `the kernel's conntrack lookup from BPF fails (errno ${errno}${errnoName(errno) ? ` ${errnoName(errno)}` : ''}): no flow could ever be recognised`;
        this.close();
      }
    } catch (e) {
      why = `the kernel refused the fast-path programs (they need the conntrack kfunc bpf_skb_ct_lookup, bpf_redirect_peer and kernel BTF): ${(e as Error).message}`;
    }
    if (!why) return;
    if (this.mode === 'on') throw new FastPathRequiredError(`--fast-path=on: ${why}`);
    this.reason = why;
    this.log.warn({ reason: why }, 'pod fast path off');
  }

  /** flannel.1's ingress program: the fast one when on (same checks, then delivery into pods). */
  ingressProgram(plain: number): number {
    return this.obj ? this.obj.program(PROGRAM.ingressFast).fd : plain;
  }

  private get podProgram(): number {
    return this.obj!.program(PROGRAM.podEgress).fd;
  }

  /** The underlay's tc ingress program: in bypass mode the guard that also decapsulates, else `guard`. */
  underlayProgram(guard: number): number {
    return this.bypass ? this.obj!.program(PROGRAM.guardBypass).fd : guard;
  }

  /** For the send side: where flannel.1 is, the outer source address in bypass mode; and the switches. */
  configure(vtepIfindex: number, localIP: string): void {
    const flags = (this.on ? L.FAST_ON : 0) | (this.bypass ? L.FAST_BYPASS : 0);
    this.maps.fl_fast_cfg.update(L.u32Key(0), L.fastCfgVal({ vtepIfindex, flags, localIP }));
  }

  /** The program pin is the CNI plugin's switch: present exactly while the fast path runs. */
  ensurePinned(): boolean {
    const path = join(this.pinRoot, POD_PROGRAM_PIN);
    if (!this.on) {
      if (existsSync(path)) unlinkSync(path);
      return false;
    }
    if (BpfObject.pinnedProgramId(path) === progInfo(this.podProgram).id) return false;
    if (existsSync(path)) unlinkSync(path);
    this.obj!.pinProgram(PROGRAM.podEgress, path);
    return true;
  }

  /** Every registered pod has our current program on its veth (none when off); gone veths leave the maps. */
  async reconcile(): Promise<void> {
    const tables = [this.maps.fl_local_pods, this.maps.fl_local_pods6].map((map) => ({ map, pods: listPods(map) }));
    if (!tables.some((t) => t.pods.length)) return;
    const links = new Map((await listLinks()).map((l) => [l.index, l]));
    const want = this.on ? progInfo(this.podProgram).id : undefined;
    const seen = new Set<number>();
    const gone: string[] = [];
    let attached = 0;
    for (const { map, pods } of tables) {
      const stale: Buffer[] = [];
      for (const p of pods) {
        const link = links.get(p.ifindex);
        // a pod gone without DEL: its ifindex may already belong to another device
        if (!link || link.mac !== p.hostMAC) {
          // only if the entry still names that veth: a new pod may have taken the IP meanwhile
          const cur = map.lookup(L.podKey(p.ip));
          const now = cur && L.decodePodVal(cur);
          if (now && now.ifindex === p.ifindex && now.hostMAC === p.hostMAC) stale.push(L.podKey(p.ip));
          continue;
        }
        // a dual-stack pod is in both maps: one veth, one program
        if (seen.has(p.ifindex)) continue;
        seen.add(p.ifindex);
        const got = podProgramOn(p.ifindex);
        if (want !== undefined && got !== want) {
          attachPodProgramFd(p.ifindex, this.podProgram);
          attached++;
        } else if (want === undefined && got) {
          detachPodProgram(p.ifindex);
          this.stats.detached++;
        }
      }
      if (stale.length) {
        map.deleteMany(stale);
        this.stats.stalePods += stale.length;
        gone.push(...stale.map((k) => L.decodePodKey(k)));
      }
    }
    if (gone.length) this.log.info({ pods: gone }, 'pod fast path: dropped pods whose veth is gone');
    if (attached) {
      this.stats.attached += attached;
      this.log.info({ veths: attached }, 'pod fast path: attached the current program to pod veths');
    }
  }

  counters(): Record<L.FastResult, number> {
    const c = countersByIndex(this.maps.fl_fast_stats, L.FAST_RESULTS);
    return Object.fromEntries(L.FAST_RESULTS.map((r) => [r, c[r].packets])) as Record<L.FastResult, number>;
  }

  checks(): HealthCheck[] {
    if (!this.on) return [];
    const path = join(this.pinRoot, POD_PROGRAM_PIN);
    const id = BpfObject.pinnedProgramId(path);
    const want = progInfo(this.podProgram).id;
    return [
      {
        name: 'pod fast path program',
        ok: id === want,
        detail: id === want ? `pinned at ${path}, program ${want}` : id === undefined ? `not pinned at ${path}` : `${path} is program ${id}, not ${want}`,
      },
    ];
  }

  describe(): Pick<BackendDescription, 'fastPath' | 'fastPathOffBecause' | 'vxlanBypass' | 'vxlanBypassOffBecause' | 'localPods' | 'attached' | 'detached' | 'stalePods'> {
    return {
      fastPath: this.on ? 'on' : 'off',
      ...(this.reason ? { fastPathOffBecause: this.reason } : {}),
      vxlanBypass: this.bypass ? 'on' : 'off',
      ...(this.bypassReason ? { vxlanBypassOffBecause: this.bypassReason } : {}),
      // pods, not addresses: a dual-stack pod has an entry in each map
      localPods: new Set([...listPods(this.maps.fl_local_pods), ...listPods(this.maps.fl_local_pods6)].map((p) => p.ifindex)).size,
      ...this.stats,
    };
  }

  close(): void {
    this.obj?.close();
    this.obj = undefined;
    this.bypass = false;
  }
}
