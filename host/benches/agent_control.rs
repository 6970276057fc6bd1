//! Tool-call latency over the Claude CLI control protocol: a driver plays
//! the CLI, sends `mcp_message` tools/call control requests (JSON lines) to
//! `toolhost::agent` over in-memory pipes, and times each request -> reply.
//! The call runs the `echo` WASM tool in a fresh sandbox through
//! `McpServer` and `Core::call`, exactly as for the real CLI.
//!
//!   cargo bench -p toolhost --features agent --bench agent_control [-- CALLS [ROUNDS]]
//! With `TOOLHOST_BENCH_PYTHON` set to a Python that can import
//! `claude_agent_sdk`, the Python SDK's in-process tool is measured the same
//! way in the same run (benches/agent_control.py) for a side-by-side ratio.

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
}

async fn rust(calls: usize) -> Stats {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../build/tools/echo.toml");
    assert!(tools.is_file(), "run `make tools` first");
    let core = Core::builder()
        .source(Scope::default(), tools)
        .build()
        .await
        .unwrap();
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
    rpc("i0".into(), json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}})).await;
    rpc(
        "i1".into(),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    let mut times = Vec::with_capacity(calls);
    for i in 0..200 + calls {
        let msg = json!({"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "hello"}}});
        let t = Instant::now();
        let r = rpc(format!("c{i}"), msg).await;
        let dt = t.elapsed();
        assert_eq!(
            r["response"]["response"]["mcp_response"]["result"]["content"][0]["text"], "hello",
            "{r}"
        );
        if i >= 200 {
            times.push(dt);
        }
    }
    times.sort();
    Stats {
        p50: times[times.len() / 2],
        p99: times[times.len() * 99 / 100],
        mean: times.iter().sum::<Duration>() / times.len() as u32,
        calls: times.len(),
    }
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

/// The Python SDK's side, if `TOOLHOST_BENCH_PYTHON` names a Python. Once
/// asked for, it is measured or the bench fails: a side silently skipped
/// would leave a table without its comparison. A relative path is taken
/// from the workspace root (cargo runs benches in `host/`).
fn python(calls: usize) -> Option<Stats> {
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
    Some(parse_python(&out.stdout).unwrap_or_else(|| {
        panic!(
            "the Python bench printed no figures: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    }))
}

fn parse_python(stdout: &[u8]) -> Option<Stats> {
    let v: Value = serde_json::from_slice(stdout.trim_ascii()).ok()?;
    let us = |k: &str| -> Option<Duration> {
        Some(Duration::from_nanos((v[k].as_f64()? * 1000.0) as u64))
    };
    Some(Stats {
        p50: us("p50_us")?,
        p99: us("p99_us")?,
        mean: us("mean_us")?,
        calls: v["calls"].as_u64()? as usize,
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

fn main() {
    let mut args = std::env::args().skip(1).filter_map(|a| a.parse().ok());
    let calls = args.next().unwrap_or(5000usize);
    let rounds = args.next().unwrap_or(3usize).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The two sides alternate, round by round, so both see the same
    // machine: a ratio is taken within each round.
    let mut results = Vec::new();
    for _ in 0..rounds {
        let r = rt.block_on(rust(calls));
        let p = python(calls);
        if let Some(p) = &p {
            assert_eq!(p.calls, r.calls, "both sides time the same number of calls");
        }
        results.push((r, p));
    }
    let sdk = python_sdk_version().unwrap_or_else(|| "?".into());
    println!(
        "\nAgent control protocol: mcp_message tools/call -> control_response, echo tool, {calls} calls (after 200 warm-up), {rounds} rounds"
    );
    println!(
        "| round | toolhost p50 / p99 / mean | Python SDK {sdk} p50 / p99 / mean | p50 ratio |"
    );
    println!("|---|---:|---:|---:|");
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let fmt = |s: &Stats| format!("{:.1} / {:.1} / {:.1} µs", us(s.p50), us(s.p99), us(s.mean));
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
