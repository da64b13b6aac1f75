// The peer maps' row writers (layout.ts W, what the BPF map driver writes and compares) against the
// Buffer encoders, byte for byte, on random addresses, prefixes and MACs, at an offset inside a larger
// buffer as the driver's tables use them: the two must never drift.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as L from '../../control/datapath/layout.ts';
import { formatIp4 } from '../../control/subnet/ip4.ts';
import { formatIp6 } from '../../control/subnet/ip6.ts';

const rnd32 = () => (Math.random() * 2 ** 32) >>> 0;
const rnd128 = () => (BigInt(rnd32()) << 96n) | (BigInt(rnd32()) << 64n) | (BigInt(rnd32()) << 32n) | BigInt(rnd32());
const rndMac = () =>
  Array.from({ length: 6 }, () =>
    Math.floor(Math.random() * 256)
      .toString(16)
      .padStart(2, '0'),
  ).join(':');

/** what a writer puts at offset 3 of a zeroed buffer one struct (and a bit) long */
function row(size: number, write: (b: Buffer, off: number) => void): Buffer {
  const b = Buffer.alloc(size + 6);
  write(b, 3);
  assert.ok(b.subarray(0, 3).every((x) => x === 0) && b.subarray(3 + size).every((x) => x === 0), 'a writer stays inside its row');
  return b.subarray(3, 3 + size);
}

test('row writers equal the Buffer encoders byte for byte', () => {
  for (let i = 0; i < 2000; i++) {
    const ip = rnd32();
    const len = i % 33;
    const mac = i % 2 ? rndMac() : rndMac().toUpperCase();
    const m = L.macValue(mac);
    const s = formatIp4(ip);
    const ip6 = rnd128();
    const s6 = formatIp6(ip6);
    const len6 = i % 129;
    // [what, struct size, row writer, Buffer encoder]
    const cases: [string, number, (b: Buffer, o: number) => void, () => Buffer][] = [
      [`subnet key ${s}/${len}`, 8, (b, o) => L.W.subnetKey(b, o, ip, len), () => L.subnetKey(s, len)],
      [`subnet value ${mac}`, 8, (b, o) => L.W.subnetVal(b, o, m), () => L.subnetVal(mac)],
      [`route ${mac} ${s}`, 12, (b, o) => L.W.routeVal(b, o, m, ip), () => L.routeVal(mac, s)],
      [`vtep key ${mac}`, 8, (b, o) => L.W.vtepKey(b, o, m), () => L.vtepKey(mac)],
      [`vtep value ${s}`, 8, (b, o) => L.W.vtepVal(b, o, ip), () => L.vtepVal(s)],
      [`member ${s}`, 4, (b, o) => L.W.memberKey(b, o, ip), () => L.memberKey(s)],
      [`subnet6 key ${s6}/${len6}`, 20, (b, o) => L.W.subnet6Key(b, o, ip6, len6), () => L.subnet6Key(s6, len6)],
      [`route6 ${mac} ${s6}`, 24, (b, o) => L.W.route6Val(b, o, m, ip6), () => L.route6Val(mac, s6)],
      [`member6 ${s6}`, 16, (b, o) => L.W.member6Key(b, o, ip6), () => L.member6Key(s6)],
    ];
    for (const [what, size, write, encode] of cases) assert.deepEqual(row(size, write), encode(), what);
  }
});

test('a malformed MAC is refused, not encoded', () => {
  for (const bad of ['', '0a:58:0a:f4:01', '0a:58:0a:f4:01:zz', '0a-58-0a-f4-01-01', '0a:58:0a:f4:01:0g', '0a:58:0a:f4:01:011', 'g0:58:0a:f4:01:01'])
    assert.throws(() => L.macValue(bad), /not a MAC address/, bad);
  assert.equal(L.macValue('ff:ff:ff:ff:ff:ff'), 2 ** 48 - 1);
});
