// The lab as a user runs it: `flannelctl lab up`, a crash, `up` again on the dirty machine, `down`.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab } from '../helpers/lab.ts';

const CTL = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'control', 'cli', 'flannelctl.js');
const name = `fl${randomBytes(2).toString('hex')}l`;
const stateDir = join(tmpdir(), `flannel-labtest-${name}`);
const lab = (...args: string[]) => {
  const r = spawnSync(process.execPath, [CTL, 'lab', ...args, `--name=${name}`, `--state-dir=${stateDir}`], { timeout: 240_000 });
  return { status: r.status, out: r.stdout.toString() + r.stderr.toString() };
};
const namespaces = () =>
  spawnSync('ip', ['netns', 'list'])
    .stdout.toString()
    .split('\n')
    .filter((l) => l.startsWith(name));
const processes = () => spawnSync('pgrep', ['-f', stateDir]).stdout.toString().trim().split('\n').filter(Boolean);
const mounts = () =>
  readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .filter((l) => l.includes(stateDir));

after(async () => {
  await Lab.down(stateDir, name);
});

test('lab up: three nodes, pods through CNI ADD, all pairs answer, leases, maps and a figure are shown', { timeout: 300_000 }, () => {
  const r = lab('up', '--pods=2');
  assert.equal(r.status, 0, r.out);
  assert.match(r.out, /==> starting flanneld on every node/);
  assert.match(r.out, /24\/24 pod pairs answered/);
  assert.match(r.out, /vxlan bpf/);
  assert.match(r.out, /\/coreos\.com\/network\/subnets\/10\.244\.\d+\.0-24\s+\{"PublicIP":"172\.20\.0\.1\d"/);
  assert.match(r.out, /BPF map entries/);
  assert.match(r.out, /Gbit\/s TCP/);
  assert.match(r.out, /fast path: on, 2 local pods registered/);
  // the default is bypass mode: the flow leaves by bypass_tx, and comes back (ACKs) by bypass_rx
  const line = /pod fast path on \S+: (.*)/.exec(r.out)?.[1] ?? '';
  const n = (k: string) => Number(new RegExp(`\\b${k}=(\\d+)`).exec(line)?.[1] ?? 0);
  assert.ok(n('fast_tx') + n('bypass_tx') > 1000 && n('fast_rx') + n('bypass_rx') > 1000, `the iperf3 flow took the fast path: ${line}`);
  assert.ok(n('bypass_tx') > 1000, `in bypass mode: ${line}`);
  assert.match(r.out, /bpftool map dump pinned .*fl_subnets/);
  assert.equal(namespaces().length, 1 + 3 + 6, 'underlay, nodes, pods');
  assert.equal(processes().length, 4, 'etcd and three agents keep running after up returns');
});

test('after a crash (every process killed, nothing cleaned), up works again on the dirty machine', { timeout: 300_000 }, () => {
  for (const pid of processes()) spawnSync('kill', ['-9', pid]);
  const r = lab('up', '--pods=1', '--no-measure', '--backend=host-gw');
  assert.equal(r.status, 0, r.out);
  assert.match(r.out, /removed: .*namespaces/);
  assert.match(r.out, /6\/6 pod pairs answered/);
});

test('lab down leaves no namespace, process, pin, mount or directory', () => {
  const r = lab('down');
  assert.equal(r.status, 0, r.out);
  assert.deepEqual(namespaces(), []);
  assert.deepEqual(processes(), []);
  assert.deepEqual(mounts(), []);
  assert.ok(!existsSync(stateDir));
  assert.match(lab('down').out, /nothing to remove/);
});
