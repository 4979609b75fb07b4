/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crc32c.h"
#include "macro.h"
#include "unaligned.h"
#include "vhdx.h"

#define HEADER1_OFFSET (64 * KiB)
#define HEADER2_OFFSET (128 * KiB)
#define REGION_TABLE1_OFFSET (192 * KiB)
#define REGION_TABLE2_OFFSET (256 * KiB)
#define MAX_VIRTUAL_SIZE (64 * 1024 * GiB)
#define SECTOR_BITMAP_BLOCK_SIZE MiB
/* The BAT is read in pieces of this many entries (256 KiB). */
#define BAT_CHUNK_ENTRIES 32768

#define GUID_BAT_REGION         "2dc27766-f623-4200-9d64-115e9bfd4a08"
#define GUID_METADATA_REGION    "8b7ca206-4790-4b9a-b8fe-575f050f886e"
#define GUID_FILE_PARAMETERS    "caa16737-fa36-4d43-b3b6-33f0aa44e76b"
#define GUID_VIRTUAL_DISK_SIZE  "2fa54224-cd1b-4876-b211-5dbed83bf4b8"
#define GUID_PAGE83_DATA        "beca12ab-b2e6-4523-93ef-c309e000c746"
#define GUID_LOGICAL_SECTOR     "8141bf1d-a96f-4709-ba47-f233a8faab5f"
#define GUID_PHYSICAL_SECTOR    "cda348c7-445d-4471-9cc9-e9885251c556"
#define GUID_PARENT_LOCATOR     "a8d35f2d-b30b-454d-abf7-d3d84834ab0c"

static bool guid_is(const Guid *g, const char *s) {
        Guid k;
        return guid_from_string(s, &k) == 0 && guid_equal(g, &k);
}

static _printf_(3, 4) int fail(char **ret_error, int error, const char *format, ...) {
        va_list ap;

        if (ret_error) {
                free(*ret_error);
                *ret_error = NULL;
                va_start(ap, format);
                if (vasprintf(ret_error, format, ap) < 0)
                        *ret_error = NULL;
                va_end(ap);
        }
        return error;
}

static int source_check_range(const VhdxSource *src, uint64_t len, uint64_t offset, const char *what,
                              char **ret_error) {
        if (offset > src->size || len > src->size - offset)
                return fail(ret_error, -EBADMSG, "%s at offset 0x%" PRIx64 ": past the end of the file (%" PRIu64 " bytes)",
                            what, offset, src->size);
        return 0;
}

static int source_read(const VhdxSource *src, void *buf, size_t len, uint64_t offset,
                       const char *what, char **ret_error) {
        int r;

        r = source_check_range(src, len, offset, what, ret_error);
        if (r < 0)
                return r;
        r = src->pread(src->userdata, buf, len, offset);
        if (r < 0)
                return fail(ret_error, r, "%s at offset 0x%" PRIx64 ": read failed: %s", what, offset, strerror(-r));
        return 0;
}

bool vhdx_has_signature(const void *first8) {
        return memcmp(first8, "vhdxfile", 8) == 0;
}

static void utf16le_to_ascii(const uint8_t *in, size_t n_units, char *out, size_t out_size) {
        size_t o = 0;

        for (size_t i = 0; i < n_units && o + 1 < out_size; i++) {
                uint16_t c = get_le16(in + 2 * i);
                if (c == 0)
                        break;
                out[o++] = c >= 0x20 && c < 0x7f ? (char) c : '?';
        }
        out[o] = 0;
}

static int read_file_identifier(Vhdx *v, const VhdxSource *src, char **ret_error) {
        uint8_t buf[8 + 512];
        int r;

        r = source_read(src, buf, sizeof buf, 0, "file type identifier", ret_error);
        if (r < 0)
                return r;
        if (!vhdx_has_signature(buf))
                return fail(ret_error, -EBADMSG, "file type identifier at offset 0x0: signature is not \"vhdxfile\"");
        utf16le_to_ascii(buf + 8, 256, v->creator, sizeof v->creator);
        return 0;
}

static void header_invalid(VhdxHeader *h, const char *format, ...) _printf_(2, 3);
static void header_invalid(VhdxHeader *h, const char *format, ...) {
        va_list ap;

        h->valid = false;
        va_start(ap, format);
        vsnprintf(h->problem, sizeof h->problem, format, ap);
        va_end(ap);
}

static void parse_header(VhdxHeader *h, uint64_t offset) {
        uint32_t stored, computed;
        uint8_t tmp[VHDX_HEADER_SIZE];

        if (memcmp(h->raw, "head", 4) != 0) {
                header_invalid(h, "Signature at offset 0x%" PRIx64 " is not \"head\"", offset);
                return;
        }
        stored = get_le32(h->raw + 4);
        memcpy(tmp, h->raw, sizeof tmp);
        memset(tmp + 4, 0, 4);
        computed = crc32c(tmp, sizeof tmp);
        if (stored != computed) {
                header_invalid(h, "Checksum at offset 0x%" PRIx64 " is 0x%08" PRIx32 ", computed 0x%08" PRIx32,
                               offset + 4, stored, computed);
                return;
        }
        h->sequence = get_le64(h->raw + 8);
        memcpy(h->file_write_guid.bytes, h->raw + 16, 16);
        memcpy(h->data_write_guid.bytes, h->raw + 32, 16);
        memcpy(h->log_guid.bytes, h->raw + 48, 16);
        h->log_version = get_le16(h->raw + 64);
        h->version = get_le16(h->raw + 66);
        h->log_length = get_le32(h->raw + 68);
        h->log_offset = get_le64(h->raw + 72);
        h->valid = true;
}

static int check_current_header(const Vhdx *v, char **ret_error) {
        const VhdxHeader *h = &v->headers[v->current];
        uint64_t base = v->current == 0 ? HEADER1_OFFSET : HEADER2_OFFSET;

        if (h->version != 1)
                return fail(ret_error, -EBADMSG, "header %u Version at offset 0x%" PRIx64 " is %u, expected 1",
                            v->current + 1, base + 66, h->version);
        if (h->log_version != 0)
                return fail(ret_error, -EBADMSG, "header %u LogVersion at offset 0x%" PRIx64 " is %u, expected 0",
                            v->current + 1, base + 64, h->log_version);
        if (h->log_length % MiB != 0)
                return fail(ret_error, -EBADMSG, "header %u LogLength at offset 0x%" PRIx64 " is 0x%" PRIx32 ", not a multiple of 1 MiB",
                            v->current + 1, base + 68, h->log_length);
        if (h->log_length == 0 && !guid_is_null(&h->log_guid))
                return fail(ret_error, -EBADMSG, "header %u LogGuid at offset 0x%" PRIx64 " is set but LogLength is 0: a log GUID with no log",
                            v->current + 1, base + 48);
        if (h->log_length > 0) {
                if (h->log_offset % MiB != 0 || h->log_offset < MiB)
                        return fail(ret_error, -EBADMSG, "header %u LogOffset at offset 0x%" PRIx64 " is 0x%" PRIx64 ", not a multiple of 1 MiB past the first 1 MiB",
                                    v->current + 1, base + 72, h->log_offset);
                if (h->log_offset > v->file_size || h->log_length > v->file_size - h->log_offset)
                        return fail(ret_error, -EBADMSG, "header %u LogOffset/LogLength at offset 0x%" PRIx64 ": log 0x%" PRIx64 "+0x%" PRIx32 " extends past the end of the file",
                                    v->current + 1, base + 72, h->log_offset, h->log_length);
        }
        return 0;
}

static int read_headers(Vhdx *v, const VhdxSource *src, char **ret_error) {
        const uint64_t offsets[2] = { HEADER1_OFFSET, HEADER2_OFFSET };
        VhdxHeader *h = v->headers;
        int r;

        for (unsigned i = 0; i < 2; i++) {
                r = source_read(src, h[i].raw, VHDX_HEADER_SIZE, offsets[i], i == 0 ? "header 1" : "header 2", ret_error);
                if (r < 0)
                        return r;
                parse_header(&h[i], offsets[i]);
        }

        if (!h[0].valid && !h[1].valid)
                return fail(ret_error, -EBADMSG, "no valid header: header 1: %s; header 2: %s", h[0].problem, h[1].problem);
        /* The spec would fall back to the other header, but a damaged header
         * is exactly what this tool must not guess about: refuse, and let the
         * disk's owner (Hyper-V, qemu) repair it on its next open. */
        for (unsigned i = 0; i < 2; i++)
                if (!h[i].valid)
                        return fail(ret_error, -EBADMSG, "header %u: %s", i + 1, h[i].problem);

        v->headers_identical = memcmp(h[0].raw, h[1].raw, VHDX_HEADER_SIZE) == 0;
        /* Disk2VHD writes two byte-identical headers with equal sequence
         * numbers; the spec's ordering cannot choose, but identical content
         * makes the choice moot. */
        if (h[0].sequence == h[1].sequence && !v->headers_identical)
                return fail(ret_error, -EBADMSG,
                            "headers at offsets 0x10000 and 0x20000 have the same SequenceNumber %" PRIu64 " but differ",
                            h[0].sequence);
        v->current = h[1].sequence > h[0].sequence ? 1 : 0;

        r = check_current_header(v, ret_error);
        if (r < 0)
                return r;
        v->log_dirty = !guid_is_null(&h[v->current].log_guid);
        return 0;
}

static int parse_region_table(const uint8_t *t, uint64_t offset, char *problem, size_t problem_size) {
        uint32_t stored, computed, count;
        _cleanup_free_ uint8_t *tmp = NULL;

        if (memcmp(t, "regi", 4) != 0) {
                snprintf(problem, problem_size, "Signature at offset 0x%" PRIx64 " is not \"regi\"", offset);
                return -EBADMSG;
        }
        tmp = malloc(VHDX_REGION_TABLE_SIZE);
        if (!tmp)
                return -ENOMEM;
        memcpy(tmp, t, VHDX_REGION_TABLE_SIZE);
        memset(tmp + 4, 0, 4);
        stored = get_le32(t + 4);
        computed = crc32c(tmp, VHDX_REGION_TABLE_SIZE);
        if (stored != computed) {
                snprintf(problem, problem_size, "Checksum at offset 0x%" PRIx64 " is 0x%08" PRIx32 ", computed 0x%08" PRIx32,
                         offset + 4, stored, computed);
                return -EBADMSG;
        }
        count = get_le32(t + 8);
        if (count > VHDX_MAX_TABLE_ENTRIES) {
                snprintf(problem, problem_size, "EntryCount at offset 0x%" PRIx64 " is %" PRIu32 ", more than %d",
                         offset + 8, count, VHDX_MAX_TABLE_ENTRIES);
                return -EBADMSG;
        }
        return 0;
}

static int check_region_entry(Vhdx *v, const VhdxRegion *e, uint64_t entry_offset, char **ret_error) {
        char g[GUID_STRING_MAX];

        guid_to_string(&e->guid, g);
        if (e->offset % MiB != 0 || e->offset < MiB)
                return fail(ret_error, -EBADMSG, "region %s FileOffset at offset 0x%" PRIx64 " is 0x%" PRIx64 ", not a multiple of 1 MiB past the first 1 MiB",
                            e->name, entry_offset + 16, e->offset);
        if (e->length == 0 || e->length % MiB != 0)
                return fail(ret_error, -EBADMSG, "region %s Length at offset 0x%" PRIx64 " is 0x%" PRIx32 ", not a non-zero multiple of 1 MiB",
                            e->name, entry_offset + 24, e->length);
        if (e->offset > v->file_size || e->length > v->file_size - e->offset)
                return fail(ret_error, -EBADMSG, "region %s at offset 0x%" PRIx64 ": 0x%" PRIx64 "+0x%" PRIx32 " extends past the end of the file",
                            e->name, entry_offset + 16, e->offset, e->length);
        if (strcmp(e->name, "unknown") == 0 && e->required)
                return fail(ret_error, -EOPNOTSUPP, "region table entry at offset 0x%" PRIx64 ": unknown region %s is marked Required",
                            entry_offset, g);
        return 0;
}

static int read_region_entries(Vhdx *v, const uint8_t *t, uint64_t table_offset, char **ret_error) {
        uint32_t count = get_le32(t + 8);
        bool have_bat = false, have_metadata = false;
        int r;

        v->regions = calloc(count ? count : 1, sizeof *v->regions);
        if (!v->regions)
                return -ENOMEM;

        for (uint32_t i = 0; i < count; i++) {
                const uint8_t *p = t + 16 + 32 * i;
                uint64_t entry_offset = table_offset + 16 + 32 * i;
                VhdxRegion *e = &v->regions[i];
                uint32_t bits = get_le32(p + 28);

                memcpy(e->guid.bytes, p, 16);
                e->offset = get_le64(p + 16);
                e->length = get_le32(p + 24);
                e->required = bits & 1;
                e->name = guid_is(&e->guid, GUID_BAT_REGION) ? "BAT" :
                          guid_is(&e->guid, GUID_METADATA_REGION) ? "metadata" : "unknown";
                for (uint32_t j = 0; j < i; j++)
                        if (guid_equal(&v->regions[j].guid, &e->guid))
                                return fail(ret_error, -EBADMSG, "region table entry at offset 0x%" PRIx64 ": region %s appears twice",
                                            entry_offset, e->name);
                r = check_region_entry(v, e, entry_offset, ret_error);
                if (r < 0)
                        return r;
                if (strcmp(e->name, "BAT") == 0) {
                        have_bat = true;
                        v->bat_offset = e->offset;
                        v->bat_length = e->length;
                } else if (strcmp(e->name, "metadata") == 0) {
                        have_metadata = true;
                        v->metadata_offset = e->offset;
                        v->metadata_length = e->length;
                }
                v->n_regions++;
        }
        if (!have_bat)
                return fail(ret_error, -EBADMSG, "region table at offset 0x%" PRIx64 " has no BAT region", table_offset);
        if (!have_metadata)
                return fail(ret_error, -EBADMSG, "region table at offset 0x%" PRIx64 " has no metadata region", table_offset);
        return 0;
}

static int read_region_tables(Vhdx *v, const VhdxSource *src, char **ret_error) {
        const uint64_t offsets[2] = { REGION_TABLE1_OFFSET, REGION_TABLE2_OFFSET };
        _cleanup_free_ uint8_t *t = malloc(2 * VHDX_REGION_TABLE_SIZE);
        int r;

        if (!t)
                return -ENOMEM;
        for (unsigned i = 0; i < 2; i++) {
                uint8_t *ti = t + i * VHDX_REGION_TABLE_SIZE;
                r = source_read(src, ti, VHDX_REGION_TABLE_SIZE, offsets[i],
                                i == 0 ? "region table 1" : "region table 2", ret_error);
                if (r < 0)
                        return r;
                r = parse_region_table(ti, offsets[i], v->region_table_problem[i], sizeof v->region_table_problem[i]);
                if (r == -ENOMEM)
                        return r;
                v->region_table_valid[i] = r >= 0;
        }
        if (!v->region_table_valid[0] && !v->region_table_valid[1])
                return fail(ret_error, -EBADMSG, "no valid region table: table 1: %s; table 2: %s",
                            v->region_table_problem[0], v->region_table_problem[1]);

        /* The second copy exists for when the first is damaged. */
        v->region_table_used = v->region_table_valid[0] ? 0 : 1;
        return read_region_entries(v, t + v->region_table_used * VHDX_REGION_TABLE_SIZE,
                                   offsets[v->region_table_used], ret_error);
}

static const char *metadata_item_name(const VhdxMetadataItem *m) {
        static const struct {
                const char *guid, *name;
        } known[] = {
                { GUID_FILE_PARAMETERS, "File Parameters" },
                { GUID_VIRTUAL_DISK_SIZE, "Virtual Disk Size" },
                { GUID_PAGE83_DATA, "Page 83 Data" },
                { GUID_LOGICAL_SECTOR, "Logical Sector Size" },
                { GUID_PHYSICAL_SECTOR, "Physical Sector Size" },
                { GUID_PARENT_LOCATOR, "Parent Locator" },
        };

        if (m->is_user)
                return "user";
        for (size_t i = 0; i < ELEMENTSOF(known); i++)
                if (guid_is(&m->id, known[i].guid))
                        return known[i].name;
        return "unknown";
}

static int check_metadata_entry(const Vhdx *v, const VhdxMetadataItem *m, uint64_t entry_offset, char **ret_error) {
        char g[GUID_STRING_MAX];

        guid_to_string(&m->id, g);
        if (m->length == 0 && m->offset != 0)
                return fail(ret_error, -EBADMSG, "metadata item %s at offset 0x%" PRIx64 ": Length is 0 but Offset is 0x%" PRIx32,
                            m->name, entry_offset, m->offset);
        if (m->length > MiB)
                return fail(ret_error, -EBADMSG, "metadata item %s Length at offset 0x%" PRIx64 " is 0x%" PRIx32 ", more than 1 MiB",
                            m->name, entry_offset + 20, m->length);
        if (m->length > 0 && (m->offset < VHDX_METADATA_TABLE_SIZE ||
                              (uint64_t) m->offset + m->length > v->metadata_length))
                return fail(ret_error, -EBADMSG, "metadata item %s Offset at offset 0x%" PRIx64 " is 0x%" PRIx32 " (length 0x%" PRIx32 "): outside the metadata region's items area",
                            m->name, entry_offset + 16, m->offset, m->length);
        /* MS-VHDX: a parser that does not recognize an item marked
         * IsRequired must fail to open the file; no user item is known here. */
        if ((m->is_user || strcmp(m->name, "unknown") == 0) && m->is_required)
                return fail(ret_error, -EOPNOTSUPP, "metadata table entry at offset 0x%" PRIx64 ": %s metadata item %s is marked IsRequired",
                            entry_offset, m->is_user ? "user" : "unknown", g);
        return 0;
}

static int check_metadata_overlaps(const Vhdx *v, char **ret_error) {
        for (size_t i = 0; i < v->n_items; i++) {
                const VhdxMetadataItem *a = &v->items[i];
                for (size_t j = 0; j < i; j++) {
                        const VhdxMetadataItem *b = &v->items[j];
                        if (guid_equal(&a->id, &b->id) && a->is_user == b->is_user)
                                return fail(ret_error, -EBADMSG, "metadata item %s appears twice in the table at offset 0x%" PRIx64,
                                            a->name, v->metadata_offset);
                        if (a->length > 0 && b->length > 0 &&
                            a->offset < (uint64_t) b->offset + b->length &&
                            b->offset < (uint64_t) a->offset + a->length)
                                return fail(ret_error, -EBADMSG, "metadata items %s and %s overlap in the metadata region at offset 0x%" PRIx64,
                                            a->name, b->name, v->metadata_offset);
                }
        }
        return 0;
}

static const VhdxMetadataItem *find_item(const Vhdx *v, const char *guid) {
        for (size_t i = 0; i < v->n_items; i++)
                if (!v->items[i].is_user && guid_is(&v->items[i].id, guid))
                        return &v->items[i];
        return NULL;
}

static int read_item(const Vhdx *v, const VhdxSource *src, const char *guid, const char *name,
                     void *buf, uint32_t expected_length, bool required, char **ret_error) {
        const VhdxMetadataItem *m = find_item(v, guid);

        if (!m) {
                if (required)
                        return fail(ret_error, -EBADMSG, "metadata table at offset 0x%" PRIx64 ": required item %s is missing",
                                    v->metadata_offset, name);
                return 0;
        }
        if (m->length != expected_length)
                return fail(ret_error, -EBADMSG, "metadata item %s at offset 0x%" PRIx64 ": Length is %" PRIu32 ", expected %" PRIu32,
                            name, v->metadata_offset + m->offset, m->length, expected_length);
        return source_read(src, buf, expected_length, v->metadata_offset + m->offset, name, ret_error) ?: 1;
}

static int parse_parent_locator(Vhdx *v, const VhdxSource *src, char **ret_error) {
        const VhdxMetadataItem *m = find_item(v, GUID_PARENT_LOCATOR);
        _cleanup_free_ uint8_t *buf = NULL;
        _cleanup_free_ char *text = NULL;
        size_t text_len = 0;
        uint16_t count;
        uint64_t base;
        FILE *f;
        int r;

        if (!m)
                return v->has_parent ?
                        fail(ret_error, -EBADMSG, "metadata table at offset 0x%" PRIx64 ": HasParent is set but the Parent Locator item is missing",
                             v->metadata_offset) : 0;
        base = v->metadata_offset + m->offset;
        if (m->length < 20)
                return fail(ret_error, -EBADMSG, "metadata item Parent Locator at offset 0x%" PRIx64 ": Length %" PRIu32 " is shorter than its header",
                            base, m->length);
        buf = malloc(m->length);
        if (!buf)
                return -ENOMEM;
        r = source_read(src, buf, m->length, base, "Parent Locator", ret_error);
        if (r < 0)
                return r;
        count = get_le16(buf + 18);
        if (20 + (uint64_t) count * 12 > m->length)
                return fail(ret_error, -EBADMSG, "Parent Locator KeyValueCount at offset 0x%" PRIx64 " is %u: entries past the item",
                            base + 18, count);

        f = open_memstream(&text, &text_len);
        if (!f)
                return -ENOMEM;
        for (uint16_t i = 0; i < count; i++) {
                const uint8_t *e = buf + 20 + 12 * i;
                uint32_t ko = get_le32(e), vo = get_le32(e + 4);
                uint16_t kl = get_le16(e + 8), vl = get_le16(e + 10);
                char key[128], value[512];

                if ((uint64_t) ko + kl > m->length || (uint64_t) vo + vl > m->length || kl % 2 || vl % 2) {
                        fclose(f);
                        return fail(ret_error, -EBADMSG, "Parent Locator entry %u at offset 0x%" PRIx64 ": key or value outside the item",
                                    i, base + 20 + 12 * (uint64_t) i);
                }
                utf16le_to_ascii(buf + ko, kl / 2, key, sizeof key);
                utf16le_to_ascii(buf + vo, vl / 2, value, sizeof value);
                fprintf(f, "%s%s=%s", i ? "; " : "", key, value);
        }
        fclose(f);
        v->parent_locator = TAKE_PTR(text);
        return 0;
}

static int read_metadata_items(Vhdx *v, const VhdxSource *src, char **ret_error) {
        uint8_t fp[8], vs[8], ls[4], ps[4];
        uint32_t bits;
        int r;

        if ((r = read_item(v, src, GUID_FILE_PARAMETERS, "File Parameters", fp, sizeof fp, true, ret_error)) < 0 ||
            (r = read_item(v, src, GUID_VIRTUAL_DISK_SIZE, "Virtual Disk Size", vs, sizeof vs, true, ret_error)) < 0 ||
            (r = read_item(v, src, GUID_LOGICAL_SECTOR, "Logical Sector Size", ls, sizeof ls, true, ret_error)) < 0 ||
            (r = read_item(v, src, GUID_PHYSICAL_SECTOR, "Physical Sector Size", ps, sizeof ps, true, ret_error)) < 0 ||
            (r = read_item(v, src, GUID_PAGE83_DATA, "Page 83 Data", v->virtual_disk_id.bytes, 16, true, ret_error)) < 0)
                return r;

        v->block_size = get_le32(fp);
        bits = get_le32(fp + 4);
        v->leave_block_allocated = bits & 1;
        v->has_parent = bits & 2;
        v->virtual_size = get_le64(vs);
        v->logical_sector_size = get_le32(ls);
        v->physical_sector_size = get_le32(ps);

#define ITEM_AT(g) (v->metadata_offset + find_item(v, g)->offset)
        if (v->block_size < MiB || v->block_size > 256 * MiB || (v->block_size & (v->block_size - 1)))
                return fail(ret_error, -EBADMSG, "File Parameters BlockSize at offset 0x%" PRIx64 " is %" PRIu32 ": not a power of two from 1 MiB to 256 MiB",
                            ITEM_AT(GUID_FILE_PARAMETERS), v->block_size);
        if (bits & ~UINT32_C(3))
                return fail(ret_error, -EBADMSG, "File Parameters flags at offset 0x%" PRIx64 " are 0x%" PRIx32 ": reserved bits set",
                            ITEM_AT(GUID_FILE_PARAMETERS) + 4, bits);
        if (v->logical_sector_size != 512 && v->logical_sector_size != 4096)
                return fail(ret_error, -EBADMSG, "Logical Sector Size at offset 0x%" PRIx64 " is %" PRIu32 ", not 512 or 4096",
                            ITEM_AT(GUID_LOGICAL_SECTOR), v->logical_sector_size);
        if (v->physical_sector_size != 512 && v->physical_sector_size != 4096)
                return fail(ret_error, -EBADMSG, "Physical Sector Size at offset 0x%" PRIx64 " is %" PRIu32 ", not 512 or 4096",
                            ITEM_AT(GUID_PHYSICAL_SECTOR), v->physical_sector_size);
        if (v->virtual_size == 0 || v->virtual_size > MAX_VIRTUAL_SIZE || v->virtual_size % v->logical_sector_size)
                return fail(ret_error, -EBADMSG, "Virtual Disk Size at offset 0x%" PRIx64 " is %" PRIu64 ": zero, over 64 TiB or not a multiple of the logical sector size",
                            ITEM_AT(GUID_VIRTUAL_DISK_SIZE), v->virtual_size);
#undef ITEM_AT
        return parse_parent_locator(v, src, ret_error);
}

static int read_metadata(Vhdx *v, const VhdxSource *src, char **ret_error) {
        _cleanup_free_ uint8_t *t = malloc(VHDX_METADATA_TABLE_SIZE);
        uint16_t count;
        int r;

        if (!t)
                return -ENOMEM;
        r = source_read(src, t, VHDX_METADATA_TABLE_SIZE, v->metadata_offset, "metadata table", ret_error);
        if (r < 0)
                return r;
        if (memcmp(t, "metadata", 8) != 0)
                return fail(ret_error, -EBADMSG, "metadata table Signature at offset 0x%" PRIx64 " is not \"metadata\"", v->metadata_offset);
        count = get_le16(t + 10);
        if (count > VHDX_MAX_TABLE_ENTRIES)
                return fail(ret_error, -EBADMSG, "metadata table EntryCount at offset 0x%" PRIx64 " is %u, more than %d",
                            v->metadata_offset + 10, count, VHDX_MAX_TABLE_ENTRIES);

        v->items = calloc(count ? count : 1, sizeof *v->items);
        if (!v->items)
                return -ENOMEM;
        for (uint16_t i = 0; i < count; i++) {
                const uint8_t *p = t + 32 + 32 * i;
                uint64_t entry_offset = v->metadata_offset + 32 + 32 * (uint64_t) i;
                VhdxMetadataItem *m = &v->items[i];
                uint32_t bits = get_le32(p + 24);

                memcpy(m->id.bytes, p, 16);
                m->offset = get_le32(p + 16);
                m->length = get_le32(p + 20);
                m->is_user = bits & 1;
                m->is_virtual_disk = bits & 2;
                m->is_required = bits & 4;
                m->name = metadata_item_name(m);
                v->n_items++;
                r = check_metadata_entry(v, m, entry_offset, ret_error);
                if (r < 0)
                        return r;
        }
        r = check_metadata_overlaps(v, ret_error);
        if (r < 0)
                return r;
        return read_metadata_items(v, src, ret_error);
}

static int compute_bat_geometry(Vhdx *v, char **ret_error) {
        v->chunk_ratio = ((UINT64_C(1) << 23) * v->logical_sector_size) / v->block_size;
        v->data_blocks = (v->virtual_size + v->block_size - 1) / v->block_size;
        v->bitmap_blocks = (v->data_blocks + v->chunk_ratio - 1) / v->chunk_ratio;
        if (v->has_parent)
                v->bat_entries = v->bitmap_blocks * (v->chunk_ratio + 1);
        else
                v->bat_entries = v->data_blocks + (v->data_blocks - 1) / v->chunk_ratio;
        if (v->bat_entries > v->bat_length / 8)
                return fail(ret_error, -EBADMSG, "BAT region at offset 0x%" PRIx64 " is 0x%" PRIx64 " bytes, too small for %" PRIu64 " entries",
                            v->bat_offset, v->bat_length, v->bat_entries);
        return 0;
}

typedef struct Span {
        uint64_t offset, length;
        uint64_t bat_index;     /* UINT64_MAX for a structure */
        const char *what;
} Span;

static int span_cmp(const void *a, const void *b) {
        const Span *x = a, *y = b;
        return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static void describe_span(const Vhdx *v, const Span *s, char *out, size_t size) {
        if (s->bat_index == UINT64_MAX)
                snprintf(out, size, "%s", s->what);
        else
                snprintf(out, size, "BAT entry %" PRIu64 " at offset 0x%" PRIx64 " (%s block at file offset 0x%" PRIx64 ")",
                         s->bat_index, v->bat_offset + 8 * s->bat_index, s->what, s->offset);
}

static int check_block_entry(Vhdx *v, uint64_t i, uint64_t e, bool bitmap, char **ret_error) {
        uint64_t entry_offset = v->bat_offset + 8 * i;
        unsigned state = e & 7;
        uint64_t file_offset = (e >> 20) * MiB;

        if ((e >> 3) & 0x1ffff)
                return fail(ret_error, -EBADMSG, "BAT entry %" PRIu64 " at offset 0x%" PRIx64 ": reserved bits set (0x%016" PRIx64 ")",
                            i, entry_offset, e);
        if (bitmap) {
                if (state != VHDX_SB_NOT_PRESENT && state != VHDX_SB_PRESENT)
                        return fail(ret_error, -EBADMSG, "BAT entry %" PRIu64 " at offset 0x%" PRIx64 ": invalid sector bitmap state %u",
                                    i, entry_offset, state);
        } else if (state == 4 || state == 5 || (state == VHDX_PAYLOAD_PARTIALLY_PRESENT && !v->has_parent))
                return fail(ret_error, -EBADMSG, "BAT entry %" PRIu64 " at offset 0x%" PRIx64 ": invalid payload block state %u%s",
                            i, entry_offset, state, state == 7 ? " (PARTIALLY_PRESENT in a disk without parent)" : "");
        if (state >= 6) {
                if (file_offset == 0)
                        return fail(ret_error, -EBADMSG, "BAT entry %" PRIu64 " at offset 0x%" PRIx64 ": present block with FileOffsetMB 0 (inside the header area)",
                                    i, entry_offset);
                if (file_offset >= v->file_size)
                        return fail(ret_error, -EBADMSG, "BAT entry %" PRIu64 " at offset 0x%" PRIx64 ": block at file offset 0x%" PRIx64 " is past the end of the file (0x%" PRIx64 ")",
                                    i, entry_offset, file_offset, v->file_size);
        }
        return 0;
}

static bool bat_index_is_bitmap(const Vhdx *v, uint64_t i) {
        return (i + 1) % (v->chunk_ratio + 1) == 0;
}

/* Every structure and present block must be disjoint: a block that overlaps
 * metadata would make us treat metadata as payload (or the reverse). */
static int check_overlaps(Vhdx *v, char **ret_error) {
        size_t n = 0, cap = 2 + v->n_regions + v->n_present;
        _cleanup_free_ Span *spans = NULL;

        spans = calloc(cap, sizeof *spans);
        if (!spans)
                return -ENOMEM;

        spans[n++] = (Span) { 0, VHDX_HEADER_AREA_SIZE, UINT64_MAX, "the header area" };
        if (v->headers[v->current].log_length > 0)
                spans[n++] = (Span) { v->headers[v->current].log_offset, v->headers[v->current].log_length, UINT64_MAX, "the log" };
        for (size_t i = 0; i < v->n_regions; i++)
                spans[n++] = (Span) { v->regions[i].offset, v->regions[i].length, UINT64_MAX,
                                      strcmp(v->regions[i].name, "BAT") == 0 ? "the BAT region" :
                                      strcmp(v->regions[i].name, "metadata") == 0 ? "the metadata region" : "an unknown region" };
        for (size_t k = 0; k < v->n_present; k++) {
                const VhdxBatEntry *e = &v->present[k];
                bool bitmap = bat_index_is_bitmap(v, e->index);

                spans[n++] = (Span) { (e->entry >> 20) * MiB, bitmap ? SECTOR_BITMAP_BLOCK_SIZE : v->block_size,
                                      e->index, bitmap ? "sector bitmap" : "payload" };
        }

        qsort(spans, n, sizeof *spans, span_cmp);
        for (size_t i = 1; i < n; i++)
                if (spans[i].offset < spans[i - 1].offset + spans[i - 1].length) {
                        char a[200], b[200];
                        describe_span(v, &spans[i], a, sizeof a);
                        describe_span(v, &spans[i - 1], b, sizeof b);
                        return fail(ret_error, -EBADMSG, "%s overlaps %s", a, b);
                }
        return 0;
}

/* Keeps one present entry. Present blocks must be pairwise disjoint, start on
 * distinct MiB boundaries inside the file and are at least 1 MiB long, so
 * more of them than the file has MiB must overlap: refused before the list
 * can outgrow the file it describes. */
static int keep_present(Vhdx *v, uint64_t i, uint64_t e, char **ret_error) {
        VhdxBatEntry *n;

        if (v->n_present >= v->file_size / MiB)
                return fail(ret_error, -EBADMSG, "BAT entry %" PRIu64 " at offset 0x%" PRIx64 ": more present blocks than a file of 0x%" PRIx64 " bytes holds (some overlap)",
                            i, v->bat_offset + 8 * i, v->file_size);
        if (v->n_present == v->present_allocated) {
                size_t want = MAX((size_t) 64, v->present_allocated * 2);

                n = reallocarray(v->present, want, sizeof *n);
                if (!n)
                        return -ENOMEM;
                v->present = n;
                v->present_allocated = want;
        }
        v->present[v->n_present++] = (VhdxBatEntry) { .index = i, .entry = e };
        return 0;
}

static int check_bat_entry(Vhdx *v, uint64_t i, uint64_t e, char **ret_error) {
        bool bitmap = bat_index_is_bitmap(v, i);
        int r;

        r = check_block_entry(v, i, e, bitmap, ret_error);
        if (r < 0)
                return r;
        if (bitmap)
                v->bitmap_present_count += (e & 7) == VHDX_SB_PRESENT;
        else
                v->payload_state_count[e & 7]++;
        return (e & 7) >= 6 ? keep_present(v, i, e, ret_error) : 0;
}

/* Streams the BAT through a fixed buffer: a hostile header can claim a BAT of
 * gigabytes (64 TiB in 1 MiB blocks is 512 MiB of entries) in a small sparse
 * file, and the probe of a newly found image must not take that much memory.
 * Every entry is checked; only the present ones are kept. */
static int read_bat(Vhdx *v, const VhdxSource *src, char **ret_error) {
        _cleanup_free_ uint64_t *chunk = NULL;
        int r;

        r = compute_bat_geometry(v, ret_error);
        if (r < 0)
                return r;
        r = source_check_range(src, v->bat_entries * 8, v->bat_offset, "BAT", ret_error);
        if (r < 0)
                return r;
        chunk = malloc(BAT_CHUNK_ENTRIES * sizeof *chunk);
        if (!chunk)
                return -ENOMEM;
        for (uint64_t first = 0; first < v->bat_entries; first += BAT_CHUNK_ENTRIES) {
                size_t n = (size_t) MIN((uint64_t) BAT_CHUNK_ENTRIES, v->bat_entries - first);

                r = source_read(src, chunk, n * sizeof *chunk, v->bat_offset + 8 * first, "BAT", ret_error);
                if (r < 0)
                        return r;
                for (size_t k = 0; k < n; k++) {
                        r = check_bat_entry(v, first + k, le64toh(chunk[k]), ret_error);
                        if (r < 0)
                                return r;
                }
        }
        return check_overlaps(v, ret_error);
}

uint64_t vhdx_bat_entry(const Vhdx *v, uint64_t index) {
        size_t lo = 0, hi = v->n_present;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;

                if (v->present[mid].index == index)
                        return v->present[mid].entry;
                if (v->present[mid].index < index)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return 0;
}

int vhdx_open(const VhdxSource *src, Vhdx **ret, char **ret_error) {
        Vhdx *v;
        int r;

        v = calloc(1, sizeof *v);
        if (!v)
                return -ENOMEM;
        v->file_size = src->size;

        if ((r = read_file_identifier(v, src, ret_error)) < 0 ||
            (r = read_headers(v, src, ret_error)) < 0 ||
            (r = read_region_tables(v, src, ret_error)) < 0 ||
            (r = read_metadata(v, src, ret_error)) < 0 ||
            (r = read_bat(v, src, ret_error)) < 0) {
                if (r == -ENOMEM)
                        fail(ret_error, r, "out of memory");
                vhdx_free(v);
                return r;
        }
        *ret = v;
        return 0;
}

Vhdx *vhdx_free(Vhdx *v) {
        if (!v)
                return NULL;
        free(v->regions);
        free(v->items);
        free(v->present);
        free(v->parent_locator);
        free(v);
        return NULL;
}

static int add_clipped(ExtentList *l, uint64_t offset, uint64_t length, uint64_t file_size) {
        if (offset >= file_size)
                return 0;
        return extent_list_add(l, offset, MIN(length, file_size - offset));
}

int vhdx_file_ranges(const Vhdx *v, ExtentList *structures, ExtentList *data, ExtentList *stale) {
        ExtentList referenced = {}, all = {};
        const VhdxHeader *h = &v->headers[v->current];
        int r = 0;

        r = add_clipped(structures, 0, VHDX_HEADER_AREA_SIZE, v->file_size);
        if (r >= 0 && h->log_length > 0)
                r = add_clipped(structures, h->log_offset, h->log_length, v->file_size);
        for (size_t i = 0; r >= 0 && i < v->n_regions; i++)
                r = add_clipped(structures, v->regions[i].offset, v->regions[i].length, v->file_size);
        for (size_t k = 0; r >= 0 && k < v->n_present; k++) {
                unsigned state = v->present[k].entry & 7;
                uint64_t off = (v->present[k].entry >> 20) * MiB;

                if (bat_index_is_bitmap(v, v->present[k].index)) {
                        if (state == VHDX_SB_PRESENT)
                                r = add_clipped(structures, off, SECTOR_BITMAP_BLOCK_SIZE, v->file_size);
                } else if (state == VHDX_PAYLOAD_FULLY_PRESENT)
                        r = add_clipped(data, off, v->block_size, v->file_size);
                else if (state == VHDX_PAYLOAD_PARTIALLY_PRESENT)
                        /* Live, but its zeros may be "read from parent"
                         * markers in the bitmap sense: keep it whole. */
                        r = add_clipped(&referenced, off, v->block_size, v->file_size);
        }
        if (r < 0)
                goto finish;
        extent_list_normalize(structures);
        extent_list_normalize(data);

        for (size_t i = 0; r >= 0 && i < structures->n; i++)
                r = extent_list_add(&referenced, structures->items[i].offset, structures->items[i].length);
        for (size_t i = 0; r >= 0 && i < data->n; i++)
                r = extent_list_add(&referenced, data->items[i].offset, data->items[i].length);
        if (r < 0)
                goto finish;
        extent_list_normalize(&referenced);

        if (v->file_size > VHDX_HEADER_AREA_SIZE) {
                r = extent_list_add(&all, VHDX_HEADER_AREA_SIZE, v->file_size - VHDX_HEADER_AREA_SIZE);
                if (r >= 0)
                        r = extent_list_subtract(&all, &referenced, stale);
        }
finish:
        extent_list_done(&referenced);
        extent_list_done(&all);
        return r;
}

int vhdx_map_virtual_ranges(const Vhdx *v, const ExtentList *virt, ExtentList *out) {
        for (size_t i = 0; i < virt->n; i++) {
                uint64_t pos = virt->items[i].offset;
                uint64_t end = MIN(extent_end(&virt->items[i]), v->virtual_size);

                while (pos < end) {
                        uint64_t block = pos / v->block_size;
                        uint64_t in_block = pos % v->block_size;
                        uint64_t n = MIN(end - pos, v->block_size - in_block);

                        if (vhdx_block_state(v, block) == VHDX_PAYLOAD_FULLY_PRESENT) {
                                int r = add_clipped(out, vhdx_block_file_offset(v, block) + in_block, n, v->file_size);
                                if (r < 0)
                                        return r;
                        }
                        pos += n;
                }
        }
        return 0;
}

int vhdx_read_virtual(const Vhdx *v, const VhdxSource *src, void *buf, size_t len, uint64_t offset) {
        uint8_t *p = buf;

        if (v->has_parent)
                return -EOPNOTSUPP;
        if (offset > v->virtual_size || len > v->virtual_size - offset)
                return -EIO;
        while (len > 0) {
                uint64_t block = offset / v->block_size;
                uint64_t in_block = offset % v->block_size;
                size_t n = MIN(len, v->block_size - in_block);

                if (vhdx_block_state(v, block) == VHDX_PAYLOAD_FULLY_PRESENT) {
                        uint64_t fo = vhdx_block_file_offset(v, block) + in_block;
                        /* A last block cut short by EOF reads as zeros past it. */
                        size_t avail = fo >= v->file_size ? 0 : (size_t) MIN((uint64_t) n, v->file_size - fo);
                        if (avail > 0) {
                                int r = src->pread(src->userdata, p, avail, fo);
                                if (r < 0)
                                        return r;
                        }
                        memset(p + avail, 0, n - avail);
                } else
                        memset(p, 0, n);
                p += n;
                offset += n;
                len -= n;
        }
        return 0;
}

static int write_header(int fd, VhdxHeader *h, unsigned index, uint64_t sequence,
                        const Guid *file_write, const Guid *data_write) {
        uint8_t raw[VHDX_HEADER_SIZE];
        uint64_t offset = index == 0 ? HEADER1_OFFSET : HEADER2_OFFSET;
        ssize_t n;

        memcpy(raw, h->raw, sizeof raw);
        put_le64(raw + 8, sequence);
        memcpy(raw + 16, file_write->bytes, 16);
        memcpy(raw + 32, data_write->bytes, 16);
        memset(raw + 4, 0, 4);
        put_le32(raw + 4, crc32c(raw, sizeof raw));

        n = pwrite(fd, raw, sizeof raw, (off_t) offset);
        if (n < 0)
                return -errno;
        if (n != sizeof raw)
                return -EIO;
        if (fdatasync(fd) < 0)
                return -errno;

        memcpy(h->raw, raw, sizeof raw);
        parse_header(h, offset);
        return 0;
}

/* The current header stays intact until the new one is durable, so a crash in
 * between leaves the old header current and valid. */
static int renew_guids(Vhdx *v, int fd, bool data_too) {
        VhdxHeader *cur = &v->headers[v->current];
        unsigned other = 1 - v->current;
        uint64_t seq = cur->sequence;
        Guid fw, dw = cur->data_write_guid;
        int r;

        guid_generate(&fw);
        if (data_too)
                guid_generate(&dw);

        v->headers[other] = *cur;
        r = write_header(fd, &v->headers[other], other, seq + 1, &fw, &dw);
        if (r < 0)
                return r;
        v->current = other;
        r = write_header(fd, &v->headers[1 - other], 1 - other, seq + 2, &fw, &dw);
        if (r < 0)
                return r;
        v->current = 1 - other;
        v->headers_identical = false;
        return 0;
}

int vhdx_renew_write_guids(Vhdx *v, int fd) {
        return renew_guids(v, fd, true);
}

int vhdx_renew_file_write_guid(Vhdx *v, int fd) {
        return renew_guids(v, fd, false);
}

static size_t present_position(const Vhdx *v, uint64_t index) {
        size_t lo = 0, hi = v->n_present;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;

                if (v->present[mid].index < index)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

int vhdx_write_bat_entry(Vhdx *v, int fd, uint64_t index, uint64_t entry) {
        size_t k = present_position(v, index);
        uint8_t raw[8];
        ssize_t n;

        /* Only kept (present) entries can be rewritten: the state of any
         * other was counted but not kept. */
        if (k >= v->n_present || v->present[k].index != index || bat_index_is_bitmap(v, index))
                return -EINVAL;
        put_le64(raw, entry);
        n = pwrite(fd, raw, sizeof raw, (off_t) (v->bat_offset + 8 * index));
        if (n < 0)
                return -errno;
        if (n != sizeof raw)
                return -EIO;
        v->payload_state_count[v->present[k].entry & 7]--;
        v->payload_state_count[entry & 7]++;
        if ((entry & 7) >= 6)
                v->present[k].entry = entry;
        else {
                memmove(v->present + k, v->present + k + 1, (v->n_present - k - 1) * sizeof *v->present);
                v->n_present--;
        }
        return 0;
}

bool vhdx_bat_index_is_bitmap(const Vhdx *v, uint64_t index) {
        return bat_index_is_bitmap(v, index);
}

const char *vhdx_payload_state_to_string(unsigned state) {
        switch (state) {
        case VHDX_PAYLOAD_NOT_PRESENT: return "NOT_PRESENT";
        case VHDX_PAYLOAD_UNDEFINED: return "UNDEFINED";
        case VHDX_PAYLOAD_ZERO: return "ZERO";
        case VHDX_PAYLOAD_UNMAPPED: return "UNMAPPED";
        case VHDX_PAYLOAD_FULLY_PRESENT: return "FULLY_PRESENT";
        case VHDX_PAYLOAD_PARTIALLY_PRESENT: return "PARTIALLY_PRESENT";
        default: return "INVALID";
        }
}

static void print_header(const Vhdx *v, unsigned i, FILE *f) {
        const VhdxHeader *h = &v->headers[i];
        char fw[GUID_STRING_MAX], dw[GUID_STRING_MAX], lg[GUID_STRING_MAX];

        fprintf(f, "header %u (0x%" PRIx64 "):%s\n", i + 1, i == 0 ? HEADER1_OFFSET : HEADER2_OFFSET,
                i == v->current ? " current" : "");
        if (!h->valid) {
                fprintf(f, "  invalid: %s\n", h->problem);
                return;
        }
        guid_to_string(&h->file_write_guid, fw);
        guid_to_string(&h->data_write_guid, dw);
        guid_to_string(&h->log_guid, lg);
        fprintf(f, "  sequence number   %" PRIu64 "\n"
                   "  file write GUID   %s\n"
                   "  data write GUID   %s\n"
                   "  log GUID          %s%s\n"
                   "  log               0x%" PRIx64 " + %" PRIu32 " bytes, version %u\n",
                h->sequence, fw, dw, lg, guid_is_null(&h->log_guid) ? " (clean)" : " (log needs replay)",
                h->log_offset, h->log_length, h->log_version);
}

void vhdx_print_inspect(const Vhdx *v, FILE *f) {
        char id[GUID_STRING_MAX];

        fprintf(f, "creator             %s\n", v->creator);
        for (unsigned i = 0; i < 2; i++)
                print_header(v, i, f);
        if (v->headers_identical)
                fprintf(f, "headers are byte-identical\n");
        fprintf(f, "region table        copy %u used%s\n", v->region_table_used + 1,
                v->region_table_valid[1 - v->region_table_used] ? "" : " (other copy invalid)");
        for (size_t i = 0; i < v->n_regions; i++) {
                char g[GUID_STRING_MAX];
                guid_to_string(&v->regions[i].guid, g);
                fprintf(f, "  region %-9s  0x%" PRIx64 " + %" PRIu32 " bytes%s  %s\n", v->regions[i].name,
                        v->regions[i].offset, v->regions[i].length, v->regions[i].required ? ", required" : "", g);
        }
        fprintf(f, "metadata items      %zu\n", v->n_items);
        for (size_t i = 0; i < v->n_items; i++)
                fprintf(f, "  %-21s offset 0x%" PRIx32 " length %" PRIu32 "%s%s\n", v->items[i].name,
                        v->items[i].offset, v->items[i].length,
                        v->items[i].is_required ? " required" : "", v->items[i].is_virtual_disk ? " virtual-disk" : "");
        guid_to_string(&v->virtual_disk_id, id);
        fprintf(f, "disk type           %s\n", v->has_parent ? "differencing" : v->leave_block_allocated ? "fixed" : "dynamic");
        fprintf(f, "virtual size        %" PRIu64 " bytes\n", v->virtual_size);
        fprintf(f, "block size          %" PRIu32 " bytes\n", v->block_size);
        fprintf(f, "sector size         %" PRIu32 " logical, %" PRIu32 " physical\n",
                v->logical_sector_size, v->physical_sector_size);
        fprintf(f, "virtual disk id     %s\n", id);
        if (v->parent_locator)
                fprintf(f, "parent locator      %s\n", v->parent_locator);
        fprintf(f, "chunk ratio         %" PRIu64 "\n", v->chunk_ratio);
        fprintf(f, "BAT entries         %" PRIu64 " (%" PRIu64 " payload, %" PRIu64 " sector bitmap)\n",
                v->bat_entries, v->data_blocks, v->bat_entries - v->data_blocks);
        for (unsigned s = 0; s < 8; s++)
                if (v->payload_state_count[s] > 0)
                        fprintf(f, "  %-18s %" PRIu64 "\n", vhdx_payload_state_to_string(s), v->payload_state_count[s]);
        fprintf(f, "  %-18s %" PRIu64 "\n", "SB_PRESENT", v->bitmap_present_count);
}
