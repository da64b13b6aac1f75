// flannel's nftables mode (network config "EnableNFTables": true, flannel's pkg/trafficmngr/nftables):
// the same masquerade and forward decisions as the iptables chains, in tables of flannel's own,
// `ip flannel-ipv4` and `ip6 flannel-ipv6`, with flannel's chain names, comments and rule text, so a
// node can switch between flannel and this agent without a diff in `nft list ruleset`.
//
// flannel sends one knftables transaction per chain, once at start. Here the whole table is one
// `nft -f` transaction (declaring a chain and flushing it inside the transaction replaces its rules
// atomically: no moment without NAT), written only when the kernel's listing differs from ours, and
// checked again every --iptables-resync seconds. The agent never deletes the tables; `flannelctl
// cleanup` does.
//
// Two differences from the iptables rules are flannel's, kept for compatibility: the kube-proxy mark is
// matched as the value 0x4000 (iptables: the bit, 0x4000/0x4000), and the "external traffic to our
// pods" rule reads `ip saddr != <pod subnet> ip daddr <network> return` (iptables: `! -s <network>
// -d <pod subnet>`), which also keeps the host's own traffic into the network unmasqueraded.
import { execFile } from 'node:child_process';
import { formatCidr, type Subnet } from '../subnet/ip4.js';
import { formatCidr6, type Subnet6 } from '../subnet/ip6.js';

export const NFT_TABLE_V4 = 'flannel-ipv4';
export const NFT_TABLE_V6 = 'flannel-ipv6';

export interface NftOptions {
  /** the IPv4 half (absent on an IPv6-only network): rules in `ip flannel-ipv4` */
  network?: Subnet;
  subnet?: Subnet;
  /** the IPv6 half: the same rules with ip6 matches in `ip6 flannel-ipv6`, as flannel */
  ipv6Network?: Subnet6;
  ipv6Subnet?: Subnet6;
  masq: boolean;
  forward: boolean;
  randomFully: boolean;
}

// knftables writes the numeric priority (srcnat = 100, filter = 0); nft lists it by name
const POSTRTG = { comment: 'chain to manage traffic masquerading by flannel', hook: 'type nat hook postrouting', priority: 100, listed: 'srcnat' };
const FORWARD = { comment: 'chain to accept flannel traffic', hook: 'type filter hook forward', priority: 0, listed: 'filter' };

type Family = 'ip' | 'ip6';
const TABLE: Record<Family, string> = { ip: NFT_TABLE_V4, ip6: NFT_TABLE_V6 };

/** Each family's network and pod subnet as text, for the families this node runs. */
function families(o: NftOptions): [Family, string, string][] {
  const out: [Family, string, string][] = [];
  if (o.network && o.subnet) out.push(['ip', formatCidr(o.network), formatCidr(o.subnet)]);
  if (o.ipv6Network && o.ipv6Subnet) out.push(['ip6', formatCidr6(o.ipv6Network), formatCidr6(o.ipv6Subnet)]);
  return out;
}

/** The rules of each chain of one family's table, as flannel's addMasqRules and SetupAndEnsureForwardRules write them. */
function chains(o: NftOptions, f: Family, net: string, pod: string): ({ name: string; rules: string[] } & typeof POSTRTG)[] {
  const masquerade = o.randomFully ? 'masquerade fully-random' : 'masquerade';
  const multicast = f === 'ip' ? '224.0.0.0/4' : 'ff00::/8';
  const out = [];
  if (o.masq)
    out.push({
      name: 'postrtg',
      ...POSTRTG,
      rules: [
        'meta mark 0x4000 return',
        `${f} saddr ${pod} ${f} daddr ${net} return`,
        `${f} saddr ${net} ${f} daddr ${pod} return`,
        `${f} saddr != ${pod} ${f} daddr ${net} return`,
        `${f} saddr ${net} ${f} daddr != ${multicast} ${masquerade}`,
        `${f} saddr != ${net} ${f} daddr ${net} ${masquerade}`,
      ],
    });
  if (o.forward) out.push({ name: 'forward', ...FORWARD, rules: [`${f} saddr ${net} accept`, `${f} daddr ${net} accept`] });
  return out;
}

/** The transaction, as knftables writes flannel's for `nft -f` (what the golden file holds). */
export function nftScript(o: NftOptions): string {
  const lines = [`add table ip ${NFT_TABLE_V4} { comment "rules for ${NFT_TABLE_V4}" ; }`, `add table ip6 ${NFT_TABLE_V6} { comment "rules for ${NFT_TABLE_V6}" ; }`];
  for (const [f, net, pod] of families(o)) {
    for (const c of chains(o, f, net, pod)) {
      lines.push(`add chain ${f} ${TABLE[f]} ${c.name} { ${c.hook} priority ${c.priority} ; comment "${c.comment}" ; }`, `flush chain ${f} ${TABLE[f]} ${c.name}`);
      for (const r of c.rules) lines.push(`add rule ${f} ${TABLE[f]} ${c.name} ${r}`);
    }
  }
  return lines.join('\n') + '\n';
}

/**
 * `nft list table <family> flannel-ipv4|6` as nftables 1.0 prints the tables nftScript() makes (nft
 * pads the mark to 32 bits). Only used to tell "unchanged" without writing; if another nft version
 * prints it differently, the keeper learns the kernel's own listing after its first write.
 */
export function nftListing(o: NftOptions): string {
  const fams = families(o);
  let text = '';
  for (const f of ['ip', 'ip6'] as const) {
    const fam = fams.find(([x]) => x === f);
    const out = [`table ${f} ${TABLE[f]} {`, `\tcomment "rules for ${TABLE[f]}"`];
    for (const [i, c] of (fam ? chains(o, ...fam) : []).entries()) {
      if (i) out.push(''); // nft separates chains with an empty line
      out.push(`\tchain ${c.name} {`, `\t\tcomment "${c.comment}"`, `\t\t${c.hook} priority ${c.listed}; policy accept;`);
      for (const r of c.rules) out.push(`\t\t${r.replace('meta mark 0x4000', 'meta mark 0x00004000')}`);
      out.push('\t}');
    }
    out.push('}');
    text += out.join('\n') + '\n';
  }
  return text;
}

function nft(args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile('nft', args, { maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException).code;
        reject(new Error(code === 'ENOENT' ? 'nft not found: install nftables (EnableNFTables is set)' : `nft ${args.join(' ')}: ${stderr.trim() || err.message}`));
      } else resolve(stdout);
    });
    if (input !== undefined) child.stdin!.end(input);
  });
}

const listTables = async () => (await nft(['list', 'table', 'ip', NFT_TABLE_V4]).catch(() => '')) + (await nft(['list', 'table', 'ip6', NFT_TABLE_V6]).catch(() => ''));

/** Whether nftables can masquerade fully-random here (flannel checks it with a trial transaction). */
export async function nftSupportsRandomFully(): Promise<boolean> {
  const probe = `add table ip ${NFT_TABLE_V4}-probe\nadd chain ip ${NFT_TABLE_V4}-probe masqueradeTest { type nat hook postrouting priority srcnat ; }\nadd rule ip ${NFT_TABLE_V4}-probe masqueradeTest ip saddr != 127.0.0.1 masquerade fully-random\n`;
  return nft(['--check', '-f', '-'], probe).then(
    () => true,
    () => false,
  );
}

/** Keeps the table as nftScript(o) makes it; returns what it changed (empty: nothing). */
export class NftTables {
  /** the kernel's listing right after our last write: "unchanged" if nft prints it unlike nftListing() */
  private written?: string;

  constructor(private readonly o: NftOptions) {}

  async ensure(): Promise<string[]> {
    const cur = await listTables();
    if (cur === nftListing(this.o) || (this.written !== undefined && cur === this.written)) return [];
    await nft(['-f', '-'], nftScript(this.o));
    this.written = await listTables();
    return families(this.o).map(([f]) => `nftables table ${f} ${TABLE[f]}`);
  }
}

/** Deletes flannel's nftables tables (the explicit cleanup, and the switch back to iptables as flannel does). */
export async function removeNftTables(): Promise<string[]> {
  const removed: string[] = [];
  for (const [family, table] of [
    ['ip', NFT_TABLE_V4],
    ['ip6', NFT_TABLE_V6],
  ] as const) {
    try {
      await nft(['delete', 'table', family, table]);
      removed.push(`nftables table ${family} ${table}`);
    } catch (e) {
      // ENOENT of the table: nothing to remove; nft itself missing: nothing can exist either
      if (!/No such file or directory|nft not found/.test((e as Error).message)) throw e;
    }
  }
  return removed;
}
