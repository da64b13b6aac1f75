// The node agent's life: config -> interface -> backend devices -> lease -> subnet file -> watch,
// reconcile and renew until stopped. On exit the kernel state stays, so pods keep talking while the
// agent restarts (flannel does the same).
import type { Logger } from '../log.js';
import { createBackend } from '../backend/index.js';
import type { Backend } from '../backend/types.js';
import type { VxlanModeOptions } from '../backend/vxlan/index.js';
import { lookupExternalInterface, type IfaceOptions } from '../iface/select.js';
import { EtcdRegistry, type EtcdOptions } from '../subnet/etcd-registry.js';
import { formatCidr } from '../subnet/ip4.js';
import { SubnetManager, type LeaseWatch } from '../subnet/manager.js';
import { readPreviousSubnet, writeSubnetFile } from '../subnet/subnet-file.js';

export interface AgentOptions {
  etcd: EtcdOptions;
  iface: IfaceOptions;
  subnetFile: string;
  renewMarginMinutes: number;
  ipMasq: boolean;
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
    this.manager = new SubnetManager({ registry: this.registry, log, renewMarginMs: this.o.renewMarginMinutes * 60_000 });
    const cfg = await this.manager.waitForConfig(this.abort.signal);
    log.info({ network: formatCidr(cfg.network), subnetLen: cfg.subnetLen, backend: cfg.backend.Type }, 'network config');

    const ext = await lookupExternalInterface(this.o.iface);
    log.info({ iface: ext.iface.name, ifaceAddr: ext.ifaceAddr, publicIP: ext.publicIP, mtu: ext.iface.mtu }, 'using interface');

    const backend = createBackend({ cfg, ext, log }, this.o.bpf);
    this.backend = backend;
    const { attrs, mtu } = await backend.prepare();

    const previous = await readPreviousSubnet(this.o.subnetFile);
    const lease = await this.manager.acquireLease(cfg, attrs, previous, this.abort.signal);
    log.info({ subnet: formatCidr(lease.subnet), expiration: lease.expiration ?? 'never (reservation)' }, 'lease acquired');
    await backend.start(lease);

    this.watch = this.manager.watchLeases(
      cfg,
      lease,
      (events) => this.exclusive(() => backend.handle(events)),
      (why) => {
        // flannel exits when its lease is revoked: another node may get the subnet, so keep nothing
        log.error({ reason: why }, 'our lease is gone; shutting down');
        void this.stop(1);
      },
    );
    await this.watch.synced;
    await this.watch.drain();
    // removes what a previous run left for peers that are gone, adds whatever is missing
    await this.exclusive(() => backend.reconcile(this.watch!.peers()));

    await writeSubnetFile(this.o.subnetFile, { network: cfg.network, subnet: lease.subnet, mtu, ipMasq: this.o.ipMasq });
    log.info({ file: this.o.subnetFile, subnet: formatCidr(lease.subnet), mtu }, 'wrote the subnet file');
    this.manager.startRenewal(lease);
    this.reconcileTimer = setInterval(() => {
      void this.exclusive(() => backend.reconcile(this.watch!.peers())).catch((e) => log.error({ err: (e as Error).message }, 'reconcile failed'));
    }, this.o.reconcileIntervalMs);
    this.ready = true;
    log.info({ peers: this.watch.peers().length, ...backend.describe() }, 'ready');
  }

  async stop(code = 0): Promise<void> {
    this.abort.abort();
    clearInterval(this.reconcileTimer);
    this.manager?.stopRenewal();
    await this.watch?.stop().catch(() => undefined);
    await this.serial.catch(() => undefined);
    this.backend?.close?.();
    this.registry?.close();
    this.done(code);
  }
}
