//! Tasks (MCP tasks extension, SEP-2663) through the real `toolhost serve`,
//! over the conformance tools: what the conformance suite does not check.
//! A task outlives its request and its client's connection; `tasks/cancel`
//! stops its guest at once (the audit log shows the call cancelled, long
//! before its own end); one tenant cannot see or stop another's task (the
//! same error as an id that never existed); a server holding `[tasks] max`
//! tasks answers further calls in their request; a 2025-11-25 session over
//! stdio gets tasks too, and a task's question waits for `tasks/update`; a
//! question its client cannot answer fails at once.

use crate::mcp::{BIN, HttpServe, LIMIT, Sdk, Via, client, copy_tool, http_post, run_client};
use crate::mcp_2026::{body_json, meta};
use crate::support::{ToolDir, conformance_dir};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TASKS: &str = "io.modelcontextprotocol/tasks";

/// A 2026-07-28 request from a client that follows tasks; the JSON body.
fn rpc(addr: &str, token: Option<&str>, method: &str, params: Value, name: &str) -> Value {
    rpc_as(
        addr,
        token,
        method,
        params,
        name,
        json!({"extensions": {TASKS: {}}}),
    )
}

/// [`rpc`] from a client of capabilities `caps`.
fn rpc_as(
    addr: &str,
    token: Option<&str>,
    method: &str,
    params: Value,
    name: &str,
    caps: Value,
) -> Value {
    let mut p = params;
    p["_meta"] = meta(caps);
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": p});
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", method),
        ("Mcp-Name", name),
    ];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    let (status, resp) = http_post(addr, &headers, &body.to_string());
    assert!(status == 200 || status == 400, "{resp}");
    body_json(&resp)
}

fn call(addr: &str, token: Option<&str>, tool: &str, args: Value) -> Value {
    rpc(
        addr,
        token,
        "tools/call",
        json!({"name": tool, "arguments": args}),
        tool,
    )
}

fn task_get(addr: &str, token: Option<&str>, id: &str) -> Value {
    rpc(addr, token, "tasks/get", json!({"taskId": id}), id)
}

/// The id of the task `v` (a `tools/call` response) created.
fn task_id(v: &Value) -> String {
    assert_eq!(v["result"]["resultType"], "task", "{v}");
    v["result"]["taskId"].as_str().unwrap().to_string()
}

/// Poll task `id` until its status is `want`; how long that took.
fn wait_status(addr: &str, token: Option<&str>, id: &str, want: &str) -> (Duration, Value) {
    let start = Instant::now();
    loop {
        let v = task_get(addr, token, id);
        if v["result"]["status"] == want {
            return (start.elapsed(), v);
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "task {id} never became {want}: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn serve(dir: &ToolDir, config: &str) -> HttpServe {
    let cfg = dir.write("toolhost.toml", config);
    let audit = dir.path().join("audit.jsonl");
    HttpServe::start(&[
        "--watch",
        "false",
        "--config",
        &cfg.display().to_string(),
        "--audit",
        &audit.display().to_string(),
        "--tools",
        &conformance_dir().display().to_string(),
    ])
}

fn cache() -> String {
    format!(
        "[engine]\ncache-dir = \"{}\"\n",
        crate::support::root().join("target/test-cache").display()
    )
}

#[test]
fn a_task_outlives_its_request_and_cancel_stops_its_guest_at_once() {
    let dir = ToolDir::new();
    let server = serve(&dir, &cache());
    let addr = server.addr();
    // A minute of work: the request is answered with a task at once, and
    // its connection closes (one request per connection here).
    let id = task_id(&call(&addr, None, "slow_compute", json!({"seconds": 60})));
    std::thread::sleep(Duration::from_millis(1500));
    let v = task_get(&addr, None, &id);
    assert_eq!(v["result"]["status"], "working", "{v}");

    let ack = rpc(&addr, None, "tasks/cancel", json!({"taskId": id}), &id);
    assert_eq!(ack["result"], json!({"resultType": "complete"}), "{ack}");
    let (took, v) = wait_status(&addr, None, &id, "cancelled");
    assert!(v["result"].get("result").is_none(), "{v}");
    // Not a speed test: the call would have run for a minute.
    assert!(took < Duration::from_secs(10), "cancel took {took:?}");
    // The call ended as cancelled (the guest was stopped), not later. The
    // task's status changes when it is cancelled; the call's record is
    // written once the guest has stopped, a moment after (longer on a
    // busy machine), and well before the minute the call would have run.
    let cancelled = |audit: &str| {
        audit
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|r| r["tool"] == "slow_compute" && r["outcome"] == "cancelled")
    };
    let audit = audit_once(&dir.path().join("audit.jsonl"), cancelled);
    assert!(
        cancelled(&audit),
        "no cancelled call of slow_compute in the audit log:\n{audit}"
    );
    // Cancelling an ended task is the same empty ack.
    let ack = rpc(&addr, None, "tasks/cancel", json!({"taskId": id}), &id);
    assert_eq!(ack["result"], json!({"resultType": "complete"}), "{ack}");
}

/// The audit log at `path` once `holds` is true of it, or as it is after
/// 10 s: its writer writes a call's line after the reply (the default
/// fsync policy holds no reply for its line).
fn audit_once(path: &std::path::Path, holds: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let audit = match std::fs::read_to_string(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            read => read.unwrap(),
        };
        if holds(&audit) || started.elapsed() > Duration::from_secs(10) {
            return audit;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sha(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[test]
fn a_tenant_can_neither_see_nor_stop_another_tenants_task() {
    let dir = ToolDir::new();
    for t in ["a", "b"] {
        let d = dir.path().join(format!("tools-{t}"));
        std::fs::create_dir(&d).unwrap();
        copy_tool(&conformance_dir(), "conformance", &d);
    }
    let config = format!(
        "{}\n[[tenant]]\nname = \"alpha\"\ntools = [\"tools-a/\"]\ntoken-sha256 = [\"{}\"]\n\n[[tenant]]\nname = \"beta\"\ntools = [\"tools-b/\"]\ntoken-sha256 = [\"{}\"]\n",
        cache(),
        sha("alpha-task-token"),
        sha("beta-task-token")
    );
    let server = serve(&dir, &config);
    let addr = server.addr();
    let (a, b) = (Some("alpha-task-token"), Some("beta-task-token"));
    let id = task_id(&call(&addr, a, "slow_compute", json!({"seconds": 30})));
    assert_eq!(task_get(&addr, a, &id)["result"]["status"], "working");

    // Beta asking for alpha's task, and for a task that never existed: the
    // same error, but for the id.
    let none = "00000000-0000-4000-8000-000000000000";
    let shown = |v: Value, id: &str| v.to_string().replace(id, "ID");
    for method in ["tasks/get", "tasks/cancel"] {
        let other = rpc(&addr, b, method, json!({"taskId": id}), &id);
        let missing = rpc(&addr, b, method, json!({"taskId": none}), none);
        assert_eq!(other["error"]["code"], -32602, "{other}");
        assert_eq!(shown(other, &id), shown(missing, none));
    }
    let update = rpc(
        &addr,
        b,
        "tasks/update",
        json!({"taskId": id, "inputResponses": {}}),
        &id,
    );
    assert_eq!(update["error"]["code"], -32602, "{update}");
    // Beta's cancel did not touch it.
    assert_eq!(task_get(&addr, a, &id)["result"]["status"], "working");
    rpc(&addr, a, "tasks/cancel", json!({"taskId": id}), &id);
    wait_status(&addr, a, &id, "cancelled");
}

/// A server of the conformance tools for tenant `alpha` (bearer `token`),
/// with 40,000 output bytes a minute.
fn alpha_with_an_output_quota(token: &str) -> (ToolDir, HttpServe) {
    let dir = ToolDir::new();
    std::fs::create_dir(dir.path().join("tools-a")).unwrap();
    copy_tool(
        &conformance_dir(),
        "conformance",
        &dir.path().join("tools-a"),
    );
    let config = format!(
        "{}\n[[tenant]]\nname = \"alpha\"\ntools = [\"tools-a/\"]\ntoken-sha256 = [\"{}\"]\noutput-bytes-per-minute = \"40000\"\n",
        cache(),
        sha(token),
    );
    let server = serve(&dir, &config);
    (dir, server)
}

/// Poll task `id`, answered with `status` each time, until the output
/// quota refuses a poll: how many were answered, and the refusal.
fn polls_until_refused(addr: &str, token: Option<&str>, id: &str, status: &str) -> (usize, Value) {
    let mut polls = 0;
    loop {
        let v = task_get(addr, token, id);
        if v.get("error").is_some() {
            assert_eq!(v["error"]["code"], -32000, "{v}");
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(msg.contains("output-bytes-per-minute = 40000"), "{msg}");
            return (polls, v);
        }
        assert_eq!(v["result"]["status"], status, "{v}");
        polls += 1;
        assert!(polls < 10, "polling is never charged: {polls} answered");
    }
}

#[test]
fn polling_a_kept_result_again_is_charged_to_the_output_quota() {
    // A task's result is kept for `[tasks] keep`: without a charge, polling
    // it made the host send its bytes again and again for free.
    let (dir, server) = alpha_with_an_output_quota("alpha-poll-token");
    let addr = server.addr();
    let a = Some("alpha-poll-token");
    let label = "x".repeat(8000);
    let id = task_id(&call(
        &addr,
        a,
        "slow_compute",
        json!({"seconds": 0.3, "label": label}),
    ));
    let (_, first) = wait_status(&addr, a, &id, "completed");
    let text = first["result"]["result"]["content"][0]["text"]
        .as_str()
        .unwrap();
    assert!(text.contains(&label), "{first}");
    // The call paid for its result (8 KB of 40 KB a minute). Each copy
    // after the first costs as much: a few more, then refused.
    let (copies, refused) = polls_until_refused(&addr, a, &id, "completed");
    assert!(
        (3..=5).contains(&copies),
        "{copies} copies before the refusal"
    );
    assert!(refused["error"]["data"]["retryAfter"].as_u64().unwrap() >= 1);
    // The budget is spent: a new call is refused at the door too.
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "test_simple_text", "arguments": {}}});
    let (status, resp) = http_post(
        &addr,
        &[
            ("MCP-Protocol-Version", "2026-07-28"),
            ("Mcp-Method", "tools/call"),
            ("Mcp-Name", "test_simple_text"),
            ("Authorization", "Bearer alpha-poll-token"),
        ],
        &body.to_string(),
    );
    assert_eq!(status, 429, "{resp}");
    assert!(resp.contains("output-bytes-per-minute"), "{resp}");
    // The refusal is an audited decision (its line comes after the reply).
    let refused = |audit: &str| {
        audit
            .lines()
            .any(|l| l.contains("over_quota") && l.contains(&format!("tasks/get {id}")))
    };
    let audit = audit_once(&dir.path().join("audit.jsonl"), refused);
    assert!(refused(&audit), "{audit}");
}

/// A review's case: a running task's questions go out with every
/// `tasks/get` while they wait; a tool quoting its arguments in one made
/// the host send them again and again for free. Each poll that carries
/// them is charged to the output quota.
#[test]
fn polling_a_tasks_questions_is_charged_to_the_output_quota() {
    let (_dir, server) = alpha_with_an_output_quota("alpha-ask-token");
    let addr = server.addr();
    let a = Some("alpha-ask-token");
    let name = "x".repeat(8000);
    let id = task_id(&rpc_as(
        &addr,
        a,
        "tools/call",
        json!({"name": "confirm_delete", "arguments": {"filename": name}}),
        "confirm_delete",
        json!({"extensions": {TASKS: {}}, "elicitation": {}}),
    ));
    let (_, asked) = wait_status(&addr, a, &id, "input_required");
    assert!(asked.to_string().contains(&name), "{asked}");
    let (polls, _) = polls_until_refused(&addr, a, &id, "input_required");
    assert!((3..=5).contains(&polls), "{polls} polls before the refusal");
}

/// A review's case: each tenant kept up to `[tasks] max` results of up to
/// `max-output` each, outside every memory bound. Now the results of one
/// server's ended tasks are held within `[tasks] max-bytes`: one already
/// returned makes room for a new one, one not yet returned is never
/// dropped for it, and one larger than the bound ends its task failed,
/// saying why.
#[test]
fn kept_task_results_stay_within_max_bytes() {
    let dir = ToolDir::new();
    let server = serve(
        &dir,
        &format!("{}[tasks]\nmax-bytes = \"20 KiB\"\n", cache()),
    );
    let addr = server.addr();
    let run = |label: &str, status: &str| {
        let id = task_id(&call(
            &addr,
            None,
            "slow_compute",
            json!({"seconds": 0.2, "label": label}),
        ));
        let (_, v) = wait_status(&addr, None, &id, status);
        (id, v)
    };
    let eight = "x".repeat(8000);
    // About 8.5 KB each as held: two fit, a third needs room.
    let (first, v) = run(&eight, "completed");
    assert!(v.to_string().contains(&eight), "{v}");
    let second = task_id(&call(
        &addr,
        None,
        "slow_compute",
        json!({"seconds": 0.2, "label": eight}),
    ));
    // Until the second has ended (its call's audit line), not read.
    let ended = |audit: &str| {
        audit
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["tool"] == "slow_compute" && r["outcome"] == "ok")
            .count()
            >= 2
    };
    assert!(ended(&audit_once(&dir.path().join("audit.jsonl"), ended)));
    let (third, _) = run(&eight, "completed");
    // The first was returned already: it made room. The second was not:
    // it is still there.
    let gone = task_get(&addr, None, &first);
    assert!(
        gone["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown task"),
        "{gone}"
    );
    let (_, v) = wait_status(&addr, None, &second, "completed");
    assert!(v.to_string().contains(&eight), "{v}");
    let (_, v) = wait_status(&addr, None, &third, "completed");
    assert!(v.to_string().contains(&eight), "{v}");
    // Larger than the bound alone: the task fails, saying why.
    let (_, v) = run(&"y".repeat(30_000), "failed");
    let text = v.to_string();
    assert!(text.contains("max-bytes") && !text.contains("yyyy"), "{v}");
}

#[test]
fn past_tasks_max_a_call_answers_in_its_request() {
    let dir = ToolDir::new();
    let server = serve(
        &dir,
        &format!("{}\n[tasks]\nmax = 1\nafter = \"200ms\"\n", cache()),
    );
    let addr = server.addr();
    let first = task_id(&call(&addr, None, "slow_compute", json!({"seconds": 30})));
    // The one task the server may hold is taken: this call, which asks to
    // be a task and then runs past `after`, is answered in its request.
    let v = call(
        &addr,
        None,
        "slow_compute",
        json!({"seconds": 1, "label": "in the request"}),
    );
    assert_eq!(v["result"]["resultType"], "complete", "{v}");
    assert_eq!(
        v["result"]["content"][0]["text"], "Computed in the request in 1s",
        "{v}"
    );
    rpc(
        &addr,
        None,
        "tasks/cancel",
        json!({"taskId": first}),
        &first,
    );
    wait_status(&addr, None, &first, "cancelled");
}

#[test]
fn a_task_asking_what_its_client_cannot_answer_fails_at_once() {
    let dir = ToolDir::new();
    let server = serve(&dir, &cache());
    let addr = server.addr();
    // This client follows tasks but declared no `elicitation`.
    let id = task_id(&call(
        &addr,
        None,
        "confirm_delete",
        json!({"filename": "x"}),
    ));
    let (took, v) = wait_status(&addr, None, &id, "completed");
    assert_eq!(v["result"]["result"]["isError"], true, "{v}");
    let text = v["result"]["result"]["content"][0]["text"].to_string();
    assert!(text.contains("elicitation"), "{v}");
    // Not at the tool's 10 s deadline.
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// `toolhost serve --stdio` over the conformance tools, one JSON-RPC
/// request at a time.
struct Stdio2025 {
    child: Child,
    out: std::io::Lines<BufReader<std::process::ChildStdout>>,
    next: i64,
}

impl Stdio2025 {
    fn start() -> Stdio2025 {
        let mut child = Command::new(BIN)
            .args(["serve", "--stdio", "--watch", "false", "--tools"])
            .arg(conformance_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut s = Stdio2025 {
            child,
            out,
            next: 1,
        };
        let init = s.request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "clientInfo": {"name": "raw", "version": "0"},
                   "capabilities": {"elicitation": {}, "extensions": {TASKS: {}}}}),
        );
        assert!(
            init["result"]["capabilities"]["extensions"][TASKS].is_object(),
            "{init}"
        );
        s.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        s
    }

    fn send(&mut self, v: Value) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{v}").unwrap();
    }

    /// Send a request; its response (notifications in between are skipped).
    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        for line in self.out.by_ref() {
            let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
            if v["id"] == id && v.get("method").is_none() {
                return v;
            }
        }
        panic!("the server closed stdout before answering {method}");
    }
}

impl Drop for Stdio2025 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_2025_11_25_session_runs_a_task_whose_question_waits_for_tasks_update() {
    let mut s = Stdio2025::start();
    let v = s.request(
        "tools/call",
        json!({"name": "confirm_delete", "arguments": {"filename": "a.txt"}}),
    );
    let id = task_id(&v);
    let start = Instant::now();
    let asked = loop {
        let v = s.request("tasks/get", json!({"taskId": id}));
        if v["result"]["status"] == "input_required" {
            break v;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{v}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let questions = asked["result"]["inputRequests"].as_object().unwrap();
    assert_eq!(questions.len(), 1, "{asked}");
    let (key, q) = questions.iter().next().unwrap();
    assert_eq!(q["method"], "elicitation/create", "{asked}");
    assert!(
        q["params"]["message"].as_str().unwrap().contains("a.txt"),
        "{asked}"
    );
    let ack = s.request(
        "tasks/update",
        json!({"taskId": id, "inputResponses": {key.as_str(): {"action": "accept", "content": {"confirm": true}}}}),
    );
    assert_eq!(ack["result"]["resultType"], "complete", "{ack}");
    let done = loop {
        let v = s.request("tasks/get", json!({"taskId": id}));
        if v["result"]["status"] == "completed" {
            break v;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{v}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        done["result"]["result"]["content"][0]["text"], "delete confirmed: true",
        "{done}"
    );
}

/// The v2 TypeScript SDK runs a task and cancels another over HTTP: on
/// 2026-07-28 through the official tasks extension package
/// (`@modelcontextprotocol/ext-tasks`), on a 2025-11-25 session through
/// the SDK's own requests.
fn ts_v2_task(mode: &str) {
    ts_task(Sdk::TypeScriptV2, Some(mode));
}

fn ts_task(sdk: Sdk, mode: Option<&str>) {
    let dir = ToolDir::new();
    let server = serve(&dir, &cache());
    let cmd = client(sdk, "task", mode, Via::Http(&server.url));
    run_client(cmd, "task", LIMIT);
}

/// v1 of the TypeScript SDK (a 2025-11-25 session) runs a task with its own
/// requests.
#[test]
fn typescript_v1_runs_a_task_over_http() {
    ts_task(Sdk::TypeScript, None);
}

#[test]
fn typescript_v2_runs_and_cancels_a_task_over_http_2026_07_28() {
    ts_v2_task("auto");
}

#[test]
fn typescript_v2_runs_and_cancels_a_task_over_http_2025_11_25() {
    ts_v2_task("legacy");
}
