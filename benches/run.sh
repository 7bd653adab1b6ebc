#!/usr/bin/env bash
# Benchmarks tether against peer WebSocket servers, side by side in one run,
# and writes benches/results/results.md, results.jsonl, chart.png, and
# rounds.log (every broadcast round's first and last delivery, for outliers).
# The TLS part runs echo, broadcast to 1,000 and new connections per second
# over wss:// against tether and uWebSockets' SSLApp, beside the plain ws
# figures of the same run (a P-256 certificate made with openssl per run).
#
#   bash benches/run.sh           full run (about 7 minutes once built)
#   bash benches/run.sh --quick   shorter windows and fewer rounds (about 3.5 minutes)
#
# Method (2-core machine): each server is pinned to CPU 0 and the load tool
# to CPU 1, both at nice -19 in an autogroup niced to -19; every figure is
# taken from /proc while the scenario runs. Only loopback is used (source
# addresses 127.0.0.2-9 for the clients). Needs: cargo, openssl, node + npm, python3
# (with venv on Debian), taskset; installs `uwebsockets` and `ws` (npm, in
# benches/peers/node) and `websockets` and `matplotlib` (pip, in a venv
# unless the system Python has them) itself. Run as root for nice -19.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1

if ((QUICK)); then
    ECHO_WARM=1 ECHO_SECS=3 IDLE_CONNS=10000 IDLE_HOLD=3 B1K_ROUNDS=30 B10K_ROUNDS=8 HS_SECS=3
else
    ECHO_WARM=2 ECHO_SECS=8 IDLE_CONNS=10000 IDLE_HOLD=10 B1K_ROUNDS=100 B10K_ROUNDS=30 HS_SECS=5
fi
# handshakes: connection attempts in parallel (each closed once upgraded).
HS_CONNS=32
PORT=39200

OUT=$ROOT/benches/results
WORK=$(mktemp -d /tmp/tether-bench.XXXXXX)
mkdir -p "$OUT"
JSONL=$OUT/results.jsonl
: >"$JSONL"
ROUNDS_LOG=$OUT/rounds.log
: >"$ROUNDS_LOG"
source benches/lib.sh

# ---------------------------------------------------------------- build
log "building tether, the load tool and the Rust peers"
build_tether_and_load
cargo build --release --quiet --manifest-path benches/peers/Cargo.toml
PEERS=$ROOT/benches/peers/target/release
# Python: the peer needs websockets >= 14 (websockets.asyncio.server), the
# report matplotlib; from the system if it has them, else from a venv.
PY=python3
if ! python3 -c 'from websockets.asyncio.server import broadcast, serve; import matplotlib' 2>/dev/null; then
    VENV=${BENCH_VENV:-/tmp/tether-bench-venv}
    if [[ ! -x "$VENV/bin/python3" ]]; then
        python3 -m venv "$VENV" || { log "python3 -m venv failed (Debian: apt-get install -y python3-venv)"; exit 1; }
    fi
    if ! "$VENV/bin/python3" -c 'from websockets.asyncio.server import broadcast, serve; import matplotlib' 2>/dev/null; then
        log "pip install websockets matplotlib (into $VENV)"
        "$VENV/bin/python3" -m pip install --quiet 'websockets>=14' matplotlib
    fi
    PY=$VENV/bin/python3
fi

# ---------------------------------------------------------------- method
bench_method

# The standard scenarios against an echo/broadcast server (paths / /sub /pub).
peer_scenarios() {
    local name=$1 port=$2
    load "$name" "$port" idle --conns "$IDLE_CONNS" --secs "$IDLE_HOLD"
    load "$name" "$port" echo --conns 100 --inflight 8 --size 32 --warmup "$ECHO_WARM" --secs "$ECHO_SECS"
    load "$name" "$port" broadcast --conns 1000 --rounds "$B1K_ROUNDS" --path /sub --pub-path /pub
    load "$name" "$port" broadcast --conns 10000 --rounds "$B10K_ROUNDS" --path /sub --pub-path /pub
}

meta_line "\"quick\":$QUICK,"

# ---------------------------------------------------------------- tether
tether_settings $PORT

log "tether echo (tether echo: WebSocket layer only)"
start_server $PORT "$TETHER" echo --config "$WORK/tether.json"
peer_scenarios_tether_echo() {
    load tether $PORT idle --conns "$IDLE_CONNS" --secs "$IDLE_HOLD"
    load tether $PORT echo --conns 100 --inflight 8 --size 32 --warmup "$ECHO_WARM" --secs "$ECHO_SECS"
}
peer_scenarios_tether_echo
stop_server

log "tether serve (the gateway: JWT auth, JSON envelope, rooms, host link)"
start_server $PORT "$TETHER" serve --config "$WORK/tether.json"
load tether-gateway $PORT idle --conns "$IDLE_CONNS" --secs "$IDLE_HOLD" --path "/?token=$SUB_TOKEN" --text '{"event":"ping"}'
load tether $PORT broadcast --tether --conns 1000 --rounds "$B1K_ROUNDS" --path "/?token=$SUB_TOKEN" --pub-path "/?token=$HOST_TOKEN"
load tether $PORT broadcast --tether --conns 10000 --rounds "$B10K_ROUNDS" --path "/?token=$SUB_TOKEN" --pub-path "/?token=$HOST_TOKEN"
load tether-gateway $PORT echo --conns 100 --inflight 8 --warmup "$ECHO_WARM" --secs "$ECHO_SECS" --path "/?token=$SUB_TOKEN" \
    --text '{"event":"publish","data":{"room":"bench_x","event":"e","data":"xxxxxxxxxxxxxxxx"},"requestId":1}'
load tether-gateway $PORT rpc --tether --conns 100 --inflight 8 --warmup "$ECHO_WARM" --secs "$ECHO_SECS" --path "/?token=$SUB_TOKEN" --pub-path "/?token=$HOST_TOKEN"
stop_server

# The same two gateway scenarios with the flat "action" dialect of seed 004
# (server.websocket.envelope; issue 17's bound: at most 1.2x the CPU per message).
sed 's/"auth": {"allowed_ip"/"envelope": "action", "auth": {"allowed_ip"/' "$WORK/tether.json" >"$WORK/tether-action.json"
log "tether serve with \"envelope\": \"action\""
start_server $PORT "$TETHER" serve --config "$WORK/tether-action.json"
load tether-gateway-action $PORT echo --conns 100 --inflight 8 --warmup "$ECHO_WARM" --secs "$ECHO_SECS" --path "/?token=$SUB_TOKEN" \
    --text '{"action":"publish","room":"bench_x","event":"e","data":"xxxxxxxxxxxxxxxx","requestId":1}'
load tether-gateway-action $PORT rpc --tether --envelope action --conns 100 --inflight 8 --warmup "$ECHO_WARM" --secs "$ECHO_SECS" --path "/?token=$SUB_TOKEN" --pub-path "/?token=$HOST_TOKEN"
stop_server

# ---------------------------------------------------------------- peers
P=$((PORT + 1))
log "uWebSockets (npm uwebsockets 3.0.6)"
start_server $P node "$ROOT/benches/peers/node/uws.js" $P
peer_scenarios uwebsockets $P
stop_server

log "Node ws 8"
start_server $P node "$ROOT/benches/peers/node/ws.js" $P
peer_scenarios node-ws $P
stop_server

log "fastwebsockets (tokio current-thread)"
start_server $P "$PEERS/peer-fastwebsockets" $P
peer_scenarios fastwebsockets $P
stop_server

log "tokio-tungstenite (tokio current-thread, default config)"
start_server $P "$PEERS/peer-tokio-tungstenite" $P
peer_scenarios tokio-tungstenite $P
stop_server

log "Python websockets (asyncio, compression=None)"
start_server $P "$PY" "$ROOT/benches/peers/python/peer.py" $P
peer_scenarios python-websockets $P
stop_server

log "repeat: tether and uWebSockets, echo and broadcast to 1,000 once more (run-to-run noise)"
start_server $PORT "$TETHER" echo --config "$WORK/tether.json"
load 'tether#2' $PORT echo --conns 100 --inflight 8 --size 32 --warmup "$ECHO_WARM" --secs "$ECHO_SECS"
stop_server
start_server $PORT "$TETHER" serve --config "$WORK/tether.json"
load 'tether#2' $PORT broadcast --tether --conns 1000 --rounds "$B1K_ROUNDS" --path "/?token=$SUB_TOKEN" --pub-path "/?token=$HOST_TOKEN"
stop_server
start_server $P node "$ROOT/benches/peers/node/uws.js" $P
load 'uwebsockets#2' $P echo --conns 100 --inflight 8 --size 32 --warmup "$ECHO_WARM" --secs "$ECHO_SECS"
load 'uwebsockets#2' $P broadcast --conns 1000 --rounds "$B1K_ROUNDS" --path /sub --pub-path /pub
stop_server

# ---------------------------------------------------------------- TLS
# wss against tether (rustls, ring) and uWebSockets (SSLApp, its BoringSSL),
# the same certificate for both, each wss figure beside its ws pair:
# echo (100 conns, 32 B, 8 in flight), broadcast to 1,000 and new
# connections per second (handshakes, 32 attempts in parallel).
tls_settings
hs() { load "$1" "$2" handshakes --conns "$HS_CONNS" --warmup 1 --secs "$HS_SECS"; }

# Each pair runs back to back, twice (ws, wss, ws, wss), so that the ratio
# compares neighbours in time on this shared machine; the report averages
# the two of each.
tls_pairs() {
    local rep=$1
    log "TLS: tether echo, ws then wss${rep:+ (again)}"
    start_server $PORT "$TETHER" echo --config "$WORK/tether.json"
    load "tether-ws$rep" $PORT echo --conns 100 --inflight 8 --size 32 --warmup "$ECHO_WARM" --secs "$ECHO_SECS"
    hs "tether-ws$rep" $PORT
    stop_server
    start_server $PORT "$TETHER" echo --config "$WORK/tether-tls.json"
    tls_on
    load "tether-wss$rep" $PORT echo --conns 100 --inflight 8 --size 32 --warmup "$ECHO_WARM" --secs "$ECHO_SECS"
    hs "tether-wss$rep" $PORT
    tls_off
    stop_server
    log "TLS: tether serve, host broadcast to 1,000, ws then wss"
    start_server $PORT "$TETHER" serve --config "$WORK/tether.json"
    load "tether-ws$rep" $PORT broadcast --tether --conns 1000 --rounds "$B1K_ROUNDS" --path "/?token=$SUB_TOKEN" --pub-path "/?token=$HOST_TOKEN"
    stop_server
    start_server $PORT "$TETHER" serve --config "$WORK/tether-tls.json"
    tls_on
    load "tether-wss$rep" $PORT broadcast --tether --conns 1000 --rounds "$B1K_ROUNDS" --path "/?token=$SUB_TOKEN" --pub-path "/?token=$HOST_TOKEN"
    tls_off
    stop_server
    log "TLS: uWebSockets, App then SSLApp"
    start_server $P node "$ROOT/benches/peers/node/uws.js" $P
    load "uwebsockets-ws$rep" $P echo --conns 100 --inflight 8 --size 32 --warmup "$ECHO_WARM" --secs "$ECHO_SECS"
    load "uwebsockets-ws$rep" $P broadcast --conns 1000 --rounds "$B1K_ROUNDS" --path /sub --pub-path /pub
    hs "uwebsockets-ws$rep" $P
    stop_server
    start_server $P node "$ROOT/benches/peers/node/uws.js" $P "$WORK/tls-key.pem" "$WORK/tls-cert.pem"
    tls_on
    load "uwebsockets-wss$rep" $P echo --conns 100 --inflight 8 --size 32 --warmup "$ECHO_WARM" --secs "$ECHO_SECS"
    load "uwebsockets-wss$rep" $P broadcast --conns 1000 --rounds "$B1K_ROUNDS" --path /sub --pub-path /pub
    hs "uwebsockets-wss$rep" $P
    tls_off
    stop_server
}
tls_pairs ""
tls_pairs "#2"

meta_end_line

log "writing benches/results/results.md and chart.png"
"$PY" benches/report.py "$JSONL" "$OUT"
log "done: $OUT/results.md"
