#!/usr/bin/env bash
# Smoke test of tether-load's wss:// mode against tether echo with TLS:
# echo and handshakes must complete with the right CA, and be refused with
# a certificate the server does not have; --deflate echoes must all come
# back compressed (tether echo with compression on). Usage (from the repository root):
#   bash benches/load/smoke.sh [TETHER_BIN] [LOAD_BIN]
# Needs openssl. Uses 127.0.0.1:39461 (and 39462 for tether's health port).
set -euo pipefail
cd "$(dirname "$0")/../.."
TETHER=${1:-target/release/tether}
LOAD=${2:-benches/load/target/release/tether-load}
PORT=39461
D=$(mktemp -d /tmp/tether-load-smoke.XXXXXX)
PID=
cleanup() {
    if [[ -n "$PID" ]]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$D"
}
trap cleanup EXIT

cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
        -addext "subjectAltName=IP:127.0.0.1" -addext "basicConstraints=critical,CA:FALSE" \
        -addext "extendedKeyUsage=serverAuth" -keyout "$D/$1-key.pem" -out "$D/$1-cert.pem" 2>/dev/null
}
cert server
cert other
cat >"$D/tether.json" <<EOF
{"server": {"websocket": {"host": "127.0.0.1", "port": $PORT, "auth": {"allowed_ip": "127.0.0.0/8"},
                          "compression": {"enabled": true, "min_bytes": 64},
                          "tls": {"cert": "$D/server-cert.pem", "key": "$D/server-key.pem"}},
            "health": {"host": "127.0.0.1", "port": $((PORT + 1))}},
 "limits": {"max_connects_per_ip_per_hour": 1000000, "max_messages_per_minute": 1000000000},
 "log": {"level": "warn"}}
EOF
JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n') \
    "$TETHER" echo --config "$D/tether.json" >"$D/tether.log" 2>&1 &
PID=$!
for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done

fail() { echo "smoke: $*" >&2; cat "$D/tether.log" >&2; exit 1; }
field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }

out=$("$LOAD" echo --addr "wss://127.0.0.1:$PORT" --ca "$D/server-cert.pem" --conns 10 --warmup 0.2 --secs 1)
echo "$out"
[[ $(field msgs <<<"$out") -gt 0 && $(field failed <<<"$out") -eq 0 ]] || fail "wss echo: no echoes"
grep -q '"tls":true' <<<"$out" || fail "wss echo: not over TLS"

out=$("$LOAD" handshakes --addr "wss://127.0.0.1:$PORT" --ca "$D/server-cert.pem" --conns 4 --warmup 0.2 --secs 1)
echo "$out"
[[ $(field handshakes <<<"$out") -gt 0 ]] || fail "wss handshakes: none completed"

out=$("$LOAD" echo --addr "wss://127.0.0.1:$PORT" --ca "$D/server-cert.pem" --conns 4 --warmup 0.2 --secs 1 \
    --text-file benches/compression-2k.json --deflate)
echo "$out"
msgs=$(field msgs <<<"$out")
[[ $msgs -gt 0 && $(field compressed_in <<<"$out") -eq $msgs ]] || fail "--deflate echo: not all compressed"
[[ $(field ws_bytes_in_per_msg <<<"$out" | cut -d. -f1) -lt 1000 ]] || fail "--deflate echo: 2 KB JSON not smaller"

if "$LOAD" echo --addr "wss://127.0.0.1:$PORT" --ca "$D/other-cert.pem" --conns 2 --secs 1 2>"$D/refused.log"; then
    fail "a certificate outside --ca was accepted"
fi
grep -q "invalid peer certificate" "$D/refused.log" || fail "wrong CA: $(cat "$D/refused.log")"
echo "smoke: wss echo, handshakes, certificate refusal and --deflate ok"
