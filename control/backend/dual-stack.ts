// A node with IPv6 runs two halves of its backend, as flannel does: the IPv4 half (flannel.1 in BPF
// or classic mode, host-gw's IPv4 routes; absent on an IPv6-only network) and the IPv6 half
// (flannel-v6.1, host-gw's IPv6 routes). Each half has its own peer programmer over the same leases;
// this joins what they publish into one lease: PublicIP and BackendData from the IPv4 half, PublicIPv6
// and BackendV6Data from the IPv6 half ("0.0.0.0" and no BackendData on an IPv6-only node).
import type { Lease, LeaseAttrs } from '../subnet/lease.js';
import type { Backend, BackendDescription, HealthCheck, ReconcileResult } from './types.js';

export class DualStackBackend implements Backend {
  readonly leaseType: string;

  constructor(
    private readonly v4: Backend | undefined,
    private readonly v6: Backend,
  ) {
    this.leaseType = v6.leaseType;
  }

  private get halves(): Backend[] {
    return this.v4 ? [this.v4, this.v6] : [this.v6];
  }

  async prepare(): Promise<{ attrs: LeaseAttrs; mtu: number }> {
    const r4 = this.v4 ? await this.v4.prepare() : undefined;
    const r6 = await this.v6.prepare();
    const attrs: LeaseAttrs = { publicIP: r4?.attrs.publicIP ?? '0.0.0.0', publicIPv6: r6.attrs.publicIPv6, backendType: this.leaseType };
    if (r4?.attrs.backendData !== undefined) attrs.backendData = r4.attrs.backendData;
    if (r6.attrs.backendV6Data !== undefined) attrs.backendV6Data = r6.attrs.backendV6Data;
    // FLANNEL_MTU: the IPv4 device's when there is one, as flannel
    return { attrs, mtu: r4?.mtu ?? r6.mtu };
  }

  async start(own: Lease): Promise<void> {
    for (const h of this.halves) await h.start(own);
  }

  async handle(events: Parameters<Backend['handle']>[0]): Promise<void> {
    for (const h of this.halves) await h.handle(events);
  }

  async reconcile(peers: Lease[]): Promise<ReconcileResult> {
    const out = { added: 0, removed: 0 };
    for (const h of this.halves) {
      const r = await h.reconcile(peers);
      out.added += r.added;
      out.removed += r.removed;
    }
    return out;
  }

  close(): void {
    for (const h of this.halves) h.close?.();
  }

  traffic = () => this.v4?.traffic?.();

  async checks(): Promise<HealthCheck[]> {
    const out: HealthCheck[] = [];
    for (const h of this.halves) out.push(...((await h.checks?.()) ?? []));
    return out;
  }

  describe(): BackendDescription {
    const d6 = this.v6.describe();
    const ipv6 = { device: d6.device, peers: d6.peers, ...(d6.directRoutingPeers !== undefined ? { directRoutingPeers: d6.directRoutingPeers } : {}) };
    if (!this.v4) return { ...d6, ipv6 };
    const d4 = this.v4.describe();
    return {
      ...d4,
      reconciles: d4.reconciles,
      corrections: d4.corrections + d6.corrections,
      failures: d4.failures + d6.failures,
      rejected: d4.rejected + d6.rejected,
      ipv6,
    };
  }
}
