// Every iptables rule this agent writes lives here: flannel's ip-masq chain (FLANNEL-POSTRTG in nat
// POSTROUTING) and its forward chain (FLANNEL-FWD in filter FORWARD), with flannel's exact rule text so
// a node can switch between flannel and this agent without a diff in iptables-save.
//
// Unlike flannel, which clears its chains at start, a chain is only rewritten when its content differs,
// and then in one iptables-restore --noflush transaction: a restart never opens a window without NAT,
// and established flows keep their conntrack NAT mappings either way.
import { execFile } from 'node:child_process';
import { formatCidr, type Subnet } from '../subnet/ip4.js';
import { formatCidr6, type Subnet6 } from '../subnet/ip6.js';

export type Table = 'nat' | 'filter';

/** One rule, with its spec exactly as iptables-save prints it (so comparing is string equality). */
export interface Rule {
  table: Table;
  chain: string;
  spec: string;
  /** 6: an ip6tables rule (flannel's IPv6 rules: the same chains and text with IPv6 networks) */
  family?: 6;
}

export const MASQ_CHAIN = 'FLANNEL-POSTRTG';
export const FWD_CHAIN = 'FLANNEL-FWD';
/** kube-proxy marks packets it will masquerade itself; flannel leaves them alone (double NAT bug) */
export const KUBE_PROXY_MARK = '0x4000/0x4000';
const OWNED: Record<string, Table> = { [MASQ_CHAIN]: 'nat', [FWD_CHAIN]: 'filter' };

/** A rule of FLANNEL-POSTRTG: match, flannel's comment, target, in iptables-save's argument order. */
const masq = (match: string, target: string): Rule => ({ table: 'nat', chain: MASQ_CHAIN, spec: `${match ? match + ' ' : ''}-m comment --comment "flanneld masq" -j ${target}` });

/** flannel's masquerade rules for its network and this node's subnet, in flannel's order. */
export function masqRules(network: Subnet, subnet: Subnet, randomFully: boolean): Rule[] {
  return masqRulesFor(formatCidr(network), formatCidr(subnet), '224.0.0.0/4', randomFully);
}

/** flannel's masqIP6Rules: the same rules for the IPv6 network, multicast being ff00::/8. */
export function masqRules6(network: Subnet6, subnet: Subnet6, randomFully: boolean): Rule[] {
  return masqRulesFor(formatCidr6(network), formatCidr6(subnet), 'ff00::/8', randomFully).map((r) => ({ ...r, family: 6 as const }));
}

function masqRulesFor(net: string, pod: string, multicast: string, randomFully: boolean): Rule[] {
  const masquerade = randomFully ? 'MASQUERADE --random-fully' : 'MASQUERADE';
  return [
    { table: 'nat', chain: 'POSTROUTING', spec: `-m comment --comment "flanneld masq" -j ${MASQ_CHAIN}` },
    masq(`-m mark --mark ${KUBE_PROXY_MARK}`, 'RETURN'),
    // pod-to-pod inside the overlay keeps its source address
    masq(`-s ${pod} -d ${net}`, 'RETURN'),
    masq(`-s ${net} -d ${pod}`, 'RETURN'),
    // external traffic arriving for a pod of this node keeps its source too
    masq(`! -s ${net} -d ${pod}`, 'RETURN'),
    // pods leaving the overlay (but not to multicast) take the node's address
    masq(`-s ${net} ! -d ${multicast}`, masquerade),
    // and the host reaching into the overlay takes an address the overlay can answer
    masq(`! -s ${net} -d ${net}`, masquerade),
  ];
}

/** flannel's --iptables-forward-rules: accept forwarding from and to the network. */
export function forwardRules(network: Subnet): Rule[] {
  return forwardRulesFor(formatCidr(network));
}

/** The same for the IPv6 network, in ip6tables. */
export function forwardRules6(network: Subnet6): Rule[] {
  return forwardRulesFor(formatCidr6(network)).map((r) => ({ ...r, family: 6 as const }));
}

function forwardRulesFor(net: string): Rule[] {
  const fwd = (spec: string): Rule => ({ table: 'filter', chain: FWD_CHAIN, spec: `${spec} -m comment --comment "flanneld forward" -j ACCEPT` });
  return [{ table: 'filter', chain: 'FORWARD', spec: `-m comment --comment "flanneld forward" -j ${FWD_CHAIN}` }, fwd(`-s ${net}`), fwd(`-d ${net}`)];
}

/** The rules as iptables-save lines, grouped by table (what the golden file holds). */
export function render(rules: Rule[]): string {
  const out: string[] = [];
  for (const table of ['filter', 'nat'] as const) {
    const rs = rules.filter((r) => r.table === table);
    if (!rs.length) continue;
    out.push(`*${table}`);
    for (const c of new Set(rs.map((r) => r.chain))) if (OWNED[c]) out.push(`:${c} - [0:0]`);
    for (const r of rs) out.push(`-A ${r.chain} ${r.spec}`);
    out.push('COMMIT');
  }
  return out.join('\n') + '\n';
}

function run(cmd: string, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException).code;
        reject(new Error(code === 'ENOENT' ? `${cmd} not found: install iptables` : `${cmd} ${args.join(' ')}: ${stderr.trim() || err.message}`));
      } else resolve(stdout);
    });
    if (input !== undefined) child.stdin!.end(input);
  });
}

/** --random-fully needs iptables 1.6.2 or later (what flannel checks too). */
export async function supportsRandomFully(): Promise<boolean> {
  const v = /v(\d+)\.(\d+)\.(\d+)/.exec(await run('iptables', ['--version']).catch(() => ''));
  if (!v) return false;
  const [maj, min, pat] = [Number(v[1]), Number(v[2]), Number(v[3])];
  return maj > 1 || (maj === 1 && (min > 6 || (min === 6 && pat >= 2)));
}

interface Saved {
  chains: Set<string>;
  /** chain -> rule specs in order */
  rules: Map<string, string[]>;
}

function parseSave(text: string): Saved {
  const chains = new Set<string>();
  const rules = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    if (line.startsWith(':')) chains.add(line.slice(1).split(' ')[0]!);
    const m = /^-A (\S+) (.*)$/.exec(line);
    if (m) rules.set(m[1]!, [...(rules.get(m[1]!) ?? []), m[2]!]);
  }
  return { chains, rules };
}

/**
 * Makes the kernel hold these rules: a chain of ours whose content differs is rewritten whole, a
 * missing jump is appended; nothing is touched when all is in place. Returns what was changed.
 */
export async function ensureRules(rules: Rule[]): Promise<string[]> {
  const changed: string[] = [];
  for (const family of [4, 6] as const) {
    const mine = rules.filter((r) => (r.family ?? 4) === family);
    if (mine.length) changed.push(...(await ensureFamily(mine, family)));
  }
  return changed;
}

const bin = (family: 4 | 6, tool: 'save' | 'restore') => `${family === 6 ? 'ip6tables' : 'iptables'}-${tool}`;

async function ensureFamily(rules: Rule[], family: 4 | 6): Promise<string[]> {
  const changed: string[] = [];
  const v = family === 6 ? 'ip6tables ' : '';
  for (const table of ['filter', 'nat'] as const) {
    const want = rules.filter((r) => r.table === table);
    if (!want.length) continue;
    const have = parseSave(await run(bin(family, 'save'), ['-t', table]));
    // our chains first: a jump may only name a chain that exists
    const chains = [...new Set(want.map((r) => r.chain))].sort((a, b) => Number(!OWNED[a]) - Number(!OWNED[b]));
    const lines: string[] = [];
    for (const chain of chains) {
      const specs = want.filter((r) => r.chain === chain).map((r) => r.spec);
      const cur = have.rules.get(chain) ?? [];
      if (OWNED[chain]) {
        if (have.chains.has(chain) && cur.join('\n') === specs.join('\n')) continue;
        // declaring a chain under --noflush creates it or empties it, inside this one transaction
        lines.push(`:${chain} - [0:0]`, ...specs.map((s) => `-A ${chain} ${s}`));
        changed.push(`${v}${table} ${chain}`);
      } else {
        for (const s of specs) {
          if (cur.includes(s)) continue;
          lines.push(`-A ${chain} ${s}`);
          changed.push(`${v}${table} ${chain} jump`);
        }
      }
    }
    if (lines.length) await run(bin(family, 'restore'), ['-w', '5', '--noflush'], `*${table}\n${lines.join('\n')}\nCOMMIT\n`);
  }
  return changed;
}

/** Removes our jumps and chains (the explicit cleanup; the agent itself never does this). */
export async function removeRules(): Promise<string[]> {
  const removed: string[] = [];
  for (const family of [4, 6] as const) {
    // no ip6tables, or IPv6 off in this kernel: there cannot be IPv6 rules of ours either
    if (
      family === 6 &&
      !(await run(bin(6, 'save'), ['-t', 'filter']).then(
        () => true,
        () => false,
      ))
    )
      continue;
    removed.push(...(await removeFamily(family)));
  }
  return removed;
}

async function removeFamily(family: 4 | 6): Promise<string[]> {
  const removed: string[] = [];
  for (const [chain, table] of Object.entries(OWNED)) {
    const have = parseSave(await run(bin(family, 'save'), ['-t', table]));
    if (!have.chains.has(chain)) continue;
    const lines: string[] = [];
    for (const [from, specs] of have.rules) for (const s of specs) if (from !== chain && s.endsWith(`-j ${chain}`)) lines.push(`-D ${from} ${s}`);
    lines.push(`:${chain} - [0:0]`, `-X ${chain}`);
    await run(bin(family, 'restore'), ['-w', '5', '--noflush'], `*${table}\n${lines.join('\n')}\nCOMMIT\n`);
    removed.push(`${family === 6 ? 'ip6tables ' : ''}${table} ${chain}`);
  }
  return removed;
}
