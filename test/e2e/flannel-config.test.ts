// A network config as operators write it for flannel, in flannel's own loose spelling: lower-case keys,
// "VxLAN", the underlay MTU in Backend.MTU, the IANA port. A BPF node and a classic node must both
// make of it what flannel makes: flannel.1 at MTU - 50 on port 4789, FLANNEL_MTU the same, pods that
// reach each other with packets exactly that size and no larger.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { TestLab, type LabNode } from '../helpers/lab.ts';
import { inNs, json } from '../helpers/netns.ts';

const CONFIG = '{"network":"10.244.0.0/16","backend":{"type":"VxLAN","port":4789,"mtu":1400}}';

describe("flannel's config spelling and MTU rule, on a BPF node and a classic node", { timeout: 300_000 }, () => {
  let lab: TestLab;
  let n1: LabNode, n2: LabNode;
  const env = new Map<LabNode, Record<string, string>>();
  before(async () => {
    lab = await TestLab.create({ nodes: 2, config: CONFIG });
    [n1, n2] = lab.nodes as [LabNode, LabNode];
    lab.startAgent(n1);
    lab.startAgent(n2, ['--no-bpf']);
    for (const n of lab.nodes) env.set(n, (await lab.waitReady(n)).env);
    for (const n of lab.nodes) await lab.addPodCni(n);
  });
  after(async () => lab?.destroy());

  test('flannel.1 is at Backend.MTU - 50 on port 4789 in both modes; FLANNEL_MTU and the pods say the same', async () => {
    for (const n of lab.nodes) {
      const [dev] = await json<{ mtu: number; linkinfo: { info_data: { port: number; external?: boolean } } }[]>(n.ns, 'ip', '-d', 'link', 'show', 'flannel.1');
      assert.equal(dev!.mtu, 1350, `${n.ns}: 1400 - 50`);
      assert.equal(dev!.linkinfo.info_data.port, 4789);
      assert.equal(env.get(n)!.FLANNEL_MTU, '1350');
      const [eth0] = await json<{ mtu: number }[]>(n.pods[0]!.ns, 'ip', 'link', 'show', 'eth0');
      assert.equal(eth0!.mtu, 1350, 'the CNI plugin gives pods FLANNEL_MTU');
    }
    const [d1] = await json<{ linkinfo: { info_data: { external?: boolean } } }[]>(n1.ns, 'ip', '-d', 'link', 'show', 'flannel.1');
    assert.ok(d1!.linkinfo.info_data.external, 'node 1 runs BPF mode');
  });

  test('pods reach each other both ways with 1350-byte packets that must not fragment, and no larger', async () => {
    for (const [a, b] of [
      [n1, n2],
      [n2, n1],
    ] as const) {
      const from = a.pods[0]!,
        to = b.pods[0]!;
      // 1322 bytes of ICMP payload + 8 ICMP + 20 IP = 1350
      const ok = await inNs(from.ns, 'ping', '-c', '3', '-i', '0.2', '-W', '2', '-M', 'do', '-s', '1322', to.ip).catch((e: Error) => e.message);
      assert.match(ok, / 0% packet loss/, `${a.ns} -> ${b.ns}: ${ok.split('\n').slice(-3).join(' ')}`);
      const big = await inNs(from.ns, 'ping', '-c', '1', '-W', '1', '-M', 'do', '-s', '1323', to.ip).catch((e: Error) => e.message);
      assert.doesNotMatch(big, / 0% packet loss/, "one byte more does not fit the pod's MTU");
    }
  });
});
