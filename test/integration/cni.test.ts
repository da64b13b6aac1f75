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

test("CHECK replays the saved config with the runtime's prevResult: the bridge plugin's own verdict, unchanged", () => {
  const conf = JSON.parse(readFileSync(join(tmp, 'flannel', 'c0'), 'utf8')) as Record<string, unknown>;
  const direct = spawnSync('ip', ['netns', 'exec', host, '/usr/lib/cni/bridge'], {
    input: JSON.stringify({ ...conf, prevResult: addResult }),
    env: { ...process.env, CNI_COMMAND: 'CHECK', CNI_CONTAINERID: 'c0', CNI_NETNS: `/var/run/netns/${pods[0]}`, CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni' },
  });
  const r = cni('CHECK', 'c0', pods[0]!, netconf({ prevResult: addResult }));
  assert.equal(r.status, direct.status);
  assert.equal(r.out, direct.stdout.toString());
  // Debian's bridge plugin (1.1.1) compares the result's gateway-less route with the kernel's route via
  // the bridge and reports it missing: a limitation of that plugin, not of the flannel config
  if (r.status !== 0) assert.match(r.json.msg, /Route .*10\.244\.0\.0.* not found in routing table/);
  const unknown = cni('CHECK', 'nosuch', pods[0]!, netconf({ prevResult: addResult }));
  assert.equal(unknown.json.code, 11);
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
