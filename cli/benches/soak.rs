//! `make soak` (issue 12, item 5): a million calls through one real
//! `toolhost serve --http`, and the server's memory, descriptors and
//! threads sampled as they go, to show that nothing a call leaves behind
//! accumulates.
//!
//! The traffic is what a busy multi-tenant replica sees, not one path
//! repeated: two `[[tenant]]`s with bearer tokens and quotas; most calls
//! stateless 2026-07-28 requests; some clients on 2025-11-25 sessions that
//! they end (`DELETE`) and open again every `SESSION_CALLS` calls; every
//! 50th call has arguments that fail the input schema and every 100th names
//! a tool the tenant does not have. The audit log is on, rotating at 8 MiB.
//!
//! The first `WARMUP` calls fill the caches and pools; the sample after
//! them is the baseline. Growth is the last sample against it. The goal is
//! under 5% (BENCHMARKS.md, "Soak").
//!
//! Run with `cargo bench -p toolhost-cli --bench soak [-- CALLS]` after
//! `make tools`; `make soak` runs it with the default million.

#[path = "common/mod.rs"]
mod common;
use common::{INIT, INITIALIZED, connect, http_addr, reply_of};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::process::{Child, Command};

const CALLS: u64 = 1_000_000;
const WARMUP: u64 = 20_000;
/// Clients calling at once: 24 stateless, 8 on sessions.
const STATELESS_CLIENTS: usize = 24;
const SESSION_CLIENTS: usize = 8;
/// Calls a session serves before its client ends it and opens another.
const SESSION_CALLS: u64 = 500;
/// Samples taken (besides the baseline), evenly over the calls.
const SAMPLES: u64 = 10;
const TOKENS: [&str; 2] = ["soak-alpha-3b7e", "soak-beta-81c2"];

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The host config: two tenants on `echo`, quotas far above the soak's
/// rate (so no call is refused by them, but every call is counted), the
/// audit log rotating in `dir`.
fn config(root: &Path, dir: &Path) -> PathBuf {
    let mut cfg = format!(
        "[engine]\ncache-dir = \"{}\"\n\n[audit]\npath = \"{}\"\nmax-size = \"8 MiB\"\nkeep = 2\n",
        root.join("target/bench-cache").display(),
        dir.join("audit.jsonl").display(),
    );
    for (name, token) in ["alpha", "beta"].iter().zip(TOKENS) {
        cfg.push_str(&format!(
            "\n[[tenant]]\nname = \"{name}\"\ntools = [\"echo\"]\ntoken-sha256 = [\"{}\"]\nmax-concurrent = 64\ncalls-per-minute = 1000000\noutput-bytes-per-minute = \"64 GiB\"\n",
            sha(token.as_bytes())
        ));
    }
    let path = dir.join("toolhost.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

fn spawn(root: &Path, cfg: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_toolhost"))
        .args(["serve", "--watch", "false", "--config"])
        .arg(cfg)
        .arg("--tools")
        .arg(root.join("build/tools/echo.toml"))
        .args(["--http", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("TOOLHOST_LOG", "error")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn toolhost")
}

/// One keep-alive connection, stateless or on a session.
struct Client {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: String,
    token: &'static str,
    /// The 2025-11-25 session, if this client uses one.
    session: Option<String>,
    /// Calls this client has made (its session is ended and opened again
    /// every `SESSION_CALLS`).
    made: u64,
}

impl Client {
    async fn connect(addr: &str, token: &'static str, session: bool) -> Client {
        let send = connect(addr).await;
        let mut c = Client {
            send,
            addr: addr.to_string(),
            token,
            session: None,
            made: 0,
        };
        if session {
            c.open_session().await;
        }
        c
    }

    async fn open_session(&mut self) {
        self.session = Some(String::new());
        let (status, headers, body) = self.request(hyper::Method::POST, INIT, None).await;
        assert!(status.is_success(), "initialize: HTTP {status}: {body}");
        let id = headers
            .get("mcp-session-id")
            .expect("a session id")
            .to_str()
            .unwrap()
            .to_string();
        self.session = Some(id);
        self.request(hyper::Method::POST, INITIALIZED, None).await;
    }

    async fn end_session(&mut self) {
        let (status, _, body) = self.request(hyper::Method::DELETE, "", None).await;
        assert!(status.is_success(), "DELETE: HTTP {status}: {body}");
    }

    async fn request(
        &mut self,
        method: hyper::Method,
        body: &str,
        tool: Option<&str>,
    ) -> (hyper::StatusCode, hyper::HeaderMap, String) {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri("/mcp")
            .header("host", &self.addr)
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        match &self.session {
            Some(id) if !id.is_empty() => {
                req = req
                    .header("mcp-session-id", id)
                    .header("mcp-protocol-version", "2025-11-25");
            }
            Some(_) => {}
            None => {
                req = req
                    .header("mcp-protocol-version", "2026-07-28")
                    .header("mcp-method", "tools/call")
                    .header("mcp-name", tool.unwrap_or("echo"));
            }
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .unwrap();
        self.send.ready().await.unwrap();
        let resp = self.send.send_request(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    /// Call number `n`: echo, or (by `n`) a schema failure or an unknown
    /// tool; checks that the answer is the one that call deserves.
    async fn call(&mut self, n: u64) {
        let (tool, args) = if n % 100 == 99 {
            ("not-a-tool", r#"{"text":"x"}"#)
        } else if n % 50 == 24 {
            ("echo", r#"{"text":42}"#)
        } else {
            ("echo", r#"{"text":"hello, sandbox"}"#)
        };
        let meta = if self.session.is_none() {
            r#","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"soak","version":"0"},"io.modelcontextprotocol/clientCapabilities":{}}"#
        } else {
            ""
        };
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{n},"method":"tools/call","params":{{"name":"{tool}","arguments":{args}{meta}}}}}"#
        );
        let (status, _, text) = self.request(hyper::Method::POST, &body, Some(tool)).await;
        assert!(status.is_success(), "call {n}: HTTP {status}: {text}");
        let reply = reply_of(&text);
        // A refusal comes as a JSON-RPC error or an error result; either
        // way it must be the refusal this call deserves, not another (a
        // quota, `busy`, an internal error).
        let refusal = || {
            assert!(
                reply.get("error").is_some() || reply["result"]["isError"] == true,
                "call {n} should have been refused: {reply}"
            );
            reply.to_string()
        };
        match (tool, args.contains("42")) {
            ("echo", false) => assert_eq!(
                reply["result"]["content"][0]["text"], "hello, sandbox",
                "call {n}: {reply}"
            ),
            ("echo", true) => {
                let r = refusal();
                assert!(r.contains("invalid arguments"), "call {n}: {r}");
            }
            _ => {
                let r = refusal();
                assert!(r.contains("not-a-tool"), "call {n}: {r}");
            }
        }
    }
}

/// What the server holds at one moment.
#[derive(Clone, Copy)]
struct Sample {
    calls: u64,
    at: Instant,
    rss_kib: u64,
    anon_kib: u64,
    fds: usize,
    threads: u64,
}

fn sample(pid: u32, calls: u64) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    Sample {
        calls,
        at: Instant::now(),
        rss_kib: field("VmRSS:"),
        anon_kib: field("RssAnon:"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count(),
        threads: field("Threads:"),
    }
}

/// Run `clients` until `done` calls have been made in all; each takes the
/// next call number from `next`.
async fn run(clients: &mut [Client], next: &Arc<AtomicU64>, done: u64) {
    let tasks = clients.iter_mut().map(|c| {
        let next = next.clone();
        async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= done {
                    // Give back the number not used.
                    next.fetch_sub(1, Ordering::Relaxed);
                    break;
                }
                c.call(n).await;
                c.made += 1;
                if c.session.is_some() && c.made.is_multiple_of(SESSION_CALLS) {
                    c.end_session().await;
                    c.open_session().await;
                }
            }
        }
    });
    futures::future::join_all(tasks).await;
}

fn main() -> anyhow::Result<()> {
    let calls: u64 = match std::env::args().skip(1).find(|a| !a.starts_with('-')) {
        Some(n) => n.parse()?,
        None => CALLS,
    };
    anyhow::ensure!(calls > WARMUP, "a soak of more than {WARMUP} calls");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    anyhow::ensure!(
        root.join("build/tools/echo.toml").is_file(),
        "run `make tools` first"
    );
    let dir = tempfile::tempdir()?;
    let cfg = config(&root, dir.path());
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut server = spawn(&root, &cfg);
        let pid = server.id().expect("server pid");
        let addr = http_addr(&mut server).await;
        let mut clients = Vec::new();
        for i in 0..STATELESS_CLIENTS + SESSION_CLIENTS {
            let token = TOKENS[i % TOKENS.len()];
            clients.push(Client::connect(&addr, token, i >= STATELESS_CLIENTS).await);
        }
        let next = Arc::new(AtomicU64::new(0));
        let first = sample(pid, 0);
        run(&mut clients, &next, WARMUP).await;
        let mut samples = vec![first, sample(pid, WARMUP)];
        for k in 1..=SAMPLES {
            let upto = WARMUP + (calls - WARMUP) * k / SAMPLES;
            run(&mut clients, &next, upto).await;
            samples.push(sample(pid, upto));
        }
        anyhow::ensure!(
            server.try_wait()?.is_none(),
            "the server exited during the soak"
        );
        print_table(&samples);
        Ok(())
    })
}

fn print_table(samples: &[Sample]) {
    let base = samples[1];
    let last = samples[samples.len() - 1];
    let mid = samples[1 + (samples.len() - 2) / 2];
    println!(
        "\n## Soak: {} calls through `toolhost serve --http`\n",
        last.calls
    );
    println!(
        "| calls | RSS | of which private (`RssAnon`) | vs after warm-up | descriptors | threads | calls/s since the last sample |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mib = |kib: u64| kib as f64 / 1024.0;
    for (i, s) in samples.iter().enumerate() {
        let rate = match i {
            0 => "-".to_string(),
            _ => {
                let p = samples[i - 1];
                format!(
                    "{:.0}",
                    (s.calls - p.calls) as f64 / s.at.duration_since(p.at).as_secs_f64()
                )
            }
        };
        let growth = if i == 0 {
            "(before any call)".to_string()
        } else {
            format!(
                "{:+.1}%",
                (s.rss_kib as f64 / base.rss_kib as f64 - 1.0) * 100.0
            )
        };
        println!(
            "| {} | {:.1} MiB | {:.1} MiB | {growth} | {} | {} | {rate} |",
            s.calls,
            mib(s.rss_kib),
            mib(s.anon_kib),
            s.fds,
            s.threads
        );
    }
    let pct = |a: u64, b: u64| (b as f64 / a as f64 - 1.0) * 100.0;
    println!(
        "\nRSS after warm-up ({} calls) to the end: {:+.1}% ({:+.1}% private); middle to end: {:+.1}%. Descriptors {} -> {}, threads {} -> {}. Goal: under 5%.",
        base.calls,
        pct(base.rss_kib, last.rss_kib),
        pct(base.anon_kib, last.anon_kib),
        pct(mid.rss_kib, last.rss_kib),
        base.fds,
        last.fds,
        base.threads,
        last.threads,
    );
}
