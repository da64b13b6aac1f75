// The typed libbpf layer: objects loaded with a pin root (maps pinned by name and reused), map access
// with Buffers, tc/XDP attachment and BPF_PROG_TEST_RUN. libbpf's own messages go to the logger.
import { chmodSync, mkdirSync, readdirSync, rmSync, statSync, statfsSync } from 'node:fs';
import { basename, join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';
import type { Logger } from '../log.js';
import { addon, type BpfMapDesc, type BpfProgramDesc, type TestRunCtx } from './addon.js';

const BPF_FS_MAGIC = 0xcafe4a11;
export const BPF_MAP_TYPE_PERCPU_HASH = 5;
export const BPF_MAP_TYPE_PERCPU_ARRAY = 6;

export function drainLibbpfLog(log?: Logger): string[] {
  const lines = addon().libbpfDrainLog();
  if (!log) return lines;
  for (const l of lines) {
    if (l.startsWith('warn')) log.warn({ libbpf: l.slice(6) }, 'libbpf');
    else log.debug({ libbpf: l.slice(6) }, 'libbpf');
  }
  return lines;
}

/**
 * mkdir -p, one component at a time: Node's recursive mkdirSync never returns for a path under /proc
 * (seen on Node 20), and a mistyped --bpf-pin-root must fail, not hang.
 */
function mkdirs(dir: string): void {
  const parts = resolve(dir).split('/').filter(Boolean);
  let cur = '';
  for (const p of parts) {
    cur += `/${p}`;
    try {
      mkdirSync(cur, { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
}

/** Makes sure dir is on a bpffs, mounting one there if needed (pins elsewhere fail with EINVAL). */
export function ensureBpffs(dir: string): void {
  mkdirs(dir);
  // a bpffs root is 1777 by default: anyone allowed to use bpf() could pin a map of theirs under a
  // name we would adopt on the next start
  if (statfsSync(dir).type !== BPF_FS_MAGIC) execFileSync('mount', ['-t', 'bpf', '-o', 'mode=0700', 'bpf', dir]);
  if (statSync(dir).mode & 0o022) chmodSync(dir, 0o700);
}

/**
 * Pins we are about to reuse (libbpf adopts a pinned map by name) must be root's and writable by
 * root only: a map planted by someone else would let them steer the data plane. Returns the problems.
 */
export function untrustedPins(dir: string, prefix = 'fl_'): string[] {
  const out: string[] = [];
  let names: string[] = [];
  try {
    names = readdirSync(dir);
  } catch {
    return out;
  }
  for (const n of names.filter((x) => x.startsWith(prefix))) {
    const st = statSync(join(dir, n));
    if (st.uid !== 0 || st.mode & 0o022) out.push(`${join(dir, n)} (owner uid ${st.uid}, mode ${(st.mode & 0o777).toString(8)})`);
  }
  return out;
}

/** The kernel id of what is pinned at path (info fails on the wrong kind); undefined when nothing usable. */
function pinnedObjectId(path: string, info: (fd: number) => number): number | undefined {
  let fd: number;
  try {
    fd = addon().bpfObjGet(path);
  } catch {
    return undefined;
  }
  try {
    return info(fd);
  } catch {
    return undefined;
  } finally {
    addon().closeFd(fd);
  }
}

export class BpfMap {
  readonly percpu: boolean;
  /** bytes of one lookup result: per-CPU maps return one 8-byte-aligned value per possible CPU */
  readonly lookupSize: number;

  constructor(readonly desc: Omit<BpfMapDesc, 'fd'> & { fd: number }) {
    this.percpu = desc.type === BPF_MAP_TYPE_PERCPU_HASH || desc.type === BPF_MAP_TYPE_PERCPU_ARRAY;
    this.lookupSize = this.percpu ? Math.ceil(desc.valueSize / 8) * 8 * addon().numPossibleCpus : desc.valueSize;
  }

  get fd(): number {
    return this.desc.fd;
  }

  /** The kernel's id of the map (what bpftool lists): two fds of one map share it. */
  id(): number {
    return addon().bpfMapInfo(this.fd).id;
  }

  static openPinned(path: string): BpfMap {
    const fd = addon().bpfObjGet(path);
    const info = addon().bpfMapInfo(fd);
    return new BpfMap({ ...info, fd });
  }

  /** The id of the map pinned at path, undefined when nothing (usable) is pinned there. */
  static pinnedId(path: string): number | undefined {
    return pinnedObjectId(path, (fd) => addon().bpfMapInfo(fd).id);
  }

  pin(path: string): void {
    addon().bpfObjPin(this.fd, path);
  }

  update(key: Buffer, value: Buffer): void {
    addon().bpfMapUpdate(this.fd, key, value);
  }

  /** One native call for many entries (a per-CPU map's values: lookupSize each); the errno of each (0 = stored). */
  updateMany(entries: [Buffer, Buffer][]): number[] {
    if (entries.length === 0) return [];
    const keys = Buffer.concat(entries.map((e) => e[0]));
    const values = Buffer.concat(entries.map((e) => e[1]));
    return [...addon().bpfMapUpdateMany(this.fd, keys, values, this.desc.keySize, this.lookupSize)];
  }

  /** updateMany() of entries already laid end to end: `keys` holds keySize bytes each, `values` lookupSize. */
  updatePacked(keys: Buffer, values: Buffer): number[] {
    if (keys.length === 0) return [];
    return [...addon().bpfMapUpdateMany(this.fd, keys, values, this.desc.keySize, this.lookupSize)];
  }

  deletePacked(keys: Buffer): number[] {
    if (keys.length === 0) return [];
    return [...addon().bpfMapDeleteMany(this.fd, keys, this.desc.keySize)];
  }

  /** entries() without a Buffer per entry: every key and value laid end to end, as the kernel's batch gave them. */
  packedEntries(): { keys: Buffer; values: Buffer; count: number } {
    const { keys, values } = addon().bpfMapEntries(this.fd, this.desc.keySize, this.lookupSize);
    return { keys, values, count: keys.length / this.desc.keySize };
  }

  deleteMany(keys: Buffer[]): number[] {
    if (keys.length === 0) return [];
    return [...addon().bpfMapDeleteMany(this.fd, Buffer.concat(keys), this.desc.keySize)];
  }

  lookup(key: Buffer): Buffer | null {
    return addon().bpfMapLookup(this.fd, key, this.lookupSize);
  }

  keys(): Buffer[] {
    return addon().bpfMapKeys(this.fd, this.desc.keySize);
  }

  /** Every entry with its value (per-CPU maps: all CPUs' values, as lookup() gives them), in one call. */
  entries(): [Buffer, Buffer][] {
    const { keys, values } = addon().bpfMapEntries(this.fd, this.desc.keySize, this.lookupSize);
    const out: [Buffer, Buffer][] = [];
    for (let i = 0, n = keys.length / this.desc.keySize; i < n; i++)
      out.push([keys.subarray(i * this.desc.keySize, (i + 1) * this.desc.keySize), values.subarray(i * this.lookupSize, (i + 1) * this.lookupSize)]);
    return out;
  }

  /** Per-CPU values split into one Buffer per CPU. */
  perCpu(value: Buffer): Buffer[] {
    const stride = Math.ceil(this.desc.valueSize / 8) * 8;
    const out: Buffer[] = [];
    for (let off = 0; off + this.desc.valueSize <= value.length; off += stride) out.push(value.subarray(off, off + this.desc.valueSize));
    return out;
  }

  close(): void {
    addon().closeFd(this.fd);
  }
}

export class BpfObject {
  private constructor(
    readonly id: number,
    readonly path: string,
    readonly programs: Map<string, BpfProgramDesc>,
    readonly maps: Map<string, BpfMap>,
  ) {}

  /**
   * Loads an object whose maps are pinned by name under pinRoot (an existing pin is reused). A pin of
   * another shape makes libbpf refuse the whole load; if every such pin is one of `replaceable` (maps
   * of counters), those pins are removed and the load tried once more. `mapFlags` replaces the flags
   * a map is declared with, `mapSizes` its max_entries (every object sharing a pin root must pass the same).
   */
  static async open(
    path: string,
    pinRoot: string,
    log?: Logger,
    replaceable: readonly string[] = [],
    mapFlags: Record<string, number> = {},
    mapSizes: Record<string, number> = {},
  ): Promise<BpfObject> {
    for (let retried = false; ; retried = true) {
      try {
        const o = await addon().bpfObjectOpen(path, pinRoot, mapFlags, mapSizes);
        drainLibbpfLog(log);
        return new BpfObject(o.id, path, new Map(o.programs.map((p) => [p.name, p])), new Map(o.maps.map((m) => [m.name, new BpfMap(m)])));
      } catch (e) {
        const mismatched = drainLibbpfLog(log).flatMap((l) => /couldn't reuse pinned map at '([^']+)': parameter mismatch/.exec(l)?.[1] ?? []);
        if (retried || !mismatched.length || !mismatched.every((p) => replaceable.includes(basename(p)))) throw e;
        for (const p of mismatched) rmSync(p, { force: true });
        log?.warn({ pins: mismatched }, 'replaced pinned counter maps of an older layout (their counts restart)');
      }
    }
  }

  program(name: string): BpfProgramDesc {
    const p = this.programs.get(name);
    if (!p) throw new Error(`${this.path} has no program ${name}`);
    return p;
  }

  /** Pins a program, so that another process (the CNI plugin) can attach it. */
  pinProgram(name: string, path: string): void {
    addon().bpfObjPin(this.program(name).fd, path);
  }

  /** The id of the program pinned at path, undefined when nothing (usable) is pinned there. */
  static pinnedProgramId(path: string): number | undefined {
    return pinnedObjectId(path, (fd) => addon().bpfProgInfo(fd).id);
  }

  map(name: string): BpfMap {
    const m = this.maps.get(name);
    if (!m) throw new Error(`${this.path} has no map ${name}`);
    return m;
  }

  close(): void {
    addon().bpfObjectClose(this.id);
  }
}

export type TcDirection = 'ingress' | 'egress';

/** The tc filter we own on every hook (flannel.1 both ways, the underlay, pod veths): one handle and
 * priority, so a restarted agent or the CNI plugin replaces ours in place and never touches others'. */
export const TC_HANDLE = 0xf1a;
export const TC_PRIO = 1;

export const tcAttach = (ifindex: number, dir: TcDirection, progFd: number, handle: number, priority: number) => addon().tcAttach(ifindex, dir, progFd, handle, priority);
export const tcDetach = (ifindex: number, dir: TcDirection, handle: number, priority: number) => addon().tcDetach(ifindex, dir, handle, priority);
export const tcQuery = (ifindex: number, dir: TcDirection, handle: number, priority: number) => addon().tcQuery(ifindex, dir, handle, priority);
/** Attaches only over an empty hook (replaceId 0) or over program replaceId: never over someone else's. */
export const xdpAttach = (ifindex: number, progFd: number, mode: 'native' | 'generic', replaceId = 0) => addon().xdpAttach(ifindex, progFd, mode, replaceId);
export const xdpDetach = (ifindex: number, mode: 'native' | 'generic') => addon().xdpDetach(ifindex, mode);
export const xdpQuery = (ifindex: number) => addon().xdpQuery(ifindex);
export const progInfo = (fd: number) => addon().bpfProgInfo(fd);
export const progInfoById = (id: number) => addon().bpfProgInfoById(id);
/** ctx: tc programs only (an XDP program's context is another struct); the mark comes back as the program left it */
export const testRun = (progFd: number, data: Buffer, repeat = 1, ctx?: TestRunCtx) => addon().bpfProgTestRun(progFd, data, repeat, ctx);
