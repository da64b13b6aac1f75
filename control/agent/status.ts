// What the agent reports about itself: served as JSON on /status, turned into /metrics, and printed by
// `flannelctl status`. One snapshot type so the three never disagree.
import type { BackendDescription, HealthCheck, TrafficView } from '../backend/types.js';
import { table } from '../text.js';

export interface AgentStatus {
  ready: boolean;
  pid: number;
  /** process.memoryUsage(): rss, heapTotal, heapUsed, external, arrayBuffers (bytes) */
  memory: Record<string, number>;
  startedAt: string;
  node: { iface: string; ifaceAddr: string; publicIP: string; publicIPv6?: string } | null;
  network: string | null;
  lease: { subnet: string; expiration: string | null; expiresInSeconds: number | null } | null;
  /** the backend's own description: type, mode, device, and fallbackReason when BPF could not be used */
  backend: BackendDescription | null;
  peers: { subnet: string; publicIP: string; ipv6Subnet?: string; publicIPv6?: string | null }[];
  watch: { events: number; relists: number; rejected: number; reconnects: number; storeLosses: number; watchStalls: number; lastEventAgeSeconds: number | null };
  /** the first programming of every known peer, and the whole start, in ms (null until ready) */
  startup: { programMs: number | null; readyMs: number | null };
  reconcile: { runs: number; corrections: number; failures: number; rejected: number; lastMs?: number | null };
  firewall: { ipMasq: boolean; forwardRules: boolean; repairs: number; lastError: string | null };
  traffic: TrafficView | null;
  checks: HealthCheck[];
}

/** Ready means: subnet file written, backend programmed, and every data plane check passing. */
export const isReady = (s: Pick<AgentStatus, 'ready' | 'checks'>) => s.ready && s.checks.every((c) => c.ok);

const dur = (s: number) =>
  s >= 3600
    ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`
    : s >= 60
      ? `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`
      : `${s.toFixed(s < 10 ? 1 : 0)}s`;

/** The status as a person reads it (`flannelctl status`). */
export function renderStatus(s: AgentStatus): string {
  const out: string[] = [];
  const b = s.backend;
  out.push(`ready:     ${isReady(s) ? 'yes' : s.ready ? 'no (a data plane check fails)' : 'no (starting: subnet file not written yet)'}`);
  if (s.node)
    out.push(
      `node:      ${[s.node.publicIP !== '0.0.0.0' ? s.node.publicIP : '', s.node.publicIPv6 ?? ''].filter(Boolean).join(' ')} on ${s.node.iface}${s.node.ifaceAddr && s.node.ifaceAddr !== s.node.publicIP ? ` (interface address ${s.node.ifaceAddr})` : ''}, agent pid ${s.pid} since ${s.startedAt}`,
    );
  if (s.network) out.push(`network:   ${s.network}`);
  if (s.lease) out.push(`lease:     ${s.lease.subnet}, ${s.lease.expiresInSeconds === null ? 'reservation (no expiry)' : `expires in ${dur(s.lease.expiresInSeconds)} unless renewed`}`);
  if (b) {
    const mode = b.mode ? ` (${b.mode})` : '';
    const why = `${b.fallbackReason ? `, classic because: ${b.fallbackReason}` : ''}${b.underlayGuard ? `, underlay guard: ${b.underlayGuard}` : ''}`;
    out.push(`backend:   ${b.backend}${mode} on ${b.device}${why}`);
    if (b.mode === 'bpf') out.push(`fast path: ${b.fastPath === 'on' ? `on, ${b.localPods} local pods registered` : `off (${b.fastPathOffBecause ?? 'unknown'})`}`);
    if (b.mode === 'bpf')
      out.push(
        `bypass:    ${b.vxlanBypass === 'on' ? `on: pods <-> underlay without flannel.1${b.vxlanBypassReceive ? ` (receive ${b.vxlanBypassReceive})` : ''}` : `off (${b.vxlanBypassOffBecause ?? 'unknown'})`}`,
      );
  }
  const w = s.watch;
  out.push(
    `etcd:      ${w.events} lease events, ${w.relists} re-lists, ${w.reconnects} reconnects, ${w.storeLosses ? `${w.storeLosses} store losses recovered, ` : ''}${w.rejected} leases rejected${w.lastEventAgeSeconds !== null ? `, last event ${dur(w.lastEventAgeSeconds)} ago` : ''}`,
  );
  out.push(
    `reconcile: ${s.reconcile.runs} runs, ${s.reconcile.corrections} corrections, ${s.reconcile.failures} failures${s.reconcile.lastMs != null ? `, last took ${s.reconcile.lastMs.toFixed(0)} ms` : ''}`,
  );
  out.push(
    `iptables:  ip-masq ${s.firewall.ipMasq ? 'on' : 'off'}, forward rules ${s.firewall.forwardRules ? 'on' : 'off'}, ${s.firewall.repairs} repairs${s.firewall.lastError ? `, last error: ${s.firewall.lastError}` : ''}`,
  );
  const traffic = new Map((s.traffic?.peers ?? []).map((p) => [p.subnet, p]));
  // a network with IPv6 adds each peer's IPv6 subnet and public IPv6
  const v6 = s.peers.some((p) => p.ipv6Subnet);
  const rows = [['PEER SUBNET', 'PUBLIC IP', ...(v6 ? ['IPV6 SUBNET', 'PUBLIC IPV6'] : []), 'TX PKTS', 'TX BYTES', 'RX PKTS', 'RX BYTES']];
  for (const p of s.peers) {
    const t = traffic.get(p.subnet);
    const six = v6 ? [p.ipv6Subnet ?? '-', p.publicIPv6 ?? '-'] : [];
    rows.push([p.subnet, p.publicIP, ...six, ...(t ? [t.txPackets, t.txBytes, t.rxPackets, t.rxBytes].map(String) : ['-', '-', '-', '-'])]);
  }
  out.push('', s.peers.length ? table(rows) : 'no peers');
  if (s.traffic)
    out.push(
      '',
      `packets:   ${Object.entries(s.traffic.packets)
        .map(([k, v]) => `${k}=${v}`)
        .join('  ')}`,
    );
  else if (s.ready) out.push('', "packets:   this backend does not count (classic vxlan and host-gw use the kernel's own paths)");
  if (s.traffic?.fastPath)
    out.push(
      `fast path: ${Object.entries(s.traffic.fastPath)
        .map(([k, v]) => `${k}=${v}`)
        .join('  ')}`,
    );
  if (s.checks.length) out.push('', 'data plane:', ...s.checks.map((c) => `  ${c.ok ? 'ok  ' : 'FAIL'}  ${c.name}: ${c.detail}`));
  return out.join('\n') + '\n';
}
