// The CNI plugin's part of the pod fast path: after the bridge plugin made the pod, register it (the
// program on its host-side veth, its entry in fl_local_pods); on DEL, remove the entry before the
// veth goes. Loaded only when the agent runs in BPF mode, so the plugin starts fast otherwise.
import { readFileSync, rmSync, writeFileSync, renameSync } from 'node:fs';
import { getLink } from '../kernel/netlink.js';
import { registerPod, unregisterPod } from '../datapath/local-pods.js';
import { podFromResult } from './delegate.js';

interface Saved {
  ip: string;
  ifindex: number;
}

/** Returns what happened, for the plugin's stderr; never throws (the pod works without the fast path). */
export async function registerFromResult(pinRoot: string, bridge: string, resultJson: string, savePath: string): Promise<string> {
  try {
    const r = podFromResult(JSON.parse(resultJson), bridge);
    if (typeof r === 'string') return `pod fast path not used: ${r}`;
    const veth = await getLink(r.hostVeth);
    if (!veth) return `pod fast path not used: host veth ${r.hostVeth} not found`;
    const pod = { ip: r.ip, ifindex: veth.index, podMAC: r.podMAC, gwMAC: r.gwMAC, hostMAC: veth.mac };
    // saved first: DEL can always undo, also if we die right after registering
    writeFileSync(`${savePath}.tmp`, JSON.stringify({ ip: pod.ip, ifindex: pod.ifindex } satisfies Saved), { mode: 0o600 });
    renameSync(`${savePath}.tmp`, savePath);
    const on = registerPod(pinRoot, pod);
    return `pod fast path: registered ${pod.ip} on ${r.hostVeth} (ifindex ${pod.ifindex})${on ? '' : '; the fast path is off on this node for now'}`;
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
  try {
    const removed = unregisterPod(pinRoot, s.ip, s.ifindex);
    rmSync(savePath, { force: true });
    return removed ? `pod fast path: removed ${s.ip}` : '';
  } catch (e) {
    // the agent drops entries whose veth is gone, so nothing stays stale for long
    return `pod fast path: could not remove ${s.ip}: ${(e as Error).message}`;
  }
}
