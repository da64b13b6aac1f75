// A cluster on one machine: an underlay namespace (bridge + etcd), N node namespaces wired to it by
// veth, our agent running in each node, and pods (namespaces) behind each node's cni0 bridge.
// Everything carries a random id, so two runs never collide, and destroy() removes all of it.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deleteNamespaces, inNs, ip, until } from './netns.ts';
import { startEtcd, type EtcdServer } from './etcd.ts';
import { parseSubnetFile } from '../../control/subnet/subnet-file.ts';
import { parseCidr, formatIp4, type Subnet } from '../../control/subnet/ip4.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const FLANNELD = join(ROOT, 'dist', 'control', 'cli', 'flanneld.js');
export const UNDERLAY_GW = '172.20.0.1';
export const PREFIX = '/coreos.com/network';

export interface Pod {
  ns: string;
  ip: string;
}

export interface LabNode {
  index: number;
  ns: string;
  ip: string;
  dir: string;
  subnetFile: string;
  pinRoot: string;
  logFile: string;
  agent?: ChildProcess;
  /** when the current agent was started: a subnet file older than this is the previous run's */
  startedAt?: number;
  exited?: Promise<number | null>;
  pods: Pod[];
}

const live = new Set<Lab>();
process.once('exit', () => {
  for (const l of live) l.destroySync();
});

export class Lab {
  readonly id = randomBytes(3).toString('hex');
  readonly prefix = `fl${this.id}`;
  readonly underlay = `${this.prefix}u`;
  readonly tmp = mkdtempSync(join(tmpdir(), `flannel-lab-${this.id}-`));
  readonly nodes: LabNode[] = [];
  /** one bpffs for the lab, mounted in the root mount namespace: a mount made under `ip netns exec`
   * would live in the agent's private mount namespace and vanish with it, pins included */
  readonly bpffs = join(this.tmp, 'bpf');
  agentArgs: string[] = [];
  etcd!: EtcdServer;

  /** Builds the lab; on failure everything built so far is removed before the error propagates. */
  static async create(o: { nodes: number; config: string; agentArgs?: string[] }): Promise<Lab> {
    const lab = new Lab();
    lab.agentArgs = o.agentArgs ?? [];
    live.add(lab);
    try {
      await lab.build(o.nodes, o.config);
    } catch (e) {
      await lab.destroy();
      throw e;
    }
    return lab;
  }

  /** Starts every agent and gives each node one pod; on failure the caller's destroy() cleans up. */
  async bringUp(): Promise<Map<LabNode, Subnet>> {
    const subnets = new Map<LabNode, Subnet>();
    for (const n of this.nodes) this.startAgent(n);
    for (const n of this.nodes) {
      const { subnet, mtu } = await this.waitReady(n);
      subnets.set(n, subnet);
      await this.addPod(n, subnet, mtu);
    }
    return subnets;
  }

  private async build(n: number, config: string) {
    mkdirSync(this.bpffs);
    execFileSync('mount', ['-t', 'bpf', 'bpf', this.bpffs]);
    await ip('netns', 'add', this.underlay);
    await inNs(this.underlay, 'ip', 'link', 'set', 'lo', 'up');
    await inNs(this.underlay, 'ip', 'link', 'add', 'br0', 'type', 'bridge');
    await inNs(this.underlay, 'ip', 'addr', 'add', `${UNDERLAY_GW}/24`, 'dev', 'br0');
    await inNs(this.underlay, 'ip', 'link', 'set', 'br0', 'up');
    this.etcd = await startEtcd({ netns: this.underlay, host: UNDERLAY_GW, clientPort: 2379 });
    await this.etcd.ctl('put', `${PREFIX}/config`, config);
    for (let i = 1; i <= n; i++) await this.addNode(i);
  }

  private async addNode(i: number) {
    const ns = `${this.prefix}n${i}`;
    const nodeIp = `172.20.0.${10 + i}`;
    const dir = join(this.tmp, `n${i}`);
    await ip('netns', 'add', ns);
    // both veth ends are born inside namespaces: nothing of the lab ever exists in the root namespace
    await ip('-n', this.underlay, 'link', 'add', `n${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    await ip('-n', this.underlay, 'link', 'set', `n${i}`, 'master', 'br0', 'up');
    await ip('-n', ns, 'link', 'set', 'lo', 'up');
    await ip('-n', ns, 'addr', 'add', `${nodeIp}/24`, 'dev', 'eth0');
    await ip('-n', ns, 'link', 'set', 'eth0', 'up');
    await ip('-n', ns, 'route', 'add', 'default', 'via', UNDERLAY_GW);
    await inNs(ns, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
    this.nodes.push({ index: i, ns, ip: nodeIp, dir, subnetFile: join(dir, 'subnet.env'), logFile: join(dir, 'flanneld.log'), pinRoot: join(this.bpffs, `n${i}`), pods: [] });
  }

  node(i: number): LabNode {
    return this.nodes[i - 1]!;
  }

  startAgent(node: LabNode, extra: string[] = []): void {
    if (node.agent && node.agent.exitCode === null && node.agent.signalCode === null) throw new Error(`agent of ${node.ns} is already running`);
    rmSync(node.logFile, { force: true });
    mkdirSync(node.dir, { recursive: true });
    const log = openSync(node.logFile, 'a');
    const args = ['netns', 'exec', node.ns, process.execPath, FLANNELD, `--etcd-endpoints=http://${UNDERLAY_GW}:2379`,
      `--subnet-file=${node.subnetFile}`, '--reconcile-interval=1', `--bpf-pin-root=${node.pinRoot}`, ...this.agentArgs, ...extra];
    node.startedAt = Date.now();
    node.agent = spawn('ip', args, { stdio: ['ignore', log, log] });
    closeSync(log);
    const child = node.agent;
    node.exited = new Promise((r) => child.once('exit', (code) => r(code)));
  }

  async stopAgent(node: LabNode, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    const a = node.agent;
    if (!a || a.exitCode !== null || a.signalCode !== null) return a?.exitCode ?? null;
    a.kill(signal);
    return node.exited!;
  }

  logs(node: LabNode): string {
    return existsSync(node.logFile) ? readFileSync(node.logFile, 'utf8') : '(no log)';
  }

  /** Waits for the agent's subnet file and returns its lease subnet. */
  async waitReady(node: LabNode, ms = 20_000): Promise<{ subnet: Subnet; mtu: number; env: Record<string, string> }> {
    return until(`subnet file of ${node.ns}`, async () => {
      if (node.agent && (node.agent.exitCode !== null || node.agent.signalCode !== null)) throw new Error(`agent exited (${node.agent.exitCode ?? node.agent.signalCode})`);
      if (!existsSync(node.subnetFile) || statSync(node.subnetFile).mtimeMs < (node.startedAt ?? 0)) return undefined;
      const env = parseSubnetFile(readFileSync(node.subnetFile, 'utf8'));
      return { subnet: parseCidr(env.FLANNEL_SUBNET!)!, mtu: Number(env.FLANNEL_MTU), env };
    }, ms).catch((e: Error) => {
      throw new Error(`${e.message}\n--- agent log ---\n${this.logs(node).slice(-3000)}`);
    });
  }

  /** A pod as a CNI bridge plugin would make it: cni0 with the subnet's .1, the pod at .<n>. */
  async addPod(node: LabNode, subnet: Subnet, mtu: number): Promise<Pod> {
    const n = node.pods.length;
    const pod: Pod = { ns: `${this.prefix}n${node.index}p${n}`, ip: formatIp4(subnet.ip + 2 + n) };
    const gw = formatIp4(subnet.ip + 1);
    const hasBridge = (await ip('-n', node.ns, '-o', 'link', 'show', 'cni0').catch(() => '')) !== '';
    if (!hasBridge) {
      await ip('-n', node.ns, 'link', 'add', 'cni0', 'type', 'bridge');
      await ip('-n', node.ns, 'addr', 'add', `${gw}/${subnet.len}`, 'dev', 'cni0');
      await ip('-n', node.ns, 'link', 'set', 'cni0', 'mtu', String(mtu), 'up');
    }
    await ip('netns', 'add', pod.ns);
    await ip('-n', node.ns, 'link', 'add', `veth${n}`, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod.ns);
    await ip('-n', node.ns, 'link', 'set', `veth${n}`, 'master', 'cni0', 'up');
    await ip('-n', pod.ns, 'link', 'set', 'lo', 'up');
    await ip('-n', pod.ns, 'link', 'set', 'eth0', 'mtu', String(mtu), 'up');
    await ip('-n', pod.ns, 'addr', 'add', `${pod.ip}/${subnet.len}`, 'dev', 'eth0');
    await ip('-n', pod.ns, 'route', 'add', 'default', 'via', gw);
    node.pods.push(pod);
    return pod;
  }

  async ping(from: Pod, to: string, count = 1): Promise<boolean> {
    try {
      await inNs(from.ns, 'ping', '-c', String(count), '-W', '2', '-i', '0.2', to);
      return true;
    } catch {
      return false;
    }
  }

  /** Every pod pings every pod on other nodes; returns the pairs that failed. */
  async pingAll(): Promise<string[]> {
    const pods = this.nodes.flatMap((n) => n.pods.map((p) => ({ node: n, p })));
    const checks = pods.flatMap((a) => pods.filter((b) => b.node !== a.node).map((b) => ({ a, b })));
    const res = await Promise.all(checks.map(async ({ a, b }) => ((await this.ping(a.p, b.p.ip)) ? undefined : `${a.p.ns} -> ${b.p.ns} (${b.p.ip})`)));
    return res.filter((x): x is string => x !== undefined);
  }

  /** Leases in etcd: subnet key suffix -> parsed JSON value. */
  async leases(): Promise<Map<string, { PublicIP: string; BackendType?: string; BackendData?: { VNI?: number; VtepMAC: string } }>> {
    const out = await this.etcd.ctl('get', '--prefix', `${PREFIX}/subnets/`);
    const lines = out.split('\n').filter((l) => l !== '');
    const m = new Map();
    for (let i = 0; i + 1 < lines.length; i += 2) m.set(lines[i]!.slice(`${PREFIX}/subnets/`.length), JSON.parse(lines[i + 1]!));
    return m;
  }

  async destroy(): Promise<void> {
    live.delete(this);
    await Promise.all(this.nodes.map((n) => this.stopAgent(n, 'SIGKILL').catch(() => undefined)));
    await this.etcd?.destroy().catch(() => undefined);
    await deleteNamespaces(this.prefix);
    this.unmountBpffs();
    rmSync(this.tmp, { recursive: true, force: true });
  }

  private unmountBpffs(): void {
    try {
      execFileSync('umount', [this.bpffs], { stdio: 'ignore' });
    } catch {
      /* never mounted */
    }
  }

  /** Last-resort cleanup from a process 'exit' handler (no async work possible there). */
  destroySync(): void {
    for (const n of this.nodes) n.agent?.kill('SIGKILL');
    this.etcd?.killSync();
    const list = execFileSync('ip', ['netns', 'list']).toString();
    for (const line of list.split('\n')) {
      const name = line.split(' ')[0];
      if (name?.startsWith(this.prefix)) execFileSync('ip', ['netns', 'del', name]);
    }
    this.unmountBpffs();
    rmSync(this.tmp, { recursive: true, force: true });
  }
}
