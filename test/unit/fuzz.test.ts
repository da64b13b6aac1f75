// Property-based fuzzing (fast-check) of everything the agent parses from someone else: the network
// config and the leases in etcd, the subnet keys, and the subnet file a previous run left. Each parser
// must either return a value that satisfies its invariants or throw its own error type with a message:
// never crash with a TypeError, never accept something it cannot use.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ConfigError, parseConfig } from '../../control/subnet/config.ts';
import { LeaseFormatError, decodeAttrs, decodeVxlanData, encodeAttrs } from '../../control/subnet/lease.ts';
import { contains, formatCidr, formatIp4, mask, parseIp4, parseSubnetKey, subnetKey } from '../../control/subnet/ip4.ts';
import { parseSubnetFile, readPreviousSubnet, renderSubnetFile } from '../../control/subnet/subnet-file.ts';
import { formatIp6, mask6, notAHostAddress6, parseCidr6, parseIp6 } from '../../control/subnet/ip6.ts';
import { leaseKeyName, parseLeaseKey } from '../../control/subnet/lease-key.ts';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const RUNS = Number(process.env.FUZZ_RUNS ?? 5000);
const params = { numRuns: RUNS };

/** Throws unless err is the parser's own error type carrying a message. */
function expected(err: unknown, type: new (...a: never[]) => Error): true {
  if (!(err instanceof type)) throw new Error(`unexpected ${(err as Error)?.constructor?.name}: ${(err as Error)?.message}`);
  assert.ok(err.message.length > 10, 'the error says what is wrong');
  return true;
}

// strings that look like what belongs in the fields, mixed with anything at all
const ipLike = fc.oneof(
  fc.ipV4(),
  fc.tuple(fc.nat(999), fc.nat(999), fc.nat(999), fc.nat(999)).map((p) => p.join('.')),
  fc.constantFrom('', '0.0.0.0', '255.255.255.255', '010.0.0.1', '1.2.3', '1.2.3.4.5', ' 1.2.3.4'),
  fc.string(),
);
const cidrLike = fc.oneof(
  fc.tuple(ipLike, fc.oneof(fc.nat(40), fc.string({ maxLength: 3 }))).map(([ip, l]) => `${ip}/${l}`),
  fc.string(),
);
const jsonValue = fc.oneof(fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.string(), fc.array(fc.nat()), fc.object());

test('config parser: any text gives a config whose ranges hold, or a ConfigError', () => {
  const backend = fc.oneof(
    fc.record({ Type: fc.constantFrom('vxlan', 'host-gw', 'udp', 'wireguard', '', 'VXLAN'), VNI: jsonValue, Port: jsonValue, MTU: jsonValue, DirectRouting: jsonValue }, { requiredKeys: [] }),
    jsonValue,
  );
  const configObject = fc.record(
    {
      Network: fc.oneof(cidrLike, jsonValue),
      SubnetLen: fc.oneof(fc.integer({ min: -2, max: 40 }), jsonValue),
      SubnetMin: fc.oneof(ipLike, jsonValue),
      SubnetMax: fc.oneof(ipLike, jsonValue),
      EnableIPv4: jsonValue,
      EnableIPv6: fc.oneof(fc.boolean(), jsonValue),
      Backend: backend,
    },
    { requiredKeys: [] },
  );
  // plausible configs too, so the accepting path is exercised, not only the rejections
  const plausible = fc.record({
    Network: fc.tuple(fc.ipV4(), fc.integer({ min: 8, max: 28 })).map(([ip, l]) => `${ip}/${l}`),
    SubnetLen: fc.integer({ min: 8, max: 30 }),
    Backend: fc.constant({ Type: 'vxlan' }),
  });
  const text = fc.oneof(
    configObject.map((o) => JSON.stringify(o)),
    plausible.map((o) => JSON.stringify(o)),
    fc.string(),
    fc.json(),
  );
  let accepted = 0;
  fc.assert(
    fc.property(text, (t) => {
      try {
        const c = parseConfig(t);
        accepted++;
        assert.ok(c.subnetLen >= c.network.len && c.subnetLen <= 32);
        assert.ok(c.subnetMin <= c.subnetMax, `SubnetMin ${formatIp4(c.subnetMin)} > SubnetMax ${formatIp4(c.subnetMax)}`);
        for (const ip of [c.subnetMin, c.subnetMax]) {
          assert.ok(contains(c.network, ip), `${formatIp4(ip)} outside ${formatCidr(c.network)}`);
          assert.equal((ip & mask(c.subnetLen)) >>> 0, ip, 'aligned to SubnetLen');
        }
        assert.equal(typeof c.backend.Type, 'string');
        return true;
      } catch (e) {
        return expected(e, ConfigError);
      }
    }),
    params,
  );
  assert.ok(accepted > RUNS / 50, `only ${accepted} of ${RUNS} configs were valid: the accepting path is barely tested`);
});

test('lease parser: any value gives usable attributes or a LeaseFormatError; accepted leases round-trip', () => {
  const mac = fc.oneof(
    fc.mixedCase(fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 6, maxLength: 6 }).map((b) => b.map((x) => x.toString(16).padStart(2, '0')).join(':'))),
    fc.string(),
    jsonValue,
  );
  const leaseObject = fc.record(
    {
      PublicIP: fc.oneof(ipLike, jsonValue),
      PublicIPv6: fc.oneof(fc.constant(null), fc.ipV6(), jsonValue),
      BackendType: fc.oneof(fc.constantFrom('vxlan', 'host-gw', ''), jsonValue),
      BackendData: fc.oneof(fc.record({ VNI: fc.oneof(fc.integer({ min: -1, max: 0x1000000 }), jsonValue), VtepMAC: mac }, { requiredKeys: [] }), jsonValue),
    },
    { requiredKeys: [] },
  );
  // flannel-shaped leases too, so the accepting path is exercised, not only the rejections
  const plausible = fc.record({
    PublicIP: fc.oneof(fc.ipV4(), fc.constantFrom('0.0.0.0', '255.255.255.255', '127.0.0.1', '224.0.0.1', '239.1.2.3', '240.0.0.1', '0.1.2.3')),
    PublicIPv6: fc.oneof(fc.constant(null), fc.ipV6(), fc.constantFrom('::', '::1', 'ff02::1', 'fe80::1', '::ffff:10.0.0.1', 'FD00::0:1')),
    BackendType: fc.constantFrom('vxlan', 'host-gw'),
    BackendData: fc.record({ VNI: fc.integer({ min: 0, max: 0xffffff }), VtepMAC: mac }),
    BackendV6Data: fc.oneof(fc.constant(undefined), fc.record({ VNI: fc.integer({ min: 0, max: 0xffffff }), VtepMAC: mac })),
  });
  const text = fc.oneof(
    leaseObject.map((o) => JSON.stringify(o)),
    plausible.map((o) => JSON.stringify(o)),
    fc.string(),
    fc.json(),
    fc.nat(4096).map((n) => JSON.stringify({ PublicIP: '10.0.0.1', BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '02:00:00:00:00:01', Pad: 'x'.repeat(64 * 1024 + n) } })),
  );
  let accepted = 0;
  fc.assert(
    fc.property(text, (t) => {
      try {
        const a = decodeAttrs(t);
        accepted++;
        assert.notEqual(parseIp4(a.publicIP), undefined);
        const first = Number(a.publicIP.split('.')[0]);
        // 0.0.0.0 is an IPv6-only node's (flannel writes Go's zero IP4), and only with an IPv6 address
        const v6only = a.publicIP === '0.0.0.0' && a.publicIPv6 !== null;
        assert.ok(v6only || (first !== 0 && first !== 127 && first < 224), `PublicIP ${a.publicIP} cannot be a node (this network, loopback, multicast, reserved or broadcast)`);
        if (a.publicIPv6 !== null) {
          const v6 = parseIp6(a.publicIPv6);
          assert.ok(v6 !== undefined && formatIp6(v6) === a.publicIPv6, "PublicIPv6 is kept in Go's canonical form");
          assert.equal(notAHostAddress6(v6), undefined);
        }
        assert.deepEqual(decodeAttrs(encodeAttrs(a)), a, 'what we accept we can write back unchanged');
        try {
          const v = decodeVxlanData(a);
          assert.ok(Number.isInteger(v.vni) && v.vni >= 0 && v.vni <= 0xffffff);
          assert.match(v.vtepMAC, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
          assert.equal(parseInt(v.vtepMAC.slice(0, 2), 16) & 1, 0, 'unicast');
        } catch (e) {
          expected(e, LeaseFormatError);
        }
        return true;
      } catch (e) {
        return expected(e, LeaseFormatError);
      }
    }),
    params,
  );
  assert.ok(accepted > RUNS / 50, `only ${accepted} of ${RUNS} leases were valid`);
});

test('subnet-key parser: only canonical <ip>-<len> keys with zero host bits are subnets', () => {
  const keyLike = fc.oneof(
    fc.tuple(ipLike, fc.oneof(fc.nat(40), fc.string({ maxLength: 3 }))).map(([ip, l]) => `${ip}-${l}`),
    fc.tuple(fc.ipV4(), fc.nat(32)).map(([ip, l]) => `${ip}-${l}`),
    fc.string(),
  );
  fc.assert(
    fc.property(keyLike, (k) => {
      const s = parseSubnetKey(k);
      if (!s) return true;
      assert.ok(Number.isInteger(s.len) && s.len >= 0 && s.len <= 32);
      assert.equal((s.ip & mask(s.len)) >>> 0, s.ip, 'no host bits');
      assert.equal(subnetKey(s), k, 'an accepted key is the canonical name of its subnet');
      return true;
    }),
    params,
  );
  // and every subnet's canonical key parses back to it
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.nat(32), (ip, len) => {
      const s = { ip: (ip & mask(len)) >>> 0, len };
      assert.deepEqual(parseSubnetKey(subnetKey(s)), s);
    }),
    params,
  );
});

test('lease-key parser (dual-stack and IPv6-only keys): only canonical keys are accepted, and they round-trip', () => {
  const v6Like = fc.oneof(fc.ipV6(), fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }).map(formatIp6), fc.constantFrom('fd00::', 'FD00::', 'fd00:0::', 'fd00::1', '::', 'fd00:10:244:1::'));
  const keyLike = fc.oneof(
    fc.tuple(fc.oneof(fc.ipV4(), fc.constant('0.0.0.0')), fc.nat(32), v6Like, fc.oneof(fc.nat(130), fc.string({ maxLength: 4 }))).map(([a, l, b, m]) => `${a}-${l}&${b}-${m}`),
    fc.tuple(fc.constant('0.0.0.0-0'), v6Like, fc.nat(128)).map(([a, b, m]) => `${a}&${b}-${m}`),
    fc.string(),
  );
  let accepted = 0;
  fc.assert(
    fc.property(keyLike, (k) => {
      const s = parseLeaseKey(k);
      if (!s) return true;
      accepted++;
      assert.equal(leaseKeyName(s), k, 'an accepted key is the canonical name of its subnets');
      if (s.ipv6Subnet) assert.equal(s.ipv6Subnet.ip & mask6(s.ipv6Subnet.len), s.ipv6Subnet.ip, 'no host bits');
      else assert.ok(s.subnet.len > 0, '"0.0.0.0-0" alone names nothing');
      return true;
    }),
    params,
  );
  assert.ok(accepted > 0);
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 32 }), fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }), fc.nat(128), (ip, len, ip6, len6) => {
      const s = { subnet: { ip: (ip & mask(len)) >>> 0, len }, ipv6Subnet: { ip: ip6 & mask6(len6), len: len6 } };
      assert.deepEqual(parseLeaseKey(leaseKeyName(s)), s);
    }),
    params,
  );
  assert.equal(leaseKeyName({ subnet: { ip: 0, len: 0 }, ipv6Subnet: parseCidr6('fd00:10:244:1::/64')! }), '0.0.0.0-0&fd00:10:244:1::-64', "an IPv6-only node's key, as flannel writes it");
});

test('subnet-file parser: any file content yields a subnet or nothing, never an exception; our own files round-trip', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'flannel-test-fuzz-'));
  try {
    const line = fc.oneof(
      fc.tuple(fc.constantFrom('FLANNEL_SUBNET', 'FLANNEL_NETWORK', 'FLANNEL_MTU', 'X'), fc.oneof(cidrLike, fc.string())).map(([k, v]) => `${k}=${v}`),
      fc.string(),
    );
    const file = fc.oneof(
      fc.array(line, { maxLength: 8 }).map((l) => l.join('\n')),
      fc.string({ unit: 'binary' }),
    );
    const path = join(dir, 'subnet.env');
    await fc.assert(
      fc.asyncProperty(file, async (text) => {
        assert.equal(typeof parseSubnetFile(text), 'object');
        writeFileSync(path, text);
        const s = await readPreviousSubnet(path);
        if (s) assert.equal((s.subnet.ip & mask(s.subnet.len)) >>> 0, s.subnet.ip);
      }),
      { numRuns: Math.min(RUNS, 2000) },
    );
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 8, max: 30 }), fc.integer({ min: 68, max: 65535 }), fc.boolean(), (ip, len, mtu, ipMasq) => {
        const subnet = { ip: (ip & mask(len)) >>> 0, len };
        const vars = parseSubnetFile(renderSubnetFile({ network: { ip: (ip & mask(8)) >>> 0, len: 8 }, subnet, mtu, ipMasq }));
        assert.equal(vars.FLANNEL_MTU, String(mtu));
        assert.equal(vars.FLANNEL_IPMASQ, String(ipMasq));
        assert.equal(vars.FLANNEL_SUBNET, `${formatIp4(subnet.ip + 1)}/${len}`);
      }),
      params,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
