"""The Python Claude Agent SDK's in-process tool, timed like benches/agent_control.rs.

    python agent_control.py CALLS        (needs claude-agent-sdk importable)
In memory: a driver plays the CLI, sends `mcp_message` tools/call control
requests to the SDK's Query over an in-memory transport, and times each
request -> reply. Prints one JSON line:
{"p50_us":..,"p99_us":..,"mean_us":..,"calls":..}.

    python agent_control.py --cli FAKE_CLI
Through a CLI process: `query()` starts FAKE_CLI as it would start `claude`
(the bench's own executable as a fake CLI, which times the calls and writes
the figures itself) and runs until its result.
"""
import asyncio, json, sys, time
from claude_agent_sdk import ClaudeAgentOptions, create_sdk_mcp_server, query, tool
from claude_agent_sdk._internal.query import Query
from claude_agent_sdk._internal.transport import Transport


@tool("echo", "Return text unchanged", {"text": str})
async def echo(args):
    return {"content": [{"type": "text", "text": args["text"]}]}


class Pipe(Transport):
    def __init__(self):
        self.inbox = asyncio.Queue()
        self.waiting = {}

    async def connect(self):
        pass

    async def write(self, data):
        for line in data.splitlines():
            m = json.loads(line)
            if m.get("type") == "control_request" and m["request"]["subtype"] == "initialize":
                await self.inbox.put({"type": "control_response", "response": {
                    "subtype": "success", "request_id": m["request_id"], "response": {}}})
            elif m.get("type") == "control_response":
                f = self.waiting.pop(m["response"]["request_id"], None)
                if f:
                    f.set_result(m)

    async def read_messages(self):
        while True:
            yield await self.inbox.get()

    async def close(self):
        pass

    def is_ready(self):
        return True

    async def end_input(self):
        pass

    async def request(self, rid, message):
        f = asyncio.get_running_loop().create_future()
        self.waiting[rid] = f
        await self.inbox.put({"type": "control_request", "request_id": rid, "request": {
            "subtype": "mcp_message", "server_name": "tools", "message": message}})
        return await f


async def through_cli(cli):
    server = create_sdk_mcp_server("tools", tools=[echo])
    options = ClaudeAgentOptions(cli_path=cli, mcp_servers={"tools": server})
    async for m in query(prompt="bench", options=options):
        pass


async def in_memory(CALLS):
    pipe = Pipe()
    q = Query(pipe, True, sdk_mcp_servers={"tools": create_sdk_mcp_server("tools", tools=[echo])["instance"]})
    await q.start()
    await q.initialize()
    await pipe.request("i0", {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}})
    await pipe.request("i1", {"jsonrpc": "2.0", "method": "notifications/initialized"})
    times = []
    for i in range(200 + CALLS):
        t = time.perf_counter()
        r = await pipe.request(f"c{i}", {"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call",
                                         "params": {"name": "echo", "arguments": {"text": "hello"}}})
        dt = time.perf_counter() - t
        assert r["response"]["response"]["mcp_response"]["result"]["content"][0]["text"] == "hello", r
        if i >= 200:
            times.append(dt * 1e6)
    times.sort()
    print(json.dumps({"p50_us": times[len(times) // 2], "p99_us": times[int(len(times) * 0.99)],
                      "mean_us": sum(times) / len(times), "calls": len(times)}))
    import os
    os._exit(0)


if sys.argv[1:2] == ["--cli"]:
    asyncio.run(through_cli(sys.argv[2]))
else:
    asyncio.run(in_memory(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
