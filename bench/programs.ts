// Each BPF program and path alone: ns per packet from BPF_PROG_TEST_RUN with a large repeat count, on
// the real verifier-loaded objects with filled maps (pinned in a bpffs of the benchmark's own).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BpfObject, ensureBpffs, testRun } from '../control/kernel/bpf.ts';
import * as L from '../control/datapath/layout.ts';
import { objectPath } from '../control/datapath/objects.ts';
import { projectRoot } from '../control/paths.ts';
import { eth, ipv4, udp, vxlan, icmpEcho, ETH_P_IP, IPPROTO_ICMP, IPPROTO_UDP } from '../test/helpers/packets.ts';

const LOCAL_MAC = '02:00:00:00:00:01';
const PEER_MAC = '02:00:00:00:00:02';
const PEER_IP = '172.20.0.12';
const STRANGER = '172.20.0.66';

/** The egress program's pieces (bench/bpf/parts.c), compiled here with the project's flags. */
function buildParts(dir: string): string {
  const out = join(dir, 'parts.o');
  const arch = execFileSync('uname', ['-m'], { encoding: 'utf8' }).trim();
  execFileSync('clang', [
    '-g',
    '-O2',
    '-target',
    'bpf',
    '-Wall',
    '-I',
    join(projectRoot(), 'bpf'),
    '-I',
    `/usr/include/${arch}-linux-gnu`,
    '-c',
    join(projectRoot(), 'bench', 'bpf', 'parts.c'),
    '-o',
    out,
  ]);
  return out;
}

/**
 * ns per packet of each program and path, one run of `repeat` packets each; and of the egress
 * program's pieces (`parts`: an empty program is the test-run harness's own floor).
 */
export async function measurePrograms(repeat: number, peers = 1000): Promise<{ programs: Record<string, number>; parts: Record<string, number> }> {
  const pinRoot = mkdtempSync('/run/flannel-bench-bpffs-');
  ensureBpffs(pinRoot);
  const objs: BpfObject[] = [];
  try {
    for (const n of ['egress', 'ingress', 'guard', 'fastPath'] as const) objs.push(await BpfObject.open(objectPath(n), pinRoot));
    const [egress, , guard, fast] = objs as [BpfObject, BpfObject, BpfObject, BpfObject];
    egress.map('fl_config').update(L.u32Key(0), L.configVal({ vni: 1, port: 8472, ttl: 64, flags: 0, localMAC: LOCAL_MAC }));
    // a realistic table: `peers` subnets, VTEPs and members, the measured peer among them
    const subnets: [Buffer, Buffer][] = [],
      vteps: [Buffer, Buffer][] = [],
      members: [Buffer, Buffer][] = [],
      routes: [Buffer, Buffer][] = [],
      counters: [Buffer, Buffer][] = [];
    const zero = Buffer.alloc(egress.map('fl_peer_stats').lookupSize);
    for (let i = 0; i < peers; i++) {
      const mac = `02:01:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;
      const ip = `100.64.${i >> 8}.${i & 255}`;
      subnets.push([L.subnetKey(`10.${100 + (i >> 8)}.${i & 255}.0`, 24), L.subnetVal(mac)]);
      vteps.push([L.vtepKey(mac), L.vtepVal(ip)]);
      members.push([L.memberKey(ip), L.memberVal()]);
      routes.push([L.subnetKey(`10.${100 + (i >> 8)}.${i & 255}.0`, 24), L.routeVal(mac, ip)]);
      counters.push([L.memberKey(ip), zero]);
    }
    subnets.push([L.subnetKey('10.244.5.0', 24), L.subnetVal(PEER_MAC)]);
    vteps.push([L.vtepKey(PEER_MAC), L.vtepVal(PEER_IP)]);
    members.push([L.memberKey(PEER_IP), L.memberVal()]);
    routes.push([L.subnetKey('10.244.5.0', 24), L.routeVal(PEER_MAC, PEER_IP)]);
    counters.push([L.memberKey(PEER_IP), zero]);
    egress.map('fl_subnets').updateMany(subnets);
    egress.map('fl_vteps').updateMany(vteps);
    egress.map('fl_members').updateMany(members);
    egress.map('fl_routes').updateMany(routes);
    egress.map('fl_peer_stats').updateMany(counters);

    const pod = (dst: string) => eth(LOCAL_MAC, LOCAL_MAC, ETH_P_IP, ipv4('10.244.3.2', dst, IPPROTO_ICMP, icmpEcho()));
    const vx = (src: string) => eth('02:00:00:00:00:aa', '02:00:00:00:00:bb', ETH_P_IP, ipv4(src, '172.20.0.11', IPPROTO_UDP, udp(40000, 8472, vxlan(1, pod('10.244.3.2')))));
    const runs: [string, number, Buffer][] = [
      ['egress forward (tc, flannel.1)', egress.program('fl_vxlan_egress').fd, pod('10.244.5.7')],
      ['egress no route (tc)', egress.program('fl_vxlan_egress').fd, pod('10.99.0.1')],
      ['guard spoofed drop (tc)', guard.program('fl_guard_tc').fd, vx(STRANGER)],
      ['guard member pass (XDP)', guard.program('fl_guard_xdp').fd, vx(PEER_IP)],
      ['guard spoofed drop (XDP)', guard.program('fl_guard_xdp').fd, vx(STRANGER)],
    ];
    const out: Record<string, number> = {};
    for (const [name, fd, pkt] of runs) out[name] = (await testRun(fd, pkt, repeat)).durationNs;
    // the fast path's send decision on a UDP packet for a remote pod: with the conntrack lookup (no
    // entry exists in the benchmark's namespace, so this is a miss: lookup cost, then the stack) and
    // without it (the test switch: the redirect path alone)
    const podUdp = eth(LOCAL_MAC, LOCAL_MAC, ETH_P_IP, ipv4('10.244.3.2', '10.244.5.7', IPPROTO_UDP, udp(40000, 7000, Buffer.alloc(32))));
    const fastCfg = (flags: number) => fast.map('fl_fast_cfg').update(L.u32Key(0), L.fastCfgVal({ vtepIfindex: 1, flags }));
    fastCfg(L.FAST_ON);
    out['pod fast path send, conntrack lookup (tc)'] = (await testRun(fast.program('fl_pod_egress').fd, podUdp, repeat)).durationNs;
    fastCfg(L.FAST_ON | L.FAST_NO_CT);
    out['pod fast path send, redirect alone (tc)'] = (await testRun(fast.program('fl_pod_egress').fd, podUdp, repeat)).durationNs;
    const tmp = mkdtempSync(join(tmpdir(), 'flannel-bench-parts-'));
    try {
      const parts = await BpfObject.open(buildParts(tmp), pinRoot);
      objs.push(parts);
      const partOut: Record<string, number> = {};
      const names: [string, string][] = [
        ['empty tc program (test-run floor)', 'part_empty'],
        ['+ LPM lookup of the destination', 'part_lpm'],
        ['+ VTEP hash lookup (a second lookup, as egress did before fl_routes)', 'part_lpm_vtep'],
        ['bpf_skb_set_tunnel_key alone', 'part_tunnel_key'],
        ['per-peer and per-reason counters alone', 'part_counters'],
        ['member hash lookup alone (the guard, fl_members)', 'part_member'],
        ['per-peer counter lookup alone (per-CPU hash, fl_peer_stats)', 'part_peer_stats'],
        ['per-reason counter alone (per-CPU array, fl_stats)', 'part_count'],
      ];
      for (const [label, prog] of names) partOut[label] = (await testRun(parts.program(prog).fd, pod('10.244.5.7'), repeat)).durationNs;
      // the receive side as packets meet it (parts.c says why the real programs cannot be repeated
      // here): the tc guard hands a member's packet over, flannel.1's ingress takes it without a lookup
      out['guard member pass (tc)'] = (await testRun(parts.program('part_guard_tc').fd, vx(PEER_IP), repeat)).durationNs;
      out['flannel.1 ingress, handed over by the tc guard'] = (await testRun(parts.program('part_ingress_handed_over').fd, pod('10.244.3.2'), repeat)).durationNs;
      return { programs: out, parts: partOut };
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  } finally {
    for (const o of objs) o.close();
    try {
      execFileSync('umount', [pinRoot]);
    } finally {
      rmdirSync(pinRoot);
    }
  }
}
