#!/usr/bin/env python3
"""Markdown summary of bench/data-bench.sh's raw TSV (round, test, peer, conns,
metric, value): medians over rounds with [min-max], then the targets as ratios of
medians from the same run.

usage: data-summary.py RAW.tsv
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


def med(test, peer, metric, conns=None):
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
        return "n/a"
    m = statistics.median(vals)
    if len(vals) == 1 or min(vals) == max(vals):
        return fmt(m)
    return f"{fmt(m)} [{fmt(min(vals))}–{fmt(max(vals))}]"


def table(title, tests, metrics):
    print(f"### {title}\n")
    print("| test | peer | conns | " + " | ".join(metrics) + " |")
    print("|" + "---|" * (3 + len(metrics)))
    for (t, p, c), ms in cells.items():
        if t in tests:
            print(f"| {t} | {p} | {c} | " + " | ".join(cell(ms.get(m, [])) for m in metrics) + " |")
    print()


table("Key-value", ("kv_get", "kv_set"),
      ["ops_s", "p50_us", "p99_us", "server_cpu_pct", "rss_mib", "rss_growth_b_per_write",
       "other_cpu_pct"])
table("Document queries (1 M documents, sequential, one connection)", ("docs_query",),
      ["p50_us", "p90_us", "p99_us", "mean_us", "docs"])
table("Objects", ("object_put", "object_get"), ["mb_s", "seconds"])

print("### Targets (ratios of medians, same run)\n")
print("| target | measured | met |")
print("|---|---|---|")


def row(name, measured, ok):
    print(f"| {name} | {measured} | {'n/a' if ok is None else ('yes' if ok else '**no**')} |")


hc = med("kv_get", "nimbus-hostcall-wasi", "ops_s")
row("host-call KV get ≥ 1 M ops/s in-process", f"{fmt(hc)} ops/s (wasi:keyvalue get)", None if hc is None else hc >= 1e6)
# Like-for-like durability: power-loss (fsync per commit group) against AOF fsync
# always; crash (no fsync, acknowledged writes survive kill -9 of the node) against
# redis without fsync (AOF appendfsync no: the same guarantee; no persistence: less).
PAIRS = (("nimbus-api", "redis-aof-always"), ("nimbus-crash-api", "redis-aof-no"),
         ("nimbus-crash-api", "redis"))
for op in ("get", "set"):
    for mine, peer in PAIRS:
        n, r = med(f"kv_{op}", mine, "ops_s"), med(f"kv_{op}", peer, "ops_s")
        if n is None and r is None:
            continue
        ratio = n / r if n and r else None
        row(f"API {op.upper()} ≥ 0.5× redis (c=16): {mine} vs {peer}",
            f"{fmt(n)} vs {fmt(r)} ops/s = {fmt(ratio)}×", None if ratio is None else ratio >= 0.5)
p99 = med("docs_query", "indexed (status), limit 10", "p99_us")
row("indexed query on 1 M docs p99 < 5 ms", f"p99 {fmt(p99)} µs", None if p99 is None else p99 < 5000)
for op in ("put", "get"):
    n, f = med(f"object_{op}", "nimbus", "mb_s"), med(f"object_{op}", "file-copy", "mb_s")
    ratio = n / f if n and f else None
    row(f"object {op.upper()} ≥ 0.7× plain file copy", f"{fmt(n)} vs {fmt(f)} MB/s = {fmt(ratio)}×",
        None if ratio is None else ratio >= 0.7)
rounds = max(len(v) for ms in cells.values() for v in ms.values())
print(f"\n(medians of up to {rounds} rounds; [min–max])")
