#!/usr/bin/env bash
# Provisions one node of the Vagrant lab (and is exercised by test/e2e/vagrant-provision.test.ts in
# the netns lab). The install steps are scripts/setup.sh's, the one source of truth.
#   provision.sh <node-ip> <etcd-ip> [etcd]      the third word makes this node run etcd too
# Environment, for tests and unusual layouts:
#   PROJECT_DIR       the project checkout (default /vagrant)
#   PROVISION_ROOT    prefix for every file written (default: none, the real /etc, /opt)
#   PROVISION_START=0 write files only: no setup, no systemctl
#   SUBNET_FILE       flanneld's subnet file (default /run/flannel/subnet.env)
#   FLANNELD_EXTRA_ARGS  appended to flanneld's command line
set -euo pipefail
node_ip=${1:?node IP}
etcd_ip=${2:?etcd IP}
role=${3:-}
src=${PROJECT_DIR:-/vagrant}
root=${PROVISION_ROOT:-}
start=${PROVISION_START:-1}
subnet_file=${SUBNET_FILE:-/run/flannel/subnet.env}
network_config='{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}'

if [ "$start" = 1 ]; then SETUP_PROFILE=node bash "$src/scripts/setup.sh"; fi

if [ "$role" = etcd ]; then
  mkdir -p "$root/etc/default"
  cat > "$root/etc/default/etcd" <<ETCD
ETCD_NAME=node1
ETCD_LISTEN_CLIENT_URLS=http://127.0.0.1:2379,http://$etcd_ip:2379
ETCD_ADVERTISE_CLIENT_URLS=http://$etcd_ip:2379
ETCD
  if [ "$start" = 1 ]; then
    systemctl restart etcd
    for _ in $(seq 1 30); do etcdctl --endpoints="http://$etcd_ip:2379" endpoint health >/dev/null 2>&1 && break; sleep 1; done
    etcdctl --endpoints="http://$etcd_ip:2379" put /coreos.com/network/config "$network_config"
  fi
fi

mkdir -p "$root/etc/systemd/system" "$root/etc/cni/net.d" "$root/opt/cni/bin"
cat > "$root/etc/systemd/system/flanneld.service" <<UNIT
[Unit]
Description=flanneld: flannel-compatible overlay network agent (BPF vxlan data plane)
Wants=network-online.target
After=network-online.target etcd.service

[Service]
# flanneld sends READY=1 (sd_notify) once the subnet file is written, as flannel does: units ordered
# after this one (the container runtime) start only when pods can get addresses
Type=notify
ExecStart=/usr/bin/env node --max-semi-space-size=1 $src/dist/control/cli/flanneld.js --etcd-endpoints=http://$etcd_ip:2379 --iface=$node_ip --subnet-file=$subnet_file --ip-masq ${FLANNELD_EXTRA_ARGS:-}
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
UNIT

# kube-flannel's standard CNI config: the flannel meta plugin delegating to bridge + host-local
cat > "$root/etc/cni/net.d/10-flannel.conflist" <<CNI
{
  "name": "cbr0",
  "cniVersion": "1.0.0",
  "plugins": [
    { "type": "flannel", "subnetFile": "$subnet_file", "delegate": { "hairpinMode": true, "isDefaultGateway": true } },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
CNI
ln -sf "$src/bin/flannel" "$root/opt/cni/bin/flannel"
for p in bridge host-local portmap loopback; do ln -sf "/usr/lib/cni/$p" "$root/opt/cni/bin/$p"; done

if [ "$start" = 1 ]; then
  systemctl daemon-reload
  systemctl enable --now flanneld
  for _ in $(seq 1 30); do [ -f "$subnet_file" ] && break; sleep 1; done
  cat "$subnet_file"
fi
