// Every verdict and rewrite of the BPF programs, on crafted packets through BPF_PROG_TEST_RUN, with
// the real verifier and real maps (pinned in a bpffs of the test's own, removed afterwards).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BpfObject, ensureBpffs, testRun } from '../../control/kernel/bpf.ts';
import * as L from '../../control/bpf/layout.ts';
import { eth, ipv4, udp, vxlan, icmpEcho, mac, ETH_P_IP, ETH_P_ARP, IPPROTO_ICMP, IPPROTO_UDP } from '../helpers/packets.ts';

const OBJ = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'bpf');
const TC_ACT_OK = 0, TC_ACT_SHOT = 2, XDP_DROP = 1, XDP_PASS = 2;
const LOCAL_MAC = '02:00:00:00:00:01', PEER_MAC = '02:00:00:00:00:02', ORPHAN_MAC = '02:00:00:00:00:03';
const PEER_IP = '172.20.0.12', STRANGER = '172.20.0.66';

const pinRoot = mkdtempSync('/run/flannel-test-bpffs-');
let egress: BpfObject, ingress: BpfObject, guard: BpfObject;

function counters() {
  const m = egress.map('fl_stats');
  return Object.fromEntries(L.REASONS.map((r, i) => [r, L.sumCounters(m.perCpu(m.lookup(L.u32Key(i))!)).packets]));
}

before(async () => {
  ensureBpffs(pinRoot);
  egress = await BpfObject.open(join(OBJ, 'vxlan_egress.o'), pinRoot);
  ingress = await BpfObject.open(join(OBJ, 'vxlan_ingress.o'), pinRoot);
  guard = await BpfObject.open(join(OBJ, 'underlay_guard.o'), pinRoot);
  egress.map('fl_config').update(L.u32Key(0), L.configVal({ vni: 1, port: 8472, ttl: 64, flags: 0, localMAC: LOCAL_MAC }));
  egress.map('fl_subnets').update(L.subnetKey('10.244.5.0', 24), L.subnetVal(PEER_MAC));
  egress.map('fl_subnets').update(L.subnetKey('10.244.6.0', 24), L.subnetVal(ORPHAN_MAC));
  egress.map('fl_vteps').update(L.vtepKey(PEER_MAC), L.vtepVal(PEER_IP));
  egress.map('fl_members').update(L.memberKey(PEER_IP), L.memberVal());
});
after(() => {
  for (const o of [egress, ingress, guard]) o?.close();
  try {
    execFileSync('umount', [pinRoot]);
  } finally {
    rmdirSync(pinRoot);
  }
});

const podPacket = (dst: string) => eth(LOCAL_MAC, LOCAL_MAC, ETH_P_IP, ipv4('10.244.3.2', dst, IPPROTO_ICMP, icmpEcho()));

test('the objects share one set of pinned maps', () => {
  for (const name of ['fl_subnets', 'fl_vteps', 'fl_members', 'fl_config', 'fl_stats', 'fl_peer_stats'])
    assert.equal(egress.map(name).desc.maxEntries, guard.map(name).desc.maxEntries);
  assert.equal(L.decodeConfig(guard.map('fl_config').lookup(L.u32Key(0))!).vni, 1, 'config written through one object is seen through another');
});

test('egress: a packet for a peer subnet leaves with the peer VtepMAC as destination and ours as source', async () => {
  const before = counters();
  const r = await testRun(egress.program('fl_vxlan_egress').fd, podPacket('10.244.5.7'));
  assert.equal(r.retval, TC_ACT_OK);
  assert.deepEqual(r.data.subarray(0, 6), mac(PEER_MAC));
  assert.deepEqual(r.data.subarray(6, 12), mac(LOCAL_MAC));
  assert.deepEqual(r.data.subarray(12), podPacket('10.244.5.7').subarray(12), 'nothing past the MACs changes');
  assert.equal(counters().forwarded, before.forwarded + 1);
  const ps = egress.map('fl_peer_stats');
  assert.equal(L.sumPeerStats(ps.perCpu(ps.lookup(L.memberKey(PEER_IP))!)).txPackets >= 1, true);
});

test('egress: no peer subnet, unknown VTEP, not IPv4, bad IP header: dropped and counted', async () => {
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
  assert.equal(c1.no_route, c0.no_route + 1);
  assert.equal(c1.unknown_vtep, c0.unknown_vtep + 1);
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

for (const [hook, prog, PASS, DROP] of [['tc', 'fl_guard_tc', TC_ACT_OK, TC_ACT_SHOT], ['xdp', 'fl_guard_xdp', XDP_PASS, XDP_DROP]] as const) {
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
