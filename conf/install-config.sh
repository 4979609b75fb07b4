#!/bin/sh
# Installs the example configuration $1 as $2/vhdreclaim.conf (under
# $DESTDIR) unless a file is already there: an existing configuration is the
# administrator's and is never replaced.
set -eu

src=$1
dest=${DESTDIR:-}$2/vhdreclaim.conf

if [ -e "$dest" ] || [ -L "$dest" ]; then
        echo "Keeping the existing $dest"
        exit 0
fi
install -D -m 0644 "$src" "$dest"
echo "Installing $dest"
