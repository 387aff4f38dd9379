#!/usr/bin/env python3
"""Concurrent calls of the data fixture's /queues/bench op (bench/queue-bench.sh).

usage: queue-fn.py GATEWAY_PORT QUEUE OP N_PER_REQUEST CONCURRENCY [BATCH]
Starts CONCURRENCY requests at once, each looping N host calls in the guest
(`op=send`: N sends of one 128-byte message; `op=recv`: receives of BATCH and a
delete per message until N are deleted or the queue is empty). Prints one line:
`msgs=.. wall_s=.. msgs_per_s=.. guest_msgs_per_s_sum=.. guest_secs_max=..`, where
msgs_per_s is all messages over the wall time from the first request sent to the
last answer.
"""
import http.client
import sys
import threading
import time

port, queue, op = int(sys.argv[1]), sys.argv[2], sys.argv[3]
n, conc = int(sys.argv[4]), int(sys.argv[5])
batch = int(sys.argv[6]) if len(sys.argv) > 6 else 10
results, errors = [], []
barrier = threading.Barrier(conc + 1)


def one():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.connect()
    barrier.wait()
    conn.request("GET", f"/queues/bench?queue={queue}&op={op}&n={n}&batch={batch}&size=128")
    resp = conn.getresponse()
    body = resp.read().decode()
    if resp.status != 200:
        errors.append(f"{resp.status} {body[:200]}")
        return
    results.append(dict(kv.split("=", 1) for kv in body.split()))


threads = [threading.Thread(target=one) for _ in range(conc)]
for t in threads:
    t.start()
barrier.wait()
t0 = time.perf_counter()
for t in threads:
    t.join()
wall = time.perf_counter() - t0
if errors:
    sys.exit("fixture errors: " + "; ".join(errors))
msgs = sum(int(r["found"]) for r in results)
print(f"msgs={msgs} wall_s={wall:.3f} msgs_per_s={msgs / wall:.0f} "
      f"guest_msgs_per_s_sum={sum(float(r['msgs_per_sec']) for r in results):.0f} "
      f"guest_secs_max={max(float(r['secs']) for r in results):.3f} "
      f"calls={sum(int(r['calls']) for r in results)}")
