#!/bin/bash
# The demo: installs what it needs, builds vhdreclaim, makes two VHDX images
# with real tools (qemu-img, mkfs.ext4, debugfs), reclaims them with
# `vhdreclaimd --once`, and proves with qemu-img and e2fsck that nothing the
# guest can read changed. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/install-deps.sh
[ -d build ] || meson setup build >/dev/null
ninja -C build >/dev/null
daemon=$(pwd)/build/daemon/vhdreclaimd
ctl=$(pwd)/build/ctl/vhdreclaimctl

work=$(mktemp -d /tmp/vhdreclaim-demo.XXXXXX)
daemon_pid=
trap '[ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
usage() { printf '%-28s apparent %6s   allocated %6s\n' "$1" "$(du -h --apparent-size "$1" | cut -f1)" "$(du -h "$1" | cut -f1)"; }

step "1. A Hyper-V style disk: 1 GiB VHDX, 32 MiB blocks, 96 MiB of data of which 48 MiB are zeros"
qemu-img create -q -f vhdx -o subformat=dynamic,block_size=32M disk.vhdx 1G
qemu-io -f vhdx -c 'write -q -P 0xa5 0 48M' -c 'write -q -P 0 48M 48M' disk.vhdx
cp --sparse=never disk.vhdx disk-before.vhdx
usage disk.vhdx

step "vhdreclaimd --inspect disk.vhdx"
"$daemon" --inspect disk.vhdx

step "vhdreclaimd --once --dry-run --json disk.vhdx"
"$daemon" --once --dry-run --json disk.vhdx

step "vhdreclaimd --once --json disk.vhdx"
"$daemon" --once --json disk.vhdx
usage disk.vhdx
qemu-img check -q disk.vhdx && echo "qemu-img check: no errors"
qemu-img compare -q disk-before.vhdx disk.vhdx && echo "qemu-img compare: guest content identical"

step "2. A WSL-style ext4.vhdx: 256 MiB ext4 with 120 MiB of files, 90 MiB of them deleted"
mkdir tree
for i in $(seq 1 12); do head -c 10M /dev/urandom > "tree/file$i"; done
mkfs.ext4 -q -F -d tree -L demo ext4.raw 256M >/dev/null 2>&1
for i in $(seq 1 9); do debugfs -w -R "rm /file$i" ext4.raw >/dev/null 2>&1; done
qemu-img convert -O vhdx -o subformat=dynamic,block_size=1M ext4.raw ext4.vhdx
usage ext4.vhdx

step "vhdreclaimd --once --json ext4.vhdx (free tier: the guest's free blocks, read with libext2fs)"
"$daemon" --once --json ext4.vhdx
usage ext4.vhdx
qemu-img check -q ext4.vhdx && echo "qemu-img check: no errors"
qemu-img convert -O raw ext4.vhdx after.raw
e2fsck -fn after.raw >/dev/null 2>&1 && echo "e2fsck -fn: clean"
for i in 10 11 12; do
  debugfs -R "dump /file$i check$i" after.raw >/dev/null 2>&1
  cmp -s "tree/file$i" "check$i" || { echo "file$i differs!"; exit 1; }
done
echo "remaining files: identical"

step "vhdreclaimd --once --compact --json ext4.vhdx (shrink the file itself, in place: Optimize-VHD -Mode Full)"
"$daemon" --once --compact --json ext4.vhdx
usage ext4.vhdx
qemu-img check -q ext4.vhdx && echo "qemu-img check: no errors"
qemu-img convert -O raw ext4.vhdx compacted.raw
cmp -s after.raw compacted.raw && echo "qemu-img convert: the guest reads exactly what it read before compaction"

step "3. The service: vhdreclaimd managing both fresh copies, driven by vhdreclaimctl"
cp --sparse=never disk-before.vhdx hyperv.vhdx
qemu-img convert -O vhdx -o subformat=dynamic,block_size=1M ext4.raw wsl.vhdx
cat > demo.conf <<CONF
[daemon]
socket=$work/control.sock
stateDir=$work/state

[reclaim]
interval=1d
randomizedDelay=1h
idleDelay=10m

[disk.hyperv]
path=$work/hyperv.vhdx

[disk.wsl]
path=$work/wsl.vhdx
CONF
"$daemon" --check-config -c demo.conf >/dev/null && echo "vhdreclaimd --check-config: valid"
"$daemon" -c demo.conf 2>daemon.log &
daemon_pid=$!
for _ in $(seq 50); do [ -S control.sock ] && break; sleep 0.1; done
export VHDRECLAIM_SOCKET=$work/control.sock
"$ctl" status
"$ctl" reclaim --all --wait
"$ctl" status
"$ctl" history
kill "$daemon_pid"; wait "$daemon_pid" 2>/dev/null || true; daemon_pid=
qemu-img compare -q disk-before.vhdx hyperv.vhdx && echo "qemu-img compare: hyperv.vhdx identical to before"
qemu-img check -q wsl.vhdx && echo "qemu-img check: wsl.vhdx has no errors"
