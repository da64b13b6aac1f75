// The vxlan backend: BPF mode unless disabled or impossible here, else classic flannel.1 (and, on a
// dual-stack network, flannel-v6.1). BPF mode carries both families through its one external device.
// A failure at any step of BPF set-up is logged once with its reason, the partial BPF state is removed,
// and the node runs classic vxlan: still wire-compatible, just without the BPF data plane.
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Lease } from '../../subnet/lease.js';
import type { Backend, BackendContext, BackendDescription } from '../types.js';
import { detachAllPods } from '../../datapath/local-pods.js';
import { FastPathRequiredError } from './fast-path.js';
import { BpfVxlanBackend, type BpfModeOptions } from './bpf-mode.js';
import { ClassicVxlanBackend } from './classic.js';
import { ClassicVxlan6Backend } from './classic6.js';
import { DualStackBackend } from '../dual-stack.js';
import { removeGuards } from './underlay-guard.js';
import type { Logger } from '../../log.js';

export interface VxlanModeOptions extends BpfModeOptions {
  enabled: boolean;
}

export class VxlanBackend implements Backend {
  readonly leaseType = 'vxlan';
  private active!: Backend;
  fallbackReason?: string;

  constructor(
    private readonly ctx: BackendContext,
    private readonly bpf: VxlanModeOptions,
  ) {}

  async prepare() {
    if (!this.bpf.enabled) {
      this.fallbackReason = 'disabled with --no-bpf';
    } else {
      const b = new BpfVxlanBackend(this.ctx, this.bpf);
      try {
        const r = await b.prepare();
        this.active = b;
        return r;
      } catch (e) {
        b.close();
        if (e instanceof FastPathRequiredError) throw e;
        this.fallbackReason = (e as Error).message;
        this.ctx.log.warn({ reason: this.fallbackReason }, 'BPF data plane unavailable, falling back to classic vxlan (routes, neighbours, FDB)');
      }
    }
    this.removedGuards = await leaveBpfMode(this.bpf.pinRoot, this.ctx.log);
    // classic dual stack is flannel's: flannel.1 for IPv4 and flannel-v6.1 for IPv6 (IPv6-only: no flannel.1)
    const { cfg } = this.ctx;
    this.active = cfg.ipv6 ? new DualStackBackend(cfg.enableIPv4 ? new ClassicVxlanBackend(this.ctx) : undefined, new ClassicVxlan6Backend(this.ctx)) : new ClassicVxlanBackend(this.ctx);
    return this.active.prepare();
  }

  /** what leaveBpfMode took off the underlay at start (classic mode) */
  private removedGuards?: string[];

  start = (own: Lease) => this.active.start(own);
  handle: Backend['handle'] = (events) => this.active.handle(events);
  reconcile = (peers: Lease[]) => this.active.reconcile(peers);
  close = () => this.active?.close?.();
  traffic = () => this.active.traffic?.();
  checks = async () => (await this.active.checks?.()) ?? [];

  describe(): BackendDescription {
    const guard = this.removedGuards ? { underlayGuard: `none${this.removedGuards.length ? ` (removed at start: ${this.removedGuards.join(', ')})` : ''}` } : {};
    return { ...this.active.describe(), ...guard, ...(this.fallbackReason ? { fallbackReason: this.fallbackReason } : {}) };
  }
}

/**
 * What BPF mode leaves on a node that a run without it (classic vxlan, host-gw, udp) must not keep:
 * our underlay guard (its members map would freeze, and nodes joining later be dropped as spoofed),
 * the fast-path program on pod veths (it would redirect to a flannel.1 without BPF), and the pins.
 * Returns where a guard was removed. Failures are logged: none of this may stop the agent starting.
 */
export async function leaveBpfMode(pinRoot: string, log: Logger): Promise<string[]> {
  let removed: string[] = [];
  try {
    removed = await removeGuards();
    if (removed.length) log.info({ removed }, 'removed the underlay guard a BPF run left (this run does not use it)');
  } catch (e) {
    log.warn({ err: (e as Error).message }, 'could not check the underlay for a guard left by a BPF run');
  }
  try {
    const n = detachAllPods(pinRoot);
    if (n) log.info({ veths: n }, 'pod fast path: detached the program from pod veths (not in BPF mode)');
  } catch (e) {
    log.warn({ err: (e as Error).message }, 'pod fast path: could not detach the program from pod veths');
  }
  removePins(pinRoot);
  return removed;
}

/** Removes the maps this project pins (fl_*), and nothing else, from the pin root. */
export function removePins(pinRoot: string): void {
  let names: string[] = [];
  try {
    names = readdirSync(pinRoot);
  } catch {
    return;
  }
  for (const n of names) if (n.startsWith('fl_')) rmSync(join(pinRoot, n), { force: true });
}
