// /run/flannel/subnet.env, the contract with the CNI plugin. Written atomically (temp file + rename in
// the same directory) so a plugin never reads half a file.
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { formatCidr, formatIp4, parseCidr, type Subnet } from './ip4.js';
import { formatCidr6, formatIp6, parseCidr6, type Subnet6 } from './ip6.js';
import { NO_IPV4, type LeaseSubnets } from './lease-key.js';

export interface SubnetFileContent {
  /** absent on an IPv6-only network: no FLANNEL_NETWORK / FLANNEL_SUBNET lines, as flannel */
  network?: Subnet;
  subnet?: Subnet;
  ipv6Network?: Subnet6;
  ipv6Subnet?: Subnet6;
  mtu: number;
  ipMasq: boolean;
}

export function renderSubnetFile(c: SubnetFileContent): string {
  let out = '';
  // FLANNEL_SUBNET is the first usable address (the bridge's), not the network address
  if (c.network && c.subnet) out += `FLANNEL_NETWORK=${formatCidr(c.network)}\n` + `FLANNEL_SUBNET=${formatIp4(c.subnet.ip + 1)}/${c.subnet.len}\n`;
  if (c.ipv6Network && c.ipv6Subnet) out += `FLANNEL_IPV6_NETWORK=${formatCidr6(c.ipv6Network)}\n` + `FLANNEL_IPV6_SUBNET=${formatIp6(c.ipv6Subnet.ip + 1n)}/${c.ipv6Subnet.len}\n`;
  return out + `FLANNEL_MTU=${c.mtu}\n` + `FLANNEL_IPMASQ=${c.ipMasq}\n`;
}

export async function writeSubnetFile(path: string, c: SubnetFileContent): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const tmp = join(dir, `.${basename(path)}.${process.pid}`);
  // O_EXCL: never write through a file or symlink someone else left under the temporary name
  await rm(tmp, { force: true });
  const fh = await open(tmp, 'wx', 0o644);
  try {
    // readable by the CNI plugin, writable by root only, whatever the umask
    await fh.chmod(0o644);
    await fh.writeFile(renderSubnetFile(c));
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

export function parseSubnetFile(text: string): Record<string, string> {
  const vars: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Z0-9_]+)=(.*?)\s*$/.exec(line);
    if (m) vars[m[1]!] = m[2]!;
  }
  return vars;
}

/**
 * The subnets a previous run of this node held, from FLANNEL_SUBNET and FLANNEL_IPV6_SUBNET (an
 * IPv6-only run wrote no FLANNEL_SUBNET); undefined when absent or unreadable.
 */
export async function readPreviousSubnet(path: string): Promise<LeaseSubnets | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
  const vars = parseSubnetFile(text);
  const subnet = vars.FLANNEL_SUBNET ? parseCidr(vars.FLANNEL_SUBNET) : undefined;
  const ipv6Subnet = vars.FLANNEL_IPV6_SUBNET ? parseCidr6(vars.FLANNEL_IPV6_SUBNET) : undefined;
  if (!subnet && !ipv6Subnet) return undefined;
  return { subnet: subnet ?? NO_IPV4, ...(ipv6Subnet ? { ipv6Subnet } : {}) };
}
