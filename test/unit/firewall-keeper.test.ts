// The iptables resync loop: one pass at a time, however slow iptables-save is on a busy node.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RulesKeeper } from '../../control/firewall/keeper.ts';
import { silentLogger } from '../../control/log.ts';

test('a resync pass slower than the interval never overlaps the next one; stop() waits for the running pass', async () => {
  let running = 0,
    most = 0,
    finished = 0;
  // iptables-save on a node with 20k kube-proxy rules: much slower than the resync interval
  const slow = async () => {
    running++;
    most = Math.max(most, running);
    await new Promise((r) => setTimeout(r, 60));
    running--;
    finished++;
    return [];
  };
  const k = new RulesKeeper(slow, 10, silentLogger);
  k.start();
  await new Promise((r) => setTimeout(r, 400));
  await k.stop();
  assert.equal(running, 0, 'stop() returned while a pass was still running');
  const after = finished;
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(finished, after, 'no pass after stop()');
  assert.equal(most, 1, `${most} passes ran at once`);
  assert.ok(finished >= 3, `${finished} passes in 400 ms`);
});

test('a failing pass is reported and the next one still runs; repairs are counted', async () => {
  let n = 0;
  const flaky = () => {
    n++;
    if (n === 1) return Promise.reject(new Error('iptables-restore: resource busy'));
    return Promise.resolve(n === 2 ? ['-A FLANNEL-FWD ...'] : []);
  };
  const k = new RulesKeeper(flaky, 5, silentLogger);
  k.start();
  await new Promise((r) => setTimeout(r, 100));
  await k.stop();
  assert.ok(n >= 3);
  assert.equal(k.state.repairs, 1);
  assert.equal(k.state.lastError, null);
});
