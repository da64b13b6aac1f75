// flannel.<VNI>: created as flannel creates it, reused when compatible, recreated when not (a stale
// device with another VNI, port or local address would silently blackhole traffic).
import { randomBytes } from 'node:crypto';
import type { Logger } from '../../log.js';
import { IFF_UP, exec, getLink, type Link, type VxlanSpec } from '../../kernel/netlink.js';

export interface VxlanDeviceSpec {
  name: string;
  vni: number;
  local: string;
  link: number;
  port: number;
  learning: boolean;
  external: boolean;
  mtu: number;
  /** keep this MAC when (re)creating: peers' FDB and map entries name it */
  mac?: string;
}

function compatible(l: Link, s: VxlanDeviceSpec): string | undefined {
  if (l.kind !== 'vxlan' || !l.vxlan) return `it is a ${l.kind || 'non-vxlan'} device`;
  const v = l.vxlan;
  if (v.external !== s.external) return s.external ? 'it is not in external mode' : 'it is in external mode';
  if (!s.external && v.vni !== s.vni) return `its VNI is ${v.vni}, not ${s.vni}`;
  if ((v.local ?? '') !== s.local) return `its local address is ${v.local}, not ${s.local}`;
  if (v.link !== s.link) return `its underlay device is #${v.link}, not #${s.link}`;
  if (v.port !== s.port) return `its port is ${v.port}, not ${s.port}`;
  if (v.learning !== s.learning) return `its learning flag is ${v.learning}`;
  return undefined;
}

/**
 * A random locally administered unicast MAC for a new VTEP. Left to the kernel, a new device's MAC is
 * random (addr_assign_type NET_ADDR_RANDOM), and systemd-udevd's default MACAddressPolicy=persistent
 * (Debian 12) replaces it moments later: after the agent has read it and published it in its lease,
 * so every peer sends to a MAC flannel.1 no longer has (seen booting the Vagrant lab: no overlay
 * ping). udev leaves an address given at creation alone (NET_ADDR_SET), which is why flannel sets the
 * VTEP MAC itself too.
 */
export function newVtepMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0]! & 0xfe) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

export async function ensureVxlanDevice(s: VxlanDeviceSpec, log: Logger): Promise<Link> {
  const existing = await getLink(s.name);
  if (existing) {
    const why = compatible(existing, s);
    if (!why) {
      if (existing.mtu !== s.mtu) await exec({ type: 'link', action: 'set', index: existing.index, mtu: s.mtu });
      await exec({ type: 'link', action: 'set', index: existing.index, up: true });
      log.info({ device: s.name, index: existing.index }, 'reusing the existing VXLAN device');
      return (await getLink(s.name))!;
    }
    log.warn({ device: s.name, reason: why }, 'existing VXLAN device is incompatible, recreating it');
    await exec({ type: 'link', action: 'delete', index: existing.index });
  }
  // an external device takes the remote (and may take the source) from each packet's tunnel key
  const vxlan: VxlanSpec = { port: s.port, learning: s.learning, external: s.external };
  if (s.local) vxlan.local = s.local;
  if (s.link) vxlan.link = s.link;
  if (!s.external) vxlan.vni = s.vni;
  await exec({ type: 'link', action: 'add', name: s.name, kind: 'vxlan', mtu: s.mtu, vxlan, mac: s.mac ?? newVtepMac() });
  const link = await getLink(s.name);
  if (!link) throw new Error(`created ${s.name} but cannot find it`);
  await exec({ type: 'link', action: 'set', index: link.index, up: true });
  log.info({ device: s.name, index: link.index, mac: link.mac, mtu: link.mtu }, 'created the VXLAN device');
  return link;
}

/**
 * Between reconciles someone may delete flannel.<VNI> or set it down (which also flushes its routes).
 * Returns the device to use when it had to be recreated (same spec, same MAC, so no peer needs to
 * learn anything) or set up again; the caller then restores the address and routes. undefined: intact.
 */
export async function repairVxlanDevice(dev: Link, s: VxlanDeviceSpec, log: Logger): Promise<Link | undefined> {
  const cur = await getLink(s.name);
  if (cur && cur.index === dev.index) {
    if (cur.flags & IFF_UP) return undefined;
    log.warn({ device: s.name }, 'the VXLAN device was set down; setting it up and restoring its address and routes');
    await exec({ type: 'link', action: 'set', index: cur.index, up: true });
    return (await getLink(s.name)) ?? cur;
  }
  log.warn({ device: s.name, mac: dev.mac }, 'the VXLAN device disappeared (deleted by hand?); recreating it with the same MAC');
  return ensureVxlanDevice({ ...s, mac: dev.mac }, log);
}
