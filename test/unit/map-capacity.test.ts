// How many peers the BPF maps are sized for, from the network config: one per subnet of the network.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FL_MAX_PEERS, mapLayout, peerCapacity } from '../../control/datapath/objects.ts';
import { parseConfig } from '../../control/subnet/config.ts';

const cap = (c: Record<string, unknown>) => peerCapacity(parseConfig(JSON.stringify({ Backend: { Type: 'vxlan' }, ...c })));

test('peer maps are sized by the subnets the network holds', () => {
  assert.equal(cap({ Network: '10.244.0.0/16' }), 256, "flannel's default: a /16 of /24s");
  assert.equal(cap({ Network: '10.0.0.0/8' }), FL_MAX_PEERS, 'a /8 of /24s: 65536, the most');
  assert.equal(cap({ Network: '10.0.0.0/8', SubnetLen: 28 }), FL_MAX_PEERS, 'more subnets than that: capped');
  assert.equal(cap({ Network: '10.244.0.0/20' }), 16, 'a /20 of /24s');
  assert.equal(cap({ Network: '10.244.0.0/22' }), 16, 'never less than 16');
  assert.equal(cap({ Network: '10.244.0.0/16', SubnetLen: 26 }), 1024);
  // dual stack: a lease needs one subnet of each family
  assert.equal(cap({ Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:10:244::/56', IPv6SubnetLen: 64 }), 256);
  assert.equal(cap({ Network: '10.244.0.0/12', EnableIPv6: true, IPv6Network: 'fd00:10:244::/56', IPv6SubnetLen: 64 }), 256, 'the IPv6 side holds fewer');
  assert.equal(cap({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00:10:244::/48', IPv6SubnetLen: 64 }), FL_MAX_PEERS, 'IPv6-only: its own count');
});

test('the per-CPU counters are preallocated where that costs at most 64 MiB, now counted from their size', () => {
  assert.equal(mapLayout(2, { fl_peer_stats: 65536 }).flags.fl_peer_stats, 0);
  assert.equal(mapLayout(64, { fl_peer_stats: 65536 }).flags.fl_peer_stats, 1, '65536 x 32 B x 64 CPUs = 128 MiB');
  assert.equal(mapLayout(256, { fl_peer_stats: 256 }).flags.fl_peer_stats, 0, 'a /16 network on a 256-CPU host: 2 MiB');
});
