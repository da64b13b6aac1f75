// flannel's flags an operator's unit file may carry, each checked where a user would look: the lease
// in etcd, the routes, iptables-save, the subnet file, systemd's notify socket.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestLab, UNDERLAY_GW, type LabNode } from '../helpers/lab.ts';
import { inNs, ip, until } from '../helpers/netns.ts';
import { NotifySocket } from '../helpers/notify-socket.ts';
import { formatCidr, formatIp4 } from '../../control/subnet/ip4.ts';

const CONFIG = '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}';

describe("flannel's node flags: --iface-can-reach, --ip-blackhole-route, --ip-masq-fully-random-disable, --net-config-path, READY=1", { timeout: 300_000 }, () => {
  let lab: TestLab;
  let n1: LabNode, n2: LabNode;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'flannel-flags-'));
    lab = await TestLab.create({ nodes: 2, config: CONFIG });
    [n1, n2] = lab.nodes as [LabNode, LabNode];
    lab.startAgent(n1);
    await lab.waitReady(n1);
  });
  after(async () => {
    await lab?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  /** n2's lease value as etcd holds it, by its public IP */
  const leaseOf = async (publicIP: string) => [...(await lab.leases())].find(([, v]) => v.PublicIP === publicIP);
  const restart = async (args: string[], env: Record<string, string> = {}) => {
    await lab.stopAgent(n2);
    lab.startAgent(n2, args, env);
  };

  test('the agent sends READY=1 to $NOTIFY_SOCKET once the subnet file is written, as flannel does', async () => {
    const sock = await NotifySocket.open();
    try {
      let fileThere: boolean | undefined;
      sock.onMessage((m) => {
        if (m === 'READY=1') fileThere = existsSync(n2.subnetFile) && statSync(n2.subnetFile).mtimeMs >= n2.startedAt!;
      });
      await restart([], { NOTIFY_SOCKET: sock.path });
      await lab.waitReady(n2);
      await until('READY=1 received', () => fileThere !== undefined || undefined, 10_000);
      assert.equal(fileThere, true, 'READY=1 comes after the subnet file, not before');
      assert.deepEqual(
        sock.messages.map((m) => m.text),
        ['READY=1'],
      );
    } finally {
      sock.close();
    }
  });

  test('--iface-can-reach picks the interface and source address the kernel routes that address through', async () => {
    // a second interface (a veth pair inside the node: this kernel has no dummy module)
    await ip('-n', n2.ns, 'link', 'add', 'side0', 'type', 'veth', 'peer', 'name', 'side1');
    await ip('-n', n2.ns, 'link', 'set', 'side1', 'up');
    await ip('-n', n2.ns, 'addr', 'add', '10.99.0.2/24', 'dev', 'side0');
    await ip('-n', n2.ns, 'link', 'set', 'side0', 'up');
    try {
      // --iface matching nothing falls through to --iface-can-reach, as in flannel
      await restart(['--iface=nosuchif', '--iface-can-reach=10.99.0.50']);
      await lab.waitReady(n2);
      const lease = await leaseOf('10.99.0.2');
      assert.ok(lease, `a lease published with side0's address: ${lab.logs(n2).slice(-800)}`);
      assert.match(lab.logs(n2), /"iface":"side0","ifaceAddr":"10\.99\.0\.2"/);
      await lab.stopAgent(n2);
      await lab.etcd.ctl('del', `/coreos.com/network/subnets/${lease[0]}`);
    } finally {
      await ip('-n', n2.ns, 'link', 'del', 'side0');
    }
    // an address with no route is a clear error, and the agent stops
    await ip('-n', n2.ns, 'route', 'add', 'unreachable', '198.51.100.0/24');
    try {
      await restart(['--iface-can-reach=198.51.100.1']);
      assert.equal(await n2.exited, 1);
      assert.match(lab.logs(n2), /--iface-can-reach 198\.51\.100\.1: no route: .*EHOSTUNREACH/);
    } finally {
      await ip('-n', n2.ns, 'route', 'del', 'unreachable', '198.51.100.0/24');
    }
  });

  test('--ip-blackhole-route adds a blackhole route for our subnet and restores it; --ip-masq-fully-random-disable masquerades without --random-fully', async () => {
    await restart(['--ip-blackhole-route', '--iptables-resync=1', '--ip-masq', '--ip-masq-fully-random-disable']);
    const { subnet } = await lab.waitReady(n2);
    const blackholes = async () => (await inNs(n2.ns, 'ip', 'route', 'show', 'type', 'blackhole')).trim();
    assert.equal(await blackholes(), `blackhole ${formatCidr(subnet)}`);
    // traffic for an address of our subnet that no pod holds ends here
    const get = await inNs(n2.ns, 'ip', 'route', 'get', formatIp4(subnet.ip + 77)).catch((e: Error) => e.message);
    assert.match(get, /Invalid argument/, 'ip route get answers EINVAL for a blackholed address');
    await ip('-n', n2.ns, 'route', 'del', 'blackhole', formatCidr(subnet));
    await until('blackhole route restored', async () => (await blackholes()) === `blackhole ${formatCidr(subnet)}` || undefined, 5_000);

    const masq = (await inNs(n2.ns, 'iptables-save', '-t', 'nat')).split('\n').filter((l) => l.includes('-j MASQUERADE'));
    assert.equal(masq.length, 2, masq.join('\n'));
    for (const l of masq) assert.doesNotMatch(l, /--random-fully/);
    // and without the flag, the same chain is rewritten with --random-fully (flannel's default)
    await restart(['--ip-masq']);
    await lab.waitReady(n2);
    const again = (await inNs(n2.ns, 'iptables-save', '-t', 'nat')).split('\n').filter((l) => l.includes('-j MASQUERADE'));
    for (const l of again) assert.match(l, /--random-fully/);
    await lab.stopAgent(n2);
    await ip('-n', n2.ns, 'route', 'del', 'blackhole', formatCidr(subnet));
  });

  test('EnableNFTables: the masquerade and forward rules in nftables tables (pods reach the outside masqueraded); switching back restores the iptables chains and removes the tables', async () => {
    await lab.etcd.ctl('put', '/coreos.com/network/config', '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"},"EnableNFTables":true}');
    try {
      await restart(['--ip-masq']);
      await lab.waitReady(n2);
      const table = await inNs(n2.ns, 'nft', 'list', 'table', 'ip', 'flannel-ipv4');
      assert.match(table, /chain postrtg \{/);
      assert.match(table, /ip saddr 10\.244\.0\.0\/16 ip daddr != 224\.0\.0\.0\/4 masquerade fully-random/);
      assert.match(table, /chain forward \{[^}]*ip saddr 10\.244\.0\.0\/16 accept/);
      assert.doesNotMatch(await inNs(n2.ns, 'iptables-save'), /FLANNEL-POSTRTG|FLANNEL-FWD/, "the previous run's iptables chains are gone, as flannel cleans the unused mode");
      // the underlay gateway has no route to the pod network: only a masqueraded ping comes back
      const pod = await lab.addPodCni(n2);
      await inNs(pod.ns, 'ping', '-c', '1', '-W', '2', UNDERLAY_GW);
      assert.match(
        await inNs(n2.ns, 'conntrack', '-L', '-p', 'icmp', '-d', UNDERLAY_GW).catch((e: Error) => e.message),
        new RegExp(`src=${pod.ip.replace(/\./g, '\\.')} .*src=${UNDERLAY_GW.replace(/\./g, '\\.')} dst=${n2.ip.replace(/\./g, '\\.')}`),
      );
    } finally {
      await lab.etcd.ctl('put', '/coreos.com/network/config', CONFIG);
    }
    await restart(['--ip-masq']);
    await lab.waitReady(n2);
    assert.doesNotMatch(await inNs(n2.ns, 'nft', 'list', 'tables'), /flannel-ipv4/);
    assert.match(await inNs(n2.ns, 'iptables-save', '-t', 'nat'), /-A FLANNEL-POSTRTG/);
    await lab.stopAgent(n2);
  });

  test('--net-config-path reads the network config from a file (kube-flannel style), and a missing file is a clear error', async () => {
    const file = join(dir, 'net-conf.json');
    // flannel's spelling, a subnet length etcd's config does not have: the lease shows which one was read
    writeFileSync(file, '{"Network":"10.244.0.0/16","SubnetLen":26,"Backend":{"Type":"vxlan"}}\n');
    await restart([`--net-config-path=${file}`]);
    const { subnet, env } = await lab.waitReady(n2);
    assert.equal(subnet.len, 26);
    assert.equal(env.FLANNEL_NETWORK, '10.244.0.0/16');
    assert.ok(await leaseOf(n2.ip).then((l) => l?.[0].endsWith('-26')), 'the lease key is a /26');
    await lab.stopAgent(n2);
    await lab.etcd.ctl('del', `/coreos.com/network/subnets/${formatIp4(subnet.ip)}-26`);

    await restart([`--net-config-path=${join(dir, 'missing.json')}`]);
    assert.equal(await n2.exited, 1);
    assert.match(lab.logs(n2), /"msg":"bad network config in [^"]*missing\.json"/);
    assert.match(lab.logs(n2), /--net-config-path: cannot read [^"]*missing\.json: ENOENT/);
  });
});
