// The firewall module against the real iptables (nf_tables backend here), in a namespace of its own:
// what iptables-save shows is flannel's text; re-ensuring changes nothing; drift is repaired; a new
// subnet rewrites the chain atomically; other rules are never touched; cleanup removes only ours.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { inNs, ip, sh } from '../helpers/netns.ts';

const ns = `fl${randomBytes(3).toString('hex')}fw`;
const probe = join(import.meta.dirname, '..', 'fixtures', 'iptables-probe.ts');
const golden = readFileSync(join(import.meta.dirname, '..', 'fixtures', 'ipmasq-10.244.1.0-24.golden'), 'utf8');
const run = async (...args: string[]) => JSON.parse(await sh('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', probe, ...args])) as string[];
/** iptables-save without comments and counters: the lines a user compares */
const save = async () => (await inNs(ns, 'iptables-save')).split('\n').filter((l) => l && !l.startsWith('#'));
const ours = (lines: string[]) => lines.filter((l) => /FLANNEL|^\*|^COMMIT/.test(l));

before(async () => {
  await ip('netns', 'add', ns);
  // someone else's rules, which must survive everything we do
  await inNs(ns, 'iptables', '-t', 'nat', '-A', 'POSTROUTING', '-s', '192.0.2.0/24', '-j', 'MASQUERADE');
  await inNs(ns, 'iptables', '-A', 'FORWARD', '-s', '198.51.100.0/24', '-j', 'DROP');
});
after(async () => {
  await sh('ip', ['netns', 'del', ns], { allowFail: true });
});

test("after ensure, iptables-save shows flannel's rules exactly (golden file)", async () => {
  assert.deepEqual(await run('ensure', '10.244.0.0/16', '10.244.1.0/24'), ['filter FLANNEL-FWD', 'filter FORWARD jump', 'nat FLANNEL-POSTRTG', 'nat POSTROUTING jump']);
  const lines = await save();
  const expected = golden.trim().split('\n');
  // iptables-save lists a table's chains first, then its rules; compare as sets within each table
  for (const table of ['filter', 'nat']) {
    const section = (l: string[]) => l.slice(l.indexOf(`*${table}`), l.indexOf('COMMIT', l.indexOf(`*${table}`))).filter((x) => x.includes('FLANNEL'));
    assert.deepEqual(section(lines), section(expected), table);
  }
  assert.ok(lines.includes('-A POSTROUTING -s 192.0.2.0/24 -j MASQUERADE'));
  assert.ok(lines.includes('-A FORWARD -s 198.51.100.0/24 -j DROP'));
});

test('ensure again changes nothing (no flush, no rewrite)', async () => {
  const before = await save();
  assert.deepEqual(await run('ensure', '10.244.0.0/16', '10.244.1.0/24'), []);
  assert.deepEqual(await save(), before);
});

test('a rule deleted by hand and a jump deleted by hand come back', async () => {
  await inNs(
    ns,
    'iptables',
    '-t',
    'nat',
    '-D',
    'FLANNEL-POSTRTG',
    '-s',
    '10.244.0.0/16',
    '!',
    '-d',
    '224.0.0.0/4',
    '-m',
    'comment',
    '--comment',
    'flanneld masq',
    '-j',
    'MASQUERADE',
    '--random-fully',
  );
  await inNs(ns, 'iptables', '-D', 'FORWARD', '-m', 'comment', '--comment', 'flanneld forward', '-j', 'FLANNEL-FWD');
  assert.deepEqual(await run('ensure', '10.244.0.0/16', '10.244.1.0/24'), ['filter FORWARD jump', 'nat FLANNEL-POSTRTG']);
  assert.equal((await inNs(ns, 'iptables-save', '-t', 'nat')).match(/MASQUERADE --random-fully/g)?.length, 2);
  assert.match(await inNs(ns, 'iptables-save', '-t', 'filter'), /-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD/);
});

test('a new subnet replaces the old rules in the chain; the jump is not duplicated', async () => {
  assert.deepEqual(await run('ensure', '10.244.0.0/16', '10.244.7.0/24'), ['nat FLANNEL-POSTRTG']);
  const nat = await inNs(ns, 'iptables-save', '-t', 'nat');
  assert.doesNotMatch(nat, /10\.244\.1\.0/);
  assert.equal(nat.match(/10\.244\.7\.0\/24/g)?.length, 3);
  assert.equal(nat.match(/-j FLANNEL-POSTRTG/g)?.length, 1);
});

test('cleanup removes our chains and jumps and nothing else', async () => {
  assert.deepEqual(await run('remove'), ['nat FLANNEL-POSTRTG', 'filter FLANNEL-FWD']);
  const lines = await save();
  assert.deepEqual(
    ours(lines).filter((l) => l.includes('FLANNEL')),
    [],
  );
  assert.ok(lines.includes('-A POSTROUTING -s 192.0.2.0/24 -j MASQUERADE'));
  assert.ok(lines.includes('-A FORWARD -s 198.51.100.0/24 -j DROP'));
  assert.deepEqual(await run('remove'), [], 'a second cleanup is a no-op');
});
