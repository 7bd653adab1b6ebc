#!/usr/bin/env bash
# Runs Autobahn|Testsuite's fuzzingclient against `tether echo` and fails unless
# every case (but 12.* and 13.*, permessage-deflate, which tether does not offer)
# comes back OK, NON-STRICT or INFORMATIONAL.
# Usage: tests/conformance/run.sh [path/to/tether] [ws|wss]
#   (default: target/release/tether, ws). `wss` runs the same cases over TLS:
#   `tether echo --tls-self-signed` with a certificate generated into a temp
#   state dir (Autobahn's client does not verify certificates).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../../target/release/tether}
scheme=${2:-ws}
case "$scheme" in
  ws) tls_flag=() ;;
  wss) tls_flag=(--tls-self-signed) ;;
  *) echo "unknown scheme $scheme (ws or wss)"; exit 2 ;;
esac
venv=${AUTOBAHN_VENV:-/tmp/tether-autobahn}
work=$(mktemp -d /tmp/tether-conformance.XXXXXX)
"$here/install.sh" "$venv"

STATE_DIRECTORY="$work/state" "$bin" echo --host 127.0.0.1 --port 0 "${tls_flag[@]}" 2> "$work/echo.log" &
echo_pid=$!
trap 'kill $echo_pid 2>/dev/null || true' EXIT
port=""
for _ in $(seq 100); do
  port=$(grep -so "listening on $scheme://127.0.0.1:[0-9]*" "$work/echo.log" | grep -o '[0-9]*$' || true)
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { echo "echo server did not start:"; cat "$work/echo.log"; exit 1; }

cat > "$work/fuzzingclient.json" <<JSON
{
  "outdir": "$work/reports",
  "servers": [{ "agent": "tether", "url": "$scheme://127.0.0.1:$port" }],
  "cases": ["*"],
  "exclude-cases": ["12.*", "13.*"],
  "exclude-agent-cases": {}
}
JSON
(cd "$work" && "$venv/bin/wstest" -m fuzzingclient -s fuzzingclient.json > wstest.log 2>&1) || {
  echo "wstest failed:"; tail -20 "$work/wstest.log"; exit 1; }
kill -0 $echo_pid || { echo "the echo server died during the run"; exit 1; }

python3 - "$work/reports/index.json" "$scheme" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["tether"]
good = {"OK", "NON-STRICT", "INFORMATIONAL"}
bad = {case: r for case, r in results.items() if r["behavior"] not in good}
close_bad = {case: r for case, r in results.items() if r["behaviorClose"] not in good}
counts = {}
for r in results.values():
    counts[r["behavior"]] = counts.get(r["behavior"], 0) + 1
print("autobahn (%s): %d cases: %s" % (sys.argv[2], len(results), ", ".join("%s %d" % kv for kv in sorted(counts.items()))))
for case, r in sorted(bad.items()):
    print("  FAILED case %s: behavior %s, close %s" % (case, r["behavior"], r["behaviorClose"]))
for case, r in sorted(close_bad.items()):
    if case not in bad:
        print("  note: case %s closing behavior %s" % (case, r["behaviorClose"]))
sys.exit(1 if bad or not results else 0)
PY
