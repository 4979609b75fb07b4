#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Compaction (`vhdreclaimd --once --compact`) against real peers.

- ext4 made by mkfs.ext4 -d, files deleted with debugfs, and NTFS made by
  mkntfs and filled and thinned through ntfs-3g, converted by
  qemu-img with 1 MiB and 32 MiB blocks: after a safe compaction qemu-img
  check is clean and qemu-img compare finds the guest view identical; after a
  free one e2fsck -fn is clean and every remaining file reads back identical;
  libvhdi's vhdiinfo reads both; the apparent size is within one block of
  the structures plus the live blocks; a second compaction leaves the file
  byte-identical (sha256 and mtime).
- A dry run changes nothing and predicts the size the real run reaches.
- SIGKILL at random moments of a compaction (COMPACT_KILL_ROUNDS, default 4):
  the image is valid and reads as before after each kill, and the next pass
  completes the job to the same size.
- A writer (qemu-io) opens the image during compaction (COMPACT_RACE_ROUNDS,
  default 4): its open waits at most about a second, its write lands, the
  image is valid and everything else reads as before.
- The host file system full while moving (a small tmpfs): the compaction
  stops with an error naming it, and the image is valid and identical.
"""

import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import oncetest
import vhdxtool
from oncetest import MiB

t = oncetest.Checker()
rng = random.Random(os.environ.get("COMPACT_SEED", str(time.time_ns())))
KILL_ROUNDS = int(os.environ.get("COMPACT_KILL_ROUNDS", "4"))
RACE_ROUNDS = int(os.environ.get("COMPACT_RACE_ROUNDS", "4"))


def sh(*argv, check=True):
    return oncetest.run(list(argv), check=check)


def compact(img, *flags):
    r = oncetest.run_once(img, "--compact", *flags)
    return r, r.report


def ext4_vhdx(work, name, block_size, virt=256 * MiB, n_files=60, big=0):
    """ext4 with random files, every third one deleted, and a file of `big`
    bytes written among them and deleted (so that whole blocks fall free even
    at 32 MiB, where ext4's metadata in every group keeps most blocks live);
    returns the image and the {path: sha256} of the files that remain."""
    tree = os.path.join(work, name + ".tree")
    raw = os.path.join(work, name + ".raw")
    img = os.path.join(work, name + ".vhdx")
    os.mkdir(tree)
    files = {}
    for i in range(n_files):
        data = rng.randbytes(rng.randint(1, 200) * 4096 - rng.randint(0, 4095))
        with open(os.path.join(tree, f"f{i:03d}"), "wb") as f:
            f.write(data)
        files[f"f{i:03d}"] = data
        if big and i == n_files // 2:
            with open(os.path.join(tree, "big"), "wb") as f:
                f.write(rng.randbytes(big))
    with open(raw, "wb") as f:
        f.truncate(virt)
    sh("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,nodiscard", "-d", tree, raw)
    for i in range(0, n_files, 3):
        sh("debugfs", "-w", "-R", f"rm f{i:03d}", raw)
        del files[f"f{i:03d}"]
    if big:
        sh("debugfs", "-w", "-R", "rm big", raw)
    sh("qemu-img", "convert", "-O", "vhdx", "-o", f"block_size={block_size}", raw, img)
    os.unlink(raw)
    shutil.rmtree(tree)
    return img, {k: oncetest.hashlib.sha256(v).hexdigest() for k, v in files.items()}


def guest_files_ok(img, files, work):
    raw = os.path.join(work, "check.raw")
    sh("qemu-img", "convert", "-O", "raw", img, raw)
    fsck = sh("e2fsck", "-fn", raw, check=False)
    ok = fsck.returncode == 0
    bad = []
    for name, digest in files.items():
        out = subprocess.run(["debugfs", "-R", f"cat {name}", raw], capture_output=True).stdout
        if oncetest.hashlib.sha256(out).hexdigest() != digest:
            bad.append(name)
    os.unlink(raw)
    return ok and not bad, f"e2fsck exit {fsck.returncode}, {len(bad)} of {len(files)} files differ"


def expected_size(img):
    """Structures (widened to MiB) plus one block per live block."""
    v = vhdxtool.Vhdx.open(img)
    structures = sum(l for _, l in v.structure_ranges())
    live = len(v.blocks_in_state(vhdxtool.PAYLOAD_FULLY_PRESENT))
    return structures, live, v.block_size


def check_compacted(img, label, tol_blocks=1):
    structures, live, bs = expected_size(img)
    size = os.path.getsize(img)
    bound = vhdxtool.MiB * ((structures + vhdxtool.MiB - 1) // vhdxtool.MiB) + live * bs + tol_blocks * bs
    t.check(size <= bound, f"{label}: apparent size {size} within one block of structures + {live} live blocks ({bound})")
    p = sh("vhdiinfo", img, check=False)
    t.check(p.returncode == 0 and "Dynamic" in p.stdout, f"{label}: vhdiinfo reads it (exit {p.returncode})")


def test_ext4(work, block_size):
    label = f"ext4, {block_size // MiB} MiB blocks"
    img, files = ext4_vhdx(work, f"e{block_size // MiB}", block_size, virt=max(256 * MiB, 32 * block_size),
                           big=4 * block_size)
    orig = img + ".orig"
    oncetest.clone_sparse(img, orig)

    # A dry run: nothing changes; it says how small the file would get.
    before = oncetest.sha256(img)
    r, dry = compact(img, "--dry-run", "--discard=safe")
    t.check(r.rc == 0 and dry.get("dry_run") is True and "file_size_after" in dry,
            f"{label}: dry run reports file_size_after ({r})")
    t.equal(oncetest.sha256(img), before, f"{label}: dry run leaves the file identical")

    r, rep = compact(img, "--discard=safe")
    t.check(r.rc == 0 and rep.get("result") == "success", f"{label}: safe compaction succeeds ({r})")
    size = os.path.getsize(img)
    t.equal(rep.get("file_size_after"), size, f"{label}: file_size_after is the new apparent size")
    t.equal(rep.get("compacted"), rep.get("file_size", 0) - size, f"{label}: compacted is what the size shrank")
    t.check(size <= os.path.getsize(orig), f"{label}: the file did not grow ({os.path.getsize(orig)} -> {size})")
    t.equal(dry.get("file_size_after"), size, f"{label}: the dry run predicted the size")
    ok, out = oncetest.qemu_img_check(img)
    t.check(ok, f"{label}: qemu-img check clean after safe compaction ({out[-200:]})")
    ok, out = oncetest.qemu_img_compare(orig, img)
    t.check(ok, f"{label}: qemu-img compare identical after safe compaction ({out[-200:]})")
    check_compacted(img, label + ", safe")

    # Nothing left to do: byte-identical, mtime included.
    st, digest = os.stat(img), oncetest.sha256(img)
    r, rep = compact(img, "--discard=safe")
    t.check(r.rc == 0 and rep.get("result") == "nothing-to-do", f"{label}: second compaction nothing-to-do ({rep.get('result')})")
    t.check(oncetest.sha256(img) == digest and os.stat(img).st_mtime_ns == st.st_mtime_ns,
            f"{label}: second compaction leaves the file byte-identical, mtime included")

    # The free tier too: deleted files' blocks become ZERO and go.
    r, rep = compact(img)
    t.check(r.rc == 0 and rep.get("result") == "success", f"{label}: free compaction ({r})")
    t.check(os.path.getsize(img) < os.path.getsize(orig),
            f"{label}: the file shrank ({os.path.getsize(orig)} -> {os.path.getsize(img)})")
    ok, out = oncetest.qemu_img_check(img)
    t.check(ok, f"{label}: qemu-img check clean after free compaction")
    ok, why = guest_files_ok(img, files, work)
    t.check(ok, f"{label}: e2fsck clean and every remaining file identical ({why})")
    check_compacted(img, label + ", free")
    os.unlink(orig)
    os.unlink(img)


def test_ntfs(work, block_size):
    """NTFS made by mkntfs, filled through a read-write ntfs-3g mount, most
    files deleted, converted by qemu-img: compacted with the free tier, the
    volume is clean for ntfsfix -n and every remaining file reads back the
    same through a read-only mount."""
    import ntfstest
    label = f"ntfs, {block_size // MiB} MiB blocks"
    problem = ntfstest.fuse_problem()
    if problem:
        t.skip(f"{label}: {problem}")
        return
    raw = os.path.join(work, "n.raw")
    img = os.path.join(work, "n.vhdx")
    ntfstest.mkntfs(raw, max(256, 32 * block_size // MiB))
    files = {}
    with ntfstest.Mount(raw, raw + ".mnt") as mnt:
        for i in range(40):
            data = rng.randbytes(rng.randint(1, 1024) * 4096)
            with open(os.path.join(mnt, f"f{i:03d}.bin"), "wb") as f:
                f.write(data)
            files[f"f{i:03d}.bin"] = oncetest.hashlib.sha256(data).hexdigest()
            if i == 20:     # whole blocks fall free even at 32 MiB
                with open(os.path.join(mnt, "big.bin"), "wb") as f:
                    f.write(rng.randbytes(4 * block_size))
        for name in rng.sample(sorted(files), 28):
            os.unlink(os.path.join(mnt, name))
            del files[name]
        os.unlink(os.path.join(mnt, "big.bin"))
    os.rmdir(raw + ".mnt")
    sh("qemu-img", "convert", "-O", "vhdx", "-o", f"block_size={block_size}", raw, img)
    os.unlink(raw)
    before = os.path.getsize(img)
    r, dry = compact(img, "--dry-run")
    r, rep = compact(img)
    t.check(r.rc == 0 and rep.get("result") == "success" and rep.get("filesystem", "").endswith("ntfs"),
            f"{label}: compaction with the free tier succeeds ({rep.get('result')}, {rep.get('filesystem')}, {rep.get('message')})")
    size = os.path.getsize(img)
    t.check(size < before, f"{label}: the file shrank ({before} -> {size})")
    t.check(dry.get("file_size_after", 0) >= size, f"{label}: the dry run did not promise more than the pass did ({dry.get('file_size_after')})")
    ok, out = oncetest.qemu_img_check(img)
    t.check(ok, f"{label}: qemu-img check clean ({out[-160:]})")
    check_compacted(img, label)
    back = os.path.join(work, "n-back.raw")
    sh("qemu-img", "convert", "-O", "raw", img, back)
    problems = ntfstest.check_volume(back, files)
    t.check(not problems, f"{label}: ntfsfix -n clean and every remaining file identical ({problems})")
    for f in (img, back):
        os.unlink(f)


def scattered_image(work, name):
    """256 x 1 MiB blocks: blocks 0-119 hold zeros written as data (they
    become ZERO), the rest a pattern per block: compaction then moves about
    a hundred blocks down, one flush group at a time."""
    raw = os.path.join(work, name + ".raw")
    img = os.path.join(work, name + ".vhdx")
    with open(raw, "wb") as f:
        f.truncate(256 * MiB)
        for b in range(120, 256):
            os.pwrite(f.fileno(), bytes([b]) * (MiB // 2) + rng.randbytes(MiB // 2), b * MiB)
    sh("qemu-img", "convert", "-S", "0", "-O", "vhdx", "-o", "block_size=1M", raw, img)
    os.unlink(raw)
    return img


def test_kill(work):
    base = scattered_image(work, "kill")
    ref = base + ".ref"
    oncetest.clone_sparse(base, ref)
    start = time.monotonic()
    r, rep = compact(ref, "--discard=safe")
    took = time.monotonic() - start
    full_size = os.path.getsize(ref)
    t.check(rep.get("result") == "success" and rep.get("blocks_moved", 0) > 50,
            f"kill: reference compaction moves blocks ({rep.get('blocks_moved')} in {took:.2f} s)")
    landed = 0
    for i in range(KILL_ROUNDS):
        img = os.path.join(work, f"kill{i}.vhdx")
        oncetest.clone_sparse(base, img)
        p = subprocess.Popen([oncetest.binary(), "--once", "--json", "--compact", "--discard=safe", img],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0, took))
        p.send_signal(signal.SIGKILL)
        p.communicate()
        killed = p.returncode == -signal.SIGKILL
        landed += killed
        ok, out = oncetest.qemu_img_check(img)
        t.check(ok, f"kill {i} ({'mid-pass' if killed else 'after the end'}): qemu-img check clean ({out[-160:]})")
        ok, out = oncetest.qemu_img_compare(base, img)
        t.check(ok, f"kill {i}: reads as before ({out[-160:]})")
        r, rep = compact(img, "--discard=safe")
        t.check(rep.get("result") in ("success", "nothing-to-do") and os.path.getsize(img) == full_size,
                f"kill {i}: the next pass completes to {full_size} ({rep.get('result')}, {os.path.getsize(img)})")
        ok, _ = oncetest.qemu_img_compare(base, img)
        t.check(ok, f"kill {i}: still reads as before after the completing pass")
        os.unlink(img)
    print(f"kill: {landed} of {KILL_ROUNDS} kills landed before the pass ended")
    os.unlink(ref)
    os.unlink(base)


def test_writer_race(work):
    base = scattered_image(work, "race")
    waits = []
    for i in range(RACE_ROUNDS):
        img = os.path.join(work, f"race{i}.vhdx")
        oncetest.clone_sparse(base, img)
        offset = rng.randrange(0, 256) * MiB + rng.randrange(0, 16) * 65536
        pattern = rng.randrange(1, 255)
        p = subprocess.Popen([oncetest.binary(), "--once", "--json", "--compact", "--discard=safe", img],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.01, 0.15))
        start = time.monotonic()
        # qemu-io's open waits for our lease to go; then it writes.
        w = sh("qemu-io", "-f", "vhdx", "-c", f"write -P {pattern} {offset} 64k", img, check=False)
        waits.append(time.monotonic() - start)
        out, _ = p.communicate()
        t.check(w.returncode == 0 and "error" not in (w.stdout + w.stderr).lower(), f"race {i}: the writer's write succeeded")
        ok, chk = oncetest.qemu_img_check(img)
        t.check(ok, f"race {i}: qemu-img check clean ({chk[-160:]})")
        rd = sh("qemu-io", "-f", "vhdx", "-c", f"read -P {pattern} {offset} 64k", img, check=False)
        t.check(rd.returncode == 0 and "Pattern verification failed" not in rd.stdout, f"race {i}: the write landed intact")
        # Everything but the written range reads as before.
        expect = img + ".expect"
        oncetest.clone_sparse(base, expect)
        sh("qemu-io", "-f", "vhdx", "-c", f"write -P {pattern} {offset} 64k", expect)
        ok, cmp = oncetest.qemu_img_compare(expect, img)
        t.check(ok, f"race {i}: no other byte changed ({cmp[-160:]})")
        r, rep = compact(img, "--discard=safe")
        ok2, _ = oncetest.qemu_img_compare(expect, img)
        t.check(rep.get("result") in ("success", "nothing-to-do") and ok2, f"race {i}: the next pass continues ({rep.get('result')})")
        for f in (img, expect):
            os.unlink(f)
    print(f"race: open waits {', '.join(f'{w:.3f}' for w in waits)} s; worst {max(waits):.3f} s")
    t.check(max(waits) < 1.5, f"race: the writer never waited much over a second (worst {max(waits):.3f} s)")
    os.unlink(base)


def test_structure_at_the_end(work):
    """The BAT moved to the end of the file (as a resize leaves it): nothing
    can shrink, so nothing moves and the file stays byte-identical."""
    img = scattered_image(work, "batend")
    v = vhdxtool.Vhdx.open(img)
    bat = v.region(vhdxtool.BAT_REGION)
    end = (os.path.getsize(img) + MiB - 1) // MiB * MiB
    data = vhdxtool.read_at(img, bat.offset, bat.length)
    with open(img, "r+b") as f:
        f.truncate(end + max(bat.length, MiB))
    vhdxtool.write_at(img, end, data)
    for t_index in (0, 1):
        table = vhdxtool.Vhdx.open(img).region_tables[t_index]
        for e in table.entries:
            if e.guid == vhdxtool.BAT_REGION:
                vhdxtool.write_at(img, e.field_offset("offset"), end.to_bytes(8, "little"))
        vhdxtool.fix_region_table_checksum(img, t_index)
    ok, out = oncetest.qemu_img_check(img)
    t.check(ok, f"BAT at the end: the crafted image is valid for qemu-img ({out[-160:]})")
    # Punch first, so that the compaction's own effect is what is compared.
    compact(img, "--discard=safe", "--dry-run")
    oncetest.run_once(img, "--discard=safe")
    st, digest = os.stat(img), oncetest.sha256(img)
    r, dry = compact(img, "--discard=safe", "--dry-run")
    t.check(dry.get("blocks_moved", -1) == 0 and dry.get("file_size_after") == st.st_size,
            f"BAT at the end: the dry run moves nothing ({dry.get('blocks_moved')} blocks, {dry.get('file_size_after')})")
    r, rep = compact(img, "--discard=safe")
    t.check(rep.get("result") == "nothing-to-do" and rep.get("blocks_moved", -1) == 0,
            f"BAT at the end: nothing-to-do, no block moved ({rep.get('result')}, {rep.get('blocks_moved')})")
    t.check(oncetest.sha256(img) == digest and os.stat(img).st_mtime_ns == st.st_mtime_ns,
            "BAT at the end: the file stays byte-identical, mtime included")
    os.unlink(img)


def test_disk_full(work):
    if os.geteuid() != 0:
        oncetest.skip_or_fail("the disk-full case mounts a tmpfs: needs root")
    base = os.path.join(work, "full.vhdx")
    raw = os.path.join(work, "full.raw")
    with open(raw, "wb") as f:
        f.truncate(64 * MiB)
        for b in range(64):
            os.pwrite(f.fileno(), rng.randbytes(MiB), b * MiB)
    sh("qemu-img", "convert", "-S", "0", "-O", "vhdx", "-o", "block_size=1M", raw, base)
    os.unlink(raw)
    # Blocks 8-23 become NOT_PRESENT with their space punched: a gap that
    # the last blocks would move into.
    v = vhdxtool.Vhdx.open(base)
    for b in range(8, 24):
        off = v.block_file_offset(b)
        vhdxtool.set_bat_entry(base, v.bat_index(b), vhdxtool.bat_entry(vhdxtool.PAYLOAD_NOT_PRESENT))
        subprocess.run(["fallocate", "-p", "-o", str(off), "-l", str(MiB), base], check=True)
    mnt = tempfile.mkdtemp(prefix="vhdreclaim-full-")
    need = oncetest.allocated(base)
    # Room for the image and less than one block more.
    if sh("mount", "-t", "tmpfs", "-o", f"size={need + MiB // 2}", "tmpfs", mnt, check=False).returncode != 0:
        oncetest.skip_or_fail("cannot mount a tmpfs")
    try:
        img = os.path.join(mnt, "full.vhdx")
        oncetest.clone_sparse(base, img)
        r, rep = compact(img, "--discard=safe")
        t.check(rep.get("result") == "error" and "No space" in rep.get("message", ""),
                f"disk full: compaction stops with an error naming it ({rep.get('result')}: {rep.get('message')})")
        ok, out = oncetest.qemu_img_check(img)
        t.check(ok, f"disk full: qemu-img check clean ({out[-160:]})")
        ok, out = oncetest.qemu_img_compare(base, img)
        t.check(ok, f"disk full: reads as before ({out[-160:]})")
    finally:
        sh("umount", mnt, check=False)
        os.rmdir(mnt)
    os.unlink(base)


def test_raw_not_compacted(work):
    """--compact on a raw image punches as ever and says that a raw image
    is not compacted, rather than reporting a compaction of 0 blocks."""
    img = os.path.join(work, "plain.raw")
    with open(img, "wb") as f:
        f.write(os.urandom(MiB) + bytes(4 * MiB) + os.urandom(MiB))
    ref = img + ".ref"
    shutil.copyfile(img, ref)
    p = oncetest.run([oncetest.binary(), "--once", "--compact", img])
    t.check(p.returncode == 0 and "not compacted: a raw image" in p.stdout and "blocks moved" not in p.stdout,
            f"raw --compact: says it is not compacted (exit {p.returncode}, {p.stdout.strip()!r})")
    t.check(oncetest.run(["cmp", img, ref]).returncode == 0, "raw --compact: the content is unchanged")
    t.check(os.stat(img).st_blocks * 512 <= 2 * MiB + 64 * 1024, "raw --compact: the zeros were punched")


def main():
    oncetest.require_tools("qemu-img", "qemu-io", "mkfs.ext4", "debugfs", "e2fsck", "vhdiinfo", "fallocate")
    work = oncetest.workdir("vhdreclaim-compact-")
    try:
        test_raw_not_compacted(work)
        test_ext4(work, 1 * MiB)
        test_ext4(work, 32 * MiB)
        test_ntfs(work, 1 * MiB)
        test_ntfs(work, 32 * MiB)
        test_kill(work)
        test_writer_race(work)
        test_structure_at_the_end(work)
        test_disk_full(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    t.exit()


if __name__ == "__main__":
    main()
