#!/usr/bin/env python3
"""NATS core publish rate for bench/events-bench.sh: N messages of SIZE bytes on one
connection, written in pipelined chunks, then a PING whose PONG means the server has
processed them all. No subscriber (as `nats bench pub`).

usage: nats-pub.py PORT N SIZE
"""
import socket
import sys
import time

port, n, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port))
f = s.makefile("rb")
f.readline()  # INFO
s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n')
one = b"PUB bench %d\r\n" % size + b"x" * size + b"\r\n"
chunk = one * 1000
t0 = time.perf_counter()
for _ in range(n // 1000):
    s.sendall(chunk)
s.sendall(b"PING\r\n")
while True:
    line = f.readline()
    if line.startswith(b"PONG"):
        break
    if line.startswith(b"-ERR"):
        sys.exit(line.decode())
secs = time.perf_counter() - t0
print(f"msgs={n // 1000 * 1000} msgs_per_s={n // 1000 * 1000 / secs:.0f}")
