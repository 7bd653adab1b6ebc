#!/usr/bin/env bash
# Issue 15's bench (SPEC §11): request/response through a `command` host (a
# program on pipes) and a `url` host (an HTTP backend, kept-alive; with and
# without HTTP/1.1 pipelining) beside the WebSocket host path, in one run of
# one gateway: µs of gateway CPU per request (utime+stime of /proc/PID/stat over the measured window, divided
# by the answers the clients got) and requests per second, with the same
# clients and payloads for all four (tether-load rpc: 100 clients, 8
# requests in flight each, `{"event":E,"data":0,"requestId":1}`).
#
#   bash benches/bridges.sh           full run: 3 rounds of the four paths, interleaved
#                                     (about 1.5 minutes once built)
#   bash benches/bridges.sh --smoke   the harness only (10 clients, 1 s windows; under 30 s once built)
# TETHER_BIN=PATH uses that tether binary instead of building the release one.
#
# The hosts are cheap so that the gateway is what is measured:
#   WebSocket  the load tool itself (its host connection answers each host.request)
#   command    tether-bridge-peer line (benches/load/src/bin/bridge_peer.rs, Rust, std only)
#   url        tether-bridge-peer http (the same binary: HTTP/1.1 on one mio thread),
#              for both url hosts (PIPELINE=N: the pipelined one's "pipeline", default 8)
# The method and settings are benches/lib.sh's (as benches/run.sh): the
# gateway on CPU 0, the load tool and every host on CPU 1 (taskset), at
# nice -19 when allowed. Loopback only. Needs cargo, python3 and taskset.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=${1:-full}
case "$MODE" in
    full | --full) MODE=full ROUNDS=3 CONNS=100 INFLIGHT=8 WARMUP=1 SECS=5 ;;
    --smoke) MODE=smoke ROUNDS=1 CONNS=10 INFLIGHT=4 WARMUP=0.3 SECS=1 ;;
    *) echo "usage: bash benches/bridges.sh [--smoke]" >&2; exit 2 ;;
esac
PORT=${PORT:-39851}
BACKEND_PORT=$((PORT + 2))
MAX_IN_FLIGHT=32
PIPELINE=${PIPELINE:-8} # the pipelined url host: requests in flight per connection

WORK=$(mktemp -d /tmp/tether-bridges-bench.XXXXXX)
JSONL=$ROOT/benches/results/bridges.jsonl
[[ $MODE == smoke ]] && JSONL=$WORK/bridges.jsonl
ROUNDS_LOG=$WORK/rounds.log
mkdir -p "$(dirname "$JSONL")"
: >"$JSONL"
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
BACKEND_PID=
trap '[[ -z "$BACKEND_PID" ]] || kill "$BACKEND_PID" 2>/dev/null; cleanup' EXIT

log "building"
if [[ -z "${TETHER_BIN:-}" ]]; then
    cargo build --release --quiet
    TETHER_BIN=$ROOT/target/release/tether
fi
cargo build --release --quiet --manifest-path benches/load/Cargo.toml
TETHER=$TETHER_BIN
LOAD=$ROOT/benches/load/target/release/tether-load
PEER=$ROOT/benches/load/target/release/tether-bridge-peer
bench_method

# lib.sh's bench settings, with the two bridged hosts; the program host
# runs on CPU 1 like the other hosts (taskset execs it).
tether_settings "$PORT"
python3 - "$WORK/tether.json" "$PEER" "$BACKEND_PORT" "$MAX_IN_FLIGHT" "$PIPELINE" <<'PY'
import json, sys
path, peer, port, in_flight, pipeline = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
settings = json.load(open(path))
settings["hosts"] = [
    {"name": "bench-cmd", "command": ["taskset", "-c", "1", peer, "line", "rpc.cmd"]},
    {"name": "bench-url", "url": f"http://127.0.0.1:{port}/tether/",
     "events": {"rpc.url": None}, "max_in_flight": in_flight},
    {"name": "bench-url-pipelined", "url": f"http://127.0.0.1:{port}/tether/",
     "events": {"rpc.pipe": None}, "max_in_flight": in_flight, "pipeline": pipeline},
]
json.dump(settings, open(path, "w"))
PY

(on_cpu 1 "$PEER" http "$BACKEND_PORT") &
BACKEND_PID=$!
start_server "$PORT" "$TETHER" serve --config "$WORK/tether.json"
sleep 0.5 # the program host registers its event

meta_line "\"mode\":\"$MODE\",\"tether\":\"$TETHER\","
# One path: the clients' requests to EVENT, answered by PATH's host.
run() {
    local path=$1 event=$2 extra=()
    [[ $path == ws ]] || extra=(--bridged)
    load "$path" "$PORT" rpc --tether "${extra[@]}" --event "$event" --conns "$CONNS" --inflight "$INFLIGHT" \
        --warmup "$WARMUP" --secs "$SECS" --path "/?token=$SUB_TOKEN" --pub-path "/?token=$HOST_TOKEN"
}
for round in $(seq 1 "$ROUNDS"); do
    log "round $round of $ROUNDS: WebSocket host, command host, url host, url host pipelined"
    run ws rpc
    run command rpc.cmd
    run url rpc.url
    run url-pipelined rpc.pipe
done
meta_end_line

# The table, and the checks: every path answered, without errors.
python3 - "$JSONL" "$MODE" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
meta = {k: v for r in rows if r.get("meta") or r.get("meta_end") for k, v in r.items()}
runs = [r for r in rows if not r.get("meta") and not r.get("meta_end")]
print(f"bridges bench, {meta['date']}, load average {meta['loadavg_start']} -> {meta['loadavg_end']}, {meta['nproc']} cores")
print("| path | requests/s | gateway µs/request | × WebSocket | p50 µs | p99 µs | errors |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
med = {}
bad = []
for path in ("ws", "command", "url", "url-pipelined"):
    mine = [r for r in runs if r["server"] == path]
    if not mine or any(r.get("error") for r in mine):
        bad.append(path)
        mine = [r for r in mine if not r.get("error")] or [{"server_us_per_msg": 0, "msgs_per_s": 0, "lat_p50_us": 0, "lat_p99_us": 0, "errors": 0, "failed": 0, "msgs": 0}]
    med[path] = statistics.median(r["server_us_per_msg"] for r in mine)
    rate = statistics.median(r["msgs_per_s"] for r in mine)
    p50 = statistics.median(r["lat_p50_us"] for r in mine)
    p99 = statistics.median(r["lat_p99_us"] for r in mine)
    errors = sum(r["errors"] + r["failed"] for r in mine)
    if (errors or any(r["msgs"] == 0 for r in mine)) and path not in bad:
        bad.append(path)
    ratio = med[path] / med["ws"] if med.get("ws") else 0
    print(f"| {path} | {rate:,.0f} | {med[path]:.2f} | {ratio:.2f} | {p50:,} | {p99:,} | {errors} |")
print("(medians of", len([r for r in runs if r["server"] == "ws"]), "runs per path; targets: command ≤ 2×, url ≤ 4×)")
if bad:
    sys.exit(f"bridges bench: no answers or errors on: {', '.join(bad)}")
if sys.argv[2] != "smoke" and med["ws"]:
    for path, target in (("command", 2), ("url", 4), ("url-pipelined", 4)):
        if med[path] > target * med["ws"]:
            print(f"target missed: {path} is {med[path] / med['ws']:.2f}× the WebSocket host path (target {target}×)")
PY
