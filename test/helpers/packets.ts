// Crafting packets for BPF_PROG_TEST_RUN: Ethernet, IPv4 (with optional options), IPv6, UDP, VXLAN.
import { parseIp6 } from '../../control/subnet/ip6.ts';
export const mac = (s: string) => Buffer.from(s.split(':').map((x) => parseInt(x, 16)));
const ip4 = (s: string) => Buffer.from(s.split('.').map(Number));

export function eth(dst: string, src: string, type: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(14);
  mac(dst).copy(h, 0);
  mac(src).copy(h, 6);
  h.writeUInt16BE(type, 12);
  return Buffer.concat([h, payload]);
}

export function ipv4(src: string, dst: string, proto: number, payload: Buffer, o: { options?: number; fragOffset?: number } = {}): Buffer {
  const optLen = (o.options ?? 0) * 4;
  const h = Buffer.alloc(20 + optLen);
  h.writeUInt8(0x45 + (o.options ?? 0), 0);
  h.writeUInt16BE(h.length + payload.length, 2);
  h.writeUInt16BE(o.fragOffset ?? 0, 6);
  h.writeUInt8(64, 8);
  h.writeUInt8(proto, 9);
  ip4(src).copy(h, 12);
  ip4(dst).copy(h, 16);
  let sum = 0;
  for (let i = 0; i < h.length; i += 2) sum += h.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
  h.writeUInt16BE(~sum & 0xffff, 10);
  return Buffer.concat([h, payload]);
}

/** A fixed IPv6 header (no extension headers); hop limit 64. */
export function ipv6(src: string, dst: string, nextHeader: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(40);
  h.writeUInt32BE(0x60000000, 0);
  h.writeUInt16BE(payload.length, 4);
  h.writeUInt8(nextHeader, 6);
  h.writeUInt8(64, 7);
  const addr = (s: string, off: number) => {
    const v = parseIp6(s)!;
    for (let i = 0; i < 16; i++) h[off + i] = Number((v >> BigInt(120 - 8 * i)) & 0xffn);
  };
  addr(src, 8);
  addr(dst, 24);
  return Buffer.concat([h, payload]);
}

export function udp(sport: number, dport: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt16BE(sport, 0);
  h.writeUInt16BE(dport, 2);
  h.writeUInt16BE(8 + payload.length, 4);
  return Buffer.concat([h, payload]);
}

export function vxlan(vni: number, inner: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt8(0x08, 0);
  h.writeUInt32BE((vni << 8) >>> 0, 4);
  return Buffer.concat([h, inner]);
}

export const ETH_P_IP = 0x0800;
export const ETH_P_ARP = 0x0806;
export const ETH_P_IPV6 = 0x86dd;
export const IPPROTO_ICMPV6 = 58;
export const IPPROTO_ICMP = 1;
export const IPPROTO_UDP = 17;
export const icmpEcho = () => Buffer.from([8, 0, 0xf7, 0xff, 0, 0, 0, 0, ...Buffer.alloc(56)]);
