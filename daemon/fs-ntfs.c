/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>


#include "fsbackend.h"
#include "log.h"
#include "macro.h"
#include "ntfs3g.h"
#include "ntfsio.h"
#include "unaligned.h"

/* The NTFS backend: libntfs-3g mounts the volume read-only through our
 * device operations (ntfsio.c), and every question about it is asked of the
 * library; we only decide what makes a volume unsafe to treat offline. */

/* Volume Shadow Copy Service files in System Volume Information carry this
 * GUID in their names (the catalog, and {id}{3808876b-...} per snapshot). */
#define VSS_STORE_GUID "{3808876b-c176-4e48-b7ae-04046e6cc752}"

/* How much of $Bitmap is read at once. */
#define BITMAP_CHUNK (64 * KiB)

typedef struct NtfsVolume {
        NtfsIo *io;
        ntfs_volume *vol;
} NtfsVolume;

static void quiet_library(void) {
        /* The library prints to stderr by default; its failures come back
         * to us as errno and we word them ourselves. */
        ntfs_log_set_handler(ntfs_log_handler_null);
}

static FsKind ntfs_recognise(const uint8_t *b, size_t len) {
        if (len < 512 || memcmp(b + 3, "NTFS    ", 8) != 0 || get_le16(b + 510) != 0xAA55)
                return FS_UNKNOWN;
        return FS_NTFS;
}

static int ntfs_open_volume(VDisk *d, FsPartition *p, void **ret) {
        static pthread_once_t once = PTHREAD_ONCE_INIT;
        _cleanup_free_ NtfsVolume *v = NULL;
        struct ntfs_device *dev = NULL;
        int r, e;

        (void) pthread_once(&once, quiet_library);

        v = calloc(1, sizeof *v);
        if (!v)
                return -ENOMEM;
        r = ntfs_io_new(d, p->offset, p->size, &v->io, &dev);
        if (r < 0)
                return r;
        v->vol = ntfs_device_mount(dev, NTFS_MNT_RDONLY);
        if (!v->vol) {
                e = errno;
                /* The library closes the device on most failure paths, not
                 * all; ntfs_device_free() refuses an open one. */
                if (NDevOpen(dev))
                        (void) dev->d_ops->close(dev);
                (void) ntfs_device_free(dev);
                r = ntfs_io_error(v->io);
                ntfs_io_free(v->io);
                if (r < 0)
                        return r;
                if (e == ENOMEM)
                        return -ENOMEM;
                return fs_mark_unclean(p, "libntfs-3g cannot mount the volume read-only: %s", strerror(e));
        }
        p->unit_size = v->vol->cluster_size;
        *ret = TAKE_PTR(v);
        return 0;
}

/* The boot sector and its copy in the volume's last sector (just past
 * number_of_sectors) must agree: if they do not, Windows and chkdsk may pick
 * the other one, and with it another geometry. */
static int ntfs_check_boot_backup(ntfs_volume *vol, FsPartition *p) {
        uint32_t ss = vol->sector_size;
        _cleanup_free_ uint8_t *a = malloc(ss), *b = malloc(ss);
        uint64_t backup;

        if (!a || !b)
                return -ENOMEM;
        if (ntfs_pread(vol->dev, 0, ss, a) != (s64) ss)
                return fs_mark_unclean(p, "cannot read the boot sector");
        int64_t sectors = sle64_to_cpu(((const NTFS_BOOT_SECTOR *) a)->number_of_sectors);
        if (sectors < 0 || (uint64_t) sectors >= p->size / ss)
                return fs_mark_unclean(p, "the backup boot sector (sector %lld) lies beyond the partition (%" PRIu64 " bytes)",
                                       (long long) sectors, p->size);
        backup = (uint64_t) sectors * ss;
        if (p->size - backup < ss)
                return fs_mark_unclean(p, "the backup boot sector (byte %" PRIu64 ") lies beyond the partition (%" PRIu64 " bytes)",
                                       backup, p->size);
        if (ntfs_pread(vol->dev, (s64) backup, ss, b) != (s64) ss)
                return fs_mark_unclean(p, "cannot read the backup boot sector at byte %" PRIu64, backup);
        if (memcmp(a, b, ss) != 0)
                return fs_mark_unclean(p, "the boot sector and its backup copy (byte %" PRIu64 ") differ", backup);
        return 0;
}

/* A $LogFile with pending transactions holds changes $Bitmap does not show
 * yet (also what Windows' Fast Startup leaves behind). */
static int ntfs_check_logfile_clean(ntfs_volume *vol, FsPartition *p) {
        RESTART_PAGE_HEADER *rp = NULL;
        ntfs_inode *ni;
        ntfs_attr *na;
        int r = 0;

        ni = ntfs_inode_open(vol, FILE_LogFile);
        if (!ni)
                return fs_mark_unclean(p, "cannot open $LogFile: %s", strerror(errno));
        na = ntfs_attr_open(ni, AT_DATA, AT_UNNAMED, 0);
        if (!na)
                r = fs_mark_unclean(p, "cannot open $LogFile's data: %s", strerror(errno));
        else if (!ntfs_check_logfile(na, &rp))
                r = fs_mark_unclean(p, "$LogFile is damaged or of an unknown version");
        else if (!ntfs_is_logfile_clean(na, rp))
                r = fs_mark_unclean(p, "$LogFile is not clean (the volume was not shut down cleanly; Windows must replay it)");
        free(rp);
        if (na)
                ntfs_attr_close(na);
        (void) ntfs_inode_close(ni);
        return r;
}

/* A hibernated Windows (or one shut down with Fast Startup) resumes with its
 * own idea of what is allocated. The library checks hiberfil.sys for "hibr";
 * Windows 8 and later write "HIBR", which we check the same way. */
static int ntfs_check_hibernation(ntfs_volume *vol, FsPartition *p) {
        char head[4] = {};
        ntfs_inode *ni;
        ntfs_attr *na;
        s64 n = 0;

        errno = 0;
        if (ntfs_volume_check_hiberfile(vol, 0) < 0) {
                if (errno == EPERM)
                        return fs_mark_unclean(p, "Windows is hibernated or was shut down with Fast Startup (active hiberfil.sys)");
                return fs_mark_unclean(p, "cannot check hiberfil.sys: %s", strerror(errno));
        }
        ni = ntfs_pathname_to_inode(vol, NULL, "hiberfil.sys");
        if (!ni)
                return 0;
        na = ntfs_attr_open(ni, AT_DATA, AT_UNNAMED, 0);
        if (na) {
                n = ntfs_attr_pread(na, 0, sizeof head, head);
                ntfs_attr_close(na);
        }
        (void) ntfs_inode_close(ni);
        if (n == (s64) sizeof head && strncasecmp(head, "hibr", 4) == 0)
                return fs_mark_unclean(p, "Windows is hibernated or was shut down with Fast Startup (hiberfil.sys says \"%.4s\")", head);
        return 0;
}

typedef struct ShadowSearch {
        char found[256];
        int error;
} ShadowSearch;

static int shadow_filldir(void *dirent, const ntfschar *name, const int name_len, const int name_type,
                          const s64 pos, const MFT_REF mref, const unsigned dt_type) {
        ShadowSearch *s = dirent;
        char *mb = NULL;

        if (name_type == FILE_NAME_DOS)
                return 0;
        if (ntfs_ucstombs(name, name_len, &mb, 0) < 0) {
                s->error = errno == ENOMEM ? -ENOMEM : 0;
                return s->error;
        }
        if (strcasestr(mb, VSS_STORE_GUID))
                snprintf(s->found, sizeof s->found, "%s", mb);
        free(mb);
        return s->found[0] ? 1 : 0;
}

/* A shadow copy can still need the old contents of clusters $Bitmap calls
 * free: punching them corrupts the snapshot. */
static int ntfs_check_shadow_copies(ntfs_volume *vol, FsPartition *p) {
        ShadowSearch s = {};
        ntfs_inode *ni;
        s64 pos = 0;
        int r;

        ni = ntfs_pathname_to_inode(vol, NULL, "System Volume Information");
        if (!ni) {
                if (errno == ENOENT)
                        return 0;
                return fs_mark_unclean(p, "cannot look up System Volume Information: %s", strerror(errno));
        }
        r = ntfs_readdir(ni, &pos, &s, shadow_filldir);
        (void) ntfs_inode_close(ni);
        if (s.error < 0)
                return s.error;
        if (s.found[0])
                return fs_mark_unclean(p, "volume shadow copies present (System Volume Information\\%s)", s.found);
        if (r < 0)
                return fs_mark_unclean(p, "cannot read System Volume Information: %s", strerror(errno));
        return 0;
}

static int ntfs_check_clean(void *volume, FsPartition *p) {
        ntfs_volume *vol = ((NtfsVolume *) volume)->vol;
        int r;

        if (vol->major_ver != 3 || vol->minor_ver != 1)
                return fs_mark_unclean(p, "NTFS version %u.%u (only 3.1 is read)", vol->major_ver, vol->minor_ver);
        if (le16_to_cpu(vol->flags) & le16_to_cpu(VOLUME_IS_DIRTY))
                return fs_mark_unclean(p, "volume dirty flag set (not cleanly unmounted, or chkdsk pending)");
        if (vol->nr_clusters <= 0 || (uint64_t) vol->nr_clusters > p->size / vol->cluster_size)
                return fs_mark_unclean(p, "volume (%lld clusters of %u bytes) is larger than its partition (%" PRIu64 " bytes)",
                                       (long long) vol->nr_clusters, vol->cluster_size, p->size);
        if (!vol->lcnbmp_na || vol->lcnbmp_na->data_size < 0 ||
            (uint64_t) vol->lcnbmp_na->data_size < ((uint64_t) vol->nr_clusters + 7) / 8)
                return fs_mark_unclean(p, "$Bitmap (%lld bytes) is shorter than the %lld clusters of the volume",
                                       vol->lcnbmp_na ? (long long) vol->lcnbmp_na->data_size : 0LL,
                                       (long long) vol->nr_clusters);
        r = ntfs_check_boot_backup(vol, p);
        if (r >= 0)
                r = ntfs_check_logfile_clean(vol, p);
        if (r >= 0)
                r = ntfs_check_hibernation(vol, p);
        if (r >= 0)
                r = ntfs_check_shadow_copies(vol, p);
        return r;
}

/* Free clusters are the clear bits of $Bitmap, cluster 0 at bit 0 of byte 0. */
static int ntfs_list_free(void *volume, FsPartition *p, ExtentList *out) {
        ntfs_volume *vol = ((NtfsVolume *) volume)->vol;
        uint64_t n = (uint64_t) vol->nr_clusters, cs = vol->cluster_size, run = UINT64_MAX;
        _cleanup_free_ uint8_t *buf = malloc(BITMAP_CHUNK);
        int r;

        if (!buf)
                return -ENOMEM;
        for (uint64_t base = 0; base < n; base += BITMAP_CHUNK * 8) {
                uint64_t bytes = MIN((uint64_t) BITMAP_CHUNK, (n - base + 7) / 8);
                s64 got = ntfs_attr_pread(vol->lcnbmp_na, (s64) (base / 8), (s64) bytes, buf);

                if (got != (s64) bytes)
                        return fs_mark_unclean(p, "cannot read $Bitmap at byte %" PRIu64, base / 8);
                for (uint64_t i = 0; i < bytes; i++) {
                        uint8_t x = buf[i];

                        /* Whole bytes first: most are all used or all free. */
                        if ((x == 0xff && run == UINT64_MAX) || (x == 0 && run != UINT64_MAX))
                                continue;
                        for (unsigned bit = 0; bit < 8; bit++) {
                                uint64_t lcn = base + i * 8 + bit;
                                bool used = x & (1u << bit);

                                if (lcn >= n)
                                        break;
                                if (!used && run == UINT64_MAX)
                                        run = lcn;
                                else if (used && run != UINT64_MAX) {
                                        r = extent_list_add(out, run * cs, (lcn - run) * cs);
                                        if (r < 0)
                                                return r;
                                        run = UINT64_MAX;
                                }
                        }
                }
        }
        if (run != UINT64_MAX)
                return extent_list_add(out, run * cs, (n - run) * cs);
        return 0;
}

static int ntfs_disk_error(void *volume) {
        return ntfs_io_error(((NtfsVolume *) volume)->io);
}

static void ntfs_close_volume(void *volume) {
        NtfsVolume *v = volume;

        /* Read-only: nothing to flush, and our device refuses writes anyway. */
        (void) ntfs_umount(v->vol, TRUE);
        if (ntfs_io_writes_refused(v->io) > 0)
                log_warning("libntfs-3g tried to write to a read-only volume %u times (refused)",
                            ntfs_io_writes_refused(v->io));
        ntfs_io_free(v->io);
        free(v);
}

const FsBackend fs_backend_ntfs = {
        .name = "ntfs",
        .recognise = ntfs_recognise,
        .open = ntfs_open_volume,
        .check_clean = ntfs_check_clean,
        .list_free = ntfs_list_free,
        .disk_error = ntfs_disk_error,
        .close = ntfs_close_volume,
};
