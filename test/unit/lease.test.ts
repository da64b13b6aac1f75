import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeAttrs, encodeAttrs, decodeVxlanData, encodeVxlanData } from '../../control/subnet/lease.ts';
import { parseSubnetKey, subnetKey, formatCidr, overlaps, parseCidr } from '../../control/subnet/ip4.ts';

// Values as flannel v0.28 writes them (vxlan, host-gw, udp) and as older versions did (no VNI, no PublicIPv6).
const FLANNEL_VXLAN = '{"PublicIP":"192.168.56.12","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}';
const FLANNEL_HOSTGW = '{"PublicIP":"192.168.56.13","PublicIPv6":null,"BackendType":"host-gw"}';
const FLANNEL_UDP = '{"PublicIP":"192.168.56.14","PublicIPv6":null}';
const OLD_VXLAN = '{"PublicIP":"10.0.2.15","BackendType":"vxlan","BackendData":{"VtepMAC":"ae:33:cd:1b:2a:4e"}}';

test('flannel lease values round-trip byte for byte', () => {
  for (const v of [FLANNEL_VXLAN, FLANNEL_HOSTGW, FLANNEL_UDP]) assert.equal(encodeAttrs(decodeAttrs(v)), v);
});

test('we write exactly flannel vxlan shape', () => {
  const v = encodeAttrs({ publicIP: '192.168.56.12', publicIPv6: null, backendType: 'vxlan', backendData: encodeVxlanData({ vni: 1, vtepMAC: 'c6:d2:32:6f:8f:44' }) });
  assert.equal(v, FLANNEL_VXLAN);
});

test('older writers without VNI or PublicIPv6 are read leniently', () => {
  const a = decodeAttrs(OLD_VXLAN);
  assert.equal(a.publicIPv6, null);
  assert.deepEqual(decodeVxlanData(a), { vni: 1, vtepMAC: 'ae:33:cd:1b:2a:4e' });
});

test('malformed lease values are rejected with a reason', () => {
  assert.throws(() => decodeAttrs('{'), /not JSON/);
  assert.throws(() => decodeAttrs('"x"'), /not a JSON object/);
  assert.throws(() => decodeAttrs('{"PublicIP":"1.2.3"}'), /PublicIP/);
  assert.throws(() => decodeAttrs('{"PublicIP":"1.2.3.4","BackendType":7}'), /BackendType/);
  assert.throws(() => decodeAttrs('x'.repeat(70000)), /bytes/);
  const vx = (d: unknown) => decodeVxlanData({ publicIP: '1.2.3.4', publicIPv6: null, backendType: 'vxlan', backendData: d });
  assert.throws(() => vx(undefined), /BackendData/);
  assert.throws(() => vx({ VtepMAC: 'zz:zz:zz:zz:zz:zz' }), /not a MAC/);
  assert.throws(() => vx({ VtepMAC: '01:00:5e:00:00:01' }), /unicast/);
  assert.throws(() => vx({ VtepMAC: '00:00:00:00:00:00' }), /unicast/);
  assert.throws(() => vx({ VNI: -1, VtepMAC: 'aa:bb:cc:dd:ee:f0' }), /VNI/);
});

test('subnet keys in flannel format', () => {
  assert.equal(subnetKey(parseCidr('10.244.3.0/24')!), '10.244.3.0-24');
  assert.equal(formatCidr(parseSubnetKey('10.244.3.0-24')!), '10.244.3.0/24');
  assert.equal(parseSubnetKey('10.244.3.1-24'), undefined, 'host bits set');
  assert.equal(parseSubnetKey('10.244.3.0'), undefined);
  assert.equal(parseSubnetKey('10.244.3.0-40'), undefined);
  assert.equal(parseSubnetKey('010.244.3.0-24'), undefined);
});

test('overlap', () => {
  assert.ok(overlaps(parseCidr('10.0.0.0/16')!, parseCidr('10.0.5.0/24')!));
  assert.ok(!overlaps(parseCidr('10.0.4.0/24')!, parseCidr('10.0.5.0/24')!));
});
