#!/usr/bin/env python3
"""Medians of the load generator's JSON lines, side by side per scenario.

    python3 scripts/bench/summarize.py scripts/bench/results.jsonl [--since UNIX_TIME]

Prints one Markdown table per scenario shape: a row per server with the
median of every run, the number of runs, and for the headline metric the
ratio to tandem (JSON protocol) measured in the same file.
"""
import json
import statistics
import sys
from collections import defaultdict

# (scenario key, headline metric, columns)
COLUMNS = {
    "idle": ("rss_per_connection_kib", ["connections", "rss_per_connection_kib", "connect_rate_per_s",
                                        "handshake_p50_ms", "handshake_p99_ms", "server_rss_steady_kib",
                                        "errors", "disconnects"]),
    "fanout": ("latency_p99_ms", ["connections", "sent_per_s", "delivered_per_s", "delivery_ratio",
                                  "latency_p50_ms", "latency_p99_ms", "latency_max_ms", "server_cpu_pct",
                                  "cpu_s_per_100k", "server_rss_peak_kib", "loadgen_cpu_pct", "errors",
                                  "disconnects"]),
    "fanout-knee": ("knee_rate_hz", ["knee_rate_hz", "first_failing_rate_hz", "knee_delivered_per_s",
                                     "knee_latency_p99_ms", "knee_server_cpu_pct", "knee_loadgen_cpu_pct"]),
    "editing": ("relay_p99_ms", ["connections", "edits_per_s", "relay_p50_ms", "relay_p99_ms", "ack_p50_ms",
                                 "ack_p99_ms", "server_cpu_pct", "server_rss_peak_kib", "storage_bytes_per_s",
                                 "converged", "errors"]),
    "two-instances": ("cross_added_p50_ms", ["connections", "delivered_per_s", "delivery_ratio", "latency_p50_ms",
                                             "latency_p99_ms", "latency_cross_p50_ms", "latency_cross_p99_ms",
                                             "cross_added_p50_ms", "server_cpu_pct", "server2_cpu_pct",
                                             "redis_cpu_pct", "errors", "disconnects"]),
    "slow-reader": ("slow_staleness_p50_ms", ["connections", "slow_readers", "delivered_per_s", "delivery_ratio",
                                         "latency_p99_ms", "slow_delivered_per_s", "slow_staleness_p50_ms",
                                         "slow_staleness_p99_ms", "slow_backlog_per_reader", "slow_catch_up_ms",
                                         "slow_fresh_ratio", "slow_disconnects",
                                         "server_cpu_pct", "disconnects"]),
    "joinstorm": ("time_to_99pct_ms", ["clients", "synced", "time_to_50pct_ms", "time_to_99pct_ms",
                                       "join_p50_ms", "join_p99_ms", "server_cpu_s", "server_rss_peak_kib",
                                       "errors"]),
}
SERVER_ORDER = ["tandem-before", "tandem", "tandem-batch", "tandem-yws", "tandem-redis", "floor", "y-websocket", "hocuspocus", "y-sweet"]


def shape(run):
    scenario = run.get("scenario")
    if scenario == "fanout" and run.get("slow_readers"):
        return f"slow-reader {run.get('rooms')}x{run.get('members')} @ {run.get('rate_hz')} Hz"
    if scenario == "fanout" and "latency_cross_count" in run:
        return f"two-instances {run.get('rooms')}x{run.get('members')} @ {run.get('rate_hz')} Hz"
    if scenario in ("fanout", "fanout-knee"):
        return f"{scenario} {run.get('rooms')}x{run.get('members')}" + (
            f" @ {run.get('rate_hz')} Hz" if scenario == "fanout" and "knee_step" not in run else "")
    if scenario == "joinstorm":
        return f"joinstorm {'cold' if run.get('cold') else 'warm'}"
    if scenario == "editing":
        return f"editing {run.get('docs')}x{run.get('editors')} @ {run.get('rate_hz')} Hz"
    if scenario == "idle":
        return f"idle {run.get('per_room')} per room"
    return str(scenario)


def median(values):
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if numbers:
        return statistics.median(numbers)
    bools = [v for v in values if isinstance(v, bool)]
    if bools:
        return all(bools)
    return None


def show(value):
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "scripts/bench/results.jsonl"
    since = float(sys.argv[sys.argv.index("--since") + 1]) if "--since" in sys.argv else 0
    groups = defaultdict(lambda: defaultdict(list))
    with open(path) as lines:
        for line in lines:
            line = line.strip()
            if not line.startswith("{"):
                continue
            run = json.loads(line)
            # Server CPU per delivery: core-seconds per 100,000 deliveries.
            if run.get("server_cpu_pct") and run.get("delivered_per_s"):
                run["cpu_s_per_100k"] = round(run["server_cpu_pct"] / 100 / run["delivered_per_s"] * 1e5, 3)
            if run.get("unix_time", 0) < since or "knee_step" in run:
                continue
            groups[shape(run)][run.get("server", run.get("protocol"))].append(run)
    for name in sorted(groups):
        scenario = name.split(" ")[0]
        headline, columns = COLUMNS.get(scenario, (None, []))
        servers = sorted(groups[name], key=lambda s: SERVER_ORDER.index(s) if s in SERVER_ORDER else 99)
        medians = {s: {c: median([r.get(c) for r in groups[name][s]]) for c in columns} for s in servers}
        base = medians.get("tandem", {}).get(headline)
        print(f"\n### {name}\n")
        header = ["server", "runs"] + columns + ([f"{headline} ÷ tandem"] if headline else [])
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for server in servers:
            row = [server, str(len(groups[name][server]))] + [show(medians[server][c]) for c in columns]
            if headline:
                value = medians[server].get(headline)
                ratio = (value / base) if isinstance(value, (int, float)) and isinstance(base, (int, float)) and base else None
                row.append(f"{ratio:.2f}" if ratio is not None else "—")
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
