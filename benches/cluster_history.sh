#!/usr/bin/env bash
# History in a cluster (SPEC §10, issue 14): cross-node publish throughput
# with rooms.history.size 0 and 100 (alternating, twice each). Each run starts
# its own redis-server on a free loopback port and two nodes on it; 10
# subscribers on node B, a host on node A sending host.broadcast to the room
# at rising rates (x1.5 a step) until a message has not reached every
# subscriber 250 ms after its step (tether-load throughput). With history on
# every message goes through the publish script (offset, XADD, EXPIRE,
# PUBLISH) instead of a plain PUBLISH. Usage, from the repository root, after
# `cargo build --release` and the load tool's release build:
#   bash benches/cluster_history.sh    [SUBS=10 STEP_SECS=1 RATE_MAX=400000]
set -euo pipefail
cd "$(dirname "$0")/.."
T=target/release/tether
L=benches/load/target/release/tether-load
command -v redis-server >/dev/null || { echo "redis-server missing (apt-get install -y redis-server)" >&2; exit 1; }
W=$(mktemp -d /tmp/tether-cluster-history.XXXXXX)
PIDS=()
stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
cleanup() { stop_all; rm -rf "$W"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $1" >&2
    return 1
}
JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export JWT_SECRET
# Writes $W/NAME.json: node NAME on PORT in the cluster on REDIS_PORT, history SIZE.
conf() {
    local name=$1 port=$2 size=$3
    cat >"$W/$name.json" <<J
{"server": {"websocket": {"host": "127.0.0.1", "port": $port, "auth": {"allowed_ip": "127.0.0.0/8"}},
            "health": {"host": "127.0.0.1", "port": $(free_port)}},
 "limits": {"max_connections": 5000, "max_connections_per_ip": 5000, "max_connects_per_ip_per_hour": 1000000,
            "max_messages_per_minute": 1000000000, "idle_timeout_s": 600, "ping_interval_s": 300},
 "cluster": {"redis": "redis://127.0.0.1:${REDIS_PORT:-1}", "node": "bench-$name"},
 "rooms": {"history": {"size": $size}}, "log": {"level": "warn"}}
J
}
conf probe "$(free_port)" 0
SUB=$("$T" token --config "$W/probe.json" --sub bench --permissions "room:bench_*" --ttl 2h)
HOST=$("$T" token --config "$W/probe.json" --sub host --permissions host --ttl 2h)
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for size in 0 100 0 100; do
    REDIS_PORT=$(free_port)
    mkdir -p "$W/redis"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$W/redis" \
        --loglevel warning >"$W/redis.log" 2>&1 &
    PIDS+=($!)
    REDIS_PID=$!
    wait_port "$REDIS_PORT"
    PA=$(free_port) PB=$(free_port)
    conf a "$PA" "$size"
    conf b "$PB" "$size"
    "$T" serve --config "$W/a.json" 2>"$W/a.log" & PIDS+=($!); A_PID=$!
    "$T" serve --config "$W/b.json" 2>"$W/b.log" & PIDS+=($!); B_PID=$!
    wait_port "$PA"
    wait_port "$PB"
    sleep 1
    echo "history.size=$size $("$L" throughput --tether --room bench_r --conns "${SUBS:-10}" \
        --addr "127.0.0.1:$PA" --addr2 "127.0.0.1:$PB" --path "/?token=$SUB" --pub-path "/?token=$HOST" \
        --step-secs "${STEP_SECS:-1}" --drain-ms 250 --rate-max "${RATE_MAX:-400000}" \
        --pid "$A_PID" --pid2 "$B_PID" --redis-pid "$REDIS_PID")"
    stop_all
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
