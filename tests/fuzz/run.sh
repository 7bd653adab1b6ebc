#!/usr/bin/env bash
# Runs each cargo-fuzz target for a bounded time, starting from the committed
# seed corpus (tests/fuzz/corpus/<target>/) and growing a working corpus under
# tests/fuzz/target/corpus/<target>/ (kept between runs, never committed).
#
# Usage: tests/fuzz/run.sh [seconds-per-target] [target...]
#   default: 60 s for each of handshake, frames, dispatch, resp, responses, cluster
# Env: FUZZ_SANITIZER=none|address (default none: the core is safe Rust, and
#      AddressSanitizer costs a rebuild and most of the speed), FUZZ_ARGS="-flag=..."
#      passed on to libFuzzer.
#
# A crash or broken invariant leaves its input in tests/fuzz/artifacts/<target>/
# and makes the script exit 1 (after the other targets ran). Keep such an
# input in tests/fuzz/regressions/<target>/ once the bug is fixed:
# proto::fuzzing::regressions replays it under `cargo test`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(handshake frames dispatch resp responses cluster)
sanitizer=${FUZZ_SANITIZER:-none}

# cargo-fuzz passes nightly-only flags (-Zsanitizer, -Cpasses=sancov); the
# stable toolchain accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

cd "$root"
# -a: debug assertions (integer overflow checks) in the fuzzed code.
build=(--fuzz-dir tests/fuzz -a -s "$sanitizer")
echo "== cargo fuzz build ${build[*]}"
cargo fuzz build "${build[@]}"

failed=()
for target in "${targets[@]}"; do
  work="$here/target/corpus/$target"
  mkdir -p "$work" "$here/artifacts/$target"
  args=(-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
  [ -f "$here/dict/$target.dict" ] && args+=(-dict="$here/dict/$target.dict")
  # Request heads up to past the 8 KiB limit (libFuzzer's default is 4 KiB).
  [ "$target" = handshake ] && args+=(-max_len=9000)
  echo "== fuzzing $target for ${secs}s"
  # shellcheck disable=SC2086
  if ! cargo fuzz run "${build[@]}" "$target" "$work" "$here/corpus/$target" \
      -- "${args[@]}" ${FUZZ_ARGS:-}; then
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found failures in: ${failed[*]} (inputs in $here/artifacts/)" >&2
  exit 1
fi
echo "fuzzing: ${#targets[@]} targets ran ${secs}s each, no failure"
