// IPv6 addresses as 128-bit bigints and subnets as {ip, len}, formatted as Go's net.IP.String() does
// (RFC 5952: lower case, the longest run of two or more zero groups as "::", the first on a tie), so
// text we write matches flannel's byte for byte.

export interface Subnet6 {
  /** network address, host bits zero */
  ip: bigint;
  len: number;
}

const HEX = /^[0-9a-fA-F]{1,4}$/;
const V4_TAIL = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/** Groups of one side of "::", an embedded IPv4 tail counting as two; undefined when malformed. */
function groups(part: string, last: boolean): number[] | undefined {
  if (part === '') return [];
  const out: number[] = [];
  const fields = part.split(':');
  for (const [i, f] of fields.entries()) {
    const v4 = last && i === fields.length - 1 ? V4_TAIL.exec(f) : null;
    if (v4) {
      const o = v4.slice(1).map(Number);
      if (o.some((x, j) => x > 255 || (v4[j + 1]!.length > 1 && v4[j + 1]!.startsWith('0')))) return undefined;
      out.push((o[0]! << 8) | o[1]!, (o[2]! << 8) | o[3]!);
    } else if (HEX.test(f)) out.push(parseInt(f, 16));
    else return undefined;
  }
  return out;
}

export function parseIp6(s: string): bigint | undefined {
  if (!s.includes(':') || s.length > 45) return undefined;
  const halves = s.split('::');
  if (halves.length > 2) return undefined;
  let g: number[];
  if (halves.length === 2) {
    const head = groups(halves[0]!, false),
      tail = groups(halves[1]!, true);
    if (!head || !tail || head.length + tail.length > 7) return undefined;
    g = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  } else {
    const all = groups(s, true);
    if (!all || all.length !== 8) return undefined;
    g = all;
  }
  return g.reduce((v, x) => (v << 16n) | BigInt(x), 0n);
}

export function formatIp6(v: bigint): string {
  const g = Array.from({ length: 8 }, (_, i) => Number((v >> BigInt(112 - 16 * i)) & 0xffffn));
  // IPv4-mapped addresses print with the IPv4 tail, as Go (and RFC 5952 section 5) do
  if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) return `::ffff:${g[6]! >> 8}.${g[6]! & 255}.${g[7]! >> 8}.${g[7]! & 255}`;
  let best = -1,
    bestLen = 1;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

const mask6 = (len: number): bigint => (len === 0 ? 0n : ((1n << BigInt(len)) - 1n) << BigInt(128 - len));

/** "fd00:10:244:1::5/64" -> the network {fd00:10:244:1::, 64}, as Go's net.ParseCIDR gives it. */
export function parseCidr6(s: string): Subnet6 | undefined {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(s);
  if (!m) return undefined;
  const ip = parseIp6(m[1]!);
  const len = Number(m[2]);
  if (ip === undefined || len > 128 || (m[2]!.length > 1 && m[2]!.startsWith('0'))) return undefined;
  return { ip: ip & mask6(len), len };
}

export const formatCidr6 = (s: Subnet6): string => `${formatIp6(s.ip)}/${s.len}`;

export { mask6 };

export const contains6 = (net: Subnet6, ip: bigint): boolean => (ip & mask6(net.len)) === net.ip;

export function overlaps6(a: Subnet6, b: Subnet6): boolean {
  const m = mask6(Math.min(a.len, b.len));
  return (a.ip & m) === (b.ip & m);
}

export const sameSubnet6 = (a: Subnet6, b: Subnet6): boolean => a.ip === b.ip && a.len === b.len;

export const size6 = (len: number): bigint => 1n << BigInt(128 - len);

/**
 * Why an IPv6 address cannot be a node's public IPv6 (undefined when it can): a tunnel aimed at the
 * unspecified or loopback address, a multicast group, a link-local address (it needs a zone no lease
 * carries) or an IPv4-mapped address (that node is reached over IPv4) goes nowhere or everywhere.
 */
export function notAHostAddress6(v: bigint): string | undefined {
  if (v === 0n) return 'is the unspecified address';
  if (v === 1n) return 'is the loopback address';
  if (v >> 120n === 0xffn) return 'is a multicast address';
  if (v >> 118n === 0x3fan) return 'is a link-local address';
  if (v >> 32n === 0xffffn) return 'is an IPv4-mapped address';
  return undefined;
}
