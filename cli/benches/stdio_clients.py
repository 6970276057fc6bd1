#!/usr/bin/env python3
"""Sequential `echo` calls to `toolhost serve --stdio` over pipes (as Python
and rmcp clients start servers) or over a socket pair (as every Node client
does: libuv makes child stdio from socketpair), and the mean time per call.

    python3 cli/benches/stdio_clients.py BIN [CALLS]

BIN is a `toolhost` binary; run from the repository root after `make tools`.
Used for BENCHMARKS.md, "MCP round trip" (stdio on the I/O driver): run it
with two binaries alternately to compare them.
"""
import json
import socket
import subprocess
import sys
import time


def run(binary, calls, over):
    args = [binary, "serve", "--watch", "false", "--tools", "build/tools/echo.toml", "--stdio"]
    if over == "socket":
        ours, theirs = socket.socketpair()
        proc = subprocess.Popen(args, stdin=theirs, stdout=theirs, stderr=subprocess.DEVNULL)
        theirs.close()
        reader = ours.makefile("rb")
        write = ours.sendall
    else:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        reader = proc.stdout

        def write(b):
            proc.stdin.write(b)
            proc.stdin.flush()

    def send(m):
        write((json.dumps(m) + "\n").encode())

    send({"jsonrpc": "2.0", "id": 0, "method": "initialize",
          "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                     "clientInfo": {"name": "bench", "version": "1"}}})
    reader.readline()
    send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    started = time.time()
    for i in range(calls):
        send({"jsonrpc": "2.0", "id": i + 1, "method": "tools/call",
              "params": {"name": "echo", "arguments": {"text": "hello, sandbox"}}})
        line = reader.readline()
        assert b'"hello, sandbox"' in line, line
    per_call = (time.time() - started) / calls * 1e6
    proc.kill()
    proc.wait()
    return per_call


if __name__ == "__main__":
    binary = sys.argv[1]
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    for over in ("pipe", "socket"):
        print(f"{over}: {run(binary, calls, over):.1f} µs per call")
