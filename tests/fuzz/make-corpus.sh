#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Regenerates the seed corpora under tests/fuzz/corpus/ from images made by
# real tools (qemu-img, qemu-io, sfdisk) and the VHDX fixtures. The seeds are
# committed; run this only to refresh them. Images are encoded with
# sparse-encode.py (see fuzz-sparse.h), so each seed is a few KB.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fixtures=${FIXTURES:-$here/../../../shared/fixtures/vhdx}
corpus=$here/corpus
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
encode() { python3 "$here/sparse-encode.py" "$@"; }

mkdir -p "$corpus"/{vhdx,partition,config,ctl-args}

# --- VHDX: flags 0x0f = recompute both headers' and both region tables' CRCs
for f in "$fixtures"/*.vhdx.bz2; do
        b=$(basename "$f" .bz2)
        bzip2 -dc "$f" >"$tmp/$b"
        # Structures sit in the first 4 MiB; the payload past them is not parsed.
        encode --flags 0x0f --limit $((4 << 20)) "$tmp/$b" "$corpus/vhdx/${b%.vhdx}"
done
qemu-img create -q -f vhdx "$tmp/q64.vhdx" 64M
qemu-io -c "write -P 0xab 0 512" -c "write -P 0x5a 40M 512" "$tmp/q64.vhdx" >/dev/null
qemu-img create -q -f vhdx -o block_size=1M,log_size=1M "$tmp/q2g-1m.vhdx" 2G
qemu-io -c "write -P 0x11 1M 512" "$tmp/q2g-1m.vhdx" >/dev/null
qemu-img create -q -f vhdx -o subformat=fixed "$tmp/qfixed.vhdx" 8M
qemu-img create -q -f vhdx -o block_size=256M "$tmp/q1g-256m.vhdx" 1G
qemu-io -c "write -P 0x22 300M 512" "$tmp/q1g-256m.vhdx" >/dev/null
for f in "$tmp"/q*.vhdx; do
        b=$(basename "$f" .vhdx)
        encode --flags 0x0f "$f" "$corpus/vhdx/qemu-$b"
done

# --- partition tables: flag 0x01 = 4096-byte sectors, 0x06 = fix GPT CRCs
truncate -s 64M "$tmp/mbr.img"
printf 'label: dos\n,8M,83\n,8M,7\n,,5\n,4M,83\n,4M,82\n' | sfdisk -q "$tmp/mbr.img"
encode --flags 0 "$tmp/mbr.img" "$corpus/partition/mbr-logical"
truncate -s 64M "$tmp/gpt.img"
printf 'label: gpt\n,8M,L\n,16M,L\n,,S\n' | sfdisk -q "$tmp/gpt.img"
encode --flags 0x06 "$tmp/gpt.img" "$corpus/partition/gpt"
truncate -s 32M "$tmp/mbr1.img"
printf 'label: dos\n,,83\n' | sfdisk -q "$tmp/mbr1.img"
encode --flags 0 "$tmp/mbr1.img" "$corpus/partition/mbr-one"
# The same GPT bytes read with 4096-byte sectors: headers elsewhere, a start.
encode --flags 0x07 "$tmp/gpt.img" "$corpus/partition/gpt-4k"

# --- configuration files
sed 's/^#\([a-zA-Z]*=\)/\1/; s/@DEFAULT_STATE_DIR@/\/var\/lib\/vhdreclaim/' \
        "$here/../../conf/vhdreclaim.conf" >"$corpus/config/example-uncommented"
cat >"$corpus/config/disks" <<'EOF'
[daemon]
socket=/run/vhdreclaim/control.sock
adminGroup=wheel
[experimental]
sparseVhd=false
[reclaim]
interval=1h30m
discard=safe
minHole=128K
ioLimit=0
[disk.Ubuntu]
path=/srv/wsl/../wsl/Ubuntu/ext4.vhdx
sparse=true
minReclaim=1G
[watch.profiles]
dir=/srv/fslogix/
pattern=*.vhdx
maxParallel=4
[trim]
mounts=/ /home
interval=1w
chunk=1G
EOF
cat >"$corpus/config/wslconfig" <<'EOF'
[wsl2]
memory=8GB
processors=4
[experimental]
sparseVhd=true
autoMemoryReclaim=gradual
[disk.a]
path=/a.vhdx
path=/b.vhdx
[trim]
mounts=all
EOF
printf '[reclaim]\nminHole=3K\ninterval=-1\n[disk.x]\n' >"$corpus/config/errors"

# --- vhdreclaimctl argument lists, NUL-separated
args() { local out=$1; shift; printf '%s\0' "$@" | head -c -1 >"$corpus/ctl-args/$out"; }
args status status --json ubuntu
args reclaim-all reclaim --all --dry-run --discard=safe --wait
args reclaim-disks --socket /run/x.sock reclaim a b --discard free
args set-sparse set-sparse ubuntu false
args cancel cancel 42
args trim trim --all
args history history -- -odd-name
args help -h

# --- NTFS (fuzz-ntfs): the smallest volume mkntfs makes. $LogFile's 0xff
# pages become runs (flag 0x02); $UpCase (128 KiB) must stay, libntfs-3g
# refuses a volume without it, so the seed is some 170 KB. Partitioned disks
# reach the same code at an offset (fuzz-partition covers the tables).
mkdir -p "$corpus/ntfs"
truncate -s 2M "$tmp/ntfs.img"
mkntfs -q -F -f "$tmp/ntfs.img" >/dev/null 2>&1
python3 "$here/sparse-encode-runs.py" "$tmp/ntfs.img" "$corpus/ntfs/whole-disk"
# An ambiguous layout (trial finding 13): a whole-disk ext2 and, left over
# from before it, an MBR whose partition 1 holds an old, clean ext2.
truncate -s 4M "$tmp/amb.img" "$tmp/amb-p1.img"
printf 'label: dos\nstart=2048, size=4096, type=83\n' | sfdisk -q "$tmp/amb.img"
mkfs.ext2 -q -F "$tmp/amb-p1.img" 2M
dd if="$tmp/amb-p1.img" of="$tmp/amb.img" bs=1M seek=1 count=2 conv=notrunc status=none
dd if="$tmp/amb.img" of="$tmp/amb.mbr" bs=512 count=1 status=none
mkfs.ext2 -q -F -E nodiscard "$tmp/amb.img"
dd if="$tmp/amb.mbr" of="$tmp/amb.img" bs=1 skip=446 seek=446 count=66 conv=notrunc status=none
encode --flags 0 "$tmp/amb.img" "$corpus/ntfs/ambiguous-mbr-over-ext2"
