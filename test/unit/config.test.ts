import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig, ConfigError, isCompatible } from '../../control/subnet/config.ts';
import { formatCidr, formatIp4, parseCidr } from '../../control/subnet/ip4.ts';
import { formatIp6, parseCidr6 } from '../../control/subnet/ip6.ts';

test('flannel defaults for a /16: SubnetLen 24, SubnetMin skips the first subnet, SubnetMax is the last', () => {
  const c = parseConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');
  assert.equal(c.subnetLen, 24);
  assert.equal(formatIp4(c.subnetMin), '10.244.1.0');
  assert.equal(formatIp4(c.subnetMax), '10.244.255.0');
  assert.equal(c.backend.Type, 'vxlan');
  assert.equal(c.backendDefaulted, false);
});

test('small networks get prefix + 2; a /22 still gets /24', () => {
  assert.equal(parseConfig('{"Network":"10.0.0.0/22"}').subnetLen, 24);
  const c = parseConfig('{"Network":"10.0.0.0/26"}');
  assert.equal(c.subnetLen, 28);
  assert.equal(formatIp4(c.subnetMin), '10.0.0.16');
  assert.equal(formatIp4(c.subnetMax), '10.0.0.48');
});

test('a missing Backend falls back to udp as flannel code does, and says so', () => {
  const c = parseConfig('{"Network":"10.1.0.0/16"}');
  assert.equal(c.backend.Type, 'udp');
  assert.equal(c.backendDefaulted, true);
});

test('explicit SubnetLen, SubnetMin and SubnetMax are honoured', () => {
  const c = parseConfig('{"Network":"10.5.0.0/16","SubnetLen":26,"SubnetMin":"10.5.1.0","SubnetMax":"10.5.2.192","Backend":{"Type":"host-gw"}}');
  assert.equal(c.subnetLen, 26);
  assert.equal(formatIp4(c.subnetMin), '10.5.1.0');
  assert.equal(formatIp4(c.subnetMax), '10.5.2.192');
  assert.ok(isCompatible(c, { subnet: parseCidr('10.5.1.64/26')! }));
  assert.ok(!isCompatible(c, { subnet: parseCidr('10.5.0.0/26')! }), 'below SubnetMin');
  assert.ok(!isCompatible(c, { subnet: parseCidr('10.5.1.0/24')! }), 'wrong length');
});

const bad: [string, string, RegExp][] = [
  ['not json', '(json)', /not valid JSON/],
  ['[]', '(json)', /object/],
  ['{}', 'Network', /required/],
  ['{"Network":"10.0.0.0/33"}', 'Network', /not an IPv4 CIDR: "10.0.0.0\/33"/],
  ['{"Network":"banana"}', 'Network', /banana/],
  ['{"Network":"10.0.0.0/29"}', 'Network', /too small.*\/28/],
  ['{"Network":"10.0.0.0/16","SubnetLen":31}', 'SubnetLen', /at most 30/],
  ['{"Network":"10.0.0.0/16","SubnetLen":17}', 'SubnetLen', /at least \/18/],
  ['{"Network":"10.0.0.0/16","SubnetLen":"24"}', 'SubnetLen', /whole number, got "24"/],
  ['{"Network":"10.0.0.0/16","SubnetMin":"10.1.0.0"}', 'SubnetMin', /10\.1\.0\.0 is not in Network/],
  ['{"Network":"10.0.0.0/16","SubnetMax":"10.0.3.5"}', 'SubnetMax', /boundary/],
  ['{"Network":"10.0.0.0/16","SubnetMin":"10.0.9.0","SubnetMax":"10.0.3.0"}', 'SubnetMin', /above SubnetMax/],
  ['{"Network":"10.0.0.0/16","Backend":"vxlan"}', 'Backend', /must be an object/],
  ['{"Network":"10.0.0.0/16","Backend":{}}', 'Backend.Type', /required/],
  ['{"Network":"10.0.0.0/16","EnableIPv6":true}', 'IPv6Network', /required when EnableIPv6/],
  ['{"Network":"10.0.0.0/16","EnableIPv6":true,"IPv6Network":"10.1.0.0/16"}', 'IPv6Network', /not an IPv6 CIDR/],
  ['{"EnableIPv4":false,"EnableIPv6":false}', 'EnableIPv4', /no address family/],
  ['{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/125"}', 'IPv6Network', /minimum useful IPv6 network is a \/124/],
  ['{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetLen":127}', 'IPv6SubnetLen', /at most 126/],
  ['{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetLen":57}', 'IPv6SubnetLen', /at least \/58/],
  ['{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetMin":"fd01::"}', 'IPv6SubnetMin', /not in IPv6Network/],
  ['{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetMax":"fd00:0:0:7::1"}', 'IPv6SubnetMax', /boundary/],
  ['{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetMin":"fd00:0:0:9::","IPv6SubnetMax":"fd00:0:0:3::"}', 'IPv6SubnetMin', /above IPv6SubnetMax/],
];
for (const [text, field, msg] of bad) {
  test(`bad config ${text} is a ConfigError naming ${field}`, () => {
    assert.throws(
      () => parseConfig(text),
      (e: unknown) => {
        assert.ok(e instanceof ConfigError);
        assert.equal(e.field, field);
        assert.match(e.message, msg);
        return true;
      },
    );
  });
}

test('bad Backend options are a ConfigError naming the field (the CLI says "bad network config", not "failed to start")', async () => {
  const { vxlanOptions } = await import('../../control/backend/vxlan/options.ts');
  const { udpOptions } = await import('../../control/backend/udp/udp.ts');
  const cases: [() => unknown, string][] = [
    [() => vxlanOptions({ Type: 'vxlan', VNI: -1 }), 'Backend.VNI'],
    [() => vxlanOptions({ Type: 'vxlan', Port: 'x' }), 'Backend.Port'],
    [() => vxlanOptions({ Type: 'vxlan', MTU: 1.5 }), 'Backend.MTU'],
    [() => vxlanOptions({ Type: 'vxlan', DirectRouting: 'yes' }), 'Backend.DirectRouting'],
    [() => udpOptions({ Type: 'udp', Port: 70000 }), 'Backend.Port'],
  ];
  for (const [fn, field] of cases) {
    assert.throws(fn, (e: unknown) => e instanceof ConfigError && e.field === field && e.name === 'ConfigError', field);
  }
});

test("flannel's spelling: keys match in any case (Go's JSON decoding), Backend.Type is lower-cased, the later of two spellings wins", async () => {
  const { vxlanOptions } = await import('../../control/backend/vxlan/options.ts');
  const c = parseConfig('{"network":"10.50.0.0/16","SUBNETLEN":26,"backend":{"type":"VxLAN","port":4789,"vni":7,"mtu":1400}}');
  assert.equal(formatCidr(c.network), '10.50.0.0/16');
  assert.equal(c.subnetLen, 26);
  assert.equal(c.backendDefaulted, false, 'a lower-case "backend" is the Backend, not a missing one (which would mean udp)');
  assert.equal(c.backend.Type, 'vxlan');
  assert.deepEqual(vxlanOptions(c.backend), { vni: 7, port: 4789, learning: false, directRouting: false, mtu: 1400 });
  assert.equal(parseConfig('{"Network":"10.50.0.0/16","network":"10.60.0.0/16","Backend":{"Type":"host-gw"}}').network.ip, parseCidr('10.60.0.0/16')!.ip);
  assert.equal(vxlanOptions(parseConfig('{"Network":"10.50.0.0/16","Backend":{"Type":"vxlan","Directrouting":true}}').backend).directRouting, true);
  // options we do not implement are refused in any spelling, never ignored
  assert.throws(() => vxlanOptions(parseConfig('{"Network":"10.50.0.0/16","Backend":{"Type":"vxlan","gbp":true}}').backend), /Backend\.GBP: not supported/);
});

test('Backend.MTU is the underlay MTU, as in flannel: flannel.1 (and FLANNEL_MTU) gets 50 bytes less; without it, the interface MTU less 50', async () => {
  const { vxlanDeviceMtu, vxlanOptions } = await import('../../control/backend/vxlan/options.ts');
  assert.equal(vxlanDeviceMtu(vxlanOptions({ Type: 'vxlan', MTU: 1400 }), 1500), 1350);
  assert.equal(vxlanDeviceMtu(vxlanOptions({ Type: 'vxlan' }), 9001), 8951);
  assert.throws(() => vxlanOptions({ Type: 'vxlan', MTU: 100 }), /Backend\.MTU: 100 is the underlay's MTU/);
});

test('EnableNFTables: off by default, a boolean in any spelling, anything else a ConfigError', () => {
  assert.equal(parseConfig('{"Network":"10.244.0.0/16"}').enableNFTables, false);
  assert.equal(parseConfig('{"Network":"10.244.0.0/16","enableNFTables":true}').enableNFTables, true);
  assert.throws(() => parseConfig('{"Network":"10.244.0.0/16","EnableNFTables":"yes"}'), /EnableNFTables: must be true or false/);
});

test("IPv6: flannel's defaults (a /64 per node from a /62 or wider, else prefix+2; the first subnet skipped) and IPv6-only", () => {
  const d = parseConfig('{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}');
  assert.ok(d.enableIPv4 && d.enableIPv6);
  assert.equal(d.ipv6!.subnetLen, 64);
  assert.equal(formatIp6(d.ipv6!.subnetMin), 'fd00:10:244:1::');
  assert.equal(formatIp6(d.ipv6!.subnetMax), 'fd00:10:244:ff::');
  assert.ok(isCompatible(d, { subnet: parseCidr('10.244.3.0/24')!, ipv6Subnet: parseCidr6('fd00:10:244:3::/64')! }));
  assert.ok(!isCompatible(d, { subnet: parseCidr('10.244.3.0/24')! }), 'a dual-stack node needs both subnets');
  assert.ok(!isCompatible(d, { subnet: parseCidr('10.244.3.0/24')!, ipv6Subnet: parseCidr6('fd00:10:244::/64')! }), 'the first IPv6 subnet is never handed out');
  const small = parseConfig('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/120"}');
  assert.equal(small.ipv6!.subnetLen, 122);
  assert.equal(formatIp6(small.ipv6!.subnetMax), 'fd00::c0');
  assert.equal(parseConfig('{"EnableIPv6":true,"IPv6Network":"fd00::/62","Network":"10.0.0.0/8"}').ipv6!.subnetLen, 64);
  assert.equal(parseConfig('{"EnableIPv6":true,"IPv6Network":"fd00::/63","Network":"10.0.0.0/8"}').ipv6!.subnetLen, 65);
  const only = parseConfig('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","IPv6SubnetLen":80,"Backend":{"Type":"vxlan"}}');
  assert.equal(only.enableIPv4, false);
  assert.equal(formatCidr(only.network), '0.0.0.0/0', "no IPv4 network, as flannel's zero IP4Net");
  assert.equal(only.ipv6!.subnetLen, 80);
  assert.ok(isCompatible(only, { subnet: { ip: 0, len: 0 }, ipv6Subnet: parseCidr6('fd00:10:244:0:1::/80')! }));
  assert.ok(!isCompatible(only, { subnet: parseCidr('10.0.0.0/24')!, ipv6Subnet: parseCidr6('fd00:10:244:0:1::/80')! }), 'no IPv4 subnet on an IPv6-only network');
});
