// The thin typed kernel layer: every rtnetlink read and write the backends make goes through here.
// Writes are batched: one call programs thousands of entries in a few syscalls, and reports one
// result per operation so a caller can roll back exactly what succeeded.
import { addon, type NativeError } from './addon.js';

export const AF_INET = 2;
export const AF_INET6 = 10;
export const AF_BRIDGE = 7;
export const NUD_PERMANENT = 0x80;
export const NTF_SELF = 0x02;
export const RTNH_F_ONLINK = 0x04;
export const IFF_UP = 0x1;
export const RT_TABLE_MAIN = 254;

export interface VxlanInfo {
  vni?: number;
  local?: string;
  link: number;
  port: number;
  learning: boolean;
  external: boolean;
}

export interface Link {
  index: number;
  name: string;
  kind: string;
  mtu: number;
  mac: string;
  flags: number;
  master: number;
  parent: number;
  operstate: number;
  vxlan?: VxlanInfo;
}

export interface Addr {
  index: number;
  family: number;
  address: string;
  prefixLen: number;
  scope: number;
}

export interface Route {
  family: number;
  dst: string;
  dstLen: number;
  gateway?: string;
  dev: number;
  table: number;
  protocol: number;
  scope: number;
  type: number;
  flags: number;
  priority: number;
  /** the source address the kernel picks (RTA_PREFSRC), when the route has one or from a route get */
  prefsrc?: string;
}

export const RTN_BLACKHOLE = 6;

export interface Neigh {
  family: number;
  dev: number;
  dst?: string;
  lladdr?: string;
  state: number;
  flags: number;
  master: number;
}

export type Action = 'add' | 'replace' | 'delete';

export type RouteOp = {
  type: 'route';
  action: Action;
  dst: string;
  dstLen: number;
  gateway?: string;
  dev?: number;
  onlink?: boolean;
  table?: number;
  priority?: number;
  /** blackhole: `ip route add blackhole dst` (no dev, no gateway) */
  kind?: 'unicast' | 'blackhole';
  /** `mtu N`: the route's path MTU */
  mtu?: number;
};
export type NeighOp = { type: 'neigh'; action: Action; dev: number; dst: string; lladdr?: string };
export type FdbOp = { type: 'fdb'; action: Action; dev: number; lladdr: string; dst?: string };
export type AddrOp = { type: 'addr'; action: Action; dev: number; address: string; prefixLen: number };
export type VxlanSpec = { vni?: number; local?: string; link?: number; port?: number; learning?: boolean; external?: boolean; ttl?: number };
export type LinkOp =
  | { type: 'link'; action: 'add'; name: string; kind: 'vxlan' | 'bridge'; mtu?: number; mac?: string; vxlan?: VxlanSpec }
  | { type: 'link'; action: 'set'; index: number; up?: boolean; noarp?: boolean; mtu?: number; mac?: string }
  | { type: 'link'; action: 'delete'; index: number };

export type NetlinkOp = RouteOp | NeighOp | FdbOp | AddrOp | LinkOp;

/** An error from the kernel for one operation: errno, its code (EEXIST...) and what was attempted. */
export type NetlinkError = NativeError;

export function isNetlinkError(e: unknown, code?: string): e is NetlinkError {
  return e instanceof Error && typeof (e as NetlinkError).errno === 'number' && (code === undefined || (e as NetlinkError).code === code);
}

/** Runs all operations in order; one result per operation (null = done). Never throws for a single op. */
export async function execBatch(ops: NetlinkOp[]): Promise<(NetlinkError | null)[]> {
  if (ops.length === 0) return [];
  return addon().netlinkExec(ops);
}

/** Runs the operations and throws the first failure. */
export async function exec(...ops: NetlinkOp[]): Promise<void> {
  const res = await execBatch(ops);
  const err = res.find((r) => r !== null);
  if (err) throw err;
}

export async function listLinks(): Promise<Link[]> {
  return (await addon().netlinkLinks()) as Link[];
}

export async function getLink(name: string): Promise<Link | undefined> {
  return (await listLinks()).find((l) => l.name === name);
}

export async function listAddrs(family: number = AF_INET, dev?: number): Promise<Addr[]> {
  const all = (await addon().netlinkAddrs(family)) as Addr[];
  return dev === undefined ? all : all.filter((a) => a.index === dev);
}

export async function listRoutes(family: number = AF_INET, filter: { dev?: number; table?: number } = {}): Promise<Route[]> {
  const table = filter.table ?? RT_TABLE_MAIN;
  return ((await addon().netlinkRoutes(family)) as Route[]).filter((r) => r.table === table && (filter.dev === undefined || r.dev === filter.dev));
}

/** `ip route get dst`: the route the kernel uses for dst now, with the source address it picks. */
export async function routeGet(dst: string): Promise<Route> {
  return (await addon().netlinkRouteGet(dst)) as Route;
}

export async function listNeighs(dev?: number, family: number = AF_INET): Promise<Neigh[]> {
  const all = (await addon().netlinkNeighs(family)) as Neigh[];
  return dev === undefined ? all : all.filter((n) => n.dev === dev);
}

/** The FDB entries of one device (`bridge fdb show dev X`). */
export async function listFdb(dev: number): Promise<Neigh[]> {
  return (await addon().netlinkNeighs(AF_BRIDGE)).filter((n) => (n as Neigh).dev === dev) as Neigh[];
}

export const linkUp = (index: number) => exec({ type: 'link', action: 'set', index, up: true });
