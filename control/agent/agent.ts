// The node agent's life: config -> interface -> backend devices -> lease -> subnet file -> watch,
// reconcile and renew until stopped. On exit the kernel state stays, so pods keep talking while the
// agent restarts (flannel does the same).
import type { Logger } from '../log.js';
import { createBackend } from '../backend/index.js';
import type { Backend } from '../backend/types.js';
import { leaveBpfMode, type VxlanModeOptions } from '../backend/vxlan/index.js';
import { lookupExternalInterface, type IfaceOptions } from '../iface/select.js';
import { EtcdRegistry, type EtcdOptions } from '../subnet/etcd-registry.js';
import { formatCidr, formatIp4 } from '../subnet/ip4.js';
import { formatCidr6, formatIp6 } from '../subnet/ip6.js';
import { hasIPv4, leaseName } from '../subnet/lease-key.js';
import { SubnetManager, type LeaseWatch } from '../subnet/manager.js';
import { readPreviousSubnet, writeSubnetFile } from '../subnet/subnet-file.js';
import type { NetworkConfig } from '../subnet/config.js';
import type { Lease } from '../subnet/lease.js';
import type { ExternalInterface } from '../iface/select.js';
import { ensureRules, forwardRules, forwardRules6, masqRules, masqRules6, removeRules, supportsRandomFully, type Rule } from '../firewall/iptables.js';
import { NftTables, nftSupportsRandomFully, removeNftTables } from '../firewall/nftables.js';
import { RulesKeeper } from '../firewall/keeper.js';
import { BlackholeRoute } from './blackhole.js';
import { releaseMemory } from './memory.js';
import type { AgentStatus } from './status.js';
import { MissingCapabilityError, missingCapabilities } from './capabilities.js';

export interface AgentOptions {
  etcd: EtcdOptions;
  iface: IfaceOptions;
  subnetFile: string;
  renewMarginMinutes: number;
  /** flannel: 24 h */
  leaseTtlSeconds?: number;
  ipMasq: boolean;
  /** flannel's --iptables-forward-rules */
  forwardRules: boolean;
  iptablesResyncMs: number;
  /** flannel's --ip-masq-fully-random-disable: MASQUERADE without --random-fully */
  ipMasqRandomFullyDisable?: boolean;
  /** flannel's --ip-blackhole-route: a blackhole route for our subnet, ensured every resync */
  blackholeRoute?: boolean;
  /** flannel's --net-config-path: the network config from this file instead of etcd */
  netConfigPath?: string;
  reconcileIntervalMs: number;
  bpf: VxlanModeOptions;
  log: Logger;
}

export class Agent {
  private registry?: EtcdRegistry;
  private manager?: SubnetManager;
  private watch?: LeaseWatch;
  private backend?: Backend;
  private reconcileTimer?: NodeJS.Timeout;
  private firewall?: RulesKeeper;
  private blackhole?: BlackholeRoute;
  private cfg?: NetworkConfig;
  private ext?: ExternalInterface;
  private lease?: Lease;
  private readonly startedAt = new Date();
  /** how long the first programming of all known peers took, and start to ready (benchmarks read these) */
  private readonly startup = { programMs: null as number | null, readyMs: null as number | null };
  /** how long the last periodic reconcile took: the steady cost of checking every peer's entries */
  private lastReconcileMs: number | null = null;
  private serial: Promise<unknown> = Promise.resolve();
  private readonly abort = new AbortController();
  private done!: (code: number) => void;
  /** resolves with the process exit code */
  readonly finished = new Promise<number>((r) => (this.done = r));
  ready = false;

  constructor(private readonly o: AgentOptions) {}

  /** Kernel changes from the watch and from the reconcile loop never interleave. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.serial.then(fn, fn);
    this.serial = p.catch(() => undefined);
    return p;
  }

  async start(): Promise<void> {
    const { log } = this.o;
    this.registry = new EtcdRegistry(this.o.etcd);
    this.manager = new SubnetManager({ registry: this.registry, log, renewMarginMs: this.o.renewMarginMinutes * 60_000, subnetTTLSeconds: this.o.leaseTtlSeconds, configFile: this.o.netConfigPath });
    const cfg = await this.manager.waitForConfig(this.abort.signal);
    const c6 = cfg.ipv6 ? { ipv6Network: formatCidr6(cfg.ipv6.network), ipv6SubnetLen: cfg.ipv6.subnetLen } : {};
    log.info({ ...(cfg.enableIPv4 ? { network: formatCidr(cfg.network), subnetLen: cfg.subnetLen } : {}), ...c6, backend: cfg.backend.Type }, 'network config');
    this.cfg = cfg;
    const missing = missingCapabilities({ backend: cfg.backend.Type, bpf: this.o.bpf.enabled });
    if (missing.length) throw new MissingCapabilityError(missing);

    const stack = !cfg.enableIPv6 ? 'ipv4' : cfg.enableIPv4 ? 'dual' : 'ipv6';
    const ext = await lookupExternalInterface({ ...this.o.iface, stack });
    log.info(
      { iface: ext.iface.name, ifaceAddr: ext.ifaceAddr, publicIP: ext.publicIP, ...(ext.publicIPv6 ? { ifaceAddr6: ext.ifaceAddr6, publicIPv6: ext.publicIPv6 } : {}), mtu: ext.iface.mtu },
      'using interface',
    );
    this.ext = ext;

    const backend = createBackend({ cfg, ext, log }, this.o.bpf);
    this.backend = backend;
    // the vxlan backend decides for itself; the others never run BPF, so whatever a BPF run left goes
    if (cfg.backend.Type !== 'vxlan') await leaveBpfMode(this.o.bpf.pinRoot, log);
    const { attrs, mtu } = await backend.prepare();

    const previous = await readPreviousSubnet(this.o.subnetFile);
    const lease = await this.manager.acquireLease(cfg, attrs, previous, this.abort.signal);
    log.info({ subnet: leaseName(lease), expiration: lease.expiration ?? 'never (reservation)' }, 'lease acquired');
    this.lease = lease;
    await backend.start(lease);

    // flannel stops when its lease is revoked (another node may get the subnet, so keep nothing) and
    // exits 0 ("Exiting cleanly..."): a unit with Restart=always starts it again, to a new lease
    const leaseLost = (why: string) => {
      log.error({ reason: why }, 'our lease is gone; shutting down (flannel: "Lease has been revoked. Shutting down daemon.")');
      void this.stop(0);
    };
    let live = false;
    this.watch = this.manager.watchLeases(
      cfg,
      lease,
      // until the first reconcile, events only fill the watch's cache: that reconcile programs every
      // peer in one pass, instead of programming them as events and then reading them all back
      (events) => (live ? this.exclusive(() => backend.handle(events)) : Promise.resolve()),
      leaseLost,
    );
    await this.watch.synced;
    // removes what a previous run left for peers that are gone, adds whatever is missing; peers() is
    // read when the reconcile runs, and every event from then on is queued behind it
    const t0 = performance.now();
    live = true;
    await this.exclusive(() => backend.reconcile(this.watch!.peers()));
    this.startup.programMs = performance.now() - t0;
    releaseMemory();

    await this.startFirewall(cfg, lease);
    if (this.o.blackholeRoute) {
      const subnets = [
        ...(hasIPv4(lease) ? [{ ip: formatIp4(lease.subnet.ip), len: lease.subnet.len }] : []),
        ...(lease.ipv6Subnet ? [{ ip: formatIp6(lease.ipv6Subnet.ip), len: lease.ipv6Subnet.len }] : []),
      ];
      this.blackhole = new BlackholeRoute(subnets, this.o.iptablesResyncMs, log);
      await this.blackhole.ensure();
      this.blackhole.start();
    }
    await writeSubnetFile(this.o.subnetFile, {
      ...(cfg.enableIPv4 ? { network: cfg.network, subnet: lease.subnet } : {}),
      ...(cfg.ipv6 && lease.ipv6Subnet ? { ipv6Network: cfg.ipv6.network, ipv6Subnet: lease.ipv6Subnet } : {}),
      mtu,
      ipMasq: this.o.ipMasq,
    });
    log.info({ file: this.o.subnetFile, subnet: leaseName(lease), mtu }, 'wrote the subnet file');
    this.manager.startRenewal(lease, (l) => (this.lease = l), leaseLost);
    this.reconcileTimer = setInterval(() => {
      void this.exclusive(async () => {
        const t = performance.now();
        await backend.reconcile(this.watch!.peers());
        this.lastReconcileMs = performance.now() - t;
        releaseMemory();
      }).catch((e) => log.error({ err: (e as Error).message }, 'reconcile failed'));
    }, this.o.reconcileIntervalMs);
    this.ready = true;
    this.startup.readyMs = Date.now() - this.startedAt.getTime();
    log.info({ programMs: Math.round(this.startup.programMs), readyMs: this.startup.readyMs, ...backend.describe() }, 'ready');
  }

  /**
   * flannel's rules, ensured before the subnet file appears (pods must not start un-masqueraded) and
   * every --iptables-resync seconds after: iptables chains, or with EnableNFTables nftables tables.
   * Never flushed: the rules outlive the agent.
   */
  private async startFirewall(cfg: NetworkConfig, lease: Lease): Promise<void> {
    const { log } = this.o;
    const mode = cfg.enableNFTables ? 'nftables' : 'iptables';
    // flannel removes the other mode's rules at start ("Cleaning-up unused traffic manager rules"), so
    // switching EnableNFTables leaves no second set of NAT rules behind
    try {
      const removed = cfg.enableNFTables ? await removeRules() : await removeNftTables();
      if (removed.length) log.info({ removed }, `removed the ${cfg.enableNFTables ? 'iptables' : 'nftables'} rules of a previous run (EnableNFTables changed)`);
    } catch (e) {
      log.warn({ err: (e as Error).message }, 'cannot remove the rules of the other firewall mode');
    }
    if (!this.o.forwardRules && !this.o.ipMasq) return;
    let ensure: () => Promise<string[]>;
    if (cfg.enableNFTables) {
      const randomFully = !this.o.ipMasqRandomFullyDisable && (await nftSupportsRandomFully());
      const v6 = cfg.ipv6 && lease.ipv6Subnet ? { ipv6Network: cfg.ipv6.network, ipv6Subnet: lease.ipv6Subnet } : {};
      const v4 = cfg.enableIPv4 ? { network: cfg.network, subnet: lease.subnet } : {};
      const tables = new NftTables({ ...v4, ...v6, masq: this.o.ipMasq, forward: this.o.forwardRules, randomFully });
      ensure = () => tables.ensure();
    } else {
      const randomFully = !this.o.ipMasqRandomFullyDisable && (await supportsRandomFully());
      // flannel writes each family's rules only when the family is on: iptables for IPv4, ip6tables for IPv6
      const rules: Rule[] = [];
      if (cfg.enableIPv4) rules.push(...(this.o.forwardRules ? forwardRules(cfg.network) : []), ...(this.o.ipMasq ? masqRules(cfg.network, lease.subnet, randomFully) : []));
      if (cfg.ipv6 && lease.ipv6Subnet)
        rules.push(...(this.o.forwardRules ? forwardRules6(cfg.ipv6.network) : []), ...(this.o.ipMasq ? masqRules6(cfg.ipv6.network, lease.ipv6Subnet, randomFully) : []));
      ensure = () => ensureRules(rules);
    }
    this.firewall = new RulesKeeper(ensure, this.o.iptablesResyncMs, log);
    try {
      const changed = await ensure();
      log.info({ mode, ipMasq: this.o.ipMasq, forwardRules: this.o.forwardRules, changed }, `${mode} rules in place`);
    } catch (e) {
      this.firewall.state.lastError = (e as Error).message;
      // without masquerading, pods would reach the outside with addresses nobody routes back
      if (this.o.ipMasq) throw new Error(`--ip-masq: cannot install the masquerade rules (${mode}): ${(e as Error).message}`);
      log.warn({ err: (e as Error).message }, `cannot install the forward accept rules (${mode}, --iptables-forward-rules); forwarding depends on the host's policy`);
    }
    this.firewall.start();
  }

  /** What /readyz answers from: the data plane's checks once ready, not the status's list of every peer. */
  async readiness(): Promise<Pick<AgentStatus, 'ready' | 'checks'>> {
    const checks: AgentStatus['checks'] = [];
    if (this.ready && this.backend) {
      try {
        checks.push(...((await this.backend.checks?.()) ?? []));
      } catch (e) {
        checks.push({ name: 'data plane readable', ok: false, detail: (e as Error).message });
      }
    }
    return { ready: this.ready, checks };
  }

  async status(): Promise<AgentStatus> {
    const b = this.backend;
    const d = b?.describe();
    const ws = this.watch?.stats;
    const exp = this.lease?.expiration;
    const { checks } = await this.readiness();
    let traffic: AgentStatus['traffic'] = null;
    if (this.ready && b) {
      // a status request must answer even when the data plane is broken: that is when it is needed
      try {
        traffic = b.traffic?.() ?? null;
      } catch (e) {
        checks.push({ name: 'data plane readable', ok: false, detail: (e as Error).message });
      }
    }
    return {
      ready: this.ready,
      pid: process.pid,
      memory: { ...process.memoryUsage() },
      startedAt: this.startedAt.toISOString(),
      node: this.ext ? { iface: this.ext.iface.name, ifaceAddr: this.ext.ifaceAddr, publicIP: this.ext.publicIP, ...(this.ext.publicIPv6 ? { publicIPv6: this.ext.publicIPv6 } : {}) } : null,
      network: this.cfg ? [...(this.cfg.enableIPv4 ? [formatCidr(this.cfg.network)] : []), ...(this.cfg.ipv6 ? [formatCidr6(this.cfg.ipv6.network)] : [])].join(' ') : null,
      lease: this.lease ? { subnet: leaseName(this.lease), expiration: exp?.toISOString() ?? null, expiresInSeconds: exp ? Math.round((exp.getTime() - Date.now()) / 1000) : null } : null,
      backend: d ?? null,
      peers: (this.watch?.peers() ?? []).map((p) => ({
        subnet: hasIPv4(p) ? formatCidr(p.subnet) : formatCidr6(p.ipv6Subnet!),
        publicIP: p.attrs.publicIP,
        ...(p.ipv6Subnet ? { ipv6Subnet: formatCidr6(p.ipv6Subnet), publicIPv6: p.attrs.publicIPv6 } : {}),
      })),
      watch: {
        events: ws?.events ?? 0,
        relists: ws?.relists ?? 0,
        rejected: ws?.rejected ?? 0,
        reconnects: ws?.disconnects ?? 0,
        storeLosses: ws?.storeLosses ?? 0,
        watchStalls: ws?.watchStalls ?? 0,
        lastEventAgeSeconds: ws?.lastEventAt ? (Date.now() - ws.lastEventAt) / 1000 : null,
      },
      startup: { ...this.startup },
      reconcile: { runs: d?.reconciles ?? 0, corrections: d?.corrections ?? 0, failures: d?.failures ?? 0, rejected: d?.rejected ?? 0, lastMs: this.lastReconcileMs },
      firewall: { ipMasq: this.o.ipMasq, forwardRules: this.o.forwardRules, repairs: this.firewall?.state.repairs ?? 0, lastError: this.firewall?.state.lastError ?? null },
      traffic,
      checks,
    };
  }

  async stop(code = 0): Promise<void> {
    this.abort.abort();
    clearInterval(this.reconcileTimer);
    await this.firewall?.stop();
    this.blackhole?.stop();
    this.manager?.stopRenewal();
    await this.watch?.stop().catch(() => undefined);
    await this.serial.catch(() => undefined);
    this.backend?.close?.();
    this.registry?.close();
    this.done(code);
  }
}
