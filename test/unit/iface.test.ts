import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseInterface } from '../../control/iface/select.ts';
import type { Addr, Link, Route } from '../../control/kernel/netlink.ts';

const link = (index: number, name: string): Link => ({ index, name, kind: '', mtu: 1500, mac: '02:00:00:00:00:0' + index, flags: 1, master: 0, parent: 0, operstate: 6 });
const addr = (index: number, address: string): Addr => ({ index, family: 2, address, prefixLen: 24, scope: 0 });
const links = [link(1, 'lo'), link(2, 'eth0'), link(3, 'eth1'), link(4, 'bond0')];
const addrs = [addr(1, '127.0.0.1'), addr(2, '10.0.0.5'), addr(3, '192.168.56.12'), addr(4, '172.16.0.9')];
const routes: Route[] = [{ family: 2, dst: '0.0.0.0', dstLen: 0, gateway: '10.0.0.1', dev: 2, table: 254, protocol: 3, scope: 0, type: 1, flags: 0, priority: 0 }];
const choose = (o: Partial<Parameters<typeof chooseInterface>[3]>) => chooseInterface(links, addrs, routes, { iface: [], ifaceRegex: [], ...o });

test('default: the interface of the default route and its first IPv4 address', () => {
  const c = choose({});
  assert.equal(c.iface.name, 'eth0');
  assert.equal(c.ifaceAddr, '10.0.0.5');
  assert.equal(c.publicIP, '10.0.0.5');
});

test('--iface by name or by IP, first match wins, missing entries skipped', () => {
  assert.equal(choose({ iface: ['nope', 'eth1'] }).iface.name, 'eth1');
  const byIp = choose({ iface: ['172.16.0.9'] });
  assert.equal(byIp.iface.name, 'bond0');
  assert.equal(byIp.ifaceAddr, '172.16.0.9');
});

test('--iface-regex matches IPs first, then names', () => {
  assert.equal(choose({ ifaceRegex: ['^192\\.168\\.'] }).iface.name, 'eth1');
  assert.equal(choose({ ifaceRegex: ['^bond'] }).iface.name, 'bond0');
  assert.equal(choose({ iface: ['nope'], ifaceRegex: ['^bond'] }).iface.name, 'bond0', 'regex used when no --iface matches');
});

test('--public-ip overrides only the published address', () => {
  const c = choose({ iface: ['eth1'], publicIP: '203.0.113.4' });
  assert.equal(c.ifaceAddr, '192.168.56.12');
  assert.equal(c.publicIP, '203.0.113.4');
});

test('clear errors when nothing matches', () => {
  assert.throws(() => choose({ iface: ['wlan9'] }), /no interface matches --iface \["wlan9"\]/);
  assert.throws(() => choose({ ifaceRegex: ['('] }), /not a valid regular expression/);
  assert.throws(() => chooseInterface(links, addrs, [], { iface: [], ifaceRegex: [] }), /no default route/);
  assert.throws(() => chooseInterface([...links, link(5, 'eth9')], addrs, [], { iface: ['eth9'], ifaceRegex: [] }), /eth9 has no IPv4 address/);
});

test('--public-ip without --iface: the interface that holds it, as flannel does; an address no interface holds is an error', () => {
  const c = choose({ publicIP: '192.168.56.12' });
  assert.equal(c.iface.name, 'eth1', "not the default route's eth0");
  assert.equal(c.ifaceAddr, '192.168.56.12');
  assert.equal(c.publicIP, '192.168.56.12');
  assert.throws(() => choose({ publicIP: '203.0.113.4' }), /--public-ip 203\.0\.113\.4 is on no interface of this node/);
});

test("--iface-can-reach: the interface and source address of the kernel's route to it, after --iface and --iface-regex", () => {
  const via = (dev: number, prefsrc?: string) => ({ route: { ...routes[0]!, dev, prefsrc } });
  const c = chooseInterface(links, addrs, routes, { iface: [], ifaceRegex: [], ifaceCanReach: '192.168.56.1' }, via(3, '192.168.56.12'));
  assert.equal(c.iface.name, 'eth1');
  assert.equal(c.ifaceAddr, '192.168.56.12', "flannel takes the route's source address");
  assert.equal(
    chooseInterface(links, addrs, routes, { iface: ['wlan9'], ifaceRegex: ['^nomatch$'], ifaceCanReach: '192.168.56.1' }, via(3)).iface.name,
    'eth1',
    'used when --iface and --iface-regex match nothing',
  );
  assert.equal(chooseInterface(links, addrs, routes, { iface: ['bond0'], ifaceRegex: [], ifaceCanReach: '192.168.56.1' }, via(3)).iface.name, 'bond0', '--iface first');
  assert.throws(
    () => chooseInterface(links, addrs, routes, { iface: [], ifaceRegex: [], ifaceCanReach: '198.51.100.1' }, { error: 'netlink route get: ENETUNREACH' }),
    /--iface-can-reach 198\.51\.100\.1: no route: .*ENETUNREACH/,
  );
});

test('IPv6 (flannel LookupExtIface with its IP stack): the global IPv6 of the chosen interface, --public-ipv6, --iface by IPv6, IPv6-only default route', () => {
  const a6 = (index: number, address: string, scope = 0): Addr => ({ index, family: 10, address, prefixLen: 64, scope });
  const all = [...addrs, a6(2, 'fe80::1', 253), a6(2, 'fd00::5'), a6(3, 'fd00:56::12')];
  const r6: Route[] = [{ family: 10, dst: '::', dstLen: 0, gateway: 'fd00:56::1', dev: 3, table: 254, protocol: 3, scope: 0, type: 1, flags: 0, priority: 0 }];
  const dual = chooseInterface(links, all, routes, { iface: [], ifaceRegex: [], stack: 'dual' });
  assert.deepEqual([dual.iface.name, dual.ifaceAddr, dual.ifaceAddr6, dual.publicIPv6], ['eth0', '10.0.0.5', 'fd00::5', 'fd00::5'], 'the global address, never the link-local one');
  assert.equal(chooseInterface(links, all, routes, { iface: [], ifaceRegex: [], stack: 'dual', publicIPv6: '2001:db8::9' }).publicIPv6, '2001:db8::9');
  const byV6 = chooseInterface(links, all, routes, { iface: ['fd00:56::12'], ifaceRegex: [], stack: 'dual' });
  assert.deepEqual([byV6.iface.name, byV6.ifaceAddr, byV6.ifaceAddr6], ['eth1', '192.168.56.12', 'fd00:56::12']);
  const only = chooseInterface(links, all, r6, { iface: [], ifaceRegex: [], stack: 'ipv6' });
  assert.deepEqual(
    [only.iface.name, only.ifaceAddr, only.publicIP, only.ifaceAddr6],
    ['eth1', '', '0.0.0.0', 'fd00:56::12'],
    "IPv6-only: the IPv6 default route's interface; PublicIP is Go's zero IP4",
  );
  assert.throws(() => chooseInterface(links, all, routes, { iface: ['bond0'], ifaceRegex: [], stack: 'dual' }), /bond0 has no global IPv6 address/);
});
