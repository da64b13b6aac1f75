// `flannelctl lab down` removes a lab and nothing else: what it kills and deletes comes from the lab's
// own record, and arguments that would reach beyond a lab are refused.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from '../helpers/lab.ts';

const CTL = join(ROOT, 'dist', 'control', 'cli', 'flannelctl.js');
const victim = mkdtempSync(join(tmpdir(), 'flannel-test-victim-'));
const sleeper = spawn('sh', ['-c', 'sleep 120', victim], { stdio: 'ignore' });
after(() => {
  sleeper.kill('SIGKILL');
  rmSync(victim, { recursive: true, force: true });
});

const ctl = (...args: string[]) => spawnSync(process.execPath, [CTL, ...args], { encoding: 'utf8' });

test('lab down on a directory that holds no lab: refused; nothing killed, nothing removed', async () => {
  writeFileSync(join(victim, 'precious.txt'), 'not a lab\n');
  const r = ctl('lab', 'down', '--state-dir', victim, '--name', 'flvictimzz');
  assert.equal(r.status, 2, r.stdout + r.stderr);
  assert.match(r.stderr, /--state-dir .*flannel-test-victim-.*: not a lab's state directory \(no lab\.json\): refusing to remove it/);
  await new Promise((res) => setTimeout(res, 200));
  assert.equal(sleeper.exitCode, null, 'a process that merely names the directory was not killed');
  assert.equal(sleeper.signalCode, null);
  assert.ok(existsSync(join(victim, 'precious.txt')), 'the directory was not removed');
});

test('lab down --state-dir / and --name "" are refused with a clear error', () => {
  for (const [args, want] of [
    [['--state-dir', '/'], /--state-dir \/: .*refusing/],
    [['--state-dir', '/tmp'], /--state-dir \/tmp: .*refusing/],
    [['--state-dir', 'relative/dir'], /--state-dir relative\/dir: must be an absolute path/],
    [['--name', ''], /--name "": must be 2 to 12 lower-case letters and digits, starting with a letter/],
    [['--name', 'a b'], /--name "a b": must be/],
  ] as [string[], RegExp][]) {
    const r = ctl('lab', 'down', ...args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, want, args.join(' '));
  }
});
