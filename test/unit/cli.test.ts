import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyFlannelEnv, buildCommand, checkFlags, normalizeGoFlags, type FlanneldFlags } from '../../control/cli/flanneld.ts';

function parse(argv: string[], env: Record<string, string> = {}) {
  const saved = { ...process.env };
  Object.assign(process.env, env);
  try {
    const cmd = buildCommand()
      .exitOverride()
      .configureOutput({ writeErr: () => undefined });
    applyFlannelEnv(cmd, process.env);
    cmd.parse(normalizeGoFlags(argv), { from: 'user' });
    return cmd.opts<FlanneldFlags>();
  } finally {
    process.env = saved;
  }
}

test('flannel defaults', () => {
  const f = parse([]);
  assert.equal(f.etcdEndpoints, 'http://127.0.0.1:4001,http://127.0.0.1:2379', "flannel's default: the legacy client port, then the IANA one");
  assert.equal(f.etcdPrefix, '/coreos.com/network');
  assert.equal(f.subnetFile, '/run/flannel/subnet.env');
  assert.equal(f.subnetLeaseRenewMargin, 60);
  assert.equal(f.ipMasq, false);
  assert.equal(f.healthzPort, 0);
  assert.deepEqual(f.iface, []);
  assert.equal(f.iptablesResync, 5);
  assert.equal(f.iptablesForwardRules, true);
  assert.equal(parse(['--iptables-forward-rules=false']).iptablesForwardRules, false);
  assert.equal(f.statusSocket, '/run/flannel/flanneld.sock');
});

test('Go-style single-dash flags and -v=N, as in existing flannel unit files', () => {
  const f = parse(['-etcd-endpoints=http://10.0.0.1:2379', '-iface=eth1', '-iface', 'eth2', '-ip-masq', '-v=2']);
  assert.equal(f.etcdEndpoints, 'http://10.0.0.1:2379');
  assert.deepEqual(f.iface, ['eth1', 'eth2']);
  assert.equal(f.ipMasq, true);
  assert.equal(f.verbosity, 2);
  assert.equal(parse(['--ip-masq=false']).ipMasq, false);
});

test('FLANNELD_* environment variables', () => {
  const f = parse([], { FLANNELD_ETCD_PREFIX: '/x/network', FLANNELD_IP_MASQ: 'true', FLANNELD_IFACE: 'eth3', FLANNELD_SUBNET_LEASE_RENEW_MARGIN: '30' });
  assert.equal(f.etcdPrefix, '/x/network');
  assert.equal(f.ipMasq, true);
  assert.deepEqual(f.iface, ['eth3']);
  assert.equal(f.subnetLeaseRenewMargin, 30);
  assert.equal(parse([], { FLANNELD_IP_MASQ: 'false' }).ipMasq, false);
});

test('bad and conflicting flags are clear errors', () => {
  assert.throws(() => parse(['--bogus']), /unknown option '--bogus'/);
  assert.throws(() => parse(['--subnet-lease-renew-margin', '1440']), /from 1 to 1439/);
  assert.throws(() => parse(['--public-ip', '1.2.3']), /not an IPv4 address/);
  assert.throws(() => parse(['--healthz-port', 'x']), /from 0 to 65535/);
  const base = parse([]);
  assert.match(checkFlags({ ...base, etcdCertfile: '/c' })!, /go together/);
  assert.equal(checkFlags({ ...base, etcdCertfile: '/c', etcdKeyfile: '/k' }), undefined, "no --etcd-cafile: the default roots, as flannel's");
  assert.match(checkFlags({ ...base, etcdPassword: 'p' })!, /needs --etcd-username/);
  assert.match(checkFlags({ ...base, etcdEndpoints: 'localhost:2379' })!, /must be http/);
  assert.equal(checkFlags(base), undefined);
});

test("FLANNELD_* as flannel reads them: an empty variable is not set; a switch's variable is a boolean; a bad one names itself", () => {
  assert.equal(parse([], { FLANNELD_ETCD_PREFIX: '' }).etcdPrefix, '/coreos.com/network', 'empty: the default, not an empty prefix');
  assert.equal(parse([], { FLANNELD_ETCD_PREFIX: '/x' }).etcdPrefix, '/x');
  assert.equal(parse([], { FLANNELD_NO_BPF: 'false' }).bpf, true, 'FLANNELD_NO_BPF=false leaves BPF on');
  assert.equal(parse([], { FLANNELD_NO_BPF: 'true' }).bpf, false);
  assert.equal(parse([], { FLANNELD_NO_BPF: '' }).bpf, true);
  assert.equal(parse([], { FLANNELD_IP_MASQ: 'false' }).ipMasq, false);
  assert.equal(parse([], { FLANNELD_IP_MASQ: '1' }).ipMasq, true);
  assert.throws(() => parse([], { FLANNELD_NO_BPF: 'maybe' }), /FLANNELD_NO_BPF="maybe": must be true or false \(it sets --no-bpf\)/);
});

test("--version prints the version and nothing else, as flannel's does", () => {
  let out = '';
  const cmd = buildCommand()
    .exitOverride()
    .configureOutput({ writeOut: (s) => (out += s), writeErr: () => undefined });
  assert.throws(
    () => cmd.parse(normalizeGoFlags(['--version']), { from: 'user' }),
    (e: { code?: string }) => e.code === 'commander.version',
  );
  assert.match(out, /^\d+\.\d+\.\d+\n$/);
  assert.match(buildCommand().helpInformation(), /--version\s+print the version and exit/);
});

test("flannel's --iface-can-reach, --ip-blackhole-route, --ip-masq-fully-random-disable, --net-config-path, as flags and FLANNELD_* variables", () => {
  const d = parse([]);
  assert.equal(d.ifaceCanReach, undefined);
  assert.equal(d.ipBlackholeRoute, false);
  assert.equal(d.ipMasqFullyRandomDisable, false);
  assert.equal(d.netConfigPath, undefined);
  const f = parse(['-iface-can-reach=10.0.0.1', '--ip-blackhole-route', '--ip-masq-fully-random-disable=true', '--net-config-path', '/etc/kube-flannel/net-conf.json']);
  assert.equal(f.ifaceCanReach, '10.0.0.1');
  assert.equal(f.ipBlackholeRoute, true);
  assert.equal(f.ipMasqFullyRandomDisable, true);
  assert.equal(f.netConfigPath, '/etc/kube-flannel/net-conf.json');
  const e = parse([], { FLANNELD_IFACE_CAN_REACH: '10.0.0.2', FLANNELD_IP_BLACKHOLE_ROUTE: 'true', FLANNELD_IP_MASQ_FULLY_RANDOM_DISABLE: '1', FLANNELD_NET_CONFIG_PATH: '/x.json' });
  assert.deepEqual([e.ifaceCanReach, e.ipBlackholeRoute, e.ipMasqFullyRandomDisable, e.netConfigPath], ['10.0.0.2', true, true, '/x.json']);
  assert.throws(() => parse(['--iface-can-reach=gateway']), /not an IPv4 address/);
});
