// Loads the native addon (build/Release/flannel_native.node) from the project root.
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';
import { projectRoot } from '../paths.js';
import type { PumpCounters, PumpRoute, PumpRouteOp } from './udp-pump.js';

const require = createRequire(import.meta.url);

const ERRNO_NAMES = new Map(Object.entries(osConstants.errno).map(([k, v]) => [v, k]));
/** EINVAL for 22: the name an errno number has (undefined for one the platform does not name) */
export const errnoName = (errno: number): string | undefined => ERRNO_NAMES.get(errno);

export interface NativeError extends Error {
  errno: number;
  code: string;
  syscall: string;
  detail?: string;
}

export interface NativeAddon {
  netlinkExec(ops: object[]): Promise<(NativeError | null)[]>;
  netlinkLinks(): Promise<unknown[]>;
  netlinkAddrs(family: number): Promise<unknown[]>;
  netlinkRoutes(family: number): Promise<unknown[]>;
  netlinkNeighs(family: number): Promise<unknown[]>;
  netlinkRouteGet(dst: string): Promise<unknown>;
  /** one datagram to systemd's NOTIFY_SOCKET (a path, or @name for the abstract namespace) */
  sdNotify(socketPath: string, message: string): void;
  /** glibc's malloc_trim(0): malloc's free pages back to the kernel; whether any were */
  mallocTrim(): boolean;
  bpfObjectOpen(path: string, pinRoot: string, mapFlags?: Record<string, number>, mapSizes?: Record<string, number>): Promise<{ id: number; programs: BpfProgramDesc[]; maps: BpfMapDesc[] }>;
  bpfObjectClose(id: number): void;
  bpfMapUpdate(fd: number, key: Buffer, value: Buffer, flags?: number): void;
  bpfMapUpdateMany(fd: number, keys: Buffer, values: Buffer, keySize: number, valueSize: number): Int32Array;
  bpfMapDeleteMany(fd: number, keys: Buffer, keySize: number): Int32Array;
  bpfMapLookup(fd: number, key: Buffer, valueSize: number): Buffer | null;
  bpfMapKeys(fd: number, keySize: number): Buffer[];
  bpfMapEntries(fd: number, keySize: number, valueSize: number): { keys: Buffer; values: Buffer };
  bpfMapInfo(fd: number): { id: number; name: string; type: number; keySize: number; valueSize: number; maxEntries: number; flags: number };
  bpfProgInfo(fd: number): { id: number; name: string };
  bpfProgInfoById(id: number): { id: number; name: string } | null;
  bpfObjGet(path: string): number;
  bpfObjPin(fd: number, path: string): void;
  closeFd(fd: number): void;
  tcAttach(ifindex: number, direction: 'ingress' | 'egress', progFd: number, handle: number, priority: number): number;
  tcDetach(ifindex: number, direction: 'ingress' | 'egress', handle: number, priority: number): boolean;
  tcQuery(ifindex: number, direction: 'ingress' | 'egress', handle: number, priority: number): number | null;
  xdpAttach(ifindex: number, progFd: number, mode: 'native' | 'generic', replaceId?: number): void;
  xdpDetach(ifindex: number, mode: 'native' | 'generic'): void;
  xdpQuery(ifindex: number): { attachMode: number; progId: number; driverProgId: number; genericProgId: number };
  bpfProgTestRun(fd: number, data: Buffer, repeat: number, ctx?: TestRunCtx): Promise<{ retval: number; durationNs: number; data: Buffer; mark: number }>;
  libbpfDrainLog(): string[];
  // the udp backend's pump (native/udp.cc; see udp-pump.ts)
  udpOpen(o: { tun: string; bindIp: string; port: number }): { id: number; ifindex: number; name: string };
  udpClose(id: number, o?: { removeDevice?: boolean }): void;
  udpRoutes(id: number, ops: PumpRouteOp[]): (NativeError | null)[];
  udpDump(id: number): { routes: PumpRoute[]; counters: PumpCounters; ifindex: number; name: string; stoppedErrno: number };
  numPossibleCpus: number;
  constants: Record<'AF_UNSPEC' | 'AF_INET' | 'AF_INET6' | 'AF_BRIDGE' | 'NUD_PERMANENT' | 'NTF_SELF', number>;
}

/** BPF_PROG_TEST_RUN's skb context for a tc program: GSO fields for a super-packet, the mark it starts with */
export interface TestRunCtx {
  gsoSize?: number;
  gsoSegs?: number;
  mark?: number;
}

export interface BpfProgramDesc {
  name: string;
  section: string;
  fd: number;
  type: number;
}
export interface BpfMapDesc {
  name: string;
  fd: number;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
}

let cached: NativeAddon | undefined;

export function addon(): NativeAddon {
  if (!cached) {
    const load = require('node-gyp-build') as (dir: string) => NativeAddon;
    cached = load(projectRoot());
  }
  return cached;
}
