import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CniError, parseNetConf, parseSubnetEnv, renderDelegate } from '../../control/cni/delegate.ts';

const ENV = 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n';

test('the subnet file gives the lease as a network, as flannel\'s plugin passes it to host-local', () => {
  assert.deepEqual(parseSubnetEnv(ENV, 'f'), { network: '10.244.0.0/16', subnet: '10.244.3.0/24', mtu: 1450, ipMasq: true });
  assert.throws(() => parseSubnetEnv('FLANNEL_NETWORK=10.244.0.0/16\n', 'f'), (e: unknown) => e instanceof CniError && e.code === 7 && /no FLANNEL_SUBNET/.test(e.message));
  assert.throws(() => parseSubnetEnv(ENV.replace('1450', 'big'), 'f'), /FLANNEL_MTU/);
});

test('flannel defaults: bridge, isGateway, ipMasq opposite of FLANNEL_IPMASQ, MTU, host-local range and route', () => {
  const d = renderDelegate(parseNetConf('{"cniVersion":"0.4.0","name":"cbr0","type":"flannel"}'), parseSubnetEnv(ENV, 'f'));
  assert.deepEqual(d, {
    name: 'cbr0', type: 'bridge', ipMasq: false, mtu: 1450, isGateway: true, cniVersion: '0.4.0',
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
