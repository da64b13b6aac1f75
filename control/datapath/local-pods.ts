// The pod fast path's registry of local pods (map fl_local_pods) and its program on each pod's veth.
// The CNI plugin registers a pod on ADD and unregisters it on DEL; the agent attaches the program to
// veths registered before it ran, detaches it when the fast path is off, and drops entries whose veth
// is gone (a pod that vanished without DEL). One module, so both sides agree on names and handles.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { addon } from '../kernel/addon.js';
import { BpfMap, TC_HANDLE, TC_PRIO, tcAttach, tcDetach, tcQuery } from '../kernel/bpf.js';
import * as L from './layout.js';
import { MAP, PROGRAM } from './objects.js';

/** Pin of fl_pod_egress, present only while the agent runs the fast path: the CNI plugin's switch. */
export const POD_PROGRAM_PIN = PROGRAM.podEgress;
export const LOCAL_PODS_PIN = MAP.localPods;
export const LOCAL_PODS6_PIN = MAP.localPods6;

/** Attaches the pinned program to the veth; false when the agent runs without the fast path. */
export function attachPodProgram(pinRoot: string, ifindex: number): boolean {
  let fd: number;
  try {
    fd = addon().bpfObjGet(join(pinRoot, POD_PROGRAM_PIN));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
  try {
    attachPodProgramFd(ifindex, fd);
    return true;
  } finally {
    addon().closeFd(fd);
  }
}

export function attachPodProgramFd(ifindex: number, progFd: number): void {
  tcAttach(ifindex, 'ingress', progFd, TC_HANDLE, TC_PRIO);
}

export function detachPodProgram(ifindex: number): void {
  tcDetach(ifindex, 'ingress', TC_HANDLE, TC_PRIO);
}

export const podProgramOn = (ifindex: number) => tcQuery(ifindex, 'ingress', TC_HANDLE, TC_PRIO);

/** The map a pod address is registered in: fl_local_pods for IPv4, fl_local_pods6 for IPv6. */
export const podMapPin = (ip: string) => (ip.includes(':') ? LOCAL_PODS6_PIN : LOCAL_PODS_PIN);

/**
 * Registers a pod under each of its addresses (a dual-stack pod has two entries, one per family's map):
 * the program on its veth (when the fast path runs), then the map entries. Pods are registered also
 * while the fast path is off, so that turning it on later covers them. A failure leaves nothing.
 * Returns whether the program went on.
 */
export function registerPod(pinRoot: string, pod: Omit<L.LocalPod, 'ip'>, ips: string[]): boolean {
  const attached = attachPodProgram(pinRoot, pod.ifindex);
  const done: string[] = [];
  try {
    for (const ip of ips) {
      const map = BpfMap.openPinned(join(pinRoot, podMapPin(ip)));
      try {
        map.update(L.podKey(ip), L.podVal(pod));
        done.push(ip);
      } finally {
        map.close();
      }
    }
  } catch (e) {
    for (const ip of done) unregisterPod(pinRoot, ip, pod.ifindex);
    try {
      if (attached) detachPodProgram(pod.ifindex);
    } catch {
      /* the veth is already gone */
    }
    throw e;
  }
  return attached;
}

/**
 * Removes a pod's entry if it still is the one registered for this veth (DEL may come late, after
 * the IP went to another pod). The program leaves with the veth, which the bridge plugin deletes.
 */
export function unregisterPod(pinRoot: string, ip: string, ifindex: number): boolean {
  const path = join(pinRoot, podMapPin(ip));
  if (!existsSync(path)) return false;
  const map = BpfMap.openPinned(path);
  try {
    const key = L.podKey(ip);
    const v = map.lookup(key);
    if (!v || L.decodePodVal(v).ifindex !== ifindex) return false;
    return map.deleteMany([key])[0] === 0;
  } finally {
    map.close();
  }
}

/** The entries of fl_local_pods or fl_local_pods6 (the key's size tells the family). */
export function listPods(map: BpfMap): L.LocalPod[] {
  // entries(), not a lookup per key: one batched call
  return map.entries().map(([k, v]) => ({ ip: L.decodePodKey(k), ...L.decodePodVal(v) }));
}

/** Takes the program off every registered veth (the agent runs without BPF now); keeps the entries. */
export function detachAllPods(pinRoot: string): number {
  const veths = new Set<number>();
  for (const pin of [LOCAL_PODS_PIN, LOCAL_PODS6_PIN]) {
    const path = join(pinRoot, pin);
    if (!existsSync(path)) continue;
    const map = BpfMap.openPinned(path);
    try {
      for (const p of listPods(map)) veths.add(p.ifindex);
    } finally {
      map.close();
    }
  }
  let n = 0;
  for (const ifindex of veths) {
    try {
      if (podProgramOn(ifindex)) {
        detachPodProgram(ifindex);
        n++;
      }
    } catch {
      /* the veth is gone */
    }
  }
  return n;
}
