"""Load through a load balancer with the official MCP Python SDK (PyPI `mcp`),
for tests/integration/scale_out.rs.

    scale_out.py --http URL [--legacy N] [--modern N] [--calls N] [--after N]

Runs N 2025-11-25 sessions (mode legacy: one `initialize`, then every call on
that session) and N stateless 2026-07-28 clients at once, each calling `echo`
with a text unique to the attempt (`WORKER-CALL-ATTEMPT`), one call after
another. A call that fails (the replica that served it died, the balancer
answered 502) is retried as a new attempt, with a new text, on the same
session: the server restores it on a live replica.

Prints `ACK TOTAL` after each acknowledged call, for the test to time its
SIGKILL. Each worker makes at least --calls calls, and once a line `killed`
arrives on stdin, at least --after more. Then prints one JSON line:
{"acks": [{"text", "worker", "session", "after_kill"}], "failures": [...],
"sessions": {worker: id}} and `ok scale_out`.
"""

import argparse
import json
import sys

import anyio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

ACKS = []
FAILURES = []
SESSIONS = {}
KILLED = None
MAX_ATTEMPTS = 20


def text_of(result):
    return "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")


async def worker(name, url, mode, calls, after):
    seen = {}

    async def on_response(response):
        sid = response.headers.get("mcp-session-id")
        if sid:
            seen["id"] = sid

    http = create_mcp_http_client()
    http.event_hooks = {"response": [on_response]}
    async with http:
        server = streamable_http_client(url, http_client=http)
        async with Client(server, mode=mode, read_timeout_seconds=30) as client:
            if mode == "legacy":
                SESSIONS[name] = seen.get("id")
            i = 0
            since_kill = 0
            while i < calls or not KILLED.is_set() or since_kill < after:
                killed_before = KILLED.is_set()
                for attempt in range(MAX_ATTEMPTS):
                    text = f"{name}-{i}-{attempt}"
                    try:
                        with anyio.fail_after(30):
                            r = await client.call_tool("echo", {"text": text})
                        ok = not r.is_error and text_of(r) == text
                        why = None if ok else f"result {r}"
                    except Exception as e:  # noqa: BLE001 (any failure is retried)
                        ok, why = False, f"{type(e).__name__}: {e}"
                    if ok:
                        session = seen.get("id") if mode == "legacy" else None
                        if mode == "legacy" and session != SESSIONS[name]:
                            raise AssertionError(f"{name}: the session id changed: {SESSIONS[name]} -> {session}")
                        ACKS.append({"text": text, "worker": name, "session": session, "after_kill": killed_before})
                        print("ACK", len(ACKS), flush=True)
                        break
                    FAILURES.append({"text": text, "worker": name, "why": why[:300]})
                    print(f"{name}: attempt {text} failed, retrying: {why[:300]}", file=sys.stderr, flush=True)
                    await anyio.sleep(0.2)
                else:
                    raise AssertionError(f"{name}: call {i} failed {MAX_ATTEMPTS} times")
                i += 1
                if killed_before:
                    since_kill += 1


async def watch_stdin():
    stdin = anyio.wrap_file(sys.stdin)
    async for line in stdin:
        if line.strip() == "killed":
            KILLED.set()
            return


async def main():
    global KILLED
    ap = argparse.ArgumentParser()
    ap.add_argument("--http", required=True)
    ap.add_argument("--legacy", type=int, default=3)
    ap.add_argument("--modern", type=int, default=3)
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--after", type=int, default=10)
    a = ap.parse_args()
    KILLED = anyio.Event()
    async with anyio.create_task_group() as outer:
        outer.start_soon(watch_stdin)
        async with anyio.create_task_group() as tg:
            for n in range(a.legacy):
                tg.start_soon(worker, f"legacy{n}", a.http, "legacy", a.calls, a.after)
            for n in range(a.modern):
                tg.start_soon(worker, f"modern{n}", a.http, "2026-07-28", a.calls, a.after)
        outer.cancel_scope.cancel()
    print(json.dumps({"acks": ACKS, "failures": FAILURES, "sessions": SESSIONS}), flush=True)
    print("ok scale_out", flush=True)


if __name__ == "__main__":
    anyio.run(main)
