#!/usr/bin/env bash
# Builds the Vagrant lab's box locally, from Debian's packages only (no box can be downloaded here),
# and adds it to Vagrant as flannel-ebpf/bookworm (provider libvirt). The Vagrantfile uses it when present.
#   build-box.sh [--force]       --force rebuilds even when the box is already added
# Environment: BOX_WORK (scratch, default /var/tmp/flannel-ebpf-box), DEBIAN_MIRROR.
#
# What is in it, and why:
# - Debian 12 from debootstrap, Debian's cloud kernel (BPF, VXLAN, virtio), systemd, ifupdown (what
#   Vagrant's Debian guest plugin configures the private network with), openssh, sudo, rsync (the synced
#   folder), the vagrant user with Vagrant's insecure key (Vagrant swaps it for a fresh one on first up).
# - Every package scripts/setup.sh installs for a node, so provisioning installs nothing, and this host's
#   Node.js (Debian's is 18; the project needs 20): the lab's VMs run the tree built once on the host.
# - A plain disk: an MBR, one ext4 partition written by mke2fs straight from the chroot, and syslinux's
#   extlinux as the bootloader (installed from the host: no grub inside a chroot), so any libvirt boots it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
trap 'echo "build-box: failed (line $LINENO): $BASH_COMMAND" >&2' ERR
BOX=flannel-ebpf/bookworm
work=${BOX_WORK:-/var/tmp/flannel-ebpf-box}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "${1:-}" != --force ] && vagrant box list 2>/dev/null | grep -q "^$BOX "; then
  echo "build-box: $BOX is already added (--force rebuilds it)"
  exit 0
fi

need=()
for p in debootstrap qemu-utils e2fsprogs extlinux fdisk; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# setup.sh's package list for a node (SETUP_PROFILE=node), read from setup.sh itself: one source of truth
node_pkgs=$(bash -c 'source <(sed -n "/^PKGS=(/,/)/p" "$1"); echo "${PKGS[@]}"' _ "$here/../scripts/setup.sh")
box_pkgs="systemd-sysv udev dbus ifupdown isc-dhcp-client openssh-server sudo rsync ca-certificates
  linux-image-cloud-amd64 initramfs-tools kmod procps less $node_pkgs"

root=$work/root
rm -rf "$work"
mkdir -p "$work"
unmount() {
  for m in "$root/dev/pts" "$root/dev" "$root/proc" "$root/sys" "$work/mnt"; do mountpoint -q "$m" 2>/dev/null && umount -l "$m"; done
  return 0
}
# --one-file-system: should an unmount fail, never follow a bind mount into the host's /dev
trap 'unmount; rm -rf --one-file-system "$root"' EXIT

t0=$(date +%s)
echo "build-box: debootstrap bookworm into $root"
debootstrap --variant=minbase --include=apt-utils bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
  { tail -20 "$work/debootstrap.log"; exit 1; }
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
mount -t devpts devpts "$root/dev/pts"
# no service starts inside the chroot (etcd's, ssh's)
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
echo "build-box: installing $(wc -w <<<"$box_pkgs") packages"
# shellcheck disable=SC2086
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $box_pkgs >"$work/apt.log" 2>&1 ||
  { tail -20 "$work/apt.log"; exit 1; }

# this host's Node.js, with npm (the VMs run what the host built; npm only for a user's own use)
install -m 755 "$(command -v node)" "$root/usr/bin/node"
npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
if [ -d "$npm_dir" ]; then
  mkdir -p "$root/usr/lib/node_modules"
  cp -a "$npm_dir" "$root/usr/lib/node_modules/npm"
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/bin/npx"
fi

chroot "$root" /bin/bash -xeuo pipefail <<'GUEST'
useradd -m -s /bin/bash -G sudo vagrant
echo vagrant:vagrant | chpasswd
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' >/etc/sudoers.d/vagrant
chmod 440 /etc/sudoers.d/vagrant
install -d -m 700 -o vagrant -g vagrant /home/vagrant/.ssh
echo 'UseDNS no' >/etc/ssh/sshd_config.d/vagrant.conf
echo 'LABEL=root / ext4 defaults,errors=remount-ro 0 1' >/etc/fstab
cat >/etc/network/interfaces <<'NET'
auto lo
iface lo inet loopback
# the libvirt management network (Vagrant's ssh); Vagrant appends the private network below
auto eth0
iface eth0 inet dhcp
NET
echo localhost >/etc/hostname
# each VM makes its own identity at first boot: machine-id, ssh host keys
: >/etc/machine-id
rm -f /etc/ssh/ssh_host_*
cat >/etc/systemd/system/ssh-host-keys.service <<'UNIT'
[Unit]
Description=Generate this VM's ssh host keys
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
[Install]
WantedBy=multi-user.target
UNIT
systemctl enable ssh-host-keys.service ssh.service >/dev/null 2>&1
# Debian's etcd-server starts an etcd on every VM; provisioning configures and starts it on node 1 only
systemctl disable etcd.service >/dev/null 2>&1 || true
apt-get clean
rm -rf /var/lib/apt/lists/*
GUEST
vagrant_pub=$(find /usr/share/rubygems-integration /usr/lib/ruby /var/lib/gems /opt/vagrant -path '*vagrant*/keys/vagrant.pub' 2>/dev/null | head -1 || true)
[ -n "$vagrant_pub" ] || { echo "build-box: Vagrant's insecure public key (keys/vagrant.pub) not found" >&2; exit 1; }
install -m 600 -o 1000 -g 1000 "$vagrant_pub" "$root/home/vagrant/.ssh/authorized_keys"
rm -f "$root/usr/sbin/policy-rc.d"

box=$work/box
mkdir -p "$box"
kver=$(basename "$(readlink -f "$root/vmlinuz")" | sed 's/^vmlinuz-//')
cat >"$root/boot/extlinux.conf" <<BOOT
DEFAULT debian
TIMEOUT 1
LABEL debian
  KERNEL /boot/vmlinuz-$kver
  INITRD /boot/initrd.img-$kver
  APPEND root=LABEL=root rw console=ttyS0 net.ifnames=0 biosdevname=0
BOOT
unmount
echo "build-box: disk image"
# one partition from 1 MiB, filled from the chroot by mke2fs (no copy through a mount); syslinux's
# ext4 support stops short of the 64bit and metadata_csum features, so they stay off
size_gb=8
disk=$work/disk.raw
truncate -s "${size_gb}G" "$disk"
echo 'start=2048, type=83, bootable' | sfdisk -q "$disk"
mke2fs -q -t ext4 -O ^64bit,^metadata_csum -L root -E offset=$((2048 * 512)) -d "$root" "$disk" $(((size_gb * 1024 - 1) * 1024))k
mbr=$(ls /usr/lib/EXTLINUX/mbr.bin /usr/lib/syslinux/mbr/mbr.bin 2>/dev/null | head -1 || true)
dd if="$mbr" of="$disk" bs=440 count=1 conv=notrunc status=none
mnt=$work/mnt
mkdir -p "$mnt"
mount -o loop,offset=$((2048 * 512)) "$disk" "$mnt"
extlinux --install "$mnt/boot" >/dev/null 2>&1 || { umount "$mnt"; echo "build-box: extlinux --install failed" >&2; exit 1; }
umount "$mnt"
qemu-img convert -c -O qcow2 "$disk" "$box/box.img"
rm -f "$disk"
echo "{\"provider\":\"libvirt\",\"format\":\"qcow2\",\"virtual_size\":$size_gb}" >"$box/metadata.json"
tar -C "$box" -cf "$work/flannel-bookworm.box" metadata.json box.img
vagrant box add --force --name "$BOX" --provider libvirt "$work/flannel-bookworm.box"
rm -rf "$box" "$work/flannel-bookworm.box"
echo "build-box: $BOX added in $(($(date +%s) - t0)) s"
