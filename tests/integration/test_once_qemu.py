#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""`vhdreclaimd --once` on images made by qemu-img and filled through qemu-io,
where we know exactly what should be punched.

Images: VHDX with block sizes 1 MiB, 32 MiB and 256 MiB (logical sector 512),
a VHDX with 4096-byte logical sectors, and raw images; a VHDX and a raw image
whose size ends 512 bytes into a block. Each is filled with
qemu-io: 0x5a data, zero data written inside it (`write -P 0`: on a VHDX
qemu 7.2 writes zero data for `write -z` too, never a ZERO block state), and
holes: the parts of allocated blocks qemu never wrote, and blocks never
written at all (no file space).

The expected result is computed independently of the daemon, from the block
allocation table (vhdxtool) and the file's bytes and holes: the zero tier
covers the structures and the FULLY_PRESENT blocks (a raw image is all data);
in it, a zero run is a maximal stretch of file-system blocks that read as
zeros (zero data or existing holes); every run whose aligned length reaches
minHole is punched, nothing else; the stale tier punches the allocated parts
of space nothing refers to. The checks, for minHole 64K (the default) and 1M:

- the file's holes afterwards (SEEK_DATA/SEEK_HOLE) are exactly the holes
  before plus the expected runs; the zero runs we planted of at least minHole
  are among them, the shorter one and every 0x5a byte are not;
- zero_bytes and stale_bytes equal the expected sums; reclaimed is what
  st_blocks says;
- --dry-run reports the same numbers and changes nothing (sha256, st_blocks);
- a second pass is nothing-to-do;
- qemu-img check is clean and qemu-img compare against a copy made before
  says identical (for 4096-byte sectors, which qemu 7.2 cannot open, the guest
  view read through vhdxtool is compared instead).

Structures keep every byte: non-zero bytes in the header area's gaps, a
clean log, the BAT and metadata regions past what is used, and an unknown
optional region stay, while the zero runs around them go.

A differencing disk (made from a qemu one with vhdxtool): its PARTIALLY_PRESENT
block stays whole, its sector bitmap block keeps its bits.

Also: the JSON fields of DESIGN.md with their types, exit codes 0/1/2, and
several images in one call (one line each, in order).

Skips (77) without qemu-img/qemu-io; fails in CI.
"""

import hashlib
import json
import os
import shutil
import struct
import subprocess
import uuid

import oncetest
import vhdxtool
from oncetest import KiB, MiB

t = oncetest.Checker()

# What qemu-io writes, relative to the start of each data area: (kind, offset, length).
# "data" is 0x5a; "zero" is zero data written over it afterwards.
AREA_A = [
    ("data", 0, 4 * MiB),
    ("zero", 256 * KiB, 64 * KiB),             # exactly minHole
    ("zero", 512 * KiB, 60 * KiB),             # one block short of minHole
    ("zero", 1 * MiB - 32 * KiB, 64 * KiB),    # across a 1 MiB boundary
    ("zero", 1536 * KiB + 512, 128 * KiB),     # unaligned: its aligned inside is 124 KiB
    ("zero", 2 * MiB, 1280 * KiB),             # long enough for minHole 1M
    ("zero-z", 3392 * KiB, 128 * KiB),         # `write -z`: zero data in a VHDX, an unwritten extent in a raw file
    ("zero", 3584 * KiB, 512 * KiB),           # ends the area: next to unwritten space
]
AREA_B = [
    ("data", 0, 2 * MiB),
    ("zero", 512 * KiB, 1 * MiB),
]


def layout(block_size, virtual_size, fmt):
    """(list of (kind, virtual offset, length), virtual size) for one image:
    area A at 0, area B in a later block, blocks in between never written.
    A VHDX also gets two "stale" areas: 0x77 data whose blocks are then
    unmapped in the BAT (one ZERO with its offset cleared, one UNMAPPED with
    its offset kept), so their file space is stale."""
    b_start = max(2 * block_size, 16 * MiB)
    if block_size >= 32 * MiB:
        b_start += block_size // 2        # in the middle of a block: holes on both sides
    plan = [(k, o, n) for k, o, n in AREA_A] + [(k, b_start + o, n) for k, o, n in AREA_B]
    end = b_start + 4 * MiB
    if fmt != "raw":
        c_start = (b_start // block_size + 2) * block_size
        plan += [("stale", c_start, 1 * MiB), ("stale", c_start + block_size + 256 * KiB, min(2 * MiB, block_size - 256 * KiB))]
        end = c_start + 2 * block_size
    return plan, max(virtual_size, -(-end // block_size) * block_size)


def unmap_stale_blocks(path, plan):
    v = vhdxtool.Vhdx.open(path)
    stale_blocks = sorted({o // v.block_size for k, o, n in plan if k == "stale"})
    for i, block in enumerate(stale_blocks):
        index = v.bat_index(block)
        if i % 2 == 0:
            vhdxtool.set_bat_entry(path, index, vhdxtool.bat_entry(vhdxtool.PAYLOAD_ZERO))
        else:
            vhdxtool.set_bat_entry(path, index, vhdxtool.bat_entry(vhdxtool.PAYLOAD_UNMAPPED, v.block_file_offset(block)))


def qemu_commands(plan):
    pattern = {"data": "-P 0x5a", "zero": "-P 0", "zero-z": "-z", "stale": "-P 0x77"}
    return [f"write -q {pattern[kind]} {off} {length}" for kind, off, length in plan]


def planted(plan):
    """(zero runs, 0x5a ranges) in virtual offsets."""
    zeros = [(o, n) for k, o, n in plan if k in ("zero", "zero-z")]
    data = vhdxtool.subtract([(o, n) for k, o, n in plan if k == "data"], zeros)
    return zeros, data


# ---------------------------------------------------------------- the independent expectation

def aligned(run, align):
    start = -(-run[0] // align) * align
    end = (run[0] + run[1]) // align * align
    return (start, end - start) if end > start else None


def zero_runs(path, ranges, align):
    """Maximal runs of align-sized pieces inside `ranges` (touching ranges are
    one) that read as zeros: holes, or data that is all zero bytes."""
    runs = []
    data = vhdxtool.data_extents(path)
    with open(path, "rb") as f:
        for start, length in vhdxtool.normalize(ranges):
            end = start + length
            run_start = None
            pos = start
            for d_off, d_len in vhdxtool.intersect(data, [(start, length)]) + [(end, 0)]:
                # [pos, d_off) is a hole: part of the open run.
                if run_start is None and d_off > pos:
                    run_start = pos
                p = d_off
                while p < d_off + d_len:
                    q = min((p // align + 1) * align, d_off + d_len)
                    f.seek(p)
                    if f.read(q - p).count(0) == q - p:
                        if run_start is None:
                            run_start = p
                    elif run_start is not None:
                        runs.append((run_start, p - run_start))
                        run_start = None
                    p = q
                pos = d_off + d_len
            if run_start is not None and end > run_start:
                runs.append((run_start, end - run_start))
    return runs


def allocated_in(path, ranges):
    return vhdxtool.total(vhdxtool.intersect(vhdxtool.data_extents(path), ranges))


class Expected:
    def __init__(self, path, fmt, min_hole):
        align = oncetest.host_block_size(path)
        min_hole = -(-max(min_hole, align) // align) * align
        size = os.path.getsize(path)
        if fmt == "vhdx":
            v = vhdxtool.Vhdx.open(path)
            zero_tier = v.structure_ranges() + v.present_block_ranges()
            stale = [a for a in (aligned(r, align) for r in v.stale_ranges()) if a and a[1] >= min_hole]
        else:
            zero_tier, stale = [(0, size)], []
        runs = [a for a in (aligned(r, align) for r in zero_runs(path, zero_tier, align)) if a and a[1] >= min_hole]
        self.zero_runs = vhdxtool.normalize(runs)
        self.zero_bytes = allocated_in(path, self.zero_runs)
        self.stale = vhdxtool.normalize(stale)
        self.stale_bytes = allocated_in(path, self.stale)
        self.holes_after = vhdxtool.normalize(vhdxtool.hole_extents(path) + self.zero_runs + self.stale)


def file_ranges(path, fmt, virtual_ranges):
    """File ranges storing virtual ranges (present blocks only, for VHDX)."""
    if fmt == "raw":
        return list(virtual_ranges)
    v = vhdxtool.Vhdx.open(path)
    out = []
    for off, length in virtual_ranges:
        while length > 0:
            n = min(length, v.block_size - off % v.block_size)
            fo = v.virtual_to_file(off)
            if fo is not None:
                out.append((fo, n))
            off += n
            length -= n
    return vhdxtool.normalize(out)


# ---------------------------------------------------------------- one image, one minHole

def guest_view(path, fmt):
    if fmt == "vhdx-4k":
        v = vhdxtool.Vhdx.open(path)
        return hashlib.sha256(v.read_virtual(0, v.virtual_size)).hexdigest()
    return None


def same_guest_content(name, image, before, fmt):
    if fmt == "vhdx-4k":
        t.check(guest_view(image, fmt) == guest_view(before, fmt),
                f"{name}: guest view (read through vhdxtool) identical to the copy made before")
        return
    qfmt = "raw" if fmt == "raw" else "vhdx"
    if qfmt == "vhdx":
        ok, out = oncetest.qemu_img_check(image)
        t.check(ok, f"{name}: qemu-img check clean" + ("" if ok else f": {out}"))
    ok, out = oncetest.qemu_img_compare(before, image, qfmt)
    t.check(ok, f"{name}: qemu-img compare with the copy made before: identical" + ("" if ok else f": {out}"))


def one_pass_check(name, base, fmt, plan, min_hole, work):
    # A raw image is raw by its name (.raw), never by falling through.
    image = os.path.join(work, "image.raw" if fmt == "raw" else "image.vhdx")
    before = os.path.join(work, "before")
    oncetest.clone_sparse(base, image)
    oncetest.clone_sparse(base, before)
    disk_fmt = "raw" if fmt == "raw" else "vhdx"
    opts = ["--discard=safe"] + ([f"--min-hole={min_hole // KiB}K"] if min_hole != 64 * KiB else [])
    exp = Expected(image, disk_fmt, min_hole)
    zeros, data = planted(plan)

    stale_written = sum(n for k, o, n in plan if k == "stale")
    t.check(exp.stale_bytes >= stale_written,
            f"{name}: the unmapped blocks left {exp.stale_bytes} bytes of stale space (>= the {stale_written} written there)")

    sha, blocks = oncetest.sha256(image), oncetest.allocated(image)
    dry = oncetest.run_once(image, *opts, "--dry-run")
    drep = dry.report
    t.check(dry.rc == 0 and drep.get("result") in ("success", "nothing-to-do") and drep.get("dry_run") is True,
            f"{name} --dry-run: {dry}")
    t.equal((drep.get("stale_bytes"), drep.get("zero_bytes")), (exp.stale_bytes, exp.zero_bytes),
            f"{name} --dry-run: (stale_bytes, zero_bytes) as expected")
    t.check(oncetest.sha256(image) == sha and oncetest.allocated(image) == blocks,
            f"{name} --dry-run: sha256 and st_blocks unchanged")

    run = oncetest.run_once(image, *opts)
    rep = run.report
    t.check(run.rc == 0 and rep.get("result") == "success", f"{name}: success, exit 0: {run}")
    t.equal(oncetest.json_fields_problems(rep), [], f"{name}: JSON fields")
    t.equal(rep.get("format"), disk_fmt, f"{name}: format")
    t.equal(rep.get("zero_bytes"), exp.zero_bytes, f"{name}: zero_bytes is the sum of the expected runs")
    t.equal(rep.get("stale_bytes"), exp.stale_bytes, f"{name}: stale_bytes as expected")
    after = oncetest.allocated(image)
    t.equal(rep.get("reclaimed"), blocks - after, f"{name}: reclaimed is the st_blocks difference")
    punched = exp.zero_bytes + exp.stale_bytes
    t.check(abs((blocks - after) - punched) <= 64 * KiB,
            f"{name}: st_blocks shrank by {blocks - after}, the punched bytes are {punched} (file-system metadata aside)")

    holes = vhdxtool.hole_extents(image)
    extra, missing = vhdxtool.subtract(holes, exp.holes_after), vhdxtool.subtract(exp.holes_after, holes)
    t.check(not extra and not missing,
            f"{name}: the holes are exactly the old ones plus the expected runs "
            f"({len(exp.zero_runs)} zero runs, {len(exp.stale)} stale ranges)"
            + ("" if not extra and not missing else f"; punched but not expected {extra}, expected but not punched {missing}"))

    align = oncetest.host_block_size(image)
    for z in zeros:
        fr = file_ranges(image, disk_fmt, [z])
        inner = [a for a in (aligned(r, align) for r in fr) if a]
        if vhdxtool.total(inner) >= min_hole:
            t.check(not vhdxtool.subtract(inner, holes),
                    f"{name}: planted zero run virtual 0x{z[0]:x}+{z[1] // KiB}K is a hole now")
    short = [z for z in zeros if z[1] < 64 * KiB]
    for z in short:
        t.check(not vhdxtool.intersect(file_ranges(image, disk_fmt, [z]), holes),
                f"{name}: planted zero run virtual 0x{z[0]:x}+{z[1] // KiB}K (below minHole) is still data")
    t.check(not vhdxtool.intersect(file_ranges(image, disk_fmt, data), holes),
            f"{name}: every 0x5a byte is still data")

    same_guest_content(name, image, before, fmt)

    again = oncetest.run_once(image, *opts)
    t.check(again.rc == 0 and again.report.get("result") == "nothing-to-do" and
            again.report.get("zero_bytes") == 0 and again.report.get("stale_bytes") == 0,
            f"{name}: a second pass has nothing to do: {again}")
    os.unlink(image)
    os.unlink(before)


def make_image(path, fmt, block_size, virtual_size, odd_tail=False):
    """odd_tail: the virtual size ends 5 MiB + 512 bytes into a last, partial
    block, with data and a zero run at its very end."""
    plan, vsize = layout(block_size, virtual_size, fmt)
    if odd_tail:
        vsize += 5 * MiB + 512
        plan += [("data", vsize - 3 * MiB, 3 * MiB), ("zero", vsize - 2 * MiB - 512, 1 * MiB)]
    if fmt == "raw":
        oncetest.run(["qemu-img", "create", "-q", "-f", "raw", path, str(vsize)], check=True)
    else:
        oncetest.run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", f"block_size={block_size}",
                      path, str(vsize)], check=True)
    oncetest.qemu_io(path, "raw" if fmt == "raw" else "vhdx", qemu_commands(plan))
    if fmt != "raw":
        unmap_stale_blocks(path, plan)
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)    # settle delayed allocation before st_blocks is compared
    os.close(fd)
    return plan


def to_4k_sectors(path):
    """Turns a qemu-made 512-byte-sector VHDX into one with 4096-byte logical
    (and physical) sectors, which qemu-img 7.2 cannot create. Valid as long as
    no sector bitmap entry interleaves the BAT under either chunk ratio: then
    the BAT, and every block's place, stay the same."""
    v = vhdxtool.Vhdx.open(path)
    assert v.virtual_size % 4096 == 0
    assert v.data_blocks <= (1 << 23) * 512 // v.block_size
    vhdxtool.set_metadata_item_data(path, vhdxtool.LOGICAL_SECTOR_SIZE, (4096).to_bytes(4, "little"))
    vhdxtool.set_metadata_item_data(path, vhdxtool.PHYSICAL_SECTOR_SIZE, (4096).to_bytes(4, "little"))


def report_write_z(label, path, fmt, plan):
    """What `qemu-io write -z` made of its range: the premise of the layout."""
    (off, length), = [(o, n) for k, o, n in plan if k == "zero-z"]
    fr = file_ranges(path, fmt, [(off, length)])
    data = vhdxtool.total(vhdxtool.intersect(vhdxtool.data_extents(path), fr))
    if fmt == "vhdx":
        t.check(vhdxtool.total(fr) == length and data == length and
                vhdxtool.read_at(path, fr[0][0], length) == bytes(length),
                f"{label}: qemu-io write -z wrote zero data into a FULLY_PRESENT block (not a ZERO block state)")
    else:
        print(f"note: {label}: qemu-io write -z left {length - data} of {length} bytes as what SEEK_DATA calls a hole "
              f"(an unwritten extent: still allocated, skipped by the zero tier and by dig-holes alike)")


def test_images(work):
    cases = [("vhdx", 1 * MiB, False), ("vhdx", 32 * MiB, False), ("vhdx", 256 * MiB, False),
             ("vhdx-4k", 32 * MiB, False), ("raw", 1 * MiB, False),
             ("vhdx", 32 * MiB, True), ("raw", 1 * MiB, True)]
    for fmt, bs, odd_tail in cases:
        base = os.path.join(work, "base")
        plan = make_image(base, fmt, bs, 64 * MiB, odd_tail)
        label = (f"{fmt} bs={bs // MiB}M" if fmt != "raw" else "raw") + (" odd size" if odd_tail else "")
        if fmt == "vhdx-4k":
            to_4k_sectors(base)
            p = oncetest.run([oncetest.binary(), "--inspect", base])
            t.check("4096 logical" in p.stdout, f"{label}: --inspect shows 4096-byte logical sectors")
            ok, out = oncetest.qemu_img_check(base)
            print(f"note: qemu-img 7.2 and 4096-byte logical sectors: check {'passes' if ok else 'fails: ' + out.splitlines()[0]}")
        else:
            v = vhdxtool.Vhdx.open(base) if fmt == "vhdx" else None
            report_write_z(label, base, fmt, plan)
            if v:
                t.equal((v.block_size, v.logical_sector_size), (bs, 512), f"{label}: qemu-img made the block size asked for")
                t.check(v.state_counts().get(vhdxtool.PAYLOAD_ZERO, 0) > 0 or v.state_counts().get(0, 0) > 0,
                        f"{label}: some blocks were never written (no file space): {v.state_counts()}")
        for min_hole in (64 * KiB, 1 * MiB):
            one_pass_check(f"{label} minHole={min_hole // KiB}K", base, fmt, plan, min_hole, work)
        os.unlink(base)


# ---------------------------------------------------------------- structures keep every byte

def test_structures(work):
    """Non-zero bytes where a structure's content is free-form (gaps of the
    header area, a clean log's old entries, past the used part of the BAT and
    of the metadata region, an unknown optional region): the pass may punch
    the zero runs around them and must keep them, byte for byte."""
    base, before = os.path.join(work, "structures.vhdx"), os.path.join(work, "structures-before.vhdx")
    make_image(base, "vhdx", 1 * MiB, 64 * MiB)
    v = vhdxtool.Vhdx.open(base)
    free = [r for r in v.stale_ranges() if r[0] % MiB == 0 and r[1] >= MiB][0][0]
    guid = uuid.UUID("0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9")
    for table in (0, 1):
        vhdxtool.add_region_entry(base, table, guid, free, MiB, required=False)
    scribbles = [
        ("header area gap", 0xF0000, 4 * KiB),
        ("log entry", v.header.log_offset + 128 * KiB, 8 * KiB),
        ("log end", v.header.log_offset + v.header.log_length - 4 * KiB, 4 * KiB),
        ("BAT region past the entries", v.bat_offset + 512 * KiB, 4 * KiB),
        ("metadata region past the items", v.metadata_offset + 512 * KiB, 4 * KiB),
        ("unknown region start", free, 256 * KiB),
        ("unknown region middle", free + 768 * KiB, 4 * KiB),
    ]
    for i, (_, off, length) in enumerate(scribbles):
        vhdxtool.write_at(base, off, bytes([0xC1 + i]) * length)
    oncetest.clone_sparse(base, before)
    exp = Expected(base, "vhdx", 64 * KiB)
    t.check(any(vhdxtool.intersect(exp.zero_runs, [(free, MiB)])),
            "structures: zero runs are expected inside the unknown region too")

    run = oncetest.run_once(base, "--discard=safe")
    t.check(run.rc == 0 and run.report.get("result") == "success", f"structures: success: {run}")
    t.equal((run.report.get("zero_bytes"), run.report.get("stale_bytes")), (exp.zero_bytes, exp.stale_bytes),
            "structures: (zero_bytes, stale_bytes) as expected, the unknown region not counted stale")
    holes = vhdxtool.hole_extents(base)
    t.check(holes == exp.holes_after, "structures: the holes are exactly the old ones plus the expected runs")
    for i, (what, off, length) in enumerate(scribbles):
        t.check(not vhdxtool.intersect(holes, [(off, length)]) and
                vhdxtool.read_at(base, off, length) == bytes([0xC1 + i]) * length,
                f"structures: the bytes of the {what} are still there, as data")
    same_guest_content("structures", base, before, "vhdx")
    os.unlink(base)
    os.unlink(before)


# ---------------------------------------------------------------- a differencing disk

VHDX_PARENT_LOCATOR_TYPE = uuid.UUID("b04aefb7-d19e-4a81-b789-25b8e9445913")


def parent_locator(entries):
    """A Parent Locator item: header, key/value entries, UTF-16LE strings."""
    head = VHDX_PARENT_LOCATOR_TYPE.bytes_le + struct.pack("<HH", 0, len(entries))
    table, strings = b"", b""
    base = len(head) + 12 * len(entries)
    for key, value in entries:
        k, v = key.encode("utf-16-le"), value.encode("utf-16-le")
        table += struct.pack("<IIHH", base + len(strings), base + len(strings) + len(k), len(k), len(v))
        strings += k + v
    return head + table + strings


def test_differencing(work):
    """qemu 7.2 cannot make a differencing VHDX; vhdxtool turns a qemu-made
    disk into one (HasParent, a Parent Locator, a present sector bitmap
    block, a PARTIALLY_PRESENT block). Its zero runs may go from FULLY_PRESENT
    blocks and from the sector bitmap block; the PARTIALLY_PRESENT block, whose
    zeros may mean "read the parent", must stay whole."""
    path = os.path.join(work, "child.vhdx")
    make_image(path, "vhdx", 1 * MiB, 64 * MiB)
    v = vhdxtool.Vhdx.open(path)
    partial = 1                                       # block 1: 0x5a and zero runs of AREA_A
    partial_range = (v.block_file_offset(partial), v.block_size)
    bitmap_at = [r for r in v.stale_ranges() if r[0] % MiB == 0 and r[1] >= MiB][0][0]
    block_size, flags = struct.unpack("<II", v.item_data(vhdxtool.FILE_PARAMETERS, 8))
    vhdxtool.set_metadata_item_data(path, vhdxtool.FILE_PARAMETERS, struct.pack("<II", block_size, flags | 2))
    vhdxtool.add_metadata_entry(path, vhdxtool.PARENT_LOCATOR, parent_locator([
        ("parent_linkage", "{" + str(uuid.UUID("6b1f3e2a-1111-4222-8333-944455556666")) + "}"),
        ("relative_path", ".\\parent.vhdx")]), is_required=True)
    d = vhdxtool.Vhdx.open(path)
    t.check(d.has_parent and d.bat_entries == d.chunk_ratio + 1, "differencing: HasParent set, the BAT has its bitmap entry")
    vhdxtool.set_bat_entry(path, d.bat_index(partial),
                           vhdxtool.bat_entry(vhdxtool.PAYLOAD_PARTIALLY_PRESENT, partial_range[0]))
    vhdxtool.set_bat_entry(path, d.chunk_ratio, vhdxtool.bat_entry(vhdxtool.SB_PRESENT, bitmap_at))
    vhdxtool.write_at(path, bitmap_at, b"\xff" * (4 * KiB))
    vhdxtool.write_at(path, bitmap_at + 512 * KiB, b"\x0f" * (4 * KiB))
    vhdxtool.write_at(path, bitmap_at + 4 * KiB, bytes(256 * KiB))      # zero data in the bitmap block
    partial_data = vhdxtool.intersect(vhdxtool.data_extents(path), [partial_range])
    t.check(any(vhdxtool.read_at(path, o, n).count(0) > 64 * KiB for o, n in partial_data),
            "differencing: the PARTIALLY_PRESENT block holds zero runs a pass could punch")

    p = oncetest.run([oncetest.binary(), "--inspect", path])
    t.check(p.returncode == 0 and "differencing" in p.stdout and "PARTIALLY_PRESENT" in p.stdout,
            f"differencing: --inspect reads it as one ({p.stderr.strip()})")
    exp = Expected(path, "vhdx", 64 * KiB)
    t.check(not vhdxtool.intersect(exp.zero_runs + exp.stale, [partial_range]),
            "differencing: nothing of the PARTIALLY_PRESENT block is expected to go")
    live = vhdxtool.Vhdx.open(path).live_ranges()
    live_before = [vhdxtool.read_at(path, o, n) for o, n in live]
    run = oncetest.run_once(path, "--discard=safe")
    rep = run.report
    t.check(run.rc == 0 and rep.get("result") == "success", f"differencing --discard=safe: success: {run}")
    t.equal((rep.get("zero_bytes"), rep.get("stale_bytes")), (exp.zero_bytes, exp.stale_bytes),
            "differencing: (zero_bytes, stale_bytes) as expected")
    holes = vhdxtool.hole_extents(path)
    t.check(holes == exp.holes_after, "differencing: the holes are exactly the old ones plus the expected runs")
    t.equal(vhdxtool.intersect(vhdxtool.data_extents(path), [partial_range]), partial_data,
            "differencing: the PARTIALLY_PRESENT block is whole")
    t.check(vhdxtool.read_at(path, bitmap_at, 4 * KiB) == b"\xff" * (4 * KiB) and
            vhdxtool.read_at(path, bitmap_at + 512 * KiB, 4 * KiB) == b"\x0f" * (4 * KiB) and
            not vhdxtool.intersect(holes, [(bitmap_at, 4 * KiB), (bitmap_at + 512 * KiB, 4 * KiB)]),
            "differencing: the sector bitmap's bits are still there, as data")
    t.check([vhdxtool.read_at(path, o, n) for o, n in live] == live_before,
            "differencing: every byte of every structure and block reads the same")
    run = oncetest.run_once(path, "--discard=free")
    t.check(run.rc == 0 and run.report.get("result") == "skipped-differencing",
            f"differencing --discard=free, nothing left for the safe tiers: skipped-differencing: {run}")
    os.unlink(path)


# ---------------------------------------------------------------- JSON, exit codes, several images

def test_cli(work):
    vhdx, raw, bad = (os.path.join(work, n) for n in ("a.vhdx", "b.raw", "c.vhdx"))
    make_image(vhdx, "vhdx", 1 * MiB, 64 * MiB)
    make_image(raw, "raw", 1 * MiB, 64 * MiB)
    shutil.copyfile(vhdx, bad)
    vhdxtool.corrupt_header_checksum(bad, 0)
    missing = os.path.join(work, "does-not-exist.vhdx")

    r = oncetest.run_once([vhdx, raw], "--dry-run")
    t.check(r.rc == 0 and r.parse_error is None, f"two good images: exit 0 ({r})")
    t.equal([x.get("path") for x in r.reports], [vhdx, raw], "two good images: one line each, in order")
    t.equal([x.get("format") for x in r.reports], ["vhdx", "raw"], "two good images: formats")
    for x in r.reports:
        t.equal(oncetest.json_fields_problems(x), [], f"{os.path.basename(x.get('path', '?'))}: every DESIGN.md field, right types")

    r = oncetest.run_once([vhdx, bad, missing, raw], "--dry-run", "--discard=safe")
    t.equal(r.rc, 1, "a refused and a missing image among good ones: exit 1")
    t.equal([x.get("path") for x in r.reports], [vhdx, bad, missing, raw], "four images: one line each, in order")
    t.equal([x.get("result") for x in r.reports], ["success", "refused-invalid", "error", "success"],
            "four images: results")
    for x in r.reports:
        t.equal(oncetest.json_fields_problems(x), [], f"{os.path.basename(x.get('path', '?'))}: JSON fields, right types")
    t.check(r.parse_error is None, f"every line is JSON ({r.parse_error})")

    p = oncetest.run([oncetest.binary(), "--once", "--dry-run", vhdx, raw])
    lines = p.stdout.splitlines()
    t.check(p.returncode == 0 and len(lines) == 2 and lines[0].startswith(vhdx) and lines[1].startswith(raw),
            f"text output: one line per image: {lines}")

    # Paths are the one field that comes from outside: quotes, backslashes,
    # control characters and non-ASCII must come out as valid JSON, and a
    # name that is not UTF-8 at all (file names are bytes) as valid UTF-8.
    odd = os.path.join(work, 'odd "name"\\with\nnewline\ttab\x01 é.raw')
    shutil.copyfile(raw, odd)
    r = oncetest.run_once(odd, "--dry-run")
    t.check(r.parse_error is None and r.report.get("path") == odd,
            f"a path with quotes, backslash, control characters and UTF-8: valid JSON, the same path: {r}")
    not_utf8 = os.path.join(os.fsencode(work), b"latin1-\xe9t\xe9.raw")
    shutil.copyfile(raw, not_utf8)
    p = subprocess.run([oncetest.binary(), "--once", "--json", "--dry-run", not_utf8], stdout=subprocess.PIPE)
    try:
        rep = json.loads(p.stdout.decode("utf-8"))
        ok = rep.get("result") == "success" and rep.get("path", "").startswith(work + "/latin1-")
    except ValueError as e:
        ok, rep = False, f"{e}: {p.stdout[:120]!r}"
    t.check(ok, f"a path that is not UTF-8: the line is still valid UTF-8 JSON: {rep}")

    usage = [
        ([], "--once without an image"),
        (["--discard=bad", vhdx], "--discard=bad"),
        (["--discard=none", vhdx], "--discard=none (not a --once mode)"),
        (["--min-hole=abc", vhdx], "--min-hole=abc"),
        (["--min-hole=0", vhdx], "--min-hole=0"),
        (["--min-hole=3K", vhdx], "--min-hole=3K (not a power of two; minHole= refuses it)"),
        (["--min-hole=12K", vhdx], "--min-hole=12K (not a power of two)"),
        (["--min-hole=2K", vhdx], "--min-hole=2K (below 4K)"),
        (["--no-such-option", vhdx], "an unknown option"),
    ]
    sha = oncetest.sha256(vhdx)
    for args, what in usage:
        p = oncetest.run([oncetest.binary(), "--once", "--json", *args])
        t.check(p.returncode == 2 and p.stdout == "" and p.stderr.strip(),
                f"usage error, {what}: exit 2, a message, no report (exit {p.returncode}, {p.stderr.strip()!r})")
    p = oncetest.run([oncetest.binary(), "--once", "--min-hole=3K", vhdx])
    t.check("power of two" in p.stderr and "4K" in p.stderr,
            f"--min-hole=3K: the message says why (as minHole= does): {p.stderr.strip()!r}")
    # The sizes minHole= takes, T included.
    for size in ("1T", "4K", "1MB"):
        p = oncetest.run([oncetest.binary(), "--once", "--json", "--dry-run", f"--min-hole={size}", vhdx])
        t.check(p.returncode == 0 and json.loads(p.stdout).get("result") in ("success", "nothing-to-do"),
                f"--min-hole={size} --dry-run: accepted as minHole= is (exit {p.returncode}, {p.stderr.strip()!r})")
    p = oncetest.run([oncetest.binary(), "--inspect"])
    t.equal(p.returncode, 2, "--inspect without an image: exit 2")
    t.check(oncetest.sha256(vhdx) == sha, "usage errors touched nothing")


def main():
    oncetest.require_tools("qemu-img", "qemu-io")
    work = oncetest.workdir("test-once-qemu-")
    try:
        test_images(work)
        test_structures(work)
        test_differencing(work)
        test_cli(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    t.exit()


if __name__ == "__main__":
    main()
