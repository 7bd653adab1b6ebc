#!/usr/bin/env bash
# Issue 15's bench (SPEC §11): request/response through a `command` host (a
# program on pipes) and a `url` host (an HTTP backend, kept-alive) beside the
# WebSocket host path, in one run of one gateway: µs of gateway CPU per
# request (utime+stime of /proc/PID/stat over the measured window, divided
# by the answers the clients got) and requests per second, with the same
# clients and payloads for all three (tether-load rpc: 100 clients, 8
# requests in flight each, `{"event":E,"data":0,"requestId":1}`).
#
#   bash benches/bridges.sh           full run: 3 rounds of the three paths, interleaved
#                                     (about 1.5 minutes once built)
#   bash benches/bridges.sh --smoke   the harness only (10 clients, 1 s windows; under 30 s once built)
# TETHER_BIN=PATH uses that tether binary instead of building the release one.
#
# The hosts are cheap so that the gateway is what is measured:
#   WebSocket  the load tool itself (its host connection answers each host.request)
#   command    tether-bridge-peer line (benches/load/src/bin/bridge_peer.rs, Rust, std only)
#   url        tether-bridge-peer http (the same binary: HTTP/1.1, a thread per connection)
# The gateway runs on CPU 0; the load tool and every host on CPU 1 (taskset),
# at nice -19 when allowed. Loopback only. Needs cargo and taskset.
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

WORK=$(mktemp -d /tmp/tether-bridges-bench.XXXXXX)
JSONL=$ROOT/benches/results/bridges.jsonl
[[ $MODE == smoke ]] && JSONL=$WORK/bridges.jsonl
mkdir -p "$(dirname "$JSONL")"
: >"$JSONL"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
log() { printf '== %s\n' "$*" >&2; }

log "building"
if [[ -z "${TETHER_BIN:-}" ]]; then
    cargo build --release --quiet
    TETHER_BIN=$ROOT/target/release/tether
fi
cargo build --release --quiet --manifest-path benches/load/Cargo.toml
LOAD=$ROOT/benches/load/target/release/tether-load
PEER=$ROOT/benches/load/target/release/tether-bridge-peer

NICE=(nice -n -19)
"${NICE[@]}" true 2>/dev/null || NICE=()
echo -19 >/proc/self/autogroup 2>/dev/null || log "warning: cannot renice the autogroup (not root?)"
# nice and taskset exec what they run: a background job's $! is its pid.
on_cpu() { local cpu=$1; shift; "${NICE[@]}" taskset -c "$cpu" "$@"; }
wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    log "nothing listens on $1"; cat "$WORK/tether.log" >&2; return 1
}

JWT_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
export JWT_SECRET
# The program host runs on CPU 1 like the other hosts (taskset execs it).
cat >"$WORK/tether.json" <<EOF
{"server": {"websocket": {"host": "127.0.0.1", "port": $PORT, "auth": {"allowed_ip": "127.0.0.0/8"}},
            "health": {"host": "127.0.0.1", "port": $((PORT + 1))}},
 "limits": {"max_connections": 1000, "max_connections_per_ip": 1000,
            "max_connects_per_ip_per_hour": 1000000, "max_messages_per_minute": 1000000000},
 "log": {"level": "warn"},
 "hosts": [{"name": "bench-cmd", "command": ["taskset", "-c", "1", "$PEER", "line", "rpc.cmd"]},
           {"name": "bench-url", "url": "http://127.0.0.1:$BACKEND_PORT/tether/",
            "events": {"rpc.url": null}, "max_in_flight": $MAX_IN_FLIGHT}]}
EOF
SUB=$("$TETHER_BIN" token --config "$WORK/tether.json" --sub bench --ttl 2h)
HOST=$("$TETHER_BIN" token --config "$WORK/tether.json" --sub host --permissions host --ttl 2h)

"${NICE[@]}" taskset -c 1 "$PEER" http "$BACKEND_PORT" &
PIDS+=($!)
wait_port "$BACKEND_PORT"
"${NICE[@]}" taskset -c 0 "$TETHER_BIN" serve --config "$WORK/tether.json" >"$WORK/tether.log" 2>&1 &
TETHER_PID=$!
PIDS+=("$TETHER_PID")
wait_port "$PORT"
sleep 0.5 # the program host registers its event

echo "{\"meta\":true,\"mode\":\"$MODE\",\"date\":\"$(date -u +%FT%TZ)\",\"loadavg_start\":\"$(cut -d' ' -f1-3 /proc/loadavg)\",\"nproc\":$(nproc),\"tether\":\"$TETHER_BIN\"}" >>"$JSONL"
# One path: the clients' requests to EVENT, answered by PATH's host.
run() {
    local path=$1 event=$2 extra=()
    [[ $path == ws ]] || extra=(--bridged)
    local line
    line=$(on_cpu 1 timeout 120 "$LOAD" rpc --tether "${extra[@]}" --event "$event" --addr "127.0.0.1:$PORT" \
        --pid "$TETHER_PID" --conns "$CONNS" --inflight "$INFLIGHT" --warmup "$WARMUP" --secs "$SECS" \
        --path "/?token=$SUB" --pub-path "/?token=$HOST") || { log "$path: the load tool failed"; return 1; }
    echo "{\"path\":\"$path\",${line:1}" >>"$JSONL"
    echo "   $path: $line" >&2
}
for round in $(seq 1 "$ROUNDS"); do
    log "round $round of $ROUNDS: WebSocket host, command host, url host"
    run ws rpc
    run command rpc.cmd
    run url rpc.url
done
echo "{\"meta\":true,\"loadavg_end\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}" >>"$JSONL"

# The table, and the checks: every path answered, without errors.
python3 - "$JSONL" "$MODE" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
meta = {k: v for r in rows if r.get("meta") for k, v in r.items()}
runs = [r for r in rows if not r.get("meta")]
print(f"bridges bench, {meta['date']}, load average {meta['loadavg_start']} -> {meta['loadavg_end']}, {meta['nproc']} cores")
print("| path | requests/s | gateway µs/request | × WebSocket | p50 µs | p99 µs | errors |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
med = {}
bad = []
for path in ("ws", "command", "url"):
    mine = [r for r in runs if r["path"] == path]
    med[path] = statistics.median(r["server_us_per_msg"] for r in mine)
    rate = statistics.median(r["msgs_per_s"] for r in mine)
    p50 = statistics.median(r["lat_p50_us"] for r in mine)
    p99 = statistics.median(r["lat_p99_us"] for r in mine)
    errors = sum(r["errors"] + r["failed"] for r in mine)
    if errors or any(r["msgs"] == 0 for r in mine):
        bad.append(path)
    ratio = med[path] / med["ws"] if med["ws"] else 0
    print(f"| {path} | {rate:,.0f} | {med[path]:.2f} | {ratio:.2f} | {p50:,} | {p99:,} | {errors} |")
print("(medians of", len([r for r in runs if r["path"] == "ws"]), "runs per path; targets: command ≤ 2×, url ≤ 4×)")
if bad:
    sys.exit(f"bridges bench: no answers or errors on: {', '.join(bad)}")
if sys.argv[2] != "smoke":
    for path, target in (("command", 2), ("url", 4)):
        if med[path] > target * med["ws"]:
            print(f"target missed: {path} is {med[path] / med['ws']:.2f}× the WebSocket host path (target {target}×)")
PY
