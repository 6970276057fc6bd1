//! `make bench` (MCP part): the whole MCP round trip of the `echo` tool through
//! the real `toolhost serve` binary, over stdio and Streamable HTTP, with one
//! client calling sequentially and with 64 concurrent callers, next to a null
//! server that answers the same `tools/call` without running any tool (same
//! rmcp transports, same process model), measured in the same run.
//!
//! The client is a minimal raw JSON-RPC client (so that it adds as little as
//! possible of its own): over stdio, one connection (a stdio server has one
//! client) with 1 or 64 requests in flight; over HTTP, 1 or 64 clients, each
//! with its own keep-alive connection and session.
//!
//! Prints a Markdown table (see BENCHMARKS.md, "MCP round trip"). Each figure
//! is the median over rounds; rounds alternate toolhost and the null server.
//! A second table compares, on one `toolhost serve --http`, the 2025-11-25
//! session wire (initialize, then each response an SSE stream) with the
//! stateless 2026-07-28 wire (per-request `_meta` and headers, no session,
//! each response plain `application/json`), answered by the server's
//! stateless lane and, with an `Origin` header, by rmcp's service; rounds
//! alternating. With `TOOLHOST_BENCH_WASSETTE` naming a `wassette` binary,
//! a third table compares toolhost and Wassette on one typed component
//! (BENCHMARKS.md, "Against Wassette").
//! Run with `cargo bench --bench mcp`; the null server is this same binary
//! started with `--null-server stdio|http`, with the allocator `toolhost`
//! has (mimalloc, its features and purge delay), so the ratios measure the
//! servers, not their allocators.

#[path = "common/mod.rs"]
mod common;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use common::{INIT, INITIALIZED, connect, http_addr, reply_of};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const ROUNDS: usize = 5;
const SEQUENTIAL_CALLS: usize = 400;
const CONCURRENT: usize = 64;
const CONCURRENT_CALLS_EACH: usize = 40;

// --- the null server: answers `echo` without running anything

#[derive(Clone)]
struct NullServer;

fn echo_tool() -> Tool {
    let schema =
        json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]});
    let Value::Object(schema) = schema else {
        unreachable!()
    };
    Tool::new("echo", "Return `text` unchanged.", Arc::new(schema))
}

impl ServerHandler for NullServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![echo_tool()]))
    }
    async fn call_tool(
        &self,
        req: CallToolRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let text = req
            .arguments
            .as_ref()
            .and_then(|a| a.get("text"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
    }
}

async fn null_server(transport: &str) -> anyhow::Result<()> {
    match transport {
        "stdio" => {
            NullServer
                .serve(toolhost::mcp::stdio())
                .await?
                .waiting()
                .await?;
        }
        _ => {
            use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
            use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
            let service = StreamableHttpService::new(
                || Ok(NullServer),
                Arc::new(LocalSessionManager::default()),
                StreamableHttpServerConfig::default(),
            );
            let app = axum::Router::new().nest_service("/mcp", service);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            eprintln!("null server at http://{}/mcp", listener.local_addr()?);
            // As toolhost does: no Nagle on streamed responses.
            use axum::serve::ListenerExt as _;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app).await?;
        }
    }
    Ok(())
}

// --- the servers under test

#[derive(Clone, Copy, PartialEq)]
enum Server {
    Toolhost,
    /// `toolhost serve` with `[engine] prepare-after-reply = false`: every
    /// call instantiates its sandbox on its own path.
    ToolhostUnprepared,
    Null,
    /// `toolhost serve` with the typed `typed-kitchen-sink` component, for
    /// the comparison with Wassette ([`wassette_table`]).
    ToolhostTyped,
    /// Wassette (`TOOLHOST_BENCH_WASSETTE`) with the same component.
    Wassette,
}

/// A host config turning `prepare-after-reply` off, written once.
fn unprepared_config() -> PathBuf {
    let path = unprepared_config_path();
    std::fs::write(&path, "[engine]\nprepare-after-reply = false\n").unwrap();
    path
}

fn unprepared_config_path() -> PathBuf {
    std::env::temp_dir().join(format!(
        "toolhost-bench-unprepared-{}.toml",
        std::process::id()
    ))
}

#[derive(Clone, Copy)]
enum Transport {
    Stdio,
    Http,
}

fn spawn(server: Server, transport: Transport) -> Child {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = match server {
        Server::Toolhost | Server::ToolhostUnprepared => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_toolhost"));
            c.args(["serve", "--watch", "false", "--tools"])
                .arg(root.join("build/tools/echo.toml"));
            if server == Server::ToolhostUnprepared {
                c.arg("--config").arg(unprepared_config());
            }
            match transport {
                Transport::Stdio => c.arg("--stdio"),
                Transport::Http => c.args(["--http", "127.0.0.1:0"]),
            };
            c
        }
        Server::ToolhostTyped => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_toolhost"));
            c.args(["serve", "--watch", "false", "--stdio", "--tools"])
                .arg(typed_dir().join("sink.toml"));
            c
        }
        Server::Wassette => {
            let mut c = Command::new(wassette().expect("TOOLHOST_BENCH_WASSETTE"));
            c.args(["serve", "--stdio", "--plugin-dir"])
                .arg(typed_dir().join("plugins"))
                // Its log at `info` writes lines per call; as quiet as
                // toolhost's (`TOOLHOST_LOG=error`).
                .env("RUST_LOG", "error");
            c
        }
        Server::Null => {
            let mut c = Command::new(std::env::current_exe().unwrap());
            c.arg("--null-server").arg(match transport {
                Transport::Stdio => "stdio",
                Transport::Http => "http",
            });
            c
        }
    };
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("TOOLHOST_LOG", "error")
        // What `toolhost` sets for itself: the null server's allocator
        // configured as toolhost's.
        .env("MIMALLOC_PURGE_DELAY", "0")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn server")
}

fn call(id: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"hello, sandbox"}}}}}}"#
    )
}

/// A 2026-07-28 `tools/call`: everything travels with the request.
fn call_2026(id: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"hello, sandbox"}},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{{"name":"bench","version":"0"}},"io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
    )
}

/// A call of the typed component's `echo-text`, under the tool name
/// `tool` its server gives it.
fn call_echo_text(tool: &str, id: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{"c":"x","s":"hello, sandbox","b":true}}}}}}"#
    )
}

/// `echo-text` as toolhost names it.
fn call_typed(id: u64) -> String {
    call_echo_text("scalars_echo-text", id)
}

/// `echo-text` as Wassette names it.
fn call_wassette(id: u64) -> String {
    call_echo_text("toolhost_kitchen-sink_scalars_0_1_0_echo-text", id)
}

/// A successful reply whose text is `echo-text`'s result: the arguments
/// sent, as a tuple.
fn check_typed_reply(v: &Value) {
    let text = v["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    let result = serde_json::from_str::<Value>(text).ok();
    assert!(
        v["result"]["isError"] != true && result == Some(json!(["x", "hello, sandbox", true])),
        "unexpected reply {v}"
    );
}

fn check_reply(v: &Value) {
    assert_eq!(
        v["result"]["content"][0]["text"], "hello, sandbox",
        "unexpected reply {v}"
    );
}

/// Per-call latencies of one round.
type Latencies = Vec<Duration>;

// --- stdio: one connection, `inflight` requests outstanding

/// A client's `tools/call` request with a given id, and the check of its
/// reply.
type Exchange = (fn(u64) -> String, fn(&Value));

struct StdioClient {
    _child: Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    next_id: u64,
    /// The `tools/call` request with a given id, and the check of its reply.
    request: fn(u64) -> String,
    check: fn(&Value),
}

impl StdioClient {
    async fn connect(server: Server) -> StdioClient {
        let mut child = spawn(server, Transport::Stdio);
        let mut stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        stdin
            .write_all(format!("{INIT}\n{INITIALIZED}\n").as_bytes())
            .await
            .unwrap();
        let init = lines.next_line().await.unwrap().expect("initialize reply");
        assert!(init.contains("protocolVersion"), "{init}");
        let (request, check): Exchange = match server {
            Server::ToolhostTyped => (call_typed, check_typed_reply),
            Server::Wassette => (call_wassette, check_typed_reply),
            _ => (call, check_reply),
        };
        StdioClient {
            _child: child,
            stdin,
            lines,
            next_id: 1,
            request,
            check,
        }
    }

    async fn round(&mut self, calls: usize, inflight: usize) -> Latencies {
        let mut sent: HashMap<u64, Instant> = HashMap::new();
        let mut lat = Vec::with_capacity(calls);
        let mut issued = 0;
        while issued < inflight.min(calls) {
            self.send().await.map(|id| sent.insert(id, Instant::now()));
            issued += 1;
        }
        while lat.len() < calls {
            let line = self.lines.next_line().await.unwrap().expect("reply");
            let v: Value = serde_json::from_str(&line).unwrap();
            let Some(id) = v["id"].as_u64() else { continue };
            (self.check)(&v);
            lat.push(
                sent.remove(&id)
                    .expect("a reply to a sent request")
                    .elapsed(),
            );
            if issued < calls {
                self.send().await.map(|id| sent.insert(id, Instant::now()));
                issued += 1;
            }
        }
        lat
    }

    async fn send(&mut self) -> Option<u64> {
        let id = self.next_id;
        self.next_id += 1;
        self.stdin
            .write_all(format!("{}\n", (self.request)(id)).as_bytes())
            .await
            .unwrap();
        Some(id)
    }
}

// --- HTTP: `clients` clients, each with its own connection (and session)

/// Which MCP wire an HTTP client speaks.
#[derive(Clone, Copy, PartialEq)]
enum Wire {
    /// 2025-11-25: a session from `initialize`; responses are SSE streams.
    Session,
    /// 2026-07-28: no session; per-request metadata; JSON responses.
    Stateless,
    /// The same requests with an (allowed) `Origin` header, which leaves
    /// them to rmcp's service instead of the server's stateless lane.
    StatelessViaRmcp,
}

impl Wire {
    fn stateless(self) -> bool {
        matches!(self, Wire::Stateless | Wire::StatelessViaRmcp)
    }
}

struct HttpClient {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: String,
    session: String,
    wire: Wire,
}

impl HttpClient {
    async fn connect(addr: &str) -> HttpClient {
        HttpClient::connect_wire(addr, Wire::Session).await
    }

    async fn connect_wire(addr: &str, wire: Wire) -> HttpClient {
        let send = connect(addr).await;
        let mut c = HttpClient {
            send,
            addr: addr.to_string(),
            session: String::new(),
            wire,
        };
        if wire.stateless() {
            return c;
        }
        let (headers, body) = c.post(INIT).await;
        c.session = headers
            .get("mcp-session-id")
            .expect("a session id")
            .to_str()
            .unwrap()
            .to_string();
        assert!(body.contains("protocolVersion"), "{body}");
        c.post(INITIALIZED).await;
        c
    }

    async fn post(&mut self, body: &str) -> (hyper::HeaderMap, String) {
        let mut req = hyper::Request::post("/mcp")
            .header("host", &self.addr)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        if !self.session.is_empty() {
            req = req
                .header("mcp-session-id", &self.session)
                .header("mcp-protocol-version", "2025-11-25");
        }
        if self.wire.stateless() {
            req = req
                .header("mcp-protocol-version", "2026-07-28")
                .header("mcp-method", "tools/call")
                .header("mcp-name", "echo");
        }
        if self.wire == Wire::StatelessViaRmcp {
            req = req.header("origin", "http://localhost:3000");
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .unwrap();
        self.send.ready().await.unwrap();
        let resp = self.send.send_request(req).await.unwrap();
        assert!(resp.status().is_success(), "HTTP {}", resp.status());
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (headers, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn call(&mut self, id: u64) -> Duration {
        let t = Instant::now();
        let (headers, body) = match self.wire {
            Wire::Session => self.post(&call(id)).await,
            Wire::Stateless | Wire::StatelessViaRmcp => self.post(&call_2026(id)).await,
        };
        let elapsed = t.elapsed();
        if self.wire.stateless() {
            assert_eq!(
                headers.get("content-type").and_then(|v| v.to_str().ok()),
                Some("application/json"),
                "a stateless call with nothing to stream is answered as plain JSON"
            );
        }
        // An SSE stream (`data: {...}` events) or a plain JSON body.
        let reply = reply_of(&body);
        check_reply(&reply);
        elapsed
    }
}

async fn http_round(clients: &mut [HttpClient], calls_each: usize) -> Latencies {
    let tasks = clients.iter_mut().map(|c| async move {
        let mut lat = Vec::with_capacity(calls_each);
        for i in 0..calls_each {
            lat.push(c.call(i as u64 + 1).await);
        }
        lat
    });
    futures::future::join_all(tasks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

// --- measurement

#[derive(Default, Clone, Copy)]
struct Figures {
    p50_us: f64,
    p99_us: f64,
    calls_per_s: f64,
    /// The bench thread's CPU time over the round's wall time. Every
    /// client runs on that one thread, so near 100% the client, not the
    /// server, bounded the round's throughput.
    client_busy: f64,
}

/// When a round started, by the clock and by the bench thread's CPU time.
struct Round {
    wall: Instant,
    cpu: Duration,
}

impl Round {
    fn start() -> Round {
        Round {
            wall: Instant::now(),
            cpu: client_cpu(),
        }
    }
}

/// CPU time this thread has used (`RUSAGE_THREAD`): the clients' own.
/// Zero where there is no per-thread figure (not Linux).
fn client_cpu() -> Duration {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `getrusage` writes only the struct it is given, which is
        // plain integers (all-zero is a valid value).
        let (rc, u) = unsafe {
            let mut u: libc::rusage = std::mem::zeroed();
            (libc::getrusage(libc::RUSAGE_THREAD, &mut u), u)
        };
        assert_eq!(rc, 0, "getrusage(RUSAGE_THREAD)");
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        tv(u.ru_utime) + tv(u.ru_stime)
    }
    #[cfg(not(target_os = "linux"))]
    Duration::ZERO
}

fn figures(mut lat: Latencies, round: Round) -> Figures {
    let wall = round.wall.elapsed();
    let cpu = client_cpu().saturating_sub(round.cpu);
    lat.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    Figures {
        p50_us: us(lat[lat.len() / 2]),
        p99_us: us(lat[lat.len() * 99 / 100]),
        calls_per_s: lat.len() as f64 / wall.as_secs_f64(),
        client_busy: cpu.as_secs_f64() / wall.as_secs_f64(),
    }
}

fn median_figures(mut rounds: Vec<Figures>) -> Figures {
    let mid = rounds.len() / 2;
    let pick = |rounds: &mut Vec<Figures>, f: fn(&Figures) -> f64| {
        rounds.sort_by(|a, b| f(a).partial_cmp(&f(b)).unwrap());
        f(&rounds[mid])
    };
    Figures {
        p50_us: pick(&mut rounds, |f| f.p50_us),
        p99_us: pick(&mut rounds, |f| f.p99_us),
        calls_per_s: pick(&mut rounds, |f| f.calls_per_s),
        client_busy: pick(&mut rounds, |f| f.client_busy),
    }
}

/// Rounds of `transport` at `concurrency`, alternating toolhost and null
/// (and over stdio, toolhost with `prepare-after-reply` off: the third
/// figures).
async fn compare(transport: Transport, concurrency: usize) -> (Figures, Figures, Option<Figures>) {
    let (calls, inflight) = if concurrency == 1 {
        (SEQUENTIAL_CALLS, 1)
    } else {
        (CONCURRENT * CONCURRENT_CALLS_EACH, CONCURRENT)
    };
    let mut results: [Vec<Figures>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    match transport {
        Transport::Stdio => {
            let mut clients = [
                StdioClient::connect(Server::Toolhost).await,
                StdioClient::connect(Server::Null).await,
                StdioClient::connect(Server::ToolhostUnprepared).await,
            ];
            for c in clients.iter_mut() {
                c.round(calls / 4, inflight).await; // warm up
            }
            for _ in 0..ROUNDS {
                for (i, c) in clients.iter_mut().enumerate() {
                    let t = Round::start();
                    let lat = c.round(calls, inflight).await;
                    results[i].push(figures(lat, t));
                }
            }
        }
        Transport::Http => {
            let mut servers = [
                spawn(Server::Toolhost, Transport::Http),
                spawn(Server::Null, Transport::Http),
            ];
            let mut clients: Vec<Vec<HttpClient>> = Vec::new();
            for s in servers.iter_mut() {
                let addr = http_addr(s).await;
                let mut cs = Vec::new();
                for _ in 0..concurrency {
                    cs.push(HttpClient::connect(&addr).await);
                }
                clients.push(cs);
            }
            let each = calls / concurrency;
            for cs in clients.iter_mut() {
                http_round(cs, each / 4).await; // warm up
            }
            for _ in 0..ROUNDS {
                for (i, cs) in clients.iter_mut().enumerate() {
                    let t = Round::start();
                    let lat = http_round(cs, each).await;
                    results[i].push(figures(lat, t));
                }
            }
        }
    }
    let [toolhost, null, unprepared] = results;
    let unprepared = (!unprepared.is_empty()).then(|| median_figures(unprepared));
    (median_figures(toolhost), median_figures(null), unprepared)
}

/// Rounds over one `toolhost serve --http` at `concurrency`, alternating the
/// wires: the session wire, the stateless wire, and the stateless wire left
/// to rmcp's service (figures in that order).
async fn compare_wires(concurrency: usize) -> [Figures; 3] {
    const WIRES: [Wire; 3] = [Wire::Session, Wire::Stateless, Wire::StatelessViaRmcp];
    let calls = if concurrency == 1 {
        SEQUENTIAL_CALLS
    } else {
        CONCURRENT * CONCURRENT_CALLS_EACH
    };
    let mut server = spawn(Server::Toolhost, Transport::Http);
    let addr = http_addr(&mut server).await;
    let mut clients: Vec<Vec<HttpClient>> = Vec::new();
    for wire in WIRES {
        let mut cs = Vec::new();
        for _ in 0..concurrency {
            cs.push(HttpClient::connect_wire(&addr, wire).await);
        }
        clients.push(cs);
    }
    let each = calls / concurrency;
    let mut results: [Vec<Figures>; 3] = Default::default();
    for cs in clients.iter_mut() {
        http_round(cs, each / 4).await; // warm up
    }
    for _ in 0..ROUNDS {
        for (i, cs) in clients.iter_mut().enumerate() {
            let t = Round::start();
            let lat = http_round(cs, each).await;
            results[i].push(figures(lat, t));
        }
    }
    results.map(median_figures)
}

/// p50 of `Core::call(echo)` in process: the sandbox's share, no transport.
async fn core_call_p50(root: &std::path::Path) -> anyhow::Result<f64> {
    use toolhost::{CallRequest, Core, Scope};
    let core = Core::builder()
        .source(Scope::default(), root.join("build/tools/echo.toml"))
        .build()
        .await?;
    let args = json!({"text": "hello, sandbox"}).as_object().cloned();
    let mut rounds = Vec::new();
    for round in 0..=ROUNDS {
        let mut lat = Vec::with_capacity(SEQUENTIAL_CALLS);
        let t = Round::start();
        for _ in 0..SEQUENTIAL_CALLS {
            let started = Instant::now();
            let out = core
                .call(CallRequest::new(Scope::default(), "echo", args.clone()))
                .await?;
            assert_eq!(out.text(), "hello, sandbox");
            lat.push(started.elapsed());
        }
        if round > 0 {
            rounds.push(figures(lat, t)); // round 0 warms up
        }
    }
    Ok(median_figures(rounds).p50_us)
}

/// The `wassette` binary to compare with, if `TOOLHOST_BENCH_WASSETTE`
/// names one. Wassette is not on crates.io: build it from source
/// (BENCHMARKS.md, "Against Wassette").
fn wassette() -> Option<PathBuf> {
    std::env::var_os("TOOLHOST_BENCH_WASSETTE").map(PathBuf::from)
}

/// A directory with the typed `typed-kitchen-sink` component twice: under
/// a toolhost manifest (`sink.toml`) and in a Wassette plugin directory.
fn typed_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        use sha2::Digest;
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let wasm = std::fs::read(root.join("build/test-tools/typed-kitchen-sink.wasm"))
            .expect("build/test-tools/typed-kitchen-sink.wasm (`make tools`)");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sink.wasm"), &wasm).unwrap();
        std::fs::write(
            dir.path().join("sink.toml"),
            format!(
                "[component]\npath = \"sink.wasm\"\nsha256 = \"{}\"\n",
                hex::encode(sha2::Sha256::digest(&wasm))
            ),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        std::fs::write(dir.path().join("plugins/sink.wasm"), &wasm).unwrap();
        dir
    })
    .path()
}

/// P2's second half: the same typed component's `echo-text` through
/// `toolhost serve` and through Wassette over stdio, sequential calls,
/// rounds alternating with the null server's `echo`.
async fn wassette_table() {
    if wassette().is_none() {
        println!(
            "\n(Against Wassette: skipped; set TOOLHOST_BENCH_WASSETTE to a `wassette` binary.)"
        );
        return;
    }
    let mut clients = [
        StdioClient::connect(Server::ToolhostTyped).await,
        StdioClient::connect(Server::Wassette).await,
        StdioClient::connect(Server::Null).await,
    ];
    for c in clients.iter_mut() {
        c.round(SEQUENTIAL_CALLS / 4, 1).await; // warm up
    }
    let mut results: [Vec<Figures>; 3] = Default::default();
    for _ in 0..ROUNDS {
        for (i, c) in clients.iter_mut().enumerate() {
            let t = Round::start();
            let lat = c.round(SEQUENTIAL_CALLS, 1).await;
            results[i].push(figures(lat, t));
        }
    }
    let [toolhost, wassette, null] = results.map(median_figures);
    println!("\n## Against Wassette: a typed component's `echo-text` over stdio, sequential\n");
    println!("| server | p50 | p99 | calls/s | p50 vs null | p50 vs toolhost | client busy |");
    println!("|---|---|---|---|---|---|---|");
    for (name, f) in [
        ("toolhost", toolhost),
        ("Wassette", wassette),
        ("null server (`echo`)", null),
    ] {
        println!(
            "| {name} | {:.0} µs | {:.0} µs | {:.0} | {:.2}x | {:.2}x | {:.0}% |",
            f.p50_us,
            f.p99_us,
            f.calls_per_s,
            f.p50_us / null.p50_us,
            f.p50_us / toolhost.p50_us,
            f.client_busy * 100.0,
        );
    }
    drop(clients);
    let _ = std::fs::remove_dir_all(typed_dir());
    println!(
        "\nMedian of {ROUNDS} rounds of {SEQUENTIAL_CALLS} calls, the three servers alternating. Both serve `typed-kitchen-sink` unchanged and run each call in a fresh instance: toolhost one prepared after the previous reply (its default), Wassette one instantiated, with a new linker, on the call's path."
    );
}

/// The round-trip tables (toolhost against the null server, and prepared
/// against built on the path) over stdio and, unless `stdio_only`, HTTP;
/// returns toolhost's sequential p50 per transport.
async fn round_trip_tables(stdio_only: bool) -> Vec<(&'static str, f64)> {
    println!("\n## MCP round trip: `echo` through `toolhost serve` vs a null server\n");
    println!(
        "| transport | callers | toolhost p50 | null p50 | p50 ratio | toolhost p99 | null p99 | toolhost calls/s | null calls/s | throughput ratio | client busy (toolhost / null) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut toolhost_sequential = Vec::new();
    let mut unprepared_rows = Vec::new();
    for (transport, name) in [(Transport::Stdio, "stdio"), (Transport::Http, "HTTP")] {
        if stdio_only && matches!(transport, Transport::Http) {
            continue;
        }
        for concurrency in [1, CONCURRENT] {
            let (t, n, unprepared) = compare(transport, concurrency).await;
            if concurrency == 1 {
                toolhost_sequential.push((name, t.p50_us));
            }
            let callers = if concurrency == 1 {
                "1 (sequential)".to_string()
            } else {
                format!("{concurrency} concurrent")
            };
            if let Some(u) = unprepared {
                unprepared_rows.push(format!(
                    "| {name} | {callers} | {:.0} µs | {:.0} µs | {:.2}x | {:.0} | {:.0} | {:.2}x | {:.2}x |",
                    t.p50_us,
                    u.p50_us,
                    u.p50_us / t.p50_us,
                    t.calls_per_s,
                    u.calls_per_s,
                    t.calls_per_s / u.calls_per_s,
                    u.p50_us / n.p50_us,
                ));
            }
            println!(
                "| {name} | {callers} | {:.0} µs | {:.0} µs | {:.2}x | {:.0} µs | {:.0} µs | {:.0} | {:.0} | {:.2}x | {:.0}% / {:.0}% |",
                t.p50_us,
                n.p50_us,
                t.p50_us / n.p50_us,
                t.p99_us,
                n.p99_us,
                t.calls_per_s,
                n.calls_per_s,
                t.calls_per_s / n.calls_per_s,
                t.client_busy * 100.0,
                n.client_busy * 100.0,
            );
        }
    }
    println!(
        "\nMedian of {ROUNDS} rounds (rounds alternate the two servers); sequential: {SEQUENTIAL_CALLS} calls a round; concurrent: {CONCURRENT} callers x {CONCURRENT_CALLS_EACH} calls (stdio: one connection with {CONCURRENT} requests in flight; HTTP: {CONCURRENT} clients, each its own connection and session). Client busy: the bench's one client thread's CPU time over the round's wall time; near 100% the client, not the server, bounded the round."
    );
    println!(
        "\n## The next call's sandbox prepared after the reply (`prepare-after-reply`, default) vs built on the call's path\n"
    );
    println!(
        "| transport | callers | p50, prepared | p50, built on the path | p50 saved (ratio) | calls/s, prepared | calls/s, built on the path | throughput ratio | built on the path: p50 vs null |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in &unprepared_rows {
        println!("{row}");
    }
    println!(
        "\nThe same rounds as the table above: three stdio servers alternating (toolhost, the null server, and toolhost with `[engine] prepare-after-reply = false`)."
    );
    let _ = std::fs::remove_file(unprepared_config_path());
    toolhost_sequential
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--null-server") {
        let transport = args.get(i + 1).map(String::as_str).unwrap_or("stdio");
        return tokio::runtime::Runtime::new()?.block_on(null_server(transport));
    }
    // The clients run on one thread, as `wrk -t1` does. On a runtime with a
    // worker per core they took the servers' cores: the stateless wire's 64
    // clients measured 9,459-9,733 calls/s on a 2-core machine where one
    // client thread measured 11,266-12,159 of the same server in the same
    // minutes (BENCHMARKS.md, "MCP round trip").
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    anyhow::ensure!(
        root.join("build/tools/echo.toml").is_file(),
        "run `make tools` first"
    );
    rt.block_on(async {
        // `-- stdio` measures the stdio rows alone, `-- wires` the HTTP wire
        // table alone (quicker, for work on either).
        let stdio_only = args.iter().any(|a| a == "stdio");
        let wires_only = args.iter().any(|a| a == "wires");
        let mut toolhost_sequential = Vec::new();
        if !wires_only {
            toolhost_sequential = round_trip_tables(stdio_only).await;
            wassette_table().await;
            if stdio_only {
                return Ok(());
            }
        }
        println!("\n## MCP over HTTP: 2025-11-25 session (SSE) vs 2026-07-28 stateless (JSON), `echo` through `toolhost serve`\n");
        println!("| callers | wire | p50 | p99 | calls/s | calls/s vs session | client busy |");
        println!("|---|---|---|---|---|---|---|");
        for concurrency in [1, CONCURRENT] {
            let figures = compare_wires(concurrency).await;
            let callers = if concurrency == 1 {
                "1 (sequential)".to_string()
            } else {
                format!("{concurrency} concurrent")
            };
            let names = [
                "2025-11-25 session",
                "2026-07-28 stateless",
                "2026-07-28 stateless, left to rmcp's service",
            ];
            for (f, name) in figures.iter().zip(names) {
                println!(
                    "| {callers} | {name} | {:.0} µs | {:.0} µs | {:.0} | {:.2}x | {:.0}% |",
                    f.p50_us,
                    f.p99_us,
                    f.calls_per_s,
                    f.calls_per_s / figures[0].calls_per_s,
                    f.client_busy * 100.0,
                );
            }
        }
        println!(
            "\nSame server, same `echo`, rounds alternating the wires. Session: one initialize per client, then each response an SSE stream; stateless: `_meta` and `Mcp-*` headers on every request, no session, plain JSON responses, answered by the server's stateless lane; the last row sends the same stateless requests with an allowed `Origin` header, which leaves them to rmcp's Streamable HTTP service (what every stateless call took before the lane)."
        );
        if wires_only {
            return Ok(());
        }
        let core = core_call_p50(&root).await?;
        let shares: Vec<String> = toolhost_sequential
            .iter()
            .map(|(name, p50)| format!("{:.0}% of the sequential {name} round trip", core / p50 * 100.0))
            .collect();
        println!(
            "\nIn process, `Core::call(echo)` (fresh sandbox, schema check, no transport): {core:.0} µs p50, {}.",
            shares.join(", ")
        );
        Ok(())
    })
}
