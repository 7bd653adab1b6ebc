"""Turns benches/run.sh's results.jsonl into results.md and chart.png.

Usage: python3 benches/report.py RESULTS.jsonl OUT_DIR
"""

import json
import sys
from pathlib import Path

SERVERS = ["tether", "uwebsockets", "node-ws", "fastwebsockets", "tokio-tungstenite", "python-websockets"]


def load(path):
    meta, end, rows = {}, {}, {}
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        if r.get("meta"):
            meta = r
        elif r.get("meta_end"):
            end = r
        else:
            key = r["scenario"]
            if key == "broadcast" and "subs" in r:
                key = f"broadcast{r['subs']}"
            rows[(r["server"], key)] = r
    return meta, end, rows


def get(rows, server, scenario, field):
    r = rows.get((server, scenario))
    if r is None or r.get("error"):
        return None
    return r.get(field)


def fmt(v, spec="{:,.0f}"):
    return "—" if v is None else spec.format(v)


def times(r):
    """A ratio with two decimals, or two significant digits when tiny."""
    if r is None:
        return "—"
    return f"{r:.2f}×" if r >= 0.1 else f"{r:.2g}×"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def main():
    src, out = sys.argv[1], Path(sys.argv[2])
    meta, end, rows = load(src)
    md = []
    md.append("# Benchmark results\n")
    md.append(
        f"Run {meta.get('date', '?')} ({'quick' if meta.get('quick') else 'full'} run) on "
        f"{meta.get('nproc', '?')} cores ({meta.get('cpu', '?')}); load average "
        f"{meta.get('loadavg_start', '?')} at start, {end.get('loadavg_end', '?')} at end "
        "(the machine is shared: other jobs run at the same time, so figures are noisy; "
        "compare the ratios, which come from this one run).\n"
    )
    md.append(
        "Each server runs pinned to CPU 0, the load tool (`benches/load`, one thread, raw "
        "pre-masked frames) to CPU 1, both at nice -19 in an autogroup niced to -19. "
        "Server CPU is read from `/proc/PID/stat` over the measured window (10 ms ticks). "
        "Reproduce with `bash benches/run.sh` (or `--quick`).\n"
    )

    md.append("## Figures\n")
    md.append(
        "| server | idle KiB/conn (10k) | echo msg/s | echo µs CPU/msg | load tool µs CPU/msg | echo p99 ms | "
        "bcast 1k last p50 ms | bcast 1k last p99 ms | bcast 1k µs CPU/delivery | bcast 10k last p50 ms | bcast 10k last p99 ms | bcast 10k µs CPU/delivery | load tool max util |"
    )
    md.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in SERVERS:
        utils = [get(rows, s, sc, "load_util") for sc in ("echo", "broadcast1000", "broadcast10000")]
        utils = [u for u in utils if u is not None]
        md.append(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                s,
                fmt(get(rows, s, "idle", "kib_per_conn"), "{:.2f}"),
                fmt(get(rows, s, "echo", "msgs_per_s")),
                fmt(get(rows, s, "echo", "server_us_per_msg"), "{:.2f}"),
                fmt(get(rows, s, "echo", "load_us_per_msg"), "{:.2f}"),
                fmt(None if get(rows, s, "echo", "lat_p99_us") is None else get(rows, s, "echo", "lat_p99_us") / 1000, "{:.2f}"),
                fmt(None if get(rows, s, "broadcast1000", "last_p50_us") is None else get(rows, s, "broadcast1000", "last_p50_us") / 1000, "{:.2f}"),
                fmt(None if get(rows, s, "broadcast1000", "last_p99_us") is None else get(rows, s, "broadcast1000", "last_p99_us") / 1000, "{:.2f}"),
                fmt(get(rows, s, "broadcast1000", "server_us_per_msg"), "{:.2f}"),
                fmt(None if get(rows, s, "broadcast10000", "last_p50_us") is None else get(rows, s, "broadcast10000", "last_p50_us") / 1000, "{:.1f}"),
                fmt(None if get(rows, s, "broadcast10000", "last_p99_us") is None else get(rows, s, "broadcast10000", "last_p99_us") / 1000, "{:.1f}"),
                fmt(get(rows, s, "broadcast10000", "server_us_per_msg"), "{:.2f}"),
                fmt(max(utils) if utils else None, "{:.2f}"),
            )
        )
    md.append("")
    md.append(
        "\"load tool max util\" is the load tool's CPU use over the wall time of the busiest "
        "scenario: below 0.95 it was not saturated (it waited on the server). The load tool "
        "spends less CPU per message than the server it measures when its µs/msg is below the server's.\n"
    )
    alive = []
    for s in SERVERS + ["tether-gateway"]:
        a = get(rows, s, "idle", "alive")
        if a is not None:
            alive.append(f"{s} {a}/{get(rows, s, 'idle', 'conns')}")
    md.append("Idle connections answering after the hold: " + ", ".join(alive) + ".\n")
    incomplete = [
        f"{s} {sc}: {get(rows, s, sc, 'incomplete_rounds')}"
        for s in SERVERS
        for sc in ("broadcast1000", "broadcast10000")
        if get(rows, s, sc, "incomplete_rounds")
    ]
    if incomplete:
        md.append("Broadcast rounds not fully delivered within 2 s: " + ", ".join(incomplete) + ".\n")

    md.append("## Run-to-run noise\n")
    md.append(
        "tether and uWebSockets ran echo and broadcast-to-1,000 a second time at the end of the "
        "run (fresh server processes); the spread between the two is the noise to expect.\n"
    )
    md.append("| server | figure | first | second | difference |")
    md.append("|---|---|---:|---:|---:|")
    for s in ("tether", "uwebsockets"):
        for sc, f, label, div, spec in (
            ("echo", "msgs_per_s", "echo msg/s", 1, "{:,.0f}"),
            ("echo", "server_us_per_msg", "echo µs CPU/msg", 1, "{:.2f}"),
            ("broadcast1000", "last_p50_us", "bcast 1k last p50 ms", 1000, "{:.2f}"),
            ("broadcast1000", "last_p99_us", "bcast 1k last p99 ms", 1000, "{:.2f}"),
            ("broadcast1000", "server_us_per_msg", "bcast 1k µs CPU/delivery", 1, "{:.2f}"),
        ):
            a, b = get(rows, s, sc, f), get(rows, s + "#2", sc, f)
            d = ratio(b, a)
            md.append(
                f"| {s} | {label} | {fmt(None if a is None else a / div, spec)} | "
                f"{fmt(None if b is None else b / div, spec)} | {fmt(None if d is None else (d - 1) * 100, '{:+.0f} %')} |"
            )
    md.append("")

    md.append("## tether / peer ratios (same run)\n")
    md.append("Above 1 is better for throughput; below 1 is better for memory, CPU and latency.\n")
    md.append("| peer | echo msg/s | echo CPU/msg | idle KiB/conn | bcast 1k last p50 | bcast 1k last p99 | bcast 10k last p50 | bcast 10k last p99 | bcast 10k CPU/delivery |")
    md.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in SERVERS[1:]:
        md.append(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                s,
                *[
                    times(ratio(get(rows, "tether", sc, f), get(rows, s, sc, f)))
                    for sc, f in (
                        ("echo", "msgs_per_s"),
                        ("echo", "server_us_per_msg"),
                        ("idle", "kib_per_conn"),
                        ("broadcast1000", "last_p50_us"),
                        ("broadcast1000", "last_p99_us"),
                        ("broadcast10000", "last_p50_us"),
                        ("broadcast10000", "last_p99_us"),
                        ("broadcast10000", "server_us_per_msg"),
                    )
                ],
            )
        )
    md.append("")

    md.append("## The gateway path (tether serve)\n")
    e = get(rows, "tether", "echo", "server_us_per_msg")
    g = get(rows, "tether-gateway", "echo", "server_us_per_msg")
    r = get(rows, "tether-gateway", "rpc", "server_us_per_msg")
    md.append("| path | msg/s | µs CPU per message | × echo | p99 ms |")
    md.append("|---|---:|---:|---:|---:|")
    md.append(f"| echo (`tether echo`, WebSocket only) | {fmt(get(rows, 'tether', 'echo', 'msgs_per_s'))} | {fmt(e, '{:.2f}')} | 1.00× | {fmt(None if get(rows, 'tether', 'echo', 'lat_p99_us') is None else get(rows, 'tether', 'echo', 'lat_p99_us') / 1000, '{:.2f}')} |")
    md.append(f"| gateway: `publish` with `requestId` → `published` (JWT session, JSON envelope, permission and room check, JSON reply) | {fmt(get(rows, 'tether-gateway', 'echo', 'msgs_per_s'))} | {fmt(g, '{:.2f}')} | {fmt(ratio(g, e), '{:.2f}×')} | {fmt(None if get(rows, 'tether-gateway', 'echo', 'lat_p99_us') is None else get(rows, 'tether-gateway', 'echo', 'lat_p99_us') / 1000, '{:.2f}')} |")
    md.append(f"| request/response through the host (client → gateway → host → gateway → client; per request, 2 frames in and 2 out) | {fmt(get(rows, 'tether-gateway', 'rpc', 'msgs_per_s'))} | {fmt(r, '{:.2f}')} | {fmt(ratio(r, e), '{:.2f}×')} | {fmt(None if get(rows, 'tether-gateway', 'rpc', 'lat_p99_us') is None else get(rows, 'tether-gateway', 'rpc', 'lat_p99_us') / 1000, '{:.2f}')} |")
    ga = get(rows, "tether-gateway-action", "echo", "server_us_per_msg")
    ra = get(rows, "tether-gateway-action", "rpc", "server_us_per_msg")
    md.append(f"| the same `publish`, `\"envelope\": \"action\"` (seed 004's flat dialect) | {fmt(get(rows, 'tether-gateway-action', 'echo', 'msgs_per_s'))} | {fmt(ga, '{:.2f}')} | {fmt(ratio(ga, e), '{:.2f}×')} ({fmt(ratio(ga, g), '{:.2f}×')} the event dialect) | {fmt(None if get(rows, 'tether-gateway-action', 'echo', 'lat_p99_us') is None else get(rows, 'tether-gateway-action', 'echo', 'lat_p99_us') / 1000, '{:.2f}')} |")
    md.append(f"| the same request through the host, `\"envelope\": \"action\"` | {fmt(get(rows, 'tether-gateway-action', 'rpc', 'msgs_per_s'))} | {fmt(ra, '{:.2f}')} | {fmt(ratio(ra, e), '{:.2f}×')} ({fmt(ratio(ra, r), '{:.2f}×')} the event dialect) | {fmt(None if get(rows, 'tether-gateway-action', 'rpc', 'lat_p99_us') is None else get(rows, 'tether-gateway-action', 'rpc', 'lat_p99_us') / 1000, '{:.2f}')} |")
    md.append("")
    gi = get(rows, "tether-gateway", "idle", "kib_per_conn")
    md.append(f"Idle memory of authenticated gateway sessions (10k, token in the URL): {fmt(gi, '{:.2f}')} KiB per connection.\n")

    tls_table(md, rows)

    md.append("## Targets (issue 7)\n")
    md.append("| target | tether | reference | met |")
    md.append("|---|---:|---:|---|")

    def target(name, mine, ref, ok, spec):
        met = "—" if mine is None or ref is None else ("yes" if ok(mine, ref) else "**no**")
        md.append(f"| {name} | {fmt(mine, spec)} | {fmt(ref, spec)} | {met} |")

    target("idle KiB per connection ≤ 1.0 (10,000 clients)", get(rows, "tether", "idle", "kib_per_conn"), 1.0, lambda a, b: a <= b, "{:.2f}")
    target("echo msg/s ≥ uWebSockets'", get(rows, "tether", "echo", "msgs_per_s"), get(rows, "uwebsockets", "echo", "msgs_per_s"), lambda a, b: a >= b, "{:,.0f}")
    b1 = get(rows, "tether", "broadcast1000", "last_p99_us")
    u1 = get(rows, "uwebsockets", "broadcast1000", "last_p99_us")
    target("broadcast 1k: last-delivery p99 (ms) ≤ uWebSockets'", None if b1 is None else b1 / 1000, None if u1 is None else u1 / 1000, lambda a, b: a <= b, "{:.2f}")
    target("gateway CPU/msg ≤ 2 × echo CPU/msg", g, None if e is None else 2 * e, lambda a, b: a <= b, "{:.2f}")
    md.append("")

    md.append("## What each side does\n")
    md.append(
        "- **idle**: open N connections (path `/`; tether-gateway: `/?token=JWT`), RSS of the server "
        "(`VmRSS`) before and after; held for the given seconds (pings answered), then every "
        "connection sends one message and must get its reply. KiB/conn = (RSS after − RSS before) / N.\n"
        "- **echo**: 100 connections, 8 messages of 32 bytes in flight each, text frames echoed "
        "verbatim; msg/s counts echoes received; latency from send to echo.\n"
        "- **broadcast**: peers: one connection on `/pub` sends a 32-byte text message, the server "
        "sends it to every `/sub` connection (uWS `app.publish`, ws a loop over a Set, tokio a "
        "`tokio::sync::broadcast` channel, Python `websockets.broadcast`). tether: the load tool is "
        "the host (a JWT with `host`, after `host.register`) and sends "
        "`{\"event\":\"host.broadcast\",\"data\":{\"event\":\"b\",\"data\":\"<32 bytes>\"}}`; every "
        "authenticated subscriber gets `{\"event\":\"b\",\"data\":\"<32 bytes>\"}` (a 41-byte "
        "message, serialised once and shared). One round at a time: the time from sending to the "
        "last subscriber's delivery, p50 and p99 over the rounds (the p99 of 100 rounds is the "
        "second-worst round, so one hiccup of the shared machine moves it: see the noise table; "
        "the p50 is the steadier figure); CPU per delivery over all rounds.\n"
        "- **gateway / rpc**: tether only, see above.\n"
        "- **handshakes** (TLS table): 32 connection attempts in parallel, each a new TCP "
        "connection, a full TLS handshake (wss) and the WebSocket upgrade, closed (RST) as soon as "
        "the 101 arrives and replaced by a new one; per second, and server CPU per connection.\n"
    )
    (out / "results.md").write_text("\n".join(md))
    chart(rows, out / "chart.png")


def mean(rows, server, scenario, field):
    """The mean of a figure over a server's runs `server` and `server#2`."""
    vals = [get(rows, s, scenario, field) for s in (server, server + "#2")]
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None


def tls_table(md, rows):
    """wss beside ws, per server, each the mean of two alternating runs."""
    if not any(mean(rows, s, sc, "server_us_per_msg") is not None for s in ("tether-wss", "uwebsockets-wss") for sc in ("echo", "broadcast1000", "handshakes")):
        return
    md.append("## TLS: wss beside ws (same run)\n")
    md.append(
        "The same scenarios over wss:// (TLS 1.3, a P-256 certificate made with openssl for the run, "
        "the load tool on rustls with the ring provider and no session resumption): tether with "
        "`server.websocket.tls` (rustls, ring) and uWebSockets' `SSLApp` (its BoringSSL). "
        "Each server ran ws, then wss, then ws and wss again, each time a fresh process, back to "
        "back; every figure is the mean of its two runs, so that the ratio compares neighbours in "
        "time on the shared machine. "
        "\"wss as % of ws\" divides the wss figure by the ws one; for msg/s and handshakes/s "
        "lower is the TLS cost, for CPU and latency higher is. \"load util\" is the load tool's "
        "CPU use in the wss run (1.00 = a full core; above 0.95 the load tool, not the server, "
        "set the pace).\n"
    )
    md.append("| server | figure | ws | wss | wss as % of ws | load util (wss) | load µs CPU per unit (wss) |")
    md.append("|---|---|---:|---:|---:|---:|---:|")
    figures = (
        ("echo", "msgs_per_s", "echo msg/s", 1, "{:,.0f}"),
        ("echo", "server_us_per_msg", "echo µs CPU/msg", 1, "{:.2f}"),
        ("echo", "lat_p99_us", "echo p99 ms", 1000, "{:.2f}"),
        ("broadcast1000", "last_p50_us", "bcast 1k last p50 ms", 1000, "{:.2f}"),
        ("broadcast1000", "last_p99_us", "bcast 1k last p99 ms", 1000, "{:.2f}"),
        ("broadcast1000", "server_us_per_msg", "bcast 1k µs CPU/delivery", 1, "{:.2f}"),
        ("handshakes", "per_s", "new connections/s (TCP + TLS + upgrade)", 1, "{:,.0f}"),
        ("handshakes", "server_us_per_msg", "µs CPU per new connection", 1, "{:.0f}"),
    )
    for s in ("tether", "uwebsockets"):
        for sc, f, label, div, spec in figures:
            a, b = mean(rows, s + "-ws", sc, f), mean(rows, s + "-wss", sc, f)
            pct = ratio(b, a)
            md.append(
                f"| {s} | {label} | {fmt(None if a is None else a / div, spec)} | "
                f"{fmt(None if b is None else b / div, spec)} | {fmt(None if pct is None else pct * 100, '{:.0f} %')} | "
                f"{fmt(mean(rows, s + '-wss', sc, 'load_util'), '{:.2f}')} | "
                f"{fmt(mean(rows, s + '-wss', sc, 'load_us_per_msg'), '{:.2f}')} |"
            )
    md.append("")
    sat = sorted(
        f"{srv} {sc}"
        for (srv, sc), r in rows.items()
        if ("-ws" in srv) and not r.get("error") and r.get("load_util", 0) >= 0.95
    )
    if sat:
        md.append(
            "The load tool was saturated (≥ 0.95 of a core) in: " + ", ".join(sat) + ". There the rate is "
            "the load tool's limit, not the server's: a TLS client spends more CPU per handshake than "
            "the server (it verifies the certificate and the handshake signature), so compare the "
            "server's µs CPU per unit, which does not depend on the pace.\n"
        )
    md.append("tether / uWebSockets over wss (same run):\n")
    md.append("| echo msg/s | echo CPU/msg | bcast 1k last p50 | bcast 1k last p99 | bcast 1k CPU/delivery | new connections/s | CPU per new connection |")
    md.append("|---:|---:|---:|---:|---:|---:|---:|")
    md.append(
        "| "
        + " | ".join(
            times(ratio(mean(rows, "tether-wss", sc, f), mean(rows, "uwebsockets-wss", sc, f)))
            for sc, f in (
                ("echo", "msgs_per_s"),
                ("echo", "server_us_per_msg"),
                ("broadcast1000", "last_p50_us"),
                ("broadcast1000", "last_p99_us"),
                ("broadcast1000", "server_us_per_msg"),
                ("handshakes", "per_s"),
                ("handshakes", "server_us_per_msg"),
            )
        )
        + " |"
    )
    suites = sorted({r.get("suite") for (srv, sc), r in rows.items() if sc == "handshakes" and "-wss" in srv and r.get("suite")})
    if suites:
        md.append("")
        md.append("Negotiated: " + ", ".join(f"`{x}`" for x in suites) + ".")
    md.append("")


def chart(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("echo: messages/s (100 conns, 8 in flight, 32 B)", "echo", "msgs_per_s", 1, "{:,.0f}"),
        ("echo: server CPU µs per message", "echo", "server_us_per_msg", 1, "{:.2f}"),
        ("idle: KiB per connection (10,000 clients)", "idle", "kib_per_conn", 1, "{:.1f}"),
        ("broadcast to 1,000: last delivery p99 (ms)", "broadcast1000", "last_p99_us", 1000, "{:.1f}"),
        ("broadcast to 10,000: last delivery p99 (ms)", "broadcast10000", "last_p99_us", 1000, "{:.0f}"),
        ("broadcast to 10,000: server CPU µs per delivery", "broadcast10000", "server_us_per_msg", 1, "{:.2f}"),
    ]
    fig, axes = plt.subplots(3, 2, figsize=(12, 11))
    for ax, (title, sc, field, div, spec) in zip(axes.flat, panels):
        names, vals = [], []
        for s in SERVERS:
            v = get(rows, s, sc, field)
            if v is not None:
                names.append(s)
                vals.append(v / div)
        colors = ["#d9480f" if n == "tether" else "#868e96" for n in names]
        bars = ax.barh(names[::-1], vals[::-1], color=colors[::-1])
        for b, v in zip(bars, vals[::-1]):
            ax.text(b.get_width(), b.get_y() + b.get_height() / 2, " " + spec.format(v), va="center", fontsize=8)
        ax.set_title(title, fontsize=10)
        if vals and max(vals) / max(min(vals), 1e-9) > 50:
            ax.set_xscale("log")
        ax.margins(x=0.25)
    fig.suptitle("tether vs peer WebSocket servers (one run; server on CPU 0, load on CPU 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
