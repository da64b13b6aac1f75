#!/usr/bin/env bash
# Run on a node (vagrant ssh node1 -c 'sudo /vagrant/vagrant/check.sh'): lists the leases, pings every
# other node's flannel.1 address across the overlay, and prints this node's status and BPF maps.
#   check.sh [etcd-endpoint] [bpf-pin-root]
set -euo pipefail
etcd=${1:-http://192.168.56.11:2379}
pins=${2:-/sys/fs/bpf/flannel}
src=${PROJECT_DIR:-/vagrant}
ctl=(node "$src/dist/control/cli/flannelctl.js")
own=$(sed -n 's/^FLANNEL_SUBNET=\([0-9.]*\)\.1\/.*/\1.0/p' "${SUBNET_FILE:-/run/flannel/subnet.env}")
echo "== leases"
"${ctl[@]}" leases --etcd-endpoints "$etcd"
fail=0
for sn in $("${ctl[@]}" leases --etcd-endpoints "$etcd" --json | node -e 'for (const l of JSON.parse(require("fs").readFileSync(0,"utf8"))) console.log(l.subnet.split("/")[0])'); do
  [ "$sn" = "$own" ] && continue
  if ping -c 2 -W 2 -q "$sn" >/dev/null; then echo "== overlay to $sn: ok"; else echo "== overlay to $sn: FAILED"; fail=1; fi
done
echo "== status"
"${ctl[@]}" status --socket "${STATUS_SOCKET:-/run/flannel/flanneld.sock}" || fail=1
echo "== BPF maps"
"${ctl[@]}" maps --bpf-pin-root "$pins" || echo "(no BPF maps: classic vxlan)"
exit $fail
