//! Target `mcp_http`: raw HTTP/1.1 requests to a real `HttpServer` (the
//! Streamable HTTP front end `toolhost serve --http` runs) on 127.0.0.1,
//! bearer token on, serving a real `echo`.
//!
//! Each input picks a method and a path, a set of headers (the bearer
//! token right, wrong or missing; `Accept`, `Content-Type`, session id,
//! protocol version, `Origin`, `Host`, `Last-Event-ID` and the SEP-2243
//! `Mcp-Method`/`Mcp-Name` headers, each valid, invalid or absent), a body
//! edited from a seed message (broken JSON, batches, fuzzed params), and
//! how the body is framed (a right, short or long `Content-Length`, or
//! chunked). What must hold: no panic; every request gets a status line
//! (or the connection closed) within the server's request timeout, never a
//! hang; never a 5xx; and a normal `tools/call` of echo with the right
//! token still succeeds afterwards.
//!
//! Raw TCP, not an HTTP client: a client would refuse to send most of the
//! malformed requests worth sending.

use crate::mcp::{PALETTE, RAW, VALUES};
use crate::support::{budget, corpus, echo_core, runtime};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use toolhost::Scope;
use toolhost::mcp::{HttpOptions, HttpServer, McpServer};
use toolhost_fuzz::{JSON_VALUES, JsonPalette, Script, mutate_lines};

const TOKEN: &str = "fuzz-token-0123456789";

const METHODS: &[&str] = &["POST", "GET", "DELETE", "OPTIONS", "PUT", "HEAD", "PATCH"];

const PATHS: &[&str] = &[
    "/mcp",
    "/mcp/",
    "/",
    "/mcp?session=1",
    "/.well-known/oauth-protected-resource",
    "/.well-known/oauth-protected-resource/mcp",
    "/%2e%2e/mcp",
    "//mcp",
];

/// Each header the input may send, with the values it may take (`{port}`
/// and `{session}` are filled in).
const HEADERS: &[(&str, &[&str])] = &[
    (
        "Authorization",
        &[
            "Bearer fuzz-token-0123456789",
            "Bearer fuzz-token-0123456789",
            "Bearer wrong",
            "Basic ZnV6ejp0b2tlbg==",
            "Bearer ",
            "bearer fuzz-token-0123456789",
        ],
    ),
    (
        "Accept",
        &[
            "application/json, text/event-stream",
            "application/json",
            "text/event-stream",
            "*/*",
            "",
        ],
    ),
    (
        "Content-Type",
        &[
            "application/json",
            "application/json; charset=utf-8",
            "text/plain",
            "multipart/form-data; boundary=x",
            "",
        ],
    ),
    ("Mcp-Session-Id", &["{session}", "nope", "", "{long}"]),
    (
        "Mcp-Protocol-Version",
        &["2026-07-28", "2025-11-25", "2024-11-05", "bogus", ""],
    ),
    (
        "Origin",
        &["http://127.0.0.1:{port}", "http://evil.example", "null"],
    ),
    ("Host", &["127.0.0.1:{port}", "evil.example", "", "{long}"]),
    ("Last-Event-ID", &["0", "abc", "1/1", "-1"]),
    ("Mcp-Method", &["tools/call", "tools/list", "x", ""]),
    ("Mcp-Name", &["echo", "nope", ""]),
    ("Connection", &["close", "keep-alive", "upgrade"]),
    ("Expect", &["100-continue"]),
];

#[test]
fn mcp_http() {
    let rt = runtime();
    let (core, _scratch) = rt.block_on(echo_core(&[]));
    let addr = rt.block_on(async {
        let mut opts = HttpOptions::new("127.0.0.1:0".parse().unwrap());
        opts.bearer_token = Some(TOKEN.into());
        opts.request_timeout = Duration::from_secs(2);
        opts.max_body_bytes = 64 << 10;
        let server = McpServer::new(core.clone(), Scope::default());
        let http = HttpServer::bind(server, opts).await.unwrap();
        let addr = http.local_addr();
        tokio::spawn(http.serve(std::future::pending()));
        addr
    });
    let session = rt.block_on(open_session(addr));
    let seeds: Vec<String> = corpus("mcp_http")
        .into_iter()
        .map(|b| String::from_utf8(b).expect("seeds are UTF-8"))
        .collect();
    let palette = JsonPalette {
        values: &[VALUES, JSON_VALUES].concat(),
        ..PALETTE
    };
    let rt = AssertUnwindSafe(&rt);
    bolero::check!(name = "mcp_http")
        .with_test_time(budget(6000))
        .for_each(|input: &[u8]| {
            let mut script = Script::new(input);
            let request = request(addr, &session, &seeds, &palette, &mut script);
            rt.block_on(async {
                let status = exchange(addr, &request).await;
                if let Some(s) = status {
                    assert!(
                        s < 500,
                        "a {s} for a client's request:\n{}",
                        String::from_utf8_lossy(&request)
                    );
                }
                assert_echo_works(addr).await;
            });
        });
}

/// Build one request from the script.
fn request(
    addr: SocketAddr,
    session: &str,
    seeds: &[String],
    palette: &JsonPalette<'_>,
    script: &mut Script<'_>,
) -> Vec<u8> {
    let method = script.pick(METHODS).copied().unwrap_or("POST");
    let path = script.pick(PATHS).copied().unwrap_or("/mcp");
    let seed = script.pick(seeds).cloned().unwrap_or_default();
    let body = if script.byte().is_multiple_of(4) {
        seed
    } else {
        mutate_lines(&seed, script, palette, RAW).join("\n")
    };
    let long = "x".repeat(10_000);
    let fill = |v: &str| {
        v.replace("{port}", &addr.port().to_string())
            .replace("{session}", session)
            .replace("{long}", &long)
    };
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    let mut host_sent = false;
    for (name, values) in HEADERS {
        // Usually the first (valid) value, sometimes another or none.
        match script.byte() % 4 {
            0 => continue,
            1 => {
                let v = script.pick(values).copied().unwrap_or("");
                head.push_str(&format!("{name}: {}\r\n", fill(v)));
            }
            _ => head.push_str(&format!("{name}: {}\r\n", fill(values[0]))),
        }
        host_sent |= *name == "Host";
    }
    if !host_sent && !script.byte().is_multiple_of(8) {
        head.push_str(&format!("Host: 127.0.0.1:{}\r\n", addr.port()));
    }
    let mut out = head.into_bytes();
    match script.byte() % 8 {
        // Chunked, in two chunks.
        0 => {
            let (a, b) = body.as_bytes().split_at(body.len() / 2);
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            for part in [a, b] {
                if !part.is_empty() {
                    out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                    out.extend_from_slice(part);
                    out.extend_from_slice(b"\r\n");
                }
            }
            out.extend_from_slice(b"0\r\n\r\n");
        }
        // A length that lies: shorter or longer than the body.
        1 => {
            let n = body.len() / 2;
            out.extend_from_slice(format!("Content-Length: {n}\r\n\r\n").as_bytes());
            out.extend_from_slice(body.as_bytes());
        }
        2 => {
            let n = body.len() + 1 + script.below(1000);
            out.extend_from_slice(format!("Content-Length: {n}\r\n\r\n").as_bytes());
            out.extend_from_slice(body.as_bytes());
        }
        // No body at all.
        3 => out.extend_from_slice(b"\r\n"),
        _ => {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            out.extend_from_slice(body.as_bytes());
        }
    }
    out
}

/// Send `request` on a new connection; the response's status, or `None`
/// if the server closed the connection without one. Panics if neither
/// happens well within the server's request timeout.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The server may close before reading everything (a refused request).
    let _ = s.write_all(request).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    // A `100 Continue` is not the answer; the head after it is.
                    let text = String::from_utf8_lossy(&got);
                    let text = text.trim_start_matches("HTTP/1.1 100 Continue\r\n\r\n");
                    if text.contains("\r\n\r\n") {
                        return;
                    }
                }
            }
        }
    })
    .await;
    assert!(
        head.is_ok(),
        "no answer within 15 s (the request timeout is 2 s):\n{}",
        String::from_utf8_lossy(request)
    );
    let text = String::from_utf8_lossy(&got);
    let text = text.trim_start_matches("HTTP/1.1 100 Continue\r\n\r\n");
    if text.is_empty() {
        return None;
    }
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok());
    assert!(status.is_some(), "not an HTTP response: {text:?}");
    status
}

/// One POST with the right token; the whole response (the server closes).
async fn post(addr: SocketAddr, headers: &str, body: &str) -> String {
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {TOKEN}\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        addr.port(),
        body.len()
    );
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("the server answers a normal request")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// A 2025-11-25 session the inputs may name (its id, from `initialize`).
async fn open_session(addr: SocketAddr) -> String {
    let r = post(
        addr,
        "",
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"fuzz","version":"0"}}}"#,
    )
    .await;
    r.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("mcp-session-id")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no session id in {r}"))
}

/// A normal stateless 2026-07-28 `tools/call` of echo still succeeds.
async fn assert_echo_works(addr: SocketAddr) {
    let r = post(
        addr,
        "Mcp-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: echo\r\n",
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"still here"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#,
    )
    .await;
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("still here"),
        "echo failed after a fuzzed request: {r}"
    );
}
