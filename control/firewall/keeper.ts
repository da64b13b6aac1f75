// Keeps flannel's rules in place, iptables chains or nftables tables: ensured every --iptables-resync
// seconds, never flushed (the rules outlive the agent).
import type { Logger } from '../log.js';

/**
 * One pass at a time: the next is scheduled when the previous one ends. A plain interval would start
 * passes on top of each other while iptables-save is slow (a node with many kube-proxy rules), each
 * one's iptables-restore racing the others'.
 */
export class RulesKeeper {
  readonly state = { repairs: 0, lastError: null as string | null, passes: 0 };
  private timer?: NodeJS.Timeout;
  private running: Promise<void> = Promise.resolve();
  private stopped = false;

  /** `ensure` puts the rules in place and says what it changed (nothing: an empty list) */
  constructor(
    private readonly ensure: () => Promise<string[]>,
    private readonly intervalMs: number,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.stopped = false;
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.pass().finally(() => this.schedule());
    }, this.intervalMs);
  }

  private async pass(): Promise<void> {
    this.state.passes++;
    try {
      const changed = await this.ensure();
      this.state.lastError = null;
      if (!changed.length) return;
      this.state.repairs += changed.length;
      this.log.warn({ changed }, 'restored firewall rules that were missing or altered');
    } catch (e) {
      this.state.lastError = (e as Error).message;
      this.log.error({ err: (e as Error).message }, 'firewall resync failed');
    }
  }

  /** No pass starts after this; resolves once a running one has ended. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }
}
