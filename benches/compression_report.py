"""Turns benches/compression.sh's compression.jsonl into compression.md.

Usage: python3 benches/compression_report.py COMPRESSION.jsonl OUT.md
"""

import json
import sys
from pathlib import Path

# tether's bound (issue 16): CPU per broadcast delivery with compression at
# most this many times the uncompressed figure.
BROADCAST_BOUND = 1.2


def load(path):
    lines = [json.loads(text) for text in Path(path).read_text().splitlines() if text.strip()]
    meta = next((r for r in lines if r.get("meta")), {})
    end = next((r for r in lines if r.get("meta_end")), {})
    metrics = [r for r in lines if r.get("scenario") == "metric"]
    rows = {}
    for r in lines:
        if "server" in r and r.get("scenario") != "metric":
            rows.setdefault((r["server"], r["scenario"], bool(r.get("deflate"))), []).append(r)
    return meta, end, rows, metrics


def mean(rows, server, scenario, deflate, field):
    """The mean of `field` over the runs of one pair; None if any failed."""
    runs = rows.get((server, scenario, deflate), [])
    if not runs or any(r.get("error") or r.get("failed") for r in runs):
        return None
    values = [r.get(field) for r in runs]
    if any(v is None for v in values):
        return None
    return sum(values) / len(values)


def fmt(v, spec="{:,.1f}"):
    return "—" if v is None else spec.format(v)


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def times(r):
    return "—" if r is None else f"{r:.2f}×"


def deflated_per_round(metrics, rounds):
    """tether's compressed_messages_total deltas over each broadcast run."""
    out = {False: [], True: []}
    for before, after in zip(metrics[::2], metrics[1::2]):
        a, b = before.get("compressed_messages_total"), after.get("compressed_messages_total")
        if a is not None and b is not None:
            out["deflate" in after.get("tag", "")].append(b - a)
    return out


def main():
    src, dst = sys.argv[1], Path(sys.argv[2])
    meta, end, rows, metrics = load(src)
    servers = ["tether", "uwebsockets"]
    md = ["# permessage-deflate and idle wss memory: tether beside uWebSockets\n"]
    md.append(
        f"Run {meta.get('date', '?')} ({'quick' if meta.get('quick') else 'full'} run, "
        f"`bash benches/compression.sh`) on {meta.get('nproc', '?')} cores ({meta.get('cpu', '?')}); "
        f"load average {meta.get('loadavg_start', '?')} at start, {end.get('loadavg_end', '?')} at end "
        "(the machine is shared; compare the ratios of this one run). Each figure is the mean of "
        "two interleaved runs. Server on CPU 0, load tool on CPU 1; server CPU from "
        "`/proc/PID/stat` (10 ms ticks). tether: the `dist` binary, compression on "
        "(`min_bytes` 256); uWebSockets: npm `uwebsockets` 3.0.6 with `uWS.SHARED_COMPRESSOR`, "
        "every send and publish asking for compression. A client with compression offers "
        "`permessage-deflate; client_max_window_bits` (as browsers do) and sends every "
        "message compressed; one without offers nothing. Bytes are WebSocket bytes "
        "(frame headers and payloads).\n"
    )

    size = next((r[0].get("bytes") for k, r in rows.items() if k[1] == "echo"), None)
    md.append(f"## Echo of a {fmt(size, '{:,}')}-byte JSON message (100 connections × 8 in flight)\n")
    md.append("| server | compression | bytes per message, client → server | server → client | server CPU per message | messages/s | load tool CPU |")
    md.append("|---|---|---:|---:|---:|---:|---:|")
    for s in servers:
        for d in (False, True):
            md.append(
                f"| {s} | {'on' if d else 'off'} | {fmt(mean(rows, s, 'echo', d, 'ws_bytes_out_per_msg'), '{:,.0f}')} "
                f"| {fmt(mean(rows, s, 'echo', d, 'ws_bytes_in_per_msg'), '{:,.0f}')} "
                f"| {fmt(mean(rows, s, 'echo', d, 'server_us_per_msg'), '{:.2f} µs')} "
                f"| {fmt(mean(rows, s, 'echo', d, 'msgs_per_s'), '{:,.0f}')} "
                f"| {fmt(mean(rows, s, 'echo', d, 'load_util'), '{:.2f}')} |"
            )
    md.append("")
    for d in (False, True):
        r = ratio(mean(rows, "tether", "echo", d, "server_us_per_msg"),
                  mean(rows, "uwebsockets", "echo", d, "server_us_per_msg"))
        md.append(f"- tether / uWebSockets, CPU per message, compression {'on' if d else 'off'}: {times(r)}")
    for s in servers:
        r = ratio(mean(rows, s, "echo", True, "server_us_per_msg"), mean(rows, s, "echo", False, "server_us_per_msg"))
        md.append(f"- {s}, CPU per message with compression / without: {times(r)}")
    md.append("")

    md.append(f"## Broadcast of the same message to 1,000 subscribers\n")
    md.append("| server | compression | bytes per delivery | server CPU per delivery | last delivery p50 / p99 | messages received compressed / deliveries in time | incomplete rounds |")
    md.append("|---|---|---:|---:|---:|---:|---:|")
    for s in servers:
        for d in (False, True):
            runs = rows.get((s, "broadcast", d), [])
            compressed = sum(r.get("compressed_in", 0) for r in runs)
            deliveries = sum(r.get("deliveries", 0) for r in runs)
            incomplete = sum(r.get("incomplete_rounds", 0) for r in runs)
            md.append(
                f"| {s} | {'on' if d else 'off'} | {fmt(mean(rows, s, 'broadcast', d, 'ws_bytes_in_per_msg'), '{:,.0f}')} "
                f"| {fmt(mean(rows, s, 'broadcast', d, 'server_us_per_msg'), '{:.2f} µs')} "
                f"| {fmt(mean(rows, s, 'broadcast', d, 'last_p50_us'), '{:,.0f}')} / "
                f"{fmt(mean(rows, s, 'broadcast', d, 'last_p99_us'), '{:,.0f}')} µs "
                f"| {compressed:,} / {deliveries:,} | {incomplete} |"
            )
    md.append("")
    for s in servers:
        r = ratio(mean(rows, s, "broadcast", True, "server_us_per_msg"),
                  mean(rows, s, "broadcast", False, "server_us_per_msg"))
        verdict = ""
        if s == "tether" and r is not None:
            verdict = f" ({'within' if r <= BROADCAST_BOUND else 'OVER'} the {BROADCAST_BOUND}× bound)"
        md.append(f"- {s}, CPU per delivery with compression / without: {times(r)}{verdict}")
    r = ratio(mean(rows, "tether", "broadcast", True, "server_us_per_msg"),
              mean(rows, "uwebsockets", "broadcast", True, "server_us_per_msg"))
    md.append(f"- tether / uWebSockets, CPU per delivery with compression: {times(r)}")
    rounds = [r.get("rounds") for r in rows.get(("tether", "broadcast", True), [])]
    deflated = deflated_per_round(metrics, rounds)
    md.append(
        f"- tether's `compressed_messages_total` rose by {deflated[True]} over the compressed "
        f"broadcast runs of {rounds} rounds to 1,000 (one deflate per broadcast), and by "
        f"{deflated[False]} over the uncompressed ones.\n"
    )

    md.append("## Idle memory per connection (RSS growth / connections)\n")
    conns = next((r[0].get("conns") for k, r in rows.items() if k[1] == "idle"), None)
    md.append(f"{fmt(conns, '{:,}')} connections held open, then each answered one echo.\n")
    md.append("| server | ws | wss | wss / ws |")
    md.append("|---|---:|---:|---:|")
    for s in servers:
        ws = mean(rows, f"{s}-ws", "idle", False, "kib_per_conn")
        wss = mean(rows, f"{s}-wss", "idle", False, "kib_per_conn")
        md.append(f"| {s} | {fmt(ws, '{:.2f} KiB')} | {fmt(wss, '{:.2f} KiB')} | {times(ratio(wss, ws))} |")
    md.append("")
    for scheme in ("ws", "wss"):
        r = ratio(mean(rows, f"tether-{scheme}", "idle", False, "kib_per_conn"),
                  mean(rows, f"uwebsockets-{scheme}", "idle", False, "kib_per_conn"))
        md.append(f"- tether / uWebSockets, idle {scheme}: {times(r)}")
    md.append("")
    dst.write_text("\n".join(md))


if __name__ == "__main__":
    main()
