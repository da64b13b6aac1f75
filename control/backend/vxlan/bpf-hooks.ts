// BPF mode's hooks and pins, and their repair: our programs on flannel.1, the underlay guard on exactly
// one hook of the underlay (XDP or tc, never over someone else's program), the pinned maps, and the
// health checks that say whether each is in place. The reconcile loop calls ensure() every interval.
import { existsSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../../log.js';
import { BpfMap, TC_HANDLE, TC_PRIO, ensureBpffs, progInfo, progInfoById, tcAttach, tcQuery, xdpAttach, xdpDetach, xdpQuery } from '../../kernel/bpf.js';
import type { Link } from '../../kernel/netlink.js';
import type { ExternalInterface } from '../../iface/select.js';
import type { HealthCheck } from '../types.js';
import type { FastPath } from './fast-path.js';
import { GUARD_PROGRAMS, describeGuard, removeGuards, xdpModeOf } from './underlay-guard.js';

export type UnderlayHook = 'auto' | 'xdp' | 'xdp-generic' | 'tc' | 'none';

/** Program fds: flannel.1's two, and the guard's for each hook (tc: bypass mode's when it runs). */
export interface HookPrograms {
  egress: number;
  ingress: number;
  guardTc: number;
  guardXdp: number;
}

// Virtual drivers where native XDP takes packets off the GRO path: measured -70% TCP on veth here.
const TC_KINDS = new Set(['veth', 'bridge', 'vxlan', 'bond', 'team', 'macvlan', 'ipvlan', 'vlan', 'tun', 'tap', 'dummy', 'wireguard', 'geneve']);

export class BpfHooks {
  /** where the guard runs, as status shows it */
  underlayHook = 'not attached';
  private xdpRefused = false;
  /** the hook our guard holds ("ifindex hook"): when it changes, ours goes from every other hook */
  private guardAt?: string;
  readonly repairs = { attachments: 0, pins: 0 };

  constructor(
    private readonly ext: ExternalInterface,
    private readonly want: UnderlayHook,
    private readonly pinRoot: string,
    private readonly progs: HookPrograms,
    private readonly fast: FastPath,
    private readonly log: Logger,
  ) {}

  /** flannel.1's own hooks hold no per-peer state: safe before any peer is known, replaced in place. */
  attachDevice(dev: Link): void {
    tcAttach(dev.index, 'egress', this.progs.egress, TC_HANDLE, TC_PRIO);
    tcAttach(dev.index, 'ingress', this.progs.ingress, TC_HANDLE, TC_PRIO);
  }

  /** Re-attaches whatever is missing (a hook removed by hand, a restarted underlay link), then the guard. */
  async ensureAttached(dev: Link): Promise<void> {
    for (const [dir, fd] of [
      ['egress', this.progs.egress],
      ['ingress', this.progs.ingress],
    ] as const) {
      if (tcQuery(dev.index, dir, TC_HANDLE, TC_PRIO) !== progInfo(fd).id) {
        // attachDevice() attached both, so reaching here means someone removed one
        tcAttach(dev.index, dir, fd, TC_HANDLE, TC_PRIO);
        this.repairs.attachments++;
        this.log.warn({ hook: `${dev.name} ${dir}` }, 're-attached a BPF program that was missing');
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
    const { ext, log } = this;
    const idx = ext.iface.index;
    let keep: { ifindex: number; hook: 'tc' | 'xdp' } | undefined;
    if (this.want !== 'none') {
      // auto: native XDP unless the device is a virtual kind (a physical NIC reports no kind) or bypass
      // mode runs (its tc program is the guard and the decapsulation in one); when XDP is refused or
      // another program holds it, tc
      const w = this.want;
      const xdp = w === 'xdp' ? 'native' : w === 'xdp-generic' ? 'generic' : w === 'auto' && !this.fast.bypass && !TC_KINDS.has(ext.iface.kind) ? 'native' : undefined;
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
    const { ext, log } = this;
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
      log.info(
        { iface: ext.iface.name, mode, err: (e as Error).message },
        busy ? 'another XDP program took the underlay interface meanwhile; the underlay guard uses tc' : 'XDP not available for the underlay guard, using tc',
      );
      return false;
    }
  }

  /**
   * A pin removed (or replaced) by hand does not stop the data plane (the programs hold the maps) but
   * hides it from bpftool and from the next agent, which would start with empty maps: pin ours again.
   */
  ensurePinned(maps: Record<string, BpfMap>): void {
    let missing = false;
    if (this.fast.ensurePinned()) this.repairs.pins++;
    for (const [name, map] of Object.entries(maps)) {
      const path = join(this.pinRoot, name);
      if (BpfMap.pinnedId(path) === map.id()) continue;
      if (!missing) ensureBpffs(this.pinRoot);
      missing = true;
      if (existsSync(path)) unlinkSync(path);
      map.pin(path);
      this.repairs.pins++;
      this.log.warn({ map: name, path }, 'a BPF map pin was missing or replaced; pinned ours again');
    }
  }

  /** Each hook holds our program, each map is pinned and is the one our programs use. */
  checks(dev: Link, maps: Record<string, BpfMap>): HealthCheck[] {
    const out: HealthCheck[] = [];
    const attached = (name: string, got: number | null | undefined, fd: number) => {
      const want = progInfo(fd).id;
      out.push({ name, ok: got === want, detail: got === want ? `program ${want}` : got ? `program ${got} instead of ${want}` : 'nothing attached' });
    };
    attached(`tc egress ${dev.name}`, tcQuery(dev.index, 'egress', TC_HANDLE, TC_PRIO), this.progs.egress);
    attached(`tc ingress ${dev.name}`, tcQuery(dev.index, 'ingress', TC_HANDLE, TC_PRIO), this.progs.ingress);
    const idx = this.ext.iface.index;
    if (this.underlayHook.startsWith('xdp')) attached(`underlay guard (${this.underlayHook})`, xdpQuery(idx).progId, this.progs.guardXdp);
    else if (this.underlayHook.startsWith('tc')) attached(`underlay guard (${this.underlayHook})`, tcQuery(idx, 'ingress', TC_HANDLE, TC_PRIO), this.progs.guardTc);
    else if (this.want !== 'none') out.push({ name: 'underlay guard', ok: false, detail: 'not attached yet' });
    out.push(...this.fast.checks());
    for (const [name, map] of Object.entries(maps)) {
      const path = join(this.pinRoot, name);
      const [a, b] = [BpfMap.pinnedId(path), map.id()];
      const ok = a === b;
      const detail = a === undefined ? 'not pinned' : ok ? `pinned at ${path}, map ${a}` : `${path} is map ${a}, the programs use map ${b}`;
      out.push({ name: `map ${name}`, ok, detail });
    }
    return out;
  }
}
