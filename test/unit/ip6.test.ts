import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatCidr6, formatIp6, parseCidr6, parseIp6 } from '../../control/subnet/ip6.ts';

test("IPv6 text as Go's net.IP.String() writes it (RFC 5952), and CIDRs as net.ParseCIDR gives the network", () => {
  const cases: [string, string][] = [
    ['fd00:10:244:1:0:0:0:0', 'fd00:10:244:1::'],
    ['FD00:0010:0244:0001::1', 'fd00:10:244:1::1'],
    ['0:0:0:0:0:0:0:0', '::'],
    ['::1', '::1'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // one zero group is not compressed
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'], // the longer run
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // the first of two equal runs
    ['::ffff:10.1.2.3', '::ffff:10.1.2.3'],
    ['64:ff9b::192.0.2.33', '64:ff9b::c000:221'],
  ];
  for (const [input, go] of cases) assert.equal(formatIp6(parseIp6(input)!), go, input);
  for (const bad of ['', '1.2.3.4', ':::', '1::2::3', 'fd00::g', '1:2:3:4:5:6:7:8:9', '12345::', '::1.2.3.256', '::01.2.3.4', '1:2:3:4:5:6:7::8:9']) assert.equal(parseIp6(bad), undefined, bad);
  assert.equal(formatCidr6(parseCidr6('fd00:10:244:3::1/64')!), 'fd00:10:244:3::/64');
  assert.equal(formatCidr6(parseCidr6('fd00:10:244:ff00::/56')!), 'fd00:10:244:ff00::/56');
  assert.equal(formatCidr6(parseCidr6('::/0')!), '::/0');
  for (const bad of ['fd00::/129', 'fd00::', 'fd00::/064', '10.0.0.0/8']) assert.equal(parseCidr6(bad), undefined, bad);
});

test('5000 random addresses: parse(format(x)) = x, and the text equals the WHATWG URL serializer (also RFC 5952)', () => {
  let seed = 7;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 0xffff;
  for (let i = 0; i < 5000; i++) {
    // many zero groups, so compression runs of every length and position occur
    const g = Array.from({ length: 8 }, () => (rnd() % 3 === 0 ? rnd() : 0));
    if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) continue; // v4-mapped: URL prints hex
    const v = g.reduce((a, x) => (a << 16n) | BigInt(x), 0n);
    const text = formatIp6(v);
    assert.equal(parseIp6(text), v, text);
    assert.equal(text, new URL(`http://[${g.map((x) => x.toString(16)).join(':')}]`).hostname.slice(1, -1));
  }
});
