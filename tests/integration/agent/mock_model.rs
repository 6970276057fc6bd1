//! A mock of the Anthropic Messages API on 127.0.0.1 for driving the real
//! `claude` CLI: every request is recorded, and each reply is decided by a
//! script from the request (streamed as SSE, or plain JSON when the request
//! does not ask for a stream).
//!
//! The default script ([`rules`]):
//! - the last user message holds tool results -> text
//!   `TOOL_RESULT_SEEN: <result 1> | <result 2> ...`;
//! - else every line `USE_TOOL <name> <json>` of the last user text whose
//!   tool is in the request's `tools` -> one tool_use block each;
//! - else text `Hello from mock`.

use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One block of a scripted reply.
#[derive(Debug, Clone)]
pub enum Block {
    Text(String),
    ToolUse { name: String, input: Value },
}

pub type Script = Arc<dyn Fn(&Value) -> Vec<Block> + Send + Sync>;

pub struct MockModel {
    pub port: u16,
    requests: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockModel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockModel {
    pub async fn start(script: Script) -> MockModel {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests: Arc<Mutex<Vec<Value>>> = Arc::default();
        let reqs = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (script, reqs) = (script.clone(), reqs.clone());
                tokio::spawn(async move {
                    let _ = serve(sock, script, reqs).await;
                });
            }
        });
        MockModel {
            port,
            requests,
            task,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Bodies of every POST /v1/messages so far.
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    /// The tool names of each recorded request that carried tools.
    pub fn tool_lists(&self) -> Vec<Vec<String>> {
        self.requests()
            .iter()
            .filter_map(|b| b.get("tools").and_then(Value::as_array))
            .map(|t| {
                t.iter()
                    .filter_map(|t| t["name"].as_str().map(String::from))
                    .collect()
            })
            .collect()
    }
}

fn last_user(body: &Value) -> Vec<Value> {
    let msgs = body["messages"].as_array().cloned().unwrap_or_default();
    let Some(m) = msgs.iter().rev().find(|m| m["role"] == "user") else {
        return vec![];
    };
    match &m["content"] {
        Value::String(s) => vec![json!({"type": "text", "text": s})],
        Value::Array(a) => a.clone(),
        _ => vec![],
    }
}

/// The text of a tool_result's content.
pub fn result_text(c: &Value) -> String {
    match c {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The default script (see the module doc).
pub fn rules() -> Script {
    let acted = Mutex::new(std::collections::HashSet::new());
    Arc::new(move |body| decide(body, &mut acted.lock().unwrap()))
}

/// The CLI merges a new prompt into the user message that carries earlier
/// tool results (after an interrupt or an error result, say), so a prompt
/// is answered once: after that the results in its message win.
fn decide(body: &Value, acted: &mut std::collections::HashSet<String>) -> Vec<Block> {
    let blocks = last_user(body);
    let prompt: String = blocks
        .iter()
        .filter(|b| b["type"] == "text")
        .filter_map(|b| b["text"].as_str())
        .filter(|t| !t.trim_start().starts_with("<system-reminder>"))
        .collect::<Vec<_>>()
        .join("\n");
    let results: Vec<String> = blocks
        .iter()
        .filter(|b| b["type"] == "tool_result")
        .map(|b| {
            let t = result_text(&b["content"]);
            if b["is_error"] == true {
                format!("ERROR {t}")
            } else {
                t
            }
        })
        .collect();
    if !prompt.is_empty() && (results.is_empty() || acted.insert(prompt.clone())) {
        acted.insert(prompt.clone());
        return on_prompt(body, &prompt);
    }
    if !results.is_empty() {
        // The newest results are the last ones, after any older ones kept
        // in the same message.
        return vec![Block::Text(format!(
            "TOOL_RESULT_SEEN: {}",
            results.join(" | ")
        ))];
    }
    vec![Block::Text("Hello from mock".into())]
}

fn on_prompt(body: &Value, text: &str) -> Vec<Block> {
    let tools: Vec<&str> = body["tools"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    let uses: Vec<Block> = text
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("USE_TOOL ")?;
            let (name, input) = rest.split_once(' ')?;
            let input = input.trim().trim_end_matches("END").trim();
            let input: Value = serde_json::from_str(input).ok()?;
            tools.contains(&name).then(|| Block::ToolUse {
                name: name.to_string(),
                input,
            })
        })
        .collect();
    if uses.is_empty() {
        vec![Block::Text("Hello from mock".into())]
    } else {
        uses
    }
}

async fn serve(
    sock: TcpStream,
    script: Script,
    reqs: Arc<Mutex<Vec<Value>>>,
) -> std::io::Result<()> {
    let mut r = BufReader::new(sock);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
        head.push_str(&line);
    }
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |k: &str| headers.iter().find(|(h, _)| h == k).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).await?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body).await?;
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let mut sock = r.into_inner();
    let send = |status: &str, ctype: &str, data: Vec<u8>| {
        let mut out = format!(
            "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            data.len()
        )
        .into_bytes();
        out.extend(data);
        out
    };
    let out = match (method, path) {
        ("POST", "/v1/messages") => {
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            reqs.lock().unwrap().push(body.clone());
            let blocks = script(&body);
            let model = body["model"].as_str().unwrap_or("claude-mock").to_string();
            if body["stream"] == true {
                let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n".to_vec();
                out.extend(sse(&blocks, &model).into_bytes());
                out
            } else {
                send(
                    "200 OK",
                    "application/json",
                    message_json(&blocks, &model).to_string().into_bytes(),
                )
            }
        }
        ("POST", "/v1/messages/count_tokens") => send(
            "200 OK",
            "application/json",
            br#"{"input_tokens":10}"#.to_vec(),
        ),
        ("HEAD", _) => send("200 OK", "text/plain", vec![]),
        _ => send(
            "404 Not Found",
            "application/json",
            json!({"type": "error", "error": {"type": "not_found_error", "message": path}})
                .to_string()
                .into_bytes(),
        ),
    };
    sock.write_all(&out).await?;
    sock.flush().await?;
    tokio::time::sleep(Duration::from_millis(5)).await;
    sock.shutdown().await
}

fn usage() -> Value {
    json!({"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
}

fn tool_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("toolu_mock{:012}", N.fetch_add(1, Ordering::Relaxed))
}

fn stop_reason(blocks: &[Block]) -> &'static str {
    if blocks.iter().any(|b| matches!(b, Block::ToolUse { .. })) {
        "tool_use"
    } else {
        "end_turn"
    }
}

fn message_json(blocks: &[Block], model: &str) -> Value {
    let content: Vec<Value> = blocks
        .iter()
        .map(|b| match b {
            Block::Text(t) => json!({"type": "text", "text": t}),
            Block::ToolUse { name, input } => {
                json!({"type": "tool_use", "id": tool_id(), "name": name, "input": input})
            }
        })
        .collect();
    json!({"id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": content,
           "stop_reason": stop_reason(blocks), "stop_sequence": null, "usage": usage()})
}

fn sse(blocks: &[Block], model: &str) -> String {
    let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut out = ev(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message", "role": "assistant",
            "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": usage()}}),
    );
    for (i, b) in blocks.iter().enumerate() {
        match b {
            Block::Text(t) => {
                out += &ev(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}),
                );
                out += &ev(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": t}}),
                );
            }
            Block::ToolUse { name, input } => {
                out += &ev(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": i, "content_block": {"type": "tool_use", "id": tool_id(), "name": name, "input": {}}}),
                );
                let js = input.to_string();
                let mid = js
                    .char_indices()
                    .nth(js.chars().count() / 2)
                    .map_or(0, |(i, _)| i);
                for part in [&js[..mid], &js[mid..]] {
                    out += &ev(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": part}}),
                    );
                }
            }
        }
        out += &ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": i}),
        );
    }
    out += &ev(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(blocks), "stop_sequence": null}, "usage": {"output_tokens": 5}}),
    );
    out + &ev("message_stop", json!({"type": "message_stop"}))
}
