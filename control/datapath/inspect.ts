// Reads the pinned maps of a node's data plane and decodes them: what `flannelctl maps` prints.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { BpfMap } from '../kernel/bpf.js';
import * as L from './layout.js';
import { table } from '../text.js';
import { POD_PROGRAM_PIN, listPods } from './local-pods.js';
import { MAP } from './objects.js';

export interface PeerView {
  subnet: string;
  vtepMAC: string;
  hostIP: string | null;
  member: boolean;
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
}

export interface DataPlaneView {
  pinRoot: string;
  config: L.FlConfig | null;
  peers: PeerView[];
  counters: Record<L.Reason, { packets: number; bytes: number }>;
  /** the pod fast path; null when its maps are not pinned (an agent of an earlier version) */
  fastPath: FastPathView | null;
}

export interface FastPathView {
  on: boolean;
  vtepIfindex: number;
  localPods: L.LocalPod[];
  counters: Record<L.FastResult, { packets: number; bytes: number }>;
}

export type DataPlaneMaps = Record<'fl_subnets' | 'fl_vteps' | 'fl_members' | 'fl_config' | 'fl_stats' | 'fl_peer_stats', BpfMap> &
  /** the IPv6 maps (an agent of an earlier version pinned none) */
  Partial<Record<'fl_routes6' | 'fl_peer_stats6', BpfMap>>;

/** Opens the pinned maps (as flannelctl does, from outside the agent), decodes them, closes them. */
export function readDataPlane(pinRoot: string): DataPlaneView {
  const open = (name: string) => BpfMap.openPinned(join(pinRoot, name));
  const maps: DataPlaneMaps = {
    fl_subnets: open('fl_subnets'),
    fl_vteps: open('fl_vteps'),
    fl_members: open('fl_members'),
    fl_config: open('fl_config'),
    fl_stats: open('fl_stats'),
    fl_peer_stats: open('fl_peer_stats'),
    ...(existsSync(join(pinRoot, 'fl_routes6')) ? { fl_routes6: open('fl_routes6'), fl_peer_stats6: open('fl_peer_stats6') } : {}),
  };
  try {
    return { ...decodeDataPlane(pinRoot, maps), fastPath: readFastPath(pinRoot) };
  } finally {
    for (const m of Object.values(maps)) m.close();
  }
}

/** A per-CPU counter array (fl_stats, fl_fast_stats) summed over CPUs, slot i named names[i]. */
export function countersByIndex<N extends string>(map: BpfMap, names: readonly N[]): Record<N, { packets: number; bytes: number }> {
  return Object.fromEntries(
    names.map((r, i) => {
      const v = map.lookup(L.u32Key(i));
      return [r, v ? L.sumCounters(map.perCpu(v)) : { packets: 0, bytes: 0 }];
    }),
  ) as Record<N, { packets: number; bytes: number }>;
}

function readFastPath(pinRoot: string): FastPathView | null {
  const names = ['fl_local_pods', 'fl_fast_cfg', 'fl_fast_stats'] as const;
  if (!names.every((n) => existsSync(join(pinRoot, n)))) return null;
  const [pods, cfgMap, stats] = names.map((n) => BpfMap.openPinned(join(pinRoot, n))) as [BpfMap, BpfMap, BpfMap];
  try {
    const c = cfgMap.lookup(L.u32Key(0));
    const cfg = c ? L.decodeFastCfg(c) : { vtepIfindex: 0, flags: 0 };
    const pods6 = existsSync(join(pinRoot, MAP.localPods6)) ? BpfMap.openPinned(join(pinRoot, MAP.localPods6)) : undefined;
    let localPods: L.LocalPod[];
    try {
      // a dual-stack pod is listed twice, once per address
      localPods = [...listPods(pods), ...(pods6 ? listPods(pods6) : [])].sort((a, b) => a.ip.localeCompare(b.ip, 'en', { numeric: true }));
    } finally {
      pods6?.close();
    }
    const counters = countersByIndex(stats, L.FAST_RESULTS);
    // pinned program = the agent runs it (the CNI plugin's switch); the flag alone may be left over
    return { on: (cfg.flags & L.FAST_ON) !== 0 && existsSync(join(pinRoot, POD_PROGRAM_PIN)), vtepIfindex: cfg.vtepIfindex, localPods, counters };
  } finally {
    for (const m of [pods, cfgMap, stats]) m.close();
  }
}

/** Decodes maps already open (the agent reads its own without reopening the pins). */
export function decodeDataPlane(pinRoot: string, maps: DataPlaneMaps): Omit<DataPlaneView, 'fastPath'> {
  const cfg = maps.fl_config.lookup(L.u32Key(0));
  const peers: PeerView[] = [];
  // each map read once, in one batched call, and joined here: a lookup per peer and map was 40,000
  // syscalls per status request at 10,000 peers
  const byKey = (m: BpfMap) => new Map(m.entries().map(([k, v]) => [k.toString('latin1'), v]));
  const vteps = byKey(maps.fl_vteps);
  const stats = byKey(maps.fl_peer_stats);
  const members = new Set(maps.fl_members.entries().map(([k]) => k.toString('latin1')));
  for (const [k, v] of maps.fl_subnets.entries()) {
    const { ip, len } = L.decodeSubnetKey(k);
    const { vtepMAC } = L.decodeSubnetVal(v);
    const vt = vteps.get(L.vtepKey(vtepMAC).toString('latin1'));
    const hostIP = vt ? L.decodeVtepVal(vt).remoteIP : null;
    const mk = hostIP ? L.memberKey(hostIP).toString('latin1') : undefined;
    const ps = mk ? stats.get(mk) : undefined;
    const s = ps ? L.sumPeerStats(maps.fl_peer_stats.perCpu(ps)) : { txPackets: 0, txBytes: 0, rxPackets: 0, rxBytes: 0 };
    peers.push({ subnet: `${ip}/${len}`, vtepMAC, hostIP, member: mk ? members.has(mk) : false, ...s });
  }
  // a dual-stack network's IPv6 peers: subnet -> IPv6 VTEP at the peer's PublicIPv6, one row each
  if (maps.fl_routes6 && maps.fl_peer_stats6) {
    const zero = { txPackets: 0, txBytes: 0, rxPackets: 0, rxBytes: 0 };
    const stats6 = byKey(maps.fl_peer_stats6);
    for (const [k, v] of maps.fl_routes6.entries()) {
      const { ip, len } = L.decodeSubnet6Key(k);
      const r = L.decodeRoute6Val(v);
      const ps = stats6.get(L.member6Key(r.remoteIP).toString('latin1'));
      peers.push({ subnet: `${ip}/${len}`, vtepMAC: r.vtepMAC, hostIP: r.remoteIP, member: ps !== undefined, ...(ps ? L.sumPeerStats(maps.fl_peer_stats6.perCpu(ps)) : zero) });
    }
  }
  peers.sort((a, b) => a.subnet.localeCompare(b.subnet, 'en', { numeric: true }));
  const counters = countersByIndex(maps.fl_stats, L.REASONS);
  return { pinRoot, config: cfg ? L.decodeConfig(cfg) : null, peers, counters };
}

export function renderDataPlane(v: DataPlaneView): string {
  const rows = [['SUBNET', 'VTEP MAC', 'HOST IP', 'TX PKTS', 'TX BYTES', 'RX PKTS', 'RX BYTES']];
  for (const p of v.peers) rows.push([p.subnet, p.vtepMAC, p.hostIP ?? '(no VTEP entry)', String(p.txPackets), String(p.txBytes), String(p.rxPackets), String(p.rxBytes)]);
  const cfg = v.config ? `VNI ${v.config.vni}, port ${v.config.port}, local VTEP ${v.config.localMAC}` : 'no config entry';
  const drops = L.REASONS.map((r) => `${r}=${v.counters[r].packets}`).join('  ');
  let fast = '';
  if (v.fastPath) {
    const f = v.fastPath;
    const prow = [['POD IP', 'HOST VETH IFINDEX', 'POD MAC', 'GATEWAY MAC'], ...f.localPods.map((p) => [p.ip, String(p.ifindex), p.podMAC, p.gwMAC])];
    fast = `\npod fast path: ${f.on ? 'on' : 'off'}, ${new Set(f.localPods.map((p) => p.ifindex)).size} local pods\n${f.localPods.length ? `${table(prow)}\n` : ''}fast path packets: ${L.FAST_RESULTS.map((r) => `${r}=${f.counters[r].packets}`).join('  ')}\n`;
  }
  return `data plane pinned at ${v.pinRoot} (${cfg})\n\n${table(rows)}\n\npackets by reason: ${drops}\n${fast}`;
}
