#!/usr/bin/env node
// flannelctl: inspects a node's data plane (pinned BPF maps) and the cluster's leases in etcd.
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import { labDown, labUp, type LabUpOptions } from '../lab/commands.js';
import { Lab } from '../lab/cluster.js';
import { readDataPlane, renderDataPlane } from '../datapath/inspect.js';
import { EtcdRegistry } from '../subnet/etcd-registry.js';
import { decodeAttrs } from '../subnet/lease.js';
import { formatCidr, parseSubnetKey } from '../subnet/ip4.js';
import { checkEtcdFlags, etcdFlagOptions, etcdOptions, int, type EtcdFlags } from './flanneld.js';
import { fetchStatus } from '../health/client.js';
import { isReady, renderStatus } from '../agent/status.js';
import { removeRules } from '../firewall/iptables.js';
import { removeNftTables } from '../firewall/nftables.js';

export function buildCtl(): Command {
  const ctl = new Command('flannelctl')
    .description('Inspect a flanneld node (status, BPF maps, leases in etcd), clean up its iptables rules, run a lab.')
    .showHelpAfterError('(flannelctl --help lists the commands)');
  ctl
    .command('status')
    .description("the running agent's view: lease, backend (and why), peers with their counters, data plane checks; exits 1 when not ready")
    .addOption(new Option('--socket <path>', "the agent's --status-socket").env('FLANNELD_STATUS_SOCKET').default('/run/flannel/flanneld.sock'))
    .option('--json', 'machine-readable output (what GET /status returns)')
    .action(async (o: { socket: string; json?: boolean }) => {
      const s = await fetchStatus(o.socket);
      process.stdout.write(o.json ? JSON.stringify(s, null, 2) + '\n' : renderStatus(s));
      if (!isReady(s)) process.exitCode = 1;
    });
  ctl
    .command('cleanup-iptables')
    .description('remove the FLANNEL-POSTRTG and FLANNEL-FWD chains and their jumps (flanneld never removes them itself, so a restart cannot cut flows)')
    .action(async () => {
      const removed = await removeRules();
      process.stdout.write(removed.length ? `removed ${removed.join(', ')}\n` : 'no flannel chains found\n');
    });
  ctl
    .command('cleanup')
    .description("remove every firewall rule flanneld wrote: the iptables chains and their jumps, and nftables mode's tables ip flannel-ipv4 and ip6 flannel-ipv6 (flanneld never removes them itself)")
    .action(async () => {
      const removed = [...(await removeRules()), ...(await removeNftTables())];
      process.stdout.write(removed.length ? `removed ${removed.join(', ')}\n` : 'no flannel rules found\n');
    });
  ctl
    .command('maps')
    .description('print the BPF data plane: peer subnets with their VTEP MAC, host IP and counters, and packets by verdict (same data as `bpftool map dump pinned <pin-root>/fl_*`)')
    .addOption(new Option('--bpf-pin-root <dir>', 'where flanneld pins its maps').env('FLANNELD_BPF_PIN_ROOT').default('/sys/fs/bpf/flannel'))
    .option('--json', 'machine-readable output')
    .action((o: { bpfPinRoot: string; json?: boolean }) => {
      const view = readDataPlane(o.bpfPinRoot);
      process.stdout.write(o.json ? JSON.stringify(view, null, 2) + '\n' : renderDataPlane(view));
    });
  const leases = ctl.command('leases').description("print every lease in etcd, as flannel stores them (the etcd flags and FLANNELD_* variables are flanneld's)");
  for (const opt of etcdFlagOptions()) leases.addOption(opt);
  leases.option('--json', 'machine-readable output').action(async (o: EtcdFlags & { json?: boolean }, c: Command) => {
    const bad = checkEtcdFlags(o);
    if (bad) c.error(`error: ${bad}`, { exitCode: 2 });
    const reg = new EtcdRegistry(etcdOptions(o));
    try {
      const { leases } = await reg.listLeases();
      const rows = leases.map((l) => {
        let attrs: unknown;
        try {
          attrs = decodeAttrs(l.value);
        } catch (e) {
          attrs = { error: (e as Error).message };
        }
        const subnet = parseSubnetKey(l.key.slice(reg.subnetsPrefix.length));
        return { subnet: subnet ? formatCidr(subnet) : `(not a subnet: ${l.key})`, reservation: l.lease === '0', attrs, raw: l.value };
      });
      if (o.json) process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
      else for (const r of rows) process.stdout.write(`${r.subnet.padEnd(18)} ${r.reservation ? 'reserved ' : ''}${r.raw}\n`);
    } finally {
      reg.close();
    }
  });
  const lab = ctl.command('lab').description('a cluster on this machine: etcd and nodes in network namespaces, flanneld in each, pods made through the CNI plugin (root)');
  const labOpts = (c: Command) =>
    c
      .addOption(new Option('--name <prefix>', "prefix of the lab's namespaces").default('fll'))
      .addOption(new Option('--state-dir <dir>', 'logs, pins, etcd data and the state `down` uses').default('/run/flannel-lab'));
  // checked before anything runs: `up` starts by removing an earlier lab with the same arguments
  const checkLab = (c: Command, o: { name: string; stateDir: string }) => {
    const bad = Lab.checkDownArgs(o.stateDir, o.name);
    if (bad) c.error(`error: ${bad}`, { exitCode: 2 });
  };
  labOpts(
    lab
      .command('up')
      .description('build the lab (removing an earlier one first), check pod-to-pod connectivity, print leases, maps and a throughput/latency figure')
      .addOption(new Option('--backend <backend>', 'data plane').choices(['vxlan', 'vxlan-classic', 'host-gw', 'udp']).default('vxlan'))
      .addOption(new Option('--nodes <n>', 'number of nodes').argParser(int('--nodes', 1, 9)).default(3))
      .addOption(new Option('--pods <n>', 'pods per node').argParser(int('--pods', 1, 20)).default(2))
      .addOption(
        new Option('--underlay <kind>', 'underlay links: veth passes GSO super-packets between nodes intact; nic segments before the wire and merges with GRO on receive, as a real NIC does')
          .choices(['veth', 'nic'])
          .default('veth'),
      )
      .addOption(
        new Option('--ipv6 <stack>', 'IPv6 in the network config: off (IPv4 only), dual (dual-stack, fd00:10:244::/56 beside 10.244.0.0/16) or only (IPv6-only); the underlay runs IPv6 too')
          .choices(['off', 'dual', 'only'])
          .default('off'),
      )
      .option('--no-measure', 'skip the iperf3/ping figure'),
  ).action(async (o: LabUpOptions, c: Command) => {
    checkLab(c, o);
    process.exitCode = await labUp(o, (s) => process.stdout.write(s + '\n'));
  });
  labOpts(lab.command('down').description('stop and remove everything the lab created, also after a crash')).action(async (o: { name: string; stateDir: string }, c: Command) => {
    checkLab(c, o);
    process.exitCode = await labDown(o, (s) => process.stdout.write(s + '\n'));
  });
  return ctl;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === realpathSync(process.argv[1])) {
  buildCtl()
    .parseAsync(process.argv)
    .catch((e: Error) => {
      process.stderr.write(`flannelctl: ${e.message}\n`);
      process.exit(1);
    });
}
