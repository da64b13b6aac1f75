#!/usr/bin/env bash
# Boots the Vagrant lab for real and checks it: builds the project on this host and the box if missing
# (vagrant/build-box.sh), starts libvirt inside a network namespace of its own (the VMs' networks and
# NAT never touch the host's), `vagrant up`s the three VMs (KVM where a KVM guest really runs, qemu's
# TCG emulation where not), provisions them, runs vagrant/check.sh on each, and destroys everything,
# also on failure. Prints each step's time. Not part of the test command: under TCG it takes a while.
#   bash vagrant/boot-test.sh [--keep]     --keep leaves the VMs up (vagrant destroy -f tears them down)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
keep=${1:-}
ns=flvagrant
exec 9>/run/flannel-vagrant-boot-test.lock
flock -n 9 || { echo "boot-test: another boot test is running" >&2; exit 1; }

times=()
step() {
  local name=$1 t
  shift
  t=$(date +%s)
  echo "== $name"
  "$@"
  times+=("$(printf '%-40s %5d s' "$name" $(($(date +%s) - t)))")
}
report() { printf '%s\n' "== times" "${times[@]}"; }

host_packages() {
  local need=()
  for p in vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils dnsmasq-base; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}

# With /dev/kvm present a KVM vCPU can still stall (no nested virtualization on the host's own
# hypervisor): boot the box's disk under KVM for a while and look for the kernel's first line.
pick_driver() {
  driver=qemu
  if [ -w /dev/kvm ]; then
    local img serial
    img=$(ls "${VAGRANT_HOME:-$HOME/.vagrant.d}"/boxes/flannel-ebpf-VAGRANTSLASH-bookworm/*/libvirt/box.img | head -1)
    serial=$(mktemp)
    timeout 60 qemu-system-x86_64 -accel kvm -m 512 -display none -serial "file:$serial" -no-reboot \
      -drive "file=$img,if=virtio,snapshot=on" &
    local pid=$!
    for _ in $(seq 1 60); do grep -q "Linux version" "$serial" 2>/dev/null && break; sleep 1; done
    grep -q "Linux version" "$serial" && driver=kvm
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "$serial"
  fi
  echo "boot-test: driver $driver"
}

started_libvirt=0
start_libvirt() {
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip netns exec "$ns" virtlogd -d
  ip netns exec "$ns" libvirtd -d
  started_libvirt=1
  for _ in $(seq 1 30); do virsh -c qemu:///system version >/dev/null 2>&1 && return 0; sleep 1; done
  echo "boot-test: libvirtd did not answer" >&2
  return 1
}

in_ns() { ip netns exec "$ns" env VAGRANT_DEFAULT_PROVIDER=libvirt FLANNEL_VAGRANT_DRIVER="$driver" "$@"; }

cleanup() {
  local rc=$?
  if [ "$keep" != --keep ] || [ $rc -ne 0 ]; then
    (cd "$here" && in_ns vagrant destroy -f >/dev/null 2>&1) || true
    if [ $started_libvirt = 1 ]; then
      pkill -f "^libvirtd -d" || true
      pkill -f "^virtlogd -d" || true
      # what libvirt started in the namespace (dnsmasq, qemu), then the namespace
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
      sleep 1
      ip netns del "$ns" 2>/dev/null || true
    fi
  fi
  report
  [ $rc -eq 0 ] && echo "boot-test: passed" || echo "boot-test: FAILED ($rc)"
  exit $rc
}

step "host packages" host_packages
step "build the project on the host" bash "$here/../scripts/setup.sh"
step "box (vagrant/build-box.sh)" bash "$here/build-box.sh"
pick_driver
if ip netns list | grep -qw "$ns"; then echo "boot-test: namespace $ns exists (a previous run?); remove it first" >&2; exit 1; fi
if pgrep -x libvirtd >/dev/null; then echo "boot-test: a libvirtd runs already; this test starts its own in a namespace" >&2; exit 1; fi
trap cleanup EXIT
step "libvirt in namespace $ns" start_libvirt
cd "$here"
step "vagrant up --no-provision (3 VMs, $driver)" in_ns vagrant up --no-provision
step "vagrant provision (3 VMs)" in_ns vagrant provision
for i in 1 2 3; do
  step "check.sh on node$i" in_ns vagrant ssh "node$i" -c 'sudo /vagrant/vagrant/check.sh'
done
