//! Tool-call latency over the Claude CLI control protocol: a driver plays
//! the CLI, sends `mcp_message` tools/call control requests (JSON lines) to
//! `toolhost::agent` over in-memory pipes, and times each request -> reply.
//! The call runs the `echo` WASM tool in a fresh sandbox through
//! `McpServer` and `Core::call`, exactly as for the real CLI.
//!
//!   cargo bench -p toolhost --bench agent_control [-- CALLS]
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

/// The Python SDK's side, if `TOOLHOST_BENCH_PYTHON` names a Python. Once
/// asked for, it is measured or the bench fails: a side silently skipped
/// would leave a table without its comparison. A relative path is taken
/// from the workspace root (cargo runs benches in `host/`).
fn python(calls: usize) -> Option<Stats> {
    let py = std::path::PathBuf::from(std::env::var_os("TOOLHOST_BENCH_PYTHON")?);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let py = if py.is_relative() && py.components().count() > 1 {
        root.join(py)
    } else {
        py
    };
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

fn main() {
    let calls = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5000usize);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let r = rt.block_on(rust(calls));
    let p = python(calls);
    println!(
        "\nAgent control protocol: mcp_message tools/call -> control_response, echo tool, {calls} calls (after 200 warm-up)"
    );
    println!("| implementation | p50 | p99 | mean | calls |");
    println!("|---|---:|---:|---:|---:|");
    let row = |name: &str, s: &Stats| {
        println!(
            "| {name} | {:.1} µs | {:.1} µs | {:.1} µs | {} |",
            s.p50.as_secs_f64() * 1e6,
            s.p99.as_secs_f64() * 1e6,
            s.mean.as_secs_f64() * 1e6,
            s.calls
        )
    };
    row("toolhost agent (WASM echo, fresh sandbox per call)", &r);
    if let Some(p) = &p {
        row(
            "Python claude-agent-sdk 0.2.187 (in-process Python echo, no sandbox)",
            p,
        );
        println!(
            "\np50 ratio: Python / toolhost = {:.1}x",
            p.p50.as_secs_f64() / r.p50.as_secs_f64()
        );
    } else {
        println!(
            "\n(set TOOLHOST_BENCH_PYTHON to a python with claude-agent-sdk to measure the Python SDK side by side)"
        );
    }
}
