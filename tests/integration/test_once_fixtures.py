#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""`vhdreclaimd --inspect` and `--once` on the three real VHDX images of
../shared/fixtures/vhdx (Hyper-V, Disk2VHD, qemu with a dirty log).

- --inspect shows the facts SOURCES.md records (sizes, block size, sectors,
  chunk ratio, region layout, header sequence numbers, BAT state counts);
  vhdxtool, an independent reader, agrees on where the blocks live and on the
  guest data.
- Disk2VHD's image after `--once --discard=safe` allocates within 1 MiB of
  what `fallocate --dig-holes` leaves of a copy.
- Hyper-V's dynamic-1G gives back the 30 MiB of zeros inside its third block;
  --dry-run counts the same and changes nothing; a second pass has nothing
  to do.
- The dirty-log image is skipped-dirty-log, exit 0, byte-identical after.
- After every pass: `qemu-img check` clean, `qemu-img compare` against a copy
  made before says identical (qemu cannot open the dirty-log image: sha256).

Skips (77) without the fixtures or qemu-img; fails in CI.
"""

import os
import re
import shutil

import oncetest
import vhdxtool
from oncetest import KiB, MiB, GiB

DYNAMIC = "iotest-dynamic-1G.vhdx"
DIRTY = "iotest-dirtylog-10G-4M.vhdx"
DISK2VHD = "test-disk2vhd.vhdx"

t = oncetest.Checker()


def inspect(path):
    p = oncetest.run([oncetest.binary(), "--inspect", path])
    t.check(p.returncode == 0, f"--inspect {os.path.basename(path)} exits 0 ({p.stderr.strip()})")
    return p.stdout


def field(text, pattern):
    m = re.search(pattern, text, re.M)
    return m.group(1) if m else None


def check_inspect_common(name, text, virtual, file_size, block, logical, physical, chunk, entries, states):
    t.equal(field(text, r"^virtual size\s+(\d+) bytes"), str(virtual), f"{name}: virtual size")
    t.equal(field(text, r"^file size\s+(\d+) bytes"), str(file_size), f"{name}: file size")
    t.equal(field(text, r"^block size\s+(\d+) bytes"), str(block), f"{name}: block size")
    t.equal(field(text, r"^sector size\s+(\d+ logical, \d+ physical)"), f"{logical} logical, {physical} physical",
            f"{name}: sector sizes")
    t.equal(field(text, r"^chunk ratio\s+(\d+)"), str(chunk), f"{name}: chunk ratio")
    t.equal(field(text, r"^BAT entries\s+(\d+)"), str(entries), f"{name}: BAT entries")
    t.equal(field(text, r"^disk type\s+(\S+)"), "dynamic", f"{name}: disk type")
    t.check(field(text, r"^allocated\s+(\d+) bytes") is not None, f"{name}: allocated size shown")
    for state, count in states.items():
        t.equal(field(text, rf"^\s+{state}\s+(\d+)$"), str(count), f"{name}: {state} blocks")


def region_line(text, name):
    return field(text, rf"^\s+region {name}\s+(0x[0-9a-f]+ \+ \d+ bytes(?:, required)?)")


def test_inspect_facts(work):
    dyn = oncetest.decompress_fixture(DYNAMIC, work)
    text = inspect(dyn)
    check_inspect_common("dynamic-1G", text, 1 * GiB, 104857600, 32 * MiB, 512, 4096, 128, 32,
                         {"FULLY_PRESENT": 3, "ZERO": 29})
    t.equal(region_line(text, "metadata"), "0x200000 + 1048576 bytes, required", "dynamic-1G: metadata region")
    t.equal(region_line(text, "BAT"), "0x300000 + 1048576 bytes, required", "dynamic-1G: BAT region")
    t.equal(re.findall(r"sequence number\s+(\d+)", text), ["14", "15"], "dynamic-1G: header sequence numbers")
    t.check(re.search(r"log\s+0x100000 \+ 1048576 bytes", text) and "(clean)" in text and "needs replay" not in text,
            "dynamic-1G: clean 1 MiB log at 1 MiB")
    v = vhdxtool.Vhdx.open(dyn)
    present = [(b, v.block_file_offset(b) // MiB) for b in v.blocks_in_state(vhdxtool.PAYLOAD_FULLY_PRESENT)]
    t.equal(present, [(0, 4), (1, 36), (2, 68)], "dynamic-1G: present blocks at file 4, 36, 68 MiB (vhdxtool)")
    guest = v.read_virtual(0, 96 * MiB)
    t.check(guest[:33 * MiB] == b"\xa5" * (33 * MiB) and guest[33 * MiB:66 * MiB] == b"\x96" * (33 * MiB)
            and guest[66 * MiB:] == bytes(30 * MiB), "dynamic-1G: guest data 0xa5 to 33 MiB, 0x96 to 66 MiB, zeros after")

    dirty = oncetest.decompress_fixture(DIRTY, work)
    text = inspect(dirty)
    check_inspect_common("dirtylog", text, 10 * GiB, 31457280, 1 * MiB, 512, 512, 4096, 10242,
                         {"FULLY_PRESENT": 17, "NOT_PRESENT": 10223})
    t.check("(10240 payload, 2 sector bitmap)" in text, "dirtylog: 10240 payload and 2 sector bitmap entries")
    t.equal(region_line(text, "BAT"), "0x200000 + 1048576 bytes", "dirtylog: BAT region, not required")
    t.equal(region_line(text, "metadata"), "0x300000 + 1048576 bytes", "dirtylog: metadata region, not required")
    t.check("needs replay" in text, "dirtylog: the log needs replay")

    d2v = oncetest.decompress_fixture(DISK2VHD, work)
    text = inspect(d2v)
    check_inspect_common("disk2vhd", text, 256 * MiB, 260 * MiB + 512, 2 * MiB, 512, 512, 2048, 128,
                         {"FULLY_PRESENT": 128})
    t.equal(re.findall(r"sequence number\s+(\d+)", text), ["1", "1"], "disk2vhd: equal sequence numbers")
    t.check("headers are byte-identical" in text, "disk2vhd: headers byte-identical")
    regions = re.findall(r"^\s+region (\S+)\s+(0x[0-9a-f]+)", text, re.M)
    t.equal(regions, [("metadata", "0x200000"), ("BAT", "0x300000")], "disk2vhd: metadata before BAT in the region table")
    v = vhdxtool.Vhdx.open(d2v)
    offsets = [v.block_file_offset(b) for b in range(128)]
    t.check(offsets[0] == 4 * MiB and offsets[127] == 6 * MiB and
            all(offsets[n] == 8 * MiB + (n - 1) * 2 * MiB for n in range(1, 127)),
            "disk2vhd: block 0 at 4 MiB, 127 at 6 MiB, 1-126 at 8 MiB + (n-1)*2 MiB (vhdxtool)")
    guest = v.read_virtual(0, 256 * MiB)
    t.check(guest[510:512] == b"\x55\xaa" and guest[4 * KiB:] == bytes(256 * MiB - 4 * KiB),
            "disk2vhd: an MBR in the first 4 KiB, zeros after")
    for p in (dyn, dirty, d2v):
        os.unlink(p)


def check_after_pass(name, image, before_copy):
    ok, out = oncetest.qemu_img_check(image)
    t.check(ok, f"{name}: qemu-img check clean" + ("" if ok else f": {out}"))
    ok, out = oncetest.qemu_img_compare(before_copy, image)
    t.check(ok, f"{name}: qemu-img compare with the copy made before: identical" + ("" if ok else f": {out}"))


def check_report(name, run, result):
    t.check(run.rc == 0, f"{name}: exit 0 ({run})")
    t.equal(len(run.reports), 1, f"{name}: one JSON line")
    rep = run.report
    t.equal(oncetest.json_fields_problems(rep), [], f"{name}: JSON fields")
    t.equal(rep.get("result"), result, f"{name}: result")
    return rep


def test_disk2vhd(work):
    src = oncetest.decompress_fixture(DISK2VHD, work)
    ours, dig, before = (os.path.join(work, n) for n in ("d2v-once.vhdx", "d2v-dig.vhdx", "d2v-before.vhdx"))
    for p in (ours, dig, before):
        oncetest.clone_sparse(src, p)
    os.unlink(src)

    allocated_before = oncetest.allocated(ours)
    run = oncetest.run_once(ours, "--discard=safe")
    rep = check_report("disk2vhd", run, "success")
    oncetest.run(["fallocate", "--dig-holes", dig], check=True)
    a, b = oncetest.allocated(ours), oncetest.allocated(dig)
    t.check(abs(a - b) <= MiB, f"disk2vhd: allocated after the pass {a} bytes, after dig-holes {b}: within 1 MiB")
    t.equal(rep.get("allocated_before"), allocated_before, "disk2vhd: allocated_before is st_blocks before")
    t.equal(rep.get("allocated_after"), a, "disk2vhd: allocated_after is st_blocks after")
    t.equal(rep.get("stale_bytes"), 0, "disk2vhd: no stale bytes (the 512-byte tail is below a file system block)")
    t.check(rep.get("zero_bytes", 0) >= 250 * MiB, f"disk2vhd: zero_bytes {rep.get('zero_bytes')} >= 250 MiB")
    check_after_pass("disk2vhd", ours, before)
    ok, _ = oncetest.qemu_img_compare(before, dig)
    t.check(ok, "disk2vhd: the dig-holes copy is identical too (the comparison is fair)")


def test_dynamic(work):
    src = oncetest.decompress_fixture(DYNAMIC, work)
    before = os.path.join(work, "dyn-before.vhdx")
    oncetest.clone_sparse(src, before)
    sha, blocks = oncetest.sha256(src), oncetest.allocated(src)

    dry = oncetest.run_once(src, "--discard=safe", "--dry-run")
    drep = check_report("dynamic-1G --dry-run", dry, "success")
    t.check(drep.get("dry_run") is True, "dynamic-1G --dry-run: dry_run is true")
    t.check(oncetest.sha256(src) == sha and oncetest.allocated(src) == blocks,
            "dynamic-1G --dry-run: sha256 and st_blocks unchanged")

    run = oncetest.run_once(src, "--discard=safe")
    rep = check_report("dynamic-1G", run, "success")
    measured = blocks - oncetest.allocated(src)
    t.check(rep.get("zero_bytes", 0) >= 30 * MiB, f"dynamic-1G: zero_bytes {rep.get('zero_bytes')} >= 30 MiB")
    t.check(measured >= 30 * MiB, f"dynamic-1G: st_blocks shrank by {measured} bytes >= 30 MiB")
    t.equal(rep.get("reclaimed"), measured, "dynamic-1G: reclaimed is what st_blocks says")
    t.equal((drep.get("stale_bytes"), drep.get("zero_bytes")), (rep.get("stale_bytes"), rep.get("zero_bytes")),
            "dynamic-1G: --dry-run counted what the pass punched (stale, zero)")
    # The zeros of virtual 66-96 MiB live in the block at file 68 MiB, from 70 MiB.
    t.equal(vhdxtool.data_extents(src, 70 * MiB, 100 * MiB), [], "dynamic-1G: file 70-100 MiB is now a hole")
    t.equal(vhdxtool.data_extents(src, 4 * MiB, 70 * MiB), [(4 * MiB, 66 * MiB)],
            "dynamic-1G: the 0xa5/0x96 data at file 4-70 MiB is untouched")
    check_after_pass("dynamic-1G", src, before)

    again = oncetest.run_once(src, "--discard=safe")
    rep2 = check_report("dynamic-1G second pass", again, "nothing-to-do")
    t.equal((rep2.get("stale_bytes"), rep2.get("zero_bytes"), rep2.get("reclaimed")), (0, 0, 0),
            "dynamic-1G second pass: nothing punched")


def test_dirty_log(work):
    src = oncetest.decompress_fixture(DIRTY, work)
    sha, blocks = oncetest.sha256(src), oncetest.allocated(src)
    for mode in ("--discard=safe", "--discard=free"):
        run = oncetest.run_once(src, mode)
        rep = check_report(f"dirtylog {mode}", run, "skipped-dirty-log")
        t.check("log" in rep.get("message", ""), f"dirtylog {mode}: the message names the log: {rep.get('message')!r}")
        t.equal((rep.get("stale_bytes"), rep.get("zero_bytes"), rep.get("reclaimed")), (0, 0, 0),
                f"dirtylog {mode}: nothing punched")
        t.check(oncetest.sha256(src) == sha and oncetest.allocated(src) == blocks,
                f"dirtylog {mode}: byte-identical (sha256) and st_blocks unchanged")
    ok, out = oncetest.qemu_img_check(src)
    t.check(not ok and "replay" in out, "dirtylog: qemu-img still refuses it for its unreplayed log, as before")


def main():
    oncetest.require_tools("qemu-img", "fallocate", "bzip2")
    work = oncetest.workdir("test-once-fixtures-")
    try:
        test_inspect_facts(work)
        test_disk2vhd(work)
        test_dynamic(work)
        test_dirty_log(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    t.exit()


if __name__ == "__main__":
    main()
