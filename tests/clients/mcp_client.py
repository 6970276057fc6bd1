"""Drive `toolhost serve` with the official MCP Python SDK (PyPI `mcp`).

    mcp_client.py SCENARIO [--mode auto|legacy|2026-07-28] --http URL
    mcp_client.py SCENARIO [--mode ...] -- COMMAND [ARGS...]        (stdio)

Scenarios (the tools directory must hold echo, text, hostile and conformance):
  basic         list; call: text, structured output, progress and log
                notifications, tool error, invalid arguments, unknown tool
  cancel        cancel a call of a guest that never yields (`spin`), then call
                the same component again (its only concurrency slot is free)
  flood         a guest floods stdout/stderr; the protocol stream stays clean
  list_changed  print READY after listing, wait for tools/list_changed, list
                again and print the tool names as JSON
  elicit        tools that ask the client (elicitation over two rounds, roots):
                on 2026-07-28 through input-required results (checked by
                hand too: the sealed requestState, and a tampered one
                refused with a clear error), on 2025-11-25 through
                server-to-client requests on the session
  languages     (with --lang py|js, or TOOLHOST_CLIENT_LANG) the Python or JavaScript example tools
                and their hostile fixture (tests/integration/languages.rs):
                schemas listed, calls, precise argument errors, fuel and
                memory limits each ending one call, the next call succeeding
  served        resources, templates, prompts and completions of the files
                and prompts tools (toolhost:tool@0.2.0): list, read (text),
                not found for a URI of no component, get a prompt with
                arguments, complete a prompt argument and a template
                variable; with the hostile fixture loaded, a huge read
                stopped by max-output and a runaway read by the timeout,
                the server serving on
  subscribe     (2025-11-25) subscribe to file:///data/notes.txt (a URI
                nobody serves is refused), print READY, wait for
                notifications/resources/updated, print UPDATED URI
  listen_served (2026-07-28) a subscriptions/listen stream for prompt and
                resource list changes and file:///data/notes.txt: print
                READY, wait for all three events, print UPDATED URI
  tenant        (HTTP, with TOOLHOST_CLIENT_TOKEN as the bearer token) list
                exactly TOOLHOST_CLIENT_TOOLS (comma-separated); call echo;
                calling TOOLHOST_CLIENT_FORBIDDEN (another tenant's tool)
                fails exactly like calling a tool that exists nowhere

Exit status 0 and a last line `ok SCENARIO` mean every check passed; anything
else is a failure with the reason on stderr. Used by tests/integration/mcp.rs.
"""

import argparse
import json
import os
import sys
import time

import anyio
import mcp.types as types
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def text_of(result):
    return "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")


async def basic(client, mode):
    tools = {t.name: t for t in (await client.list_tools()).tools}
    for name in ["echo", "json_query", "log_and_progress", "test_error_handling"]:
        check(name in tools, f"tool {name} is listed (got {sorted(tools)})")
    echo = tools["echo"]
    check(echo.input_schema.get("type") == "object", f"echo's input schema: {echo.input_schema}")
    check(echo.description, "echo has a description")
    check(echo.annotations and echo.annotations.read_only_hint is True, f"echo annotations: {echo.annotations}")
    check(tools["json_query"].output_schema, "json_query declares an output schema")

    r = await client.call_tool("echo", {"text": "héllo"})
    check(not r.is_error and text_of(r) == "héllo", f"echo result: {r}")

    r = await client.call_tool("json_query", {"json": '{"a": [1, 2]}', "path": "a[1]"})
    check(not r.is_error, f"json_query failed: {r}")
    check(r.structured_content and r.structured_content.get("value") == 2, f"structured: {r.structured_content}")

    progress = []

    async def on_progress(p, total, message):
        progress.append((p, total))

    r = await client.call_tool("log_and_progress", {"steps": 3, "ms": 20}, progress_callback=on_progress)
    check(not r.is_error and text_of(r) == "done 3 steps", f"log_and_progress: {r}")
    check([p for p, _ in progress] == [1, 2, 3] and progress[-1][1] == 3, f"progress: {progress}")
    # Legacy: the default level (info); 2026-07-28: the client opts in to info per request.
    check(len(LOGS) >= 3, f"log messages at level info: {LOGS}")
    if mode == "legacy":
        await client.set_logging_level("error")
        LOGS.clear()
        await client.call_tool("log_and_progress", {"steps": 2, "ms": 1})
        check(not LOGS, f"no info messages at level error: {LOGS}")

    r = await client.call_tool("test_error_handling", {})
    check(r.is_error and "intentionally returns an error" in text_of(r), f"tool error: {r}")

    r = await client.call_tool("echo", {"text": 5})
    check(r.is_error and "invalid arguments" in text_of(r), f"invalid arguments: {r}")

    try:
        r = await client.call_tool("no_such_tool", {})
        raise AssertionError(f"an unknown tool must be a JSON-RPC error, got {r}")
    except MCPError as e:
        check("unknown tool" in str(e), f"unknown tool error: {e}")


async def cancel(client, mode):
    started = time.monotonic()
    with anyio.move_on_after(0.5):
        await client.call_tool("spin", {})
        raise AssertionError("spin returned")
    # The guest must have been stopped: `hostile` allows one call at a time.
    with anyio.fail_after(10):
        r = await client.call_tool("sleep", {"ms": 1})
    check(not r.is_error and text_of(r) == "slept", f"next call: {r}")
    elapsed = time.monotonic() - started
    check(elapsed < 5, f"the next call waited {elapsed:.1f}s for the cancelled guest")


async def flood(client, mode):
    r = await client.call_tool("flood", {"bytes": 2_000_000})
    print("flood:", r.is_error, text_of(r)[:200], file=sys.stderr)
    r = await client.call_tool("echo", {"text": "still here"})
    check(not r.is_error and text_of(r) == "still here", f"echo after flood: {r}")


async def list_changed(client, mode):
    before = sorted(t.name for t in (await client.list_tools()).tools)
    if client.protocol_version >= "2026-07-28":
        # Stateless: change notifications come on a subscriptions/listen stream.
        async with client.listen(tools_list_changed=True) as sub:
            print("READY", json.dumps(before), flush=True)
            with anyio.fail_after(30):
                async for event in sub:
                    print("event", event, file=sys.stderr)
                    break
    else:
        print("READY", json.dumps(before), flush=True)
        with anyio.fail_after(30):
            await CHANGED.wait()
    after = sorted(t.name for t in (await client.list_tools()).tools)
    print("TOOLS", json.dumps(after), flush=True)


ELICITED = []
ANSWERS = {"What is your name?": {"name": "Alice"}, "Step 1: What is your name?": {"name": "Alice"},
           "Step 2: What is your favorite color?": {"color": "blue"}}


async def on_elicit(context, params):
    ELICITED.append(params.message)
    content = ANSWERS.get(params.message)
    if content is None:
        return types.ElicitResult(action="decline")
    return types.ElicitResult(action="accept", content=content)


async def on_roots(context):
    return types.ListRootsResult(roots=[types.Root(uri="file:///work/project", name="project")])


async def elicit(client, mode):
    modern = client.protocol_version >= "2026-07-28"
    r = await client.call_tool("test_input_required_result_elicitation", {})
    check(not r.is_error and text_of(r) == "Hello, Alice!", f"elicitation: {r}")
    check(ELICITED == ["What is your name?"], f"asked once: {ELICITED}")
    ELICITED.clear()
    r = await client.call_tool("test_input_required_result_multi_round", {})
    check(not r.is_error and text_of(r) == '"Alice" likes "blue"', f"two rounds: {r}")
    check(ELICITED == ["Step 1: What is your name?", "Step 2: What is your favorite color?"], f"{ELICITED}")
    r = await client.call_tool("test_input_required_result_list_roots", {})
    check(not r.is_error and text_of(r) == "roots: file:///work/project", f"roots: {r}")
    if not modern:
        return
    # The same by hand: round one is an input-required result with sealed state.
    s = client.session
    r1 = await s.call_tool("test_input_required_result_elicitation", {}, allow_input_required=True)
    check(isinstance(r1, types.InputRequiredResult), f"round one: {r1}")
    check(list(r1.input_requests or {}) == ["user_name"] and r1.request_state, f"round one: {r1}")
    check(r1.input_requests["user_name"].method == "elicitation/create", f"{r1.input_requests}")
    answer = {"user_name": types.ElicitResult(action="accept", content={"name": "Eve"})}
    state = r1.request_state
    flipped = state[:-2] + ("A" if state[-2] != "A" else "B") + state[-1]
    try:
        r = await s.call_tool("test_input_required_result_elicitation", {}, input_responses=answer,
                              request_state=flipped, allow_input_required=True)
        raise AssertionError(f"a tampered requestState must be refused, got {r}")
    except MCPError as e:
        check("altered" in str(e) and "requestState" in str(e), f"tampered state error: {e}")
    try:
        r = await s.call_tool("test_input_required_result_request_state", {}, input_responses=answer,
                              request_state=state, allow_input_required=True)
        raise AssertionError(f"state of another tool must be refused, got {r}")
    except MCPError as e:
        check("another call" in str(e), f"state of another call: {e}")
    r2 = await s.call_tool("test_input_required_result_elicitation", {}, input_responses=answer,
                           request_state=state, allow_input_required=True)
    check(isinstance(r2, types.CallToolResult) and text_of(r2) == "Hello, Eve!", f"round two: {r2}")


# Per language: the tools of example-tools/{py,js}-{echo,text,hostile}.
LANGS = {
    "py": {
        "echo": "py_echo",
        "rich": "py_word_count",
        "rich_args": {"text": "The cat saw the dog.\nA cat!", "top": 2, "options": {"case": "fold"}},
        "rich_check": lambda s: s["words"] == 7 and s["lines"] == 2 and s["top"][0] == {"word": "the", "count": 2},
        "rich_required": ["text"],
        "rich_field": ("top", {"type": "integer", "minimum": 0, "maximum": 100}),
        # A type error inside a list: the host's schema check names the element.
        "bad": ("py_sum", {"items": [1, 2, "x"]}, "/items/2"),
        # Checked by the tool itself (the SDK's InvalidArguments).
        "guest_bad": ("py_sum", {"items": []}, "`items` must not be empty"),
        "spin": "py_spin",
        "alloc": "py_alloc",
        "raise": ("py_raise", {"message": "on purpose"}, "ValueError: on purpose"),
    },
    "js": {
        "echo": "js_echo",
        "rich": "js_table",
        "rich_args": {
            "rows": [{"n": "a", "v": 3}, {"n": "b", "v": 1}, {"n": "c", "v": 2}],
            "where": {"field": "v", "op": "gt", "value": 1},
            "sort_by": "v",
            "select": ["n"],
        },
        "rich_check": lambda s: s == {"rows": [{"n": "c"}, {"n": "a"}], "matched": 2},
        "rich_required": ["rows"],
        "rich_field": ("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
        "bad": ("js_table", {"rows": [{}, {}, 7]}, "/rows/2"),
        "guest_bad": ("js_table", {"rows": [], "select": ["a", "a"]}, "`select` names a field twice"),
        "spin": "js_spin",
        "alloc": "js_alloc",
        "raise": ("js_throw", {"message": "on purpose"}, "TypeError: on purpose"),
    },
}


async def languages(client, mode):
    L = LANGS[ARGS.lang]
    tools = {t.name: t for t in (await client.list_tools()).tools}
    for name in [L["echo"], L["rich"], L["spin"], L["alloc"]]:
        check(name in tools, f"tool {name} is listed (got {sorted(tools)})")
    echo = tools[L["echo"]]
    check(echo.input_schema.get("type") == "object", f"echo's input schema: {echo.input_schema}")
    check(echo.input_schema.get("required") == ["text"], f"echo requires text: {echo.input_schema}")
    check(
        echo.input_schema["properties"]["text"] == {"type": "string", "description": "The text to return, unchanged."},
        f"echo's text field: {echo.input_schema}",
    )
    check(echo.annotations and echo.annotations.read_only_hint is True, f"echo annotations: {echo.annotations}")
    check(echo.annotations.idempotent_hint is True, f"echo annotations: {echo.annotations}")
    rich = tools[L["rich"]]
    check(rich.description, "the rich tool has a description")
    check(rich.input_schema.get("required") == L["rich_required"], f"rich required: {rich.input_schema}")
    field, want = L["rich_field"]
    got = {k: v for k, v in rich.input_schema["properties"][field].items() if k in want}
    check(got == want, f"rich field {field}: {rich.input_schema['properties'][field]}")
    check(rich.input_schema["properties"][field].get("description"), f"{field} has a description")
    check(rich.output_schema and rich.output_schema.get("type") == "object", f"output schema: {rich.output_schema}")

    r = await client.call_tool(L["echo"], {"text": "héllo ✓"})
    check(not r.is_error and text_of(r) == "héllo ✓", f"echo result: {r}")

    r = await client.call_tool(L["rich"], L["rich_args"])
    check(not r.is_error, f"rich call failed: {r}")
    check(r.structured_content and L["rich_check"](r.structured_content), f"structured: {r.structured_content}")
    check(json.loads(text_of(r)) == r.structured_content, f"text mirrors structured: {r}")

    tool, args, where = L["bad"]
    r = await client.call_tool(tool, args)
    check(r.is_error and "invalid arguments" in text_of(r) and where in text_of(r), f"bad argument: {r}")
    tool, args, message = L["guest_bad"]
    r = await client.call_tool(tool, args)
    check(r.is_error and message in text_of(r), f"the tool's own argument check: {r}")
    tool, args, message = L["raise"]
    r = await client.call_tool(tool, args)
    check(r.is_error and message in text_of(r), f"an uncaught exception: {r}")

    # Limits: each ends that call only; the next call of the same component runs.
    async def still_works():
        r = await client.call_tool(L["alloc"], {"mib": 1})
        check(not r.is_error and text_of(r) == "allocated 1 MiB", f"the next call: {r}")

    r = await client.call_tool(L["spin"], {})
    check(r.is_error and "ran out of fuel" in text_of(r), f"fuel: {r}")
    print("fuel:", text_of(r), file=sys.stderr)
    await still_works()
    r = await client.call_tool(L["alloc"], {"mib": 256})
    check(r.is_error and "exceeded its memory limit of 64 MiB" in text_of(r), f"memory: {r}")
    print("memory:", text_of(r), file=sys.stderr)
    await still_works()
    r = await client.call_tool(L["echo"], {"text": "still here"})
    check(not r.is_error and text_of(r) == "still here", f"echo after the limits: {r}")


async def tenant(client, mode):
    want = sorted(os.environ["TOOLHOST_CLIENT_TOOLS"].split(","))
    got = sorted(t.name for t in (await client.list_tools()).tools)
    check(got == want, f"the tenant's tools: {got}, expected {want}")
    r = await client.call_tool("echo", {"text": "mine"})
    check(not r.is_error and text_of(r) == "mine", f"echo: {r}")

    async def failure(name):
        try:
            r = await client.call_tool(name, {})
        except MCPError as e:
            return ("error", str(e).replace(name, "TOOL"))
        check(r.is_error, f"{name} must fail: {r}")
        return ("tool error", text_of(r).replace(name, "TOOL"))

    forbidden = os.environ["TOOLHOST_CLIENT_FORBIDDEN"]
    a, b = await failure(forbidden), await failure("no_such_tool_anywhere")
    check(a == b, f"another tenant's tool: {a}; a missing tool: {b}")


async def served(client, mode):
    from mcp.types import PromptReference, ResourceTemplateReference

    notes = open(os.environ["TOOLHOST_CLIENT_NOTES"], encoding="utf-8").read()
    uris = [str(r.uri) for r in (await client.list_resources()).resources]
    check("file:///data/notes.txt" in uris, f"resources/list has the files: {uris}")
    templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
    check("file:///data/{+path}" in templates, f"templates: {templates}")
    r = await client.read_resource("file:///data/notes.txt")
    check(len(r.contents) == 1 and r.contents[0].text == notes, f"read notes.txt: {r}")
    check(r.contents[0].mime_type == "text/plain", f"mime type: {r.contents[0]}")

    async def read_error(uri):
        try:
            r = await client.read_resource(uri)
        except MCPError as e:
            return str(e)
        raise AssertionError(f"reading {uri} must fail: {r}")

    e = await read_error("file:///data/no-such-file.txt")
    check("not found" in e, f"a missing file: {e}")
    e = await read_error("file:///etc/passwd")
    check("not found" in e and "/etc" in e, f"a URI no component serves: {e}")

    prompts = {p.name: p for p in (await client.list_prompts()).prompts}
    check({"code_review", "summarize", "explain_error"} <= set(prompts), f"prompts: {sorted(prompts)}")
    args = {a.name: a for a in prompts["code_review"].arguments or []}
    check(args.get("code") and args["code"].required, f"code_review's arguments: {args}")
    p = await client.get_prompt("code_review", {"code": "fn main() {}", "language": "rust"})
    text = p.messages[0].content.text
    check(p.messages[0].role == "user" and "fn main() {}" in text and "rust" in text, f"code_review: {p}")
    try:
        await client.get_prompt("code_review", {})
        raise AssertionError("a get without a required argument must fail")
    except MCPError as e:
        check("code" in str(e), f"missing argument: {e}")

    c = await client.complete(PromptReference(type="ref/prompt", name="code_review"), {"name": "language", "value": "ru"})
    check("rust" in c.completion.values, f"complete language: {c}")
    c = await client.complete(
        ResourceTemplateReference(type="ref/resource", uri="file:///data/{+path}"), {"name": "path", "value": "no"}
    )
    check("notes.txt" in c.completion.values, f"complete path: {c}")

    if os.environ.get("TOOLHOST_CLIENT_HOSTILE"):
        e = await read_error("hostile://big/4000000")
        check("max-output" in e, f"a huge read: {e}")
        e = await read_error("hostile://spin")
        check("timed out" in e, f"a runaway read: {e}")
        r = await client.read_resource("file:///data/notes.txt")
        check(r.contents[0].text == notes, f"still serving: {r}")


async def subscribe(client, mode):
    uri = "file:///data/notes.txt"
    try:
        await client.subscribe_resource("file:///nowhere/x")
        raise AssertionError("subscribing to a URI nobody serves must fail")
    except MCPError as e:
        check("not found" in str(e), f"subscribe to nothing: {e}")
    await client.subscribe_resource(uri)
    print("READY", flush=True)
    with anyio.fail_after(30):
        await UPDATED.wait()
    print("UPDATED", UPDATED_URIS[0], flush=True)
    await client.unsubscribe_resource(uri)


async def listen_served(client, mode):
    from mcp.client.subscriptions import PromptsListChanged, ResourcesListChanged, ResourceUpdated

    uri = "file:///data/notes.txt"
    async with client.listen(
        prompts_list_changed=True, resources_list_changed=True, resource_subscriptions=[uri, "file:///nowhere/x"]
    ) as sub:
        h = sub.honored
        check(h.prompts_list_changed and h.resources_list_changed, f"honored: {h}")
        check(list(h.resource_subscriptions or []) == [uri], f"honored URIs (only what is served): {h}")
        print("READY", flush=True)
        seen = set()
        updated = None
        with anyio.fail_after(30):
            async for event in sub:
                print("event", event, file=sys.stderr)
                seen.add(type(event).__name__)
                if isinstance(event, ResourceUpdated):
                    updated = str(event.uri)
                want = {PromptsListChanged.__name__, ResourcesListChanged.__name__, ResourceUpdated.__name__}
                if want <= seen:
                    break
    print("UPDATED", updated, flush=True)


SCENARIOS = {
    "listen_served": listen_served,
    "subscribe": subscribe,
    "served": served,
    "tenant": tenant,
    "languages": languages,
    "basic": basic,
    "cancel": cancel,
    "flood": flood,
    "list_changed": list_changed,
    "elicit": elicit,
}
LOGS = []
CHANGED = None
UPDATED = None
UPDATED_URIS = []
ARGS = None


async def main():
    global CHANGED, ARGS, UPDATED
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--mode", default="auto")
    ap.add_argument("--http")
    ap.add_argument("--lang", choices=sorted(LANGS), default=os.environ.get("TOOLHOST_CLIENT_LANG"), help="for `languages`")
    argv = sys.argv[1:]
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    a = ap.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    ARGS = a
    CHANGED = anyio.Event()
    UPDATED = anyio.Event()

    async def on_log(params):
        LOGS.append(params.data)

    async def on_message(message):
        if getattr(message, "method", None) == "notifications/tools/list_changed" or "ToolListChanged" in type(
            message
        ).__name__:
            CHANGED.set()
        inner = getattr(message, "root", None)
        if inner is not None and "ToolListChanged" in type(inner).__name__:
            CHANGED.set()
        for m in (message, inner):
            if m is not None and "ResourceUpdated" in type(m).__name__:
                UPDATED_URIS.append(str(m.params.uri))
                UPDATED.set()

    if a.http:
        server = a.http
        token = os.environ.get("TOOLHOST_CLIENT_TOKEN")
        if token:
            from mcp.client.streamable_http import streamable_http_client
            from mcp.shared._httpx_utils import create_mcp_http_client

            client = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
            server = streamable_http_client(a.http, http_client=client)
    else:
        check(command, "a server command (after --) or --http URL")
        server = StdioServerParameters(command=command[0], args=command[1:])
    async with Client(
        server,
        mode=a.mode,
        log_level="info",
        logging_callback=on_log,
        message_handler=on_message,
        elicitation_callback=on_elicit,
        list_roots_callback=on_roots,
        read_timeout_seconds=60,
    ) as client:
        print("protocol", client.protocol_version, file=sys.stderr)
        await SCENARIOS[a.scenario](client, a.mode)
    print("ok", a.scenario, flush=True)


if __name__ == "__main__":
    anyio.run(main)
