//! Tool-call latency over the Claude CLI control protocol: a driver plays
//! the CLI, sends `mcp_message` tools/call control requests (JSON lines) to
//! `toolhost::agent`, and times each request -> reply. The call runs the
//! `echo` WASM tool in a fresh sandbox through `McpServer` and `Core::call`,
//! exactly as for the real CLI.
//!
//! Two ways, each side by side with the Python Claude Agent SDK's in-process
//! tool (benches/agent_control.py) when `TOOLHOST_BENCH_PYTHON` names a
//! Python that can import `claude_agent_sdk`:
//! - **through a CLI process**: each SDK starts "the CLI" as it would start
//!   `claude` (its own spawn, real pipes); the CLI is this bench's executable
//!   re-run as a fake CLI ([`fake_cli`]), which times the calls, so both SDKs
//!   are timed by the same code over the same kind of pipes;
//! - **in memory**: the driver is in the SDK's own process (an in-memory
//!   duplex for toolhost, an in-memory transport for Python).
//!
//!   cargo bench -p toolhost --features agent --bench agent_control [-- CALLS [ROUNDS]]

use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use toolhost::agent::{AgentOptions, AgentSession};
use toolhost::{Core, Scope};

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
    calls: usize,
    /// CPU per call of the SDK's process (every thread), where measured.
    cpu: Option<Duration>,
}

impl Stats {
    fn of(mut times: Vec<Duration>) -> Stats {
        times.sort();
        Stats {
            p50: times[times.len() / 2],
            p99: times[times.len() * 99 / 100],
            mean: times.iter().sum::<Duration>() / times.len() as u32,
            calls: times.len(),
            cpu: None,
        }
    }
}

/// Calls timed after this many untimed ones.
const WARM_UP: usize = 200;

/// The MCP handshake a driver sends the SDK server first.
fn mcp_handshake() -> [Value; 2] {
    [
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    ]
}

/// Call `i` of the timed loop: `echo` of "hello".
fn echo_request(i: usize) -> Value {
    json!({"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "hello"}}})
}

/// Check a control response to [`echo_request`].
fn assert_echoed(r: &Value) {
    assert_eq!(
        r["response"]["response"]["mcp_response"]["result"]["content"][0]["text"], "hello",
        "{r}"
    );
}

/// A core serving echo; `prepared`: with `[engine] prepare-after-reply`
/// (the default), else every call builds its sandbox on its path.
async fn echo_core(prepared: bool) -> Core {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../build/tools/echo.toml");
    assert!(tools.is_file(), "run `make tools` first");
    Core::builder()
        .config(toolhost::HostConfig::default().with_prepare_after_reply(prepared))
        .source(Scope::default(), tools)
        .build()
        .await
        .unwrap()
}

/// The CPU time the fake CLI's parent (the SDK's process: every thread,
/// user and system) has used, in microseconds, from `/proc` (clock-tick
/// resolution: 10 ms over seconds of calls).
fn parent_cpu_us() -> f64 {
    let stat = std::fs::read_to_string(format!(
        "/proc/{}/stat",
        std::os::unix::process::parent_id()
    ))
    .expect("/proc/PPID/stat");
    // Fields after the command (which may hold spaces): state is field 3,
    // utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("stat has a command") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: sysconf reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz * 1e6
}

/// The pipes' own round trip: this process answers every `mcp_message`
/// at once (blocking std I/O, no tool, no SDK), timed by the same fake CLI.
fn floor_process(calls: usize) -> Stats {
    use std::io::{BufRead, Write};
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env(FAKE_CLI_OUT, out.path())
        .env(FAKE_CLI_CALLS, calls.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut w = child.stdin.take().unwrap();
    let mut r = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    w.write_all(b"{\"type\":\"control_request\",\"request_id\":\"x\",\"request\":{\"subtype\":\"initialize\"}}\n").unwrap();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["type"] == "result" {
            break;
        }
        if v["type"] != "control_request" {
            continue;
        }
        let reply = json!({"type": "control_response", "response": {"subtype": "success", "request_id": v["request_id"], "response": {"mcp_response": {"jsonrpc": "2.0", "id": v["request"]["message"]["id"], "result": {"content": [{"type": "text", "text": "hello"}]}}}}});
        w.write_all(format!("{reply}\n").as_bytes()).unwrap();
        w.flush().unwrap();
    }
    drop(w);
    child.wait().unwrap();
    parse_figures(&std::fs::read(out.path()).unwrap()).expect("the fake CLI wrote its figures")
}

/// toolhost in memory: the driver is a task of this process.
async fn rust_in_memory(calls: usize) -> Stats {
    let core = echo_core(true).await;
    let (host_end, cli_end) = tokio::io::duplex(1 << 20);
    let (hr, hw) = tokio::io::split(host_end);
    let (cr, mut cw) = tokio::io::split(cli_end);
    let mut lines = BufReader::new(cr).lines();
    let opts = AgentOptions::default().server("tools", Scope::default());
    let session = tokio::spawn(AgentSession::connect_io(core, opts, BufReader::new(hr), hw));
    let init: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    let reply = json!({"type": "control_response", "response": {"subtype": "success", "request_id": init["request_id"], "response": {}}});
    cw.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
    let _session = session.await.unwrap().unwrap();
    let mut rpc = async |rid: String, message: Value| -> Value {
        let req = json!({"type": "control_request", "request_id": rid, "request": {"subtype": "mcp_message", "server_name": "tools", "message": message}});
        cw.write_all(format!("{req}\n").as_bytes()).await.unwrap();
        serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap()
    };
    let [init, initialized] = mcp_handshake();
    rpc("i0".into(), init).await;
    rpc("i1".into(), initialized).await;
    let mut times = Vec::with_capacity(calls);
    for i in 0..WARM_UP + calls {
        let t = Instant::now();
        let r = rpc(format!("c{i}"), echo_request(i)).await;
        let dt = t.elapsed();
        assert_echoed(&r);
        if i >= WARM_UP {
            times.push(dt);
        }
    }
    Stats::of(times)
}

/// Set (to the file its figures go to) in the environment of this bench's
/// executable when it runs as the fake CLI.
const FAKE_CLI_OUT: &str = "AGENT_BENCH_FAKE_CLI_OUT";
/// How many calls the fake CLI times (after 200 warm-up calls).
const FAKE_CLI_CALLS: &str = "AGENT_BENCH_FAKE_CLI_CALLS";

/// This executable as the `claude` CLI, as far as the bench needs it:
/// answers `-v` and the SDK's `initialize`, then calls the SDK server
/// `tools` (MCP `initialize`, `notifications/initialized`, then `echo`
/// over and over, one call at a time), times each call from writing its
/// control request to reading its control response, writes the figures
/// to `out` as JSON, reports a `result`, and exits when its input ends.
/// Blocking std I/O and no async runtime: the driver adds as little as it
/// can, the same for both SDKs.
fn fake_cli(out: &str) -> ! {
    if std::env::args().any(|a| a == "-v" || a == "--version") {
        println!("{} (Claude Code)", toolhost::agent::PINNED_CLI_VERSION);
        std::process::exit(0);
    }
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"fake-cli".as_ptr()) };
    let calls: usize = std::env::var(FAKE_CLI_CALLS)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let mut cli = FakeCli {
        input: std::io::stdin().lock(),
        output: std::io::stdout().lock(),
        line: String::new(),
    };
    // The SDK's `initialize` (anything else before it, such as a prompt,
    // is not for this CLI).
    loop {
        let v = cli.next().expect("the SDK sends `initialize`");
        if v["type"] == "control_request" {
            cli.send(&json!({"type": "control_response", "response": {"subtype": "success", "request_id": v["request_id"], "response": {}}}));
            if v["request"]["subtype"] == "initialize" {
                break;
            }
        }
    }
    let [init, initialized] = mcp_handshake();
    cli.rpc("i0", init);
    cli.rpc("i1", initialized);
    let mut times = Vec::with_capacity(calls);
    let sdk_cpu = parent_cpu_us();
    for i in 0..WARM_UP + calls {
        let t = Instant::now();
        let r = cli.rpc(&format!("c{i}"), echo_request(i));
        let dt = t.elapsed();
        assert_echoed(&r);
        if i >= WARM_UP {
            times.push(dt);
        }
    }
    let sdk_cpu = (parent_cpu_us() - sdk_cpu) / (calls + WARM_UP) as f64;
    let s = Stats::of(times);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let figures = json!({"p50_us": us(s.p50), "p99_us": us(s.p99), "mean_us": us(s.mean), "calls": s.calls, "sdk_cpu_us": sdk_cpu});
    std::fs::write(out, figures.to_string()).unwrap();
    cli.send(&json!({"type": "result", "subtype": "success", "duration_ms": 0, "duration_api_ms": 0, "is_error": false, "num_turns": 1, "session_id": "bench", "total_cost_usd": 0.0, "usage": {}, "result": "done"}));
    while cli.next().is_some() {}
    std::process::exit(0);
}

struct FakeCli {
    input: std::io::StdinLock<'static>,
    output: std::io::StdoutLock<'static>,
    line: String,
}

impl FakeCli {
    /// The next JSON line from the SDK; `None` at the end of input.
    fn next(&mut self) -> Option<Value> {
        use std::io::BufRead;
        loop {
            self.line.clear();
            if self.input.read_line(&mut self.line).ok()? == 0 {
                return None;
            }
            if let Ok(v) = serde_json::from_str(&self.line) {
                return Some(v);
            }
        }
    }

    fn send(&mut self, v: &Value) {
        use std::io::Write;
        let mut l = serde_json::to_vec(v).unwrap();
        l.push(b'\n');
        self.output.write_all(&l).unwrap();
        self.output.flush().unwrap();
    }

    /// One `mcp_message` to the server `tools`, and its control response.
    fn rpc(&mut self, rid: &str, message: Value) -> Value {
        self.send(&json!({"type": "control_request", "request_id": rid, "request": {"subtype": "mcp_message", "server_name": "tools", "message": message}}));
        loop {
            let v = self.next().expect("the SDK answers");
            if v["type"] == "control_response" && v["response"]["request_id"] == rid {
                return v;
            }
        }
    }
}

/// toolhost through a CLI process: `AgentSession::connect` starts this
/// executable as the fake CLI, which times the calls.
async fn rust_process(calls: usize, prepared: bool) -> Stats {
    let core = echo_core(prepared).await;
    let out = tempfile::NamedTempFile::new().unwrap();
    let opts = AgentOptions::default()
        .server("tools", Scope::default())
        .cli(std::env::current_exe().unwrap())
        .env(FAKE_CLI_OUT, out.path().to_str().unwrap())
        .env(FAKE_CLI_CALLS, calls.to_string());
    let mut session = AgentSession::connect(core, opts).await.unwrap();
    loop {
        match session.next().await {
            Some(Ok(toolhost::agent::Message::Result(_))) => break,
            Some(Ok(_)) => {}
            other => panic!("the fake CLI ended early: {other:?}: {}", session.stderr()),
        }
    }
    session.close(Duration::from_secs(5)).await;
    parse_figures(&std::fs::read(out.path()).unwrap()).expect("the fake CLI wrote its figures")
}

/// The Python SDK through a CLI process: its `query()` starts this
/// executable as the fake CLI.
fn python_process(calls: usize) -> Option<Stats> {
    let py = python_path()?;
    let out = tempfile::NamedTempFile::new().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/agent_control.py");
    let run = std::process::Command::new(&py)
        .arg(script)
        .arg("--cli")
        .arg(std::env::current_exe().unwrap())
        .env(FAKE_CLI_OUT, out.path())
        .env(FAKE_CLI_CALLS, calls.to_string())
        .output()
        .unwrap_or_else(|e| panic!("TOOLHOST_BENCH_PYTHON={}: cannot run it: {e}", py.display()));
    assert!(
        run.status.success(),
        "the Python bench failed ({}): {}",
        py.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    Some(
        parse_figures(&std::fs::read(out.path()).unwrap()).unwrap_or_else(|| {
            panic!(
                "the fake CLI under the Python SDK wrote no figures: {}",
                String::from_utf8_lossy(&run.stderr)
            )
        }),
    )
}

/// The Python `TOOLHOST_BENCH_PYTHON` names; a relative path is taken
/// from the workspace root (cargo runs benches in `host/`).
fn python_path() -> Option<std::path::PathBuf> {
    let py = std::path::PathBuf::from(std::env::var_os("TOOLHOST_BENCH_PYTHON")?);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    Some(if py.is_relative() && py.components().count() > 1 {
        root.join(py)
    } else {
        py
    })
}

/// The Python SDK's side in memory, if `TOOLHOST_BENCH_PYTHON` names a
/// Python. Once asked for, it is measured or the bench fails: a side
/// silently skipped would leave a table without its comparison.
fn python_in_memory(calls: usize) -> Option<Stats> {
    let py = python_path()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/agent_control.py");
    let out = std::process::Command::new(&py)
        .arg(script)
        .arg(calls.to_string())
        .output()
        .unwrap_or_else(|e| panic!("TOOLHOST_BENCH_PYTHON={}: cannot run it: {e}", py.display()));
    assert!(
        out.status.success(),
        "the Python bench failed ({}): {}",
        py.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(parse_figures(&out.stdout).unwrap_or_else(|| {
        panic!(
            "the Python bench printed no figures: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    }))
}

/// `{"p50_us":..,"p99_us":..,"mean_us":..,"calls":..}`, as the Python
/// script and the fake CLI write them.
fn parse_figures(json: &[u8]) -> Option<Stats> {
    let v: Value = serde_json::from_slice(json.trim_ascii()).ok()?;
    let us = |k: &str| -> Option<Duration> {
        Some(Duration::from_nanos((v[k].as_f64()? * 1000.0) as u64))
    };
    Some(Stats {
        p50: us("p50_us")?,
        p99: us("p99_us")?,
        mean: us("mean_us")?,
        calls: v["calls"].as_u64()? as usize,
        cpu: us("sdk_cpu_us"),
    })
}

/// The SDK version the Python at `py` imports.
fn python_sdk_version() -> Option<String> {
    let py = python_path()?;
    let out = std::process::Command::new(py)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('claude-agent-sdk'))",
        ])
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

type Round = (Stats, Option<Stats>);

/// One table: a row per round, toolhost against the Python SDK.
fn table(title: &str, sdk: &str, results: &[Round], floor: &[Stats]) {
    println!("\n{title}");
    println!(
        "| round | toolhost p50 / p99 / mean | Python SDK {sdk} p50 / p99 / mean | p50 ratio |"
    );
    println!("|---|---:|---:|---:|");
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let fmt = |s: &Stats| {
        let cpu = s
            .cpu
            .map(|c| format!(", CPU {:.0} µs/call", us(c)))
            .unwrap_or_default();
        format!(
            "{:.1} / {:.1} / {:.1} µs{cpu}",
            us(s.p50),
            us(s.p99),
            us(s.mean)
        )
    };
    let mut ratios = Vec::new();
    for (i, (r, p)) in results.iter().enumerate() {
        let (py, ratio) = match p {
            Some(p) => {
                let ratio = us(p.p50) / us(r.p50);
                ratios.push(ratio);
                (fmt(p), format!("{ratio:.1}x"))
            }
            None => ("(not measured)".into(), "-".into()),
        };
        println!("| {} | {} | {py} | {ratio} |", i + 1, fmt(r));
    }
    for (i, f) in floor.iter().enumerate() {
        println!(
            "| floor {}: the pipes alone (a peer that answers at once) | {} | | |",
            i + 1,
            fmt(f)
        );
    }
    let toolhost_p50 = median(results.iter().map(|(r, _)| us(r.p50)).collect());
    println!(
        "\ntoolhost p50, median of rounds: {toolhost_p50:.1} µs (WASM echo, fresh sandbox per call)"
    );
    if ratios.is_empty() {
        println!(
            "(set TOOLHOST_BENCH_PYTHON to a python with claude-agent-sdk to measure the Python SDK side by side)"
        );
    } else {
        println!(
            "p50 ratio Python / toolhost: median {:.1}x, lowest {:.1}x (in-process Python echo, no sandbox)",
            median(ratios.clone()),
            ratios.iter().copied().fold(f64::INFINITY, f64::min)
        );
    }
}

fn main() {
    if let Ok(out) = std::env::var(FAKE_CLI_OUT) {
        fake_cli(&out);
    }
    let mut args = std::env::args().skip(1).filter_map(|a| a.parse().ok());
    let calls = args.next().unwrap_or(5000usize);
    let rounds = args.next().unwrap_or(3usize).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The sides alternate, round by round, so each ratio compares one
    // machine state.
    let (mut process, mut memory, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    let mut unprepared = Vec::new();
    for round in 0..rounds {
        floor.push(floor_process(calls));
        // The two toolhost sides in turn, first one then the other.
        let (u, r) = if round % 2 == 0 {
            let u = rt.block_on(rust_process(calls, false));
            (u, rt.block_on(rust_process(calls, true)))
        } else {
            let r = rt.block_on(rust_process(calls, true));
            (rt.block_on(rust_process(calls, false)), r)
        };
        unprepared.push(u);
        let p = python_process(calls);
        process.push((r, p));
        let r = rt.block_on(rust_in_memory(calls));
        let p = python_in_memory(calls);
        memory.push((r, p));
    }
    for (r, p) in process.iter().chain(&memory) {
        if let Some(p) = p {
            assert_eq!(p.calls, r.calls, "both sides time the same number of calls");
        }
    }
    let sdk = python_sdk_version().unwrap_or_else(|| "?".into());
    table(
        &format!(
            "Agent control protocol through a CLI process (each SDK spawns the fake CLI; real pipes): mcp_message tools/call -> control_response, echo tool, {calls} calls (after {WARM_UP} warm-up), {rounds} rounds"
        ),
        &sdk,
        &process,
        &floor,
    );
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "\nThe same rounds, toolhost with `[engine] prepare-after-reply = false` (each call's sandbox built on its path):"
    );
    println!("| round | p50 / p99 / mean | vs prepared after the reply (p50) |");
    println!("|---|---:|---:|");
    for (i, (u, (r, _))) in unprepared.iter().zip(&process).enumerate() {
        println!(
            "| {} | {:.1} / {:.1} / {:.1} µs{} | {:.2}x |",
            i + 1,
            us(u.p50),
            us(u.p99),
            us(u.mean),
            u.cpu
                .map(|c| format!(", CPU {:.0} µs/call", us(c)))
                .unwrap_or_default(),
            us(u.p50) / us(r.p50),
        );
    }
    table(
        &format!(
            "Agent control protocol in memory (the driver in the SDK's process): {calls} calls (after {WARM_UP} warm-up), {rounds} rounds"
        ),
        &sdk,
        &memory,
        &[],
    );
}
