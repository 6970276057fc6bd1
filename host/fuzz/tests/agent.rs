//! Target `agent_control`: the `claude` CLI's stdout lines to a real
//! `AgentSession` (`connect_io`: the reader and dispatcher `toolhost agent`
//! runs on the CLI's pipes), serving a real `echo` as SDK server `tools`.
//!
//! After the initialize handshake the input's lines go in as they are (an
//! input that is UTF-8 JSON lines) or as edits of a seed transcript
//! (conversation messages, `control_request`s of every subtype,
//! `control_response`s, cancels, broken JSON, over-long lines). What must
//! hold: no panic; each line that is not JSON surfaces as a typed
//! `AgentError::JsonDecode`, each over-long one as `LineTooLong`; every
//! `control_request` with a `request_id` gets exactly one
//! `control_response` (unless the input cancelled it); and an MCP
//! `tools/call` of echo over `mcp_message` still succeeds afterwards.

use crate::support::{budget, corpus, echo_core, runtime};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use toolhost::agent::{AgentError, AgentOptions, AgentSession};
use toolhost::{Core, Rule, Scope};
use toolhost_fuzz::{JSON_VALUES, JsonPalette, Script, mutate_lines};

/// Lines longer than this are `LineTooLong` (the default is 32 MiB; a
/// small bound lets the fuzzer reach that path).
const MAX_LINE: usize = 4096;

const KEYS: &[&str] = &[
    "type",
    "subtype",
    "request_id",
    "request",
    "response",
    "error",
    "tool_name",
    "input",
    "tool_use_id",
    "agent_id",
    "callback_id",
    "server_name",
    "message",
    "content",
    "session_id",
    "parent_tool_use_id",
    "subagent_type",
    "result",
    "is_error",
    "num_turns",
    "jsonrpc",
    "id",
    "method",
    "params",
];

const VALUES: &[&str] = &[
    "\"control_request\"",
    "\"control_response\"",
    "\"control_cancel_request\"",
    "\"system\"",
    "\"assistant\"",
    "\"user\"",
    "\"result\"",
    "\"stream_event\"",
    "\"can_use_tool\"",
    "\"hook_callback\"",
    "\"mcp_message\"",
    "\"initialize\"",
    "\"interrupt\"",
    "\"tools\"",
    "\"mcp__tools__echo\"",
    "\"toolhost_guard\"",
    "\"success\"",
    "\"error\"",
    "{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"tools/call\", \"params\": {\"name\": \"echo\", \"arguments\": {\"text\": \"x\"}}}",
    "{\"jsonrpc\": \"2.0\", \"id\": 2, \"method\": \"tools/list\"}",
    "[{\"type\": \"tool_use\", \"id\": \"t\", \"name\": \"mcp__tools__echo\", \"input\": {}}]",
];

/// Lines that need not be JSON (or a message) at all.
const RAW: &[&str] = &[
    "",
    "   ",
    "\r",
    "{",
    "not json",
    "null",
    "[]",
    "\"a string\"",
    "{\"type\": 5}",
    "{\"type\": \"control_request\"}",
    "{\"type\": \"control_request\", \"request_id\": 7}",
    "{\"type\": \"control_request\", \"request_id\": 8, \"request\": {\"subtype\": \"can_use_tool\"}}",
    "{\"type\": \"control_request\", \"request_id\": \"x\", \"request\": {\"subtype\": \"mcp_message\", \"server_name\": \"tools\"}}",
    "{\"type\": \"control_request\", \"request_id\": {\"a\": 1}, \"request\": {\"subtype\": \"mcp_message\"}}",
    "{\"type\": \"control_response\", \"response\": {\"request_id\": \"nope\", \"subtype\": \"success\"}}",
    "{\"type\": \"control_cancel_request\", \"request_id\": \"c1\"}",
];

const PALETTE: JsonPalette<'static> = JsonPalette {
    keys: KEYS,
    values: VALUES,
};

#[test]
fn agent_control() {
    let rt = runtime();
    let (core, _scratch) = rt.block_on(echo_core(&[]));
    let seeds: Vec<String> = corpus("agent_control")
        .into_iter()
        .map(|b| String::from_utf8(b).expect("seeds are UTF-8"))
        .collect();
    let palette = JsonPalette {
        values: &[VALUES, JSON_VALUES].concat(),
        ..PALETTE
    };
    let long_line = format!(
        "{{\"type\": \"user\", \"pad\": \"{}\"}}",
        "x".repeat(MAX_LINE)
    );
    let raw: Vec<&str> = RAW.iter().copied().chain([long_line.as_str()]).collect();
    let (rt, core) = (AssertUnwindSafe(&rt), AssertUnwindSafe(&core));
    bolero::check!(name = "agent_control")
        .with_test_time(budget(4000))
        .for_each(|input: &[u8]| {
            let lines = match std::str::from_utf8(input) {
                Ok(text) if text.starts_with(['{', '[']) => {
                    text.lines().map(str::to_string).collect()
                }
                _ => {
                    let mut script = Script::new(input);
                    let seed = script.pick(seeds.as_slice()).expect("seeds");
                    mutate_lines(seed, &mut script, &palette, &raw)
                }
            };
            rt.block_on(session(&core, &lines));
        });
}

/// A control request's id as the host answers it (numbers as text).
fn request_id(v: &Value) -> Option<String> {
    match v.get("request_id") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// What the lines should make the session report.
#[derive(Default, Debug)]
struct Expected {
    /// Control requests by id: how many.
    requests: HashMap<String, usize>,
    /// Ids the input cancels.
    cancelled: HashSet<String>,
    /// Lines that are not JSON.
    not_json: usize,
    /// Lines over `MAX_LINE`.
    too_long: usize,
}

fn expected(lines: &[String]) -> Expected {
    let mut e = Expected::default();
    for l in lines {
        if l.len() > MAX_LINE {
            e.too_long += 1;
            continue;
        }
        if l.bytes().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<Value>(l.as_bytes()) else {
            e.not_json += 1;
            continue;
        };
        match v.get("type").and_then(Value::as_str) {
            Some("control_request") => {
                if let Some(id) = request_id(&v) {
                    *e.requests.entry(id).or_default() += 1;
                }
            }
            Some("control_cancel_request") => {
                if let Some(id) = request_id(&v) {
                    e.cancelled.insert(id);
                }
            }
            _ => {}
        }
    }
    e
}

async fn session(core: &Core, lines: &[String]) {
    let mut options = AgentOptions::default()
        .server("tools", Scope::default())
        .rule(Rule::deny("mcp__tools__secret*", "not that one"));
    options.max_line_bytes = MAX_LINE;
    let (host_end, cli_end) = tokio::io::duplex(1 << 16);
    let (hr, hw) = tokio::io::split(host_end);
    let (cr, mut cw) = tokio::io::split(cli_end);
    let connecting = tokio::spawn(AgentSession::connect_io(
        core.clone(),
        options,
        BufReader::new(hr),
        hw,
    ));
    let mut from_host = BufReader::new(cr).lines();
    let init: Value = serde_json::from_str(&from_host.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(init["request"]["subtype"], "initialize", "{init}");
    let reply = json!({"type": "control_response", "response": {"subtype": "success",
        "request_id": init["request_id"], "response": {}}});
    cw.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
    let mut session = connecting.await.unwrap().expect("the session starts");

    // The host's replies, by request id (its own requests to the CLI, the
    // server notifications, need no answer).
    let (tx, mut replies) = mpsc::unbounded_channel::<Value>();
    let reader = tokio::spawn(async move {
        while let Ok(Some(l)) = from_host.next_line().await {
            let v: Value = serde_json::from_str(&l)
                .unwrap_or_else(|e| panic!("the host wrote a line that is not JSON ({e}): {l}"));
            if v["type"] == "control_response" {
                let _ = tx.send(v);
            }
        }
    });
    // What the session reports, typed.
    let messages = tokio::spawn(async move {
        let (mut not_json, mut too_long) = (0, 0);
        while let Some(m) = session.next().await {
            match m {
                Ok(_) => {}
                Err(AgentError::JsonDecode { .. }) => not_json += 1,
                Err(AgentError::LineTooLong { .. }) => too_long += 1,
                Err(e) => panic!("an unexpected session error: {e}"),
            }
        }
        (not_json, too_long)
    });

    let want = expected(lines);
    let mcp = |rid: &str, message: Value| {
        let v = json!({"type": "control_request", "request_id": rid,
            "request": {"subtype": "mcp_message", "server_name": "tools", "message": message}});
        format!("{v}\n")
    };
    let mut input = String::new();
    for l in lines {
        input.push_str(l);
        input.push('\n');
    }
    cw.write_all(input.as_bytes()).await.unwrap();

    // Then what the CLI does to call a tool, each step once the previous
    // one is answered.
    let mut answered: HashMap<String, usize> = HashMap::new();
    let mut log = Vec::new();
    let mut record = |v: &Value, answered: &mut HashMap<String, usize>| -> String {
        log.push(v.to_string());
        let id = v["response"]["request_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        *answered.entry(id.clone()).or_default() += 1;
        id
    };
    // The guard hook's approval comes first (the session has a rule, so
    // the host's PreToolUse guard is on), as the CLI asks for it before
    // each tool use.
    let hook = json!({"type": "control_request", "request_id": "final-hook",
        "request": {"subtype": "hook_callback", "callback_id": "toolhost_guard",
            "input": {"hook_event_name": "PreToolUse", "tool_name": "mcp__tools__echo",
                "tool_input": {"text": "after the fuzz"}}}});
    let steps = [
        (
            "final-init",
            mcp(
                "final-init",
                json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                           "clientInfo": {"name": "fuzz", "version": "0"}}}),
            ),
        ),
        (
            "final-initialized",
            mcp(
                "final-initialized",
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            ),
        ),
        ("final-hook", format!("{hook}\n")),
        (
            "final-call",
            mcp(
                "final-call",
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": "after the fuzz"}}}),
            ),
        ),
    ];
    let mut last = Value::Null;
    for (rid, line) in steps {
        cw.write_all(line.as_bytes()).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        last = loop {
            let v = tokio::time::timeout_at(deadline, replies.recv())
                .await
                .unwrap_or_else(|_| panic!("{rid} after the fuzz input is answered within 30 s"))
                .expect("the host keeps writing");
            if record(&v, &mut answered) == rid {
                break v;
            }
        };
    }
    let echo = last;
    assert_eq!(
        echo["response"]["response"]["mcp_response"]["result"]["content"][0]["text"],
        "after the fuzz",
        "{echo}"
    );
    // Replies still on their way, then the end of the CLI's output.
    let unanswered = |answered: &HashMap<String, usize>| -> Vec<String> {
        want.requests
            .keys()
            .filter(|k| !answered.contains_key(*k) && !want.cancelled.contains(*k))
            .cloned()
            .collect()
    };
    let settle = tokio::time::Instant::now() + Duration::from_secs(5);
    while !unanswered(&answered).is_empty() {
        match tokio::time::timeout_at(settle, replies.recv()).await {
            Ok(Some(v)) => {
                record(&v, &mut answered);
            }
            _ => break,
        }
    }
    cw.shutdown().await.unwrap();
    let (not_json, too_long) = tokio::time::timeout(Duration::from_secs(30), messages)
        .await
        .expect("the session ends when the CLI's output does")
        .unwrap();
    reader.abort();

    let transcript = || {
        format!(
            "--- input ---\n{}\n--- replies ---\n{}",
            lines.join("\n"),
            log.join("\n")
        )
    };
    let missing = unanswered(&answered);
    assert!(
        missing.is_empty(),
        "control requests never answered: {missing:?}\n{}",
        transcript()
    );
    for (id, n) in &answered {
        let asked = match id.as_str() {
            "final-init" | "final-initialized" | "final-hook" | "final-call" => 1,
            _ => want.requests.get(id).copied().unwrap_or(0),
        };
        assert!(
            *n <= asked,
            "request {id:?} answered {n} times, asked {asked}\n{}",
            transcript()
        );
    }
    assert_eq!(
        not_json,
        want.not_json,
        "JsonDecode errors\n{}",
        transcript()
    );
    assert_eq!(
        too_long,
        want.too_long,
        "LineTooLong errors\n{}",
        transcript()
    );
}
