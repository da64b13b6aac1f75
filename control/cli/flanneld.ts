#!/usr/bin/env node
// flanneld: parses flannel's flags (and FLANNELD_* variables), then hands over to the agent.
import { readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError, Option } from 'commander';
import { Agent } from '../agent/agent.js';
import { MissingCapabilityError, missingCapabilities } from '../agent/capabilities.js';
import { sdNotify } from '../agent/systemd.js';
import { HealthServer } from '../health/server.js';
import { createLogger } from '../log.js';
import { ConfigError } from '../subnet/config.js';
import { parseIp4 } from '../subnet/ip4.js';
import { formatIp6, notAHostAddress6, parseIp6 } from '../subnet/ip6.js';
import { projectRoot } from '../paths.js';

/**
 * flannel is a Go program: its flags also come as -flag and -flag=value (and -v=N).
 * Turn those into commander's --flag forms so existing unit files keep working.
 */
export function normalizeGoFlags(argv: string[]): string[] {
  const out: string[] = [];
  for (const a of argv) {
    let arg = a;
    if (/^-[a-z][a-z0-9-]+/.test(arg) && !arg.startsWith('--')) arg = '-' + arg;
    if (/^-v=\d+$/.test(arg)) {
      out.push('-v', arg.slice(3));
      continue;
    }
    out.push(arg);
  }
  return out;
}

const collect = (v: string, prev: string[]) => [
  ...prev,
  ...v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean),
];
/** A whole-number flag within [min, max], for both CLIs: commander reports the message with the flag. */
export const int = (name: string, min: number, max: number) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`${name} must be a whole number from ${min} to ${max}`);
  return n;
};
const bool = (v: string) => {
  if (/^(1|t|true)$/i.test(v)) return true;
  if (/^(0|f|false)$/i.test(v)) return false;
  throw new InvalidArgumentError('must be true or false');
};
const ipv4 = (v: string) => {
  if (parseIp4(v) === undefined) throw new InvalidArgumentError('not an IPv4 address');
  return v;
};

// canonical (Go's) form: the lease JSON must carry the address as flannel prints it
const ipv6 = (v: string) => {
  const ip = parseIp6(v);
  if (ip === undefined) throw new InvalidArgumentError('not an IPv6 address');
  const why = notAHostAddress6(ip);
  if (why) throw new InvalidArgumentError(`${v} ${why}: other nodes cannot reach this one there`);
  return formatIp6(ip);
};

const opt = (flags: string, desc: string, env: string) => new Option(flags, desc).env(env);

/** flannel's etcd flags, for flanneld and `flannelctl leases` alike */
export function etcdFlagOptions(): Option[] {
  return [
    opt('--etcd-endpoints <urls>', 'etcd endpoints, comma-separated', 'FLANNELD_ETCD_ENDPOINTS').default('http://127.0.0.1:4001,http://127.0.0.1:2379'),
    opt('--etcd-prefix <path>', 'etcd key prefix: the config is <prefix>/config, leases <prefix>/subnets/', 'FLANNELD_ETCD_PREFIX').default('/coreos.com/network'),
    opt('--etcd-keyfile <file>', 'TLS client key for etcd', 'FLANNELD_ETCD_KEYFILE'),
    opt('--etcd-certfile <file>', 'TLS client certificate for etcd', 'FLANNELD_ETCD_CERTFILE'),
    opt('--etcd-cafile <file>', "CA bundle that signed the etcd server certificate (default: the system's roots, as flannel)", 'FLANNELD_ETCD_CAFILE'),
    opt('--etcd-username <name>', 'etcd user name (password authentication)', 'FLANNELD_ETCD_USERNAME'),
    opt('--etcd-password <password>', 'etcd password', 'FLANNELD_ETCD_PASSWORD'),
  ];
}

export type EtcdFlags = Pick<FlanneldFlags, 'etcdEndpoints' | 'etcdPrefix' | 'etcdKeyfile' | 'etcdCertfile' | 'etcdCafile' | 'etcdUsername' | 'etcdPassword'>;

/** The combinations commander cannot check; an error message or undefined. */
export function checkEtcdFlags(f: EtcdFlags): string | undefined {
  if ((f.etcdCertfile && !f.etcdKeyfile) || (f.etcdKeyfile && !f.etcdCertfile)) return '--etcd-certfile and --etcd-keyfile go together';
  if (f.etcdPassword && !f.etcdUsername) return '--etcd-password needs --etcd-username';
  for (const e of f.etcdEndpoints.split(',')) {
    try {
      const u = new URL(e.trim());
      if (u.protocol !== 'http:' && u.protocol !== 'https:') return `--etcd-endpoints: ${e} must be http:// or https://`;
    } catch {
      return `--etcd-endpoints: ${JSON.stringify(e)} is not a URL`;
    }
  }
  return undefined;
}

/** The registry's options from the etcd flags. */
export const etcdOptions = (f: EtcdFlags) => ({
  endpoints: f.etcdEndpoints.split(',').map((s) => s.trim()),
  prefix: f.etcdPrefix,
  keyFile: f.etcdKeyfile,
  certFile: f.etcdCertfile,
  caFile: f.etcdCafile,
  username: f.etcdUsername,
  password: f.etcdPassword,
});

export function buildCommand(): Command {
  const cmd = new Command('flanneld').description(
    'Node agent of a flannel-compatible overlay network: takes the network config and a subnet lease from etcd (v3),\n' +
      'writes the subnet file for the CNI plugin and programs this node so pods reach pods on every other node.\n' +
      'Every flag can also be set as FLANNELD_<FLAG> (e.g. FLANNELD_ETCD_ENDPOINTS). Go-style -flag=value works too.',
  );
  // flannel's --version: the version, and nothing else
  cmd.version((JSON.parse(readFileSync(join(projectRoot(), 'package.json'), 'utf8')) as { version: string }).version, '--version', 'print the version and exit');
  for (const o of etcdFlagOptions()) cmd.addOption(o);
  return cmd
    .addOption(opt('--iface <name-or-ip>', 'interface (name, IPv4 or IPv6 address) for inter-host traffic; repeatable, first match wins', 'FLANNELD_IFACE').argParser(collect).default([]))
    .addOption(opt('--iface-regex <regex>', 'regex matched against interface IPs, then names; repeatable; used when no --iface matches', 'FLANNELD_IFACE_REGEX').argParser(collect).default([]))
    .addOption(
      opt(
        '--iface-can-reach <ip>',
        'use the interface (and source address) the kernel routes this IPv4 address through, as `ip route get <ip>`; used when no --iface or --iface-regex matches',
        'FLANNELD_IFACE_CAN_REACH',
      ).argParser(ipv4),
    )
    .addOption(opt('--public-ip <ip>', 'IPv4 address other nodes use to reach this one (default: the interface address)', 'FLANNELD_PUBLIC_IP').argParser(ipv4))
    .addOption(
      opt('--public-ipv6 <ip>', "IPv6 address other nodes use to reach this one when the network config enables IPv6 (default: the interface's first global IPv6)", 'FLANNELD_PUBLIC_IPV6').argParser(
        ipv6,
      ),
    )
    .addOption(opt('--subnet-file <file>', 'where to write the subnet environment for the CNI plugin', 'FLANNELD_SUBNET_FILE').default('/run/flannel/subnet.env'))
    .addOption(
      opt('--subnet-lease-renew-margin <minutes>', 'renew the 24 h lease this many minutes before it expires (1-1439)', 'FLANNELD_SUBNET_LEASE_RENEW_MARGIN')
        .argParser(int('--subnet-lease-renew-margin', 1, 1439))
        .default(60),
    )
    .addOption(
      opt('--subnet-lease-ttl <seconds>', "TTL of our lease in etcd; flannel's is fixed at 24 h; shorter only to test expiry (not in flannel)", 'FLANNELD_SUBNET_LEASE_TTL')
        .argParser(int('--subnet-lease-ttl', 5, 7 * 86400))
        .default(86400),
    )
    .addOption(opt('--ip-masq [bool]', 'masquerade traffic leaving the overlay network (sets FLANNEL_IPMASQ)', 'FLANNELD_IP_MASQ').argParser(bool).preset(true).default(false))
    .addOption(
      opt('--ip-masq-fully-random-disable [bool]', 'masquerade without --random-fully (for kernels or NAT devices that mishandle it)', 'FLANNELD_IP_MASQ_FULLY_RANDOM_DISABLE')
        .argParser(bool)
        .preset(true)
        .default(false),
    )
    .addOption(
      opt(
        '--ip-blackhole-route [bool]',
        "add a blackhole route for this node's subnet, checked every --iptables-resync seconds: for CNI setups without the bridge (one route per pod, e.g. Canal); never with flannel's bridge, whose route it would shadow",
        'FLANNELD_IP_BLACKHOLE_ROUTE',
      )
        .argParser(bool)
        .preset(true)
        .default(false),
    )
    .addOption(
      opt(
        '--net-config-path <file>',
        "read the network config from this JSON file (kube-flannel's net-conf.json) instead of <etcd-prefix>/config; leases stay in etcd. flannel reads it only with --kube-subnet-mgr",
        'FLANNELD_NET_CONFIG_PATH',
      ),
    )
    .addOption(opt('--healthz-ip <ip>', 'address of the HTTP endpoint serving /healthz and /readyz', 'FLANNELD_HEALTHZ_IP').default('0.0.0.0'))
    .addOption(
      opt('--healthz-port <port>', 'port of that endpoint (0 = off, as in flannel)', 'FLANNELD_HEALTHZ_PORT')
        .argParser(int('--healthz-port', 0, 65535))
        .default(0),
    )
    .addOption(opt('--metrics-ip <ip>', 'address of the Prometheus endpoint /metrics (not in flannel)', 'FLANNELD_METRICS_IP').default('127.0.0.1'))
    .addOption(
      opt('--metrics-port <port>', 'port of /metrics over TCP (0 = off; the status socket always serves it) (not in flannel)', 'FLANNELD_METRICS_PORT')
        .argParser(int('--metrics-port', 0, 65535))
        .default(0),
    )
    .addOption(
      opt('--iptables-resync <seconds>', 'how often the iptables rules are checked and restored', 'FLANNELD_IPTABLES_RESYNC')
        .argParser(int('--iptables-resync', 1, 3600))
        .default(5),
    )
    .addOption(
      opt('--iptables-forward-rules [bool]', 'accept forwarded traffic from and to the network in the FORWARD chain (FLANNEL-FWD)', 'FLANNELD_IPTABLES_FORWARD_RULES')
        .argParser(bool)
        .preset(true)
        .default(true),
    )
    .addOption(
      opt('--status-socket <path>', 'unix socket (root only) serving /status, /metrics, /readyz, /healthz for `flannelctl status`; "" = off (not in flannel)', 'FLANNELD_STATUS_SOCKET').default(
        '/run/flannel/flanneld.sock',
      ),
    )
    .addOption(
      opt('--reconcile-interval <seconds>', 'how often the kernel state is checked against the leases (not in flannel)', 'FLANNELD_RECONCILE_INTERVAL')
        .argParser(int('--reconcile-interval', 1, 3600))
        .default(10),
    )
    .addOption(opt('--no-bpf', 'vxlan: run the classic flannel.1 data plane (routes, neighbours, FDB) instead of BPF (not in flannel)', 'FLANNELD_NO_BPF'))
    .addOption(opt('--bpf-pin-root <dir>', 'where the BPF maps are pinned; a bpffs is mounted there if needed (not in flannel)', 'FLANNELD_BPF_PIN_ROOT').default('/sys/fs/bpf/flannel'))
    .addOption(
      opt(
        '--fast-path <mode>',
        'BPF vxlan: pod fast path, pod veth <-> flannel.1 without the bridge and routing, for flows conntrack has seen both ways without NAT: auto (on when the kernel accepts its programs), on (refuse to start without it), off. It skips the FORWARD chain for those flows: see the README (not in flannel)',
        'FLANNELD_FAST_PATH',
      )
        .choices(['auto', 'on', 'off'])
        .default('auto'),
    )
    .addOption(
      opt(
        '--vxlan-bypass <mode>',
        'BPF vxlan with the pod fast path: the fast path also encapsulates (pod veth -> underlay) and decapsulates (underlay -> pod) itself, skipping flannel.1, same packets on the wire: auto (on when the kernel allows it), on (refuse to start without it), off. Needs the fast path; flows it does not take go through flannel.1 as before (not in flannel)',
        'FLANNELD_VXLAN_BYPASS',
      )
        .choices(['auto', 'on', 'off'])
        .default('auto'),
    )
    .addOption(
      opt(
        '--underlay-hook <hook>',
        'where the guard against VXLAN from non-members runs: auto (native XDP on NICs that support it, tc on virtual devices), xdp, xdp-generic, tc, none (not in flannel)',
        'FLANNELD_UNDERLAY_HOOK',
      )
        .choices(['auto', 'xdp', 'xdp-generic', 'tc', 'none'])
        .default('auto'),
    )
    .addOption(
      new Option('-v, --verbosity <level>', 'log verbosity: 0 info, 1 debug, 3 trace')
        .env('FLANNELD_V')
        .argParser(int('-v', 0, 10))
        .default(0),
    )
    .showHelpAfterError('(flanneld --help lists every flag)')
    .allowExcessArguments(false);
}

export interface FlanneldFlags {
  etcdEndpoints: string;
  etcdPrefix: string;
  etcdKeyfile?: string;
  etcdCertfile?: string;
  etcdCafile?: string;
  etcdUsername?: string;
  etcdPassword?: string;
  iface: string[];
  ifaceRegex: string[];
  publicIp?: string;
  publicIpv6?: string;
  ifaceCanReach?: string;
  ipMasqFullyRandomDisable: boolean;
  ipBlackholeRoute: boolean;
  netConfigPath?: string;
  subnetFile: string;
  subnetLeaseRenewMargin: number;
  subnetLeaseTtl: number;
  ipMasq: boolean;
  healthzIp: string;
  healthzPort: number;
  metricsIp: string;
  metricsPort: number;
  iptablesResync: number;
  iptablesForwardRules: boolean;
  statusSocket: string;
  reconcileInterval: number;
  bpf: boolean;
  bpfPinRoot: string;
  underlayHook: 'auto' | 'xdp' | 'xdp-generic' | 'tc' | 'none';
  fastPath: 'auto' | 'on' | 'off';
  vxlanBypass: 'auto' | 'on' | 'off';
  verbosity: number;
}

/** Checks what commander cannot: combinations of flags. Returns an error message or undefined. */
export function checkFlags(f: FlanneldFlags): string | undefined {
  const etcd = checkEtcdFlags(f);
  if (etcd) return etcd;
  if (f.healthzPort && parseIp4(f.healthzIp) === undefined) return `--healthz-ip: ${JSON.stringify(f.healthzIp)} is not an IPv4 address`;
  if (f.metricsPort && parseIp4(f.metricsIp) === undefined) return `--metrics-ip: ${JSON.stringify(f.metricsIp)} is not an IPv4 address`;
  if (f.metricsPort && f.metricsPort === f.healthzPort) return '--metrics-port must differ from --healthz-port';
  return undefined;
}

/**
 * The environment as flannel reads it (its flagutil): a FLANNELD_* variable that is empty is not set
 * (FLANNELD_ETCD_PREFIX= must not empty the prefix), and a switch's variable is a boolean, so
 * FLANNELD_NO_BPF=false leaves BPF on (commander would take any value of a switch's variable as "on").
 * A value that is no boolean is an error naming the variable. Edits `env` in place, before parsing.
 */
export function applyFlannelEnv(cmd: Command, env: NodeJS.ProcessEnv): void {
  for (const o of cmd.options) {
    const name = o.envVar;
    if (!name || env[name] === undefined) continue;
    if (env[name] === '') {
      delete env[name];
      continue;
    }
    if (o.required || o.optional) continue; // takes a value: commander parses it as the flag's
    try {
      if (!bool(env[name])) delete env[name];
    } catch {
      throw new InvalidArgumentError(`${name}=${JSON.stringify(env[name])}: must be true or false (it sets ${o.long})`);
    }
  }
}

async function main(): Promise<void> {
  const cmd = buildCommand();
  try {
    applyFlannelEnv(cmd, process.env);
  } catch (e) {
    cmd.error(`error: ${(e as Error).message}`, { exitCode: 2 });
  }
  cmd.parse(normalizeGoFlags(process.argv.slice(2)), { from: 'user' });
  const f = cmd.opts<FlanneldFlags>();
  const bad = checkFlags(f);
  if (bad) cmd.error(`error: ${bad}`, { exitCode: 2 });

  const log = createLogger(f.verbosity);
  // flannel logs its effective flags at start; the password never leaves the process
  log.info({ flags: { ...f, ...(f.etcdPassword ? { etcdPassword: '(set, not shown)' } : {}) } }, 'CLI flags config');
  // every backend needs CAP_NET_ADMIN: say so before waiting on etcd; the backend's own needs are
  // checked once the config says which backend this is
  const missing = missingCapabilities({ backend: '', bpf: false });
  if (missing.length) {
    log.fatal({ err: new MissingCapabilityError(missing).message }, 'failed to start');
    log.flush?.();
    process.exit(1);
  }
  const agent = new Agent({
    etcd: etcdOptions(f),
    iface: { iface: f.iface, ifaceRegex: f.ifaceRegex, publicIP: f.publicIp, ...(f.publicIpv6 ? { publicIPv6: f.publicIpv6 } : {}), ifaceCanReach: f.ifaceCanReach },
    subnetFile: f.subnetFile,
    renewMarginMinutes: f.subnetLeaseRenewMargin,
    leaseTtlSeconds: f.subnetLeaseTtl,
    ipMasq: f.ipMasq,
    forwardRules: f.iptablesForwardRules,
    iptablesResyncMs: f.iptablesResync * 1000,
    ipMasqRandomFullyDisable: f.ipMasqFullyRandomDisable,
    blackholeRoute: f.ipBlackholeRoute,
    netConfigPath: f.netConfigPath,
    reconcileIntervalMs: f.reconcileInterval * 1000,
    bpf: { enabled: f.bpf, pinRoot: f.bpfPinRoot, underlayHook: f.underlayHook, fastPath: f.fastPath, bypass: f.vxlanBypass },
    log,
  });
  const health = new HealthServer({
    status: () => agent.status(),
    readiness: () => agent.readiness(),
    tcp: f.healthzPort ? { host: f.healthzIp, port: f.healthzPort } : undefined,
    metrics: f.metricsPort ? { host: f.metricsIp, port: f.metricsPort } : undefined,
    socketPath: f.statusSocket || undefined,
    log,
  });
  try {
    // before etcd: /healthz answers while the agent still waits for its config
    await health.start();
  } catch (e) {
    log.fatal({ err: (e as Error).message }, 'failed to start');
    process.exit(1);
  }
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.once(sig, () => {
      log.info({ signal: sig }, 'stopping; the data plane stays programmed');
      void agent.stop(0);
    });
  }
  agent.start().then(
    () => {
      try {
        if (sdNotify('READY=1')) log.info('told systemd we are ready (READY=1)');
      } catch (e) {
        log.error({ err: (e as Error).message }, 'cannot notify systemd READY=1');
      }
    },
    (e: unknown) => {
      const err = e as Error;
      if (err.name === 'AbortError') return;
      const where = f.netConfigPath ? `in ${f.netConfigPath}` : 'in etcd';
      log.fatal({ err: err.message, ...(e instanceof ConfigError ? { field: e.field } : {}) }, err instanceof ConfigError ? `bad network config ${where}` : 'failed to start');
      void agent.stop(1);
    },
  );
  const code = await agent.finished;
  // flannel's last words on every orderly exit, the lease lost included
  if (code === 0) log.info('Exiting cleanly...');
  health.close();
  log.flush?.();
  process.exit(code);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === realpathSync(process.argv[1])) void main();
