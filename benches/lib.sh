# Shared by benches/run.sh and benches/compression.sh (sourced, not run):
# building, the method (server on CPU 0, load tool on CPU 1, both at
# nice -19 in an autogroup niced to -19), starting and stopping a server,
# the load tool's JSON lines, tether's bench settings and a certificate.
# The caller sets ROOT (the checkout), WORK (a temp dir), JSONL and
# ROUNDS_LOG (where the load tool's lines and traces go).

SERVER_PID=
# wss runs set these: the load tool's address scheme and its extra options.
SCHEME=
LOAD_TLS=()
LOAD_TIMEOUT=${LOAD_TIMEOUT:-240}

cleanup() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '== %s\n' "$*" >&2; }

# tether (dist profile: the shipped binary's figures), the load tool, and
# the Node peers (npm, in benches/peers/node) when missing.
build_tether_and_load() {
    # tether's figures are those of the shipped binary: the dist profile (fat LTO).
    cargo build --profile dist --quiet
    cargo build --release --quiet --manifest-path benches/load/Cargo.toml
    TETHER=$ROOT/target/dist/tether
    LOAD=$ROOT/benches/load/target/release/tether-load
    if [[ ! -d benches/peers/node/node_modules/uwebsockets || ! -d benches/peers/node/node_modules/ws ]]; then
        log "npm install (uwebsockets, ws)"
        (cd benches/peers/node && npm install --no-audit --no-fund --silent)
    fi
}

# Raises the priority of this session's autogroup (the machine is shared).
bench_method() {
    if ! echo -19 >/proc/self/autogroup 2>/dev/null; then
        log "warning: cannot renice the autogroup (not root?); figures will be noisier"
    fi
    NICE=(nice -n -19)
    "${NICE[@]}" true 2>/dev/null || NICE=()
}
on_cpu() { local cpu=$1; shift; exec "${NICE[@]}" taskset -c "$cpu" "$@"; }

# Starts a server pinned to CPU 0 and waits until its port accepts.
start_server() {
    local port=$1; shift
    (on_cpu 0 "$@") >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    log "server did not start: $*"; cat "$WORK/server.log" >&2
    return 1
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
    sleep 0.5
}

# Runs the load tool pinned to CPU 1; appends its JSON line tagged with the server.
load() {
    local server=$1 port=$2; shift 2
    local line
    echo "## $server: $*" | sed 's/token=[^ "]*/token=JWT/g' >>"$ROUNDS_LOG"
    if line=$( (TETHER_LOAD_TRACE=1 on_cpu 1 timeout "$LOAD_TIMEOUT" "$LOAD" "$@" --addr "${SCHEME}127.0.0.1:$port" "${LOAD_TLS[@]}" --pid "$SERVER_PID") 2>>"$ROUNDS_LOG"); then
        echo "{\"server\":\"$server\",${line:1}" >>"$JSONL"
        echo "   $server: $line" >&2
    else
        log "$server: load tool failed: $(tail -1 "$ROUNDS_LOG")"
        echo "{\"server\":\"$server\",\"scenario\":\"$1\",\"error\":true}" >>"$JSONL"
    fi
}

# The run's first JSON line: when, the load average, the machine.
meta_line() {
    echo "{\"meta\":true,$1\"date\":\"$(date -u +%FT%TZ)\",\"loadavg_start\":\"$(cut -d' ' -f1-3 /proc/loadavg)\",\"nproc\":$(nproc),\"cpu\":\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\"}" >>"$JSONL"
}
meta_end_line() {
    echo "{\"meta_end\":true,\"loadavg_end\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}" >>"$JSONL"
}

# tether's bench settings on PORT (health on PORT + 50) in $WORK/tether.json,
# a JWT secret, and a subscriber's and a host's token.
tether_settings() {
    local port=$1
    export JWT_SECRET
    JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    cat >"$WORK/tether.json" <<JSON
{
  "server": {"websocket": {"host": "127.0.0.1", "port": $port, "auth": {"allowed_ip": "127.0.0.0/8"}},
             "health": {"host": "127.0.0.1", "port": $((port + 50))}},
  "limits": {"max_connections": 19000, "max_connections_per_ip": 19000,
             "max_connects_per_ip_per_hour": 1000000, "max_messages_per_minute": 1000000000,
             "idle_timeout_s": 600, "ping_interval_s": 300},
  "log": {"level": "warn"}
}
JSON
    SUB_TOKEN=$("$TETHER" token --config "$WORK/tether.json" --sub bench --permissions 'publish,room:bench_*' --ttl 2h)
    HOST_TOKEN=$("$TETHER" token --config "$WORK/tether.json" --sub host --permissions host --ttl 2h)
}

# A P-256 certificate for 127.0.0.1 ($WORK/tls-cert.pem, tls-key.pem) and
# $WORK/tether-tls.json: the bench settings with it.
tls_settings() {
    log "TLS: a P-256 certificate for 127.0.0.1 (openssl, in $WORK)"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
        -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -addext "basicConstraints=critical,CA:FALSE" \
        -addext "extendedKeyUsage=serverAuth" -keyout "$WORK/tls-key.pem" -out "$WORK/tls-cert.pem" 2>/dev/null
    sed 's|"auth": {"allowed_ip": "127.0.0.0/8"}|&, "tls": {"cert": "'"$WORK"'/tls-cert.pem", "key": "'"$WORK"'/tls-key.pem"}|' \
        "$WORK/tether.json" >"$WORK/tether-tls.json"
    grep -q '"tls"' "$WORK/tether-tls.json"
}
tls_on() { SCHEME=wss:// LOAD_TLS=(--ca "$WORK/tls-cert.pem"); }
tls_off() { SCHEME= LOAD_TLS=(); }
