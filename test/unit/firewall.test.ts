// flannel's iptables rules, as text: the golden file is flannel's rule list (pkg/trafficmngr/iptables)
// written out the way iptables-save prints it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { forwardRules, masqRules, render } from '../../control/firewall/iptables.ts';
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
