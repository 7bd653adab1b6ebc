#!/usr/bin/env bash
# History on vs off (SPEC §10, single node): host.broadcast to one room of
# 1,000 subscribers with rooms.history.size 0 and 100 (twice each), then the
# RSS of a gateway whose 10,000 rooms get 100-byte messages past the 8 MiB
# history budget (benches/history_fill.py). Usage, from the repository root,
# after `cargo build --release` and the load tool's release build:
#   bash benches/history.sh            [ROUNDS=100 FILL_ROUNDS=20 PORT=39731]
set -euo pipefail
cd "$(dirname "$0")/.."
T=target/release/tether
L=benches/load/target/release/tether-load
W=$(mktemp -d /tmp/tether-history.XXXXXX)
PORT=${PORT:-39731}
PID=
cleanup() {
    if [[ -n "$PID" ]]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$W"
}
trap cleanup EXIT
JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export JWT_SECRET
conf() {
    cat >"$W/t.json" <<J
{"server": {"websocket": {"host": "127.0.0.1", "port": $PORT, "auth": {"allowed_ip": "127.0.0.0/8"}},
            "health": {"host": "127.0.0.1", "port": $((PORT + 1))}},
 "limits": {"max_connections": 5000, "max_connections_per_ip": 5000, "max_connects_per_ip_per_hour": 1000000,
            "max_messages_per_minute": 1000000000, "idle_timeout_s": 600, "ping_interval_s": 300},
 "rooms": {"history": {"size": $1}}, "log": {"level": "warn"}}
J
}
serve() { conf "$1"; "$T" serve --config "$W/t.json" 2>"$W/log.$1" & PID=$!; sleep 1; }
stop() { kill "$PID"; wait "$PID" || true; PID=; }
conf 0
SUB=$("$T" token --config "$W/t.json" --sub bench --rooms bench --ttl 2h)
HOST=$("$T" token --config "$W/t.json" --sub host --permissions host --ttl 2h)
for size in 0 100 0 100; do
    serve "$size"
    echo "history.size=$size $("$L" broadcast --tether --room bench --conns 1000 --rounds "${ROUNDS:-100}" \
        --addr "ws://127.0.0.1:$PORT" --pid "$PID" --path "/?token=$SUB" --pub-path "/?token=$HOST")"
    stop
done
serve 100
echo "RSS, history.size 100, max_bytes 8 MiB, 10,000 rooms:"
python3 benches/history_fill.py "$PORT" "$HOST" "$PID" "${FILL_ROUNDS:-20}"
stop
