#!/bin/bash
# Builds the Debian package from this tree: installs the build dependencies
# (debian/control's Build-Depends, and dpkg-dev, debhelper, lintian), copies
# the committed-or-not working tree to a scratch directory so that the
# build never writes into the source, runs `dpkg-buildpackage -us -uc -b`
# there, checks the result with lintian (errors and warnings fail the
# build) and leaves vhdreclaim_<version>_<arch>.deb in the output directory.
#
#   tools/build-deb.sh [--output DIR] [--version VERSION] [--piuparts]
#
# --output: where the .deb goes (default: the current directory).
# --version: package a higher (or other) version of the same tree, by
#   prepending a debian/changelog entry in the scratch copy; for upgrade
#   tests. The source tree is not changed.
# --piuparts: then install and purge the package in a fresh bookworm chroot
#   with piuparts (debootstraps from this host's mirror: a few minutes and
#   the network; no systemd runs there, tests/nspawn covers that).
# Run as root on Debian 12 (it calls apt-get when something is missing).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
output=$PWD
version=
piuparts=false

while [ $# -gt 0 ]; do
        case $1 in
        --output) output=$2; shift 2 ;;
        --version) version=$2; shift 2 ;;
        --piuparts) piuparts=true; shift ;;
        *) echo "usage: $0 [--output DIR] [--version VERSION] [--piuparts]" >&2; exit 2 ;;
        esac
done
mkdir -p "$output"
output=$(cd "$output" && pwd)

# The tools, then what debian/control says the build needs.
tools=(dpkg-dev debhelper lintian fakeroot)
$piuparts && tools+=(piuparts)
missing=()
for p in "${tools[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! unmet=$(cd "$top" && dpkg-checkbuilddeps 2>&1); then
        # "dpkg-checkbuilddeps: error: Unmet build dependencies: a (>= 1) b"
        deps=$(sed -n 's/.*Unmet build dependencies: //p' <<<"$unmet" | sed 's/([^)]*)//g; s/|[^ ]*//g')
        [ -n "$deps" ] || { echo "$unmet" >&2; exit 1; }
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # shellcheck disable=SC2086
        apt-get install -y -qq --no-install-recommends $deps
fi

# The package's version is debian/changelog's; it must be the release that
# meson.build names (the daemon reports that one), perhaps with a suffix.
meson_version=$(sed -n "s/^ *version *: *'\([^']*\)'.*/\1/p" "$top/meson.build" | head -n1)
changelog_version=$(sed -n '1s/^vhdreclaim (\([^)]*\)).*/\1/p' "$top/debian/changelog")
case $changelog_version in
"$meson_version" | "$meson_version"[-+~]*) ;;
*)
        echo "build-deb: debian/changelog is at $changelog_version but meson.build at $meson_version" >&2
        exit 1 ;;
esac

work=$(mktemp -d /tmp/vhdreclaim-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
src=$work/vhdreclaim
mkdir "$src"
# The tree as it is, without build directories or VCS metadata.
tar -C "$top" --exclude=.git --exclude='./build*' --exclude=./debian/vhdreclaim \
        --exclude=./debian/.debhelper --exclude=./obj-* -cf - . | tar -C "$src" -xf -

if [ -n "$version" ]; then
        {
                printf 'vhdreclaim (%s) unstable; urgency=medium\n\n' "$version"
                printf '  * Rebuilt from the same tree as version %s.\n\n' "$version"
                printf ' -- %s  %s\n\n' \
                        "$(sed -n 's/^ -- \(.*>\)  .*/\1/p' "$src/debian/changelog" | head -n1)" \
                        "$(date -R)"
                cat "$src/debian/changelog"
        } >"$src/debian/changelog.new"
        mv "$src/debian/changelog.new" "$src/debian/changelog"
fi

(cd "$src" && dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1 || {
        tail -n 60 "$work/build.log" >&2
        echo "build-deb: dpkg-buildpackage failed" >&2
        exit 1
}

changes=$(ls "$work"/vhdreclaim_*.changes)
debs=("$work"/vhdreclaim_*.deb)
# Errors and warnings fail; accepted warnings are overridden, each with its
# reason, in debian/vhdreclaim.lintian-overrides.
lintian --fail-on error,warning --tag-display-limit 0 "$changes" || {
        echo "build-deb: lintian found errors or warnings" >&2
        exit 1
}
if $piuparts; then
        mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
        # The paths ignored are systemd's (our dependency, installed and
        # purged with us in the chroot), never ours: its private state
        # directories and coredump/pstore directories, and /root/.ssh that
        # its purge leaves.
        piuparts -d bookworm -m "${mirror:-http://deb.debian.org/debian}" \
                --ignore=/root/.ssh/ --ignore=/var/cache/private/ --ignore=/var/lib/private/ \
                --ignore=/var/log/private/ --ignore=/var/lib/systemd/coredump/ \
                --ignore=/var/lib/systemd/pstore/ "${debs[@]}" >"$work/piuparts.log" 2>&1 || {
                grep -A20 'FAIL' "$work/piuparts.log" >&2 || tail -n 40 "$work/piuparts.log" >&2
                echo "build-deb: piuparts failed" >&2
                exit 1
        }
        grep 'PASS:' "$work/piuparts.log" >&2
fi
cp "${debs[@]}" "$output"/
for d in "${debs[@]}"; do
        echo "$output/$(basename "$d")"
done
