// IPv4 addresses as unsigned 32-bit numbers and subnets as {ip, len}: the arithmetic of leases.

export interface Subnet {
  /** network address, host bits zero */
  ip: number;
  len: number;
}

/**
 * Dotted quad to number, by hand: it runs for every map entry of every peer (a regex and its match
 * array cost 13 ms of programming 5000 peers). "010" is refused: it is octal in some parsers.
 */
export function parseIp4(s: string): number | undefined {
  let v = 0,
    part = 0,
    digits = 0,
    dots = 0;
  for (let i = 0; i <= s.length; i++) {
    const c = i < s.length ? s.charCodeAt(i) : 46; // the end closes the last part like a dot
    if (c >= 48 && c <= 57) {
      if (digits === 1 && part === 0) return undefined; // a leading zero
      part = part * 10 + (c - 48);
      if (++digits > 3 || part > 255) return undefined;
    } else if (c === 46) {
      if (!digits) return undefined;
      v = v * 256 + part;
      part = 0;
      digits = 0;
      if (i < s.length && ++dots > 3) return undefined;
    } else return undefined;
  }
  return dots === 3 ? v : undefined;
}

/**
 * Why an address cannot be a node's public IP (undefined when it can): no tunnel can be aimed at
 * "this network" (0/8), loopback, multicast or the reserved/broadcast range; a lease claiming one
 * would send its subnet's traffic nowhere, or to every host.
 */
export function notAHostAddress(v: number): string | undefined {
  const a = v >>> 24;
  if (a === 0) return 'is in 0.0.0.0/8 ("this network")';
  if (a === 127) return 'is a loopback address';
  if (a >= 224 && a < 240) return 'is a multicast address';
  if (a >= 240) return 'is reserved or the broadcast address';
  return undefined;
}

export function formatIp4(v: number): string {
  return `${(v >>> 24) & 255}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
}

export function mask(len: number): number {
  return len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
}

export function size(len: number): number {
  return 2 ** (32 - len);
}

/** Parses "a.b.c.d/n". With strict, host bits must be zero. */
export function parseCidr(s: string, strict = false): Subnet | undefined {
  const slash = s.indexOf('/');
  if (slash < 0) return undefined;
  const ip = parseIp4(s.slice(0, slash));
  const lenStr = s.slice(slash + 1);
  // no leading zero: "10.0.0.0-08" and "10.0.0.0-8" must not be two names (two etcd keys) for one subnet
  if (ip === undefined || !/^(0|[1-9]\d?)$/.test(lenStr)) return undefined;
  const len = Number(lenStr);
  if (len > 32) return undefined;
  const net = (ip & mask(len)) >>> 0;
  if (strict && net !== ip) return undefined;
  return { ip: net, len };
}

export function formatCidr(s: Subnet): string {
  return `${formatIp4(s.ip)}/${s.len}`;
}

export function contains(net: Subnet, ip: number): boolean {
  return (ip & mask(net.len)) >>> 0 === net.ip;
}

export function overlaps(a: Subnet, b: Subnet): boolean {
  const len = Math.min(a.len, b.len);
  return (a.ip & mask(len)) >>> 0 === (b.ip & mask(len)) >>> 0;
}

export function sameSubnet(a: Subnet, b: Subnet): boolean {
  return a.ip === b.ip && a.len === b.len;
}

/** Flannel's etcd key suffix for a subnet: "10.244.3.0-24". */
export function subnetKey(s: Subnet): string {
  return `${formatIp4(s.ip)}-${s.len}`;
}

export function parseSubnetKey(k: string): Subnet | undefined {
  const dash = k.lastIndexOf('-');
  if (dash < 0) return undefined;
  return parseCidr(`${k.slice(0, dash)}/${k.slice(dash + 1)}`, true);
}
