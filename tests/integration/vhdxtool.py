# SPDX-License-Identifier: GPL-2.0-or-later
"""Read and surgically modify VHDX files, per MS-VHDX, with the standard library.

Written for tests that need to know where things are in an image (which file
ranges a block owns, where a field lives) and for building malformed images
that carry exactly one defect: every mutation below rewrites one field and, by
default, fixes up the checksum that covers it, so the field is the only thing
wrong with the file. Pass fix_checksum=False to leave the checksum stale.

Reading:

    v = vhdxtool.Vhdx.open(path)
    v.block_size, v.logical_sector_size, v.virtual_size, v.chunk_ratio
    v.headers[0..1], v.current          (Header objects, index of the current)
    v.region_tables[0..1], v.regions    (the table in use, RegionEntry objects)
    v.metadata_entries                  (MetadataEntry objects)
    v.bat                               (raw 64-bit entries, sector bitmaps included)
    v.bat_index(b), v.block_state(b), v.block_file_offset(b), v.bat_entry_offset(i)
    v.blocks_in_state(s), v.state_counts(), v.virtual_to_file(off), v.read_virtual(off, n)
    v.structure_ranges(), v.present_block_ranges(), v.stale_ranges()

Ranges are lists of (offset, length): normalize(), subtract(), intersect(),
total(); data_extents(path) and hole_extents(path) read a file's layout with
SEEK_DATA/SEEK_HOLE.

Writing (path-based; each opens, patches and closes the file):

    set_header_fields(path, index, sequence=..., log_guid=..., ...)
    corrupt_header_checksum(path, index)
    set_region_entry(path, table, entry, guid=..., offset=..., length=..., required=...)
    add_region_entry(path, table, guid, offset, length, required)
    corrupt_region_table_checksum(path, table)
    set_bat_entry(path, index, raw)           with bat_entry(state, file_offset, reserved)
    set_metadata_entry(path, entry, ...), add_metadata_entry(path, item_id, data, ...)
    set_metadata_item_data(path, item_id, data)

Offsets are absolute file offsets unless a name says otherwise. GUIDs are
uuid.UUID objects; on disk they are stored in Windows order (bytes_le).
"""

import os
import struct
import uuid

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

FILE_IDENTIFIER_OFFSET = 0
HEADER_OFFSETS = (64 * KiB, 128 * KiB)
HEADER_SIZE = 4 * KiB
REGION_TABLE_OFFSETS = (192 * KiB, 256 * KiB)
REGION_TABLE_SIZE = 64 * KiB
REGION_ENTRY_SIZE = 32
METADATA_TABLE_SIZE = 64 * KiB
METADATA_ENTRY_SIZE = 32
HEADER_AREA_SIZE = 1 * MiB
SECTOR_BITMAP_BLOCK_SIZE = 1 * MiB

BAT_REGION = uuid.UUID("2dc27766-f623-4200-9d64-115e9bfd4a08")
METADATA_REGION = uuid.UUID("8b7ca206-4790-4b9a-b8fe-575f050f886e")
FILE_PARAMETERS = uuid.UUID("caa16737-fa36-4d43-b3b6-33f0aa44e76b")
VIRTUAL_DISK_SIZE = uuid.UUID("2fa54224-cd1b-4876-b211-5dbed83bf4b8")
PAGE83_DATA = uuid.UUID("beca12ab-b2e6-4523-93ef-c309e000c746")
LOGICAL_SECTOR_SIZE = uuid.UUID("8141bf1d-a96f-4709-ba47-f233a8faab5f")
PHYSICAL_SECTOR_SIZE = uuid.UUID("cda348c7-445d-4471-9cc9-e9885251c556")
PARENT_LOCATOR = uuid.UUID("a8d35f2d-b30b-454d-abf7-d3d84834ab0c")

PAYLOAD_NOT_PRESENT = 0
PAYLOAD_UNDEFINED = 1
PAYLOAD_ZERO = 2
PAYLOAD_UNMAPPED = 3
PAYLOAD_FULLY_PRESENT = 6
PAYLOAD_PARTIALLY_PRESENT = 7
SB_NOT_PRESENT = 0
SB_PRESENT = 6

# Header fields: name -> (offset inside the header, struct format).
HEADER_FIELDS = {
    "signature": (0, "4s"),
    "checksum": (4, "<I"),
    "sequence": (8, "<Q"),
    "file_write_guid": (16, "16s"),
    "data_write_guid": (32, "16s"),
    "log_guid": (48, "16s"),
    "log_version": (64, "<H"),
    "version": (66, "<H"),
    "log_length": (68, "<I"),
    "log_offset": (72, "<Q"),
}
# Region table entry fields, relative to the entry.
REGION_ENTRY_FIELDS = {
    "guid": (0, "16s"),
    "offset": (16, "<Q"),
    "length": (24, "<I"),
    "flags": (28, "<I"),        # bit 0: Required
}
# Metadata table entry fields, relative to the entry.
METADATA_ENTRY_FIELDS = {
    "item_id": (0, "16s"),
    "offset": (16, "<I"),       # relative to the metadata region
    "length": (20, "<I"),
    "flags": (24, "<I"),        # bit 0 IsUser, bit 1 IsVirtualDisk, bit 2 IsRequired
}


class FormatError(Exception):
    """The file is not a VHDX this module can parse."""


# ---------------------------------------------------------------- CRC-32C

def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data, crc=0):
    """CRC-32C (Castagnoli), as VHDX uses it; crc continues a previous value."""
    table = _CRC32C_TABLE
    c = crc ^ 0xFFFFFFFF
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def checksum_of(block):
    """The VHDX checksum of a header or region table: CRC-32C of the block
    with its 4-byte Checksum field (at offset 4) taken as zero."""
    return crc32c(bytes(block[:4]) + b"\0\0\0\0" + bytes(block[8:]))


# ---------------------------------------------------------------- raw file access

def read_at(path, offset, length):
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        raise FormatError(f"{path}: short read of {length} bytes at 0x{offset:x}")
    return data


def write_at(path, offset, data):
    """Writes bytes in place (no truncation, no checksum fix-up)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        if os.pwrite(fd, data, offset) != len(data):
            raise OSError(f"{path}: short write at 0x{offset:x}")
    finally:
        os.close(fd)


def _pack_field(fmt, value):
    if isinstance(value, uuid.UUID):
        value = value.bytes_le
    return struct.pack(fmt, value)


def _unpack_field(buf, offset, fmt):
    (value,) = struct.unpack_from(fmt, buf, offset)
    return value


# ---------------------------------------------------------------- parsed structures

class Header:
    """One of the two 4 KiB headers."""

    def __init__(self, index, raw):
        self.index = index
        self.offset = HEADER_OFFSETS[index]
        self.raw = raw
        for name, (off, fmt) in HEADER_FIELDS.items():
            value = _unpack_field(raw, off, fmt)
            if fmt == "16s":
                value = uuid.UUID(bytes_le=value)
            setattr(self, name, value)

    @property
    def signature_ok(self):
        return self.signature == b"head"

    @property
    def checksum_ok(self):
        return self.checksum == checksum_of(self.raw)

    @property
    def valid(self):
        return self.signature_ok and self.checksum_ok

    def field_offset(self, name):
        """Absolute file offset of a header field."""
        return self.offset + HEADER_FIELDS[name][0]


class RegionEntry:
    def __init__(self, table_offset, index, raw):
        self.index = index
        self.entry_offset = table_offset + 16 + REGION_ENTRY_SIZE * index
        self.guid = uuid.UUID(bytes_le=raw[0:16])
        self.offset, self.length, self.flags = struct.unpack_from("<QII", raw, 16)
        self.required = bool(self.flags & 1)

    @property
    def name(self):
        return {BAT_REGION: "BAT", METADATA_REGION: "metadata"}.get(self.guid, "unknown")

    def field_offset(self, name):
        return self.entry_offset + REGION_ENTRY_FIELDS[name][0]


class RegionTable:
    """One of the two 64 KiB region tables."""

    def __init__(self, index, raw):
        self.index = index
        self.offset = REGION_TABLE_OFFSETS[index]
        self.raw = raw
        self.signature = raw[0:4]
        self.checksum, self.entry_count = struct.unpack_from("<II", raw, 4)
        self.entries = []
        if self.signature == b"regi" and self.entry_count <= 2047:
            self.entries = [RegionEntry(self.offset, i, raw[16 + 32 * i:48 + 32 * i])
                            for i in range(self.entry_count)]

    @property
    def valid(self):
        return self.signature == b"regi" and self.checksum == checksum_of(self.raw) and self.entry_count <= 2047


class MetadataEntry:
    def __init__(self, region_offset, index, raw):
        self.index = index
        self.entry_offset = region_offset + 32 + METADATA_ENTRY_SIZE * index
        self.item_id = uuid.UUID(bytes_le=raw[0:16])
        self.offset, self.length, self.flags = struct.unpack_from("<III", raw, 16)
        self.is_user = bool(self.flags & 1)
        self.is_virtual_disk = bool(self.flags & 2)
        self.is_required = bool(self.flags & 4)
        self.data_offset = region_offset + self.offset   # absolute

    def field_offset(self, name):
        return self.entry_offset + METADATA_ENTRY_FIELDS[name][0]


class Vhdx:
    """A parsed VHDX. Tolerant: it reads what is there and leaves judging to
    the caller, but it needs one valid header and one valid region table to
    find the rest (FormatError otherwise)."""

    @classmethod
    def open(cls, path):
        v = cls()
        v.path = path
        v.file_size = os.path.getsize(path)
        head = read_at(path, 0, 8 + 512)
        if head[:8] != b"vhdxfile":
            raise FormatError(f"{path}: no VHDX file type identifier")
        v.creator = head[8:].decode("utf-16-le", "replace").split("\0", 1)[0]
        v.headers = [Header(i, read_at(path, HEADER_OFFSETS[i], HEADER_SIZE)) for i in (0, 1)]
        valid = [h for h in v.headers if h.valid]
        if not valid:
            raise FormatError(f"{path}: no valid header")
        v.current = max(valid, key=lambda h: h.sequence).index
        v.region_tables = [RegionTable(i, read_at(path, REGION_TABLE_OFFSETS[i], REGION_TABLE_SIZE)) for i in (0, 1)]
        usable = [t for t in v.region_tables if t.valid]
        if not usable:
            raise FormatError(f"{path}: no valid region table")
        v.region_table_used = usable[0].index
        v.regions = usable[0].entries
        v._read_metadata()
        v._read_bat()
        return v

    # -- layout

    def region(self, guid):
        for r in self.regions:
            if r.guid == guid:
                return r
        raise FormatError(f"{self.path}: no region {guid}")

    @property
    def header(self):
        return self.headers[self.current]

    @property
    def bat_offset(self):
        return self.region(BAT_REGION).offset

    @property
    def metadata_offset(self):
        return self.region(METADATA_REGION).offset

    def _read_metadata(self):
        md = self.region(METADATA_REGION)
        table = read_at(self.path, md.offset, METADATA_TABLE_SIZE)
        if table[:8] != b"metadata":
            raise FormatError(f"{self.path}: no metadata table signature at 0x{md.offset:x}")
        (count,) = struct.unpack_from("<H", table, 10)
        self.metadata_entries = [MetadataEntry(md.offset, i, table[32 + 32 * i:64 + 32 * i])
                                 for i in range(min(count, 2047))]
        self.block_size, fp_flags = struct.unpack("<II", self.item_data(FILE_PARAMETERS, 8))
        self.leave_block_allocated = bool(fp_flags & 1)
        self.has_parent = bool(fp_flags & 2)
        (self.virtual_size,) = struct.unpack("<Q", self.item_data(VIRTUAL_DISK_SIZE, 8))
        (self.logical_sector_size,) = struct.unpack("<I", self.item_data(LOGICAL_SECTOR_SIZE, 4))
        (self.physical_sector_size,) = struct.unpack("<I", self.item_data(PHYSICAL_SECTOR_SIZE, 4))

    def item(self, item_id):
        for e in self.metadata_entries:
            if e.item_id == item_id and not e.is_user:
                return e
        raise FormatError(f"{self.path}: no metadata item {item_id}")

    def item_data(self, item_id, length=None):
        e = self.item(item_id)
        return read_at(self.path, e.data_offset, e.length if length is None else length)

    def _read_bat(self):
        if not self.block_size:
            raise FormatError(f"{self.path}: BlockSize is 0")
        self.chunk_ratio = (1 << 23) * self.logical_sector_size // self.block_size
        self.data_blocks = -(-self.virtual_size // self.block_size)
        self.bitmap_blocks = -(-self.data_blocks // self.chunk_ratio)
        if self.has_parent:
            self.bat_entries = self.bitmap_blocks * (self.chunk_ratio + 1)
        else:
            self.bat_entries = self.data_blocks + (self.data_blocks - 1) // self.chunk_ratio
        raw = read_at(self.path, self.bat_offset, 8 * self.bat_entries)
        self.bat = list(struct.unpack(f"<{self.bat_entries}Q", raw))

    # -- BAT

    def bat_index(self, block):
        """BAT index of payload block `block` (sector bitmap entries interleave)."""
        return block + block // self.chunk_ratio

    def is_bitmap_index(self, i):
        return (i + 1) % (self.chunk_ratio + 1) == 0

    def bat_entry_offset(self, i):
        """File offset of BAT entry i (an index into self.bat)."""
        return self.bat_offset + 8 * i

    def block_state(self, block):
        return self.bat[self.bat_index(block)] & 7

    def block_file_offset(self, block):
        return (self.bat[self.bat_index(block)] >> 20) * MiB

    def blocks_in_state(self, state):
        return [b for b in range(self.data_blocks) if self.block_state(b) == state]

    def state_counts(self):
        """{payload state: count} over payload blocks (bitmap entries excluded)."""
        counts = {}
        for b in range(self.data_blocks):
            s = self.block_state(b)
            counts[s] = counts.get(s, 0) + 1
        return counts

    def virtual_to_file(self, virtual_offset):
        """File offset that stores a virtual offset, or None when its block is
        not FULLY_PRESENT."""
        block, within = divmod(virtual_offset, self.block_size)
        if self.block_state(block) != PAYLOAD_FULLY_PRESENT:
            return None
        return self.block_file_offset(block) + within

    def read_virtual(self, offset, length):
        """Guest-visible bytes of a disk without parent: FULLY_PRESENT blocks
        from the file (zeros past its end), every other state reads as zeros."""
        if self.has_parent:
            raise FormatError(f"{self.path}: differencing disk, needs its parent")
        out = bytearray()
        with open(self.path, "rb") as f:
            while length > 0:
                block, within = divmod(offset, self.block_size)
                n = min(length, self.block_size - within)
                piece = b""
                if self.block_state(block) == PAYLOAD_FULLY_PRESENT:
                    f.seek(self.block_file_offset(block) + within)
                    piece = f.read(n)
                out += piece + bytes(n - len(piece))
                offset += n
                length -= n
        return bytes(out)

    # -- file ranges by role, as (offset, length) lists, clipped to the file

    def _clip(self, ranges):
        out = []
        for off, length in ranges:
            if off < self.file_size:
                out.append((off, min(length, self.file_size - off)))
        return normalize(out)

    def structure_ranges(self):
        """Header area, log, every region, present sector-bitmap blocks."""
        r = [(0, HEADER_AREA_SIZE)]
        h = self.header
        if h.log_length:
            r.append((h.log_offset, h.log_length))
        r += [(e.offset, e.length) for e in self.regions]
        for i, e in enumerate(self.bat):
            if self.is_bitmap_index(i) and e & 7 == SB_PRESENT:
                r.append(((e >> 20) * MiB, SECTOR_BITMAP_BLOCK_SIZE))
        return self._clip(r)

    def present_block_ranges(self):
        """File ranges of FULLY_PRESENT payload blocks."""
        return self._clip([(self.block_file_offset(b), self.block_size)
                           for b in self.blocks_in_state(PAYLOAD_FULLY_PRESENT)])

    def live_ranges(self):
        """Everything a live structure or block refers to (partially present
        blocks included)."""
        r = list(self.structure_ranges()) + list(self.present_block_ranges())
        r += [(self.block_file_offset(b), self.block_size)
              for b in self.blocks_in_state(PAYLOAD_PARTIALLY_PRESENT)]
        return self._clip(r)

    def stale_ranges(self):
        """File space past the first 1 MiB that nothing live refers to."""
        if self.file_size <= HEADER_AREA_SIZE:
            return []
        return subtract([(HEADER_AREA_SIZE, self.file_size - HEADER_AREA_SIZE)], self.live_ranges())


# ---------------------------------------------------------------- range arithmetic

def normalize(ranges):
    """Sorted, merged (touching ranges joined), empty ones dropped."""
    out = []
    for off, length in sorted(r for r in ranges if r[1] > 0):
        if out and off <= out[-1][0] + out[-1][1]:
            last_off, last_len = out[-1]
            out[-1] = (last_off, max(last_len, off + length - last_off))
        else:
            out.append((off, length))
    return out


def subtract(ranges, minus):
    """ranges minus minus, both lists of (offset, length); normalized."""
    out = []
    minus = normalize(minus)
    for off, length in normalize(ranges):
        pos, end = off, off + length
        for m_off, m_len in minus:
            m_end = m_off + m_len
            if m_end <= pos or m_off >= end:
                continue
            if m_off > pos:
                out.append((pos, m_off - pos))
            pos = max(pos, m_end)
            if pos >= end:
                break
        if pos < end:
            out.append((pos, end - pos))
    return out


def intersect(a, b):
    out = []
    b = normalize(b)
    for off, length in normalize(a):
        end = off + length
        for b_off, b_len in b:
            lo, hi = max(off, b_off), min(end, b_off + b_len)
            if lo < hi:
                out.append((lo, hi - lo))
    return normalize(out)


def total(ranges):
    return sum(length for _, length in ranges)


def data_extents(path_or_fd, start=0, end=None):
    """The data (non-hole) extents of a file, per SEEK_DATA/SEEK_HOLE, as a
    normalized list of (offset, length) within [start, end)."""
    fd = path_or_fd if isinstance(path_or_fd, int) else os.open(path_or_fd, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        end = size if end is None else min(end, size)
        out, pos = [], start
        while pos < end:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:         # ENXIO: no data after pos
                break
            if data >= end:
                break
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
            out.append((data, hole - data))
            pos = hole
        return out
    finally:
        if not isinstance(path_or_fd, int):
            os.close(fd)


def hole_extents(path, start=0, end=None):
    size = os.path.getsize(path)
    end = size if end is None else min(end, size)
    return subtract([(start, end - start)], data_extents(path, start, end))


# ---------------------------------------------------------------- mutations

def bat_entry(state, file_offset=0, reserved=0):
    """Encodes a BAT entry: state in bits 0-2, reserved bits 3-19, the file
    offset (a multiple of 1 MiB) in bits 20-63."""
    if file_offset % MiB:
        raise ValueError("file_offset must be a multiple of 1 MiB")
    return (state & 7) | ((reserved & 0x1FFFF) << 3) | ((file_offset // MiB) << 20)


def fix_header_checksum(path, index):
    raw = bytearray(read_at(path, HEADER_OFFSETS[index], HEADER_SIZE))
    struct.pack_into("<I", raw, 4, checksum_of(raw))
    write_at(path, HEADER_OFFSETS[index] + 4, bytes(raw[4:8]))


def fix_region_table_checksum(path, index):
    raw = bytearray(read_at(path, REGION_TABLE_OFFSETS[index], REGION_TABLE_SIZE))
    struct.pack_into("<I", raw, 4, checksum_of(raw))
    write_at(path, REGION_TABLE_OFFSETS[index] + 4, bytes(raw[4:8]))


def set_header_fields(path, index, fix_checksum=True, **fields):
    """Sets fields of header `index` (0 or 1) by HEADER_FIELDS name; GUID
    fields take uuid.UUID. Returns the absolute offsets written, by name."""
    written = {}
    for name, value in fields.items():
        off, fmt = HEADER_FIELDS[name]
        write_at(path, HEADER_OFFSETS[index] + off, _pack_field(fmt, value))
        written[name] = HEADER_OFFSETS[index] + off
    if fix_checksum and "checksum" not in fields:
        fix_header_checksum(path, index)
    return written


def corrupt_header_checksum(path, index):
    """Flips bits of header `index`'s Checksum field; returns its offset."""
    off = HEADER_OFFSETS[index] + 4
    (stored,) = struct.unpack("<I", read_at(path, off, 4))
    write_at(path, off, struct.pack("<I", stored ^ 0xA5A5A5A5))
    return off


def corrupt_region_table_checksum(path, index):
    off = REGION_TABLE_OFFSETS[index] + 4
    (stored,) = struct.unpack("<I", read_at(path, off, 4))
    write_at(path, off, struct.pack("<I", stored ^ 0xA5A5A5A5))
    return off


def set_region_entry(path, table, entry, fix_checksum=True, guid=None, offset=None, length=None, required=None):
    """Rewrites fields of entry `entry` of region table `table` (0 or 1).
    Returns the entry's absolute offset."""
    base = REGION_TABLE_OFFSETS[table] + 16 + REGION_ENTRY_SIZE * entry
    if guid is not None:
        write_at(path, base, guid.bytes_le)
    if offset is not None:
        write_at(path, base + 16, struct.pack("<Q", offset))
    if length is not None:
        write_at(path, base + 24, struct.pack("<I", length))
    if required is not None:
        (flags,) = struct.unpack("<I", read_at(path, base + 28, 4))
        write_at(path, base + 28, struct.pack("<I", (flags & ~1) | int(bool(required))))
    if fix_checksum:
        fix_region_table_checksum(path, table)
    return base


def add_region_entry(path, table, guid, offset, length, required, fix_checksum=True):
    """Appends an entry to region table `table`; returns its absolute offset."""
    base = REGION_TABLE_OFFSETS[table]
    (count,) = struct.unpack("<I", read_at(path, base + 8, 4))
    entry = base + 16 + REGION_ENTRY_SIZE * count
    write_at(path, entry, guid.bytes_le + struct.pack("<QII", offset, length, int(bool(required))))
    write_at(path, base + 8, struct.pack("<I", count + 1))
    if fix_checksum:
        fix_region_table_checksum(path, table)
    return entry


def set_bat_entry(path, index, raw):
    """Writes raw 64-bit BAT entry `index` (the BAT has no checksum of its
    own); returns the entry's absolute offset."""
    off = Vhdx.open(path).bat_entry_offset(index)
    write_at(path, off, struct.pack("<Q", raw))
    return off


def set_metadata_entry(path, entry, item_id=None, offset=None, length=None, flags=None):
    """Rewrites fields of metadata table entry `entry` (the metadata table has
    no checksum); returns the entry's absolute offset."""
    v = Vhdx.open(path)
    base = v.metadata_offset + 32 + METADATA_ENTRY_SIZE * entry
    if item_id is not None:
        write_at(path, base, item_id.bytes_le)
    for value, rel in ((offset, 16), (length, 20), (flags, 24)):
        if value is not None:
            write_at(path, base + rel, struct.pack("<I", value))
    return base


def metadata_flags(is_user=False, is_virtual_disk=False, is_required=False):
    return int(is_user) | int(is_virtual_disk) << 1 | int(is_required) << 2


def add_metadata_entry(path, item_id, data, is_user=False, is_virtual_disk=False, is_required=False):
    """Appends a metadata item with its data placed after every existing
    item's data; returns the new entry's absolute offset."""
    v = Vhdx.open(path)
    md = v.region(METADATA_REGION)
    data_rel = max([METADATA_TABLE_SIZE] + [e.offset + e.length for e in v.metadata_entries if e.length])
    data_rel = -(-data_rel // 8) * 8
    if data_rel + len(data) > md.length:
        raise FormatError(f"{path}: no room in the metadata region for {len(data)} more bytes")
    entry = md.offset + 32 + METADATA_ENTRY_SIZE * len(v.metadata_entries)
    write_at(path, md.offset + data_rel, bytes(data))
    write_at(path, entry, item_id.bytes_le + struct.pack("<IIII", data_rel, len(data),
                                                          metadata_flags(is_user, is_virtual_disk, is_required), 0))
    write_at(path, md.offset + 10, struct.pack("<H", len(v.metadata_entries) + 1))
    return entry


def set_metadata_item_data(path, item_id, data):
    """Overwrites the start of a metadata item's data; returns its offset."""
    off = Vhdx.open(path).item(item_id).data_offset
    write_at(path, off, bytes(data))
    return off
