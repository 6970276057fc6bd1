// Drive `toolhost serve` with the official MCP TypeScript SDK
// (npm @modelcontextprotocol/sdk, installed by scripts/install-test-deps.sh).
//
//   node mcp_client.mjs SCENARIO --http URL
//   node mcp_client.mjs SCENARIO -- COMMAND [ARGS...]        (stdio)
//
// Scenarios: basic, cancel, flood and list_changed as in
// tests/clients/mcp_client.py; served (resources, prompts, completions) and
// task (a task of the conformance tools). Exit status 0 and a last line `ok SCENARIO` mean every check
// passed. Used by tests/integration/mcp.rs.

import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const deps = process.env.TOOLHOST_TEST_DEPS ?? path.join(here, "../../.test-deps");
const require = createRequire(path.join(deps, "node", "package.json"));
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StdioClientTransport } = require("@modelcontextprotocol/sdk/client/stdio.js");
const { StreamableHTTPClientTransport } = require("@modelcontextprotocol/sdk/client/streamableHttp.js");
const {
  LoggingMessageNotificationSchema,
  ToolListChangedNotificationSchema,
  McpError,
} = require("@modelcontextprotocol/sdk/types.js");

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

const textOf = (r) => r.content.filter((c) => c.type === "text").map((c) => c.text).join("\n");
const logs = [];
let changed;
const listChanged = new Promise((resolve) => (changed = resolve));

async function basic(client) {
  const tools = Object.fromEntries((await client.listTools()).tools.map((t) => [t.name, t]));
  for (const name of ["echo", "json_query", "log_and_progress", "test_error_handling"]) {
    check(name in tools, `tool ${name} is listed`);
  }
  check(tools.echo.inputSchema.type === "object", "echo's input schema is an object schema");
  check(tools.echo.annotations?.readOnlyHint === true, "echo is read-only");
  check(tools.json_query.outputSchema, "json_query declares an output schema");

  let r = await client.callTool({ name: "echo", arguments: { text: "héllo" } });
  check(!r.isError && textOf(r) === "héllo", `echo: ${JSON.stringify(r)}`);

  r = await client.callTool({ name: "json_query", arguments: { json: '{"a": [1, 2]}', path: "a[1]" } });
  check(!r.isError && r.structuredContent?.value === 2, `structured: ${JSON.stringify(r)}`);

  const progress = [];
  r = await client.callTool({ name: "log_and_progress", arguments: { steps: 3, ms: 20 } }, undefined, {
    onprogress: (p) => progress.push(p),
  });
  check(!r.isError && textOf(r) === "done 3 steps", `log_and_progress: ${JSON.stringify(r)}`);
  check(
    JSON.stringify(progress.map((p) => p.progress)) === "[1,2,3]" && progress[2].total === 3,
    `progress: ${JSON.stringify(progress)}`,
  );
  check(logs.length >= 3, `log messages at the default level (info): ${JSON.stringify(logs)}`);
  await client.setLoggingLevel("error");
  logs.length = 0;
  await client.callTool({ name: "log_and_progress", arguments: { steps: 2, ms: 1 } });
  check(logs.length === 0, `no info messages at level error: ${JSON.stringify(logs)}`);

  r = await client.callTool({ name: "test_error_handling", arguments: {} });
  check(r.isError && textOf(r).includes("intentionally returns an error"), `tool error: ${JSON.stringify(r)}`);

  r = await client.callTool({ name: "echo", arguments: { text: 5 } });
  check(r.isError && textOf(r).includes("invalid arguments"), `invalid arguments: ${JSON.stringify(r)}`);

  try {
    r = await client.callTool({ name: "no_such_tool", arguments: {} });
    throw new Error(`an unknown tool must be a JSON-RPC error, got ${JSON.stringify(r)}`);
  } catch (e) {
    check(e instanceof McpError && e.message.includes("unknown tool"), `unknown tool error: ${e}`);
  }
}

async function cancel(client) {
  const started = Date.now();
  const abort = new AbortController();
  const call = client.callTool({ name: "spin", arguments: {} }, undefined, { signal: abort.signal });
  setTimeout(() => abort.abort("enough"), 500);
  let failed = false;
  try {
    await call;
  } catch {
    failed = true;
  }
  check(failed, "the cancelled call rejects");
  // The guest must have been stopped: `hostile` allows one call at a time.
  const r = await client.callTool({ name: "sleep", arguments: { ms: 1 } }, undefined, { timeout: 10000 });
  check(!r.isError && textOf(r) === "slept", `next call: ${JSON.stringify(r)}`);
  const elapsed = (Date.now() - started) / 1000;
  check(elapsed < 5, `the next call waited ${elapsed}s for the cancelled guest`);
}

async function flood(client) {
  let r = await client.callTool({ name: "flood", arguments: { bytes: 2000000 } });
  console.error("flood:", r.isError, textOf(r).slice(0, 200));
  r = await client.callTool({ name: "echo", arguments: { text: "still here" } });
  check(!r.isError && textOf(r) === "still here", `echo after flood: ${JSON.stringify(r)}`);
}

async function list_changed(client) {
  const before = (await client.listTools()).tools.map((t) => t.name).sort();
  console.log("READY", JSON.stringify(before));
  const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error("no tools/list_changed in 30 s")), 30000));
  await Promise.race([listChanged, timeout]);
  const after = (await client.listTools()).tools.map((t) => t.name).sort();
  console.log("TOOLS", JSON.stringify(after));
}

// Resources, prompts and completions (the files and prompts examples).
async function served(client) {
  const { readFileSync } = await import("node:fs");
  const notes = readFileSync(process.env.TOOLHOST_CLIENT_NOTES, "utf8");
  const uris = (await client.listResources()).resources.map((x) => x.uri);
  check(uris.includes("file:///data/notes.txt"), `resources/list: ${uris}`);
  const read = await client.readResource({ uri: "file:///data/notes.txt" });
  check(read.contents.length === 1 && read.contents[0].text === notes, `read: ${JSON.stringify(read)}`);
  try {
    await client.readResource({ uri: "file:///etc/passwd" });
    throw new Error("reading a URI no component serves must fail");
  } catch (e) {
    check(e instanceof McpError && e.message.includes("not found"), `a URI nobody serves: ${e}`);
  }
  const prompts = (await client.listPrompts()).prompts.map((p) => p.name);
  check(prompts.includes("code_review"), `prompts: ${prompts}`);
  const p = await client.getPrompt({ name: "code_review", arguments: { code: "fn main() {}", language: "rust" } });
  check(p.messages[0].content.text.includes("fn main() {}"), `get: ${JSON.stringify(p)}`);
  const c = await client.complete({ ref: { type: "ref/prompt", name: "code_review" }, argument: { name: "language", value: "ru" } });
  check(c.completion.values.includes("rust"), `complete: ${JSON.stringify(c)}`);
}

// A task (tasks extension) on a 2025-11-25 session: the SDK's requests, its
// own result schema loosened (it predates the extension's result shapes).
async function task(client) {
  const { z } = require("zod");
  const any = z.object({}).passthrough();
  const created = await client.request(
    { method: "tools/call", params: { name: "slow_compute", arguments: { seconds: 1, label: "v1" } } },
    any,
  );
  check(created.taskId && created.status === "working", `a task: ${JSON.stringify(created)}`);
  const started = Date.now();
  let t;
  do {
    await new Promise((r) => setTimeout(r, 100));
    t = await client.request({ method: "tasks/get", params: { taskId: created.taskId } }, any);
    check(Date.now() - started < 30000, `still ${t.status} after 30 s`);
  } while (t.status === "working");
  check(t.status === "completed" && textOf(t.result) === "Computed v1 in 1s", `completed: ${JSON.stringify(t)}`);
}

const scenarios = { basic, cancel, flood, list_changed, served, task };

async function main() {
  const argv = process.argv.slice(2);
  const dash = argv.indexOf("--");
  const command = dash >= 0 ? argv.slice(dash + 1) : [];
  const opts = dash >= 0 ? argv.slice(0, dash) : argv;
  const scenario = opts[0];
  check(scenario in scenarios, `a scenario: ${Object.keys(scenarios)}`);
  const http = opts.indexOf("--http") >= 0 ? opts[opts.indexOf("--http") + 1] : undefined;
  const transport = http
    ? new StreamableHTTPClientTransport(new URL(http))
    : new StdioClientTransport({ command: command[0], args: command.slice(1), stderr: "inherit" });
  // The tasks extension declared: only the `task` scenario's tools use it.
  const client = new Client(
    { name: "toolhost-test-ts", version: "0.1.0" },
    { capabilities: { extensions: { "io.modelcontextprotocol/tasks": {} } } },
  );
  client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => logs.push(n.params.data));
  client.setNotificationHandler(ToolListChangedNotificationSchema, () => changed());
  await client.connect(transport);
  try {
    await scenarios[scenario](client);
  } finally {
    await client.close();
  }
  console.log("ok", scenario);
}

main().catch((e) => {
  console.error(e?.stack ?? String(e));
  process.exit(1);
});
