#!/bin/bash
# Runs inside the booted test container (started by the harness unit that
# boot.py installs), as root under a real systemd as PID 1. Each check is a
# function check_NAME that returns 0 or fails with a message; the checks to
# run are named in $CHECKS (from /harness/env), in order. Prints one TAP-like
# line per check and exits with the number of failed checks, which the
# harness unit hands to `systemctl exit`, and so becomes nspawn's status.
#
# Adding a check: write check_NAME below and add NAME to the list in
# boot.py (or pass --checks). A check that needs something not built yet
# must fail saying so, never pass.
set -uo pipefail

# shellcheck source=/dev/null
. /harness/env

SOCKET=/run/vhdreclaim/control.sock
CTL=$BINDIR/vhdreclaimctl
DAEMON=$SBINDIR/vhdreclaimd

fail() {
        echo "    $*" >&2
        return 1
}

# Polls "$@" every 0.1 s for up to $1 seconds; 0 once it succeeds.
wait_for() {
        local deadline=$(($(date +%s) + $1)); shift
        until "$@"; do
                [ "$(date +%s)" -lt "$deadline" ] || return 1
                sleep 0.1
        done
}

prop() {        # prop UNIT PROPERTY
        systemctl show -P "$2" "$1"
}

require_ctl() {
        [ -x "$CTL" ] || fail "vhdreclaimctl is not installed at $CTL (not built yet?)"
}

require_daemon() {
        [ -x "$DAEMON" ] || fail "vhdreclaimd is not installed at $DAEMON"
}

# --- Checks that need only the units and installed files. ---

check_boot() {
        local state
        state=$(systemctl is-system-running --wait)
        case $state in
        running) ;;
        degraded)
                # Tolerated only when none of the failed units is ours.
                systemctl --failed --no-legend --plain --no-pager >&2
                ! systemctl --failed --no-legend --plain | grep -q vhdreclaim ||
                        fail "a vhdreclaim unit failed during boot" ;;
        *) fail "system state after boot: $state" ;;
        esac
}

check_sysusers_group() {
        getent group vhdreclaim >/dev/null ||
                fail "systemd-sysusers did not create group vhdreclaim"
}

check_socket_listening() {
        local enabled active sub owner
        enabled=$(systemctl is-enabled vhdreclaimd.socket)
        [ "$enabled" = enabled ] || fail "vhdreclaimd.socket is $enabled, not enabled" || return
        active=$(systemctl is-active vhdreclaimd.socket)
        sub=$(prop vhdreclaimd.socket SubState)
        [ "$active/$sub" = active/listening ] ||
                fail "vhdreclaimd.socket is $active/$sub, not active/listening" || return
        [ -S "$SOCKET" ] || fail "$SOCKET is not a socket" || return
        owner=$(stat -c '%a %U %G' "$SOCKET")
        [ "$owner" = "660 root vhdreclaim" ] ||
                fail "$SOCKET has mode/owner/group '$owner', want '660 root vhdreclaim'"
}

check_timer_listed() {
        local line next
        systemctl is-active -q vhdreclaim.timer || fail "vhdreclaim.timer is not active" || return
        line=$(systemctl list-timers --all --no-pager --no-legend vhdreclaim.timer)
        echo "    $line"
        grep -q 'vhdreclaim\.timer.*vhdreclaim\.service' <<<"$line" ||
                fail "vhdreclaim.timer is not listed by list-timers" || return
        # The next elapse: at most a week plus the randomized delay away.
        next=$(prop vhdreclaim.timer NextElapseUSecRealtime)
        [ -n "$next" ] || fail "vhdreclaim.timer has no next elapse" || return
        local next_s now
        next_s=$(date -d "$next" +%s) || fail "cannot parse next elapse '$next'" || return
        now=$(date +%s)
        [ "$next_s" -gt "$now" ] && [ "$next_s" -le $((now + 7 * 86400 + 6000 + 3600)) ] ||
                fail "next elapse $next is not within the coming week"
}

check_service_idle_before_first_call() {
        local active
        active=$(systemctl is-active vhdreclaimd.service)
        [ "$active" = inactive ] ||
                fail "vhdreclaimd.service is $active before any client connected"
}

# --- Checks that need the working daemon and client. ---

write_config() {        # write_config EXTRA_TEXT: the test's configuration
        mkdir -p "$(dirname "$VHDRECLAIM_CONF")"
        cat >"$VHDRECLAIM_CONF" <<EOF
# written by the nspawn harness
[reclaim]
discard=safe
minReclaim=1M
minHole=64K
interval=1w
$1
EOF
}

check_first_call_starts_service() {
        require_ctl || return
        require_daemon || return
        write_config ""
        "$CTL" status || fail "vhdreclaimctl status failed (exit $?)" || return
        wait_for 10 systemctl is-active -q vhdreclaimd.service ||
                fail "vhdreclaimd.service is $(systemctl is-active vhdreclaimd.service) after the first call" || return
        [ "$(prop vhdreclaimd.socket SubState)" = running ] ||
                fail "the socket is $(prop vhdreclaimd.socket SubState), not running, with the service up" || return
        local status
        status=$(prop vhdreclaimd.service StatusText)
        echo "    STATUS=$status"
        [ -n "$status" ] || fail "the daemon sent no STATUS="
}

# qemu-img image with 4 MiB of data and 16 MiB of written zeros (qemu-img
# writes zero data, not ZERO block states), owned by OWNER.
make_image() {          # make_image PATH OWNER
        mkdir -p "$(dirname "$1")"
        qemu-img create -q -f vhdx -o block_size=1M "$1" 64M &&
                qemu-io -f vhdx -c 'write -P 0xa5 0 4M' -c 'write -P 0 4M 16M' "$1" >/dev/null &&
                chown "$2" "$1" && chmod 0644 "$1" ||
                fail "cannot make test image $1"
}

# The two test images: one in /srv, one in a private home directory of
# another user, so that ProtectSystem=/ProtectHome= and the capability set
# are exercised on real paths.
SRV_IMAGE=/srv/wsl/srv.vhdx
HOME_IMAGE=/home/alice/home.vhdx
DISKS_CONFIG="[disk.srv]
path=$SRV_IMAGE
[disk.home]
path=$HOME_IMAGE"

check_reload() {
        require_ctl || return
        local pid
        make_image "$SRV_IMAGE" root:root || return
        mkdir -p /home/alice && chown 1000:1000 /home/alice && chmod 0700 /home/alice
        make_image "$HOME_IMAGE" 1000:1000 || return
        pid=$(prop vhdreclaimd.service MainPID)
        write_config "$DISKS_CONFIG"
        systemctl reload vhdreclaimd.service || fail "systemctl reload failed" || return
        [ "$(prop vhdreclaimd.service MainPID)" = "$pid" ] || fail "reload restarted the daemon" || return
        "$CTL" status srv home || fail "the reloaded configuration lacks disks srv and home"
}

check_broken_reload_keeps_service() {
        require_ctl || return
        local pid out
        pid=$(prop vhdreclaimd.service MainPID)
        write_config "$DISKS_CONFIG
[trim]
chunk=lots"
        if out=$(systemctl reload vhdreclaimd.service 2>&1); then
                fail "reload of a broken configuration succeeded"
                return
        fi
        sed 's/^/    reload: /' <<<"$out"
        systemctl is-active -q vhdreclaimd.service || fail "the broken reload stopped the service" || return
        [ "$(prop vhdreclaimd.service MainPID)" = "$pid" ] || fail "the broken reload restarted the daemon" || return
        # Both the daemon and vhdreclaimctl reload (ExecReload=, so in the
        # unit's journal) name the file and the line of chunk=lots (line 12
        # of what write_config writes). Their stdout and stderr reach journald
        # as streams, possibly after systemctl has returned.
        local prog
        for prog in vhdreclaimd vhdreclaimctl; do
                wait_for 5 sh -c "journalctl -q -u vhdreclaimd.service --no-pager |
                        grep -q '$prog\[[0-9]*\]: .*vhdreclaim\.conf:12: .*chunk'" ||
                        fail "$prog did not log the file:line of the error after the broken reload" || return
        done
        "$CTL" status srv home || fail "the old configuration was not kept"
        write_config "$DISKS_CONFIG"
        systemctl reload vhdreclaimd.service || fail "reload of the repaired configuration failed"
}

check_watchdog_restarts_frozen_daemon() {
        require_daemon || return
        local pid restarts
        # The shipped unit: a watchdog, and a restart when it fires.
        [ "$(prop vhdreclaimd.service WatchdogUSec)/$(prop vhdreclaimd.service Restart)" = 30s/on-failure ] ||
                fail "the shipped unit has WatchdogSec=$(prop vhdreclaimd.service WatchdogUSec)," \
                        "Restart=$(prop vhdreclaimd.service Restart), not 30s and on-failure" || return
        # A short watchdog and restart delay for the test. systemd sends
        # SIGABRT, then SIGCONT to a stopped process.
        mkdir -p /run/systemd/system/vhdreclaimd.service.d
        printf '[Service]\nWatchdogSec=2s\nRestartSec=200ms\nTimeoutAbortSec=10s\nLimitCORE=0\n' \
                >/run/systemd/system/vhdreclaimd.service.d/50-test-watchdog.conf
        systemctl daemon-reload
        systemctl restart vhdreclaimd.service || fail "restart with the test watchdog failed" || return
        pid=$(prop vhdreclaimd.service MainPID)
        restarts=$(prop vhdreclaimd.service NRestarts)
        sleep 3         # the daemon must keep pinging while it runs normally
        [ "$(prop vhdreclaimd.service MainPID)" = "$pid" ] ||
                fail "the daemon was restarted although it was not frozen" || return
        kill -STOP "$pid"
        wait_for 30 sh -c "[ \"\$(systemctl show -P NRestarts vhdreclaimd.service)\" -gt $restarts ]" ||
                fail "the frozen daemon was not restarted" || return
        wait_for 10 systemctl is-active -q vhdreclaimd.service ||
                fail "vhdreclaimd.service did not come back after the watchdog" || return
        [ "$(prop vhdreclaimd.service MainPID)" != "$pid" ] || fail "same MainPID after the restart" || return
        journalctl -q -u vhdreclaimd.service --no-pager | grep -qi "watchdog timeout" ||
                fail "the journal does not say the watchdog fired" || return
        rm /run/systemd/system/vhdreclaimd.service.d/50-test-watchdog.conf
        systemctl daemon-reload
        systemctl restart vhdreclaimd.service
}

allocated() {   # allocated PATH: bytes the file occupies
        echo $(($(stat -c '%b * %B' "$1")))
}

# boot.py binds an ext4 on a host loop device at $TRIM_MOUNT; its backing
# file is /harness/trimfs.img, where the discards become holes.
TRIM_BACKING=/harness/trimfs.img
TRIM_CONFIG="[trim]
mounts=$TRIM_MOUNT
interval=0
chunk=32M
pause=10ms"

check_timer_service_reclaims() {
        require_ctl || return
        local before_srv before_home before_trim copy log
        mountpoint -q "$TRIM_MOUNT" || fail "$TRIM_MOUNT is not mounted (boot.py binds it)" || return
        # What an administrator with a [trim] section has: both ExecStart=
        # lines of the oneshot have work to do.
        write_config "$DISKS_CONFIG
$TRIM_CONFIG"
        systemctl reload vhdreclaimd.service || fail "reload with [trim] failed" || return
        dd if=/dev/urandom of="$TRIM_MOUNT/junk" bs=1M count=32 conv=fsync status=none &&
                rm "$TRIM_MOUNT/junk" && sync || fail "cannot fill and free $TRIM_MOUNT" || return
        copy=$(mktemp /srv/copy.XXXXXX)
        cp --sparse=never "$SRV_IMAGE" "$copy"
        before_srv=$(allocated "$SRV_IMAGE")
        before_home=$(allocated "$HOME_IMAGE")
        before_trim=$(allocated "$TRIM_BACKING")
        systemctl start vhdreclaim.service ||
                fail "vhdreclaim.service failed: $(prop vhdreclaim.service Result)" || return
        # The oneshot's output reaches the journal through a stream that
        # journald may read after the unit has finished: wait for its last line.
        wait_for 5 sh -c "journalctl -q -u vhdreclaim.service -o cat --no-pager | grep -q '^job .* $TRIM_MOUNT: '"
        log=$(journalctl -q -u vhdreclaim.service -o cat --no-pager)
        sed 's/^/    vhdreclaim.service: /' <<<"$log"
        echo "    srv: $before_srv -> $(allocated "$SRV_IMAGE"), home: $before_home -> $(allocated "$HOME_IMAGE")," \
                "trim backing file: $before_trim -> $(allocated "$TRIM_BACKING")"
        SRV_RECLAIMED=$((before_srv - $(allocated "$SRV_IMAGE")))
        [ "$SRV_RECLAIMED" -ge $((15 * 1048576)) ] ||
                fail "less than 15 MiB reclaimed from $SRV_IMAGE" || return
        [ $((before_home - $(allocated "$HOME_IMAGE"))) -ge $((15 * 1048576)) ] ||
                fail "less than 15 MiB reclaimed from $HOME_IMAGE (owned by another user)" || return
        qemu-img check -q -f vhdx "$SRV_IMAGE" || fail "qemu-img check fails after the pass" || return
        qemu-img compare -q -f vhdx -F vhdx "$SRV_IMAGE" "$copy" ||
                fail "the guest-visible content changed" || return
        rm -f "$copy"
        # The second step: FITRIM under the unit's capabilities and filter.
        grep -q "$TRIM_MOUNT: success" <<<"$log" ||
                fail "the oneshot did not report a successful trim of $TRIM_MOUNT" || return
        [ $((before_trim - $(allocated "$TRIM_BACKING"))) -ge $((24 * 1048576)) ] ||
                fail "the trim gave back less than 24 of the 32 MiB freed on $TRIM_MOUNT"
}

# One refused image (a user's broken VHDX) fails the oneshot, as an
# administrator wants to see in `systemctl --failed`, but the trim still
# runs: the two steps are one command line (vhdreclaim.service).
check_timer_service_trims_despite_refused_image() {
        require_ctl || return
        local broken=/srv/wsl/broken.vhdx before_trim
        printf 'not a disk image\n' >"$broken" || fail "cannot write $broken" || return
        write_config "$DISKS_CONFIG
[disk.broken]
path=$broken
$TRIM_CONFIG"
        systemctl reload vhdreclaimd.service || fail "reload with a broken image failed" || return
        dd if=/dev/urandom of="$TRIM_MOUNT/junk" bs=1M count=32 conv=fsync status=none &&
                rm "$TRIM_MOUNT/junk" && sync || fail "cannot fill and free $TRIM_MOUNT" || return
        before_trim=$(allocated "$TRIM_BACKING")
        systemctl start vhdreclaim.service &&
                fail "vhdreclaim.service succeeded although $broken is refused" && return 1
        [ "$(prop vhdreclaim.service Result)" = exit-code ] ||
                fail "vhdreclaim.service: Result=$(prop vhdreclaim.service Result), not exit-code" || return
        echo "    trim backing file: $before_trim -> $(allocated "$TRIM_BACKING")"
        [ $((before_trim - $(allocated "$TRIM_BACKING"))) -ge $((24 * 1048576)) ] ||
                fail "the trim did not run after the refused image (less than 24 of 32 MiB given back)" || return
        systemctl reset-failed vhdreclaim.service
        rm -f "$broken"
        write_config "$DISKS_CONFIG
$TRIM_CONFIG"
        systemctl reload vhdreclaimd.service || fail "reload without the broken image failed"
}

# PASS_END_ID and TRIM_END_ID (in /harness/env) are the MESSAGE_IDs of the
# daemon's source; test_units checks that vhdreclaimd(8) gives the same.

has_entry() {    # has_entry MATCH...: the daemon's journal has such an entry
        [ -n "$(journalctl -q -o cat -u vhdreclaimd.service --no-pager "$@")" ]
}

check_journal_fields() {
        require_daemon || return
        # Native journal entries travel apart from the streams that the
        # previous check waited for: give journald a moment for them too.
        wait_for 5 has_entry MESSAGE_ID=$PASS_END_ID VHDRECLAIM_DISK=srv
        wait_for 5 has_entry MESSAGE_ID=$TRIM_END_ID
        # The pass end of disk srv in the timer's run: its bytes are what the
        # file lost (st_blocks), as measured by check_timer_service_reclaims.
        journalctl -o json -u vhdreclaimd.service --no-pager MESSAGE_ID=$PASS_END_ID VHDRECLAIM_DISK=srv |
                python3 -c '
import json, sys
entries = [json.loads(line) for line in sys.stdin]
if not entries:
    sys.exit("    no pass-end entry (MESSAGE_ID='"$PASS_END_ID"') for disk srv")
e = entries[-1]
print("    " + " ".join(f"{k}={e.get(k)}" for k in ("MESSAGE_ID", "VHDRECLAIM_DISK", "VHDRECLAIM_PATH",
      "VHDRECLAIM_RESULT", "VHDRECLAIM_RECLAIMED_BYTES", "PRIORITY")))
want = {"VHDRECLAIM_RESULT": "success", "VHDRECLAIM_PATH": "'"$SRV_IMAGE"'",
        "VHDRECLAIM_RECLAIMED_BYTES": "'"${SRV_RECLAIMED:-unknown}"'"}
bad = {k: e.get(k) for k, v in want.items() if e.get(k) != v}
if bad:
    sys.exit(f"    want {want}, have {bad}")
' || fail "the pass-end entry of srv lacks its structured fields" || return
        journalctl -o json -u vhdreclaimd.service --no-pager MESSAGE_ID=$TRIM_END_ID | python3 -c '
import json, sys
entries = [json.loads(line) for line in sys.stdin]
if not entries:
    sys.exit("    no trim-end entry (MESSAGE_ID='"$TRIM_END_ID"')")
e = entries[-1]
print("    " + " ".join(f"{k}={e.get(k)}" for k in ("MESSAGE_ID", "VHDRECLAIM_RESULT", "VHDRECLAIM_TRIMMED_BYTES")))
if e.get("VHDRECLAIM_RESULT") != "success" or int(e.get("VHDRECLAIM_TRIMMED_BYTES", "0")) <= 0:
    sys.exit("    the trim did not end in success with bytes trimmed")
' || fail "the trim-end entry lacks its structured fields"
}

check_clean_stop() {
        require_daemon || return
        local result status reports
        systemctl stop vhdreclaimd.service || fail "systemctl stop vhdreclaimd failed" || return
        result=$(prop vhdreclaimd.service Result)
        status=$(prop vhdreclaimd.service ExecMainStatus)
        [ "$result/$status" = success/0 ] ||
                fail "the daemon stopped with result $result, exit status $status" || return
        [ "$(prop vhdreclaimd.socket SubState)" = listening ] ||
                fail "the socket is $(prop vhdreclaimd.socket SubState) after the service stopped" || return
        # Sanitizer builds: a report anywhere in this boot fails (abort_on_error
        # turns most into a crash already; this catches those at exit too).
        journalctl --sync
        reports=$(journalctl -q -b --no-pager -o cat |
                grep -E "ERROR: (Address|Leak|Thread)Sanitizer|runtime error:" | head -n 5)
        [ -z "$reports" ] || fail "sanitizer reports in the journal: $reports"
}

# --- The package route (boot.py --deb): apt installs, upgrades, removes and
# purges the packages in /harness/debs/order, oldest first, under this
# systemd. Each check builds on the state the previous one left. ---

DEB_STATE=/var/lib/vhdreclaim
DEB_IMAGE=/srv/pkg/pkg.vhdx

deb_file() {    # deb_file N: the Nth package of /harness/debs/order
        echo "/harness/debs/$(sed -n "${1}p" /harness/debs/order)"
}

deb_version() {
        dpkg-deb -f "$1" Version
}

apt_quiet() {   # apt_quiet ARGS...: apt-get, its output indented; no prompts
        local out rc
        out=$(DEBIAN_FRONTEND=noninteractive apt-get -y -q "$@" </dev/null 2>&1); rc=$?
        grep -vE '^(Reading|Building|Selecting|\(Reading|debconf: delaying)|^ *$' <<<"$out" | sed 's/^/    apt: /'
        return $rc
}

daemon_starts() {       # how often systemd has started the daemon in this boot
        journalctl -q -b -o cat --no-pager _PID=1 |
                grep -c '^Started vhdreclaimd\.service' || true
}

check_deb_install() {
        local deb mode
        deb=$(deb_file 1)
        apt_quiet install "$deb" || fail "apt install $deb failed" || return
        [ "$(dpkg-query -W -f='${Status} ${Version}' vhdreclaim)" = "install ok installed $(deb_version "$deb")" ] ||
                fail "dpkg says: $(dpkg-query -W -f='${Status} ${Version}' vhdreclaim)" || return
        dpkg-query -W -f='${Conffiles}\n' vhdreclaim | grep -q '^ /etc/vhdreclaim.conf ' ||
                fail "/etc/vhdreclaim.conf is not a conffile" || return
        for f in "$CTL" "$DAEMON" /usr/share/man/man8/vhdreclaimd.8.gz /usr/share/man/man8/vhdreclaimctl.8.gz \
                 /usr/share/man/man5/vhdreclaim.conf.5.gz /usr/lib/sysusers.d/vhdreclaim.conf; do
                [ -e "$f" ] || fail "the package did not install $f" || return
        done
        getent group vhdreclaim >/dev/null || fail "the postinst did not create group vhdreclaim" || return
        mode=$(stat -c %a "$DEB_STATE") || fail "no state directory $DEB_STATE" || return
        [ "$mode" = 750 ] || fail "$DEB_STATE has mode $mode, not 750"
}

check_deb_units_started() {
        local u
        for u in vhdreclaimd.socket vhdreclaim.timer; do
                [ "$(systemctl is-enabled $u)/$(systemctl is-active $u)" = enabled/active ] ||
                        fail "$u is $(systemctl is-enabled $u)/$(systemctl is-active $u) after install" || return
        done
        [ "$(prop vhdreclaimd.socket SubState)" = listening ] ||
                fail "the socket is $(prop vhdreclaimd.socket SubState), not listening" || return
        [ -S "$SOCKET" ] || fail "no socket at $SOCKET" || return
        [ "$(stat -c '%a %G' "$SOCKET")" = "660 vhdreclaim" ] ||
                fail "the socket has mode and group $(stat -c '%a %G' "$SOCKET")" || return
        systemctl list-timers --all --no-pager --no-legend vhdreclaim.timer | sed 's/^/    /'
        systemctl list-timers --all --no-pager --no-legend vhdreclaim.timer | grep -q 'vhdreclaim\.service' ||
                fail "vhdreclaim.timer is not listed" || return
        # Socket-activated: installing starts no daemon, and enables none.
        [ "$(systemctl is-active vhdreclaimd.service)" = inactive ] ||
                fail "vhdreclaimd.service is $(systemctl is-active vhdreclaimd.service) right after install" || return
        [ "$(systemctl is-enabled vhdreclaimd.service)" = disabled ] ||
                fail "vhdreclaimd.service is $(systemctl is-enabled vhdreclaimd.service), not disabled"
}

check_deb_status_activates() {
        "$CTL" status || fail "vhdreclaimctl status failed (exit $?)" || return
        wait_for 10 systemctl is-active -q vhdreclaimd.service ||
                fail "the first call did not start vhdreclaimd.service" || return
        [ "$(daemon_starts)" = 1 ] || fail "the daemon was started $(daemon_starts) times, not once"
}

file_fingerprint() {    # content, allocation and mtime of a file
        echo "$(sha256sum <"$1") $(stat -c '%b %Y.%y' "$1")"
}

check_deb_unconfigured_touches_nothing() {
        local before after
        # The shipped configuration names no disk and no folder, and trims
        # no mount: an image lying about in the usual places stays as it is,
        # even when the timer's oneshot runs.
        grep -qE '^\[(disk|watch)\.' "$VHDRECLAIM_CONF" && fail "the shipped $VHDRECLAIM_CONF configures a disk" && return 1
        make_image "$DEB_IMAGE" root:root || return
        before=$(file_fingerprint "$DEB_IMAGE")
        systemctl start vhdreclaim.service ||
                fail "the timer's oneshot failed with the shipped configuration: $(prop vhdreclaim.service Result)" || return
        journalctl -q -u vhdreclaim.service -o cat --no-pager | sed 's/^/    vhdreclaim.service: /'
        after=$(file_fingerprint "$DEB_IMAGE")
        [ "$before" = "$after" ] || fail "an unconfigured image changed: $before -> $after"
}

PKG_CONFIG_ADDITION="
# added by the administrator (the nspawn harness)
[reclaim]
discard=safe
minReclaim=1M
[disk.pkg]
path=$DEB_IMAGE"

check_deb_configure_and_reclaim() {
        local before copy
        # The administrator edits the shipped file: a conffile change that
        # upgrades must keep.
        printf '%s\n' "$PKG_CONFIG_ADDITION" >>"$VHDRECLAIM_CONF"
        systemctl reload vhdreclaimd.service || fail "reload after the edit failed" || return
        copy=$(mktemp /srv/copy.XXXXXX)
        cp --sparse=never "$DEB_IMAGE" "$copy"
        before=$(allocated "$DEB_IMAGE")
        "$CTL" reclaim pkg --wait || fail "vhdreclaimctl reclaim pkg --wait failed" || return
        echo "    pkg: $before -> $(allocated "$DEB_IMAGE") bytes allocated"
        [ $((before - $(allocated "$DEB_IMAGE"))) -ge $((15 * 1048576)) ] ||
                fail "less than 15 MiB reclaimed from $DEB_IMAGE" || return
        qemu-img compare -q -f vhdx -F vhdx "$DEB_IMAGE" "$copy" || fail "the guest-visible content changed" || return
        rm -f "$copy"
        "$CTL" history pkg >/harness/history.before || fail "vhdreclaimctl history pkg failed" || return
        sed 's/^/    /' /harness/history.before
        grep -q success /harness/history.before || fail "the history has no successful pass" || return
        sha256sum "$VHDRECLAIM_CONF" >/harness/conf.sha256
        ls -A "$DEB_STATE" >/harness/state.before
        [ -s /harness/state.before ] || fail "the daemon kept no state in $DEB_STATE"
}

check_deb_upgrade() {
        local deb pid starts
        deb=$(deb_file 2)
        [ -f "$deb" ] || fail "no second package to upgrade to" || return
        dpkg --compare-versions "$(deb_version "$deb")" gt "$(dpkg-query -W -f='${Version}' vhdreclaim)" ||
                fail "$(deb_version "$deb") is not higher than the installed version" || return
        systemctl is-active -q vhdreclaimd.service || fail "the daemon is not running before the upgrade" || return
        pid=$(prop vhdreclaimd.service MainPID)
        starts=$(daemon_starts)
        apt_quiet install "$deb" || fail "apt install $deb (the upgrade) failed" || return
        [ "$(dpkg-query -W -f='${Version}' vhdreclaim)" = "$(deb_version "$deb")" ] ||
                fail "the installed version is $(dpkg-query -W -f='${Version}' vhdreclaim)" || return
        wait_for 10 systemctl is-active -q vhdreclaimd.service || fail "the daemon is not running after the upgrade" || return
        [ "$(prop vhdreclaimd.service MainPID)" != "$pid" ] || fail "the daemon was not restarted (same MainPID $pid)" || return
        [ "$(daemon_starts)" = $((starts + 1)) ] ||
                fail "the daemon was started $(($(daemon_starts) - starts)) times by the upgrade, not once" || return
        sha256sum -c --quiet /harness/conf.sha256 || fail "the administrator's $VHDRECLAIM_CONF changed" || return
        [ ! -e "$VHDRECLAIM_CONF.dpkg-new" ] && [ ! -e "$VHDRECLAIM_CONF.dpkg-old" ] ||
                fail "dpkg left a .dpkg-new or .dpkg-old beside the conffile" || return
        ls -A "$DEB_STATE" | diff /harness/state.before - || fail "the state directory's files changed" || return
        "$CTL" history pkg | diff /harness/history.before - ||
                fail "the history differs after the upgrade" || return
        "$CTL" status pkg || fail "vhdreclaimctl status pkg failed after the upgrade" || return
        for u in vhdreclaimd.socket vhdreclaim.timer; do
                [ "$(systemctl is-enabled $u)/$(systemctl is-active $u)" = enabled/active ] ||
                        fail "$u is $(systemctl is-enabled $u)/$(systemctl is-active $u) after the upgrade" || return
        done
}

check_deb_remove() {
        local u
        apt_quiet remove vhdreclaim || fail "apt remove failed" || return
        for u in vhdreclaimd.service vhdreclaimd.socket vhdreclaim.timer vhdreclaim.service; do
                [ "$(systemctl is-active $u)" = inactive ] ||
                        fail "$u is $(systemctl is-active $u) after apt remove" || return
        done
        [ ! -e "$DAEMON" ] && [ ! -e "$CTL" ] || fail "the binaries are still there" || return
        ls -A "$DEB_STATE" | diff /harness/state.before - || fail "apt remove changed the state" || return
        [ -f "$VHDRECLAIM_CONF" ] || fail "apt remove deleted the configuration (a conffile)" || return
        [ -f "$DEB_IMAGE" ] || fail "apt remove deleted a managed image"
}

check_deb_purge() {
        local left
        apt_quiet purge vhdreclaim || fail "apt purge failed" || return
        [ -z "$(dpkg-query -W -f='${Status}' vhdreclaim 2>/dev/null | grep -v not-installed)" ] ||
                fail "dpkg still knows vhdreclaim: $(dpkg-query -W -f='${Status}' vhdreclaim)" || return
        [ ! -e "$DEB_STATE" ] || fail "$DEB_STATE is still there" || return
        [ -f "$DEB_IMAGE" ] || fail "apt purge deleted a managed image" || return
        # Anything of ours left in /etc or /var/lib, by name or content;
        # not the harness's own unit, nor the test tree's host name.
        left=$( (find /etc /var/lib -path /var/lib/dpkg -prune -o -iname '*vhdreclaim*' -print
                 grep -rlI --exclude-dir=dpkg vhdreclaim /etc /var/lib 2>/dev/null) |
                grep -vE 'vhdreclaim-harness|^/etc/(hostname|hosts)$' | sort -u)
        echo "    left in /etc and /var/lib: $(echo ${left:-nothing})"
        # The group stays, as Debian leaves system groups and users (files
        # elsewhere may belong to it); nothing else may.
        local other
        other=$(grep -vxE '/etc/(group|gshadow)-?' <<<"$left" || true)
        [ -z "$other" ] || fail "left after purge: $other"
}

# --- Runner. ---

failed=0
n=0
for check in $CHECKS; do
        n=$((n + 1))
        start=$(date +%s%N)
        if "check_$check"; then
                result=ok
        else
                result="not ok"
                failed=$((failed + 1))
        fi
        echo "$result $n $check ($((($(date +%s%N) - start) / 1000000)) ms)"
done
echo "$((n - failed))/$n checks passed"
exit "$failed"
