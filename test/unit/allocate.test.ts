import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../../control/subnet/config.ts';
import { freeSubnets, pickFreeSubnet, NetworkExhaustedError } from '../../control/subnet/allocate.ts';
import { formatCidr, parseCidr } from '../../control/subnet/ip4.ts';
import { renderSubnetFile, parseSubnetFile } from '../../control/subnet/subnet-file.ts';

test('allocation skips the first subnet and taken ones, picks among at most 100 free', () => {
  const cfg = parseConfig('{"Network":"10.244.0.0/16"}');
  const taken = [parseCidr('10.244.1.0/24')!, parseCidr('10.244.2.0/24')!];
  const free = freeSubnets(cfg, taken);
  assert.equal(free.length, 100);
  assert.equal(formatCidr(free[0]!), '10.244.3.0/24');
  assert.equal(formatCidr(pickFreeSubnet(cfg, taken, () => 0)), '10.244.3.0/24');
  assert.equal(formatCidr(pickFreeSubnet(cfg, taken, () => 0.999)), '10.244.102.0/24');
});

test('a larger lease blocks every subnet it overlaps', () => {
  const cfg = parseConfig('{"Network":"10.0.0.0/24","SubnetLen":28}');
  const free = freeSubnets(cfg, [parseCidr('10.0.0.0/26')!]);
  assert.equal(formatCidr(free[0]!), '10.0.0.64/28');
});

test('an exhausted network is a clear error', () => {
  const cfg = parseConfig('{"Network":"10.0.0.0/28"}'); // four /30s, three usable
  const taken = ['10.0.0.4/30', '10.0.0.8/30', '10.0.0.12/30'].map((s) => parseCidr(s)!);
  assert.throws(
    () => pickFreeSubnet(cfg, taken),
    (e: unknown) => e instanceof NetworkExhaustedError && /no free subnet left/.test(e.message),
  );
});

test('subnet file has flannel variables, FLANNEL_SUBNET is the first usable address', () => {
  const text = renderSubnetFile({ network: parseCidr('10.244.0.0/16')!, subnet: parseCidr('10.244.3.0/24')!, mtu: 1450, ipMasq: false });
  assert.equal(text, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n');
  assert.deepEqual(parseSubnetFile(text), { FLANNEL_NETWORK: '10.244.0.0/16', FLANNEL_SUBNET: '10.244.3.1/24', FLANNEL_MTU: '1450', FLANNEL_IPMASQ: 'false' });
});

test('parseIp4: dotted quads only, no leading zeros, each part at most 255; 20000 random inputs agree with a regex reference', async () => {
  const { parseIp4 } = await import('../../control/subnet/ip4.ts');
  const ref = (s: string) => {
    const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
    if (!m) return undefined;
    let v = 0;
    for (const p of m.slice(1)) {
      if ((p.length > 1 && p.startsWith('0')) || Number(p) > 255) return undefined;
      v = v * 256 + Number(p);
    }
    return v;
  };
  let seed = 1;
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
  const alphabet = '0123456789..0123456789 a-';
  for (let i = 0; i < 20000; i++) {
    const s = i % 2 ? Array.from({ length: 4 }, () => String(rnd(300))).join('.') : Array.from({ length: rnd(16) }, () => alphabet[rnd(alphabet.length)]).join('');
    assert.equal(parseIp4(s), ref(s), JSON.stringify(s));
  }
});
