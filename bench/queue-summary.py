#!/usr/bin/env python3
"""Markdown summary of bench/queue-bench.sh's raw TSV (round, test, peer, conns,
metric, value): medians over rounds with [min-max], then Nimbus beside its peers as
ratios of medians from the same run.

usage: queue-summary.py RAW.tsv
"""
import csv
import statistics
import sys
from collections import OrderedDict

rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
cells = OrderedDict()
for r in rows:
    try:
        v = float(r["value"])
    except ValueError:
        continue
    cells.setdefault((r["test"], r["peer"], r["conns"]), OrderedDict()).setdefault(r["metric"], []).append(v)


def med(test, peer, metric="msgs_s", conns=None):
    for (t, p, c), ms in cells.items():
        if t == test and p == peer and (conns is None or c == conns) and metric in ms:
            return statistics.median(ms[metric])
    return None


def fmt(x):
    if x is None:
        return "n/a"
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def cell(vals):
    if not vals:
        return ""
    m = statistics.median(vals)
    if len(vals) == 1 or min(vals) == max(vals):
        return fmt(m)
    return f"{fmt(m)} [{fmt(min(vals))}–{fmt(max(vals))}]"


metrics = ["msgs_s", "guest_msgs_s_sum", "req_p50_us", "req_p99_us", "p50_us", "server_cpu_pct",
           "client_cpu_pct", "other_cpu_pct", "rss_mib"]
used = [m for m in metrics if any(m in ms for ms in cells.values())]
print("### All measurements\n")
print("| test | peer | conns | " + " | ".join(used) + " |")
print("|" + "---|" * (3 + len(used)))
for (t, p, c), ms in sorted(cells.items(), key=lambda kv: (kv[0][0].replace("api_", "").replace("fn_", ""), kv[0][0], kv[0][1])):
    print(f"| {t} | {p} | {c} | " + " | ".join(cell(ms.get(m, [])) for m in used) + " |")
print()

print("### Nimbus beside the peers (messages/s, ratios of medians)\n")
print("| nimbus | peer | send | receive+delete |")
print("|---|---|---|---|")
PAIRS = (("nimbus", "redis-aof-always"), ("nimbus", "nats-js-file-sync-always"),
         ("nimbus", "nats-js-file"), ("nimbus-crash", "redis-aof-no"),
         ("nimbus-crash", "nats-js-file"), ("nimbus-crash", "redis"))
for node, peer in PAIRS:
    out = []
    for op in ("send", "recv"):
        n, p = med(f"api_{op}", node), med(op, peer)
        if n is None or p is None:
            out.append("n/a")
        else:
            out.append(f"{fmt(n)} vs {fmt(p)} = {n / p:.2f}×")
    print(f"| {node} (API, c=16, batches of 10) | {peer} | {out[0]} | {out[1]} |")
rounds = max(len(v) for ms in cells.values() for v in ms.values())
print(f"\n(medians of up to {rounds} rounds; [min–max])")
