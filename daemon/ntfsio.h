/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

#include <stdint.h>

#include "vdisk.h"

/* A read-only libntfs-3g device (struct ntfs_device_operations) that reads a
 * volume through a VDisk, at a byte offset (the partition start) and bounded
 * by the partition size: every read goes through the VDisk's read callback,
 * so through the pass's one leased descriptor. Opening for writing and every
 * write fail with EROFS. After the first failed read every read fails with
 * EIO (libntfs-3g retries EINTR forever: a broken lease must stop it). The
 * VDisk must outlive the device. */

typedef struct NtfsIo NtfsIo;
struct ntfs_device;

/* Allocates the device state and a libntfs-3g device over it; *ret_dev is
 * for ntfs_device_mount(), and is freed by ntfs_umount() (or
 * ntfs_device_free() when the mount fails). *ret_io is freed with
 * ntfs_io_free() after that. Returns 0 or -ENOMEM. */
int ntfs_io_new(VDisk *d, uint64_t offset, uint64_t size, NtfsIo **ret_io, struct ntfs_device **ret_dev);
void ntfs_io_free(NtfsIo *io);

/* The negative errno of the first VDisk read that failed, or 0. Reads past
 * the volume end are short reads, not failures. */
int ntfs_io_error(const NtfsIo *io);
/* How many writes the library attempted (and were refused). */
unsigned ntfs_io_writes_refused(const NtfsIo *io);
