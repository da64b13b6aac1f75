// What every backend provides to the agent. A backend consumes lease events and programs the kernel
// through control/kernel; it never talks to etcd.
import type { Logger } from '../log.js';
import type { ExternalInterface } from '../iface/select.js';
import type { NetworkConfig } from '../subnet/config.js';
import type { Lease, LeaseAttrs } from '../subnet/lease.js';
import type { LeaseEvent } from '../subnet/lease.js';

export interface BackendContext {
  cfg: NetworkConfig;
  ext: ExternalInterface;
  log: Logger;
}

export interface ReconcileResult {
  added: number;
  removed: number;
}

/** Packets and bytes exchanged with one peer, as the data plane counted them. */
export interface PeerTraffic {
  subnet: string;
  publicIP: string;
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
}

export interface TrafficView {
  peers: PeerTraffic[];
  /** packets by verdict: forwarded, received, and each drop reason */
  packets: Record<string, number>;
  /** pod fast path (BPF mode, when on): packets that took it and packets left to the stack, by reason */
  fastPath?: Record<string, number>;
}

/** One thing the data plane needs to be healthy (a program attached, a map pinned, a device up). */
export interface HealthCheck {
  name: string;
  ok: boolean;
  detail: string;
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
  /** What the data plane counted, for backends that count (BPF, udp). */
  traffic?(): TrafficView | undefined;
  /** Checks of the data plane's parts, for /readyz and the status command. */
  checks?(): Promise<HealthCheck[]>;
  /** Describes the backend for logs and status. */
  describe(): BackendDescription;
}

/** The peer programmer's counters (peer-programmer.ts), which every backend reports. */
export interface ProgrammerStats {
  reconciles: number;
  corrections: number;
  failures: number;
  rejected: number;
}

/** What a backend says about itself: in the "ready" log line, /status, `flannelctl status`, /metrics. */
export interface BackendDescription extends ProgrammerStats {
  backend: 'vxlan' | 'host-gw' | 'udp';
  /** vxlan: the BPF data plane, or flannel's routes, neighbours and FDB entries */
  mode?: 'bpf' | 'classic';
  device?: string;
  vni?: number;
  port?: number;
  peers: number;
  /** vxlan: why BPF mode could not be used */
  fallbackReason?: string;
  /** BPF mode: where the underlay guard runs; or where an earlier run's guard was removed */
  underlayGuard?: string;
  pinRoot?: string;
  repairedDevice?: number;
  /** vxlan with Backend.DirectRouting: peers reached by a plain route, not the tunnel */
  directRoutingPeers?: number;
  repairedPins?: number;
  reattachedPrograms?: number;
  /** BPF mode: the pod fast path (fast-path.ts) */
  fastPath?: 'on' | 'off';
  fastPathOffBecause?: string;
  vxlanBypass?: 'on' | 'off';
  vxlanBypassOffBecause?: string;
  /** bypass on, but its receive side off (the guard runs in XDP) */
  vxlanBypassReceive?: string;
  localPods?: number;
  /** a network with IPv6: the IPv6 half (flannel-v6.1 or host-gw's IPv6 routes) */
  ipv6?: { device?: string; peers: number; directRoutingPeers?: number };
  attached?: number;
  detached?: number;
  stalePods?: number;
}
