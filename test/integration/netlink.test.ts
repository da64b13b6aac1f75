// The typed kernel layer against the real kernel, inside a namespace of its own.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ip, sh } from '../helpers/netns.ts';

const ns = `fl${randomBytes(3).toString('hex')}nl`;
const probe = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'netlink-probe.ts');
type ErrJson = { code: string; errno: number; syscall: string; message: string; name: string };
/** what test/fixtures/netlink-probe.ts prints */
interface ProbeResult {
  vxlan: { vni: number; local: string; link: number; port: number; learning: boolean; external: boolean };
  vxlanMtu: number;
  duplicate: ErrJson;
  mixed: (ErrJson | null)[];
  badArg: ErrJson;
  programErrors: unknown[];
  counts: Record<string, number>;
  sampleFdb: { dst: string };
  deleteErrors: number;
  after: number;
  programMs: number;
  dumpMs: number;
  deleteMs: number;
}
let r: ProbeResult;

before(async () => {
  await ip('netns', 'add', ns);
  const out = await sh('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', probe, '5000']);
  r = JSON.parse(out) as ProbeResult;
});
after(async () => {
  await sh('ip', ['netns', 'del', ns], { allowFail: true });
});

test('creates a vxlan device exactly as flannel does (VNI, local, dev, port, nolearning, MTU)', () => {
  assert.deepEqual(r.vxlan, { vni: 1, local: '192.0.2.1', link: r.vxlan.link, port: 8472, learning: false, external: false });
  assert.ok(r.vxlan.link > 0);
  assert.equal(r.vxlanMtu, 1450);
});

test('a kernel error is a JS Error with errno, code and the operation', () => {
  assert.equal(r.duplicate.code, 'EEXIST');
  assert.equal(r.duplicate.errno, 17);
  assert.match(r.duplicate.syscall, /link add under0 type bridge/);
  assert.match(r.duplicate.message, /File exists \(EEXIST\)/);
});

test('a batch reports one result per operation', () => {
  assert.equal(r.mixed[0], null);
  assert.equal(r.mixed[1]?.code, 'ENODEV');
  assert.match(r.mixed[1].syscall, /route replace 10\.9\.1\.0\/24 via 10\.9\.1\.0 dev #999999 onlink/);
  assert.equal(r.mixed[2]?.code, 'ENOENT');
});

test('bad arguments are rejected before anything reaches the kernel', () => {
  assert.equal(r.badArg.name, 'TypeError');
  assert.match(r.badArg.message, /not an IP address: not-an-ip/);
});

test('5000 peers (neighbour + FDB + route) in one call, all present, all removable', (t) => {
  assert.deepEqual(r.programErrors, []);
  assert.deepEqual(r.counts, { routes: 5000, neighs: 5000, fdb: 5000 });
  assert.equal(r.sampleFdb.dst, '172.16.0.7');
  assert.equal(r.deleteErrors, 0);
  assert.equal(r.after, 0);
  t.diagnostic(`5000 peers: program ${r.programMs.toFixed(0)} ms, dump ${r.dumpMs.toFixed(0)} ms, delete ${r.deleteMs.toFixed(0)} ms`);
});

test('a link kind we do not make is refused before a byte of it is written (a 70 kB kind cannot overrun the message)', async () => {
  // in a child of its own: before the check, the encoder wrote the kind into its fixed buffer first
  const code = `const { addon } = await import(${JSON.stringify(join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'control', 'kernel', 'addon.ts'))});
    try { await addon().netlinkExec([{ type: 'link', action: 'add', name: 'x0', kind: 'k'.repeat(70000) }]); console.log('accepted'); }
    catch (e) { console.log(e.name + ': ' + e.message); }`;
  const out = await sh('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', '--input-type=module', '-e', code]);
  assert.match(out.trim(), /^TypeError: netlink op: unsupported link kind 'k{32}'$/);
});
