#!/bin/bash
# Installs everything the build, the demo and the test suite need, from
# Debian 12's archive. Idempotent; run as root.
set -euo pipefail

packages=(
  # build
  meson ninja-build pkg-config gcc clang
  libsystemd-dev libinih-dev uuid-dev libcmocka-dev libext2fs-dev comerr-dev zlib1g-dev ntfs-3g-dev
  # sanitizer and fuzzer runtimes
  libclang-rt-14-dev
  # real peers used by tests, demo and benchmarks
  python3 time qemu-utils e2fsprogs libvhdi-utils util-linux fdisk bzip2 jq
  xfsprogs   # mkfs.xfs: trim passes compared with fstrim on XFS
  dosfstools ntfs-3g   # mkfs.vfat, mkntfs: other file systems in partition tests
  systemd systemd-container dbus debootstrap
  # a real Samba server and SMB clients (test_samba; impacket for durable handles), and a real network
  # file system: sshfs against a loopback sshd (test_unsafe_fs)
  samba smbclient python3-samba python3-impacket sshfs openssh-server openssh-client iproute2
  # nspawn harness cache (tests/nspawn) and man page rendering (test_units)
  zstd man-db
  # the Debian package (tools/build-deb.sh, test_nspawn_deb) and piuparts
  dpkg-dev debhelper lintian fakeroot
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
