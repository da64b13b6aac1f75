// Where the underlay guard (not in flannel) runs, and making sure it runs nowhere else. Its programs
// are known by name on any hook: a guard left by an earlier run (another --iface, --underlay-hook, or
// BPF mode before a switch to classic) keeps a members map nobody fills any more, and drops every node
// that joins later as spoofed. Only ours are ever touched: another program on the same hook is not.
import { listLinks } from '../../kernel/netlink.js';
import { PROGRAM } from '../../datapath/objects.js';
import { TC_HANDLE, TC_PRIO, progInfoById, tcDetach, tcQuery, xdpDetach, xdpQuery } from '../../kernel/bpf.js';

export const GUARD_PROGRAMS = { tc: PROGRAM.guardTc, xdp: PROGRAM.guardXdp } as const;
/** tc programs that are our guard: the plain one, and bypass mode's (the guard, then decapsulation) */
const TC_GUARDS = new Set<string | undefined>([GUARD_PROGRAMS.tc, PROGRAM.guardBypass]);

export interface GuardAttachment {
  ifindex: number;
  iface: string;
  hook: 'tc' | 'xdp';
  /** XDP only */
  mode?: 'native' | 'generic';
  progId: number;
}

export const describeGuard = (a: Pick<GuardAttachment, 'hook' | 'iface' | 'mode'>) => (a.hook === 'tc' ? `tc ingress on ${a.iface}` : `xdp ${a.mode} on ${a.iface}`);

const nameOf = (id: number) => {
  try {
    return progInfoById(id)?.name;
  } catch {
    return undefined;
  }
};

/** XDP attach modes as the kernel reports them (bpf_xdp_query): 1 driver, 2 generic (skb), 3 offload */
export const xdpModeOf = (attachMode: number) => (attachMode === 2 ? 'generic' : 'native');

/** Every attachment of our guard in this network namespace. */
export async function findGuards(): Promise<GuardAttachment[]> {
  const out: GuardAttachment[] = [];
  for (const l of await listLinks()) {
    const x = xdpQuery(l.index);
    if (x.progId && nameOf(x.progId) === GUARD_PROGRAMS.xdp) out.push({ ifindex: l.index, iface: l.name, hook: 'xdp', mode: xdpModeOf(x.attachMode), progId: x.progId });
    const t = tcQuery(l.index, 'ingress', TC_HANDLE, TC_PRIO);
    if (t && TC_GUARDS.has(nameOf(t))) out.push({ ifindex: l.index, iface: l.name, hook: 'tc', progId: t });
  }
  return out;
}

/** Detaches our guard from every hook but `keep`; says what it removed. */
export async function removeGuards(keep?: { ifindex: number; hook: 'tc' | 'xdp' }): Promise<string[]> {
  const removed: string[] = [];
  for (const g of await findGuards()) {
    if (keep && g.ifindex === keep.ifindex && g.hook === keep.hook) continue;
    if (g.hook === 'tc') tcDetach(g.ifindex, 'ingress', TC_HANDLE, TC_PRIO);
    else xdpDetach(g.ifindex, g.mode!);
    removed.push(describeGuard(g));
  }
  return removed;
}
