"""Turns benches/cluster.sh's cluster.jsonl into cluster.md.

Usage: python3 benches/cluster_report.py CLUSTER.jsonl OUT_DIR
"""

import sys
from pathlib import Path

# benches/report.py (beside this file): the same JSON lines, the same formats.
from report import fmt, load, ratio, times


def get(rows, server, scenario, *path):
    v = rows.get((server, scenario))
    if v is None or v.get("error"):
        return None
    for field in path:
        if not isinstance(v, dict):
            return None
        v = v.get(field)
    return v


def ms(us):
    return None if us is None else us / 1000


def verdict(r, limit, at_most):
    if limit is None:
        return "—"
    if r is None:
        return "not measured"
    ok = r <= limit if at_most else r >= limit
    return "met" if ok else "missed"


CLUSTERS = [
    ("tether-cluster", "tether, 2 nodes + Redis"),
    ("socketio-cluster", "Socket.IO + redis-adapter, 2 nodes + Redis"),
    ("tether-single", "tether, 1 node (no cluster)"),
    ("socketio-single", "Socket.IO, 1 node (adapter on, same Redis)"),
]


def kept_rate(rows, server):
    """The highest rate kept; "≥" when it is the ramp's top (nothing lost)."""
    kept = get(rows, server, "throughput", "max_rate")
    top = get(rows, server, "throughput", "rate_max")
    lost = get(rows, server, "throughput", "first_lost_rate")
    capped = kept is not None and lost is None and kept == top
    return ("≥ " if capped else "") + fmt(kept)


def first_loss(rows, server):
    """How the first step that failed lost: subscribers closed, or behind."""
    steps = get(rows, server, "throughput", "steps") or []
    step = next((st for st in steps if not st.get("ok")), None)
    if step is None:
        return "—"
    if step.get("failed"):
        return f"{step['failed']} subscribers closed"
    return f"{step.get('min_got', 0) / max(step.get('sent', 1), 1):.0%} delivered in time"


def nodes_per_delivery(rows, server, scenario):
    a = get(rows, server, scenario, "server_us_per_msg")
    b = get(rows, server, scenario, "node2_us_per_msg")
    if a is None:
        return None
    return a + (b or 0)


def main():
    src, out = sys.argv[1], Path(sys.argv[2])
    meta, end, rows = load(src)
    md = ["# Cluster benchmark: tether vs Socket.IO with the Redis adapter\n"]
    md.append(
        f"Run {meta.get('date', '?')} ({meta.get('mode', '?')} run) on {meta.get('nproc', '?')} cores "
        f"({meta.get('cpu', '?')}); load average {meta.get('loadavg_start', '?')} at start, "
        f"{end.get('loadavg_end', '?')} at end (the machine is shared, so figures are noisy; the "
        "ratios come from this one run). Socket.IO "
        f"{meta.get('socketio', '?')}, @socket.io/redis-adapter {meta.get('redis_adapter', '?')}, "
        f"Redis {meta.get('redis', '?')}.\n"
    )
    md.append(
        "Every part starts its own `redis-server` (loopback, no persistence) and two nodes on it; "
        "the nodes and Redis are pinned to CPU 0, the load tool (`benches/load`, one thread, raw "
        "WebSocket; `--socketio` speaks Engine.IO v4 / Socket.IO v5 for Socket.IO's side) to "
        "CPU 1. Subscribers are split evenly over nodes A and B; the publisher is on node A (a "
        "tether host sending `host.broadcast` to the room; a Socket.IO client emitting `pub`, "
        "which node A sends to the room with `io.to(room).emit`). *Last delivery* is the time "
        "from the publish until the last subscriber got the message, per round. CPU per "
        "delivery is each process's CPU time over the rounds divided by all deliveries (both "
        "nodes' deliveries); Redis's CPU is given whole, as its own timer work (10 ticks a "
        "second) outweighs a few hundred publishes. CPU comes in 10 ms ticks. Reproduce with `bash benches/cluster.sh` (or `--quick`).\n"
    )

    md.append("## Broadcast to a room, subscribers split over two nodes\n")
    md.append(
        "| setup | subscribers | last p50 ms | last p99 ms | node A µs CPU/delivery | "
        "node B µs CPU/delivery | both nodes µs/delivery | Redis CPU ms (all rounds) | incomplete rounds |"
    )
    md.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for server, label in CLUSTERS:
        for subs in (1000, 10000):
            sc = f"broadcast{subs}"
            if (server, sc) not in rows:
                continue
            g = lambda *f: get(rows, server, sc, *f)  # noqa: E731
            md.append(
                f"| {label} | {subs:,} | {fmt(ms(g('last_p50_us')), '{:.2f}')} | "
                f"{fmt(ms(g('last_p99_us')), '{:.2f}')} | {fmt(g('server_us_per_msg'), '{:.2f}')} | "
                f"{fmt(g('node2_us_per_msg'), '{:.2f}')} | "
                f"{fmt(nodes_per_delivery(rows, server, sc), '{:.2f}')} | "
                f"{fmt(ms(g('redis_cpu_us')), '{:.0f}')} | {fmt(g('incomplete_rounds'))} |"
            )
    md.append("")

    md.append("## Cross-node publish throughput\n")
    md.append(
        f"{meta.get('tp_subs', '?')} subscribers on node B, the publisher on node A. The rate starts "
        "at 1,000 msg/s and rises ×1.5 a step (then two steps between the last rate kept and the "
        f"first lost), {meta.get('step_secs', '?')} s a step; a rate is kept when every subscriber "
        f"got every message of its step, exactly once, within {meta.get('drain_ms', '?')} ms after the step ended, and no "
        "connection failed. Anything else counts as the first drop (for Socket.IO that is "
        "falling behind: it queues without bound rather than dropping). Node B hands a burst "
        "read from Redis to its members at most 32 KiB a loop pass and writes their sockets "
        "between batches (before that, it queued a whole burst for each client at once and "
        "closed fast subscribers as slow readers, `reads too slowly (over "
        "limits.max_outbound_bytes)`, from about 40,000 msg/s). The last row is the same ramp with "
        "`limits.max_outbound_bytes` 4 MiB instead of the default 256 KiB: when both rows "
        "agree, the slow-reader limit is not what stops the ramp.\n"
    )
    md.append(
        "| setup | msg/s kept | first rate lost | first loss | node A util | node B util | Redis util | "
        "both nodes µs/delivery | Redis µs/delivery | load tool util |"
    )
    md.append("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for server, label in CLUSTERS[:2] + [("tether-cluster-out4m", "tether, 2 nodes + Redis, max_outbound_bytes 4 MiB")]:
        if (server, "throughput") not in rows:
            continue
        k = lambda f: get(rows, server, "throughput", "kept", f)  # noqa: E731
        secs = k("secs")
        util = lambda cpu: None if cpu is None or not secs else cpu / 1e6 / secs  # noqa: E731
        both = None if k("server_us_per_msg") is None else k("server_us_per_msg") + (k("node2_us_per_msg") or 0)
        md.append(
            f"| {label} | {kept_rate(rows, server)} | "
            f"{fmt(get(rows, server, 'throughput', 'first_lost_rate'))} | {first_loss(rows, server)} | "
            f"{fmt(k('server_util'), '{:.2f}')} | "
            f"{fmt(util(k('node2_cpu_us')), '{:.2f}')} | {fmt(util(k('redis_cpu_us')), '{:.2f}')} | "
            f"{fmt(both, '{:.2f}')} | {fmt(k('redis_us_per_msg'), '{:.3f}')} | {fmt(k('load_util'), '{:.2f}')} |"
        )
    md.append("")

    md.append("## tether idle memory per connection, clustering off and on\n")
    md.append("| clustering | connections | KiB/conn | alive |")
    md.append("|---|---:|---:|---:|")
    for server, label in (("tether-idle-off", "off"), ("tether-idle-on", "on (one node, its Redis)")):
        if (server, "idle") in rows:
            g = lambda f: get(rows, server, "idle", f)  # noqa: E731
            md.append(f"| {label} | {fmt(g('conns'))} | {fmt(g('kib_per_conn'), '{:.2f}')} | {fmt(g('alive'))} |")
    md.append("")

    md.append("## Targets (issue 13)\n")
    md.append("| target | measured | verdict |")
    md.append("|---|---:|---|")
    p99 = lambda server, subs: get(rows, server, f"broadcast{subs}", "last_p99_us")  # noqa: E731
    kib = lambda server: get(rows, server, "idle", "kib_per_conn")  # noqa: E731
    rate = lambda server: get(rows, server, "throughput", "max_rate")  # noqa: E731
    # (target, measured ratio, limit, whether the ratio must be at most the limit)
    targets = [
        (f"cross-node last-delivery p99, {n:,} subscribers: tether ≤ 0.5× Socket.IO",
         ratio(p99("tether-cluster", n), p99("socketio-cluster", n)), 0.5, True)
        for n in (1000, 10000)
    ]
    capped = kept_rate(rows, "tether-cluster").startswith("≥")
    targets.append(("cross-node publish throughput: tether ≥ 3× Socket.IO"
                    + (" (tether's a lower bound: the ramp's top, nothing lost)" if capped else ""),
                    ratio(rate("tether-cluster"), rate("socketio-cluster")), 3, False))
    targets += [
        (f"tether cross-node p99 ≤ 2× single node, {n:,} subscribers",
         ratio(p99("tether-cluster", n), p99("tether-single", n)), 2, True)
        for n in (1000, 10000)
    ]
    targets += [
        (f"(for reference) Socket.IO cross-node p99 / its single node, {n:,} subscribers",
         ratio(p99("socketio-cluster", n), p99("socketio-single", n)), None, True)
        for n in (1000, 10000)
    ]
    targets.append(("idle KiB/conn with clustering on vs off (unchanged: ≤ 1.1×)",
                    ratio(kib("tether-idle-on"), kib("tether-idle-off")), 1.1, True))
    for label, r, limit, at_most in targets:
        md.append(f"| {label} | {times(r)} | {verdict(r, limit, at_most)} |")
    for n in (1000, 10000):
        r = ratio(nodes_per_delivery(rows, "tether-cluster", f"broadcast{n}"),
                  nodes_per_delivery(rows, "socketio-cluster", f"broadcast{n}"))
        md.append(f"| (for reference) both nodes' CPU per delivery, {n:,}: tether / Socket.IO | {times(r)} | — |")
    md.append("")
    missing = [label for server, label in CLUSTERS[:3] if not any(s == server for s, _ in rows)]
    if missing:
        md.append("Not measured in this run: " + "; ".join(missing) + ".\n")
    out.mkdir(parents=True, exist_ok=True)
    (out / "cluster.md").write_text("\n".join(md))


if __name__ == "__main__":
    main()
