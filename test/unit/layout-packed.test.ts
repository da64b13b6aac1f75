// The peer maps' string encoders (layout.ts P, what the BPF map driver compares and writes) against
// the Buffer encoders, byte for byte, on random addresses, prefixes and MACs: the two must never drift.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as L from '../../control/datapath/layout.ts';
import { formatIp4 } from '../../control/subnet/ip4.ts';

const rnd32 = () => (Math.random() * 2 ** 32) >>> 0;
const rndMac = () =>
  Array.from({ length: 6 }, () =>
    Math.floor(Math.random() * 256)
      .toString(16)
      .padStart(2, '0'),
  ).join(':');

test('packed entries equal the Buffer encoders byte for byte', () => {
  for (let i = 0; i < 2000; i++) {
    const ip = rnd32();
    const len = i % 33;
    const mac = rndMac();
    const m = L.packedMac(mac);
    const s = formatIp4(ip);
    assert.equal(L.P.subnetKey(ip, len), L.subnetKey(s, len).toString('latin1'), `subnet key ${s}/${len}`);
    assert.equal(L.P.subnetVal(m), L.subnetVal(mac).toString('latin1'), `subnet value ${mac}`);
    assert.equal(L.P.routeVal(m, ip), L.routeVal(mac, s).toString('latin1'), `route ${mac} ${s}`);
    assert.equal(L.P.vtepKey(m), L.vtepKey(mac).toString('latin1'), `vtep key ${mac}`);
    assert.equal(L.P.vtepVal(ip), L.vtepVal(s).toString('latin1'), `vtep value ${s}`);
    assert.equal(L.P.memberKey(ip), L.memberKey(s).toString('latin1'), `member ${s}`);
  }
});

test('a malformed MAC is refused, not encoded', () => {
  for (const bad of ['', '0a:58:0a:f4:01', '0a:58:0a:f4:01:zz', '0a-58-0a-f4-01-01']) assert.throws(() => L.packedMac(bad), /not a MAC address/);
});
