#!/usr/bin/env python3
"""Low-load sends for bench/queue-latency.sh: N messages, one at a time, GAP_MS
apart, each with the body `t=NANOS` (its send time), over one keep-alive
connection to the admin API. The queue's trigger runs the event fixture, which
prints `queue-latency-us=` per message; this script only sends, and prints the
send requests' own p50/p99.

usage: queue-e2e.py ADMIN_PORT TOKEN APP QUEUE N GAP_MS
"""
import http.client
import sys
import time

port, token, app, queue, n, gap = sys.argv[1:7]
n, gap = int(n), float(gap) / 1000
conn = http.client.HTTPConnection("127.0.0.1", int(port))
path = f"/v1/apps/{app}/queues/{queue}/messages"
headers = {"Authorization": f"Bearer {token}", "Content-Type": "text/plain"}
took = []
for _ in range(n):
    t0 = time.time_ns()
    conn.request("POST", path, body=f"t={t0}", headers=headers)
    r = conn.getresponse()
    r.read()
    took.append((time.time_ns() - t0) / 1000)
    if r.status != 200:
        sys.exit(f"send failed: {r.status}")
    time.sleep(gap)
took.sort()
print(f"sends={n} send_p50_us={took[n // 2]:.0f} send_p99_us={took[min(n - 1, n * 99 // 100)]:.0f}")
