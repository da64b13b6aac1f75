// The typed face of the udp backend's native packet pump (native/udp.cc): a TUN device and a UDP
// socket moved between by a native thread; JS edits its table and reads its counters.
import { addon, type NativeError } from './addon.js';

export interface PumpRouteOp {
  action: 'add' | 'del';
  subnet: string;
  len: number;
  /** the peer's public IP (add only) */
  ip?: string;
}

export interface PumpRoute {
  subnet: string;
  len: number;
  ip: string;
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
}

/** Totals, and drops by reason (named like the BPF data plane's reasons where they mean the same). */
export interface PumpCounters {
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
  noRoute: number;
  notMember: number;
  malformed: number;
  ttlExceeded: number;
  sendErrors: number;
  tunWriteErrors: number;
}

const native = addon;

export class UdpPump {
  private constructor(
    private readonly id: number,
    readonly ifindex: number,
    readonly name: string,
  ) {}

  /** Opens (or re-attaches to) the persistent TUN device and binds bindIp:port; starts the pump thread. */
  static open(tun: string, bindIp: string, port: number): UdpPump {
    const r = native().udpOpen({ tun, bindIp, port });
    return new UdpPump(r.id, r.ifindex, r.name);
  }

  /** One result per operation (null = done); a delete of an unknown subnet is ENOENT. */
  apply(ops: PumpRouteOp[]): (NativeError | null)[] {
    return ops.length ? native().udpRoutes(this.id, ops) : [];
  }

  /** Why the pump thread ended by itself (EBADFD: its TUN device was deleted), 0 while it runs. */
  stoppedErrno(): number {
    return native().udpDump(this.id).stoppedErrno;
  }

  dump(): { routes: PumpRoute[]; counters: PumpCounters } {
    const { routes, counters } = native().udpDump(this.id);
    return { routes, counters };
  }

  /** Stops the thread. The device stays (with its route) unless removeDevice. */
  close(removeDevice = false): void {
    native().udpClose(this.id, { removeDevice });
  }
}
