#!/usr/bin/env bash
# Issue 13's bench: tether's cluster (SPEC §9: two nodes over one Redis)
# against Socket.IO 4 with @socket.io/redis-adapter (two nodes over the same
# kind of Redis), side by side in one run; writes benches/results/cluster.md
# and cluster.jsonl.
#
#   bash benches/cluster.sh           full run (about 6 minutes once built)
#   bash benches/cluster.sh --quick   shorter windows, fewer rounds (about 3 minutes)
#   bash benches/cluster.sh --smoke   the harness only (100 subscribers, a few
#                                     rounds and steps; under 30 s once built)
# TETHER_BIN=PATH uses that tether binary instead of building the dist one.
#
# Each part starts its own redis-server on a free loopback port (a temp dir,
# `--save "" --appendonly no`, stopped by PID) and its two nodes on it:
#   broadcast  1,000 and 10,000 subscribers split over the two nodes, the
#              publisher (a tether host sending host.broadcast to the room;
#              a Socket.IO client emitting "pub", which the node sends to the
#              room) on node A: last delivery per round, p50/p99, and CPU per
#              delivery of node A, node B and Redis, each on its own
#   throughput 10 subscribers on node B, the publisher on node A: the rate is
#              raised (x1.5 a step) until a message has not reached every
#              subscriber 250 ms after its step (tether-load throughput)
# and beside them, in the same run, tether on one node (no cluster) and
# Socket.IO on one node (with its adapter) for the same broadcasts, and tether's idle memory per connection with clustering
# off and on. Both systems are driven by the same load tool (benches/load:
# raw WebSocket; its --socketio mode speaks Engine.IO v4 / Socket.IO v5).
#
# Method as benches/run.sh: the servers (both nodes and Redis) pinned to
# CPU 0, the load tool to CPU 1, at nice -19 in an autogroup niced to -19
# (as root); every figure from /proc while the scenario runs; loopback only.
# Needs: cargo, node + npm, redis-server, python3, taskset. Installs
# socket.io, @socket.io/redis-adapter and redis (npm, benches/peers/node).
# A tether without cluster support (settings refuse `cluster`) gets its
# cluster rows marked missing; the rest still runs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=${1:-full}
case "$MODE" in
    full | --full) MODE=full SUBS="1000 10000" B1K_ROUNDS=100 B10K_ROUNDS=30 STEP_SECS=2 IDLE_CONNS=10000 IDLE_HOLD=5 TP_SUBS=10 ;;
    --quick) MODE=quick SUBS="1000 10000" B1K_ROUNDS=40 B10K_ROUNDS=10 STEP_SECS=1 IDLE_CONNS=10000 IDLE_HOLD=2 TP_SUBS=10 ;;
    --smoke) MODE=smoke SUBS=100 B1K_ROUNDS=3 B10K_ROUNDS=0 STEP_SECS=0.3 IDLE_CONNS=100 IDLE_HOLD=0.5 TP_SUBS=2 ;;
    *) echo "usage: bash benches/cluster.sh [--quick|--smoke]" >&2; exit 2 ;;
esac
# The smoke run stops its ramp early: it checks the harness, not the figures.
RATE_MAX=400000
[[ $MODE == smoke ]] && RATE_MAX=2250
LOAD_TIMEOUT=240
# throughput: a message not at every subscriber this long after its step is lost.
DRAIN_MS=250
ROOM=bench_r

OUT=$ROOT/benches/results
WORK=$(mktemp -d /tmp/tether-cluster-bench.XXXXXX)
mkdir -p "$OUT"
JSONL=$OUT/cluster.jsonl
[[ $MODE == smoke ]] && JSONL=$WORK/cluster.jsonl
: >"$JSONL"
# name=pid of every process this script started and has not stopped yet.
PIDS=()

stop_all() {
    local entry
    for entry in "${PIDS[@]}"; do kill "${entry#*=}" 2>/dev/null || true; done
    for entry in "${PIDS[@]}"; do wait "${entry#*=}" 2>/dev/null || true; done
    PIDS=()
}
cleanup() {
    stop_all
    rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '== %s\n' "$*" >&2; }
pid_of() {
    local entry
    for entry in "${PIDS[@]}"; do [[ ${entry%%=*} == "$1" ]] && { echo "${entry#*=}"; return; }; done
    return 1
}

# ---------------------------------------------------------------- build
log "building tether (dist profile, unless TETHER_BIN is given) and the load tool"
TETHER=${TETHER_BIN:-$ROOT/target/dist/tether}
[[ -n ${TETHER_BIN:-} ]] || cargo build --profile dist --quiet
cargo build --release --quiet --manifest-path benches/load/Cargo.toml
LOAD=$ROOT/benches/load/target/release/tether-load
if [[ ! -d benches/peers/node/node_modules/socket.io || ! -d benches/peers/node/node_modules/@socket.io/redis-adapter ]]; then
    log "npm install (socket.io, @socket.io/redis-adapter, redis)"
    (cd benches/peers/node && npm install --no-audit --no-fund --silent)
fi
command -v redis-server >/dev/null || { log "redis-server missing (Debian: apt-get install -y redis-server)"; exit 1; }
SIO_VERSION=$(node -p 'require("./benches/peers/node/node_modules/socket.io/package.json").version')
ADAPTER_VERSION=$(node -p 'require("./benches/peers/node/node_modules/@socket.io/redis-adapter/package.json").version')
REDIS_VERSION=$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')

# ---------------------------------------------------------------- method
if ! echo -19 >/proc/self/autogroup 2>/dev/null; then
    log "warning: cannot renice the autogroup (not root?); figures will be noisier"
fi
NICE=(nice -n -19)
"${NICE[@]}" true 2>/dev/null || NICE=()
on_cpu() { local cpu=$1; shift; exec "${NICE[@]}" taskset -c "$cpu" "$@"; }

# A loopback port nothing listens on now (the kernel's pick, released at once).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Starts NAME on CPU 0 (its log in $WORK/NAME.log) and waits, bounded,
# until PORT accepts.
start() {
    local name=$1 port=$2 pid; shift 2
    (on_cpu 0 "$@") >"$WORK/$name.log" 2>&1 &
    pid=$!
    PIDS+=("$name=$pid")
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    log "$name did not start: $*"
    sed 's/token=[^ "]*/token=JWT/g' "$WORK/$name.log" | tail -5 >&2
    return 1
}

start_redis() {
    REDIS_PORT=$(free_port)
    mkdir -p "$WORK/redis"
    start redis "$REDIS_PORT" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$WORK/redis" --daemonize no --loglevel warning
}

# Runs the load tool on CPU 1 with the PIDs of whatever is up; appends its
# JSON line tagged with SERVER.
load() {
    local server=$1 line pids=(); shift
    pid_of a >/dev/null && pids+=(--pid "$(pid_of a)")
    pid_of b >/dev/null && pids+=(--pid2 "$(pid_of b)")
    pid_of redis >/dev/null && pids+=(--redis-pid "$(pid_of redis)")
    echo "## $server: $*" | sed 's/token=[^ "&]*/token=JWT/g' >>"$WORK/rounds.log"
    if line=$( (on_cpu 1 timeout "$LOAD_TIMEOUT" "$LOAD" "$@" "${pids[@]}") 2>>"$WORK/rounds.log"); then
        echo "{\"server\":\"$server\",${line:1}" >>"$JSONL"
        echo "   $server: ${line:0:240}" >&2
    else
        log "$server: load tool failed: $(tail -1 "$WORK/rounds.log")"
        echo "{\"server\":\"$server\",\"scenario\":\"$1\",\"error\":true}" >>"$JSONL"
    fi
}

echo "{\"meta\":true,\"mode\":\"$MODE\",\"date\":\"$(date -u +%FT%TZ)\",\"loadavg_start\":\"$(cut -d' ' -f1-3 /proc/loadavg)\",\"nproc\":$(nproc),\"cpu\":\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\",\"socketio\":\"$SIO_VERSION\",\"redis_adapter\":\"$ADAPTER_VERSION\",\"redis\":\"$REDIS_VERSION\",\"tp_subs\":$TP_SUBS,\"step_secs\":$STEP_SECS,\"drain_ms\":$DRAIN_MS}" >>"$JSONL"

# ---------------------------------------------------------------- tether
export JWT_SECRET
JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

# Writes $WORK/NAME.json: a node on PORT; with REDIS_URL, in the cluster as NAME.
declare -A HEALTH
# limits.max_outbound_bytes of the nodes (SPEC default 262144).
OUTBOUND=262144
tether_config() {
    local name=$1 port=$2 redis=${3:-} cluster=
    HEALTH[$name]=$(free_port)
    [[ -n $redis ]] && cluster=", \"cluster\": {\"redis\": \"$redis\", \"node\": \"bench-$name\"}"
    cat >"$WORK/$name.json" <<EOF
{
  "server": {"websocket": {"host": "127.0.0.1", "port": $port, "auth": {"allowed_ip": "127.0.0.0/8"}},
             "health": {"host": "127.0.0.1", "port": ${HEALTH[$name]}}},
  "limits": {"max_connections": 19000, "max_connections_per_ip": 19000,
             "max_connects_per_ip_per_hour": 1000000, "max_messages_per_minute": 1000000000,
             "idle_timeout_s": 600, "ping_interval_s": 300, "max_outbound_bytes": $OUTBOUND},
  "log": {"level": "warn"}$cluster
}
EOF
}
tether_config probe "$(free_port)"
SUB_TOKEN=$("$TETHER" token --config "$WORK/probe.json" --sub bench --permissions "publish,room:bench_*" --ttl 2h)
HOST_TOKEN=$("$TETHER" token --config "$WORK/probe.json" --sub host --permissions host --ttl 2h)
SUB="/?token=$SUB_TOKEN"
HOST="/?token=$HOST_TOKEN"
tether_config probe "$(free_port)" "redis://127.0.0.1:1"
TETHER_CLUSTER=1
if ! "$TETHER" check-config --config "$WORK/probe.json" >"$WORK/probe.log" 2>&1; then
    TETHER_CLUSTER=0
    log "this tether has no cluster support (check-config: $(head -1 "$WORK/probe.log")); its cluster rows are left out"
fi

# Redis and tether nodes a and b on it (clustered), or node a alone (single).
tether_up() {
    local kind=$1 pa pb
    pa=$(free_port)
    A_ADDR=127.0.0.1:$pa
    if [[ $kind == single ]]; then
        tether_config a "$pa"
        start a "$pa" "$TETHER" serve --config "$WORK/a.json"
        return
    fi
    start_redis
    tether_config a "$pa" "redis://127.0.0.1:$REDIS_PORT"
    start a "$pa" "$TETHER" serve --config "$WORK/a.json"
    [[ $kind == one-node ]] && return
    pb=$(free_port)
    B_ADDR=127.0.0.1:$pb
    tether_config b "$pb" "redis://127.0.0.1:$REDIS_PORT"
    start b "$pb" "$TETHER" serve --config "$WORK/b.json"
    # Both nodes see each other before the clients come (bounded; SPEC §9's
    # /health "cluster":{"nodes":N}).
    python3 - "${HEALTH[a]}" "${HEALTH[b]}" <<'PY' || log "warning: the nodes did not report 2 nodes in 10 s"
import json, sys, time, urllib.request
deadline = time.time() + 10
while time.time() < deadline:
    try:
        seen = [json.load(urllib.request.urlopen(f"http://127.0.0.1:{p}/health", timeout=1))
                .get("cluster", {}).get("nodes") for p in sys.argv[1:]]
        if all(n == 2 for n in seen):
            sys.exit(0)
    except (OSError, ValueError):
        pass
    time.sleep(0.1)
sys.exit(1)
PY
}

tether_broadcast() {
    local server=$1 subs=$2 rounds=$3; shift 3
    load "$server" broadcast --tether --room "$ROOM" --conns "$subs" --rounds "$rounds" \
        --addr "$A_ADDR" --path "$SUB" --pub-path "$HOST" "$@"
}

log "tether, one node (no cluster): broadcast to the room"
for subs in $SUBS; do
    rounds=$B1K_ROUNDS; ((subs == 10000)) && rounds=$B10K_ROUNDS
    tether_up single
    tether_broadcast tether-single "$subs" "$rounds"
    stop_all
done

if ((TETHER_CLUSTER)); then
    log "tether cluster: two nodes, one Redis"
    for subs in $SUBS; do
        rounds=$B1K_ROUNDS; ((subs == 10000)) && rounds=$B10K_ROUNDS
            tether_up cluster
        tether_broadcast tether-cluster "$subs" "$rounds" --addr2 "$B_ADDR"
        stop_all
    done
    tether_up cluster
    load tether-cluster throughput --tether --room "$ROOM" --conns "$TP_SUBS" --addr "$A_ADDR" --addr2 "$B_ADDR" \
        --path "$SUB" --pub-path "$HOST" --step-secs "$STEP_SECS" --drain-ms "$DRAIN_MS" --rate-max "$RATE_MAX"
    stop_all
    # The same with a 4 MiB outbound queue per client: how much of the rate
    # is the slow-reader limit (a burst read from Redis queued at once).
    if [[ $MODE != smoke ]]; then
        OUTBOUND=4194304
        tether_up cluster
        load tether-cluster-out4m throughput --tether --room "$ROOM" --conns "$TP_SUBS" --addr "$A_ADDR" --addr2 "$B_ADDR" \
            --path "$SUB" --pub-path "$HOST" --step-secs "$STEP_SECS" --drain-ms "$DRAIN_MS" --rate-max "$RATE_MAX"
        stop_all
        OUTBOUND=262144
    fi
fi

log "tether idle memory per connection: clustering off, then on (one node and its Redis)"
tether_up single
load tether-idle-off idle --conns "$IDLE_CONNS" --secs "$IDLE_HOLD" --addr "$A_ADDR" --path "$SUB" --text '{"event":"ping"}'
stop_all
if ((TETHER_CLUSTER)); then
    tether_up one-node
    load tether-idle-on idle --conns "$IDLE_CONNS" --secs "$IDLE_HOLD" --addr "$A_ADDR" --path "$SUB" --text '{"event":"ping"}'
    stop_all
fi

# ---------------------------------------------------------------- Socket.IO
SIO_PATH='/socket.io/?EIO=4&transport=websocket'
# Redis and Socket.IO nodes a and b on it, or (one-node) a alone.
socketio_up() {
    local pa pb
    start_redis
    pa=$(free_port) pb=$(free_port)
    A_ADDR=127.0.0.1:$pa B_ADDR=127.0.0.1:$pb
    start a "$pa" node "$ROOT/benches/peers/node/socketio-cluster.js" "$pa" "$REDIS_PORT"
    [[ ${1:-} == one-node ]] && return
    start b "$pb" node "$ROOT/benches/peers/node/socketio-cluster.js" "$pb" "$REDIS_PORT"
}

log "Socket.IO $SIO_VERSION + @socket.io/redis-adapter $ADAPTER_VERSION: two nodes, one Redis"
for subs in $SUBS; do
    rounds=$B1K_ROUNDS; ((subs == 10000)) && rounds=$B10K_ROUNDS
    socketio_up
    load socketio-cluster broadcast --socketio --conns "$subs" --rounds "$rounds" --addr "$A_ADDR" --addr2 "$B_ADDR" \
        --path "$SIO_PATH" --pub-path "$SIO_PATH&role=pub"
    stop_all
done
log "Socket.IO, one node (its Redis adapter on): broadcast to the room"
for subs in $SUBS; do
    rounds=$B1K_ROUNDS; ((subs == 10000)) && rounds=$B10K_ROUNDS
    socketio_up one-node
    load socketio-single broadcast --socketio --conns "$subs" --rounds "$rounds" --addr "$A_ADDR" \
        --path "$SIO_PATH" --pub-path "$SIO_PATH&role=pub"
    stop_all
done
socketio_up
load socketio-cluster throughput --socketio --conns "$TP_SUBS" --addr "$A_ADDR" --addr2 "$B_ADDR" \
    --path "$SIO_PATH" --pub-path "$SIO_PATH&role=pub" --step-secs "$STEP_SECS" --drain-ms "$DRAIN_MS" --rate-max "$RATE_MAX"
stop_all

echo "{\"meta_end\":true,\"loadavg_end\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}" >>"$JSONL"
if [[ $MODE == smoke ]]; then
    # Every run must have figures: each broadcast round whole, each ramp
    # past its first rate.
    if ! python3 - "$JSONL" <<'PY'; then
import json, sys
bad = []
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "scenario" not in r:
        continue
    if r.get("error") or r.get("incomplete_rounds", 0) or r.get("max_rate", 1) == 0 or r.get("alive", 1) == 0:
        bad.append(f"{r['server']} {r['scenario']}")
if bad:
    sys.exit("smoke: no figures from " + ", ".join(bad))
PY
        sed 's/token=[^ "&]*/token=JWT/g' "$WORK/rounds.log" | tail -20 >&2
        exit 1
    fi
    python3 benches/cluster_report.py "$JSONL" "$WORK"
    log "smoke: harness ok ($(grep -c '"scenario"' "$JSONL") runs)"
    exit 0
fi
cp "$WORK/rounds.log" "$OUT/cluster-rounds.log"
log "writing benches/results/cluster.md"
python3 benches/cluster_report.py "$JSONL" "$OUT"
log "done: $OUT/cluster.md"
