#!/usr/bin/env bash
# permessage-deflate and idle wss memory, tether beside uWebSockets, in one
# run (issue 16, SPEC §12); writes benches/results/compression.md and
# compression.jsonl (compression-rounds.log: every broadcast round).
#
#   bash benches/compression.sh           (about 4 minutes once built)
#   bash benches/compression.sh --quick   (shorter, fewer connections: a smoke run)
#
# 1. Echo of a 2 KB JSON message (benches/compression-2k.json: a snapshot of
#    14 price quotes), 100 connections x 8 in flight, clients without and
#    with permessage-deflate (the load tool's --deflate: the browser's offer,
#    every message sent compressed), against `tether echo` with compression
#    on and uWebSockets with uWS.SHARED_COMPRESSOR (every send asking for
#    it): WebSocket bytes per message each way and server CPU per message.
# 2. Broadcast of the same message to 1,000 subscribers, compression off and
#    on (the subscribers' choice; the servers as in 1): CPU per delivery,
#    and tether's `compressed_messages_total` (from /metrics) beside the
#    rounds, to show each broadcast deflated once.
# 3. Idle memory per connection, 5,000 connections, ws and wss: `tether echo`
#    (rustls, unbuffered) and uWebSockets' App / SSLApp (BoringSSL), with one
#    P-256 certificate made by openssl for the run.
# Each pair runs twice, interleaved; the report takes the mean. Method and
# needs as benches/run.sh (benches/lib.sh): server on CPU 0, load tool on
# CPU 1, loopback only; cargo, node + npm, openssl, curl, python3, taskset.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PORT=39400
P=$((PORT + 1))
QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
if ((QUICK)); then
    ECHO_WARM=0.5 ECHO_SECS=1 ROUNDS=10 IDLE_CONNS=500 IDLE_HOLD=1
else
    ECHO_WARM=1 ECHO_SECS=5 ROUNDS=100 IDLE_CONNS=5000 IDLE_HOLD=3
fi
MSG=$ROOT/benches/compression-2k.json

OUT=$ROOT/benches/results
WORK=$(mktemp -d /tmp/tether-compression.XXXXXX)
mkdir -p "$OUT"
JSONL=$OUT/compression.jsonl
: >"$JSONL"
ROUNDS_LOG=$OUT/compression-rounds.log
: >"$ROUNDS_LOG"
source benches/lib.sh

log "building tether and the load tool"
build_tether_and_load
bench_method
meta_line "\"quick\":$QUICK,"
tether_settings $PORT
sed 's/"auth": {"allowed_ip"/"compression": {"enabled": true, "min_bytes": 256}, &/' \
    "$WORK/tether.json" >"$WORK/tether-deflate.json"
grep -q '"compression"' "$WORK/tether-deflate.json"

# tether's compressed_messages_total, as a JSON line beside the load tool's.
deflated_total() {
    local n
    n=$(curl -s "http://127.0.0.1:$((PORT + 50))/metrics" | awk '$1 == "tether_compressed_messages_total" {print $2}')
    echo "{\"server\":\"tether\",\"scenario\":\"metric\",\"tag\":\"$1\",\"compressed_messages_total\":${n:-null}}" >>"$JSONL"
}

echo_2k() {
    load "$1" "$2" echo --conns 100 --inflight 8 --text-file "$MSG" --warmup "$ECHO_WARM" --secs "$ECHO_SECS" "${@:3}"
}

for rep in 1 2; do
    log "echo, 2 KB JSON, without and with permessage-deflate (round $rep)"
    start_server $PORT "$TETHER" echo --config "$WORK/tether-deflate.json"
    echo_2k tether $PORT
    echo_2k tether $PORT --deflate
    stop_server
    start_server $P node "$ROOT/benches/peers/node/uws.js" $P --shared-compressor
    echo_2k uwebsockets $P
    echo_2k uwebsockets $P --deflate
    stop_server

    log "broadcast of the 2 KB JSON to 1,000, compression off and on (round $rep)"
    start_server $PORT "$TETHER" serve --config "$WORK/tether-deflate.json"
    for d in "" --deflate; do
        deflated_total "before${d:+ deflate}"
        load tether $PORT broadcast --tether --json-data --text-file "$MSG" --conns 1000 --rounds "$ROUNDS" \
            --path "/?token=$SUB_TOKEN" --pub-path "/?token=$HOST_TOKEN" $d
        deflated_total "after${d:+ deflate}"
    done
    stop_server
    start_server $P node "$ROOT/benches/peers/node/uws.js" $P --shared-compressor
    load uwebsockets $P broadcast --text-file "$MSG" --conns 1000 --rounds "$ROUNDS" --path /sub --pub-path /pub
    load uwebsockets $P broadcast --text-file "$MSG" --conns 1000 --rounds "$ROUNDS" --path /sub --pub-path /pub --deflate
    stop_server
done

tls_settings
for rep in 1 2; do
    log "idle connections, ws and wss (round $rep)"
    start_server $PORT "$TETHER" echo --config "$WORK/tether.json"
    load tether-ws $PORT idle --conns "$IDLE_CONNS" --secs "$IDLE_HOLD"
    stop_server
    start_server $PORT "$TETHER" echo --config "$WORK/tether-tls.json"
    tls_on
    load tether-wss $PORT idle --conns "$IDLE_CONNS" --secs "$IDLE_HOLD"
    tls_off
    stop_server
    start_server $P node "$ROOT/benches/peers/node/uws.js" $P
    load uwebsockets-ws $P idle --conns "$IDLE_CONNS" --secs "$IDLE_HOLD"
    stop_server
    start_server $P node "$ROOT/benches/peers/node/uws.js" $P "$WORK/tls-key.pem" "$WORK/tls-cert.pem"
    tls_on
    load uwebsockets-wss $P idle --conns "$IDLE_CONNS" --secs "$IDLE_HOLD"
    tls_off
    stop_server
done

meta_end_line
log "writing benches/results/compression.md"
python3 benches/compression_report.py "$JSONL" "$OUT/compression.md"
log "done: $OUT/compression.md"
