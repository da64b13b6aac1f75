// The three-node lab, run once: etcd + three nodes in network namespaces, flanneld in each, one pod
// per node; shows leases, the kernel state they produced and pod-to-pod pings, then tears it all down.
// Usage: node --import tsx scripts/demo.ts [vxlan|vxlan-classic|host-gw]
import { Lab } from '../test/helpers/lab.ts';
import { inNs } from '../test/helpers/netns.ts';
import { formatCidr } from '../control/subnet/ip4.ts';
import { readDataPlane, renderDataPlane } from '../control/bpf/inspect.ts';

const choice = process.argv[2] ?? 'vxlan';
const backend = choice === 'vxlan-classic' ? 'vxlan' : choice;
const agentArgs = choice === 'vxlan-classic' ? ['--no-bpf'] : [];
const step = (s: string) => console.log(`\n==> ${s}`);

step(`creating etcd and three nodes (backend ${choice})`);
const lab = await Lab.create({ nodes: 3, config: JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: backend } }), agentArgs });
let code = 0;
try {
  step('starting flanneld on each node and one pod behind cni0');
  const subnets = await lab.bringUp();
  for (const n of lab.nodes) console.log(`  ${n.ns}  underlay ${n.ip}  subnet ${formatCidr(subnets.get(n)!)}  pod ${n.pods[0]!.ip}`);

  step('leases in etcd (/coreos.com/network/subnets/)');
  for (const [k, v] of await lab.leases()) console.log(`  ${k.padEnd(16)} ${JSON.stringify(v)}`);

  const n1 = lab.node(1);
  step(`kernel state on ${n1.ns}`);
  const dev = backend === 'vxlan' ? 'flannel.1' : 'eth0';
  console.log((await inNs(n1.ns, 'ip', 'route', 'show', 'dev', dev)).trimEnd().replace(/^/gm, '  route  '));
  if (choice === 'vxlan-classic') {
    console.log((await inNs(n1.ns, 'ip', 'neigh', 'show', 'dev', dev)).trimEnd().replace(/^/gm, '  neigh  '));
    console.log((await inNs(n1.ns, 'bridge', 'fdb', 'show', 'dev', dev)).trimEnd().replace(/^/gm, '  fdb    '));
  }

  step('every pod pings every pod on the other nodes');
  await new Promise((r) => setTimeout(r, 500));
  const failed = await lab.pingAll();
  const pairs = lab.nodes.length * (lab.nodes.length - 1);
  console.log(`  ${pairs - failed.length}/${pairs} pairs answered${failed.length ? `; failed: ${failed.join(', ')}` : ''}`);
  if (failed.length) code = 1;
  if (choice === 'vxlan') {
    step(`BPF maps on ${n1.ns} (flannelctl maps --bpf-pin-root ${n1.pinRoot})`);
    console.log(renderDataPlane(readDataPlane(n1.pinRoot)).trimEnd().replace(/^/gm, '  '));
    console.log(`\n  the same with bpftool: bpftool map dump pinned ${n1.pinRoot}/fl_subnets (the lab removes it on exit)`);
  }
} catch (e) {
  console.error(`lab failed: ${(e as Error).message}`);
  code = 1;
} finally {
  step('tearing down (namespaces, agents, etcd, files)');
  await lab.destroy();
}
process.exit(code);
