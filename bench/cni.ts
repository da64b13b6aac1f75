// The CNI plugin's cost per pod: CNI ADD of `pods` pods (then DEL) through bin/flannel with Debian's
// bridge and host-local, in namespaces of the benchmark's own, as a container runtime calls it. The
// Go bridge plugin alone (the same config, called directly) is the floor a Go meta plugin would add to.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { projectRoot } from '../control/paths.ts';
import { ip, sh } from '../test/helpers/netns.ts';
import { percentile, stat, type Stat } from './lib.ts';

export interface CniSample {
  /** ADD through bin/flannel (the plugin, then the bridge and host-local plugins it runs) */
  addMs: Stat & { p50: number; p99: number };
  delMs: Stat & { p50: number; p99: number };
  /** the bridge plugin called directly with the config flannel renders: the delegate's own share */
  bridgeAddMs: Stat & { p50: number; p99: number };
  bridgeDelMs: Stat & { p50: number; p99: number };
  /** bin/flannel VERSION: start-up of the plugin with no delegate */
  versionMs: Stat & { p50: number; p99: number };
}

const withP = (xs: number[]) => ({ ...stat(xs), p50: percentile(xs, 50), p99: percentile(xs, 99) });

export async function measureCniAdd(pods: number): Promise<CniSample> {
  const id = randomBytes(3).toString('hex');
  const host = `fl${id}bh`;
  const tmp = mkdtempSync(join(tmpdir(), 'flannel-bench-cni-'));
  const plugin = join(projectRoot(), 'bin', 'flannel');
  const subnetFile = join(tmp, 'subnet.env');
  writeFileSync(subnetFile, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.9.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
  const names = Array.from({ length: pods }, (_, i) => `fl${id}b${i}`);
  const conf = (bridge: string) =>
    JSON.stringify({ cniVersion: '1.0.0', name: `fl${id}`, type: 'flannel', subnetFile, dataDir: join(tmp, 'flannel'), ipam: { dataDir: join(tmp, 'ipam') }, delegate: { bridge } });
  const run = (bin: string, cmd: string, input: string, container: string, ns: string) => {
    const t0 = process.hrtime.bigint();
    const r = spawnSync('ip', ['netns', 'exec', host, bin], {
      input,
      env: { ...process.env, CNI_COMMAND: cmd, CNI_CONTAINERID: container, CNI_NETNS: `/var/run/netns/${ns}`, CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni' },
    });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (r.status !== 0) throw new Error(`CNI ${cmd} ${container}: ${r.stdout.toString()}${r.stderr.toString()}`);
    return ms;
  };
  try {
    await ip('netns', 'add', host);
    for (const n of names) await ip('netns', 'add', n);
    const version: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t0 = process.hrtime.bigint();
      spawnSync(plugin, { env: { ...process.env, CNI_COMMAND: 'VERSION' } });
      version.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    // the first ADD creates cni0: not a pod's steady cost, so it is done before the samples
    const add: number[] = [],
      del: number[] = [],
      bridge: number[] = [],
      bridgeDel: number[] = [];
    run(plugin, 'ADD', conf('cni0'), 'warm', names[0]!);
    run(plugin, 'DEL', conf('cni0'), 'warm', names[0]!);
    // interleaved: a pod through flannel, then one through the bridge alone (its own bridge and range)
    const direct = JSON.stringify({
      cniVersion: '1.0.0',
      name: `fl${id}d`,
      type: 'bridge',
      bridge: 'cni1',
      isGateway: true,
      ipMasq: false,
      mtu: 1450,
      ipam: { type: 'host-local', dataDir: join(tmp, 'ipam'), ranges: [[{ subnet: '10.245.9.0/24' }]], routes: [{ dst: '10.244.0.0/16' }] },
    });
    const bridgeBin = '/usr/lib/cni/bridge';
    for (const [i, n] of names.entries()) {
      add.push(run(plugin, 'ADD', conf('cni0'), `p${i}`, n));
      const side = `fl${id}d${i % 2}`;
      if (i < 2) await ip('netns', 'add', side);
      bridge.push(run(bridgeBin, 'ADD', direct, `d${i}`, side));
      bridgeDel.push(run(bridgeBin, 'DEL', direct, `d${i}`, side));
    }
    for (const [i, n] of names.entries()) del.push(run(plugin, 'DEL', conf('cni0'), `p${i}`, n));
    return { addMs: withP(add), delMs: withP(del), bridgeAddMs: withP(bridge), bridgeDelMs: withP(bridgeDel), versionMs: withP(version) };
  } finally {
    for (const n of [host, ...names, `fl${id}d0`, `fl${id}d1`]) await sh('ip', ['netns', 'del', n], { allowFail: true });
    rmSync(tmp, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const n = Number(process.argv[2] ?? 100);
  const s = await measureCniAdd(n);
  const f = (x: Stat & { p50: number; p99: number }) => `p50 ${x.p50.toFixed(1)} ms, p99 ${x.p99.toFixed(1)} ms (min ${x.min.toFixed(1)}, max ${x.max.toFixed(1)})`;
  console.log(`CNI ADD through bin/flannel, ${n} pods: ${f(s.addMs)}`);
  console.log(`CNI DEL through bin/flannel: ${f(s.delMs)}`);
  console.log(`bridge plugin ADD alone (the delegate's share): ${f(s.bridgeAddMs)}`);
  console.log(`bridge plugin DEL alone: ${f(s.bridgeDelMs)}`);
  console.log(`bin/flannel VERSION (start-up alone): ${f(s.versionMs)}`);
}
