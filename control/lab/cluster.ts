// A cluster on one machine: an underlay namespace (bridge + etcd), N node namespaces wired to it by
// veth, our agent in each node, and pods behind each node's cni0 (made by hand, or through the flannel
// CNI plugin as a runtime would). Every name carries the lab's prefix and every file sits in its state
// directory, with a state file, so `down` finds and removes everything, also after a crash.
// Longer than the ~300 lines the rest of control/ keeps to, on purpose: building the lab and tearing it
// down (including after a crash, from the state file alone) must stay side by side, so that every
// thing `create` makes has its undo in view.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, readdirSync, rmSync, existsSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { projectRoot } from '../paths.js';
import { inNs, ip, until } from './netns.js';
import { startEtcd, type EtcdServer } from './etcd.js';
import { parseSubnetFile } from '../subnet/subnet-file.js';
import { parseCidr, type Subnet } from '../subnet/ip4.js';
import { parseCidr6, type Subnet6 } from '../subnet/ip6.js';
import { NO_IPV4 } from '../subnet/lease-key.js';
import { AGENT_NODE_FLAGS } from '../agent/memory.js';

export const ROOT = projectRoot();
export const FLANNELD = join(ROOT, 'dist', 'control', 'cli', 'flanneld.js');
export const CNI_BIN = join(ROOT, 'bin');
export const UNDERLAY_GW = '172.20.0.1';
/** the underlay's IPv6 (LabOptions.ipv6): the gateway, and node i at ::1<i> */
export const UNDERLAY_GW6 = 'fd00:172:20::1';
export const PREFIX = '/coreos.com/network';

export interface Pod {
  ns: string;
  /** the pod's IPv4 address (its IPv6 one on an IPv6-only network) */
  ip: string;
  /** on a network with IPv6: the pod's IPv6 address */
  ip6?: string;
}

export interface LabNode {
  index: number;
  ns: string;
  ip: string;
  /** the node's underlay IPv6 address (LabOptions.ipv6) */
  ip6?: string;
  dir: string;
  subnetFile: string;
  pinRoot: string;
  logFile: string;
  /** the agent's status socket (flannelctl status --socket) */
  statusSocket: string;
  agent?: ChildProcess;
  /** when the current agent was started: a subnet file older than this is the previous run's */
  startedAt?: number;
  exited?: Promise<number | null>;
  pods: Pod[];
}

export interface LabOptions {
  nodes: number;
  config: string;
  agentArgs?: string[];
  /** prefix of every namespace (default: fl + random hex, so test runs never collide) */
  name?: string;
  /** where logs, pins, etcd data and the state file go (default: a new temporary directory) */
  stateDir?: string;
  /** agents and etcd outlive this process; `down` stops them */
  detached?: boolean;
  /**
   * The underlay links: `veth` (default) passes GSO super-packets between nodes intact, which no NIC
   * does; `nic` segments before the wire (TSO and GSO off on both ends of every underlay veth) and
   * merges on receive (GRO on), as a real NIC and its driver do.
   */
  underlay?: Underlay;
  /** the underlay also runs IPv6 (fd00:172:20::/64): for dual-stack and IPv6-only network configs */
  ipv6?: boolean;
}

export type Underlay = 'veth' | 'nic';

interface LabState {
  prefix: string;
  bpffs: string;
  pids: number[];
}

const live = new Set<Lab>();
process.once('exit', () => {
  for (const l of live) l.destroySync();
});

/** Arguments that would make `lab down` reach beyond a lab. */
export class LabArgumentError extends Error {
  override name = 'LabArgumentError';
}

export class Lab {
  readonly id: string;
  readonly prefix: string;
  readonly underlay: string;
  readonly tmp: string;
  readonly nodes: LabNode[] = [];
  /** one bpffs for the lab, mounted in the root mount namespace: a mount made under `ip netns exec`
   * would live in the agent's private mount namespace and vanish with it, pins included */
  readonly bpffs: string;
  readonly detached: boolean;
  agentArgs: string[] = [];
  readonly underlayKind: Underlay;
  readonly ipv6: boolean;
  etcd!: EtcdServer;

  /** use create(): a lab that is not built is of no use */
  protected constructor(o: LabOptions) {
    this.id = randomBytes(3).toString('hex');
    this.prefix = o.name ?? `fl${this.id}`;
    this.underlay = `${this.prefix}u`;
    this.detached = o.detached === true;
    if (o.stateDir) mkdirSync(o.stateDir, { recursive: true, mode: 0o700 });
    this.tmp = o.stateDir ?? mkdtempSync(join(tmpdir(), `flannel-lab-${this.id}-`));
    this.bpffs = join(this.tmp, 'bpf');
    this.agentArgs = o.agentArgs ?? [];
    this.underlayKind = o.underlay ?? 'veth';
    this.ipv6 = o.ipv6 === true;
  }

  /** Builds the lab; on failure everything built so far is removed before the error propagates. */
  static async create(o: LabOptions): Promise<Lab> {
    return Lab.init(new Lab(o), o);
  }

  /** create() for subclasses (the tests' lab adds its own helpers) */
  protected static async init<T extends Lab>(lab: T, o: LabOptions): Promise<T> {
    if (!lab.detached) live.add(lab);
    try {
      await lab.build(o.nodes, o.config);
    } catch (e) {
      await lab.destroy();
      throw e;
    }
    return lab;
  }

  private saveState(): void {
    const pids = [...this.nodes.map((n) => n.agent?.pid), this.etcd?.pid()].filter((p): p is number => typeof p === 'number');
    const state: LabState = { prefix: this.prefix, bpffs: this.bpffs, pids };
    writeFileSync(join(this.tmp, 'lab.json'), JSON.stringify(state));
  }

  private async build(n: number, config: string) {
    // the record first: `down` removes only a directory that holds one
    this.saveState();
    mkdirSync(this.bpffs, { recursive: true });
    execFileSync('mount', ['-t', 'bpf', 'bpf', this.bpffs]);
    this.saveState();
    await ip('netns', 'add', this.underlay);
    await inNs(this.underlay, 'ip', 'link', 'set', 'lo', 'up');
    await inNs(this.underlay, 'ip', 'link', 'add', 'br0', 'type', 'bridge');
    await inNs(this.underlay, 'ip', 'addr', 'add', `${UNDERLAY_GW}/24`, 'dev', 'br0');
    // nodad: an address in DAD is "tentative", and nothing can bind to it for a second or two
    if (this.ipv6) await inNs(this.underlay, 'ip', 'addr', 'add', `${UNDERLAY_GW6}/64`, 'dev', 'br0', 'nodad');
    await inNs(this.underlay, 'ip', 'link', 'set', 'br0', 'up');
    this.etcd = await startEtcd({ netns: this.underlay, host: UNDERLAY_GW, clientPort: 2379, dataDir: join(this.tmp, 'etcd'), detached: this.detached });
    this.saveState();
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
    if (this.underlayKind === 'nic') {
      // frames of at most the MTU on the wire, merged again by GRO on the receiving side
      await inNs(this.underlay, 'ethtool', '-K', `n${i}`, 'tso', 'off', 'gso', 'off', 'gro', 'on');
      await inNs(ns, 'ethtool', '-K', 'eth0', 'tso', 'off', 'gso', 'off', 'gro', 'on');
    }
    await ip('-n', ns, 'route', 'add', 'default', 'via', UNDERLAY_GW);
    await inNs(ns, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
    const ip6 = this.ipv6 ? `fd00:172:20::${10 + i}` : undefined;
    if (ip6) {
      await ip('-n', ns, 'addr', 'add', `${ip6}/64`, 'dev', 'eth0', 'nodad');
      await ip('-n', ns, '-6', 'route', 'add', 'default', 'via', UNDERLAY_GW6);
      await inNs(ns, 'sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1');
    }
    this.nodes.push({
      index: i,
      ns,
      ip: nodeIp,
      ...(ip6 ? { ip6 } : {}),
      dir,
      subnetFile: join(dir, 'subnet.env'),
      logFile: join(dir, 'flanneld.log'),
      statusSocket: join(dir, 'flanneld.sock'),
      pinRoot: join(this.bpffs, `n${i}`),
      pods: [],
    });
  }

  node(i: number): LabNode {
    return this.nodes[i - 1]!;
  }

  /** `env`: variables added to this one agent's environment (FLANNELD_*, NOTIFY_SOCKET) */
  startAgent(node: LabNode, extra: string[] = [], env: Record<string, string> = {}): void {
    if (node.agent && node.agent.exitCode === null && node.agent.signalCode === null) throw new Error(`agent of ${node.ns} is already running`);
    mkdirSync(node.dir, { recursive: true });
    rmSync(node.logFile, { force: true });
    const log = openSync(node.logFile, 'a');
    const args = [
      'netns',
      'exec',
      node.ns,
      process.execPath,
      ...AGENT_NODE_FLAGS,
      // more of Node's own flags for the agents (--cpu-prof, --heap-prof, ...), when profiling the lab
      ...(process.env.FLANNEL_LAB_NODE_FLAGS ?? '').split(' ').filter(Boolean),
      FLANNELD,
      `--etcd-endpoints=http://${UNDERLAY_GW}:2379`,
      `--subnet-file=${node.subnetFile}`,
      '--reconcile-interval=1',
      `--bpf-pin-root=${node.pinRoot}`,
      `--status-socket=${node.statusSocket}`,
      ...this.agentArgs,
      ...extra,
    ];
    node.startedAt = Date.now();
    node.agent = spawn('ip', args, { stdio: ['ignore', log, log], detached: this.detached, env: { ...process.env, ...env } });
    if (this.detached) node.agent.unref();
    closeSync(log);
    const child = node.agent;
    node.exited = new Promise((r) => child.once('exit', (code) => r(code)));
    this.saveState();
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
  async waitReady(node: LabNode, ms = 20_000): Promise<{ subnet: Subnet; ipv6Subnet?: Subnet6; mtu: number; env: Record<string, string> }> {
    return until(
      `subnet file of ${node.ns}`,
      () => {
        if (node.agent && (node.agent.exitCode !== null || node.agent.signalCode !== null)) throw new Error(`agent exited (${node.agent.exitCode ?? node.agent.signalCode})`);
        if (!existsSync(node.subnetFile) || statSync(node.subnetFile).mtimeMs < (node.startedAt ?? 0)) return undefined;
        const env = parseSubnetFile(readFileSync(node.subnetFile, 'utf8'));
        // an IPv6-only node writes no FLANNEL_SUBNET
        const ipv6Subnet = env.FLANNEL_IPV6_SUBNET ? parseCidr6(env.FLANNEL_IPV6_SUBNET) : undefined;
        return { subnet: env.FLANNEL_SUBNET ? parseCidr(env.FLANNEL_SUBNET)! : NO_IPV4, ...(ipv6Subnet ? { ipv6Subnet } : {}), mtu: Number(env.FLANNEL_MTU), env };
      },
      ms,
    ).catch((e: Error) => {
      throw new Error(`${e.message}\n--- agent log ---\n${this.logs(node).slice(-3000)}`);
    });
  }

  /** A pod as a container runtime makes it: a namespace, then CNI ADD through the flannel plugin. */
  async addPodCni(node: LabNode): Promise<Pod> {
    let k = node.pods.length;
    // pods come and go: the next free name, never one still in use
    while (node.pods.some((p) => p.ns === `${this.prefix}n${node.index}p${k}`)) k++;
    const ns = `${this.prefix}n${node.index}p${k}`;
    await ip('netns', 'add', ns);
    const r = this.cni(node, 'ADD', ns);
    const out = r.stdout.toString();
    if (r.status !== 0) throw new Error(`CNI ADD for ${ns} failed: ${out || r.stderr.toString()}`);
    await ip('-n', ns, 'link', 'set', 'lo', 'up');
    const result = JSON.parse(out) as { ips: { address: string }[] };
    const addrs = result.ips.map((x) => x.address.split('/')[0]!);
    const v6 = addrs.find((a) => a.includes(':'));
    const pod: Pod = { ns, ip: addrs.find((a) => !a.includes(':')) ?? v6!, ...(v6 ? { ip6: v6 } : {}) };
    node.pods.push(pod);
    return pod;
  }

  protected cni(node: LabNode, command: 'ADD' | 'DEL', ns: string) {
    // kube-flannel's standard delegate: without a default route a pod cannot answer traffic that the
    // bridge plugin masqueraded to the node's address (it does, while FLANNEL_IPMASQ is false)
    const conf = {
      cniVersion: '1.0.0',
      name: `${this.prefix}`,
      type: 'flannel',
      subnetFile: node.subnetFile,
      dataDir: join(node.dir, 'cni'),
      bpfPinRoot: node.pinRoot,
      delegate: { hairpinMode: true, isDefaultGateway: true },
      ipam: { dataDir: join(node.dir, 'ipam') },
    };
    return spawnSync('ip', ['netns', 'exec', node.ns, join(CNI_BIN, 'flannel')], {
      input: JSON.stringify(conf),
      env: { ...process.env, CNI_COMMAND: command, CNI_CONTAINERID: ns, CNI_NETNS: `/var/run/netns/${ns}`, CNI_IFNAME: 'eth0', CNI_PATH: `${CNI_BIN}:/usr/lib/cni` },
    });
  }

  async ping(from: Pod, to: string, count = 1): Promise<boolean> {
    try {
      await inNs(from.ns, 'ping', '-c', String(count), '-W', '2', '-i', '0.2', to);
      return true;
    } catch {
      return false;
    }
  }

  /** Every pod pings every pod on other nodes (each of its addresses, IPv4 and IPv6); returns the pairs that failed. */
  async pingAll(): Promise<string[]> {
    const pods = this.nodes.flatMap((n) => n.pods.map((p) => ({ node: n, p })));
    const checks = pods.flatMap((a) => pods.filter((b) => b.node !== a.node).flatMap((b) => [...new Set([b.p.ip, ...(b.p.ip6 ? [b.p.ip6] : [])])].map((to) => ({ a, b, to }))));
    const res = await Promise.all(checks.map(async ({ a, b, to }) => ((await this.ping(a.p, to)) ? undefined : `${a.p.ns} -> ${b.p.ns} (${to})`)));
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
    await Lab.down(this.tmp, this.prefix);
  }

  /**
   * Why `down` must not touch these (undefined when it may): a name that would match namespaces of
   * others (the empty prefix matches all of them), a state directory that is no lab's (`/`, a
   * top-level directory, anything without the lab's own record).
   */
  static checkDownArgs(stateDir: string, prefix: string): string | undefined {
    if (!/^[a-z][a-z0-9]{1,11}$/.test(prefix)) return `--name ${JSON.stringify(prefix)}: must be 2 to 12 lower-case letters and digits, starting with a letter`;
    if (!isAbsolute(stateDir)) return `--state-dir ${stateDir}: must be an absolute path`;
    const dir = resolve(stateDir);
    if (dir.split('/').filter(Boolean).length < 2) return `--state-dir ${stateDir}: a top-level directory is no lab's state directory: refusing to remove it`;
    if (existsSync(dir) && readdirSync(dir).length && !existsSync(join(dir, 'lab.json'))) return `--state-dir ${stateDir}: not a lab's state directory (no lab.json): refusing to remove it`;
    return undefined;
  }

  /**
   * Removes a lab from its state directory: the processes its state file records (each only while its
   * command line still names the directory: a pid may have been reused since), its namespaces, the
   * bpffs, the directory. Works on what a crashed `up` left behind.
   */
  static async down(stateDir: string, prefix: string): Promise<string[]> {
    const bad = Lab.checkDownArgs(stateDir, prefix);
    if (bad) throw new LabArgumentError(bad);
    stateDir = resolve(stateDir);
    const removed: string[] = [];
    let pids: number[] = [];
    try {
      pids = (JSON.parse(readFileSync(join(stateDir, 'lab.json'), 'utf8')) as LabState).pids;
    } catch {
      /* no state file: no process of ours was started */
    }
    for (const pid of pids) {
      try {
        if (pid === process.pid || !readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(stateDir)) continue;
        process.kill(pid, 'SIGKILL');
        removed.push(`process ${pid}`);
      } catch {
        /* already gone */
      }
    }
    // only names of this lab's shape: <prefix>u (underlay), <prefix>x (a stranger), <prefix>n<i> and
    // what hangs off node i (<prefix>n<i>p<k> pods, <prefix>n<i>v a runtime's pod)
    const ours = new RegExp(`^${prefix}(u|x|n\\d+[a-z0-9]*)$`);
    const names = (await ip('netns', 'list').catch(() => ''))
      .split('\n')
      .map((l) => l.split(' ')[0]!)
      .filter((n) => ours.test(n));
    for (const n of names) await ip('netns', 'del', n).catch(() => undefined);
    if (names.length) removed.push(`${names.length} namespaces ${prefix}*`);
    for (;;) {
      // mounts made by this lab under its directory (the bpffs), innermost first
      const mounts = readFileSync('/proc/self/mounts', 'utf8')
        .split('\n')
        .map((l) => l.split(' ')[1])
        .filter((m): m is string => !!m && m.startsWith(stateDir));
      if (!mounts.length) break;
      const m = mounts.sort((a, b) => b.length - a.length)[0]!;
      execFileSync('umount', ['-l', m]);
      removed.push(`mount ${m}`);
    }
    if (existsSync(stateDir)) {
      rmSync(stateDir, { recursive: true, force: true });
      removed.push(`directory ${stateDir}`);
    }
    return removed;
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
    try {
      execFileSync('umount', ['-l', this.bpffs], { stdio: 'ignore' });
    } catch {
      /* never mounted */
    }
    rmSync(this.tmp, { recursive: true, force: true });
  }
}
