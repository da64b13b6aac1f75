// /metrics in Prometheus text format (prom-client). Values are set from one status snapshot per
// scrape, so a scrape is consistent and costs one read of the data plane.
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { isReady, type AgentStatus } from '../agent/status.js';

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly g = <L extends string>(name: string, help: string, labelNames: L[] = []) => new Gauge<L>({ name, help, labelNames, registers: [this.registry] });
  private readonly c = <L extends string>(name: string, help: string, labelNames: L[] = []) => new Counter<L>({ name, help, labelNames, registers: [this.registry] });

  private readonly ready = this.g('flannel_ready', '1 when the subnet file is written, the backend programmed and every data plane check passes');
  private readonly leaseInfo = this.g('flannel_lease_info', 'our lease (value 1)', ['subnet', 'public_ip']);
  private readonly leaseExpiry = this.g('flannel_lease_expiry_seconds', 'seconds until our lease expires unless renewed (absent for a reservation)');
  private readonly peers = this.g('flannel_peers', 'peer leases known from the etcd watch');
  private readonly backend = this.g('flannel_backend_info', 'backend in use (value 1); fallback_reason says why BPF is not used', ['backend', 'mode', 'fallback_reason']);
  private readonly watchReconnects = this.c('flannel_etcd_watch_reconnects_total', 'times the etcd lease watch was lost and re-established');
  private readonly storeLosses = this.c('flannel_etcd_store_losses_total', 'times etcd came back without its data (revision went back) and this node wrote its lease back');
  private readonly watchStalls = this.c('flannel_etcd_watch_stalls_total', 'lease watches etcd never confirmed, replaced by a new client');
  private readonly watchRelists = this.c('flannel_etcd_watch_relists_total', 'full re-reads of the leases (start, compaction)');
  private readonly watchEvents = this.c('flannel_lease_events_total', 'lease events received from etcd');
  private readonly watchRejected = this.c('flannel_leases_rejected_total', 'leases from other writers that were malformed or conflicting, and skipped');
  private readonly lastEventAge = this.g('flannel_etcd_last_event_age_seconds', 'seconds since the last lease event from etcd');
  private readonly reconcileRuns = this.c('flannel_reconcile_runs_total', 'reconcile passes of the kernel state against the leases');
  private readonly reconcileCorrections = this.c('flannel_reconcile_corrections_total', 'kernel entries added or removed by reconcile (drift repaired)');
  private readonly reconcileFailures = this.c('flannel_reconcile_failures_total', 'peers that could not be programmed and were rolled back');
  private readonly iptablesRepairs = this.c('flannel_iptables_repairs_total', 'iptables chains or jumps restored after they went missing or changed');
  private readonly peerPackets = this.c('flannel_peer_packets_total', 'packets exchanged with a peer, counted by the data plane', ['subnet', 'public_ip', 'direction']);
  private readonly peerBytes = this.c('flannel_peer_bytes_total', 'bytes exchanged with a peer, counted by the data plane', ['subnet', 'public_ip', 'direction']);
  private readonly fastPathPackets = this.c('flannel_fastpath_packets_total', 'pod fast path: packets it carried (fast_tx, fast_rx) and packets it left to the stack, by reason (pass_*)', ['result']);
  private readonly datapathPackets = this.c('flannel_datapath_packets_total', 'packets by data plane verdict: forwarded, received, or a drop reason', ['verdict']);
  private readonly check = this.g('flannel_datapath_check', '1 when a data plane part is in place (program attached, map pinned, device up)', ['check']);

  /** every metric of ours (the default process metrics are prom-client's own) */
  private readonly own = this.registry.getMetricsAsArray() as unknown as (Gauge<string> | Counter<string>)[];

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  private static setCounter<L extends string>(c: Counter<L>, v: number, labels?: Partial<Record<L, string>>): void {
    if (labels) c.inc(labels, v);
    else c.inc(v);
  }

  async render(s: AgentStatus): Promise<string> {
    // every value comes whole from the snapshot (counters as cumulative totals): start each scrape from
    // zero, all of them, or a counter left out of a hand-kept list adds its total again every scrape
    for (const m of this.own) m.reset();
    this.ready.set(isReady(s) ? 1 : 0);
    if (s.lease && s.node) this.leaseInfo.set({ subnet: s.lease.subnet, public_ip: s.node.publicIP }, 1);
    if (s.lease?.expiresInSeconds != null) this.leaseExpiry.set(s.lease.expiresInSeconds);
    this.peers.set(s.peers.length);
    if (s.backend) this.backend.set({ backend: s.backend.backend, mode: s.backend.mode ?? '', fallback_reason: s.backend.fallbackReason ?? '' }, 1);
    const set = <L extends string>(c: Counter<L>, v: number, labels?: Partial<Record<L, string>>) => AgentMetrics.setCounter(c, v, labels);
    set(this.watchReconnects, s.watch.reconnects);
    set(this.storeLosses, s.watch.storeLosses);
    set(this.watchStalls, s.watch.watchStalls);
    set(this.watchRelists, s.watch.relists);
    set(this.watchEvents, s.watch.events);
    set(this.watchRejected, s.watch.rejected);
    if (s.watch.lastEventAgeSeconds != null) this.lastEventAge.set(s.watch.lastEventAgeSeconds);
    set(this.reconcileRuns, s.reconcile.runs);
    set(this.reconcileCorrections, s.reconcile.corrections);
    set(this.reconcileFailures, s.reconcile.failures);
    set(this.iptablesRepairs, s.firewall.repairs);
    for (const p of s.traffic?.peers ?? []) {
      const l = { subnet: p.subnet, public_ip: p.publicIP };
      set(this.peerPackets, p.txPackets, { ...l, direction: 'tx' });
      set(this.peerPackets, p.rxPackets, { ...l, direction: 'rx' });
      set(this.peerBytes, p.txBytes, { ...l, direction: 'tx' });
      set(this.peerBytes, p.rxBytes, { ...l, direction: 'rx' });
    }
    for (const [verdict, n] of Object.entries(s.traffic?.packets ?? {})) set(this.datapathPackets, n, { verdict });
    for (const [result, n] of Object.entries(s.traffic?.fastPath ?? {})) set(this.fastPathPackets, n, { result });
    for (const c of s.checks) this.check.set({ check: c.name }, c.ok ? 1 : 0);
    return this.registry.metrics();
  }
}
