#!/usr/bin/env bash
# Runs Autobahn|Testsuite's fuzzingclient against `tether echo` and fails unless
# every case comes back OK, NON-STRICT or INFORMATIONAL. The echo server runs
# with permessage-deflate on and min_bytes 0 (settings written below), so the
# 12.* and 13.* cases compress every message. Those 216 cases each echo 1000
# messages one at a time; from 8 KiB up (cases x.6-x.18) that takes minutes per
# case here, on the client's side (Python websockets against itself is as slow),
# so by default only x.1-x.5 (16 B - 4 KiB, all 12 offer variants: 60 cases,
# about 30 s) run, over ws and over wss alike. TETHER_AUTOBAHN_FULL=1 (or the
# older AUTOBAHN_DEFLATE=all) runs all 216 of them (14-20 minutes here) and
# lists the slowest cases.
# Usage: tests/conformance/run.sh [path/to/tether] [ws|wss]
#   (default: target/release/tether, ws). `wss` runs the same cases over TLS:
#   `tether echo --tls-self-signed` with a certificate generated into a temp
#   state dir (Autobahn's client does not verify certificates).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../../target/release/tether}
scheme=${2:-ws}
large_deflate=$(python3 -c 'import json; print(json.dumps(["%d.*.%d" % (g, n) for g in (12, 13) for n in range(6, 19)]))')
full=0
[ "${TETHER_AUTOBAHN_FULL:-}" = 1 ] || [ "${AUTOBAHN_DEFLATE:-}" = all ] && full=1
case "$scheme" in
  ws) tls_flag=(); exclude=$large_deflate ;;
  wss) tls_flag=(--tls-self-signed); exclude=$large_deflate ;;
  *) echo "unknown scheme $scheme (ws or wss)"; exit 2 ;;
esac
[ "$full" = 1 ] && exclude='[]'
venv=${AUTOBAHN_VENV:-/tmp/tether-autobahn}
work=$(mktemp -d /tmp/tether-conformance.XXXXXX)
"$here/install.sh" "$venv"

cat > "$work/settings.json" <<JSON
{ "server": { "websocket": { "compression": { "enabled": true, "min_bytes": 0 } } } }
JSON
STATE_DIRECTORY="$work/state" "$bin" echo --host 127.0.0.1 --port 0 --config "$work/settings.json" \
  "${tls_flag[@]}" 2> "$work/echo.log" &
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
  "exclude-cases": $exclude,
  "exclude-agent-cases": {}
}
JSON
t0=$SECONDS
(cd "$work" && "$venv/bin/wstest" -m fuzzingclient -s fuzzingclient.json > wstest.log 2>&1) || {
  echo "wstest failed:"; tail -20 "$work/wstest.log"; exit 1; }
echo "autobahn ($scheme): the run took $((SECONDS - t0)) s"
kill -0 $echo_pid || { echo "the echo server died during the run"; exit 1; }

python3 - "$work/reports/index.json" "$scheme" "$full" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["tether"]
if sys.argv[3] == "1":
    slowest = sorted(results.items(), key=lambda kv: -kv[1].get("duration", 0))[:5]
    print("autobahn (%s): slowest cases: %s" % (sys.argv[2], ", ".join(
        "%s %.1f s" % (case, r.get("duration", 0) / 1000.0) for case, r in slowest)))
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
