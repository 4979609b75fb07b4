/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once

/* The control interface shared by vhdreclaimd (daemon/control.c) and
 * vhdreclaimctl: D-Bus peer to peer over the daemon's Unix socket.
 *
 * Object /org/vhdreclaim/Manager, interface org.vhdreclaim.Manager1.
 * Sizes are bytes, times are CLOCK_REALTIME microseconds (0 = never/none),
 * durations microseconds.
 *
 * Methods (R = read-only, open to anyone who can connect; W = changes state:
 * uid 0, the daemon's own uid, or a member of adminGroup):
 *
 *  R ListDisks(as names) -> a(ssssbsttttttssttttub)
 *        names empty = all disks. One struct per disk:
 *        name, path, origin ("disk" | "watch.NAME"), format ("vhdx"|"raw"|"unknown"),
 *        sparse, state ("idle"|"queued"|"reclaiming"|"missing"|"error"),
 *        virtual_size, file_size, allocated, reclaimable (estimate from the last
 *        pass or dry run; 0 when unknown), reclaimed_last, reclaimed_total,
 *        last_result (a PassResult string, "" = never), last_message,
 *        last_pass (realtime usec), next_pass (realtime usec, 0 = none scheduled),
 *        job_done, job_total (bytes of the running pass, 0 when idle),
 *        passes (number of passes run), last_dry_run (last_result is a dry
 *        run's: a watch-only disk's estimate)
 *     Fields are only ever appended: daemons before last_dry_run send 19, and
 *     a client reads the ones it knows (ctl/commands.c read_disk).
 *     Unknown name -> error VHDRECLAIM_ERROR_NO_SUCH_DISK.
 *  W Reclaim(as names, b all, b dry_run, s discard) -> at job_ids
 *        discard "" = each disk's configured mode, else "safe" | "free".
 *  W Compact(s name) -> t job_id
 *        queues a manual pass of that disk that also compacts the VHDX file
 *        (compact.h), whatever its compact= setting; a queued pass of the
 *        disk becomes one and its id is returned. Progress and JobFinished as
 *        for Reclaim. VHDRECLAIM_ERROR_FAILED for a watch-only disk
 *        (sparse=false or discard=none), VHDRECLAIM_ERROR_BUSY while a job
 *        that does not compact runs on it.
 *  W Trim(as mounts, b all) -> t job_id
 *        mounts empty and all=false = the configured [trim] mounts; job_id 0
 *        when there is nothing to trim (none given, none configured).
 *        A given mount that is not a mount point: SD_BUS_ERROR_INVALID_ARGS
 *        naming it. A configured one is left out of the job (its message
 *        names it, the result is "error"); none left: VHDRECLAIM_ERROR_FAILED
 *        naming each.
 *  W Cancel(t job_id) -> ()
 *  W SetSparse(s name, b sparse) -> ()   false: answered once the holes are
 *        re-allocated (a "set-sparse" job on a worker thread meanwhile);
 *        VHDRECLAIM_ERROR_NO_SPACE up front when the host lacks the space,
 *        VHDRECLAIM_ERROR_BUSY while a job runs on the disk (and Reclaim of a
 *        disk being re-allocated gets VHDRECLAIM_ERROR_BUSY).
 *  W Reload() -> ()   synchronous; on an invalid configuration the error
 *        VHDRECLAIM_ERROR_CONFIG carries every "FILE:LINE: ..." message,
 *        one per line, and the old configuration stays.
 *  R ListJobs() -> a(tsssttd)  id, kind ("reclaim"|"trim"|"set-sparse"), target, state
 *        ("queued"|"running"), done, total, rate (bytes/s)
 *  R History(s name, u limit) -> a(sstsstttttsb)
 *        name "" = all; newest last: name, path, start (realtime usec),
 *        result, message, duration_usec, reclaimed, stale_bytes, zero_bytes,
 *        free_bytes, discard, dry_run (the byte counts are what the pass
 *        would have punched; reclaimed is 0)
 *  R GetTrimStatus() -> a(sttts)  mount, last (realtime usec), trimmed_last,
 *        trimmed_total, last_result
 *
 * Every string is valid UTF-8 (D-Bus requires it): a byte of a file name or
 * of the configuration that is not becomes U+FFFD (utf8_sanitize), and a
 * disk is also found by that name in the methods that take one.
 *
 * Properties (R): Version s, State s ("idle"|"busy"), Disks u, ActiveJobs u,
 *        ReclaimedTotal t, StartTime t (realtime usec), ConfigFile s.
 *
 * Signals:
 *  JobProgress(t job_id, s target, t done, t total, d rate)   at most 4 per second per job
 *  JobFinished(t job_id, s kind, s target, s result, s message, t reclaimed, b dry_run, t punched,
 *              b compacted, t file_size_before, t file_size_after)
 *        reclaimed: measured from st_blocks (0 for a dry run); dry_run: the
 *        pass changed nothing (asked for, or the disk is watch-only);
 *        punched: stale + zero + free bytes punched, or that would be
 *        punched by a dry run; compacted: the pass ran compaction (compact=
 *        or Compact), and then the file's apparent size before and after it
 *        (what it would be after, for a dry run), else false, 0, 0.
 *        The fields after message were added over time, always at the end:
 *        a client reads the ones it knows and those that follow may be absent
 *        (daemons before compaction send eight).
 *
 * busctl --address=unix:path=SOCKET sends org.freedesktop.DBus.Hello first;
 * the daemon answers it with a unique name as a bus would.
 */

#define VHDRECLAIM_BUS_PATH      "/org/vhdreclaim/Manager"
#define VHDRECLAIM_BUS_INTERFACE "org.vhdreclaim.Manager1"

#define VHDRECLAIM_ERROR_NO_SUCH_DISK "org.vhdreclaim.Error.NoSuchDisk"
#define VHDRECLAIM_ERROR_NO_SUCH_JOB  "org.vhdreclaim.Error.NoSuchJob"
#define VHDRECLAIM_ERROR_CONFIG       "org.vhdreclaim.Error.InvalidConfig"
#define VHDRECLAIM_ERROR_ACCESS       "org.vhdreclaim.Error.AccessDenied"
#define VHDRECLAIM_ERROR_BUSY         "org.vhdreclaim.Error.Busy"
#define VHDRECLAIM_ERROR_NO_SPACE     "org.vhdreclaim.Error.NoSpace"
#define VHDRECLAIM_ERROR_FAILED       "org.vhdreclaim.Error.Failed"

/* vhdreclaimctl exit codes */
enum {
        CTL_EXIT_OK = 0,
        CTL_EXIT_FAILED = 1,
        CTL_EXIT_USAGE = 2,
        CTL_EXIT_UNREACHABLE = 3,
};
