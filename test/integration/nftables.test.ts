// flannel's nftables mode against the real nft, in a namespace of its own where kube-proxy-style
// iptables rules (iptables-nft) exist too: the transaction is flannel's rule text (golden file), the
// kernel lists exactly those rules, re-ensuring writes nothing, drift is repaired in one transaction,
// other rules are never touched, and cleanup removes only our tables.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { inNs, ip, sh } from '../helpers/netns.ts';
import { nftListing } from '../../control/firewall/nftables.ts';
import { parseCidr } from '../../control/subnet/ip4.ts';

const ns = `fl${randomBytes(3).toString('hex')}nf`;
const probe = join(import.meta.dirname, '..', 'fixtures', 'nft-probe.ts');
const golden = readFileSync(join(import.meta.dirname, '..', 'fixtures', 'nftables-10.244.1.0-24.golden'), 'utf8');
const run = async (...args: string[]) => JSON.parse(await sh('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', probe, ...args])) as string[];
const list = () => inNs(ns, 'nft', 'list', 'table', 'ip', 'flannel-ipv4');
/** with rule handles: an unchanged table keeps them, a rewrite gives new ones */
const handles = () => inNs(ns, 'nft', '-a', 'list', 'table', 'ip', 'flannel-ipv4');
const iptablesSave = async () => (await inNs(ns, 'iptables-save')).split('\n').filter((l) => l && !l.startsWith('#') && !l.startsWith(':'));
let kube: string[];

before(async () => {
  await ip('netns', 'add', ns);
  // kube-proxy's masquerade, as it writes it through iptables (the nf_tables backend on Debian 12)
  for (const args of [
    ['-t', 'nat', '-N', 'KUBE-POSTROUTING'],
    ['-t', 'nat', '-A', 'POSTROUTING', '-m', 'comment', '--comment', 'kubernetes postrouting rules', '-j', 'KUBE-POSTROUTING'],
    ['-t', 'nat', '-A', 'KUBE-POSTROUTING', '-m', 'mark', '!', '--mark', '0x4000/0x4000', '-j', 'RETURN'],
    ['-t', 'nat', '-A', 'KUBE-POSTROUTING', '-j', 'MASQUERADE', '--random-fully'],
    ['-A', 'FORWARD', '-m', 'conntrack', '--ctstate', 'INVALID', '-j', 'DROP'],
  ])
    await inNs(ns, 'iptables', ...args);
  kube = await iptablesSave();
});
after(async () => {
  await sh('ip', ['netns', 'del', ns], { allowFail: true });
});

test("the transaction is flannel's rule text, and the kernel then lists exactly those rules", async () => {
  assert.equal(await sh(process.execPath, ['--import', 'tsx', probe, 'script', '10.244.0.0/16', '10.244.1.0/24']), golden);
  assert.deepEqual(await run('ensure', '10.244.0.0/16', '10.244.1.0/24'), ['nftables table ip flannel-ipv4']);
  const o = { network: parseCidr('10.244.0.0/16')!, subnet: parseCidr('10.244.1.0/24')!, masq: true, forward: true, randomFully: true };
  // flannel creates the IPv6 table too (empty on an IPv4-only network): the listing covers both
  assert.equal((await list()) + (await inNs(ns, 'nft', 'list', 'table', 'ip6', 'flannel-ipv6')), nftListing(o));
  assert.deepEqual(await iptablesSave(), kube, "kube-proxy's iptables rules untouched");
});

test('ensure again writes nothing: the same rule handles', async () => {
  const before = await handles();
  assert.deepEqual(await run('ensure', '10.244.0.0/16', '10.244.1.0/24'), []);
  assert.equal(await handles(), before);
});

test('a rule deleted by hand, and one added to our chain, are repaired in one rewrite', async () => {
  const h = /ip saddr 10\.244\.0\.0\/16 ip daddr != 224\.0\.0\.0\/4 masquerade fully-random # handle (\d+)/.exec(await handles())![1]!;
  await inNs(ns, 'nft', 'delete', 'rule', 'ip', 'flannel-ipv4', 'postrtg', 'handle', h);
  assert.deepEqual(await run('ensure', '10.244.0.0/16', '10.244.1.0/24'), ['nftables table ip flannel-ipv4']);
  assert.match(await list(), /ip saddr 10\.244\.0\.0\/16 ip daddr != 224\.0\.0\.0\/4 masquerade fully-random/);
  await inNs(ns, 'nft', 'add', 'rule', 'ip', 'flannel-ipv4', 'forward', 'ip', 'saddr', '192.0.2.0/24', 'drop');
  assert.deepEqual(await run('ensure', '10.244.0.0/16', '10.244.1.0/24'), ['nftables table ip flannel-ipv4']);
  assert.doesNotMatch(await list(), /192\.0\.2\.0/);
  assert.deepEqual(await iptablesSave(), kube);
});

test('a new subnet, and --ip-masq-fully-random-disable, rewrite the chain', async () => {
  assert.deepEqual(await run('ensure', '10.244.0.0/16', '10.244.9.0/24', 'norandom'), ['nftables table ip flannel-ipv4']);
  const l = await list();
  assert.match(l, /ip saddr 10\.244\.9\.0\/24 ip daddr 10\.244\.0\.0\/16 return/);
  assert.doesNotMatch(l, /10\.244\.1\.0|fully-random/);
});

test('cleanup removes both tables and nothing else; a second cleanup finds nothing', async () => {
  assert.deepEqual(await run('remove'), ['nftables table ip flannel-ipv4', 'nftables table ip6 flannel-ipv6']);
  assert.doesNotMatch(await inNs(ns, 'nft', 'list', 'tables'), /flannel/);
  assert.deepEqual(await iptablesSave(), kube);
  assert.deepEqual(await run('remove'), []);
});
