#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Hostile and damaged VHDX images, one defect each, through
`vhdreclaimd --once --json`.

A generator takes small images made by qemu-img (16 MiB virtual, 1 MiB
blocks, three present blocks, stale space; and a 5 GiB one whose BAT has
sector-bitmap entries) and, with vhdxtool, pushes one field of one structure
to an edge: 0, the maximum, misaligned, past the end of the file,
overlapping another structure, pointing into itself; headers that differ
with equal sequence numbers; both region tables corrupt; a BAT larger than
its region; sector sizes that would overflow the chunk ratio; metadata items
out of their region; Required unknown regions and items; a log GUID with no
log; truncated files. Checksums are fixed up after each mutation, so the
mutated field is the only defect.

For a case the reader must refuse: result refused-invalid, the message names
the field, exit 1, the file's sha256 unchanged. For a case the specification
allows (so the image is processed): success or nothing-to-do, exit 0, every
byte of every structure and present block unchanged, the guest's view
unchanged (vhdxtool), and `qemu-img check` clean and `qemu-img compare`
identical when qemu-img opens the image at all. Skips (dirty log, fixed disk)
must leave the file byte-identical. In every case no sanitizer report on
stderr (the suite also runs against the ASan+UBSan build).

Skips (77) without qemu-img/qemu-io; fails in CI.
"""

import os
import shutil
import struct
import sys
import uuid

import oncetest
import vhdxtool
from oncetest import KiB, MiB, GiB
from vhdxtool import (BAT_REGION, METADATA_REGION, FILE_PARAMETERS, VIRTUAL_DISK_SIZE, PAGE83_DATA,
                      LOGICAL_SECTOR_SIZE, PHYSICAL_SECTOR_SIZE, PARENT_LOCATOR)

t = oncetest.Checker()

U32, U64 = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF
UNKNOWN = uuid.UUID("6f2e1e53-37c1-4d6a-9a8f-0d3c8e4f7a11")
SANITIZER_MARKS = ("AddressSanitizer", "UndefinedBehaviorSanitizer", "LeakSanitizer", "runtime error:")


# ---------------------------------------------------------------- base images

def make_small(work):
    """16 MiB virtual, 1 MiB blocks, 1 MiB log: header area, log at 1 MiB,
    BAT at 2 MiB, metadata at 3 MiB, blocks from 4 MiB. Three blocks present
    (one with a zero tail), the rest ZERO; a stale block's worth of space."""
    p = os.path.join(work, "small.vhdx")
    oncetest.run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", "block_size=1M,log_size=1M", p, "16M"], check=True)
    oncetest.qemu_io(p, "vhdx", ["write -P 0x5a 0 1M", "write -P 0x33 5M 64k", "write -P 0x77 9M 4k"])
    return p


def make_big(work):
    """5 GiB virtual, 1 MiB blocks: 5120 payload entries and a sector-bitmap
    entry at BAT index 4096 (the chunk ratio is 4096); a block present in
    each chunk."""
    p = os.path.join(work, "big.vhdx")
    oncetest.run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", "block_size=1M,log_size=1M", p, "5G"], check=True)
    oncetest.qemu_io(p, "vhdx", ["write -P 0x44 0 64k", "write -P 0x45 4097M 64k"])
    return p


# ---------------------------------------------------------------- mutation helpers

def region_index(v, guid):
    for e in v.regions:
        if e.guid == guid:
            return e.index
    raise LookupError(guid)


def item_index(v, item_id):
    return v.item(item_id).index


def set_region(which, **fields):
    """Rewrites fields of the entry of region `which` (a GUID) in both tables."""
    def mutate(path):
        v = vhdxtool.Vhdx.open(path)
        i = region_index(v, which)
        for table in (0, 1):
            vhdxtool.set_region_entry(path, table, i, **fields)
    return mutate


def set_region_count(count):
    def mutate(path):
        for table in (0, 1):
            vhdxtool.write_at(path, vhdxtool.REGION_TABLE_OFFSETS[table] + 8, struct.pack("<I", count))
            vhdxtool.fix_region_table_checksum(path, table)
    return mutate


def add_region(guid, offset, length, required):
    def mutate(path):
        for table in (0, 1):
            vhdxtool.add_region_entry(path, table, guid, offset, length, required)
    return mutate


def relocate_region(guid, new_offset):
    """Moves a region's bytes and its entry (both tables) to new_offset."""
    def mutate(path):
        v = vhdxtool.Vhdx.open(path)
        e = v.region(guid)
        vhdxtool.write_at(path, new_offset, vhdxtool.read_at(path, e.offset, e.length))
        set_region(guid, offset=new_offset)(path)
    return mutate


def set_header(which, **fields):
    """which: 0, 1, "current", "other" or "both"."""
    def mutate(path):
        v = vhdxtool.Vhdx.open(path)
        idx = {"current": [v.current], "other": [1 - v.current], "both": [0, 1]}.get(which, [which])
        for i in idx:
            vhdxtool.set_header_fields(path, i, **fields)
    return mutate


def header_raw_field(which, offset, data):
    """Writes raw bytes at an offset inside a header and fixes its checksum."""
    def mutate(path):
        v = vhdxtool.Vhdx.open(path)
        i = v.current if which == "current" else which
        vhdxtool.write_at(path, vhdxtool.HEADER_OFFSETS[i] + offset, data)
        vhdxtool.fix_header_checksum(path, i)
    return mutate


def corrupt_header_checksum(which):
    def mutate(path):
        for i in ([0, 1] if which == "both" else [which]):
            vhdxtool.corrupt_header_checksum(path, i)
    return mutate


def corrupt_table(table, how):
    def mutate(path):
        off = vhdxtool.REGION_TABLE_OFFSETS[table]
        if how == "signature":
            vhdxtool.write_at(path, off, b"REGI")
            vhdxtool.fix_region_table_checksum(path, table)
        else:
            vhdxtool.corrupt_region_table_checksum(path, table)
    return mutate


def chain(*mutations):
    def mutate(path):
        for m in mutations:
            m(path)
    return mutate


def metadata_table_field(rel, data):
    def mutate(path):
        v = vhdxtool.Vhdx.open(path)
        vhdxtool.write_at(path, v.metadata_offset + rel, data)
    return mutate


def set_item(which, **fields):
    """Rewrites fields of the metadata entry of item `which`."""
    def mutate(path):
        v = vhdxtool.Vhdx.open(path)
        vhdxtool.set_metadata_entry(path, item_index(v, which), **fields)
    return mutate


def item_like(item_id, other_id, **extra):
    """Points item_id's entry at other_id's data (an overlap)."""
    def mutate(path):
        v = vhdxtool.Vhdx.open(path)
        o = v.item(other_id)
        vhdxtool.set_metadata_entry(path, item_index(v, item_id), offset=o.offset, **extra)
    return mutate


def item_data(item_id, data):
    def mutate(path):
        vhdxtool.set_metadata_item_data(path, item_id, data)
    return mutate


def file_parameters(block_size=None, flags=None):
    def mutate(path):
        v = vhdxtool.Vhdx.open(path)
        bs, fl = struct.unpack("<II", v.item_data(FILE_PARAMETERS, 8))
        bs = bs if block_size is None else block_size
        fl = fl if flags is None else flags
        vhdxtool.set_metadata_item_data(path, FILE_PARAMETERS, struct.pack("<II", bs, fl))
    return mutate


def add_item(item_id, data, **flags):
    def mutate(path):
        vhdxtool.add_metadata_entry(path, item_id, data, **flags)
    return mutate


def parent_locator(entries, count=None):
    """A Parent Locator item: a 20-byte header (LocatorType, reserved,
    KeyValueCount) and 12-byte entries (key offset, value offset, key length,
    value length) followed by UTF-16 strings; entries is a list of raw tuples."""
    body = struct.pack("<16sHH", uuid.UUID("b04aefb7-d19e-4a81-b789-25b8e9445913").bytes_le, 0,
                       len(entries) if count is None else count)
    for e in entries:
        body += struct.pack("<IIHH", *e)
    strings_at = len(body)
    body += "parent_linkage".encode("utf-16-le") + "{00000000-0000-0000-0000-000000000001}".encode("utf-16-le")
    return body, strings_at


def valid_parent_locator():
    body, at = parent_locator([(0, 0, 28, 76)])
    body = bytearray(body)
    struct.pack_into("<IIHH", body, 20, at, at + 28, 28, 76)
    return bytes(body)


def set_bat(index_of, raw_of):
    """index_of(v) -> BAT index; raw_of(v, index) -> raw entry."""
    def mutate(path):
        v = vhdxtool.Vhdx.open(path)
        i = index_of(v)
        vhdxtool.set_bat_entry(path, i, raw_of(v, i))
    return mutate


def block(n):
    return lambda v: v.bat_index(n)


def state_at(state, offset):
    return lambda v, i: vhdxtool.bat_entry(state, offset)


def keep_offset(state=None, reserved=0):
    def raw(v, i):
        e = v.bat[i]
        return vhdxtool.bat_entry(e & 7 if state is None else state, (e >> 20) * MiB, reserved)
    return raw


def raw_entry(value):
    return lambda v, i: value


# The small image's layout (qemu-img 7.2): BAT at 2 MiB, metadata at 3 MiB,
# 4-8 MiB stale (allocated, referenced by nothing), present blocks 0, 5 and
# 9 at 8, 9 and 10 MiB. The cases below are checked against it in main().
STALE = 5 * MiB
PRESENT = 8 * MiB


def first_stale_mib(v):
    off = v.stale_ranges()[0][0]
    return -(-off // MiB) * MiB


def fill(offset, data):
    def mutate(path):
        vhdxtool.write_at(path, offset, data)
    return mutate


def move_item(item_id, new_rel):
    """Moves a metadata item's data to new_rel inside the region and points its entry there."""
    def mutate(path):
        v = vhdxtool.Vhdx.open(path)
        e = v.item(item_id)
        data = vhdxtool.read_at(path, e.data_offset, e.length)
        vhdxtool.write_at(path, v.metadata_offset + new_rel, data)
        vhdxtool.set_metadata_entry(path, e.index, offset=new_rel)
    return mutate


def truncate(size):
    def mutate(path):
        os.truncate(path, size)
    return mutate


def append_bytes(n):
    def mutate(path):
        with open(path, "ab") as f:
            f.write(b"\0" * n)
    return mutate


def file_identifier(data):
    def mutate(path):
        vhdxtool.write_at(path, 0, data)
    return mutate


def copy_header(src, dst):
    def mutate(path):
        raw = vhdxtool.read_at(path, vhdxtool.HEADER_OFFSETS[src], vhdxtool.HEADER_SIZE)
        vhdxtool.write_at(path, vhdxtool.HEADER_OFFSETS[dst], raw)
    return mutate


def equal_sequences(path):
    v = vhdxtool.Vhdx.open(path)
    vhdxtool.set_header_fields(path, 1 - v.current, sequence=v.header.sequence)


# ---------------------------------------------------------------- the cases

def refuse(expect):
    return ("refused-invalid", expect)


ALLOWED = ("allowed", None)


def cases():
    """(base, name, mutation, expectation): base "small" or "big";
    expectation refuse("words the message must contain"), ALLOWED, or
    ("skip", result)."""
    c = []

    def add(name, mutation, expect, base="small"):
        c.append((base, name, mutation, expect))

    # File type identifier and file size.
    # Headers and region tables still follow: a damaged VHDX, not a raw image.
    add("identifier signature", file_identifier(b"vhdxfilX"), refuse("damaged VHDX"))
    add("file cut to 8 bytes", truncate(8), refuse("file type identifier"))
    add("file cut inside header 1", truncate(64 * KiB + 100), refuse("header 1"))
    add("file cut inside header 2", truncate(130 * KiB), refuse("header 2"))
    add("file cut before region table 2", truncate(200 * KiB), refuse("past the end"))
    add("file cut inside the log", truncate(1 * MiB + 4 * KiB), refuse("past the end"))
    add("file cut before the metadata", truncate(3 * MiB), refuse("past the end"))
    add("file cut inside a present block", truncate(4 * MiB + 512 * KiB), refuse("past the end"))
    add("file not a multiple of 1 MiB", append_bytes(777), ALLOWED)

    # Headers: signature, checksum, each field at its edges, in the current
    # header (the other one is only checked for signature and checksum).
    for i in (0, 1):
        add(f"header {i + 1} signature", header_raw_field(i, 0, b"HEAD"), refuse(f"header {i + 1}: Signature"))
        add(f"header {i + 1} checksum", corrupt_header_checksum(i), refuse(f"header {i + 1}: Checksum"))
    add("both headers' checksums", corrupt_header_checksum("both"), refuse("no valid header"))
    add("headers differ, equal SequenceNumber", equal_sequences, refuse("SequenceNumber"))
    add("headers identical, equal SequenceNumber (Disk2VHD)", lambda p: copy_header(
        vhdxtool.Vhdx.open(p).current, 1 - vhdxtool.Vhdx.open(p).current)(p), ALLOWED)
    add("other header SequenceNumber max (becomes current)", set_header("other", sequence=U64), ALLOWED)
    add("current header SequenceNumber 0", set_header("current", sequence=0), ALLOWED)
    for value in (0, 2, 0xFFFF):
        add(f"Version {value}", set_header("current", version=value), refuse("Version"))
    add("Version 2 in the non-current header", set_header("other", version=2), ALLOWED)
    for value in (1, 0xFFFF):
        add(f"LogVersion {value}", set_header("current", log_version=value), refuse("LogVersion"))
    add("LogLength misaligned", set_header("current", log_length=MiB + 4096), refuse("LogLength"))
    add("LogLength 0xFFFFFFFF", set_header("current", log_length=U32), refuse("LogLength"))
    add("LogLength max multiple of 1 MiB (past EOF)", set_header("current", log_length=U32 & ~(MiB - 1)),
        refuse("LogLength"))
    add("LogLength 0 (no log)", set_header("both", log_length=0), ALLOWED)
    add("LogOffset 0", set_header("current", log_offset=0), refuse("LogOffset"))
    add("LogOffset inside the header area", set_header("current", log_offset=512 * KiB), refuse("LogOffset"))
    add("LogOffset misaligned", set_header("current", log_offset=MiB + 512), refuse("LogOffset"))
    add("LogOffset past EOF", set_header("current", log_offset=64 * GiB), refuse("LogOffset"))
    add("LogOffset max", set_header("current", log_offset=U64 & ~(MiB - 1)), refuse("LogOffset"))
    add("log overlaps the BAT", set_header("current", log_offset=2 * MiB), refuse("the log"))
    add("log overlaps the metadata", set_header("current", log_offset=3 * MiB, log_length=2 * MiB),
        refuse("the log"))
    add("log overlaps a present block", set_header("current", log_offset=PRESENT), refuse("the log"))
    add("log moved to stale space", set_header("both", log_offset=STALE), ALLOWED)
    add("LogGuid set, LogLength 0 (a log GUID with no log)",
        set_header("current", log_guid=UNKNOWN, log_length=0), refuse("LogGuid"))
    add("LogGuid set over an empty log", set_header("current", log_guid=UNKNOWN), ("skip", "skipped-dirty-log"))
    add("FileWriteGuid and DataWriteGuid zero", set_header("current", file_write_guid=uuid.UUID(int=0),
                                                            data_write_guid=uuid.UUID(int=0)), ALLOWED)

    # Region tables.
    add("region table 1 signature (table 2 used)", corrupt_table(0, "signature"), ALLOWED)
    add("region table 1 checksum (table 2 used)", corrupt_table(0, "checksum"), ALLOWED)
    add("both region tables' checksums", chain(corrupt_table(0, "checksum"), corrupt_table(1, "checksum")),
        refuse("no valid region table"))
    add("both region tables' signatures", chain(corrupt_table(0, "signature"), corrupt_table(1, "signature")),
        refuse("no valid region table"))
    add("region tables: one signature, one checksum", chain(corrupt_table(0, "signature"),
                                                            corrupt_table(1, "checksum")),
        refuse("no valid region table"))
    add("region EntryCount 0", set_region_count(0), refuse("no BAT region"))
    add("region EntryCount 2048", set_region_count(2048), refuse("EntryCount"))
    add("region EntryCount max", set_region_count(U32), refuse("EntryCount"))
    add("region EntryCount 3 (an empty third entry)", set_region_count(3), refuse("FileOffset"))
    for name, guid in (("BAT", BAT_REGION), ("metadata", METADATA_REGION)):
        add(f"{name} region FileOffset 0", set_region(guid, offset=0), refuse("FileOffset"))
        add(f"{name} region FileOffset inside the header area (its own table)", set_region(guid, offset=192 * KiB),
            refuse("FileOffset"))
        add(f"{name} region FileOffset misaligned", set_region(guid, offset=2 * MiB + 4 * KiB), refuse("FileOffset"))
        add(f"{name} region FileOffset past EOF", set_region(guid, offset=64 * GiB), refuse("past the end"))
        add(f"{name} region FileOffset max", set_region(guid, offset=U64 & ~(MiB - 1)), refuse("past the end"))
        add(f"{name} region Length 0", set_region(guid, length=0), refuse("Length"))
        add(f"{name} region Length misaligned", set_region(guid, length=MiB + 1), refuse("Length"))
        add(f"{name} region Length max", set_region(guid, length=U32), refuse("Length"))
        add(f"{name} region Length max multiple of 1 MiB", set_region(guid, length=U32 & ~(MiB - 1)),
            refuse("past the end"))
        add(f"{name} region overlaps the log", relocate_region(guid, 1 * MiB), refuse("overlaps"))
        add(f"{name} region overlaps a present block", relocate_region(guid, PRESENT), refuse("overlaps"))
        add(f"{name} region GUID unknown (missing {name})", set_region(guid, guid=UNKNOWN),
            refuse(f"no {name} region"))
        add(f"{name} region not Required", set_region(guid, required=False), ALLOWED)
        add(f"{name} region Required", set_region(guid, required=True), ALLOWED)
        add(f"{name} region relocated to stale space", relocate_region(guid, STALE), ALLOWED)
    add("BAT region Length 2 MiB (over the metadata region)", set_region(BAT_REGION, length=2 * MiB),
        refuse("overlaps"))
    add("metadata region Length 6 MiB (over the present blocks)", set_region(METADATA_REGION, length=6 * MiB),
        refuse("overlaps"))
    add("BAT region listed twice", add_region(BAT_REGION, STALE, MiB, False), refuse("appears twice"))
    add("unknown region, Required", add_region(UNKNOWN, STALE, MiB, True), refuse("Required"))
    add("unknown region, not Required (kept as a structure)",
        chain(add_region(UNKNOWN, STALE, MiB, False), fill(STALE, b"\x11" * 4096 + bytes(8192) + b"\x22")),
        ALLOWED_NO_QEMU)
    add("unknown region over a present block", add_region(UNKNOWN, PRESENT, MiB, False), refuse("overlaps"))
    add("unknown region over the BAT", add_region(UNKNOWN, 2 * MiB, MiB, False), refuse("overlaps"))
    add("unknown region past EOF", add_region(UNKNOWN, 64 * MiB, MiB, False), refuse("past the end"))

    # Metadata table and items.
    add("metadata Signature", metadata_table_field(0, b"METADATA"), refuse("metadata table Signature"))
    add("metadata EntryCount 0", metadata_table_field(10, struct.pack("<H", 0)), refuse("missing"))
    add("metadata EntryCount 2048", metadata_table_field(10, struct.pack("<H", 2048)), refuse("EntryCount"))
    add("metadata EntryCount max", metadata_table_field(10, struct.pack("<H", 0xFFFF)), refuse("EntryCount"))
    items = (("File Parameters", FILE_PARAMETERS), ("Virtual Disk Size", VIRTUAL_DISK_SIZE),
             ("Page 83 Data", PAGE83_DATA), ("Logical Sector Size", LOGICAL_SECTOR_SIZE),
             ("Physical Sector Size", PHYSICAL_SECTOR_SIZE))
    for name, item in items:
        add(f"{name} missing", set_item(item, item_id=UNKNOWN, flags=0), refuse(f"{name} is missing"))
        add(f"{name} Offset 0 (into the table)", set_item(item, offset=0), refuse(f"{name}"))
        add(f"{name} Offset inside the table", set_item(item, offset=32), refuse(f"{name} Offset"))
        add(f"{name} Offset at the region's end", set_item(item, offset=MiB - 2), refuse(f"{name} Offset"))
        add(f"{name} Offset max", set_item(item, offset=U32), refuse(f"{name} Offset"))
        add(f"{name} Offset unaligned, inside the region (moved)", move_item(item, 64 * KiB + 0x101), ALLOWED)
        add(f"{name} Length 0", set_item(item, length=0), refuse(name))
        add(f"{name} Length wrong", set_item(item, length=3), refuse(f"{name}"))
        add(f"{name} Length over 1 MiB", set_item(item, length=MiB + 8), refuse(f"{name} Length"))
        add(f"{name} Length max", set_item(item, length=U32), refuse(f"{name} Length"))
        add(f"{name} is a user item", set_item(item, flags=vhdxtool.metadata_flags(is_user=True)),
            refuse(f"{name} is missing"))
    add("two items overlap", item_like(VIRTUAL_DISK_SIZE, FILE_PARAMETERS), refuse("overlap"))
    add("File Parameters listed twice", set_item(PAGE83_DATA, item_id=FILE_PARAMETERS), refuse("appears twice"))
    add("unknown item, IsRequired", add_item(UNKNOWN, b"x" * 16, is_required=True), refuse("IsRequired"))
    add("unknown item, not required", add_item(UNKNOWN, b"x" * 16), ALLOWED)
    add("unknown user item, IsRequired", add_item(UNKNOWN, b"x" * 16, is_user=True, is_required=True),
        refuse("IsRequired"))
    add("user item, not required", add_item(UNKNOWN, b"x" * 16, is_user=True), ALLOWED)
    for value in (0, 512 * KiB, 3 * MiB, 512 * MiB, U32):
        add(f"BlockSize {value:#x}", file_parameters(block_size=value), refuse("BlockSize"))
    add("BlockSize 2 MiB (blocks then overlap)", file_parameters(block_size=2 * MiB), refuse("overlaps"))
    add("File Parameters reserved flag bits", file_parameters(flags=0x4), refuse("reserved bits"))
    add("File Parameters all flag bits", file_parameters(flags=U32), refuse("reserved bits"))
    add("LeaveBlockAllocated (fixed disk)", file_parameters(flags=1), ("skip", "skipped-fixed"))
    add("HasParent without a Parent Locator", file_parameters(flags=2), refuse("Parent Locator"))
    body, _ = parent_locator([], count=0xFFFF)
    add("Parent Locator KeyValueCount max", chain(add_item(PARENT_LOCATOR, body, is_required=True),
                                                  file_parameters(flags=2)), refuse("KeyValueCount"))
    body, at = parent_locator([(U32 - 4, 0, 28, 76)])
    add("Parent Locator key offset past the item", chain(add_item(PARENT_LOCATOR, body, is_required=True),
                                                         file_parameters(flags=2)), refuse("Parent Locator entry"))
    body, at = parent_locator([(0, 0, 0xFFFF, 76)])
    add("Parent Locator key length max", chain(add_item(PARENT_LOCATOR, body, is_required=True),
                                               file_parameters(flags=2)), refuse("Parent Locator entry"))
    add("Parent Locator shorter than its header", chain(add_item(PARENT_LOCATOR, b"\0" * 12, is_required=True),
                                                        file_parameters(flags=2)), refuse("Parent Locator"))
    # A differencing disk's BAT has a sector-bitmap entry after every chunk
    # (4097 entries here, all fitting the region): the safe tiers may run, the
    # free tier is skipped. qemu-img cannot open it without its parent.
    add("differencing disk (HasParent, valid locator)",
        chain(add_item(PARENT_LOCATOR, valid_parent_locator(), is_required=True), file_parameters(flags=2)),
        ALLOWED_NO_QEMU)
    for value in (0, 1, 511, 16 * MiB + 1, 64 * 1024 * GiB + 512, U64):
        add(f"Virtual Disk Size {value:#x}", item_data(VIRTUAL_DISK_SIZE, struct.pack("<Q", value)),
            refuse("Virtual Disk Size"))
    add("Virtual Disk Size 64 TiB (BAT larger than its region)",
        item_data(VIRTUAL_DISK_SIZE, struct.pack("<Q", 64 * 1024 * GiB)), refuse("BAT region"))
    add("Virtual Disk Size 129 GiB (BAT one entry over its region)",
        item_data(VIRTUAL_DISK_SIZE, struct.pack("<Q", 128 * GiB + MiB)), refuse("too small"))
    add("Virtual Disk Size 32 MiB (more blocks, BAT still fits)",
        item_data(VIRTUAL_DISK_SIZE, struct.pack("<Q", 32 * MiB)), ALLOWED)
    for name, item in (("Logical Sector Size", LOGICAL_SECTOR_SIZE), ("Physical Sector Size", PHYSICAL_SECTOR_SIZE)):
        for value in (0, 1, 520, 8192, 1 << 31, U32):
            add(f"{name} {value:#x}", item_data(item, struct.pack("<I", value)), refuse(name))
    # 2^23 * LogicalSectorSize / BlockSize: huge sector sizes would overflow
    # the chunk ratio; small blocks with big sectors give a ratio past 2^32.
    add("chunk ratio overflow: sector 2^31, block 1 MiB", item_data(LOGICAL_SECTOR_SIZE, struct.pack("<I", 1 << 31)),
        refuse("Logical Sector Size"))
    add("chunk ratio overflow: block 1 byte", file_parameters(block_size=1), refuse("BlockSize"))
    add("Logical Sector Size 4096 (chunk ratio 32768)", item_data(LOGICAL_SECTOR_SIZE, struct.pack("<I", 4096)),
        ALLOWED_NO_QEMU)

    # BAT entries of the small image: payload blocks 0, 5 and 9 are present.
    for state in (4, 5):
        add(f"BAT payload state {state}", set_bat(block(0), keep_offset(state)), refuse("invalid payload block state"))
    add("BAT PARTIALLY_PRESENT without a parent", set_bat(block(0), keep_offset(7)), refuse("PARTIALLY_PRESENT"))
    add("BAT reserved bits", set_bat(block(0), keep_offset(reserved=1)), refuse("reserved bits"))
    add("BAT reserved bits, all", set_bat(block(0), keep_offset(reserved=0x1FFFF)), refuse("reserved bits"))
    add("BAT present block at 0", set_bat(block(0), state_at(6, 0)), refuse("FileOffsetMB 0"))
    add("BAT present block in the log", set_bat(block(0), state_at(6, 1 * MiB)), refuse("overlaps"))
    add("BAT present block in the BAT (itself)", set_bat(block(0), state_at(6, 2 * MiB)), refuse("overlaps"))
    add("BAT present block in the metadata", set_bat(block(0), state_at(6, 3 * MiB)), refuse("overlaps"))
    add("BAT two blocks at one offset", set_bat(block(1), lambda v, i: vhdxtool.bat_entry(6, v.block_file_offset(0))),
        refuse("overlaps"))
    add("BAT present block past EOF", set_bat(block(0), state_at(6, 64 * GiB)), refuse("past the end"))
    add("BAT present block at the maximum offset", set_bat(block(0), raw_entry((U64 & ~0xFFFFF) | 6)),
        refuse("past the end"))
    add("BAT entry all ones", set_bat(block(0), raw_entry(U64)), refuse("BAT entry 0"))
    add("BAT last entry present past EOF", set_bat(block(15), state_at(6, 16 * GiB)), refuse("BAT entry 15"))
    for state in (0, 1, 2, 3):
        add(f"BAT state {state} with an offset past EOF (offset ignored)",
            set_bat(block(0), state_at(state, 64 * GiB)), ALLOWED)
    add("BAT present block moved to stale space", set_bat(block(0), state_at(6, STALE)), ALLOWED)
    add("BAT present block in the last, partial MiB of the file",
        chain(append_bytes(4096), set_bat(block(1), lambda v, i: vhdxtool.bat_entry(6, v.file_size // MiB * MiB))),
        ALLOWED)

    # Sector bitmap entries (the big image: BAT index 4096).
    sb = lambda v: 4096
    for state in (1, 2, 3, 4, 5, 7):
        add(f"sector bitmap state {state}", set_bat(sb, state_at(state, 0)), refuse("sector bitmap state"), "big")
    add("sector bitmap present at 0", set_bat(sb, state_at(6, 0)), refuse("FileOffsetMB 0"), "big")
    add("sector bitmap present past EOF", set_bat(sb, state_at(6, 64 * GiB)), refuse("past the end"), "big")
    add("sector bitmap present over the BAT", set_bat(sb, state_at(6, 2 * MiB)), refuse("overlaps"), "big")
    add("sector bitmap present over a payload block",
        set_bat(sb, lambda v, i: vhdxtool.bat_entry(6, v.block_file_offset(0))), refuse("overlaps"), "big")
    add("sector bitmap reserved bits", set_bat(sb, raw_entry(1 << 3)), refuse("reserved bits"), "big")
    add("sector bitmap present in stale space (kept as a structure)",
        set_bat(sb, lambda v, i: vhdxtool.bat_entry(6, first_stale_mib(v))), ALLOWED_NO_QEMU, "big")
    return c


# Allowed by the spec, but qemu-img cannot open it (a limit of qemu 7.2).
ALLOWED_NO_QEMU = ("allowed", "no-qemu")


# ---------------------------------------------------------------- checks

def sanitizer_silent(name, run):
    marks = [m for m in SANITIZER_MARKS if m in run.stderr]
    return t.check(not marks, f"{name}: no sanitizer report" + (f": {run.stderr.strip()[:2000]}" if marks else ""))


def read_ranges(path, ranges):
    with open(path, "rb") as f:
        out = []
        for off, length in ranges:
            f.seek(off)
            out.append(f.read(length))
        return out


def guest_view(path, blocks):
    """(bytes, None): the guest-visible bytes of the given payload blocks (the
    others read as zeros as long as the BAT is unchanged, which is checked
    separately); (None, why) when vhdxtool cannot read them. Never one value
    for both: two unreadable images must not compare equal."""
    try:
        v = vhdxtool.Vhdx.open(path)
        view = []
        for b in blocks:
            length = min(v.block_size, v.virtual_size - b * v.block_size)
            if not v.has_parent:
                view.append(v.read_virtual(b * v.block_size, length))
                continue
            # A differencing disk: a present block is the child's own bytes,
            # a ZERO block zeros; anything else shows its parent's data.
            state = v.block_state(b)
            if state == vhdxtool.PAYLOAD_ZERO:
                view.append(bytes(length))
            elif state == vhdxtool.PAYLOAD_FULLY_PRESENT:
                with open(path, "rb") as f:
                    f.seek(v.block_file_offset(b))
                    data = f.read(length)
                view.append(data + bytes(length - len(data)))
            else:
                return None, f"block {b} is in state {state}: the guest reads it from the parent"
        return view, None
    except (vhdxtool.FormatError, struct.error, IndexError) as e:
        return None, f"unreadable ({type(e).__name__}: {e})"


def same_guest_view(before, after, blocks):
    """(ok, detail): both images readable and their guest views identical."""
    view_before, why_before = guest_view(before, blocks)
    view_after, why_after = guest_view(after, blocks)
    if why_before or why_after:
        return False, f"before: {why_before or 'read'}, after: {why_after or 'read'}"
    return view_before == view_after, "" if view_before == view_after else "the bytes differ"


def check_refused(name, run, expect, sha_before, path):
    rep = run.report
    ok = (run.rc == 1 and rep.get("result") == "refused-invalid" and
          expect.lower() in rep.get("message", "").lower() and oncetest.sha256(path) == sha_before)
    t.check(ok, f"{name}: refused-invalid, exit 1, message names {expect!r}, sha256 unchanged"
            + ("" if ok else f" ({run})"))


def check_skipped(name, run, result, sha_before, path):
    ok = run.rc == 0 and run.report.get("result") == result and oncetest.sha256(path) == sha_before
    t.check(ok, f"{name}: {result}, exit 0, sha256 unchanged" + ("" if ok else f" ({run})"))


def check_allowed(name, run, path, before, qemu):
    rep = run.report
    ok = run.rc == 0 and rep.get("result") in ("success", "nothing-to-do")
    t.check(ok, f"{name}: processed (success or nothing-to-do), exit 0" + ("" if ok else f" ({run})"))
    if not ok:
        return
    v = vhdxtool.Vhdx.open(before)
    keep = vhdxtool.normalize(v.structure_ranges() + v.present_block_ranges())
    t.check(read_ranges(before, keep) == read_ranges(path, keep),
            f"{name}: every structure and present block byte unchanged")
    blocks = v.blocks_in_state(vhdxtool.PAYLOAD_FULLY_PRESENT)
    ok, why = same_guest_view(before, path, blocks)
    t.check(ok, f"{name}: the guest's view of the {len(blocks)} present blocks unchanged (vhdxtool)"
            + ("" if ok else f": {why}"))
    if qemu:
        ok, out = oncetest.qemu_img_check(path)
        t.check(ok, f"{name}: qemu-img check clean" + ("" if ok else f": {out}"))
        ok, out = oncetest.qemu_img_compare(before, path)
        t.check(ok, f"{name}: qemu-img compare identical" + ("" if ok else f": {out}"))


def run_case(work, bases, base, name, mutate, expect):
    path = os.path.join(work, "case.vhdx")
    before = os.path.join(work, "before.vhdx")
    oncetest.clone_sparse(bases[base], path)
    mutate(path)
    oncetest.clone_sparse(path, before)
    sha = oncetest.sha256(path)
    qemu_opens = oncetest.qemu_img_check(before)[0] if expect[0] == "allowed" and expect[1] != "no-qemu" else False

    run = oncetest.run_once(path)
    sanitizer_silent(name, run)
    kind, detail = expect
    if kind == "refused-invalid":
        check_refused(name, run, detail, sha, path)
    elif kind == "skip":
        check_skipped(name, run, detail, sha, path)
    else:
        if expect[1] != "no-qemu" and not qemu_opens:
            print(f"note   {name}: qemu-img does not accept this image; guest view compared with vhdxtool only")
        check_allowed(name, run, path, before, qemu_opens)
    os.unlink(path)
    os.unlink(before)
    return kind


def check_small_layout(path):
    v = vhdxtool.Vhdx.open(path)
    present = [v.block_file_offset(b) for b in v.blocks_in_state(vhdxtool.PAYLOAD_FULLY_PRESENT)]
    stale = v.stale_ranges()
    ok = (v.bat_offset, v.metadata_offset) == (2 * MiB, 3 * MiB) and PRESENT in present and \
        any(off <= STALE and STALE + MiB <= off + n for off, n in stale)
    if not ok:
        print(f"FAILED the base image's layout is not what the cases assume: present {present}, stale {stale}")
        sys.exit(1)


def main():
    oncetest.require_tools("qemu-img", "qemu-io")
    work = oncetest.workdir("test-hostile-")
    try:
        bases = {"small": make_small(work), "big": make_big(work)}
        check_small_layout(bases["small"])
        counts = {}
        all_cases = cases()
        only = os.environ.get("HOSTILE_ONLY")
        for base, name, mutate, expect in all_cases:
            if only and only.lower() not in name.lower():
                continue
            kind = run_case(work, bases, base, name, mutate, expect)
            counts[kind] = counts.get(kind, 0) + 1
        print(f"\n{sum(counts.values())} hostile images: " +
              ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    t.exit()


if __name__ == "__main__":
    main()
