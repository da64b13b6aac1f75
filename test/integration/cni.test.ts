// The flannel CNI plugin driving Debian's real bridge and host-local plugins (/usr/lib/cni), in a
// "node" and "pod" namespaces of the test's own, as a container runtime calls it.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inNs, ip, json, sh } from '../helpers/netns.ts';
import { SUPPORTED_VERSIONS, versionBefore } from '../../control/cni/delegate.ts';

const PLUGIN = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'flannel');
const id = randomBytes(3).toString('hex');
const host = `fl${id}ch`;
const pods = [`fl${id}cp0`, `fl${id}cp1`];
const tmp = mkdtempSync(join(tmpdir(), 'flannel-cni-'));
const binDir = join(tmp, 'bin');
const subnetFile = join(tmp, 'subnet.env');
const netconf = (o: Record<string, unknown> = {}) =>
  JSON.stringify({ cniVersion: '1.0.0', name: `fl${id}`, type: 'flannel', subnetFile, dataDir: join(tmp, 'flannel'), ipam: { dataDir: join(tmp, 'ipam') }, ...o });

function cni(command: string, containerId: string, pod: string, conf: string, extraEnv: Record<string, string> = {}) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('ip', ['netns', 'exec', host, PLUGIN], {
    input: conf,
    env: { ...process.env, CNI_COMMAND: command, CNI_CONTAINERID: containerId, CNI_NETNS: `/var/run/netns/${pod}`, CNI_IFNAME: 'eth0', CNI_PATH: `${binDir}:/usr/lib/cni`, ...extraEnv },
  });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const out = r.stdout.toString();
  return { status: r.status, out, json: (out ? JSON.parse(out) : {}) as CniOutput, ms, stderr: r.stderr.toString() };
}

/** a CNI result or a CNI error, as the plugin prints them */
type CniOutput = { code: number; msg: string; ips: { address: string; gateway: string }[] } & Record<string, unknown>;

before(async () => {
  mkdirSync(binDir);
  symlinkSync(PLUGIN, join(binDir, 'flannel'));
  writeFileSync(subnetFile, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n');
  for (const ns of [host, ...pods]) await ip('netns', 'add', ns);
  await inNs(host, 'ip', 'link', 'set', 'lo', 'up');
});
after(async () => {
  for (const ns of [host, ...pods]) await sh('ip', ['netns', 'del', ns], { allowFail: true });
  rmSync(tmp, { recursive: true, force: true });
});

let addResult: unknown;

test("ADD delegates to bridge + host-local with flannel's defaults and saves the rendered config", async (t) => {
  const r = cni('ADD', 'c0', pods[0]!, netconf());
  assert.equal(r.status, 0, r.out + r.stderr);
  addResult = r.json;
  assert.equal(r.json.ips[0]!.address, '10.244.7.2/24');
  assert.equal(r.json.ips[0]!.gateway, '10.244.7.1');
  const saved = JSON.parse(readFileSync(join(tmp, 'flannel', 'c0'), 'utf8')) as Record<string, unknown>;
  assert.deepEqual(saved, {
    name: `fl${id}`,
    type: 'bridge',
    ipMasq: true,
    mtu: 1450,
    isGateway: true,
    cniVersion: '1.0.0',
    ipam: { dataDir: join(tmp, 'ipam'), type: 'host-local', ranges: [[{ subnet: '10.244.7.0/24' }]], routes: [{ dst: '10.244.0.0/16' }] },
  });
  const [eth0] = await json<{ mtu: number; addr_info: { local: string; prefixlen: number }[] }[]>(pods[0]!, 'ip', 'addr', 'show', 'eth0');
  assert.equal(eth0!.mtu, 1450);
  assert.deepEqual(
    eth0!.addr_info.filter((a) => a.local.includes('.')).map((a) => `${a.local}/${a.prefixlen}`),
    ['10.244.7.2/24'],
  );
  const routes = await json<{ dst: string; gateway?: string }[]>(pods[0]!, 'ip', 'route');
  assert.ok(
    routes.some((x) => x.dst === '10.244.0.0/16' && x.gateway === '10.244.7.1'),
    JSON.stringify(routes),
  );
  const [cni0] = await json<{ addr_info: { local: string }[] }[]>(host, 'ip', 'addr', 'show', 'cni0');
  assert.ok(cni0!.addr_info.some((a) => a.local === '10.244.7.1'));
  await inNs(pods[0]!, 'ping', '-c', '1', '-W', '2', '10.244.7.1');
  t.diagnostic(`ADD (flannel + bridge + host-local, first pod, creates cni0): ${r.ms.toFixed(0)} ms`);
});

test("CHECK succeeds without asking the delegate, as flannel's plugin does; below CNI 0.4.0 it is refused", () => {
  // Why not ask the delegate: Debian's bridge plugin fails CHECK on flannel's own standard config (it
  // compares the gateway-less route to the network with the kernel's route via the bridge)
  const conf = JSON.parse(readFileSync(join(tmp, 'flannel', 'c0'), 'utf8')) as Record<string, unknown>;
  const direct = spawnSync('ip', ['netns', 'exec', host, '/usr/lib/cni/bridge'], {
    input: JSON.stringify({ ...conf, prevResult: addResult }),
    env: { ...process.env, CNI_COMMAND: 'CHECK', CNI_CONTAINERID: 'c0', CNI_NETNS: `/var/run/netns/${pods[0]}`, CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni' },
  });
  const r = cni('CHECK', 'c0', pods[0]!, netconf({ prevResult: addResult }));
  assert.equal(r.status, 0, r.out + r.stderr);
  assert.equal(r.out, '');
  if (direct.status !== 0) assert.match(direct.stdout.toString(), /Route .*10\.244\.0\.0.* not found in routing table/);
  const old = cni('CHECK', 'c0', pods[0]!, netconf({ cniVersion: '0.3.1', prevResult: addResult }));
  assert.equal(old.json.code, 1);
  assert.match(old.json.msg, /config version does not allow CHECK/);
  // CNI 1.1.0's GC and STATUS: success, as libcni answers for flannel's plugin; refused below 1.1.0
  for (const cmd of ['GC', 'STATUS']) {
    assert.equal(cni(cmd, 'c0', pods[0]!, netconf({ cniVersion: '1.1.0' })).status, 0, cmd);
    assert.equal(cni(cmd, 'c0', pods[0]!, netconf()).json.code, 1, `${cmd} at 1.0.0`);
  }
});

test("delegate overrides win over flannel's defaults", async () => {
  const r = cni('ADD', 'c1', pods[1]!, netconf({ delegate: { bridge: `kb${id}`, hairpinMode: true, mtu: 1400 } }));
  assert.equal(r.status, 0, r.out + r.stderr);
  const saved = JSON.parse(readFileSync(join(tmp, 'flannel', 'c1'), 'utf8')) as Record<string, unknown>;
  assert.equal(saved.bridge, `kb${id}`);
  assert.equal(saved.hairpinMode, true);
  assert.equal(saved.mtu, 1400);
  assert.equal((await json<{ mtu: number }[]>(pods[1]!, 'ip', 'link', 'show', 'eth0'))[0]!.mtu, 1400);
  assert.ok((await inNs(host, 'ip', '-o', 'link', 'show', `kb${id}`)).includes(`kb${id}`));
  assert.equal(cni('DEL', 'c1', pods[1]!, netconf()).status, 0);
});

test('every CNI version flannel accepts (0.1.0 - 1.1.0): ADD gives the pod its address and a result in that version, DEL removes it', async () => {
  const extra = SUPPORTED_VERSIONS.map((_, i) => `fl${id}cv${i}`);
  try {
    for (const ns of extra) await ip('netns', 'add', ns);
    for (const [i, v] of SUPPORTED_VERSIONS.entries()) {
      const r = cni('ADD', `v${i}`, extra[i]!, netconf({ cniVersion: v }));
      assert.equal(r.status, 0, `${v}: ${r.out}${r.stderr}`);
      assert.equal(r.json.cniVersion, v, `${v}: the result is labelled with the version asked for`);
      // 0.1.0 and 0.2.0 results have "ip4", later ones "ips" (the delegate converts, as the spec says)
      const addr = versionBefore(v, '0.3.0') ? (r.json as unknown as { ip4: { ip: string } }).ip4.ip : r.json.ips[0]!.address;
      const [eth0] = await json<{ addr_info: { local: string; prefixlen: number }[] }[]>(extra[i]!, 'ip', 'addr', 'show', 'eth0');
      assert.deepEqual([`${eth0!.addr_info.find((a) => a.local.includes('.'))!.local}/24`], [addr], v);
      const d = cni('DEL', `v${i}`, extra[i]!, netconf({ cniVersion: v }));
      assert.equal(d.status, 0, `${v} DEL: ${d.out}`);
      assert.equal((await sh('ip', ['-n', extra[i]!, '-o', 'link', 'show', 'eth0'], { allowFail: true })).trim(), '', `${v}: eth0 gone`);
    }
  } finally {
    for (const ns of extra) await sh('ip', ['netns', 'del', ns], { allowFail: true });
  }
});

test("runtimeConfig reaches the delegate, as flannel's plugin passes it: the runtime's MAC and IP are the pod's", async () => {
  const pod = `fl${id}crt`;
  await ip('netns', 'add', pod);
  try {
    const rc = { mac: 'c2:11:22:33:44:55', ips: ['10.244.7.77/24'] };
    const r = cni('ADD', 'rt', pod, netconf({ runtimeConfig: rc }));
    assert.equal(r.status, 0, r.out + r.stderr);
    const [eth0] = await json<{ address: string; addr_info: { local: string }[] }[]>(pod, 'ip', 'addr', 'show', 'eth0');
    assert.equal(eth0!.address, rc.mac, "bridge's mac capability");
    assert.ok(
      eth0!.addr_info.some((a) => a.local === '10.244.7.77'),
      "host-local's ips capability",
    );
    assert.equal(cni('DEL', 'rt', pod, netconf({ runtimeConfig: rc })).status, 0);
  } finally {
    await sh('ip', ['netns', 'del', pod], { allowFail: true });
  }
});

test("DEL as flannel's plugin: a delegate failure is reported and the saved config is gone (a retry succeeds); an unreadable saved config is skipped", () => {
  // a delegate of the test's own that fails DEL, found through CNI_PATH as a runtime would
  writeFileSync(
    join(binDir, 'faildel'),
    '#!/bin/sh\ncat >/dev/null\nif [ "$CNI_COMMAND" = DEL ]; then echo \'{"cniVersion":"1.0.0","code":999,"msg":"delegate DEL failed"}\'; exit 1; fi\necho \'{"cniVersion":"1.0.0","ips":[]}\'\n',
    { mode: 0o755 },
  );
  assert.equal(cni('ADD', 'fd', pods[1]!, netconf({ delegate: { type: 'faildel' } })).status, 0);
  const d = cni('DEL', 'fd', pods[1]!, netconf());
  assert.equal(d.status, 1);
  assert.equal(d.json.msg, 'delegate DEL failed');
  assert.ok(!existsSync(join(tmp, 'flannel', 'fd')), 'removed even though the delegate failed, as flannel');
  assert.equal(cni('DEL', 'fd', pods[1]!, netconf()).status, 0);
  writeFileSync(join(tmp, 'flannel', 'junk'), '{not json');
  const junk = cni('DEL', 'junk', pods[1]!, netconf());
  assert.equal(junk.status, 0);
  assert.match(junk.stderr, /failed to parse netconf/);
});

test("the operator's delegate with name, ipam or a non-string type is refused before anything is saved", () => {
  for (const delegate of [{ name: 'x' }, { ipam: { type: 'static' } }, { type: 7 }]) {
    const r = cni('ADD', 'bad', pods[1]!, netconf({ delegate }));
    assert.equal(r.json.code, 7, JSON.stringify(delegate));
    assert.match(r.json.msg, /'delegate' dictionary/);
    assert.ok(!existsSync(join(tmp, 'flannel', 'bad')));
  }
});

test('DEL works after the subnet file is gone: interface removed, address released, saved config removed', async () => {
  rmSync(subnetFile);
  const r = cni('DEL', 'c0', pods[0]!, netconf());
  assert.equal(r.status, 0, r.out + r.stderr);
  assert.equal((await sh('ip', ['-n', pods[0]!, '-o', 'link', 'show', 'eth0'], { allowFail: true })).trim(), '');
  assert.ok(!existsSync(join(tmp, 'flannel', 'c0')));
  const leased = readdirSync(join(tmp, 'ipam', `fl${id}`)).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
  assert.deepEqual(leased, [], 'host-local released the address');
  assert.equal(cni('DEL', 'c0', pods[0]!, netconf()).status, 0, 'a second DEL is a no-op');
});

test('bad input is a CNI error JSON with the right code and a non-zero exit', () => {
  const noFile = cni('ADD', 'c2', pods[0]!, netconf());
  assert.equal(noFile.status, 1);
  assert.equal(noFile.json.code, 11);
  assert.match(noFile.json.msg, /cannot read the subnet file .*subnet\.env: is flanneld running/);
  const bad = cni('ADD', 'c2', pods[0]!, '{"cniVersion": "1.0.0", "name": ');
  assert.equal(bad.json.code, 6);
  const version = cni('ADD', 'c2', pods[0]!, netconf({ cniVersion: '9.9.9' }));
  assert.equal(version.json.code, 1);
  assert.match(version.json.msg, /not supported/);
  const noName = cni('ADD', 'c2', pods[0]!, '{"cniVersion":"1.0.0","type":"flannel"}');
  assert.equal(noName.json.code, 7);
  const traversal = cni('ADD', '../../etc/x', pods[0]!, netconf());
  assert.equal(traversal.json.code, 4);
  const noCmd = cni('', 'c2', pods[0]!, netconf());
  assert.equal(noCmd.json.code, 4);
  writeFileSync(subnetFile, 'FLANNEL_NETWORK=banana\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n');
  const badFile = cni('ADD', 'c2', pods[0]!, netconf());
  assert.equal(badFile.json.code, 7);
  assert.match(badFile.json.msg, /FLANNEL_NETWORK is not an IPv4 CIDR/);
  assert.ok(!existsSync(join(tmp, 'flannel', 'c2')), 'nothing saved for a failed ADD');
});

test('start-up cost of the plugin (VERSION, 20 runs)', (t) => {
  const times: number[] = [];
  for (let i = 0; i < 20; i++) {
    const t0 = process.hrtime.bigint();
    const r = spawnSync(PLUGIN, { env: { ...process.env, CNI_COMMAND: 'VERSION' } });
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    assert.equal(r.status, 0);
  }
  times.sort((a, b) => a - b);
  t.diagnostic(`VERSION: median ${times[10]!.toFixed(1)} ms, min ${times[0]!.toFixed(1)} ms, max ${times[19]!.toFixed(1)} ms`);
});
