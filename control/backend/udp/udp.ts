// udp, flannel's legacy backend: pod packets leave through the TUN device flannel0 and travel as the
// bare payload of UDP datagrams (port 8285) to the peer's public IP. The per-packet work is in the
// native pump (native/udp.cc); here lease events become entries of its table, through the same
// PeerProgrammer as every other backend.
import { LeaseFormatError, type Lease } from '../../subnet/lease.js';
import { ConfigError } from '../../subnet/config.js';
import { formatCidr, formatIp4 } from '../../subnet/ip4.js';
import { exec } from '../../kernel/netlink.js';
import { deviceCheck } from '../health.js';
import { UdpPump, type PumpRouteOp } from '../../kernel/udp-pump.js';
import { PeerProgrammer, type Entry } from '../peer-programmer.js';
import type { Backend, BackendContext, BackendDescription, HealthCheck, TrafficView } from '../types.js';
import { disableIpv6, ensureDeviceAddress } from '../device.js';

export const DEFAULT_UDP_PORT = 8285;
export const TUN_NAME = 'flannel0';
const ENCAP_OVERHEAD = 28; // outer IPv4 20 + UDP 8

export function udpOptions(backend: Record<string, unknown>): { port: number } {
  const port = backend.Port ?? DEFAULT_UDP_PORT;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) throw new ConfigError('Backend.Port', `must be a whole number from 1 to 65535, got ${JSON.stringify(port)}`);
  return { port };
}

export class UdpBackend implements Backend {
  // flannel's udp backend leaves BackendType empty in its leases
  readonly leaseType = '';
  private pump?: UdpPump;
  private readonly port: number;
  private readonly programmer: PeerProgrammer<PumpRouteOp>;

  constructor(private readonly ctx: BackendContext) {
    this.port = udpOptions(ctx.cfg.backend).port;
    this.programmer = new PeerProgrammer<PumpRouteOp>(
      { entriesFor: (l) => this.entriesFor(l), currentEntries: () => Promise.resolve(this.currentEntries()), apply: (ops) => Promise.resolve(this.pump!.apply(ops)) },
      ctx.log,
    );
  }

  async prepare() {
    const { ext } = this.ctx;
    const mtu = await this.openPump();
    return { attrs: { publicIP: ext.publicIP, publicIPv6: null, backendType: '' }, mtu };
  }

  private async openPump(): Promise<number> {
    const { ext, log } = this.ctx;
    // flannel binds the interface address (not the public IP, which may be a NAT address)
    this.pump = UdpPump.open(TUN_NAME, ext.ifaceAddr, this.port);
    const mtu = ext.iface.mtu - ENCAP_OVERHEAD;
    // before it goes up, or its IPv6 router solicitations reach the pump and count as malformed
    disableIpv6(this.pump.name);
    await exec({ type: 'link', action: 'set', index: this.pump.ifindex, mtu, up: true });
    log.info({ device: this.pump.name, index: this.pump.ifindex, mtu, port: this.port }, 'opened the TUN device and the UDP socket');
    return mtu;
  }

  /**
   * flannel0 deleted by hand ends the pump thread (it reports why): a new pump makes a new flannel0,
   * which gets its address and route again; the reconcile then refills the new pump's empty table.
   */
  private async ensurePump(): Promise<void> {
    const why = this.pump!.stoppedErrno();
    if (!why) return;
    this.ctx.log.warn({ device: TUN_NAME, errno: why }, 'the udp pump stopped (flannel0 deleted?): opening flannel0 and the pump again');
    this.pump!.close();
    await this.openPump();
    if (this.own) await this.start(this.own);
    this.repairs++;
  }

  private own?: Lease;
  private repairs = 0;

  async start(own: Lease) {
    this.own = own;
    const pump = this.pump!;
    // subnet/32 as flannel: a source address for host-to-pod traffic, without broadcast routes
    await ensureDeviceAddress({ index: pump.ifindex }, own.subnet);
    const { network } = this.ctx.cfg;
    await exec({ type: 'route', action: 'replace', dst: formatIp4(network.ip), dstLen: network.len, dev: pump.ifindex });
  }

  handle = (events: Parameters<Backend['handle']>[0]) => this.programmer.handle(events);
  reconcile = async (peers: Lease[]) => {
    await this.ensurePump();
    return this.programmer.reconcile(peers);
  };

  traffic(): TrafficView {
    const { routes, counters: c } = this.pump!.dump();
    return {
      peers: routes.map((r) => ({ subnet: `${r.subnet}/${r.len}`, publicIP: r.ip, txPackets: r.txPackets, txBytes: r.txBytes, rxPackets: r.rxPackets, rxBytes: r.rxBytes })),
      packets: {
        forwarded: c.txPackets,
        received: c.rxPackets,
        no_route: c.noRoute,
        not_member: c.notMember,
        malformed: c.malformed,
        ttl_exceeded: c.ttlExceeded,
        send_errors: c.sendErrors,
        tun_write_errors: c.tunWriteErrors,
      },
    };
  }

  async checks(): Promise<HealthCheck[]> {
    const why = this.pump?.stoppedErrno();
    return [
      await deviceCheck(TUN_NAME),
      {
        name: 'udp pump',
        ok: this.pump !== undefined && !why,
        detail: !this.pump ? 'stopped' : why ? `thread ended (errno ${why}): the reconcile reopens it` : `thread running, UDP port ${this.port}`,
      },
    ];
  }

  close(): void {
    this.pump?.close();
    this.pump = undefined;
  }

  describe(): BackendDescription {
    return { backend: 'udp', device: TUN_NAME, port: this.port, peers: this.programmer.peerCount(), ...this.programmer.stats, repairedDevice: this.repairs };
  }

  private entriesFor(lease: Lease): Entry<PumpRouteOp>[] {
    if (lease.attrs.backendType !== '') throw new LeaseFormatError(`peer runs backend ${JSON.stringify(lease.attrs.backendType)}, not udp`);
    const subnet = formatIp4(lease.subnet.ip);
    const { len } = lease.subnet;
    const ip = lease.attrs.publicIP;
    return [{ key: `udp ${formatCidr(lease.subnet)}`, value: ip, add: { action: 'add', subnet, len, ip }, del: { action: 'del', subnet, len } }];
  }

  private currentEntries(): Entry<PumpRouteOp>[] {
    return this.pump!.dump().routes.map((r) => ({
      key: `udp ${r.subnet}/${r.len}`,
      value: r.ip,
      add: { action: 'add', subnet: r.subnet, len: r.len, ip: r.ip },
      del: { action: 'del', subnet: r.subnet, len: r.len },
    }));
  }
}
