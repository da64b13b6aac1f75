// Checks shared by the backends' health reports.
import { getLink, IFF_UP } from '../kernel/netlink.js';
import type { HealthCheck } from './types.js';

/** A device exists and is up. */
export async function deviceCheck(name: string): Promise<HealthCheck> {
  const l = await getLink(name);
  return { name: `device ${name}`, ok: !!l && (l.flags & IFF_UP) !== 0, detail: !l ? 'missing' : l.flags & IFF_UP ? `up, MTU ${l.mtu}` : 'down' };
}
