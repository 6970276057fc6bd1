//! Target `mcp_jsonrpc`: JSON-RPC lines to a real `McpServer` over an
//! in-memory stdio-style transport (the one `toolhost serve` runs on stdin
//! and stdout), serving a real `echo`.
//!
//! After the handshake, the input's lines go in as they are (an input that
//! is UTF-8 JSON lines) or as edits of a seed session (broken JSON, batches,
//! huge and mistyped ids, fuzzed params, both protocol revisions' shapes).
//! What must hold: no panic; no id answered more often than it was asked;
//! every request with an id answered (or, when its envelope does not parse,
//! counted against one id-less `Invalid request` error), unless the input
//! itself cancelled it; and a normal `tools/call` of echo on the same
//! connection still succeeds afterwards.

use crate::support::{budget, corpus, echo_core, runtime};
use rmcp::ServiceExt;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use toolhost::mcp::McpServer;
use toolhost::{Core, Scope};
use toolhost_fuzz::{JSON_VALUES, JsonPalette, Script, mutate_lines};

/// Keys, values and raw lines of JSON-RPC messages (the `mcp_http` target
/// edits its bodies with the same palette).
pub(crate) const KEYS: &[&str] = &[
    "jsonrpc",
    "id",
    "method",
    "params",
    "name",
    "arguments",
    "text",
    "_meta",
    "protocolVersion",
    "capabilities",
    "cursor",
    "level",
    "progressToken",
    "requestId",
    "reason",
    "result",
    "error",
    "task",
    "io.modelcontextprotocol/protocolVersion",
    "io.modelcontextprotocol/clientCapabilities",
    "io.modelcontextprotocol/logLevel",
];

pub(crate) const VALUES: &[&str] = &[
    "\"2.0\"",
    "\"1.0\"",
    "\"tools/call\"",
    "\"tools/list\"",
    "\"initialize\"",
    "\"ping\"",
    "\"server/discover\"",
    "\"subscriptions/listen\"",
    "\"logging/setLevel\"",
    "\"notifications/cancelled\"",
    "\"notifications/initialized\"",
    "\"echo\"",
    "\"2026-07-28\"",
    "\"2025-11-25\"",
    "\"debug\"",
    "{\"name\": \"echo\", \"arguments\": {\"text\": \"x\"}}",
    "{\"name\": \"echo\", \"arguments\": {\"text\": 5}}",
    "{\"name\": \"echo\", \"arguments\": \"text\"}",
    "{\"name\": \"nope\"}",
    "{\"io.modelcontextprotocol/protocolVersion\": \"2026-07-28\"}",
];

/// Lines that need not be JSON (or a message) at all.
pub(crate) const RAW: &[&str] = &[
    "",
    " ",
    "\r",
    "{",
    "}",
    "[]",
    "[{}]",
    "null",
    "\u{feff}{\"jsonrpc\": \"2.0\", \"id\": \"bom\", \"method\": \"ping\"}",
    "{\"jsonrpc\": \"2.0\", \"id\": \"\\ud800\", \"method\": \"ping\"}",
    "{\"jsonrpc\": \"2.0\", \"id\": 1, \"id\": 2, \"method\": \"ping\"}",
    "{\"jsonrpc\": \"2.0\", \"id\": 1e999, \"method\": \"ping\"}",
    "{\"jsonrpc\": \"2.0\", \"id\": -0, \"method\": \"ping\"}",
    "{\"jsonrpc\": \"2.0\", \"id\": 9223372036854775808, \"method\": \"ping\"}",
    "{\"jsonrpc\": \"2.0\", \"result\": {}, \"id\": 99}",
    "{\"jsonrpc\": \"2.0\", \"error\": {\"code\": 1, \"message\": \"x\"}, \"id\": 98}",
    "{\"jsonrpc\": \"2.0\", \"method\": \"notifications/cancelled\", \"params\": {\"requestId\": 1}}",
    "{\"jsonrpc\": \"2.0\", \"method\": \"notifications/roots/list_changed\"}",
    "{\"jsonrpc\": \"2.0\", \"method\": \"textDocument/didOpen\", \"params\": {}}",
];

pub(crate) const PALETTE: JsonPalette<'static> = JsonPalette {
    keys: KEYS,
    values: VALUES,
};

/// Protocol revisions a client may open with.
const VERSIONS: &[&str] = &[
    "2025-11-25",
    "2025-06-18",
    "2025-03-26",
    "2024-11-05",
    "2026-07-28",
];

#[test]
fn mcp_jsonrpc() {
    let rt = runtime();
    let (core, _scratch) = rt.block_on(echo_core(&[]));
    let seeds: Vec<String> = corpus("mcp_jsonrpc")
        .into_iter()
        .map(|b| String::from_utf8(b).expect("seeds are UTF-8"))
        .collect();
    let palette = JsonPalette {
        values: &[VALUES, JSON_VALUES].concat(),
        ..PALETTE
    };
    let (rt, core) = (AssertUnwindSafe(&rt), AssertUnwindSafe(&core));
    bolero::check!(name = "mcp_jsonrpc")
        .with_test_time(budget(6000))
        .for_each(|input: &[u8]| {
            let (version, lines) = match std::str::from_utf8(input) {
                Ok(text) if text.starts_with(['{', '[']) => {
                    ("2025-11-25", text.lines().map(str::to_string).collect())
                }
                _ => {
                    let mut script = Script::new(input);
                    let version = *script.pick(VERSIONS).expect("versions");
                    let seed = script.pick(seeds.as_slice()).expect("seeds");
                    (version, mutate_lines(seed, &mut script, &palette, RAW))
                }
            };
            rt.block_on(session(&core, version, &lines));
        });
}

/// The id a response is matched by (`None`: no usable id). Numbers by
/// value: `-0` and `0` are the same id.
fn id_key(v: &Value) -> Option<String> {
    match v.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_i64().is_none() && n.as_u64().is_none() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            Some(if f.fract() == 0.0 && f.abs() < 9.2e18 {
                (f as i64).to_string()
            } else {
                n.to_string()
            })
        }
        Some(id) => Some(id.to_string()),
    }
}

/// One client session: handshake, `lines`, then a normal echo call.
async fn session(core: &Core, version: &str, lines: &[String]) {
    let server = McpServer::new(core.clone(), Scope::default());
    let (client, server_end) = tokio::io::duplex(1 << 16);
    let (sr, sw) = tokio::io::split(server_end);
    let serving = tokio::spawn(server.clone().serve((sr, sw)));
    let (cr, mut cw) = tokio::io::split(client);

    // Everything the server prints, one JSON value a line; its requests to
    // the client are refused so none waits for us.
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<Value>();
    let reader = tokio::spawn(async move {
        let mut lines = BufReader::new(cr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| {
                panic!("the server printed a line that is not JSON ({e}): {l}")
            });
            if v.get("method").is_some()
                && let Some(id) = v.get("id")
            {
                let no =
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "no"}});
                let _ = out_tx.send(format!("{no}\n").into_bytes());
            }
            let _ = seen_tx.send(v);
        }
    });
    let send = |v: &Value| format!("{v}\n").into_bytes();

    cw.write_all(&send(
        &json!({"jsonrpc": "2.0", "id": "init", "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {},
                   "clientInfo": {"name": "fuzz", "version": "0"}}}),
    ))
    .await
    .unwrap();
    let init = next(&mut seen).await.expect("an initialize response");
    assert_eq!(init["id"], "init", "{init}");
    assert!(init.get("result").is_some(), "{init}");
    cw.write_all(&send(
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    ))
    .await
    .unwrap();
    let running = tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("the handshake completes")
        .unwrap()
        .expect("the server initializes");

    // What the input asks: requests by id, and the ids it cancels.
    let mut sent: HashMap<String, usize> = HashMap::new();
    let mut cancelled: HashSet<String> = HashSet::new();
    for l in lines {
        let Ok(v) = serde_json::from_str::<Value>(l.trim_start_matches('\u{feff}')) else {
            continue;
        };
        if v.get("method").is_some()
            && let Some(k) = id_key(&v)
        {
            *sent.entry(k).or_default() += 1;
        }
        if let Some(id) = v
            .pointer("/params")
            .and_then(|p| id_key(&json!({"id": p.get("requestId")})))
        {
            cancelled.insert(id);
        }
    }

    // The input, interleaved with answers to the server's requests; then
    // the call that must still work.
    let final_call = json!({"jsonrpc": "2.0", "id": "final-echo", "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "after the fuzz"}}});
    let mut input: Vec<u8> = Vec::new();
    for l in lines {
        input.extend_from_slice(l.as_bytes());
        input.push(b'\n');
    }
    input.extend(send(&final_call));
    let writer = tokio::spawn(async move {
        cw.write_all(&input).await.unwrap();
        while let Some(answer) = out_rx.recv().await {
            if cw.write_all(&answer).await.is_err() {
                break;
            }
        }
        cw
    });

    let mut answers = Answers::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let echo = loop {
        let v = tokio::time::timeout_at(deadline, next(&mut seen))
            .await
            .expect("the echo call after the fuzz input is answered within 30 s")
            .expect("the server keeps the connection open");
        answers.record(&v);
        if v["id"] == "final-echo" {
            break v;
        }
    };
    assert_eq!(
        echo["result"]["content"][0]["text"], "after the fuzz",
        "echo after the fuzz input: {echo}"
    );

    // Let what is still running finish, then close the connection.
    tokio::time::timeout(Duration::from_secs(30), server.drain())
        .await
        .expect("the server drains");
    let settle = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if answers.unanswered(&sent, &cancelled).len() <= answers.anonymous {
            break;
        }
        match tokio::time::timeout_at(settle, next(&mut seen)).await {
            Ok(Some(v)) => answers.record(&v),
            _ => break,
        }
    }
    writer.abort();
    let _ = running.cancel().await;
    reader.abort();

    let missing = answers.unanswered(&sent, &cancelled);
    let Answers {
        by_id,
        anonymous,
        log,
    } = answers;
    for (k, n) in &by_id {
        if k == "\"final-echo\"" {
            assert_eq!(*n, 1, "echo answered {n} times");
            continue;
        }
        let asked = sent.get(k).copied().unwrap_or(0);
        assert!(
            *n <= asked,
            "id {k} answered {n} times, asked {asked} times\n--- input ---\n{}",
            lines.join("\n")
        );
    }
    assert!(
        missing.len() <= anonymous,
        "requests never answered: {missing:?} ({anonymous} id-less errors)\n--- input ---\n{}\n--- output ---\n{}",
        lines.join("\n"),
        log.join("\n")
    );
}

/// The server's responses: how many per id, and how many without one.
#[derive(Default)]
struct Answers {
    by_id: HashMap<String, usize>,
    anonymous: usize,
    /// Everything the server printed, for the failure message.
    log: Vec<String>,
}

impl Answers {
    fn record(&mut self, v: &Value) {
        self.log.push(v.to_string());
        if v.get("method").is_some() {
            return; // a notification or a request of the server's
        }
        match id_key(v) {
            Some(k) => *self.by_id.entry(k).or_default() += 1,
            None => self.anonymous += 1,
        }
    }

    /// Ids of `sent` never answered, less those the input cancelled (a
    /// cancelled request may go unanswered). Requests sharing an id while
    /// in flight break JSON-RPC: one answer for them all is enough.
    fn unanswered(
        &self,
        sent: &HashMap<String, usize>,
        cancelled: &HashSet<String>,
    ) -> Vec<String> {
        sent.iter()
            .filter(|(k, _)| !self.by_id.contains_key(*k) && !cancelled.contains(*k))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Value>) -> Option<Value> {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .ok()
        .flatten()
}
