#!/usr/bin/env bash
# One source of truth for what a machine needs to build and run this project:
# used by the README's quick start, by .ci/run and by the Vagrant provisioning.
# Idempotent: installs only what is missing, rebuilds only what is stale.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(clang llvm libbpf-dev libelf-dev zlib1g-dev libmnl-dev bpftool iproute2 iptables nftables
      etcd-server etcd-client containernetworking-plugins iperf3 qperf iputils-ping tcpdump conntrack ethtool
      python3 make g++ pkg-config)

# vagrant only validates the Vagrant lab's Vagrantfile in the tests; the lab's VMs themselves
# (vagrant/provision.sh sets SETUP_PROFILE=node) do not need it
if [ "${SETUP_PROFILE:-dev}" != node ]; then PKGS+=(vagrant); fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's etcd-server package may start a system etcd on 127.0.0.1:2379 where systemd runs; the
# tests and the netns lab start their own (free loopback ports, or inside namespaces) and leave it be:
# the Vagrant lab's node 1 uses exactly that service.

# npm ci runs the package's install script (node-gyp rebuild, npm's bundled node-gyp) for the addon.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
addon=build/Release/flannel_native.node
if [ ! -f "$addon" ] || [ -n "$(find native binding.gyp -newer "$addon" 2>/dev/null | head -1)" ]; then
  npm run --silent build:native
fi
make -s -C bpf
# the stamp is written only after tsc succeeds: a failed build is never taken for a fresh one
stamp=dist/.built
if [ ! -f "$stamp" ] || [ -n "$(find control tsconfig.json package-lock.json -newer "$stamp" 2>/dev/null | head -1)" ]; then
  npx tsc -p tsconfig.json
  touch "$stamp"
fi
echo "setup: done"
