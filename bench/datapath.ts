// Pod to pod across two lab nodes, for each data plane, and node to node on the bare underlay (the
// limit): TCP throughput with 1 and 4 streams, small-packet UDP rate, ping RTT, request/response
// latency (qperf tcp_lat/udp_lat) and the machine's CPU seconds per gigabit moved.
import { TestLab, type Underlay } from '../test/helpers/lab.ts';
import { inNs } from '../test/helpers/netns.ts';
import { machineCpu, server, sleep } from './lib.ts';
import { labConfig } from '../control/lab/commands.ts';
import { readDataPlane, renderDataPlane } from '../control/datapath/inspect.ts';

export interface DatapathMode {
  name: string;
  backend: string;
  args: string[];
  /** measure node to node on the underlay instead of pod to pod */
  underlay?: boolean;
  /** a dual-stack network over an IPv6 underlay, measured between the pods' IPv6 addresses */
  ipv6?: boolean;
}

// Every mode as kube-flannel runs it (--ip-masq, so conntrack is active as kube-proxy makes it on a
// real node) with pods made through the CNI plugin: the same bridge, veths and rules in every mode.
export const MODES: DatapathMode[] = [
  { name: 'BPF + fast path + bypass', backend: 'vxlan', args: ['--ip-masq', '--fast-path=on', '--vxlan-bypass=on'] },
  // the fast path with flannel.1 encapsulating (the tc key): the mode bypass must beat to stay the default
  { name: 'BPF + pod fast path', backend: 'vxlan', args: ['--ip-masq', '--fast-path=on', '--vxlan-bypass=off'] },
  { name: 'BPF vxlan', backend: 'vxlan', args: ['--ip-masq', '--fast-path=off'] },
  { name: 'classic vxlan', backend: 'vxlan', args: ['--ip-masq', '--no-bpf'] },
  { name: 'host-gw', backend: 'host-gw', args: ['--ip-masq'] },
  { name: 'udp', backend: 'udp', args: ['--ip-masq'] },
  { name: 'underlay (no overlay)', backend: 'host-gw', args: [], underlay: true },
  // IPv6 pods of a dual-stack network, in the same run as IPv4: BPF mode carries them through
  // flannel.1 (fl_routes6), with or without the pod fast path (bypass is IPv4 only), classic mode
  // through flannel-v6.1
  { name: 'BPF + pod fast path (IPv6 pods)', backend: 'vxlan', args: ['--ip-masq', '--fast-path=on', '--vxlan-bypass=off'], ipv6: true },
  { name: 'BPF vxlan (IPv6 pods)', backend: 'vxlan', args: ['--ip-masq', '--fast-path=off'], ipv6: true },
  { name: 'classic vxlan (IPv6 pods)', backend: 'vxlan', args: ['--ip-masq', '--no-bpf'], ipv6: true },
];

export interface DatapathSample {
  tcp1Gbps: number;
  tcp4Gbps: number;
  udp64Kpps: number;
  pingRttUs: number;
  tcpLatUs: number;
  udpLatUs: number;
  cpuSecPerGbit: number;
  /** where that CPU went (/proc/stat, the whole machine, during the 1-stream run): user, system, and
   * interrupts plus softirq, where the receive path and most of the send path run */
  userSecPerGbit: number;
  sysSecPerGbit: number;
  softirqSecPerGbit: number;
  /** bytes per packet received on the receiving node's eth0 during the 1-stream run: ~47 KB where
   * super-packets cross the underlay intact, ~1.5 KB where it segments as a NIC does */
  wireBytesPerPacket: number;
}

async function rxCounters(ns: string): Promise<{ bytes: number; packets: number }> {
  const [l] = JSON.parse(await inNs(ns, 'ip', '-s', '-j', 'link', 'show', 'eth0')) as { stats64: { rx: { bytes: number; packets: number } } }[];
  return l!.stats64.rx;
}

interface IperfResult {
  end: { sum_received?: { bits_per_second: number }; sum?: { packets: number; lost_packets: number; seconds: number } };
  error?: string;
}

/** iperf3's JSON; its own error (it exits non-zero, and prints the JSON all the same) when the run failed */
async function iperf(ns: string, dst: string, args: string[]): Promise<IperfResult> {
  const out = await inNs(ns, 'iperf3', '-c', dst, '-J', ...args).catch((e: Error) => e.message);
  let r: IperfResult | undefined;
  try {
    r = JSON.parse(out) as IperfResult;
  } catch {
    /* not JSON: reported below */
  }
  if (!r?.end?.sum_received && !r?.end?.sum)
    throw new Error(`iperf3 -c ${dst} ${args.join(' ')} in ${ns} failed: ${r ? (r.error ?? `no totals in its report: ${JSON.stringify(r.end).slice(0, 400)}`) : out.slice(0, 400)}`);
  return r;
}

/** Both underlay settings: veth (GSO super-packets cross intact) and NIC-like (segmented, GRO). */
export const UNDERLAYS: Underlay[] = ['veth', 'nic'];

export async function measureDatapath(m: DatapathMode, seconds: number, underlay: Underlay = 'veth'): Promise<DatapathSample> {
  const config = labConfig(m.backend, m.ipv6 ? 'dual' : 'off');
  const lab = await TestLab.create({ nodes: 2, config, agentArgs: m.args, underlay, ipv6: m.ipv6 === true });
  try {
    await lab.bringUp({ cni: true });
    const [n1, n2] = [lab.node(1), lab.node(2)];
    const pod2 = n2.pods[0]!;
    const [src, dstNs, dst] = m.underlay ? [n1.ns, n2.ns, n2.ip] : [n1.pods[0]!.ns, pod2.ns, m.ipv6 ? pod2.ip6! : pod2.ip];
    let reached = false;
    for (let i = 0; i < 50 && !reached; i++) {
      reached = await inNs(src, 'ping', '-c', '1', '-W', '1', dst).then(
        () => true,
        () => false,
      );
      if (!reached) await sleep(100);
    }
    // what an operator would look at, so that a lab that never connects is a finding, not a TypeError
    if (!reached)
      throw new Error(
        `${m.name}: ${src} never reached ${dst}\n${lab.nodes.map((n) => `${n.ns}:\n${n.pinRoot && m.backend === 'vxlan' && !m.args.includes('--no-bpf') ? renderDataPlane(readDataPlane(n.pinRoot)) : ''}`).join('\n')}`,
      );
    const ip3 = await server(dstNs, ['iperf3', '-s']);
    const qp = await server(dstNs, ['qperf']);
    try {
      const w0 = await rxCounters(n2.ns);
      const c0 = machineCpu();
      const t1 = await iperf(src, dst, ['-t', String(seconds)]);
      const c1 = machineCpu();
      const w1 = await rxCounters(n2.ns);
      const tcp1Gbps = t1.end.sum_received!.bits_per_second / 1e9;
      const t4 = await iperf(src, dst, ['-t', String(seconds), '-P', '4']);
      const u = await iperf(src, dst, ['-u', '-l', '64', '-b', '0', '-t', String(seconds)]);
      const udp64Kpps = (u.end.sum!.packets - u.end.sum!.lost_packets) / u.end.sum!.seconds / 1000;
      const ping = await inNs(src, 'ping', '-q', '-c', '100', '-i', '0.01', dst);
      const pingRttUs = Number(/= [\d.]+\/([\d.]+)\//.exec(ping)![1]) * 1000;
      const q = await inNs(src, 'qperf', dst, '-t', String(Math.max(1, Math.round(seconds / 2))), '-vu', 'tcp_lat', 'udp_lat');
      const lats = [...q.matchAll(/latency\s*=\s*([\d.]+) (us|ms|ns)/g)].map((x) => Number(x[1]) * (x[2] === 'ms' ? 1000 : x[2] === 'ns' ? 0.001 : 1));
      return {
        tcp1Gbps,
        tcp4Gbps: t4.end.sum_received!.bits_per_second / 1e9,
        udp64Kpps,
        pingRttUs,
        tcpLatUs: lats[0]!,
        udpLatUs: lats[1]!,
        cpuSecPerGbit: (c1.busy - c0.busy) / (tcp1Gbps * seconds),
        userSecPerGbit: (c1.user - c0.user) / (tcp1Gbps * seconds),
        sysSecPerGbit: (c1.sys - c0.sys) / (tcp1Gbps * seconds),
        softirqSecPerGbit: (c1.softirq - c0.softirq) / (tcp1Gbps * seconds),
        wireBytesPerPacket: (w1.bytes - w0.bytes) / Math.max(1, w1.packets - w0.packets),
      };
    } finally {
      ip3.stop();
      qp.stop();
    }
  } finally {
    await lab.destroy();
  }
}
