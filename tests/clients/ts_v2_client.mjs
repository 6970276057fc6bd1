// Drive `toolhost serve --http` with v2 of the official MCP TypeScript SDK
// (npm @modelcontextprotocol/client, the 2026-07-28 client; installed by
// scripts/install-test-deps.sh).
//
//   node ts_v2_client.mjs SCENARIO [--mode auto|legacy] --http URL
//
// `--mode` is the SDK's version negotiation: `auto` (the default here)
// speaks 2026-07-28 to a server that offers it, `legacy` a 2025-11-25
// session.
//
// Scenarios:
//   served  call a tool, list and read resources, list and get prompts,
//           complete a prompt argument (the files and prompts examples);
//   task    run a task of the conformance tools: create it, poll tasks/get
//           until it completes, and cancel another (tasks extension).
// Exit status 0 and a last line `ok SCENARIO` mean every check passed. Used
// by tests/integration/served.rs and tests/integration/tasks.rs.

import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { readFileSync } from "node:fs";

const here = path.dirname(fileURLToPath(import.meta.url));
const deps = process.env.TOOLHOST_TEST_DEPS ?? path.join(here, "../../.test-deps");
const require = createRequire(path.join(deps, "node", "package.json"));
const { Client, StreamableHTTPClientTransport, ProtocolError } = require("@modelcontextprotocol/client");

const TASKS = "io.modelcontextprotocol/tasks";

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

const textOf = (r) => r.content.filter((c) => c.type === "text").map((c) => c.text).join("\n");

// Any result, as the server sent it (for the methods the SDK has no helper for).
const anyResult = { "~standard": { version: 1, vendor: "toolhost-test", validate: (value) => ({ value }) } };

let mode = "auto";

async function served(client) {
  const want = mode === "auto" ? "2026-07-28" : "2025-11-25";
  check(client.getNegotiatedProtocolVersion() === want, `protocol ${client.getNegotiatedProtocolVersion()}`);
  const r = await client.callTool({ name: "list_dir", arguments: { path: "/data" } });
  check(!r.isError && textOf(r).includes("notes.txt"), `list_dir: ${JSON.stringify(r)}`);

  const notes = readFileSync(process.env.TOOLHOST_CLIENT_NOTES, "utf8");
  const uris = (await client.listResources()).resources.map((x) => x.uri);
  check(uris.includes("file:///data/notes.txt"), `resources/list: ${uris}`);
  const templates = (await client.listResourceTemplates()).resourceTemplates.map((t) => t.uriTemplate);
  check(templates.includes("file:///data/{+path}"), `templates: ${templates}`);
  const read = await client.readResource({ uri: "file:///data/notes.txt" });
  check(read.contents.length === 1 && read.contents[0].text === notes, `read: ${JSON.stringify(read)}`);
  check(read.contents[0].mimeType === "text/plain", `mime type: ${JSON.stringify(read.contents[0])}`);
  try {
    await client.readResource({ uri: "file:///etc/passwd" });
    throw new Error("reading a URI no component serves must fail");
  } catch (e) {
    check(e instanceof ProtocolError && e.message.includes("not found"), `a URI nobody serves: ${e}`);
  }

  const prompts = Object.fromEntries((await client.listPrompts()).prompts.map((p) => [p.name, p]));
  check("code_review" in prompts && "summarize" in prompts, `prompts: ${Object.keys(prompts)}`);
  const p = await client.getPrompt({ name: "code_review", arguments: { code: "fn main() {}", language: "rust" } });
  const text = p.messages[0].content.text;
  check(p.messages[0].role === "user" && text.includes("fn main() {}") && text.includes("rust"), `get: ${JSON.stringify(p)}`);
  const c = await client.complete({
    ref: { type: "ref/prompt", name: "code_review" },
    argument: { name: "language", value: "ru" },
  });
  check(c.completion.values.includes("rust"), `complete: ${JSON.stringify(c)}`);
}

async function waitFor(client, taskId, done) {
  const started = Date.now();
  for (;;) {
    const t = await client.request({ method: "tasks/get", params: { taskId } }, anyResult);
    if (done(t)) return t;
    check(Date.now() - started < 30000, `task ${taskId} still ${t.status} after 30 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// 2026-07-28: the SDK's own `tools/call` does not take a task result; the
// official tasks extension package (@modelcontextprotocol/ext-tasks) runs the
// task protocol over the SDK client, with requests framed for 2026-07-28 and
// posted as they are (its "raw dispatch").
async function taskV2(client, url) {
  const ext = path.join(deps, "node/node_modules/@modelcontextprotocol/ext-tasks/dist/client/index.js");
  const { createTaskSessionFromClient, resultFromTaskOutcome } = await import(ext);
  let nextId = 1;
  // The request as the extension framed it, in a JSON-RPC envelope of ours.
  const rawDispatch = async (framed, options) => {
    const request = { jsonrpc: "2.0", id: nextId++, ...framed };
    const name = request.params?.name ?? request.params?.taskId ?? request.params?.uri;
    const headers = {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-protocol-version": "2026-07-28",
      "mcp-method": request.method,
      ...(name ? { "mcp-name": String(name) } : {}),
    };
    const r = await fetch(url, { method: "POST", headers, body: JSON.stringify(request), signal: options?.signal });
    const body = await r.text();
    if (process.env.TOOLHOST_CLIENT_DEBUG) console.error(">>", JSON.stringify(request), "<<", r.status, body);
    if ((r.headers.get("content-type") ?? "").includes("text/event-stream")) {
      const data = body.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).filter(Boolean);
      return JSON.parse(data[data.length - 1]);
    }
    return JSON.parse(body);
  };
  const session = createTaskSessionFromClient(client, {
    endpointId: "toolhost-test",
    rawDispatch,
    v2RequestFraming: {
      protocolVersion: "2026-07-28",
      clientInfo: { name: "toolhost-test-ts-v2", version: "0.1.0" },
      clientCapabilities: { extensions: { [TASKS]: {} } },
    },
  });
  try {
    const execution = await session.callTool("slow_compute", { seconds: 1.5, label: "v2" });
    const { outcome } = await execution.settle();
    const result = resultFromTaskOutcome(outcome);
    check(textOf(result) === "Computed v2 in 1.5s", `its result: ${JSON.stringify(outcome)}`);
    const long = await session.callTool("slow_compute", { seconds: 60 });
    await long.cancel();
    const settled = await long.settle();
    check(settled.outcome.status === "cancelled", `cancelled: ${JSON.stringify(settled.outcome)}`);
  } finally {
    await session.close();
  }
}

async function task(client, url) {
  check(client.getServerCapabilities()?.extensions?.[TASKS], "the server advertises the tasks extension");
  if (mode === "auto") return taskV2(client, url);
  const created = await client.request(
    { method: "tools/call", params: { name: "slow_compute", arguments: { seconds: 1.5, label: "v2" } } },
    anyResult,
  );
  // (The 2025-era decoding keeps the task's fields but not `resultType`.)
  check(created.taskId && created.status === "working", `a task: ${JSON.stringify(created)}`);
  const done = await waitFor(client, created.taskId, (t) => t.status !== "working");
  check(done.status === "completed", `completed: ${JSON.stringify(done)}`);
  check(textOf(done.result) === "Computed v2 in 1.5s", `its result: ${JSON.stringify(done.result)}`);

  const long = await client.request(
    { method: "tools/call", params: { name: "slow_compute", arguments: { seconds: 60 } } },
    anyResult,
  );
  const ack = await client.request({ method: "tasks/cancel", params: { taskId: long.taskId } }, anyResult);
  check(
    (mode === "legacy" || ack.resultType === "complete") && !("status" in ack) && !("taskId" in ack),
    `cancel ack: ${JSON.stringify(ack)}`,
  );
  const cancelled = await waitFor(client, long.taskId, (t) => t.status !== "working");
  check(cancelled.status === "cancelled", `cancelled: ${JSON.stringify(cancelled)}`);
}

const scenarios = { served, task };

async function main() {
  const argv = process.argv.slice(2);
  const scenario = argv[0];
  check(scenario in scenarios, `a scenario: ${Object.keys(scenarios)}`);
  const http = argv[argv.indexOf("--http") + 1];
  if (argv.includes("--mode")) mode = argv[argv.indexOf("--mode") + 1];
  check(mode === "auto" || mode === "legacy", `--mode auto|legacy, not ${mode}`);
  check(argv.includes("--http") && http, "--http URL");
  const client = new Client(
    { name: "toolhost-test-ts-v2", version: "0.1.0" },
    { capabilities: { extensions: { [TASKS]: {} } }, versionNegotiation: { mode } },
  );
  await client.connect(new StreamableHTTPClientTransport(new URL(http)));
  try {
    await scenarios[scenario](client, http);
  } finally {
    await client.close();
  }
  console.log("ok", scenario);
}

main().catch((e) => {
  console.error(e?.stack ?? String(e));
  if (e?.cause) console.error("cause:", e.cause?.stack ?? e.cause);
  process.exit(1);
});
