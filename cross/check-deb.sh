#!/usr/bin/env bash
# Inspect a tether .deb built by cross/deb.sh and install it into a throwaway root.
#
#   cross/check-deb.sh DEB [TARGET]
#
# Checks: control fields and conffiles (dpkg-deb -I), the file list (dpkg-deb -c),
# the unit is systemd/tether.service and passes `systemd-analyze verify` (with
# ExecStart pointing at the packaged binary), the packaged settings pass
# `tether check-config` (when the binary runs on this machine). Then, in a
# throwaway root (dpkg --root, maintainer scripts run with DPKG_ROOT): install;
# a user edits /etc/tether/settings.json and writes /etc/tether/env; an upgrade
# to a newer version (rebuilt with DEB_VERSION) keeps both; remove keeps the
# settings; purge deletes them. Needs root (dpkg --root).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEB=$(realpath "${1:?usage: cross/check-deb.sh DEB [TARGET]}")
TARGET=${2:-$(rustc -vV | sed -n 's/^host: //p')}
fail() { echo "check-deb: FAILED: $*" >&2; exit 1; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

echo "--- dpkg-deb -I $(basename "$DEB")"
dpkg-deb -I "$DEB" | tee "$T/info"
echo "--- dpkg-deb -c $(basename "$DEB")"
dpkg-deb -c "$DEB" | tee "$T/contents"
for f in ./usr/bin/tether ./lib/systemd/system/tether.service ./etc/tether/settings.json \
  ./usr/share/doc/tether/README.md ./usr/share/doc/tether/copyright; do
  grep -q " $f\$" "$T/contents" || fail "$f missing"
done
grep -q '^-rwxr-xr-x root/root .* ./usr/bin/tether$' "$T/contents" || fail "/usr/bin/tether is not 0755 root:root"
[ "$(dpkg-deb -f "$DEB" Package)" = tether ] || fail "Package"
case $TARGET in aarch64-*) want=arm64 ;; armv7-*|arm-*) want=armhf ;; x86_64-*) want=amd64 ;; esac
[ "$(dpkg-deb -f "$DEB" Architecture)" = "$want" ] || fail "Architecture is not $want"
# (into files first: grep -q closing a pipe early would fail the pipeline)
mkdir "$T/control" && dpkg-deb -e "$DEB" "$T/control"
grep -qx /etc/tether/settings.json "$T/control/conffiles" || fail "/etc/tether/settings.json is not a conffile"
for s in postinst prerm postrm; do
  [ -x "$T/control/$s" ] || fail "no executable $s"
done

dpkg-deb -x "$DEB" "$T/x"
cmp "$T/x/lib/systemd/system/tether.service" "$ROOT/systemd/tether.service" || fail "unit differs from systemd/tether.service"
cmp "$T/x/etc/tether/settings.json" "$ROOT/systemd/settings.json" || fail "settings differ from systemd/settings.json"
[[ $(file -b "$T/x/usr/bin/tether") == *", stripped"* ]] || fail "binary not stripped"

echo "--- systemd-analyze verify (ExecStart -> the packaged binary)"
sed "s|/usr/bin/tether|$T/x/usr/bin/tether|g" "$T/x/lib/systemd/system/tether.service" >"$T/tether.service"
if ! systemd-analyze verify "$T/tether.service" >"$T/verify" 2>&1 || [ -s "$T/verify" ]; then
  cat "$T/verify"; fail "systemd-analyze verify"
fi
echo ok
if "$T/x/usr/bin/tether" --version >/dev/null 2>&1; then   # runs on this machine (amd64)
  echo "--- tether check-config on the packaged settings"
  env -i PATH=/usr/bin:/bin "$T/x/usr/bin/tether" check-config --config "$T/x/etc/tether/settings.json" >/dev/null
fi

echo "--- install into a throwaway root"
R=$T/root
mkdir -p "$R/var/lib/dpkg/info" "$R/var/lib/dpkg/updates" "$R/var/lib/dpkg/triggers"
touch "$R/var/lib/dpkg/status"
# --force-depends: the root has no libc6/adduser; --force-architecture: an ARM
# package on this amd64 dpkg database.
dpkg_r() { dpkg --root="$R" --force-script-chrootless --force-depends --force-architecture "$@" </dev/null; }
dpkg_r -i "$DEB"
[ -x "$R/usr/bin/tether" ] && [ -f "$R/lib/systemd/system/tether.service" ] || fail "files not installed"
[ "$(dpkg-query --root="$R" -W -f '${Status}' tether)" = "install ok installed" ] || fail "not installed"
old=$(dpkg-deb -f "$DEB" Version)

# The user's edits, then an upgrade that must keep them.
sed -i 's/"port": 8080/"port": 9090/' "$R/etc/tether/settings.json"
grep -q '"port": 9090' "$R/etc/tether/settings.json" || fail "could not edit the settings"
printf 'JWT_SECRET=%s\n' "user-secret-0123456789abcdef0123456789" >"$R/etc/tether/env"
chmod 0600 "$R/etc/tether/env"
NEW="$old+check1"
DEB_VERSION=$NEW bash "$ROOT/cross/deb.sh" "$TARGET" "$T/x/usr/bin/tether" >"$T/newdeb"
NEWDEB=$(cat "$T/newdeb")
mv "$NEWDEB" "$T/upgrade.deb"
dpkg_r -i "$T/upgrade.deb"
[ "$(dpkg-query --root="$R" -W -f '${Version}' tether)" = "$NEW" ] || fail "upgrade to $NEW"
grep -q '"port": 9090' "$R/etc/tether/settings.json" || fail "the upgrade replaced the user's settings"
grep -q user-secret "$R/etc/tether/env" || fail "the upgrade touched /etc/tether/env"
[ ! -e "$R/etc/tether/settings.json.dpkg-new" ] || fail "settings.json.dpkg-new left behind"
echo "upgrade $old -> $NEW kept the user's settings and env"

dpkg_r --remove tether
[ ! -e "$R/usr/bin/tether" ] || fail "remove left the binary"
grep -q '"port": 9090' "$R/etc/tether/settings.json" || fail "remove deleted the settings"
dpkg_r --purge tether
[ ! -e "$R/etc/tether" ] || fail "purge left /etc/tether: $(ls -A "$R/etc/tether")"
echo "remove kept the settings; purge deleted them"
echo "check-deb: $(basename "$DEB") ok"
