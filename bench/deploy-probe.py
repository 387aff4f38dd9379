#!/usr/bin/env python3
"""Time a deploy: run CMD (a `nimbus deploy`), then poll URL with raw HTTP/1.1 GETs
every 0.5 ms; print the ms from the deploy's start and from its return to the first
200. The probe is already running, so its own start-up is not counted.

usage: deploy-probe.py PORT PATH -- CMD [ARGS...]   (only 127.0.0.1 is contacted)
"""
import socket
import subprocess
import sys
import time


def ok(port, path):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    cmd = sys.argv[sys.argv.index("--") + 1:]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t1 = time.perf_counter()
    while not ok(port, path):
        if time.perf_counter() - t1 > 30:
            print("timeout", file=sys.stderr)
            return 1
        time.sleep(0.0005)
    t2 = time.perf_counter()
    print(f"{(t2 - t0) * 1000:.1f}\t{(t2 - t1) * 1000:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
