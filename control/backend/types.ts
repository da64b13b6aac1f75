// What every backend provides to the agent. A backend consumes lease events and programs the kernel
// through control/kernel; it never talks to etcd.
import type { Logger } from '../log.js';
import type { ExternalInterface } from '../iface/select.js';
import type { NetworkConfig } from '../subnet/config.js';
import type { Lease, LeaseAttrs } from '../subnet/lease.js';
import type { LeaseEvent } from '../subnet/manager.js';

export interface BackendContext {
  cfg: NetworkConfig;
  ext: ExternalInterface;
  log: Logger;
}

export interface ReconcileResult {
  added: number;
  removed: number;
}

export interface Backend {
  /** the BackendType written in leases ("" for udp, as flannel does) */
  readonly leaseType: string;
  /** Creates devices; returns what to publish in our lease and the pod MTU for the subnet file. */
  prepare(): Promise<{ attrs: LeaseAttrs; mtu: number }>;
  /** Called once our lease is known (e.g. to address flannel.1 with it). */
  start(own: Lease): Promise<void>;
  /** Applies a batch of peer lease changes. */
  handle(events: LeaseEvent[]): Promise<void>;
  /** Makes the kernel match exactly these peers: adds what is missing, removes what is stale. */
  reconcile(peers: Lease[]): Promise<ReconcileResult>;
  /** Releases what the process holds (loaded objects, the udp pump); the kernel state stays. */
  close?(): void;
  /** Describes the backend for logs and status. */
  describe(): Record<string, unknown>;
}
