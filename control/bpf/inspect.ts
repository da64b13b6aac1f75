// Reads the pinned maps of a node's data plane and decodes them: what `flannelctl maps` prints.
import { join } from 'node:path';
import { BpfMap } from '../kernel/bpf.js';
import * as L from './layout.js';

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
}

export function readDataPlane(pinRoot: string): DataPlaneView {
  const open = (name: string) => BpfMap.openPinned(join(pinRoot, name));
  const maps = { subnets: open('fl_subnets'), vteps: open('fl_vteps'), members: open('fl_members'), config: open('fl_config'), stats: open('fl_stats'), peerStats: open('fl_peer_stats') };
  try {
    const cfg = maps.config.lookup(L.u32Key(0));
    const peers: PeerView[] = [];
    for (const k of maps.subnets.keys()) {
      const v = maps.subnets.lookup(k);
      if (!v) continue;
      const { ip, len } = L.decodeSubnetKey(k);
      const { vtepMAC } = L.decodeSubnetVal(v);
      const vt = maps.vteps.lookup(L.vtepKey(vtepMAC));
      const hostIP = vt ? L.decodeVtepVal(vt).remoteIP : null;
      const ps = hostIP ? maps.peerStats.lookup(L.memberKey(hostIP)) : null;
      const s = ps ? L.sumPeerStats(maps.peerStats.perCpu(ps)) : { txPackets: 0, txBytes: 0, rxPackets: 0, rxBytes: 0 };
      const member = hostIP ? maps.members.lookup(L.memberKey(hostIP)) !== null : false;
      peers.push({ subnet: `${ip}/${len}`, vtepMAC, hostIP, member, ...s });
    }
    peers.sort((a, b) => a.subnet.localeCompare(b.subnet, 'en', { numeric: true }));
    const counters = Object.fromEntries(
      L.REASONS.map((r, i) => {
        const v = maps.stats.lookup(L.u32Key(i));
        return [r, v ? L.sumCounters(maps.stats.perCpu(v)) : { packets: 0, bytes: 0 }];
      }),
    ) as DataPlaneView['counters'];
    return { pinRoot, config: cfg ? L.decodeConfig(cfg) : null, peers, counters };
  } finally {
    for (const m of Object.values(maps)) m.close();
  }
}

export function renderDataPlane(v: DataPlaneView): string {
  const rows = [['SUBNET', 'VTEP MAC', 'HOST IP', 'TX PKTS', 'TX BYTES', 'RX PKTS', 'RX BYTES']];
  for (const p of v.peers) rows.push([p.subnet, p.vtepMAC, p.hostIP ?? '(no VTEP entry)', String(p.txPackets), String(p.txBytes), String(p.rxPackets), String(p.rxBytes)]);
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const table = rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
  const cfg = v.config ? `VNI ${v.config.vni}, port ${v.config.port}, local VTEP ${v.config.localMAC}` : 'no config entry';
  const drops = L.REASONS.map((r) => `${r}=${v.counters[r].packets}`).join('  ');
  return `data plane pinned at ${v.pinRoot} (${cfg})\n\n${table}\n\npackets by reason: ${drops}\n`;
}
