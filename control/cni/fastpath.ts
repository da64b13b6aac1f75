// The CNI plugin's part of the pod fast path: after the bridge plugin made the pod, register it (the
// program on its host-side veth, its entry in fl_local_pods); on DEL, remove the entry before the
// veth goes. Loaded only when the agent runs in BPF mode, so the plugin starts fast otherwise.
import { existsSync, readFileSync, rmSync, writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { getLink } from '../kernel/netlink.js';
import { podMapPin, registerPod, unregisterPod } from '../datapath/local-pods.js';
import { podFromResult } from './delegate.js';

/** What DEL needs. Files written before dual stack have `ip` (one IPv4 address) instead of `ips`. */
interface Saved {
  ips?: string[];
  ip?: string;
  ifindex: number;
}

/** Returns what happened, for the plugin's stderr; never throws (the pod works without the fast path). */
export async function registerFromResult(pinRoot: string, bridge: string, resultJson: string, savePath: string): Promise<string> {
  try {
    const r = podFromResult(JSON.parse(resultJson), bridge);
    if (typeof r === 'string') return `pod fast path not used: ${r}`;
    const veth = await getLink(r.hostVeth);
    if (!veth) return `pod fast path not used: host veth ${r.hostVeth} not found`;
    const pod = { ifindex: veth.index, podMAC: r.podMAC, gwMAC: r.gwMAC, hostMAC: veth.mac };
    // an agent that predates IPv6 pods has no fl_local_pods6: those pods keep the stack's path
    const ips = r.ips.filter((ip) => existsSync(join(pinRoot, podMapPin(ip))));
    const skipped = r.ips.filter((ip) => !ips.includes(ip));
    if (!ips.length) return `pod fast path not used: the agent has no map for ${skipped.join(', ')}`;
    // saved first: DEL can always undo, also if we die right after registering
    writeFileSync(`${savePath}.tmp`, JSON.stringify({ ips, ifindex: pod.ifindex } satisfies Saved), { mode: 0o600 });
    renameSync(`${savePath}.tmp`, savePath);
    const on = registerPod(pinRoot, pod, ips);
    return `pod fast path: registered ${ips.join(', ')} on ${r.hostVeth} (ifindex ${pod.ifindex})${on ? '' : '; the fast path is off on this node for now'}${skipped.length ? `; not ${skipped.join(', ')} (the agent has no map for them)` : ''}`;
  } catch (e) {
    rmSync(savePath, { force: true });
    return `pod fast path not used: ${(e as Error).message}`;
  }
}

export function unregisterSaved(pinRoot: string, savePath: string): string {
  let s: Saved;
  try {
    s = JSON.parse(readFileSync(savePath, 'utf8')) as Saved;
  } catch {
    return '';
  }
  const ips = s.ips ?? (s.ip ? [s.ip] : []);
  try {
    const removed = ips.filter((ip) => unregisterPod(pinRoot, ip, s.ifindex));
    rmSync(savePath, { force: true });
    return removed.length ? `pod fast path: removed ${removed.join(', ')}` : '';
  } catch (e) {
    // the agent drops entries whose veth is gone, so nothing stays stale for long
    return `pod fast path: could not remove ${ips.join(', ')}: ${(e as Error).message}`;
  }
}
