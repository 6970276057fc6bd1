#!/usr/bin/env python3
"""`echo` calls to `toolhost serve --stdio` over pipes, N of them kept in
flight (a new one written as each reply arrives) for SECONDS; prints the
calls per second. N = 1 is a sequential client.

    python3 cli/benches/stdio_inflight.py BIN SECONDS N

BIN is a `toolhost` binary; run from the repository root after `make tools`.
Used for BENCHMARKS.md, "MCP round trip": run it with two binaries
alternately to compare them; while it runs, `perf record -p PID` (the
server's PID is printed first) profiles the server alone.
"""
import json
import os
import subprocess
import sys
import time


def main():
    binary, seconds, inflight = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    proc = subprocess.Popen(
        [binary, "serve", "--watch", "false", "--tools", "build/tools/echo.toml", "--stdio"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)

    def send(m):
        proc.stdin.write((json.dumps(m) + "\n").encode())

    send({"jsonrpc": "2.0", "id": 0, "method": "initialize",
          "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                     "clientInfo": {"name": "stdio_inflight", "version": "1"}}})
    proc.stdout.readline()
    send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    print("pid", proc.pid, flush=True)

    def call(i):
        return (json.dumps({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                            "params": {"name": "echo", "arguments": {"text": "hi"}}}) + "\n").encode()

    next_id = 1
    proc.stdin.write(b"".join(call(next_id + k) for k in range(inflight)))
    next_id += inflight
    done, buf, fd = 0, b"", proc.stdout.fileno()
    start = time.time()
    while time.time() - start < seconds:
        lines = (buf + os.read(fd, 1 << 16)).split(b"\n")
        buf = lines.pop()
        for line in lines:
            if b'"error"' in line:
                sys.exit(f"a call failed: {line[:200]!r}")
        n = len(lines)
        done += n
        if n:
            proc.stdin.write(b"".join(call(next_id + k) for k in range(n)))
            next_id += n
    elapsed = time.time() - start
    print(f"calls/s {done / elapsed:.0f}", flush=True)
    proc.stdin.close()
    proc.wait()


if __name__ == "__main__":
    main()
