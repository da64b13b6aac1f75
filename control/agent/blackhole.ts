// flannel's --ip-blackhole-route: `ip route add blackhole <our subnet>` (and, on a dual-stack or
// IPv6-only network, the same for our IPv6 subnet, as flannel's AddBlackholeV6Route), so traffic for
// addresses of our subnet that no pod holds is dropped here instead of following the default route out. It is
// meant for CNI setups without the bridge (Canal: one /32 route per pod). flannel adds it when no
// blackhole route for the subnet exists and checks again every --iptables-resync seconds; so do we.
//
// With the bridge plugin the route must not be used: the kernel then has two routes of the same
// metric for the subnet, and whichever came first wins (a blackhole that came before cni0's address
// swallows every local pod's traffic). flannel behaves the same; the README says so.
import type { Logger } from '../log.js';
import { exec, isNetlinkError } from '../kernel/netlink.js';
/** a subnet as the route wants it: its address in text, IPv4 or IPv6, and its prefix length */
export interface BlackholeSubnet {
  ip: string;
  len: number;
}

export class BlackholeRoute {
  private timer?: NodeJS.Timeout;
  /** "present" (or a route of the same metric holds each subnet) or the last error */
  state: string = 'not yet added';

  constructor(
    private readonly subnets: BlackholeSubnet[],
    private readonly intervalMs: number,
    private readonly log: Logger,
  ) {}

  async ensure(): Promise<void> {
    const errors: string[] = [];
    let added = false;
    for (const s of this.subnets) {
      const route = `blackhole ${s.ip}/${s.len}`;
      try {
        await exec({ type: 'route', action: 'add', kind: 'blackhole', dst: s.ip, dstLen: s.len });
        added = true;
        if (this.state === 'present') this.log.info({ route }, 'restored the blackhole route for our subnet (--ip-blackhole-route)');
      } catch (e) {
        // EEXIST: our blackhole from an earlier pass or run, or a route of the same metric (the bridge's)
        if (!isNetlinkError(e, 'EEXIST')) errors.push(`${route}: ${(e as Error).message}`);
      }
    }
    const state = errors.length ? errors.join('; ') : 'present';
    if (state === 'present' && this.state !== 'present' && added)
      this.log.info({ routes: this.subnets.map((s) => `blackhole ${s.ip}/${s.len}`) }, 'added the blackhole route for our subnet (--ip-blackhole-route)');
    if (errors.length && this.state !== state) this.log.error({ err: state }, 'cannot add the blackhole route for our subnet (--ip-blackhole-route)');
    this.state = state;
  }

  start(): void {
    this.timer = setInterval(() => void this.ensure(), this.intervalMs);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
