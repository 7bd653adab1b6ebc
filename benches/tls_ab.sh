#!/usr/bin/env bash
# Two tether binaries side by side over wss, in one run: idle memory per
# connection (5,000), echo (32 B and 16 KiB) and a host broadcast to 1,000,
# each binary twice, interleaved (server on CPU 0, the load tool on CPU 1).
# Plain ws idle memory of the second binary at the end, for reference.
#   bash benches/tls_ab.sh BEFORE_BIN AFTER_BIN
# (README, Performance, TLS: the figures of issue 16). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
B=$1 A=$2
cargo build --release --quiet --manifest-path benches/load/Cargo.toml
LOAD=$PWD/benches/load/target/release/tether-load
W=$(mktemp -d /tmp/tether-tls-ab.XXXXXX)
PORT=29420
export JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat >"$W/tether.json" <<J
{
  "server": {"websocket": {"host": "127.0.0.1", "port": $PORT, "auth": {"allowed_ip": "127.0.0.0/8"}, "tls": {"cert": "$W/tls-cert.pem", "key": "$W/tls-key.pem"}},
             "health": {"host": "127.0.0.1", "port": $((PORT + 50))}},
  "limits": {"max_connections": 19000, "max_connections_per_ip": 19000,
             "max_connects_per_ip_per_hour": 1000000, "max_messages_per_minute": 1000000000,
             "idle_timeout_s": 600, "ping_interval_s": 300},
  "log": {"level": "warn"}
}
J
sed 's|, "tls": {[^}]*}||' "$W/tether.json" > "$W/plain.json"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -addext "basicConstraints=critical,CA:FALSE" \
    -addext "extendedKeyUsage=serverAuth" -keyout "$W/tls-key.pem" -out "$W/tls-cert.pem" 2>/dev/null
SUB=$("$A" token --config "$W/tether.json" --sub bench --permissions 'publish,room:bench_*' --ttl 2h)
HOST=$("$A" token --config "$W/tether.json" --sub host --permissions host --ttl 2h)
PID=
start() { (exec taskset -c 0 "$@") >"$W/server.log" 2>&1 & PID=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0; sleep 0.1; done; cat "$W/server.log"; return 1; }
stop() { [[ -n "$PID" ]] && { kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; }; PID=; sleep 0.5; }
trap 'stop; rm -rf "$W"' EXIT
load() { local tag=$1 scheme=$2; shift 2
  local extra=(); [[ $scheme == wss ]] && extra=(--ca "$W/tls-cert.pem")
  echo "$tag $(taskset -c 1 timeout 240 "$LOAD" "$@" --addr "$scheme://127.0.0.1:$PORT" "${extra[@]}" --pid "$PID" 2>/dev/null || echo FAILED)"; }
for rep in 1 2; do
  for which in before after; do
    bin=$B; [[ $which == after ]] && bin=$A
    start "$bin" echo --config "$W/tether.json"
    load "$which#$rep wss" wss idle --conns 5000 --secs 3
    stop
    start "$bin" echo --config "$W/tether.json"
    load "$which#$rep wss" wss echo --conns 100 --inflight 8 --size 32 --warmup 1 --secs 5
    load "$which#$rep wss" wss echo --conns 10 --inflight 4 --size 16384 --warmup 1 --secs 4
    stop
    start "$bin" serve --config "$W/tether.json"
    load "$which#$rep wss" wss broadcast --tether --conns 1000 --rounds 50 --path "/?token=$SUB" --pub-path "/?token=$HOST"
    stop
  done
done
start "$A" echo --config "$W/plain.json"
load "plain ws" ws idle --conns 5000 --secs 3
stop
