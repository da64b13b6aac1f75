// The Vagrant lab, as far as it can run on this machine: the Vagrantfile validates, and the very
// provisioning script the VMs run writes an etcd config, a flanneld unit and a CNI config that work:
// here each node is a namespace of the netns lab, flanneld runs from the unit's ExecStart, and pods
// are made with the generated CNI config.
import { AGENT_NODE_FLAGS } from '../../control/agent/memory.ts';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync, existsSync, openSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestLab, ROOT, UNDERLAY_GW, type LabNode } from '../helpers/lab.ts';
import { ip, until } from '../helpers/netns.ts';

const VAGRANT_DIR = join(ROOT, 'vagrant');
const tmp = mkdtempSync(join(tmpdir(), 'flannel-vagrant-'));
let lab: TestLab | undefined;
const agents: ChildProcess[] = [];

after(async () => {
  for (const a of agents) a.kill('SIGKILL');
  await lab?.destroy();
  rmSync(tmp, { recursive: true, force: true });
});

test('the Vagrantfile validates (vagrant validate), and a broken one does not', () => {
  const ok = spawnSync('vagrant', ['validate', '--ignore-provider'], { cwd: VAGRANT_DIR, env: { ...process.env, VAGRANT_CHECKPOINT_DISABLE: '1' } });
  assert.equal(ok.status, 0, ok.stdout.toString() + ok.stderr.toString());
  assert.match(ok.stdout.toString(), /validated successfully/);
  const broken = join(tmp, 'broken');
  cpSync(VAGRANT_DIR, broken, { recursive: true, filter: (s) => !s.includes('.vagrant') });
  writeFileSync(join(broken, 'Vagrantfile'), readFileSync(join(VAGRANT_DIR, 'Vagrantfile'), 'utf8').replace('config.vm.box =', 'config.vm.boxx ='));
  const bad = spawnSync('vagrant', ['validate', '--ignore-provider'], { cwd: broken, env: { ...process.env, VAGRANT_CHECKPOINT_DISABLE: '1' } });
  assert.notEqual(bad.status, 0);
});

test('the tree the Vagrantfile syncs into a VM keeps node_modules/.bin working (provisioning runs tsc when a source is newer than dist)', () => {
  // Vagrant's rsync arguments when the Vagrantfile sets none (its docs); --copy-links turns the
  // relative .bin/tsc link into a copy of typescript/bin/tsc, whose require('../lib/tsc.js') then fails
  const VAGRANT_DEFAULT = ['--verbose', '--archive', '--delete', '-z', '--copy-links'];
  const set = /rsync__args: \[([^\]]*)\]/.exec(readFileSync(join(VAGRANT_DIR, 'Vagrantfile'), 'utf8'));
  const args = set ? [...set[1]!.matchAll(/"([^"]+)"/g)].map((m) => m[1]!) : VAGRANT_DEFAULT;
  const dest = join(tmp, 'synced');
  mkdirSync(join(dest, 'node_modules'), { recursive: true });
  const r = spawnSync('rsync', [...args, join(ROOT, 'node_modules', '.bin'), join(ROOT, 'node_modules', 'typescript'), join(dest, 'node_modules') + '/']);
  assert.equal(r.status, 0, r.stderr.toString());
  const tsc = spawnSync(process.execPath, [join(dest, 'node_modules', '.bin', 'tsc'), '--version']);
  assert.equal(tsc.status, 0, `rsync ${args.join(' ')}: ${tsc.stderr.toString()}`);
  assert.match(tsc.stdout.toString(), /^Version \d/);
});

function provision(n: LabNode, role: string[]): string {
  const root = join(tmp, `root-n${n.index}`);
  const r = spawnSync('bash', [join(VAGRANT_DIR, 'provision.sh'), n.ip, UNDERLAY_GW, ...role], {
    env: {
      ...process.env,
      PROJECT_DIR: ROOT,
      PROVISION_ROOT: root,
      PROVISION_START: '0',
      SUBNET_FILE: n.subnetFile,
      FLANNELD_EXTRA_ARGS: `--bpf-pin-root=${n.pinRoot} --status-socket=${n.statusSocket}`,
    },
  });
  assert.equal(r.status, 0, r.stderr.toString());
  return root;
}

test("the provisioning script's unit and CNI config bring up working nodes", { timeout: 180_000 }, async () => {
  lab = await TestLab.create({ nodes: 2, config: JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }) });
  const roots = lab.nodes.map((n) => provision(n, n.index === 1 ? ['etcd'] : []));

  const etcdDefaults = readFileSync(join(roots[0]!, 'etc/default/etcd'), 'utf8');
  assert.match(etcdDefaults, new RegExp(`ETCD_LISTEN_CLIENT_URLS=http://127\\.0\\.0\\.1:2379,http://${UNDERLAY_GW.replace(/\./g, '\\.')}:2379`));
  assert.ok(!existsSync(join(roots[1]!, 'etc/default/etcd')), 'only node 1 runs etcd');
  assert.equal(readlinkSync(join(roots[0]!, 'opt/cni/bin/flannel')), join(ROOT, 'bin/flannel'));

  for (const [i, n] of lab.nodes.entries()) {
    const unit = readFileSync(join(roots[i]!, 'etc/systemd/system/flanneld.service'), 'utf8');
    const exec = /^ExecStart=(.*)$/m.exec(unit)![1]!.trim().split(/\s+/);
    assert.ok(exec.includes(`--iface=${n.ip}`));
    for (const f of AGENT_NODE_FLAGS) assert.ok(exec.includes(f), `the unit starts node with ${f}, as the lab does`);
    assert.match(unit, /^Type=notify$/m, 'the agent tells systemd when it is ready, as flannel');
    mkdirSync(n.dir, { recursive: true });
    const log = openSync(n.logFile, 'a');
    const a = spawn('ip', ['netns', 'exec', n.ns, ...exec], { stdio: ['ignore', log, log] });
    closeSync(log);
    agents.push(a);
  }
  for (const n of lab.nodes) await until(`subnet file of ${n.ns}`, () => existsSync(n.subnetFile) || undefined, 20_000);

  // a pod per node, made with the generated conflist's flannel entry, as a runtime would
  for (const [i, n] of lab.nodes.entries()) {
    const list = JSON.parse(readFileSync(join(roots[i]!, 'etc/cni/net.d/10-flannel.conflist'), 'utf8')) as { name: string; cniVersion: string; plugins: Record<string, unknown>[] };
    const conf = { ...list.plugins[0], name: list.name, cniVersion: list.cniVersion, dataDir: join(n.dir, 'cni'), ipam: { dataDir: join(n.dir, 'ipam') } };
    const ns: string = `${lab.prefix}n${n.index}v`;
    await ip('netns', 'add', ns);
    const r: SpawnSyncReturns<Buffer> = spawnSync('ip', ['netns', 'exec', n.ns, join(roots[i]!, 'opt/cni/bin/flannel')], {
      input: JSON.stringify(conf),
      env: { ...process.env, CNI_COMMAND: 'ADD', CNI_CONTAINERID: ns, CNI_NETNS: `/var/run/netns/${ns}`, CNI_IFNAME: 'eth0', CNI_PATH: join(roots[i]!, 'opt/cni/bin') },
    });
    assert.equal(r.status, 0, r.stdout.toString());
    n.pods.push({ ns, ip: (JSON.parse(r.stdout.toString()) as { ips: { address: string }[] }).ips[0]!.address.split('/')[0]! });
  }
  await until('pods reach each other', async () => (await lab!.pingAll()).length === 0 || undefined, 15_000, 500).catch(() => undefined);
  assert.deepEqual(await lab.pingAll(), []);
  assert.match(lab.logs(lab.node(1)), /"mode":"bpf"/);
  // the README's check command, run on node 1
  const n1 = lab.node(1);
  const check = spawnSync('ip', ['netns', 'exec', n1.ns, 'bash', join(VAGRANT_DIR, 'check.sh'), `http://${UNDERLAY_GW}:2379`, n1.pinRoot], {
    env: { ...process.env, PROJECT_DIR: ROOT, SUBNET_FILE: n1.subnetFile, STATUS_SOCKET: n1.statusSocket },
  });
  const out = check.stdout.toString();
  assert.equal(check.status, 0, out + check.stderr.toString());
  assert.match(out, /== overlay to 10\.244\.\d+\.0: ok/);
  assert.match(out, /SUBNET\s+VTEP MAC/);
  assert.match(out, /^ready: +yes/m, 'check.sh prints the status');
  assert.match(out, /iptables: +ip-masq on/, 'the unit runs with --ip-masq, as kube-flannel');
});
