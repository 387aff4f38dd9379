#!/usr/bin/env python3
"""Sequential document-query latency over the data API (one keep-alive connection).

usage: data-query.py ADMIN_PORT TOKEN APP STORE FIELD COUNT LIMIT [VALUE]
Each query is {"filter": {FIELD: "s<random 0..999>"}, "limit": LIMIT} (or the fixed
VALUE). Prints one line: `count=.. p50_us=.. p90_us=.. p99_us=.. max_us=.. mean_us=..
docs_per_query=..` after 20 unmeasured warm-up queries.
"""
import http.client
import json
import random
import statistics
import sys
import time

port, token, app, store, field = sys.argv[1:6]
count, limit = int(sys.argv[6]), int(sys.argv[7])
fixed = sys.argv[8] if len(sys.argv) > 8 else None
path = f"/v1/apps/{app}/docs/{store}/query"
headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=120)
rng = random.Random(42)


def one():
    value = fixed if fixed is not None else f"s{rng.randrange(1000)}"
    body = json.dumps({"filter": {field: value}, "limit": limit})
    t0 = time.perf_counter()
    conn.request("POST", path, body, headers)
    resp = conn.getresponse()
    data = resp.read()
    dt = time.perf_counter() - t0
    if resp.status != 200:
        sys.exit(f"query failed: {resp.status} {data[:200]!r}")
    return dt, len(json.loads(data)["documents"])


for _ in range(min(20, count)):
    one()
lat, docs = [], []
for _ in range(count):
    dt, n = one()
    lat.append(dt * 1e6)
    docs.append(n)
lat.sort()


def pct(p):
    return lat[min(len(lat) - 1, int(round(p / 100 * len(lat) + 0.5)) - 1)]


print(f"count={count} p50_us={pct(50):.0f} p90_us={pct(90):.0f} p99_us={pct(99):.0f} "
      f"max_us={lat[-1]:.0f} mean_us={statistics.mean(lat):.0f} docs_per_query={statistics.mean(docs):.1f}")
