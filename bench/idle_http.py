#!/usr/bin/env python3
"""Memory of idle HTTP connections on a running Herald.

Opens N plain TCP connections to HOST:PORT and holds them, either silent (`idle`: accepted,
no request yet) or after one `GET /healthz` each (`keepalive`: between requests), then prints
how much the server's resident memory grew per connection. Run it against a fresh server
process each time: memory freed by earlier connections is reused and would hide the cost.

    target/release/herald serve --listen 127.0.0.1:5077 --shards 1 &
    bench/idle_http.py 127.0.0.1:5077 4000 $! idle

The open-files limit must allow N descriptors (`ulimit -n`).
"""

import socket
import sys
import time


def rss(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def main():
    if len(sys.argv) != 5 or sys.argv[4] not in ("idle", "keepalive"):
        sys.exit("usage: idle_http.py HOST:PORT N SERVER_PID idle|keepalive")
    host, port = sys.argv[1].rsplit(":", 1)
    n, pid, mode = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    before = rss(pid)
    held = []
    for _ in range(n):
        s = socket.create_connection((host, int(port)))
        if mode == "keepalive":
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n")
            reply = b""
            while b"\r\n\r\n" not in reply:
                reply += s.recv(4096)
        held.append(s)
    time.sleep(1.5)
    after = rss(pid)
    print(f"{mode}: {n} connections, {(after - before) / n:.0f} B per connection")


if __name__ == "__main__":
    main()
