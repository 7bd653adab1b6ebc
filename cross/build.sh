#!/usr/bin/env bash
# Build the shipped binaries of tether for Raspberry Pi boards: the `dist`
# profile (fat LTO, one codegen unit, stripped, panic=abort; see Cargo.toml).
#
#   cross/build.sh [--setup] [--all] [TARGET...]
#
# Default targets:
#   aarch64-unknown-linux-gnu        Pi 3/4/5 with a 64-bit OS (glibc)
#   armv7-unknown-linux-gnueabihf    Pi 2/3/4 with a 32-bit OS (glibc)
#   arm-unknown-linux-musleabihf     Pi Zero / Zero W / Pi 1 (ARMv6), static
# --all adds the static musl builds of the other two:
#   aarch64-unknown-linux-musl, armv7-unknown-linux-musleabihf
#
# Results: target/<TARGET>/dist/tether, copied to target/dist/tether-<TARGET>.
#
# How each piece is found:
#   * the target's std: the toolchain's own (`rustup target add TARGET`) when
#     installed; otherwise std is compiled from source with -Zbuild-std, the
#     source being rustup's rust-src component, or $RUST_SRC (a directory that
#     holds library/), or $RUST_SRC_TARBALL (a .tar.xz of library/; default
#     ../shared/cross/rust-src-VERSION-library.tar.xz beside the checkout), or
#     Debian's rust-src package of the same rustc version, fetched with apt.
#   * the linker: gnu targets use Debian's cross gcc (aarch64-linux-gnu-gcc,
#     arm-linux-gnueabihf-gcc); musl targets use zig through cargo-zigbuild.
#     Both are installed by --setup: apt-get (qemu-user too, for cross/smoke.sh)
#     and a Python venv under $WORK with ziglang, cargo-zigbuild and websockets.
#
# The armv6 *glibc* target (arm-unknown-linux-gnueabihf) is refused: Debian's
# armhf start-up files are ARMv7 code, so that binary would crash on a Pi Zero.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$ROOT/target/cross}
DIST=$ROOT/target/dist
DEFAULT_TARGETS="aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf arm-unknown-linux-musleabihf"
EXTRA_TARGETS="aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf"
SETUP=0
TARGETS=""
for arg in "$@"; do
  case $arg in
    --setup) SETUP=1 ;;
    --all) TARGETS="$TARGETS $DEFAULT_TARGETS $EXTRA_TARGETS" ;;
    -h|--help) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "cross/build.sh: unknown option $arg" >&2; exit 2 ;;
    *) TARGETS="$TARGETS $arg" ;;
  esac
done
TARGETS=${TARGETS:-$DEFAULT_TARGETS}
mkdir -p "$WORK" "$DIST"
t0=$SECONDS
log() { echo "[cross $((SECONDS - t0))s] $*"; }
die() { echo "cross/build.sh: $*" >&2; exit 1; }

for t in $TARGETS; do
  case $t in
    aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf) ;;
    aarch64-unknown-linux-musl|armv7-unknown-linux-musleabihf|arm-unknown-linux-musleabihf) ;;
    arm-unknown-linux-gnueabihf)
      die "$t links Debian's ARMv7 start-up files and would not run on ARMv6; use arm-unknown-linux-musleabihf" ;;
    *) die "unsupported target $t" ;;
  esac
done

# ------------------------------------------------------------------ set-up (CI, fresh machines)
APT_PACKAGES="qemu-user gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross
  libc6-dev-armhf-cross python3-venv xz-utils file binutils"
if [ "$SETUP" = 1 ]; then
  if [ "$(id -u)" = 0 ]; then
    log "apt-get: qemu-user, cross gcc"
    export DEBIAN_FRONTEND=noninteractive
    # A mirror with an inconsistent index for one suite must not stop the install.
    apt-get update -q >/dev/null 2>&1 || log "apt-get update reported errors; continuing"
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $APT_PACKAGES >/dev/null
  else
    missing=""
    for p in $APT_PACKAGES; do
      [[ $(dpkg-query -W -f '${Status}' "$p" 2>/dev/null) == *" installed" ]] || missing="$missing $p"
    done
    [ -z "$missing" ] || die "not root, so install these first: sudo apt-get install$missing"
  fi
  if [ ! -x "$WORK/venv/bin/cargo-zigbuild" ] || [ ! -x "$WORK/venv/bin/python3" ]; then
    log "pip: ziglang, cargo-zigbuild, websockets (venv $WORK/venv)"
    python3 -m venv "$WORK/venv"
    "$WORK/venv/bin/pip" install -q ziglang cargo-zigbuild websockets
  fi
fi
[ -d "$WORK/venv/bin" ] && export PATH="$WORK/venv/bin:$PATH"

# ------------------------------------------------------------------ std for each target
SYSROOT=$(rustc --print sysroot)
RV=$(rustc -V | awk '{print $2}')
LIBSRC=""
find_std_source() {    # sets LIBSRC to a library/ directory matching rustc $RV
  [ -n "$LIBSRC" ] && return 0
  if [ -f "$SYSROOT/lib/rustlib/src/rust/library/Cargo.lock" ]; then
    LIBSRC=$SYSROOT/lib/rustlib/src/rust/library; return 0     # rustup component add rust-src
  fi
  if [ -n "${RUST_SRC:-}" ]; then
    [ -f "$RUST_SRC/library/Cargo.lock" ] || die "RUST_SRC=$RUST_SRC has no library/Cargo.lock"
    LIBSRC=$RUST_SRC/library; return 0
  fi
  LIBSRC=$WORK/rust-src-$RV/library
  [ -f "$LIBSRC/Cargo.lock" ] && return 0
  local tarball=${RUST_SRC_TARBALL:-$ROOT/../shared/cross/rust-src-$RV-library.tar.xz}
  mkdir -p "$WORK/rust-src-$RV"
  if [ -f "$tarball" ]; then
    log "std source: $tarball"
    tar -C "$WORK/rust-src-$RV" -xJf "$tarball"
  else
    fetch_debian_rust_src
  fi
  [ -f "$LIBSRC/Cargo.lock" ] || die "no std source for rustc $RV in $LIBSRC"
}
fetch_debian_rust_src() {   # Debian's rust-src .deb of the same version, unpacked (nothing installed)
  log "std source: Debian's rust-src for rustc $RV"
  local A=$WORK/apt mirror
  mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$A/deb"
  mirror=${MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
  [ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$mirror" ] || die "no Debian mirror found in the APT sources; set MIRROR"
  {
    for suite in trixie-backports trixie sid experimental; do
      echo "deb [arch=amd64] $mirror $suite main"
    done
  } >"$A/sources.list"
  cat >"$A/apt.conf" <<EOF
Dir::Etc::SourceList "$A/sources.list";
Dir::Etc::SourceParts "/nonexistent";
Dir::State::Lists "$A/lists";
Dir::Cache "$A/cache";
Dir::State::status "/dev/null";
APT::Architectures { "amd64"; };
APT::Sandbox::User "root";
EOF
  APT_CONFIG=$A/apt.conf apt-get update -q >/dev/null 2>&1 || true
  local dv
  dv=$(APT_CONFIG=$A/apt.conf apt-cache madison rust-src | awk -F'|' '{gsub(/ /,"",$2); print $2}' |
    grep -E "^${RV//./\\.}\+" | head -1 || true)
  [ -n "$dv" ] || die "Debian has no rust-src for rustc $RV; set RUST_SRC or RUST_SRC_TARBALL"
  (cd "$A/deb" && APT_CONFIG=$A/apt.conf apt-get download -q "rust-src=$dv" >/dev/null)
  rm -rf "$WORK/x" && dpkg-deb -x "$A"/deb/rust-src_*.deb "$WORK/x"
  mv "$WORK"/x/usr/src/rustc-*/library "$WORK/rust-src-$RV/" && rm -rf "$WORK/x" "$A/deb"
}

# ------------------------------------------------------------------ build
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:-aarch64-linux-gnu-gcc}
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=${CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER:-arm-linux-gnueabihf-gcc}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
cd "$ROOT"
for t in $TARGETS; do
  s=$SECONDS
  build=(build)
  if [[ $t == *musl* ]]; then
    command -v cargo-zigbuild >/dev/null ||
      die "$t needs zig and cargo-zigbuild (pip install ziglang cargo-zigbuild), or run with --setup"
    build=(zigbuild)
  else
    linker_var=CARGO_TARGET_$(echo "$t" | tr 'a-z-' 'A-Z_')_LINKER
    command -v "${!linker_var}" >/dev/null ||
      die "$t needs the linker ${!linker_var} (apt-get install gcc-${!linker_var%-gcc}), or run with --setup"
  fi
  flags=()
  if [ ! -d "$SYSROOT/lib/rustlib/$t/lib" ]; then
    # No prebuilt std for this target in the toolchain: compile it from source.
    find_std_source
    export RUSTC_BOOTSTRAP=1 __CARGO_TESTS_ONLY_SRC_ROOT=$LIBSRC
    flags=(-Zbuild-std=std,panic_abort)
    if [[ $t == *musl* ]]; then
      # rustc would link its self-contained crt objects, which build-std does not
      # produce; zig supplies musl's own.
      var=CARGO_TARGET_$(echo "$t" | tr 'a-z-' 'A-Z_')_RUSTFLAGS
      export "$var=${!var:-} -C link-self-contained=no"
    fi
  fi
  log "building $t (${flags[*]:-prebuilt std})"
  nice cargo "${build[@]}" --profile dist --locked --target "$t" --bin tether "${flags[@]}"
  bin=target/$t/dist/tether
  cp "$bin" "$DIST/tether-$t"
  log "built $t in $((SECONDS - s))s: $(stat -c %s "$bin") bytes; $(file -b "$bin" | cut -d, -f1-2,5-)"
done
log "done: tether $VERSION in $DIST"
