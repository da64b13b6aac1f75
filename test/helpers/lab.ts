// The lab lives in control/lab (flannelctl lab up/down); the tests and the benchmark build the same
// clusters through TestLab, which adds what only they need: pods made by hand, CNI DEL, bringUp.
import { readDataPlane } from '../../control/datapath/inspect.ts';
import { REASONS, type Reason } from '../../control/datapath/layout.ts';
import { Lab, type LabNode, type LabOptions, type Pod } from '../../control/lab/cluster.ts';
import { formatIp4, type Subnet } from '../../control/subnet/ip4.ts';
import { ip } from './netns.ts';

export * from '../../control/lab/cluster.ts';

export class TestLab extends Lab {
  static override create(o: LabOptions): Promise<TestLab> {
    return Lab.init(new TestLab(o), o);
  }

  /**
   * Starts every agent and gives each node one pod, made by hand or (cni) through the flannel CNI
   * plugin as a runtime makes it; on failure the caller's destroy() cleans up.
   */
  async bringUp(o: { cni?: boolean } = {}): Promise<Map<LabNode, Subnet>> {
    const subnets = new Map<LabNode, Subnet>();
    for (const n of this.nodes) this.startAgent(n);
    for (const n of this.nodes) {
      const { subnet, mtu } = await this.waitReady(n);
      subnets.set(n, subnet);
      if (o.cni) await this.addPodCni(n);
      else await this.addPod(n, subnet, mtu);
    }
    return subnets;
  }

  /** A pod made by hand as the bridge plugin would make it: cni0 with the subnet's .1, the pod at .<n>. */
  async addPod(node: LabNode, subnet: Subnet, mtu: number): Promise<Pod> {
    const n = node.pods.length;
    const pod: Pod = { ns: `${this.prefix}n${node.index}p${n}`, ip: formatIp4(subnet.ip + 2 + n) };
    const gw = formatIp4(subnet.ip + 1);
    const hasBridge = (await ip('-n', node.ns, '-o', 'link', 'show', 'cni0').catch(() => '')) !== '';
    if (!hasBridge) {
      await ip('-n', node.ns, 'link', 'add', 'cni0', 'type', 'bridge');
      await ip('-n', node.ns, 'addr', 'add', `${gw}/${subnet.len}`, 'dev', 'cni0');
      await ip('-n', node.ns, 'link', 'set', 'cni0', 'mtu', String(mtu), 'up');
    }
    await ip('netns', 'add', pod.ns);
    await ip('-n', node.ns, 'link', 'add', `veth${n}`, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod.ns);
    await ip('-n', node.ns, 'link', 'set', `veth${n}`, 'master', 'cni0', 'up');
    await ip('-n', pod.ns, 'link', 'set', 'lo', 'up');
    await ip('-n', pod.ns, 'link', 'set', 'eth0', 'mtu', String(mtu), 'up');
    await ip('-n', pod.ns, 'addr', 'add', `${pod.ip}/${subnet.len}`, 'dev', 'eth0');
    await ip('-n', pod.ns, 'route', 'add', 'default', 'via', gw);
    node.pods.push(pod);
    return pod;
  }

  /**
   * A host on the underlay that holds no lease (the lab's prefix + "x", at `address`): where the tests
   * send hostile VXLAN from. The lab's destroy() removes it with the rest of its namespaces.
   */
  async addStranger(address = '172.20.0.66'): Promise<string> {
    const ns = `${this.prefix}x`;
    await ip('netns', 'add', ns);
    await ip('-n', this.underlay, 'link', 'add', 'x0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    await ip('-n', this.underlay, 'link', 'set', 'x0', 'master', 'br0', 'up');
    await ip('-n', ns, 'addr', 'add', `${address}/24`, 'dev', 'eth0');
    await ip('-n', ns, 'link', 'set', 'eth0', 'up');
    return ns;
  }

  /** CNI DEL through the flannel plugin, as a runtime does when a pod goes; then its namespace goes. */
  async delPodCni(node: LabNode, pod: Pod): Promise<void> {
    const r = this.cni(node, 'DEL', pod.ns);
    node.pods.splice(node.pods.indexOf(pod), 1);
    if (r.status !== 0) throw new Error(`CNI DEL for ${pod.ns} failed: ${r.stdout.toString() || r.stderr.toString()}`);
    if ((await ip('netns', 'list')).split('\n').some((l) => l.split(' ')[0] === pod.ns)) await ip('netns', 'del', pod.ns);
  }
}

/** Packets per verdict on a node, read from its pinned counters as `flannelctl maps` reads them. */
export function packetsByVerdict(n: LabNode): Record<Reason, number> {
  const { counters } = readDataPlane(n.pinRoot);
  return Object.fromEntries(REASONS.map((r) => [r, counters[r].packets])) as Record<Reason, number>;
}
