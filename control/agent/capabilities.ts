// What the agent needs from the kernel's capability model, checked before it touches anything, so a
// container started without them fails at once and names what is missing (instead of an EPERM from
// some netlink call halfway through programming).
import { readFileSync } from 'node:fs';

const CAPS = { CAP_NET_ADMIN: 12, CAP_NET_RAW: 13, CAP_SYS_ADMIN: 21, CAP_BPF: 39 } as const;
export type Capability = keyof typeof CAPS;

/** The effective set of this process (CapEff in /proc/self/status). */
export function effectiveCapabilities(status = readFileSync('/proc/self/status', 'utf8')): Set<Capability> {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  const bits = m ? BigInt(`0x${m[1]}`) : 0n;
  return new Set((Object.keys(CAPS) as Capability[]).filter((c) => (bits >> BigInt(CAPS[c])) & 1n));
}

export interface Needs {
  backend: string;
  /** vxlan in BPF mode */
  bpf: boolean;
}

/**
 * One line per missing capability group, empty when all is there. Every backend programs links,
 * addresses, routes and iptables (CAP_NET_ADMIN); BPF mode loads programs and maps (CAP_BPF, or
 * CAP_SYS_ADMIN on kernels before 5.8) and may mount a bpffs (CAP_SYS_ADMIN).
 */
export function missingCapabilities(n: Needs, have = effectiveCapabilities()): string[] {
  const out: string[] = [];
  if (!have.has('CAP_NET_ADMIN')) out.push('CAP_NET_ADMIN (links, addresses, routes, neighbours, tc and iptables)');
  if (n.backend === 'vxlan' && n.bpf && !have.has('CAP_BPF') && !have.has('CAP_SYS_ADMIN')) out.push('CAP_BPF or CAP_SYS_ADMIN (loading the BPF programs and maps; or run with --no-bpf)');
  return out;
}

export class MissingCapabilityError extends Error {
  constructor(missing: string[]) {
    super(`flanneld lacks capabilities it needs: ${missing.join('; ')}. Run it as root or grant them (e.g. securityContext.capabilities.add)`);
    this.name = 'MissingCapabilityError';
  }
}
