#!/usr/bin/env bash
# Build a Debian package of tether for one architecture with dpkg-deb.
#
#   cross/deb.sh TARGET [BINARY]
#
# TARGET is a Rust target triple; BINARY defaults to target/dist/tether-TARGET
# (from cross/build.sh), or target/dist/tether (`cargo build --profile dist`)
# for the host's own triple.
#   aarch64-*                      -> arm64   (Raspberry Pi OS 64-bit)
#   armv7-*, arm-*                 -> armhf   (Raspberry Pi OS 32-bit; the ARMv6
#                                              musl build also runs on Pi Zero / Pi 1)
#   x86_64-*                       -> amd64
# Writes target/dist/tether_VERSION_ARCH[_TARGET].deb and prints its path.
# DEB_VERSION overrides the version (default: Cargo.toml's).
#
# Contents: /usr/bin/tether, /lib/systemd/system/tether.service,
# /etc/tether/settings.json (a conffile: dpkg never replaces a user's edits),
# /usr/share/doc/tether/{README.md,copyright}; maintainer scripts in cross/debian/.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${1:?usage: cross/deb.sh TARGET [BINARY]}
HOST=$(rustc -vV | sed -n 's/^host: //p')
if [ -n "${2:-}" ]; then
  BIN=$2
elif [ "$TARGET" = "$HOST" ]; then
  BIN=$ROOT/target/dist/tether
else
  BIN=$ROOT/target/dist/tether-$TARGET
fi
[ -f "$BIN" ] || { echo "cross/deb.sh: no binary at $BIN (build it first: cross/build.sh TARGET, or cargo build --profile dist)" >&2; exit 1; }

case $TARGET in
  aarch64-*) ARCH=arm64 ;;
  armv7-*|arm-*) ARCH=armhf ;;
  x86_64-*) ARCH=amd64 ;;
  *) echo "cross/deb.sh: no Debian architecture for $TARGET" >&2; exit 1 ;;
esac
VERSION=${DEB_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)}
DESCRIPTION=$(sed -n 's/^description = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)

# glibc builds depend on the newest glibc symbol version they use; musl builds are static.
DEPENDS="adduser"
if [[ $(file -b "$BIN") == *"dynamically linked"* ]]; then
  GLIBC=$(objdump -T "$BIN" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
  [ -n "$GLIBC" ] || { echo "cross/deb.sh: cannot read the glibc version $BIN needs" >&2; exit 1; }
  DEPENDS="libc6 (>= $GLIBC), $DEPENDS"
fi

OUT=$ROOT/target/dist
PKG=$OUT/pkg-$TARGET
rm -rf "$PKG"
install -d "$PKG/DEBIAN" "$PKG/usr/bin" "$PKG/lib/systemd/system" "$PKG/etc/tether" "$PKG/usr/share/doc/tether"
install -m 0755 "$BIN" "$PKG/usr/bin/tether"
install -m 0644 "$ROOT/systemd/tether.service" "$PKG/lib/systemd/system/tether.service"
install -m 0644 "$ROOT/systemd/settings.json" "$PKG/etc/tether/settings.json"
install -m 0644 "$ROOT/README.md" "$PKG/usr/share/doc/tether/README.md"
cat >"$PKG/usr/share/doc/tether/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tether
Files: *
License: MIT
EOF
install -m 0755 "$ROOT/cross/debian/postinst" "$ROOT/cross/debian/prerm" "$ROOT/cross/debian/postrm" "$PKG/DEBIAN/"
echo /etc/tether/settings.json >"$PKG/DEBIAN/conffiles"
SIZE_KIB=$(du -sk --exclude=DEBIAN "$PKG" | cut -f1)
cat >"$PKG/DEBIAN/control" <<EOF
Package: tether
Version: $VERSION
Architecture: $ARCH
Maintainer: ${DEB_MAINTAINER:-tether maintainers <maintainers@tether.invalid>}
Installed-Size: $SIZE_KIB
Depends: $DEPENDS
Section: net
Priority: optional
Description: $DESCRIPTION
 tether runs beside a game server, chat bot or booking backend and gives LAN
 clients authenticated WebSocket rooms and events (JWT or password), with
 limits, health and metrics. One thread, one poll loop, bounded memory.
 .
 Built for $TARGET. The systemd unit is installed but not enabled: review
 /etc/tether/settings.json, then: systemctl enable --now tether
EOF
(cd "$PKG" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum >DEBIAN/md5sums)

case $TARGET in
  arm-*) DEB=$OUT/tether_${VERSION}_${ARCH}_armv6.deb ;;   # one armhf name per CPU level
  *) DEB=$OUT/tether_${VERSION}_${ARCH}.deb ;;
esac
dpkg-deb --root-owner-group -Zxz --build "$PKG" "$DEB" >/dev/null
rm -rf "$PKG"
echo "$DEB"
