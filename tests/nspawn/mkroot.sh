#!/bin/bash
# Builds (once) a minimal Debian 12 tree that can boot under systemd-nspawn
# and caches it as a tarball outside the repository; prints the tarball's
# path on stdout. Later calls with the same package list return the cached
# tarball at once.
#
#   tests/nspawn/mkroot.sh [EXTRA_PACKAGE...]
#
# Environment: VHDRECLAIM_TEST_CACHE (default /var/cache/vhdreclaim-test),
# VHDRECLAIM_DEBIAN_MIRROR (default: the mirror this host's apt uses for
# bookworm, else http://deb.debian.org/debian). Needs root, debootstrap,
# zstd and the network to the mirror the first time.
set -euo pipefail

suite=bookworm
variant=minbase
# systemd as PID 1 and its bus; the peers the in-container checks use
# (qemu-img, mkfs.ext4, python3); the shared libraries the installed
# binaries link (libinih1; libasan8/libubsan1 for the sanitizer build).
base_packages=(systemd systemd-sysv dbus qemu-utils e2fsprogs python3
               libinih1 libntfs-3g89 libasan8 libubsan1)

cache_dir=${VHDRECLAIM_TEST_CACHE:-/var/cache/vhdreclaim-test}

host_mirror() {
        # deb822 .sources first (Debian 12's default), then one-line lists.
        local f
        for f in /etc/apt/sources.list.d/*.sources; do
                [ -r "$f" ] || continue
                awk -v suite="$suite" '
                        function flush() {
                                if (types ~ /(^| )deb( |$)/ && suites ~ ("(^| )" suite "( |$)") &&
                                    enabled != "no" && uri != "") { print uri; found = 1; exit }
                                types = suites = uri = enabled = ""
                        }
                        /^[ \t]*#/ { next }
                        /^[ \t]*$/ { flush(); next }
                        tolower($1) == "types:"   { $1 = ""; types = $0 }
                        tolower($1) == "suites:"  { $1 = ""; suites = $0 }
                        tolower($1) == "uris:"    { uri = $2 }
                        tolower($1) == "enabled:" { enabled = tolower($2) }
                        END { if (!found) flush() }' "$f"
        done
        cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
                awk -v suite="$suite" '$1 == "deb" {
                        i = 2; if ($i ~ /^\[/) while ($i !~ /\]$/) i++; if ($2 ~ /^\[/) i++
                        if ($(i + 1) == suite) print $i }' || true
}

mirror=${VHDRECLAIM_DEBIAN_MIRROR:-$(host_mirror | head -n1 || true)}
mirror=${mirror:-http://deb.debian.org/debian}

packages=$(printf '%s\n' "${base_packages[@]}" "$@" | sort -u | paste -sd, -)
key=$(printf '%s %s %s' "$suite" "$variant" "$packages" | sha256sum | cut -c1-16)
tarball=$cache_dir/$suite-$variant-$key.tar.zst

mkdir -p "$cache_dir"
# Two test runs may want the same tree at once: one builds, the other waits.
exec 9>"$cache_dir/$key.lock"
flock 9

if [ -s "$tarball" ]; then
        echo "$tarball"
        exit 0
fi

for tool in debootstrap zstd; do
        command -v "$tool" >/dev/null || { echo "mkroot: $tool is not installed" >&2; exit 1; }
done

work=$(mktemp -d "$cache_dir/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root

echo "mkroot: debootstrap $suite ($variant) from $mirror with $packages" >&2
start=$(date +%s)
debootstrap --variant="$variant" --include="$packages" "$suite" "$root" "$mirror" \
        >"$work/debootstrap.log" 2>&1 || {
        tail -n 30 "$work/debootstrap.log" >&2
        [ -f "$root/debootstrap/debootstrap.log" ] && tail -n 30 "$root/debootstrap/debootstrap.log" >&2
        echo "mkroot: debootstrap failed" >&2
        exit 1
}
boot_ready=$(date +%s)

# What a booted test container does not need: downloaded packages and
# indexes. A fixed hostname keeps the journal readable.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
echo vhdreclaim-test >"$root/etc/hostname"

tar --numeric-owner --xattrs --acls -C "$root" -cf - . | zstd -q -T0 -3 -o "$work/root.tar.zst"
mv "$work/root.tar.zst" "$tarball"
end=$(date +%s)
echo "mkroot: debootstrap took $((boot_ready - start)) s, packing $((end - boot_ready)) s; cached $tarball ($(du -h "$tarball" | cut -f1))" >&2
echo "$tarball"
