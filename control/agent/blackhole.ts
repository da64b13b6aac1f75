// flannel's --ip-blackhole-route: `ip route add blackhole <our subnet>`, so traffic for addresses of
// our subnet that no pod holds is dropped here instead of following the default route out. It is
// meant for CNI setups without the bridge (Canal: one /32 route per pod). flannel adds it when no
// blackhole route for the subnet exists and checks again every --iptables-resync seconds; so do we.
//
// With the bridge plugin the route must not be used: the kernel then has two routes of the same
// metric for the subnet, and whichever came first wins (a blackhole that came before cni0's address
// swallows every local pod's traffic). flannel behaves the same; the README says so.
import type { Logger } from '../log.js';
import { exec, isNetlinkError } from '../kernel/netlink.js';
import { formatIp4, formatCidr, type Subnet } from '../subnet/ip4.js';

export class BlackholeRoute {
  private timer?: NodeJS.Timeout;
  /** "present" (or a route of the same metric holds the subnet) or the last error */
  state: string = 'not yet added';

  constructor(
    private readonly subnet: Subnet,
    private readonly intervalMs: number,
    private readonly log: Logger,
  ) {}

  async ensure(): Promise<void> {
    const dst = formatIp4(this.subnet.ip);
    try {
      await exec({ type: 'route', action: 'add', kind: 'blackhole', dst, dstLen: this.subnet.len });
      if (this.state !== 'present') this.log.info({ route: `blackhole ${formatCidr(this.subnet)}` }, 'added the blackhole route for our subnet (--ip-blackhole-route)');
      this.state = 'present';
    } catch (e) {
      // EEXIST: our blackhole from an earlier pass or run, or a route of the same metric (the bridge's)
      if (isNetlinkError(e, 'EEXIST')) {
        this.state = 'present';
        return;
      }
      if (this.state !== (e as Error).message) this.log.error({ err: (e as Error).message }, 'cannot add the blackhole route for our subnet (--ip-blackhole-route)');
      this.state = (e as Error).message;
    }
  }

  start(): void {
    this.timer = setInterval(() => void this.ensure(), this.intervalMs);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
