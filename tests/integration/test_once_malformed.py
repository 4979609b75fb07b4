#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""`vhdreclaimd --once` refuses malformed VHDX images and leaves them untouched.

Each image is a valid qemu-img-made VHDX (with data, zero data and unwritten
space, so a pass would have plenty to punch) given exactly one defect with
vhdxtool, checksums fixed up so the defect is the only thing wrong:

  bad CRC in header 1; in both headers; headers with equal sequence numbers
  that differ; both region tables corrupt; overlapping BAT entries; a BAT
  entry pointing into the header area, the log, the metadata region, the BAT
  region, past the end of the file; reserved bits set in a BAT entry; an
  unknown metadata item marked IsRequired; an unknown region marked Required;
  a bad block size (not a power of two; below 1 MiB); a bad logical sector
  size; a log offset inside the header area; a PARTIALLY_PRESENT block in a
  disk without parent; an undefined block state; a BAT region of length 0; a
  virtual size that is not a multiple of the sector size.

Each must end in result refused-invalid, exit status 1, a message naming the
field and its file offset, and the same sha256 as before. All of them in
one call: one refused line each, exit 1.

The fallbacks and skips that must not refuse:
- region table 1 corrupt, table 2 intact: processed (success), qemu-img
  check clean and qemu-img compare identical to the copy made before;
- qcow2, VMDK, VDI and VHD images made by qemu-img are refused by name, not
  taken for raw images;
- the last block cut short by EOF (real files do that): processed, size
  and guest view unchanged;
- a fixed disk (LeaveBlockAllocated): skipped-fixed, exit 0, untouched; with
  --force it is reclaimed, and qemu-img check/compare still pass.

Skips (77) without qemu-img/qemu-io; fails in CI.
"""

import os
import shutil
import struct
import uuid

import oncetest
import vhdxtool as vt
from oncetest import KiB, MiB

t = oncetest.Checker()

FILL = [
    "write -q -P 0x5a 0 3M",
    "write -q -P 0 512K 1M",
    "write -q -P 0x5a 10M 1M",
    "write -q -P 0 10M 256K",
]


def make_base(path, *create_options):
    oncetest.run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", ",".join(("block_size=1M",) + create_options),
                  path, "64M"], check=True)
    oncetest.qemu_io(path, "vhdx", FILL)


# Each defect: (name, mutate(path, v) -> list of strings the message must contain).
# v is the parsed, still valid image before the mutation.

def header1_crc(path, v):
    off = vt.corrupt_header_checksum(path, 0)
    return ["header 1", "Checksum", f"0x{off:x}"]


def both_headers_crc(path, v):
    a, b = vt.corrupt_header_checksum(path, 0), vt.corrupt_header_checksum(path, 1)
    return ["no valid header", f"0x{a:x}", f"0x{b:x}"]


def equal_sequence_differ(path, v):
    other = 1 - v.current
    vt.set_header_fields(path, other, sequence=v.headers[v.current].sequence,
                         data_write_guid=uuid.UUID("11111111-2222-3333-4444-555555555555"))
    return ["SequenceNumber", "0x10000", "0x20000"]


def both_region_tables(path, v):
    a, b = vt.corrupt_region_table_checksum(path, 0), vt.corrupt_region_table_checksum(path, 1)
    return ["no valid region table", f"0x{a:x}", f"0x{b:x}"]


def present(v, n):
    return v.blocks_in_state(vt.PAYLOAD_FULLY_PRESENT)[n]


def point_block(path, v, file_offset, state=vt.PAYLOAD_FULLY_PRESENT, block_n=1):
    i = v.bat_index(present(v, block_n))
    off = vt.set_bat_entry(path, i, vt.bat_entry(state, file_offset))
    return i, off


def overlapping_blocks(path, v):
    i, off = point_block(path, v, v.block_file_offset(present(v, 0)))
    other = v.bat_entry_offset(v.bat_index(present(v, 0)))
    return ["overlaps", f"BAT entry {i}", f"0x{off:x}", f"0x{other:x}"]


def block_in_header_area(path, v):
    i, off = point_block(path, v, 0)
    return [f"BAT entry {i}", f"0x{off:x}", "header area"]


def block_in_log(path, v):
    i, off = point_block(path, v, v.header.log_offset)
    return [f"BAT entry {i}", f"0x{off:x}", "log"]


def block_in_metadata(path, v):
    i, off = point_block(path, v, v.metadata_offset)
    return [f"BAT entry {i}", f"0x{off:x}", "metadata region"]


def block_in_bat(path, v):
    i, off = point_block(path, v, v.bat_offset)
    return [f"BAT entry {i}", f"0x{off:x}", "BAT region"]


def block_past_eof(path, v):
    i, off = point_block(path, v, -(-v.file_size // MiB) * MiB + 4 * MiB)
    return [f"BAT entry {i}", f"0x{off:x}", "past the end of the file"]


def bat_reserved_bits(path, v):
    b = present(v, 0)
    i = v.bat_index(b)
    off = vt.set_bat_entry(path, i, vt.bat_entry(vt.PAYLOAD_FULLY_PRESENT, v.block_file_offset(b), reserved=1 << 5))
    return [f"BAT entry {i}", f"0x{off:x}", "reserved"]


def unknown_required_metadata(path, v):
    off = vt.add_metadata_entry(path, uuid.UUID("6d3c2f61-9a55-4b8e-8f0e-0123456789ab"), b"\1" * 8, is_required=True)
    return ["metadata", f"0x{off:x}", "IsRequired"]


def unknown_required_region(path, v):
    # Where it points is valid: 1 MiB of file space that nothing else uses.
    free = [r for r in v.stale_ranges() if r[0] % MiB == 0 and r[1] >= MiB][0]
    guid = uuid.UUID("a1b2c3d4-0000-4000-8000-00000000abcd")
    off = vt.add_region_entry(path, 0, guid, free[0], MiB, required=True)
    vt.add_region_entry(path, 1, guid, free[0], MiB, required=True)
    return ["region", f"0x{off:x}", "Required"]


def block_size(value):
    def mutate(path, v):
        data = struct.pack("<I", value) + v.item_data(vt.FILE_PARAMETERS, 8)[4:]
        off = vt.set_metadata_item_data(path, vt.FILE_PARAMETERS, data)
        return ["BlockSize", f"0x{off:x}", str(value)]
    return mutate


def logical_sector_size(path, v):
    off = vt.set_metadata_item_data(path, vt.LOGICAL_SECTOR_SIZE, struct.pack("<I", 1000))
    return ["Logical Sector Size", f"0x{off:x}", "1000"]


def block_state(state):
    def mutate(path, v):
        b = present(v, 0)
        i = v.bat_index(b)
        off = vt.set_bat_entry(path, i, vt.bat_entry(state, v.block_file_offset(b)))
        return [f"BAT entry {i}", f"0x{off:x}", f"state {state}"]
    return mutate


def bat_region_empty(path, v):
    entry = [e for e in v.regions if e.guid == vt.BAT_REGION][0]
    off = vt.set_region_entry(path, v.region_table_used, entry.index, length=0)
    if v.region_table_used == 0:
        vt.set_region_entry(path, 1, entry.index, length=0)
    return ["BAT", "Length", f"0x{off + 24:x}"]


def virtual_size_unaligned(path, v):
    off = vt.set_metadata_item_data(path, vt.VIRTUAL_DISK_SIZE, struct.pack("<Q", v.virtual_size + 100))
    return ["Virtual Disk Size", f"0x{off:x}"]


def log_in_header_area(path, v):
    offs = [vt.set_header_fields(path, i, log_offset=0)["log_offset"] for i in (0, 1)]
    return ["LogOffset", f"0x{offs[v.current]:x}"]


DEFECTS = [
    ("bad CRC in header 1", header1_crc),
    ("bad CRC in both headers", both_headers_crc),
    ("equal sequence numbers, different headers", equal_sequence_differ),
    ("both region tables corrupt", both_region_tables),
    ("overlapping BAT entries", overlapping_blocks),
    ("BAT entry into the header area", block_in_header_area),
    ("BAT entry into the log", block_in_log),
    ("BAT entry into the metadata region", block_in_metadata),
    ("BAT entry into the BAT region", block_in_bat),
    ("BAT entry past EOF", block_past_eof),
    ("reserved bits in a BAT entry", bat_reserved_bits),
    ("unknown required metadata item", unknown_required_metadata),
    ("unknown required region", unknown_required_region),
    ("block size 3 MiB", block_size(3 * MiB)),
    ("block size 512 KiB", block_size(512 * KiB)),
    ("logical sector size 1000", logical_sector_size),
    ("log inside the header area", log_in_header_area),
    ("PARTIALLY_PRESENT block in a disk without parent", block_state(vt.PAYLOAD_PARTIALLY_PRESENT)),
    ("undefined payload block state 4", block_state(4)),
    ("BAT region of length 0", bat_region_empty),
    ("virtual size not a multiple of the sector size", virtual_size_unaligned),
]


def test_defects(work, base):
    v = vt.Vhdx.open(base)
    t.check(len(v.blocks_in_state(vt.PAYLOAD_FULLY_PRESENT)) >= 2, "the base image has present blocks to play with")
    dry = oncetest.run_once(base, "--discard=safe", "--dry-run")
    t.check(dry.report.get("result") == "success" and dry.report.get("zero_bytes", 0) > 0,
            f"the base image itself is valid and has zeros to punch: {dry}")

    images = []
    for i, (name, mutate) in enumerate(DEFECTS):
        path = os.path.join(work, f"defect-{i:02d}.vhdx")
        shutil.copyfile(base, path)
        needles = mutate(path, v)
        sha = oncetest.sha256(path)
        images.append((path, sha))
        run = oncetest.run_once(path, "--discard=safe")
        rep = run.report
        t.check(run.rc == 1 and rep.get("result") == "refused-invalid",
                f"{name}: refused-invalid, exit 1 (exit {run.rc}, {rep.get('result')!r})")
        msg = rep.get("message", "")
        t.check(all(n in msg for n in needles), f"{name}: the message names {needles}: {msg!r}")
        t.equal(oncetest.json_fields_problems(rep), [], f"{name}: JSON fields")
        t.check(oncetest.sha256(path) == sha, f"{name}: sha256 unchanged")

    run = oncetest.run_once([p for p, _ in images])
    t.check(run.rc == 1 and len(run.reports) == len(images) and
            all(r.get("result") == "refused-invalid" for r in run.reports),
            f"all {len(images)} defects in one call (default --discard): one refused-invalid line each, exit 1")
    t.check(all(oncetest.sha256(p) == sha for p, sha in images), "all defects in one call: every sha256 unchanged")
    for p, _ in images:
        os.unlink(p)


def test_region_table_fallback(work, base):
    path, before = os.path.join(work, "rt1-bad.vhdx"), os.path.join(work, "rt1-before.vhdx")
    shutil.copyfile(base, path)
    vt.corrupt_region_table_checksum(path, 0)
    shutil.copyfile(path, before)
    p = oncetest.run([oncetest.binary(), "--inspect", path])
    t.check(p.returncode == 0 and "copy 2 used" in p.stdout, "region table 1 corrupt: --inspect uses copy 2")
    run = oncetest.run_once(path, "--discard=safe")
    rep = run.report
    t.check(run.rc == 0 and rep.get("result") == "success" and rep.get("zero_bytes", 0) > 0,
            f"region table 1 corrupt, table 2 intact: processed: {run}")
    t.check(vt.Vhdx.open(path).region_tables[0].checksum != vt.Vhdx.open(path).region_tables[1].checksum,
            "region table 1 corrupt: the pass did not repair (write) it")
    # qemu 7.2 reads only region table 1, so it cannot open either file as
    # they are. Copying the intact table 2 over table 1 in both makes them
    # readable to qemu without touching anything the pass worked on.
    ok, _ = oncetest.qemu_img_check(before)
    print(f"note: qemu-img {'opens' if ok else 'cannot open'} a VHDX whose region table 1 is corrupt")
    for p in (path, before):
        vt.write_at(p, vt.REGION_TABLE_OFFSETS[0], vt.read_at(p, vt.REGION_TABLE_OFFSETS[1], vt.REGION_TABLE_SIZE))
    ok, out = oncetest.qemu_img_check(path)
    t.check(ok, "region table 1 corrupt: qemu-img check clean after the pass (table 1 restored from 2)"
            + ("" if ok else f": {out}"))
    ok, out = oncetest.qemu_img_compare(before, path)
    t.check(ok, "region table 1 corrupt: qemu-img compare with the copy made before: identical" + ("" if ok else f": {out}"))


def test_foreign_formats(work):
    """Other virtual disk formats must not be taken for raw images."""
    for fmt, name, opts in (("qcow2", "qcow2", []), ("vmdk", "VMDK", []), ("vdi", "VDI", []), ("vpc", "VHD", []),
                            ("vpc", "VHD", ["-o", "subformat=fixed"])):     # a fixed VHD: only a footer, at the end
        path = os.path.join(work, f"disk.{fmt}")
        oncetest.run(["qemu-img", "create", "-q", "-f", fmt, *opts, path, "64M"], check=True)
        oncetest.qemu_io(path, fmt, ["write -q -P 0x5a 0 1M", "write -q -P 0 1M 2M", "write -q -P 0x5a 3M 1M"])
        sha = oncetest.sha256(path)
        run = oncetest.run_once(path)
        t.check(run.rc == 1 and run.report.get("result") == "refused-invalid" and name in run.report.get("message", ""),
                f"a {name} image ({fmt} {' '.join(opts)}): refused-invalid naming the format, exit 1: {run.report.get('message')!r}")
        t.check(oncetest.sha256(path) == sha, f"a {name} image: untouched (sha256)")
        os.unlink(path)


def test_short_last_block(work, base):
    """Real files end short: a last block cut off by EOF is tolerated (and
    qemu 7.2 refuses such a file, so vhdxtool reads the guest view)."""
    path, before = os.path.join(work, "short.vhdx"), os.path.join(work, "short-before.vhdx")
    shutil.copyfile(base, path)
    v = vt.Vhdx.open(path)
    last = max(v.present_block_ranges())
    os.truncate(path, last[0] + last[1] - MiB + 512)
    shutil.copyfile(path, before)
    size = os.path.getsize(path)
    run = oncetest.run_once(path, "--discard=safe")
    t.check(run.rc == 0 and run.report.get("result") == "success",
            f"last block cut short by EOF: processed: {run}")
    t.equal(os.path.getsize(path), size, "last block cut short by EOF: the file size is unchanged")
    a, b = vt.Vhdx.open(before), vt.Vhdx.open(path)
    t.check(a.read_virtual(0, a.virtual_size) == b.read_virtual(0, b.virtual_size),
            "last block cut short by EOF: the guest view (vhdxtool) is unchanged")


def test_fixed(work):
    path, before = os.path.join(work, "fixed.vhdx"), os.path.join(work, "fixed-before.vhdx")
    make_base(path, "subformat=fixed", "block_state_zero=off")
    v = vt.Vhdx.open(path)
    t.check(v.leave_block_allocated, "qemu-img subformat=fixed sets LeaveBlockAllocated")
    oncetest.clone_sparse(path, before)
    sha = oncetest.sha256(path)
    for mode in ("--discard=safe", "--discard=free"):
        run = oncetest.run_once(path, mode)
        t.check(run.rc == 0 and run.report.get("result") == "skipped-fixed", f"fixed disk {mode}: skipped-fixed, exit 0: {run}")
        t.check(oncetest.sha256(path) == sha, f"fixed disk {mode}: untouched (sha256)")
    run = oncetest.run_once(path, "--discard=safe", "--force")
    t.check(run.rc == 0 and run.report.get("result") == "success" and run.report.get("zero_bytes", 0) >= MiB,
            f"fixed disk --force: reclaimed: {run}")
    ok, out = oncetest.qemu_img_check(path)
    t.check(ok, "fixed disk --force: qemu-img check clean" + ("" if ok else f": {out}"))
    ok, out = oncetest.qemu_img_compare(before, path)
    t.check(ok, "fixed disk --force: qemu-img compare identical" + ("" if ok else f": {out}"))
    t.equal(vt.Vhdx.open(path).bat, v.bat, "fixed disk --force: every block stays allocated in the BAT")


def main():
    oncetest.require_tools("qemu-img", "qemu-io")
    work = oncetest.workdir("test-once-malformed-")
    try:
        base = os.path.join(work, "base.vhdx")
        make_base(base)
        test_defects(work, base)
        test_region_table_fallback(work, base)
        test_short_last_block(work, base)
        test_foreign_formats(work)
        test_fixed(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    t.exit()


if __name__ == "__main__":
    main()
