// Every verdict and rewrite of the BPF programs, on crafted packets through BPF_PROG_TEST_RUN, with
// the real verifier and real maps (pinned in a bpffs of the test's own, removed afterwards).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import util from 'node:util';
import { mkdtempSync, rmdirSync, rmSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BpfMap, BpfObject, ensureBpffs, testRun } from '../../control/kernel/bpf.ts';
import { addon } from '../../control/kernel/addon.ts';
import * as L from '../../control/datapath/layout.ts';
import { objectPath } from '../../control/datapath/objects.ts';
import { countersByIndex } from '../../control/datapath/inspect.ts';
import { eth, ipv4, ipv6, udp, vxlan, icmpEcho, mac, ETH_P_IP, ETH_P_ARP, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_UDP } from '../helpers/packets.ts';
import { inNs, ip } from '../helpers/netns.ts';
import { withBpffs } from '../helpers/bpffs.ts';

// accepted or not ours: TC_ACT_UNSPEC lets the filters after ours run; TC_ACT_OK would end the chain
const TC_ACT_UNSPEC = -1,
  TC_ACT_SHOT = 2,
  XDP_DROP = 1,
  XDP_PASS = 2;
const LOCAL_MAC = '02:00:00:00:00:01',
  PEER_MAC = '02:00:00:00:00:02',
  ORPHAN_MAC = '02:00:00:00:00:03';
const PEER_IP = '172.20.0.12',
  STRANGER = '172.20.0.66';

const pinRoot = mkdtempSync('/run/flannel-test-bpffs-');
let egress: BpfObject, ingress: BpfObject, guard: BpfObject, fastObj: BpfObject;

function counters(): Record<L.Reason, number> {
  const c = countersByIndex(egress.map('fl_stats'), L.REASONS);
  return Object.fromEntries(L.REASONS.map((r) => [r, c[r].packets])) as Record<L.Reason, number>;
}

before(async () => {
  ensureBpffs(pinRoot);
  egress = await BpfObject.open(objectPath('egress'), pinRoot);
  ingress = await BpfObject.open(objectPath('ingress'), pinRoot);
  guard = await BpfObject.open(objectPath('guard'), pinRoot);
  fastObj = await BpfObject.open(objectPath('fastPath'), pinRoot);
  egress.map('fl_config').update(L.u32Key(0), L.configVal({ vni: 1, port: 8472, ttl: 64, flags: 0, localMAC: LOCAL_MAC }));
  egress.map('fl_subnets').update(L.subnetKey('10.244.5.0', 24), L.subnetVal(PEER_MAC));
  egress.map('fl_subnets').update(L.subnetKey('10.244.6.0', 24), L.subnetVal(ORPHAN_MAC));
  egress.map('fl_vteps').update(L.vtepKey(PEER_MAC), L.vtepVal(PEER_IP));
  egress.map('fl_members').update(L.memberKey(PEER_IP), L.memberVal());
  // what the agent derives: the egress program's route, and the member's counters (flannel.1 ingress)
  egress.map('fl_routes').update(L.subnetKey('10.244.5.0', 24), L.routeVal(PEER_MAC, PEER_IP));
  egress.map('fl_peer_stats').update(L.memberKey(PEER_IP), Buffer.alloc(egress.map('fl_peer_stats').lookupSize));
});
after(() => {
  for (const o of [egress, ingress, guard, fastObj]) o?.close();
  try {
    execFileSync('umount', [pinRoot]);
  } finally {
    rmdirSync(pinRoot);
  }
});

const podPacket = (dst: string) => eth(LOCAL_MAC, LOCAL_MAC, ETH_P_IP, ipv4('10.244.3.2', dst, IPPROTO_ICMP, icmpEcho()));

test('the objects share one set of pinned maps', () => {
  // one kernel map each: the same id through every object and at the pin (equal sizes would prove nothing)
  for (const name of ['fl_subnets', 'fl_vteps', 'fl_members', 'fl_routes', 'fl_config', 'fl_stats', 'fl_peer_stats']) {
    const id = egress.map(name).id();
    for (const o of [ingress, guard, fastObj]) assert.equal(o.map(name).id(), id, `${name} in ${o.path}`);
    assert.equal(BpfMap.pinnedId(join(pinRoot, name)), id, `${name} pinned`);
  }
  assert.equal(L.decodeConfig(guard.map('fl_config').lookup(L.u32Key(0))!).vni, 1, 'config written through one object is seen through another');
});

test('egress: a packet for a peer subnet leaves with the peer VtepMAC as destination and ours as source', async () => {
  const before = counters();
  const r = await testRun(egress.program('fl_vxlan_egress').fd, podPacket('10.244.5.7'));
  assert.equal(r.retval, TC_ACT_UNSPEC);
  assert.deepEqual(r.data.subarray(0, 6), mac(PEER_MAC));
  assert.deepEqual(r.data.subarray(6, 12), mac(LOCAL_MAC));
  assert.deepEqual(r.data.subarray(12), podPacket('10.244.5.7').subarray(12), 'nothing past the MACs changes');
  assert.equal(counters().forwarded, before.forwarded + 1);
  const ps = egress.map('fl_peer_stats');
  assert.equal(L.sumPeerStats(ps.perCpu(ps.lookup(L.memberKey(PEER_IP))!)).txPackets >= 1, true);
});

test('egress, IPv6 (dual stack): a packet for a peer IPv6 subnet leaves with its IPv6 VTEP MAC and is counted for its PublicIPv6; an unknown IPv6 destination is no_route', async () => {
  const PEER6_MAC = '02:00:00:00:00:06',
    PEER_IP6 = 'fd00:172:20::12';
  egress.map('fl_peer_stats6').update(L.member6Key(PEER_IP6), Buffer.alloc(egress.map('fl_peer_stats6').lookupSize));
  egress.map('fl_routes6').update(L.subnet6Key('fd00:10:244:5::', 64), L.route6Val(PEER6_MAC, PEER_IP6));
  const fd = egress.program('fl_vxlan_egress').fd;
  const pkt = (dst: string) => eth(LOCAL_MAC, '02:00:00:00:00:99', ETH_P_IPV6, ipv6('fd00:10:244:3::2', dst, IPPROTO_ICMPV6, Buffer.from([128, 0, 0, 0, 0, 1, 0, 1])));
  try {
    const c0 = counters();
    const r = await testRun(fd, pkt('fd00:10:244:5::7'));
    assert.equal(r.retval, TC_ACT_UNSPEC);
    assert.deepEqual(r.data.subarray(0, 6), mac(PEER6_MAC));
    assert.deepEqual(r.data.subarray(6, 12), mac(LOCAL_MAC));
    assert.deepEqual(r.data.subarray(12), pkt('fd00:10:244:5::7').subarray(12), 'nothing past the MACs changes');
    assert.equal((await testRun(fd, pkt('fd00:10:244:9::7'))).retval, TC_ACT_SHOT);
    const c1 = counters();
    assert.deepEqual([c1.forwarded - c0.forwarded, c1.no_route - c0.no_route, c1.not_ipv4 - c0.not_ipv4], [1, 1, 0]);
    const ps = egress.map('fl_peer_stats6');
    assert.equal(L.sumPeerStats(ps.perCpu(ps.lookup(L.member6Key(PEER_IP6))!)).txPackets, 1);
  } finally {
    egress.map('fl_routes6').deleteMany([L.subnet6Key('fd00:10:244:5::', 64)]);
    egress.map('fl_peer_stats6').deleteMany([L.member6Key(PEER_IP6)]);
  }
});

test('egress: no route (no peer subnet, or a subnet whose VTEP is unknown), not IPv4, bad IP header: dropped and counted', async () => {
  const fd = egress.program('fl_vxlan_egress').fd;
  const c0 = counters();
  assert.equal((await testRun(fd, podPacket('10.99.0.1'))).retval, TC_ACT_SHOT);
  assert.equal((await testRun(fd, podPacket('10.244.6.9'))).retval, TC_ACT_SHOT);
  assert.equal((await testRun(fd, eth(LOCAL_MAC, LOCAL_MAC, ETH_P_ARP, Buffer.alloc(28)))).retval, TC_ACT_SHOT);
  // the kernel builds no skb whose IPv4 header is cut short (test-run refuses it like the stack would),
  // so the program's own bounds check is exercised with a header that lies about its length instead
  await assert.rejects(testRun(fd, podPacket('10.244.5.7').subarray(0, 30)), /EINVAL/);
  const badIhl = podPacket('10.244.5.7');
  badIhl.writeUInt8(0x43, 14);
  assert.equal((await testRun(fd, badIhl)).retval, TC_ACT_SHOT);
  const c1 = counters();
  // 10.244.6.0/24 is in fl_subnets but its VTEP is not in fl_vteps: the agent writes no route for it
  assert.equal(c1.no_route, c0.no_route + 2);
  assert.equal(c1.unknown_vtep, c0.unknown_vtep);
  assert.equal(c1.not_ipv4, c0.not_ipv4 + 1);
  assert.equal(c1.malformed, c0.malformed + 1);
  assert.equal(c1.forwarded, c0.forwarded);
});

test('ingress on flannel.1: a packet without tunnel metadata is never accepted', async () => {
  const r = await testRun(ingress.program('fl_vxlan_ingress').fd, podPacket('10.244.3.2'));
  assert.equal(r.retval, TC_ACT_SHOT);
});

const vxlanFrom = (src: string, dport = 8472, vni = 1) =>
  eth('02:00:00:00:00:aa', '02:00:00:00:00:bb', ETH_P_IP, ipv4(src, '172.20.0.11', IPPROTO_UDP, udp(40000, dport, vxlan(vni, podPacket('10.244.3.2')))));

for (const [hook, prog, PASS, DROP] of [
  ['tc', 'fl_guard_tc', TC_ACT_UNSPEC, TC_ACT_SHOT],
  ['xdp', 'fl_guard_xdp', XDP_PASS, XDP_DROP],
] as const) {
  test(`underlay guard (${hook}): VXLAN from a member passes, from a stranger is dropped and counted, the rest is untouched`, async () => {
    const fd = guard.program(prog).fd;
    const c0 = counters();
    assert.equal((await testRun(fd, vxlanFrom(PEER_IP))).retval, PASS);
    assert.equal((await testRun(fd, vxlanFrom(STRANGER))).retval, DROP);
    assert.equal((await testRun(fd, vxlanFrom(STRANGER, 4789))).retval, PASS, 'another UDP port is not ours to judge');
    assert.equal((await testRun(fd, eth('02:00:00:00:00:aa', '02:00:00:00:00:bb', ETH_P_IP, ipv4(STRANGER, '172.20.0.11', IPPROTO_ICMP, icmpEcho())))).retval, PASS);
    assert.equal((await testRun(fd, eth('02:00:00:00:00:aa', '02:00:00:00:00:bb', ETH_P_ARP, Buffer.alloc(28)))).retval, PASS);
    const withOptions = eth('02:00:00:00:00:aa', '02:00:00:00:00:bb', ETH_P_IP, ipv4(STRANGER, '172.20.0.11', IPPROTO_UDP, udp(1, 8472, Buffer.alloc(60)), { options: 2 }));
    assert.equal((await testRun(fd, withOptions)).retval, DROP, 'IP options do not hide the UDP port');
    const truncated = vxlanFrom(STRANGER).subarray(0, 14 + 20 + 4);
    assert.equal((await testRun(fd, truncated)).retval, DROP, 'a truncated UDP header is dropped');
    const laterFragment = eth('02:00:00:00:00:aa', '02:00:00:00:00:bb', ETH_P_IP, ipv4(STRANGER, '172.20.0.11', IPPROTO_UDP, Buffer.alloc(64), { fragOffset: 100 }));
    assert.equal((await testRun(fd, laterFragment)).retval, PASS, 'later fragments carry no UDP header');
    const c1 = counters();
    assert.equal(c1.spoofed, c0.spoofed + 2);
    assert.equal(c1.guard_passed, c0.guard_passed + 1);
    assert.equal(c1.malformed, c0.malformed + 1);
  });
}

const peerRx = () => {
  const ps = egress.map('fl_peer_stats');
  const s = L.sumPeerStats(ps.perCpu(ps.lookup(L.memberKey(PEER_IP))!));
  return [s.rxPackets, s.rxBytes];
};

test("tc guard hands flannel.1 a member's packet marked and counted, so that flannel.1's ingress does not look the member up again", async () => {
  const fd = guard.program('fl_guard_tc').fd;
  const innerLen = podPacket('10.244.3.2').length;
  const [p0, b0] = peerRx();
  const r = await testRun(fd, vxlanFrom(PEER_IP), 1, { mark: 0 });
  assert.equal(r.retval, TC_ACT_UNSPEC);
  assert.equal(r.mark, L.MARK_MEMBER);
  assert.deepEqual(peerRx(), [p0! + 1, b0! + innerLen], 'counted for the member, inner frame bytes as flannel.1 counts them');
  // another VNI, or a packet someone else already marked: flannel.1 judges and counts it in full
  const other = await testRun(fd, vxlanFrom(PEER_IP, 8472, 2), 1, { mark: 0 });
  assert.deepEqual([other.retval, other.mark], [TC_ACT_UNSPEC, 0]);
  const marked = await testRun(fd, vxlanFrom(PEER_IP), 1, { mark: 0x4000 });
  assert.deepEqual([marked.retval, marked.mark], [TC_ACT_UNSPEC, 0x4000]);
  assert.equal((await testRun(fd, vxlanFrom(STRANGER), 1, { mark: 0 })).mark, 0);
  assert.deepEqual(peerRx(), [p0! + 1, b0! + innerLen]);

  // flannel.1's ingress: a marked packet is accepted without a tunnel key (none exists in a test run)
  // and leaves unmarked; an unmarked or otherwise marked one still needs the key
  const ing = ingress.program('fl_vxlan_ingress').fd;
  const c0 = counters();
  const accepted = await testRun(ing, podPacket('10.244.3.2'), 1, { mark: L.MARK_MEMBER });
  assert.deepEqual([accepted.retval, accepted.mark], [TC_ACT_UNSPEC, 0]);
  assert.equal((await testRun(ing, podPacket('10.244.3.2'), 1, { mark: L.MARK_MEMBER | 0x4000 })).retval, TC_ACT_SHOT);
  assert.equal(counters().received, c0.received + 1);
  assert.deepEqual(peerRx(), [p0! + 1, b0! + innerLen], 'not counted twice');
});

for (const [hook, prog, PASS, DROP] of [
  ['tc', 'fl_guard_tc', TC_ACT_UNSPEC, TC_ACT_SHOT],
  ['xdp', 'fl_guard_xdp', XDP_PASS, XDP_DROP],
] as const) {
  test(`underlay guard (${hook}), VXLAN over IPv6: from a member (by PublicIPv6) passes, from a stranger is dropped and counted, the rest is untouched`, async () => {
    const MEMBER6 = 'fd00:172:20::12';
    const stats6 = guard.map('fl_peer_stats6');
    stats6.updateMany([[L.member6Key(MEMBER6), Buffer.alloc(stats6.lookupSize)]]);
    const from6 = (src: string, dport = 8472) =>
      eth('02:00:00:00:00:aa', '02:00:00:00:00:bb', ETH_P_IPV6, ipv6(src, 'fd00:172:20::11', IPPROTO_UDP, udp(40000, dport, vxlan(1, podPacket('10.244.3.2')))));
    try {
      const fd = guard.program(prog).fd;
      const c0 = counters();
      assert.equal((await testRun(fd, from6(MEMBER6))).retval, PASS);
      assert.equal((await testRun(fd, from6('fd00:172:20::66'))).retval, DROP);
      assert.equal((await testRun(fd, from6('fd00:172:20::66', 4789))).retval, PASS, 'another UDP port is not ours to judge');
      assert.equal((await testRun(fd, eth('02:00:00:00:00:aa', '02:00:00:00:00:bb', ETH_P_IPV6, ipv6('fd00:172:20::66', 'fd00:172:20::11', IPPROTO_ICMPV6, Buffer.alloc(8))))).retval, PASS);
      const c1 = counters();
      assert.deepEqual([c1.spoofed - c0.spoofed, c1.guard_passed - c0.guard_passed], [1, 1]);
    } finally {
      stats6.deleteMany([L.member6Key(MEMBER6)]);
    }
  });
}

const TC_ACT_REDIRECT = 7;
const IPPROTO_TCP = 6;
function fastCounters() {
  const c = countersByIndex(fastObj.map('fl_fast_stats'), L.FAST_RESULTS);
  return Object.fromEntries(L.FAST_RESULTS.map((r) => [r, c[r].packets])) as Record<L.FastResult, number>;
}
const setFast = (flags: number) => fastObj.map('fl_fast_cfg').update(L.u32Key(0), L.fastCfgVal({ vtepIfindex: 1, flags }));
const tcpSeg = (flags: number) => {
  const h = Buffer.alloc(20);
  h.writeUInt16BE(40000, 0);
  h.writeUInt16BE(7000, 2);
  h.writeUInt8(0x50, 12);
  h.writeUInt8(flags, 13);
  return h;
};
const SYN = 0x02,
  ACK = 0x10;
const fromPod = (dst: string, proto: number, payload: Buffer, o: { ttl?: number; fragOffset?: number } = {}) => {
  const p = eth(LOCAL_MAC, LOCAL_MAC, ETH_P_IP, ipv4('10.244.3.2', dst, proto, payload, { fragOffset: o.fragOffset }));
  if (o.ttl !== undefined) {
    p.writeUInt8(o.ttl, 14 + 8);
    p.writeUInt16BE(0, 14 + 10);
    p.writeUInt16BE(ipChecksum(p.subarray(14, 34)), 14 + 10);
  }
  return p;
};
function ipChecksum(h: Buffer): number {
  let sum = 0;
  for (let i = 0; i < h.length; i += 2) sum += h.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
  return ~sum & 0xffff;
}

test('pod fast path, send side: a remote pod packet is redirected with TTL - 1 and a valid checksum; everything else goes to the stack, counted by reason', async () => {
  const fd = fastObj.program('fl_pod_egress').fd;
  const udpTo = (dst: string, o = {}) => fromPod(dst, IPPROTO_UDP, udp(40000, 7000, Buffer.alloc(32)), o);
  // the conntrack check switched off (the test switch): only the routing decision is left
  setFast(L.FAST_ON | L.FAST_NO_CT);
  let c0 = fastCounters();
  const r = await testRun(fd, udpTo('10.244.5.7'));
  assert.equal(r.retval, TC_ACT_REDIRECT);
  assert.equal(r.data.readUInt8(14 + 8), 63, 'TTL decremented as routing would');
  assert.equal(ipChecksum(r.data.subarray(14, 34)), 0, 'header checksum still valid');
  assert.deepEqual(r.data.subarray(0, 14 + 8), udpTo('10.244.5.7').subarray(0, 14 + 8), 'MACs and the rest untouched: flannel.1 egress writes them');
  assert.equal(fastCounters().fast_tx, c0.fast_tx + 1);

  c0 = fastCounters();
  const passes: [string, Buffer][] = [
    ['pass_not_pod', udpTo('10.99.0.1')], // a Service IP, the outside world
    ['pass_not_pod', udpTo('10.244.3.9')], // a local pod: the bridge's job
    ['pass_other', udpTo('10.244.5.7', { ttl: 1 })], // the stack sends time-exceeded
    ['pass_other', udpTo('10.244.5.7', { fragOffset: 0x2000 })], // a fragment
    ['pass_other', eth(LOCAL_MAC, LOCAL_MAC, ETH_P_ARP, Buffer.alloc(28))],
  ];
  for (const [, p] of passes) assert.equal((await testRun(fd, p)).retval, TC_ACT_UNSPEC);
  const c1 = fastCounters();
  assert.equal(c1.pass_not_pod, c0.pass_not_pod + 2);
  assert.equal(c1.pass_other, c0.pass_other + 3);

  // with the check: no conntrack entry for these flows in the test's namespace, so nothing is fast
  setFast(L.FAST_ON);
  c0 = fastCounters();
  assert.equal((await testRun(fd, udpTo('10.244.5.7'))).retval, TC_ACT_UNSPEC);
  assert.equal((await testRun(fd, fromPod('10.244.5.7', IPPROTO_TCP, tcpSeg(ACK)))).retval, TC_ACT_UNSPEC);
  assert.equal((await testRun(fd, fromPod('10.244.5.7', IPPROTO_TCP, tcpSeg(SYN)))).retval, TC_ACT_UNSPEC);
  assert.equal((await testRun(fd, fromPod('10.244.5.7', IPPROTO_ICMP, icmpEcho()))).retval, TC_ACT_UNSPEC, 'ICMP: conntrack lookup covers TCP and UDP only');
  const c2 = fastCounters();
  assert.equal(c2.pass_new_flow, c0.pass_new_flow + 3);
  assert.equal(c2.pass_other, c0.pass_other + 1);
  assert.equal(c2.fast_tx, c0.fast_tx);

  setFast(0);
  assert.equal((await testRun(fd, udpTo('10.244.5.7'))).retval, TC_ACT_UNSPEC, 'switched off: everything to the stack');
});

test('pod fast path, receive side: the flannel.1 checks come first (no tunnel metadata: dropped as malformed)', async () => {
  setFast(L.FAST_ON | L.FAST_NO_CT);
  const c0 = counters();
  assert.equal((await testRun(fastObj.program('fl_ingress_fast').fd, podPacket('10.244.3.2'))).retval, TC_ACT_SHOT);
  assert.equal(counters().malformed, c0.malformed + 1);
  setFast(0);
});

test('cost per packet (BPF_PROG_TEST_RUN, 1e6 repeats)', async (t) => {
  const runs: [string, number, Buffer][] = [
    ['egress forward', egress.program('fl_vxlan_egress').fd, podPacket('10.244.5.7')],
    ['egress no route', egress.program('fl_vxlan_egress').fd, podPacket('10.99.0.1')],
    ['guard tc spoofed drop', guard.program('fl_guard_tc').fd, vxlanFrom(STRANGER)],
    ['guard xdp spoofed drop', guard.program('fl_guard_xdp').fd, vxlanFrom(STRANGER)],
    ['guard xdp member pass', guard.program('fl_guard_xdp').fd, vxlanFrom(PEER_IP)],
  ];
  for (const [name, fd, pkt] of runs) {
    const r = await testRun(fd, pkt, 1_000_000);
    assert.ok(r.durationNs > 0);
    t.diagnostic(`${name}: ${r.durationNs} ns/packet`);
  }
});

test('5000 peers into the maps: one native call per map, every entry readable back', (t) => {
  const n = 5000;
  const peers = Array.from({ length: n }, (_, i) => ({
    subnet: `10.${100 + (i >> 8)}.${i & 255}.0`,
    mac: `02:01:00:00:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`,
    ip: `172.16.${(i >> 8) & 255}.${i & 255}`,
  }));
  const [members, vteps, subnets] = [egress.map('fl_members'), egress.map('fl_vteps'), egress.map('fl_subnets')];
  const t0 = process.hrtime.bigint();
  const errs = [
    ...members.updateMany(peers.map((p) => [L.memberKey(p.ip), L.memberVal()])),
    ...vteps.updateMany(peers.map((p) => [L.vtepKey(p.mac), L.vtepVal(p.ip)])),
    ...subnets.updateMany(peers.map((p) => [L.subnetKey(p.subnet, 24), L.subnetVal(p.mac)])),
  ];
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  assert.equal(errs.filter((e) => e !== 0).length, 0);
  const sample = peers[4321]!;
  assert.equal(L.decodeSubnetVal(subnets.lookup(L.subnetKey(sample.subnet, 24))!).vtepMAC, sample.mac);
  assert.equal(L.decodeVtepVal(vteps.lookup(L.vtepKey(sample.mac))!).remoteIP, sample.ip);
  assert.ok(subnets.keys().length >= n);
  const t1 = process.hrtime.bigint();
  subnets.deleteMany(peers.map((p) => L.subnetKey(p.subnet, 24)));
  vteps.deleteMany(peers.map((p) => L.vtepKey(p.mac)));
  members.deleteMany(peers.map((p) => L.memberKey(p.ip)));
  const delMs = Number(process.hrtime.bigint() - t1) / 1e6;
  t.diagnostic(`5000 peers (member + VTEP + subnet entries): program ${ms.toFixed(1)} ms, delete ${delMs.toFixed(1)} ms`);
});

// Random and truncated packets through every program, compared with a reference model of what each
// may do. Seeds: valid pod and VXLAN packets of every kind above, then bytes flipped and tails cut;
// plus pure noise. A kernel refusal of the input (EINVAL: it builds no such skb) forwards nothing.
const RUNS = Number(process.env.FUZZ_RUNS ?? 3000);
const MEMBERS = new Set([PEER_IP]);
const inPeerSubnet = (d: Buffer) => d[30] === 10 && d[31] === 244 && d[32] === 5; // 10.244.5.0/24 has a VTEP

function egressModel(d: Buffer): 'forward' | 'drop' {
  if (d.length < 34 || d.readUInt16BE(12) !== ETH_P_IP) return 'drop';
  const ihl = d[14]! & 15;
  if (d[14]! >> 4 !== 4 || ihl < 5 || 14 + ihl * 4 > d.length) return 'drop';
  return inPeerSubnet(d) ? 'forward' : 'drop';
}

function guardModel(d: Buffer): 'pass' | 'drop' {
  if (d.length < 14 || d.readUInt16BE(12) !== ETH_P_IP) return 'pass';
  if (d.length < 34 || (d[14]! & 15) < 5) return 'drop';
  if (d[23] !== IPPROTO_UDP || d.readUInt16BE(20) & 0x1fff) return 'pass';
  const udpAt = 14 + (d[14]! & 15) * 4;
  if (udpAt + 8 > d.length) return 'drop';
  if (d.readUInt16BE(udpAt + 2) !== 8472) return 'pass';
  return MEMBERS.has([...d.subarray(26, 30)].join('.')) ? 'pass' : 'drop';
}

async function run(fd: number, d: Buffer): Promise<{ retval: number; data: Buffer } | 'refused'> {
  try {
    return await testRun(fd, d);
  } catch (e) {
    assert.match((e as Error).message, /EINVAL/, "the only refusal is the kernel's own check of the input");
    return 'refused';
  }
}

test(`fuzz: ${RUNS} random and truncated packets per program; verdicts match the reference model, nothing malformed is forwarded`, async (t) => {
  const { default: fc } = await import('fast-check');
  const seed = fc.oneof(
    fc
      .tuple(fc.constantFrom('10.244.5.7', '10.244.6.9', '10.99.0.1', '10.244.5.255'), fc.boolean())
      .map(([d, opts]) => (opts ? eth(LOCAL_MAC, LOCAL_MAC, ETH_P_IP, ipv4('10.244.3.2', d, IPPROTO_ICMP, icmpEcho(), { options: 3 })) : podPacket(d))),
    fc.tuple(fc.constantFrom(PEER_IP, STRANGER), fc.constantFrom(8472, 4789, 53), fc.constantFrom(1, 2, 0xffffff)).map(([s, p, v]) => vxlanFrom(s, p, v)),
    fc.uint8Array({ minLength: 0, maxLength: 128 }).map((b) => Buffer.from(b)),
  );
  const mutated = fc.tuple(seed, fc.array(fc.tuple(fc.nat(200), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }), fc.option(fc.nat(200), { freq: 2 })).map(([pkt, flips, cut]) => {
    const d = Buffer.from(pkt);
    for (const [at, v] of flips) if (d.length) d[at % d.length] = v;
    return cut === null ? d : d.subarray(0, Math.min(cut, d.length));
  });
  // (flannel.1's ingress is not here: a test-run packet carries no tunnel metadata, so it could only
  // ever be dropped; it gets real VXLAN datagrams in the next test)
  const egressFd = egress.program('fl_vxlan_egress').fd;
  const tcFd = guard.program('fl_guard_tc').fd,
    xdpFd = guard.program('fl_guard_xdp').fd;
  const tally = { forwarded: 0, dropped: 0, refused: 0, guardDropped: 0 };
  const c0 = counters();
  await fc.assert(
    fc.asyncProperty(mutated, async (d) => {
      const e = await run(egressFd, d);
      if (e === 'refused') tally.refused++;
      else {
        const want = egressModel(d);
        assert.equal(e.retval, want === 'forward' ? TC_ACT_UNSPEC : TC_ACT_SHOT, `egress verdict for ${d.toString('hex')}`);
        if (want === 'forward') {
          tally.forwarded++;
          assert.deepEqual(e.data.subarray(0, 6), mac(PEER_MAC));
          assert.deepEqual(e.data.subarray(12), d.subarray(12), 'only the MACs are rewritten');
        } else tally.dropped++;
      }
      const g = await run(tcFd, d);
      if (g !== 'refused') {
        assert.equal(g.retval, guardModel(d) === 'pass' ? TC_ACT_UNSPEC : TC_ACT_SHOT, `tc guard verdict for ${d.toString('hex')}`);
        assert.deepEqual(g.data, d, 'the guard never changes a packet');
      }
      if (d.length >= 14) {
        const x = await run(xdpFd, d);
        if (x !== 'refused') {
          assert.equal(x.retval, guardModel(d) === 'pass' ? XDP_PASS : XDP_DROP, `xdp guard verdict for ${d.toString('hex')}`);
          if (x.retval === XDP_DROP) tally.guardDropped++;
        }
      }
    }),
    { numRuns: RUNS },
  );
  assert.equal(counters().forwarded - c0.forwarded, tally.forwarded, 'the forwarded counter matches the verdicts');
  assert.ok(tally.forwarded > RUNS / 20 && tally.dropped > RUNS / 20, `both verdicts exercised: ${JSON.stringify(tally)}`);
  t.diagnostic(`egress: ${tally.forwarded} forwarded, ${tally.dropped} dropped, ${tally.refused} refused by the kernel; xdp guard dropped ${tally.guardDropped}`);
});

const FIX = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');

/** Runs fn with n fresh network namespaces (unique names), deleted afterwards whatever happens. */
async function withNamespaces<T>(n: number, fn: (names: string[]) => Promise<T>): Promise<T> {
  const names = Array.from({ length: n }, (_, i) => `flbpf${randomBytes(3).toString('hex')}${i}`);
  const dirs: string[] = [];
  try {
    for (const ns of names) await ip('netns', 'add', ns);
    return await fn(names);
  } finally {
    for (const ns of names) await ip('netns', 'del', ns).catch(() => undefined);
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  }
}

for (const withGuard of [false, true])
  test(`flannel.1 ingress on a real external vxlan device${withGuard ? ', the tc guard on the underlay' : ''}: fuzzed VXLAN from a member and a stranger, with VNI 1 and others; every verdict as the model says, each accepted packet counted once for its member`, async () => {
    await withNamespaces(2, async ([node, peer]) => {
      await ip('link', 'add', 'fz0', 'netns', node!, 'type', 'veth', 'peer', 'name', 'fz1', 'netns', peer!);
      await inNs(node!, 'ip', 'addr', 'add', '172.31.0.1/24', 'dev', 'fz0');
      await inNs(node!, 'ip', 'link', 'set', 'fz0', 'up');
      for (const a of ['172.31.0.2/24', '172.31.0.3/24']) await inNs(peer!, 'ip', 'addr', 'add', a, 'dev', 'fz1');
      await inNs(peer!, 'ip', 'link', 'set', 'fz1', 'up');
      // a resolved neighbour: datagrams queued behind an ARP request that a loaded machine answers late
      // can be dropped from the neighbour's queue, which is no verdict of the program's
      const fz0Mac = (await inNs(node!, 'cat', '/sys/class/net/fz0/address')).trim();
      await inNs(peer!, 'ip', 'neigh', 'replace', '172.31.0.1', 'lladdr', fz0Mac, 'dev', 'fz1', 'nud', 'permanent');
      const pins = mkdtempSync('/run/flannel-test-bpffs-');
      try {
        const child = spawn('ip', ['netns', 'exec', node!, process.execPath, '--import', 'tsx', join(FIX, 'vtep-ingress.ts'), pins, '172.31.0.2', ...(withGuard ? ['fz0'] : [])], {
          stdio: ['pipe', 'pipe', 'inherit'],
        });
        let out = '';
        child.stdout.on('data', (d) => (out += d));
        const exited = new Promise((r) => child.once('exit', r));
        try {
          for (let i = 0; i < 200 && !out.includes('ready'); i++) await new Promise((r) => setTimeout(r, 50));
          assert.match(out, /ready/);
          const want = JSON.parse(
            await inNs(
              peer!,
              process.execPath,
              '--import',
              'tsx',
              join(FIX, 'send-vxlan-fuzz.ts'),
              '172.31.0.1',
              '172.31.0.2',
              '172.31.0.3',
              String(Math.min(RUNS, 2000)),
              String(Date.now() & 0xffff),
            ),
          ) as Record<string, number>;
          // the last datagrams may still wait in a backlog a loaded machine has not run yet: ask until
          // every datagram has a verdict, or 5 s
          let got: Record<string, number> = {};
          for (let i = 0; i < 50; i++) {
            const lines = out.split('\n').length;
            child.stdin.write('report\n');
            while (out.split('\n').length === lines) await new Promise((r) => setTimeout(r, 10));
            got = JSON.parse(out.trim().split('\n').at(-1)!) as Record<string, number>;
            if (L.REASONS.reduce((n, r) => n + (got[r] ?? 0), 0) >= want.sent!) break;
            await new Promise((r) => setTimeout(r, 100));
          }
          child.stdin.write('exit\n');
          await exited;
          assert.ok(want.received! > 0 && want.spoofed! > 0 && want.wrong_vni! > 0, JSON.stringify(want));
          // a datagram with no verdict was lost before the program: say where the kernel counted it
          const drops = async () =>
            `${await inNs(node!, 'ip', '-s', 'link', 'show', 'dev', 'flannel.1')}${await inNs(node!, 'ip', '-s', 'link', 'show', 'dev', 'fz0')}${await inNs(node!, 'nstat', '-az', 'UdpInErrors', 'UdpRcvbufErrors', 'IpInDiscards')}`;
          // with the guard, a stranger is dropped on the underlay whatever its VNI; a member's packet with
          // VNI 1 is counted for the member by the guard and handed to flannel.1 marked (FL_MARK_MEMBER):
          // counted twice if the mark were lost on the way, never if the hand-over failed
          const strangersAway = withGuard ? want.stranger_wrong_vni! : 0;
          const verdicts = { received: got.received, spoofed: got.spoofed, wrong_vni: got.wrong_vni, malformed: got.malformed, peer_rx_packets: got.peer_rx_packets, peer_rx_bytes: got.peer_rx_bytes };
          const expected = {
            received: want.received,
            spoofed: want.spoofed! + strangersAway,
            wrong_vni: want.wrong_vni! - strangersAway,
            malformed: 0,
            peer_rx_packets: want.received,
            peer_rx_bytes: want.received_bytes,
          };
          if (!util.isDeepStrictEqual(verdicts, expected)) assert.deepEqual(verdicts, expected, `all counters ${JSON.stringify(got)}\n${await drops()}`);
        } finally {
          child.kill('SIGKILL');
        }
      } finally {
        rmSync(pins, { recursive: true, force: true });
      }
    });
  });

test('pod fast path against real conntrack entries, IPv4 and IPv6: an established flow is taken and its entry refreshed; packets or GSO segments too big for the tunnel go to the stack; the probe works', async () => {
  await withNamespaces(1, async ([ns]) => {
    const pins = mkdtempSync('/run/flannel-test-bpffs-');
    try {
      const r = JSON.parse(await inNs(ns!, process.execPath, '--import', 'tsx', join(FIX, 'fastpath-ct.ts'), pins)) as {
        cases: Record<string, { retval: number; counted: string[]; hopLimit?: number }>;
        timeouts: { udp: number | null; tcp: number | null };
        timeouts6: { udp: number | null; tcp: number | null };
        probe: number;
      };
      // a lookup that works finds the entry (a broken one would look like "no entry": pass_new_flow)
      assert.deepEqual(r.cases['udp with entry'], { retval: TC_ACT_REDIRECT, counted: ['fast_tx'] });
      assert.deepEqual(r.cases['tcp with entry'], { retval: TC_ACT_REDIRECT, counted: ['fast_tx'] });
      assert.deepEqual(r.cases['udp without entry'], { retval: TC_ACT_UNSPEC, counted: ['pass_new_flow'] });
      // the entries had 5 s left; the fast path gave them conntrack's own timeouts (UDP replied 30 s,
      // TCP established 5 days), or they would have expired under a flow that never meets the stack
      assert.ok(r.timeouts.udp !== null && r.timeouts.udp > 20 && r.timeouts.udp <= 30, `udp entry timeout ${r.timeouts.udp}`);
      assert.ok(r.timeouts.tcp !== null && r.timeouts.tcp > 431000, `tcp entry timeout ${r.timeouts.tcp}`);
      assert.deepEqual(r.cases['udp too big'], { retval: TC_ACT_UNSPEC, counted: ['pass_other'] });
      assert.deepEqual(r.cases['udp gso, segments too big'], { retval: TC_ACT_UNSPEC, counted: ['pass_other'] }, "a GSO packet whose segments exceed flannel.1's MTU is not redirected");
      assert.equal(r.probe, 2, 'the load-time probe sees ENOENT: the lookup works as the programs call it');
      // IPv6 pods: the same rule, with the hop limit decremented as routing would
      assert.deepEqual(r.cases['udp6 with entry'], { retval: TC_ACT_REDIRECT, counted: ['fast_tx'], hopLimit: 63 });
      assert.deepEqual(r.cases['tcp6 with entry'], { retval: TC_ACT_REDIRECT, counted: ['fast_tx'], hopLimit: 63 });
      assert.deepEqual(r.cases['udp6 without entry'], { retval: TC_ACT_UNSPEC, counted: ['pass_new_flow'], hopLimit: 64 });
      assert.ok(r.timeouts6.udp !== null && r.timeouts6.udp > 20 && r.timeouts6.udp <= 30, `udp6 entry timeout ${r.timeouts6.udp}`);
      assert.ok(r.timeouts6.tcp !== null && r.timeouts6.tcp > 431000, `tcp6 entry timeout ${r.timeouts6.tcp}`);
      // VXLAN over IPv6 takes 70 bytes, not flannel.1's 50: what the stack would answer "packet too big" is not redirected
      assert.deepEqual(r.cases['udp6 1430 bytes'], { retval: TC_ACT_REDIRECT, counted: ['fast_tx'], hopLimit: 63 });
      assert.deepEqual(r.cases['udp6 1431 bytes'], { retval: TC_ACT_UNSPEC, counted: ['pass_other'], hopLimit: 64 });
      assert.deepEqual(r.cases['udp6 gso, segments of 1430'], { retval: TC_ACT_REDIRECT, counted: ['fast_tx'], hopLimit: 63 });
      assert.deepEqual(r.cases['udp6 gso, segments of 1431'], { retval: TC_ACT_UNSPEC, counted: ['pass_other'], hopLimit: 64 });
    } finally {
      rmSync(pins, { recursive: true, force: true });
    }
  });
});

test("bypass mode frames: the send side writes what flannel.1 would put on the wire, or leaves the packet to flannel.1; the receive side delivers a member's single packets and leaves the rest", async () => {
  await withNamespaces(1, async ([ns]) => {
    const pins = mkdtempSync('/run/flannel-test-bpffs-');
    try {
      type Case = { retval: number; counted: string[]; out: string };
      const r = JSON.parse(await inNs(ns!, process.execPath, '--import', 'tsx', join(FIX, 'bypass-frames.ts'), pins)) as {
        cases: Record<string, Case>;
        probe: number;
        ul0MAC: string;
        F: Record<string, string>;
      };
      const { F } = r;
      const c = (name: string) => ({ ...r.cases[name]!, buf: Buffer.from(r.cases[name]!.out, 'hex') });
      const macAt = (b: Buffer, o: number) => [...b.subarray(o, o + 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');
      const ipAt = (b: Buffer, o: number) => [...b.subarray(o, o + 4)].join('.');
      const csumOk = (h: Buffer) => {
        let s = 0;
        for (let i = 0; i < h.length; i += 2) s += h.readUInt16BE(i);
        while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
        return s === 0xffff;
      };
      const inner = (b: Buffer, o: number) => ({ src: ipAt(b, o + 12), dst: ipAt(b, o + 16), ttl: b[o + 8], csumOk: csumOk(b.subarray(o, o + 20)), payload: b.subarray(o + 20).toString('hex') });
      assert.equal(r.probe, 0, 'the kernel adds VXLAN room with the UDP tunnel flags');

      const sent = c('send, neighbour known');
      assert.deepEqual([sent.retval, sent.counted], [TC_ACT_REDIRECT, ['bypass_tx']]);
      const b = sent.buf;
      assert.equal(b.length, 14 + 50 + 60);
      assert.deepEqual([macAt(b, 0), macAt(b, 6), b.readUInt16BE(12)], [F.neighMAC, r.ul0MAC, 0x0800], 'outer Ethernet from the FIB and the neighbour');
      // outer IPv4: no options, ECN of the inner (0), no DF (flannel.1's default), TTL 64, UDP
      assert.deepEqual([b[14], b[15], b.readUInt16BE(16), b.readUInt16BE(20), b[22], b[23]], [0x45, 0, 110, 0, 64, 17]);
      assert.ok(csumOk(b.subarray(14, 34)), 'outer header checksum');
      assert.deepEqual([ipAt(b, 26), ipAt(b, 30)], ['172.31.9.1', '172.31.9.2']);
      const sport = b.readUInt16BE(34);
      assert.ok(sport >= 32768 && sport <= 60999, `source port ${sport} in the kernel's range`);
      assert.deepEqual([b.readUInt16BE(36), b.readUInt16BE(38), b.readUInt16BE(40)], [8472, 90, 0], 'UDP to 8472, its length, zero checksum');
      assert.equal(b.subarray(42, 50).toString('hex'), '0800000000000100', 'VXLAN: the I flag, VNI 1');
      assert.deepEqual([macAt(b, 50), macAt(b, 56), b.readUInt16BE(62)], [F.peerVtepMAC, F.localVtepMAC, 0x0800], "inner Ethernet: our VtepMAC to the peer's");
      assert.deepEqual(inner(b, 64), { src: '10.244.3.2', dst: '10.244.5.7', ttl: 63, csumOk: true, payload: udp(40000, 7000, Buffer.alloc(32, 7)).toString('hex') });

      const unresolved = c('send, neighbour not resolved');
      assert.deepEqual([unresolved.retval, unresolved.counted], [TC_ACT_REDIRECT, ['bypass_tx']]);
      assert.deepEqual([macAt(unresolved.buf, 0), ipAt(unresolved.buf, 30)], [F.gwMAC, '172.31.9.3'], 'the kernel writes the outer MACs once it resolves the neighbour');

      const noRoute = c('send, no route to the peer');
      assert.deepEqual([noRoute.retval, noRoute.counted.sort()], [TC_ACT_REDIRECT, ['fast_tx', 'pass_no_fib']], 'to flannel.1 instead');
      assert.equal(noRoute.buf.length, 14 + 60, 'not encapsulated');
      assert.deepEqual(inner(noRoute.buf, 14).ttl, 63);

      const got = c('receive, member to a local pod');
      assert.deepEqual([got.retval, got.counted], [TC_ACT_REDIRECT, ['bypass_rx']]);
      assert.deepEqual([macAt(got.buf, 0), macAt(got.buf, 6), got.buf.readUInt16BE(12), got.buf.length], [F.podMAC, F.gwMAC, 0x0800, 14 + 60], 'decapsulated, addressed as the bridge would');
      assert.deepEqual(inner(got.buf, 14), { src: '10.244.5.7', dst: '10.244.3.2', ttl: 63, csumOk: true, payload: udp(7000, 40000, Buffer.alloc(32, 9)).toString('hex') });
      const untouched = (name: string, retval: number, counted: string[]) => {
        const x = c(name);
        assert.deepEqual([x.retval, x.counted], [retval, counted], name);
        assert.equal(x.buf.length, 14 + 50 + 60, `${name}: left as it came`);
      };
      untouched('receive, a GRO aggregate', TC_ACT_UNSPEC, ['pass_gro']);
      untouched('receive, another VNI', TC_ACT_UNSPEC, []);
      untouched('receive, inner frame for another MAC', TC_ACT_UNSPEC, ['pass_other']);
      untouched('receive, a stranger', TC_ACT_SHOT, []);
    } finally {
      rmSync(pins, { recursive: true, force: true });
    }
  });
});

test("a program the verifier refuses: the error carries the verifier's verdict, the end of its log (a log of kilobytes used to be cut to its first kilobyte)", async () => {
  const dir = mkdtempSync('/tmp/flannel-test-refused-');
  const pins = mkdtempSync('/run/flannel-test-bpffs-');
  try {
    const obj = join(dir, 'refused_by_verifier.o');
    execFileSync('clang', ['-g', '-O2', '-target', 'bpf', `-I/usr/include/${process.arch === 'x64' ? 'x86_64' : 'aarch64'}-linux-gnu`, '-c', join(FIX, 'refused_by_verifier.c'), '-o', obj]);
    ensureBpffs(pins);
    await assert.rejects(BpfObject.open(obj, pins), (e: Error) => {
      assert.match(e.message, /invalid access to packet/, e.message);
      assert.match(e.message, /processed \d+ insns/);
      assert.ok(e.message.length > 1024, 'more than the first kilobyte');
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
    execFileSync('umount', [pins]);
    rmdirSync(pins);
  }
});

test('single-entry map calls check key and value lengths against the map', () => {
  const vteps = egress.map('fl_vteps'),
    stats = egress.map('fl_peer_stats');
  const a = addon();
  assert.throws(() => a.bpfMapUpdate(vteps.fd, Buffer.alloc(2), Buffer.alloc(8)), /key is 2 bytes, the map's is 8/);
  assert.throws(() => a.bpfMapUpdate(vteps.fd, Buffer.alloc(8), Buffer.alloc(1)), /value is 1 bytes, the map's is 8/);
  assert.throws(() => a.bpfMapLookup(vteps.fd, Buffer.alloc(3), 8), /key is 3 bytes/);
  // the kernel would write 8 bytes into a 2-byte buffer
  assert.throws(() => a.bpfMapLookup(vteps.fd, Buffer.alloc(8), 2), /value size is 2 bytes/);
  // a per-CPU value is one slot per possible CPU
  assert.throws(() => a.bpfMapLookup(stats.fd, L.memberKey(PEER_IP), 32), /value size is 32 bytes/);
  assert.equal(a.bpfMapLookup(vteps.fd, L.vtepKey(PEER_MAC), 8)?.length, 8);
});

test('per-peer counters are not preallocated (bpftool shows the flag); the fast-path probe answers ENOENT', async () => {
  const show = JSON.parse(execFileSync('bpftool', ['-j', 'map', 'show', 'pinned', join(pinRoot, 'fl_peer_stats')], { encoding: 'utf8' })) as { flags: number; type: string };
  assert.equal(show.type, 'percpu_hash');
  assert.equal(show.flags & 1, 1, 'BPF_F_NO_PREALLOC: entries are allocated per peer, not 65536 x CPUs up front');
  assert.equal((await testRun(fastObj.program('fl_ct_probe').fd, podPacket('10.244.5.7'))).retval, 2);
});

test('upgrade: a pinned counter map of an older layout is replaced; a data map of another shape still refuses the load', async () => {
  await withBpffs(async (root) => {
    // fl_peer_stats as the previous version pinned it: preallocated
    execFileSync('bpftool', ['map', 'create', join(root, 'fl_peer_stats'), 'type', 'percpu_hash', 'key', '4', 'value', '32', 'entries', '65536', 'name', 'fl_peer_stats']);
    const oldId = BpfMap.pinnedId(join(root, 'fl_peer_stats'));
    await assert.rejects(BpfObject.open(objectPath('egress'), root), /bpf load/, 'libbpf refuses a pin of another shape');
    const o = await BpfObject.open(objectPath('egress'), root, undefined, L.REPLACEABLE_MAPS);
    try {
      assert.notEqual(o.map('fl_peer_stats').id(), oldId);
      assert.equal(BpfMap.pinnedId(join(root, 'fl_peer_stats')), o.map('fl_peer_stats').id());
    } finally {
      o.close();
    }
  });
  await withBpffs(async (root) => {
    // a map that holds peers is never thrown away behind the operator's back
    execFileSync('bpftool', ['map', 'create', join(root, 'fl_vteps'), 'type', 'hash', 'key', '8', 'value', '4', 'entries', '16', 'name', 'fl_vteps']);
    const id = BpfMap.pinnedId(join(root, 'fl_vteps'));
    await assert.rejects(BpfObject.open(objectPath('egress'), root, undefined, L.REPLACEABLE_MAPS), /bpf load/);
    assert.equal(BpfMap.pinnedId(join(root, 'fl_vteps')), id, 'the data map pin is left alone');
  });
});
