// flannel's iptables rules, as text: the golden file is flannel's rule list (pkg/trafficmngr/iptables)
// written out the way iptables-save prints it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { forwardRules, forwardRules6, masqRules, masqRules6, render } from '../../control/firewall/iptables.ts';
import { nftScript } from '../../control/firewall/nftables.ts';
import { parseCidr6 } from '../../control/subnet/ip6.ts';
import { parseCidr } from '../../control/subnet/ip4.ts';

const golden = readFileSync(join(import.meta.dirname, '..', 'fixtures', 'ipmasq-10.244.1.0-24.golden'), 'utf8');

test("ip-masq and forward rules match flannel's text (golden file)", () => {
  const net = parseCidr('10.244.0.0/16')!;
  assert.equal(render([...forwardRules(net), ...masqRules(net, parseCidr('10.244.1.0/24')!, true)]), golden);
});

test('without --random-fully support the MASQUERADE rules carry no option, as flannel', () => {
  const rules = masqRules(parseCidr('10.244.0.0/16')!, parseCidr('10.244.1.0/24')!, false);
  assert.deepEqual(
    rules.filter((r) => r.spec.includes('MASQUERADE')).map((r) => r.spec.split('-j ')[1]),
    ['MASQUERADE', 'MASQUERADE'],
  );
});

test("IPv6: flannel's masqIP6Rules and IPv6 forward rules, for ip6tables (multicast is ff00::/8)", () => {
  const rules = [...forwardRules6(parseCidr6('fd00:10:244::/56')!), ...masqRules6(parseCidr6('fd00:10:244::/56')!, parseCidr6('fd00:10:244:5::/64')!, true)];
  assert.ok(rules.every((r) => r.family === 6));
  assert.equal(
    render(rules),
    [
      '*filter',
      ':FLANNEL-FWD - [0:0]',
      '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD',
      '-A FLANNEL-FWD -s fd00:10:244::/56 -m comment --comment "flanneld forward" -j ACCEPT',
      '-A FLANNEL-FWD -d fd00:10:244::/56 -m comment --comment "flanneld forward" -j ACCEPT',
      'COMMIT',
      '*nat',
      ':FLANNEL-POSTRTG - [0:0]',
      '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
      '-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN',
      '-A FLANNEL-POSTRTG -s fd00:10:244:5::/64 -d fd00:10:244::/56 -m comment --comment "flanneld masq" -j RETURN',
      '-A FLANNEL-POSTRTG -s fd00:10:244::/56 -d fd00:10:244:5::/64 -m comment --comment "flanneld masq" -j RETURN',
      '-A FLANNEL-POSTRTG ! -s fd00:10:244::/56 -d fd00:10:244:5::/64 -m comment --comment "flanneld masq" -j RETURN',
      '-A FLANNEL-POSTRTG -s fd00:10:244::/56 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully',
      '-A FLANNEL-POSTRTG ! -s fd00:10:244::/56 -d fd00:10:244::/56 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully',
      'COMMIT',
      '',
    ].join('\n'),
  );
});

test('nftables with IPv6: the same rules with ip6 matches in table ip6 flannel-ipv6; IPv6-only writes no IPv4 chains', () => {
  const s = nftScript({ ipv6Network: parseCidr6('fd00:10:244::/56')!, ipv6Subnet: parseCidr6('fd00:10:244:5::/64')!, masq: true, forward: false, randomFully: false });
  assert.ok(!/add chain ip flannel-ipv4/.test(s));
  assert.match(s, /^add rule ip6 flannel-ipv6 postrtg ip6 saddr fd00:10:244::\/56 ip6 daddr != ff00::\/8 masquerade$/m);
  assert.match(s, /^add rule ip6 flannel-ipv6 postrtg ip6 saddr != fd00:10:244:5::\/64 ip6 daddr fd00:10:244::\/56 return$/m);
});
