import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CniError, checkDelegate, parseNetConf, parseSubnetEnv, podFromResult, renderDelegate, versionBefore } from '../../control/cni/delegate.ts';

const ENV = 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n';

test("the subnet file gives the lease as a network, as flannel's plugin passes it to host-local", () => {
  assert.deepEqual(parseSubnetEnv(ENV, 'f'), { networks: ['10.244.0.0/16'], subnet: '10.244.3.0/24', ipv6Networks: [], ipv6Subnet: undefined, mtu: 1450, ipMasq: true });
  assert.throws(
    () => parseSubnetEnv('FLANNEL_NETWORK=10.244.0.0/16\n', 'f'),
    (e: unknown) => e instanceof CniError && e.code === 7 && /f is missing FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ/.test(e.message),
    "flannel's message",
  );
  assert.throws(() => parseSubnetEnv(ENV.replace('1450', 'big'), 'f'), /FLANNEL_MTU/);
});

test('flannel defaults: bridge, isGateway, ipMasq opposite of FLANNEL_IPMASQ, MTU, host-local range and route', () => {
  const d = renderDelegate(parseNetConf('{"cniVersion":"0.4.0","name":"cbr0","type":"flannel"}'), parseSubnetEnv(ENV, 'f'));
  assert.deepEqual(d, {
    name: 'cbr0',
    type: 'bridge',
    ipMasq: false,
    mtu: 1450,
    isGateway: true,
    cniVersion: '0.4.0',
    ipam: { type: 'host-local', ranges: [[{ subnet: '10.244.3.0/24' }]], routes: [{ dst: '10.244.0.0/16' }] },
  });
});

test('delegate and ipam overrides; a non-bridge delegate gets no isGateway; extra routes kept', () => {
  const n = parseNetConf('{"name":"n","type":"flannel","delegate":{"type":"ipvlan","master":"eth0","ipMasq":true},"ipam":{"routes":[{"dst":"192.0.2.0/24"}]}}');
  const d = renderDelegate(n, parseSubnetEnv(ENV, 'f'));
  assert.equal(d.type, 'ipvlan');
  assert.equal(d.isGateway, undefined);
  assert.equal(d.ipMasq, true);
  assert.deepEqual((d.ipam as { routes: unknown[] }).routes, [{ dst: '192.0.2.0/24' }, { dst: '10.244.0.0/16' }]);
});

test("flannel's multi-network and dual-stack subnet files: comma-separated networks (duplicates dropped), IPv6 keys, ranges and routes for each", () => {
  const dual =
    'FLANNEL_NETWORK=10.244.0.0/16,10.245.0.0/16,10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:3::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n';
  const env = parseSubnetEnv(dual, 'f');
  assert.deepEqual(env.networks, ['10.244.0.0/16', '10.245.0.0/16']);
  assert.deepEqual([env.ipv6Networks, env.ipv6Subnet], [['fd00:10:244::/56'], 'fd00:10:244:3::/64']);
  const d = renderDelegate(parseNetConf('{"cniVersion":"1.0.0","name":"cbr0","type":"flannel"}'), env);
  assert.deepEqual(d.ipam, {
    type: 'host-local',
    ranges: [[{ subnet: '10.244.3.0/24' }], [{ subnet: 'fd00:10:244:3::/64' }]],
    routes: [{ dst: '10.244.0.0/16' }, { dst: '10.245.0.0/16' }, { dst: 'fd00:10:244::/56' }],
  });
  // IPv6 only: no IPv4 keys at all
  const only = parseSubnetEnv('FLANNEL_IPV6_NETWORK=fd00::/48\nFLANNEL_IPV6_SUBNET=fd00:0:0:7::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n', 'f');
  assert.deepEqual((renderDelegate(parseNetConf('{"name":"n","type":"flannel"}'), only).ipam as { ranges: unknown }).ranges, [[{ subnet: 'fd00:0:0:7::/64' }]]);
  assert.throws(() => parseSubnetEnv(dual.replace('fd00:10:244::/56', 'fd00::zz/56'), 'f'), /FLANNEL_IPV6_NETWORK is not an IPv6 CIDR/);
  assert.throws(() => parseSubnetEnv(dual.replace('10.245.0.0/16', ''), 'f'), /FLANNEL_NETWORK is not an IPv4 CIDR: ""/, 'an empty list entry is an error, as Go parses it');
});

test("runtimeConfig goes to the delegate; the delegate's name, ipam and a non-string type are refused with flannel's words", () => {
  const n = parseNetConf('{"name":"n","type":"flannel","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],"mac":"c2:11:22:33:44:55"}}');
  assert.deepEqual(renderDelegate(n, parseSubnetEnv(ENV, 'f')).runtimeConfig, n.runtimeConfig);
  for (const [delegate, msg] of [
    ['{"type":1}', /must have \(string\) 'type' field/],
    ['{"name":"x"}', /must not have 'name' field, it'll be set by flannel/],
    ['{"ipam":{}}', /must not have 'ipam' field, it'll be set by flannel/],
  ] as const)
    assert.throws(
      () => checkDelegate(parseNetConf(`{"name":"n","type":"flannel","delegate":${delegate}}`)),
      (e: unknown) => e instanceof CniError && e.code === 7 && msg.test(e.message),
    );
  assert.throws(() => parseNetConf('{"name":"n","type":"flannel","runtimeConfig":[1]}'), /"runtimeConfig" must be an object/);
  assert.ok(versionBefore('0.3.1', '0.4.0') && versionBefore('0.4.0', '1.1.0') && !versionBefore('1.1.0', '1.1.0') && !versionBefore('1.0.0', '0.4.0'));
});

// what the bridge plugin (1.0.0) prints after ADD, as the flannel plugin receives it
const RESULT = {
  cniVersion: '1.0.0',
  interfaces: [
    { name: 'cni0', mac: '2a:0c:1b:6e:8f:01' },
    { name: 'veth5d2c0a1e', mac: '6e:3f:aa:10:20:30' },
    { name: 'eth0', mac: '9a:7b:01:02:03:04', sandbox: '/var/run/netns/pod1' },
  ],
  ips: [{ interface: 2, address: '10.244.1.5/24', gateway: '10.244.1.1' }],
  routes: [{ dst: '10.244.0.0/16' }],
  dns: {},
};

test('pod fast path: pod IP and MAC, host veth and gateway MAC come from the bridge plugin result', () => {
  assert.deepEqual(podFromResult(RESULT, 'cni0'), { ips: ['10.244.1.5'], podMAC: '9a:7b:01:02:03:04', hostVeth: 'veth5d2c0a1e', gwMAC: '2a:0c:1b:6e:8f:01' });
  // dual stack, IPv6 listed first: both are served, IPv4 first
  const dual = { ...RESULT, ips: [{ interface: 2, address: 'fd00::5/64' }, { interface: 2, address: 'fd00::6/64' }, ...RESULT.ips] };
  assert.deepEqual((podFromResult(dual, 'cni0') as { ips: string[] }).ips, ['10.244.1.5', 'fd00::5']);
  // IPv6-only
  assert.deepEqual(podFromResult({ ...RESULT, ips: [{ interface: 2, address: 'fd00::5/64' }] }, 'cni0'), {
    ips: ['fd00::5'],
    podMAC: '9a:7b:01:02:03:04',
    hostVeth: 'veth5d2c0a1e',
    gwMAC: '2a:0c:1b:6e:8f:01',
  });
  // an IPv6 address of another interface (a second one in the sandbox) is not this veth's
  const other = {
    ...RESULT,
    interfaces: [...RESULT.interfaces, { name: 'net1', mac: '9a:7b:01:02:03:05', sandbox: '/var/run/netns/x' }],
    ips: [...RESULT.ips, { interface: 3, address: 'fd00::5/64' }],
  };
  assert.deepEqual((podFromResult(other, 'cni0') as { ips: string[] }).ips, ['10.244.1.5']);
});

test('pod fast path: a result it cannot use gives a reason, never a wrong registration', () => {
  assert.match(podFromResult({}, 'cni0') as string, /no interfaces/);
  assert.match(podFromResult({ ...RESULT, ips: [{ interface: 2, address: 'not-an-ip/64' }] }, 'cni0') as string, /no IPv4 or IPv6/);
  assert.match(podFromResult(RESULT, 'mybr0') as string, /no bridge mybr0/);
  assert.match(podFromResult({ ...RESULT, interfaces: [RESULT.interfaces[0], RESULT.interfaces[2]], ips: [{ interface: 1, address: '10.244.1.5/24' }] }, 'cni0') as string, /no host-side veth/);
  assert.match(podFromResult({ ...RESULT, interfaces: [RESULT.interfaces[0], RESULT.interfaces[1], { name: 'eth0', sandbox: '/x' }] }, 'cni0') as string, /no pod interface with a MAC/);
});
