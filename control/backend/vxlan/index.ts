// The vxlan backend: BPF mode unless disabled or impossible here, else classic flannel.1.
// A failure at any step of BPF set-up is logged once with its reason, the partial BPF state is removed,
// and the node runs classic vxlan: still wire-compatible, just without the BPF data plane.
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Lease } from '../../subnet/lease.js';
import type { Backend, BackendContext } from '../types.js';
import { detachAllPods } from '../../bpf/local-pods.js';
import { FastPathRequiredError } from './fast-path.js';
import { BpfVxlanBackend, type BpfModeOptions } from './bpf-mode.js';
import { ClassicVxlanBackend } from './classic.js';

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
      this.dropFastPath();
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
        this.dropFastPath();
        removePins(this.bpf.pinRoot);
        this.ctx.log.warn({ reason: this.fallbackReason }, 'BPF data plane unavailable, falling back to classic vxlan (routes, neighbours, FDB)');
      }
    }
    this.active = new ClassicVxlanBackend(this.ctx);
    return this.active.prepare();
  }

  /** A BPF run before this one may have left the fast-path program on pod veths: classic has no maps for it. */
  private dropFastPath(): void {
    try {
      const n = detachAllPods(this.bpf.pinRoot);
      if (n) this.ctx.log.info({ veths: n }, 'pod fast path: detached the program from pod veths (classic mode)');
    } catch (e) {
      this.ctx.log.warn({ err: (e as Error).message }, 'pod fast path: could not detach the program from pod veths');
    }
  }

  start = (own: Lease) => this.active.start(own);
  handle: Backend['handle'] = (events) => this.active.handle(events);
  reconcile = (peers: Lease[]) => this.active.reconcile(peers);
  close = () => this.active?.close?.();
  traffic = () => this.active.traffic?.();
  checks = async () => (await this.active.checks?.()) ?? [];

  describe() {
    return { ...this.active.describe(), ...(this.fallbackReason ? { fallbackReason: this.fallbackReason } : {}) };
  }
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
