//! The audit log and the metrics: a line per call (allowed, denied, hidden,
//! failed, timed out, cancelled, unknown) checked field by field; a server
//! killed with SIGKILL has the line of every call it answered (with
//! `fsync = "always"`); rotation keeps every file under its cap; `/metrics`,
//! `/healthz` and `/readyz` over HTTP on their own listener.

use crate::mcp::{INIT, header, http_post};
use crate::mcp_2026::{body_json, call_2026, meta};
use crate::support::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};
use toolhost::{Audit, CallRequest, CancellationToken, Core, HostConfig, Scope};

const BIN: &str = env!("CARGO_BIN_EXE_toolhost");

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The host config `toml` says, written as `host.toml` in `dir` (its
/// relative paths are `dir`'s) and loaded, with the tests' compile cache.
fn host_config(dir: &Path, toml: &str) -> HostConfig {
    let cfg = dir.join("host.toml");
    std::fs::write(&cfg, toml).unwrap();
    HostConfig::load(&cfg)
        .unwrap()
        .with_cache_dir(test_config().engine.cache_dir)
}

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A call's queue wait counts each of its waits once. With one pool slot
/// and three tenants' sleeping calls at once, one runs, the next takes the
/// turn at the pool and waits for the slot, and the last waits for the
/// turn, then for the slot: about two sleeps in all, never more than the
/// call's `duration_us`. (The wait for the turn was once counted twice:
/// three sleeps for the last call.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_queue_wait_counts_each_wait_once() {
    // Long enough that a loaded machine's lateness (the third call
    // queueing late, timers firing late) stays well inside the bounds.
    const SLEEP_MS: u64 = 1000;
    let d = ToolDir::new();
    d.add("hostile", "hostile", "");
    let dir = tempfile::tempdir().unwrap();
    let config = host_config(
        dir.path(),
        "[engine]\nmax-instances = 1\n[audit]\npath = \"audit.jsonl\"\nfsync = \"always\"\n",
    );
    // A component per tenant: each call waits for the pool, not for its
    // component's concurrency.
    let tenants = ["t1", "t2", "t3"].map(Scope::new);
    let mut b = Core::builder().config(config);
    for t in &tenants {
        b = b.source(t.clone(), d.path());
    }
    let core = b.build().await.unwrap();
    assert!(core.load_errors().is_empty(), "{:?}", core.load_errors());
    let sleeps = tenants.iter().map(|t| {
        let (core, t) = (core.clone(), t.clone());
        tokio::spawn(async move {
            let req = CallRequest::new(t, "sleep", args(json!({ "ms": SLEEP_MS })));
            core.call(req).await.map(|o| o.text())
        })
    });
    for s in futures::future::join_all(sleeps).await {
        assert_eq!(s.unwrap().unwrap(), "slept");
    }
    let recs = records(&dir.path().join("audit.jsonl"));
    assert_eq!(recs.len(), 3, "{recs:#?}");
    let mut waits = Vec::new();
    for r in &recs {
        let (wait, took) = (r["queue_wait_us"].as_u64(), r["duration_us"].as_u64());
        let (wait, took) = (wait.expect("queue_wait_us"), took.expect("duration_us"));
        assert!(wait <= took, "waited {wait} µs of a {took} µs call: {r}");
        waits.push(wait);
    }
    // The last call waited about two sleeps: not less (the waits are
    // counted), and well under three (each once).
    let longest = waits.into_iter().max().unwrap();
    let sleep_us = SLEEP_MS * 1000;
    assert!(
        longest >= 2 * sleep_us * 9 / 10 && longest < 5 * sleep_us / 2,
        "the longest queue wait was {longest} µs for calls of {sleep_us} µs"
    );
}

#[tokio::test]
async fn every_call_has_an_audit_line_checked_field_by_field() {
    let d = ToolDir::new();
    let hostile = d.add("hostile", "hostile", "[limits]\ntimeout = \"500ms\"\n");
    let echo = d.add("echo", "echo", "");
    let hostile_sha = sha256_hex(&hostile.with_extension("wasm"));
    let echo_sha = sha256_hex(&echo.with_extension("wasm"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("host.toml");
    std::fs::write(
        &cfg,
        r#"
[audit]
path = "audit.jsonl"
fsync = "always"
raw-arguments = true
redact = ["text"]

[[rule]]
effect = "deny"
tool = "echo"
arg = "/text"
contains = "secret"
reason = "no secrets through echo"

[[rule]]
effect = "deny"
tool = "recurse"
"#,
    )
    .unwrap();
    let config = HostConfig::load(&cfg)
        .unwrap()
        .with_cache_dir(test_config().engine.cache_dir);
    let log = dir.path().join("audit.jsonl");
    assert_eq!(config.audit.path.as_deref(), Some(log.as_path()));
    // The config's `[audit] path` is enough: no `.audit(...)` needed.
    let core = Core::builder()
        .config(config)
        .source(Scope::default(), d.path())
        .build()
        .await
        .unwrap();
    let before = SystemTime::now();
    let run = |tool: &str, a: Value| {
        let core = core.clone();
        let req = CallRequest::new(Scope::default(), tool, args(a))
            .caller("tester")
            .session("s-1");
        async move { core.call(req).await }
    };

    // 1. allowed, and it allocates 8 MiB.
    run("alloc", json!({"mib": 8})).await.unwrap();
    // 2. allowed, echo (its text redacted in the log).
    run("echo", json!({"text": "hello"})).await.unwrap();
    // 3. denied by rule 1.
    run("echo", json!({"text": "a secret"})).await.unwrap_err();
    // 4. hidden by rule 2: the caller sees an unknown tool.
    run("recurse", json!({"depth": 1})).await.unwrap_err();
    // 5. failed: the guest panics.
    run("panic", json!({"message": "boom"})).await.unwrap_err();
    // 6. timed out.
    run("spin", json!({})).await.unwrap_err();
    // 7. cancelled.
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        c2.cancel();
    });
    core.call(
        CallRequest::new(Scope::default(), "spin", None)
            .caller("tester")
            .cancel(cancel),
    )
    .await
    .unwrap_err();
    // 8. no such tool.
    run("ghost", json!({})).await.unwrap_err();

    // fsync = "always": each call returned only once its line was on disk.
    let recs = records(&log);
    assert_eq!(recs.len(), 8, "{recs:#?}");
    for r in &recs {
        let t = humantime::parse_rfc3339(r["time"].as_str().unwrap()).unwrap();
        assert!(t >= before && t <= SystemTime::now(), "{r}");
        assert_eq!(r["event"], "call");
        assert_eq!(r["tenant"], "default");
        assert_eq!(r["scope"], "default");
        assert_eq!(r["caller"], "tester");
        assert!(r["duration_us"].as_u64().is_some(), "{r}");
    }
    let sandboxed = |r: &Value| {
        assert!(r["queue_wait_us"].as_u64().is_some(), "{r}");
        assert!(r["fuel_used"].as_u64().unwrap() > 0, "{r}");
        assert!(r["peak_memory"].as_u64().unwrap() > 0, "{r}");
    };
    let not_sandboxed = |r: &Value| {
        for k in ["queue_wait_us", "fuel_used", "peak_memory"] {
            assert!(r.get(k).is_none(), "{k} in {r}");
        }
    };

    let r = &recs[0];
    assert_eq!(
        (r["tool"].as_str(), r["outcome"].as_str()),
        (Some("alloc"), Some("ok"))
    );
    assert_eq!(r["session"], "s-1");
    assert_eq!(r["tool_sha256"], hostile_sha.as_str());
    assert_eq!(r["decision"], "allow");
    assert!(r.get("rule").is_none(), "no rule matched: {r}");
    assert_eq!(r["args_sha256"], sha256(r#"{"mib":8}"#).as_str());
    assert_eq!(r["args_bytes"], 9);
    assert_eq!(r["arguments"], json!({"mib": 8}));
    assert!(r.get("detail").is_none(), "{r}");
    sandboxed(r);
    assert!(
        r["peak_memory"].as_u64().unwrap() >= 8 << 20,
        "it allocated 8 MiB: {r}"
    );

    let r = &recs[1];
    assert_eq!(
        (r["tool"].as_str(), r["outcome"].as_str()),
        (Some("echo"), Some("ok"))
    );
    assert_eq!(r["tool_sha256"], echo_sha.as_str());
    assert_eq!(
        r["args_sha256"],
        sha256(r#"{"text":"hello"}"#).as_str(),
        "the digest is of the arguments as given, not as redacted"
    );
    assert_eq!(r["arguments"], json!({"text": "[redacted]"}));
    sandboxed(r);

    let r = &recs[2];
    assert_eq!(
        (r["tool"].as_str(), r["outcome"].as_str()),
        (Some("echo"), Some("denied"))
    );
    assert_eq!(r["decision"], "deny");
    assert_eq!(r["rule"], 1);
    assert_eq!(r["reason"], "no secrets through echo");
    assert_eq!(r["tool_sha256"], echo_sha.as_str());
    assert_eq!(r["args_sha256"], sha256(r#"{"text":"a secret"}"#).as_str());
    assert!(
        !r.to_string().contains("a secret"),
        "redacted everywhere: {r}"
    );
    not_sandboxed(r);

    let r = &recs[3];
    assert_eq!(
        (r["tool"].as_str(), r["outcome"].as_str()),
        (Some("recurse"), Some("unknown_tool"))
    );
    assert_eq!(r["decision"], "deny");
    assert_eq!(r["rule"], 2, "the log says which rule hid it: {r}");
    assert!(
        r.get("tool_sha256").is_none(),
        "nothing of a hidden tool: {r}"
    );
    not_sandboxed(r);

    let r = &recs[4];
    assert_eq!(
        (r["tool"].as_str(), r["outcome"].as_str()),
        (Some("panic"), Some("trap"))
    );
    assert_eq!(r["decision"], "allow");
    assert!(
        r["detail"].as_str().unwrap().contains("boom"),
        "the error: {r}"
    );
    sandboxed(r);

    let r = &recs[5];
    assert_eq!(
        (r["tool"].as_str(), r["outcome"].as_str()),
        (Some("spin"), Some("timeout"))
    );
    assert!(r["duration_us"].as_u64().unwrap() >= 500_000, "{r}");
    assert!(r["detail"].as_str().unwrap().contains("timed out"), "{r}");
    sandboxed(r);
    // The fuel of a loop stopped by its deadline is reported too, to within
    // the host's write-back interval of ten million units (half a second
    // of spinning burns far more).
    assert!(r["fuel_used"].as_u64().unwrap() > 10_000_000, "{r}");

    let r = &recs[6];
    assert_eq!(
        (r["tool"].as_str(), r["outcome"].as_str()),
        (Some("spin"), Some("cancelled"))
    );
    assert!(r.get("session").is_none(), "{r}");
    assert_eq!(r["args_sha256"], sha256("{}").as_str());
    sandboxed(r);

    let r = &recs[7];
    assert_eq!(
        (r["tool"].as_str(), r["outcome"].as_str()),
        (Some("ghost"), Some("unknown_tool"))
    );
    assert_eq!(r["decision"], "none");
    assert!(r.get("rule").is_none() && r.get("tool_sha256").is_none());
    not_sandboxed(r);
}

#[tokio::test]
async fn rotation_keeps_every_file_under_its_cap() {
    let d = ToolDir::new();
    d.add("echo", "echo", "");
    let dir = tempfile::tempdir().unwrap();
    let config = host_config(
        dir.path(),
        "[audit]\npath = \"audit.jsonl\"\nmax-size = \"4 KiB\"\nkeep = 2\nfsync = \"never\"\n",
    );
    let log = dir.path().join("audit.jsonl");
    let core = Core::builder()
        .config(config.clone())
        .source(Scope::default(), d.path())
        .audit(Audit::open(&config.audit).unwrap())
        .build()
        .await
        .unwrap();
    let n = 60;
    for i in 0..n {
        call(&core, "echo", json!({"text": format!("call {i}")}))
            .await
            .unwrap();
    }
    core.flush_audit().await;
    let file = |i: u32| {
        if i == 0 {
            log.clone()
        } else {
            dir.path().join(format!("audit.jsonl.{i}"))
        }
    };
    let mut kept = Vec::new();
    for i in [2, 1, 0] {
        let f = file(i);
        let size = std::fs::metadata(&f)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
            .len();
        assert!(size <= 4096, "{} is {size} bytes", f.display());
        kept.extend(records(&f));
    }
    assert!(!file(3).exists(), "only `keep` rotated files are kept");
    assert!(
        kept.len() < n,
        "the oldest records were rotated away ({} kept)",
        kept.len()
    );
    // The kept records are the newest, in order, none missing.
    let texts: Vec<String> = kept
        .iter()
        .map(|r| r["args_sha256"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = (n - kept.len()..n)
        .map(|i| sha256(&format!(r#"{{"text":"call {i}"}}"#)))
        .collect();
    assert_eq!(texts, want);
}

/// `toolhost serve --http` with `extra` args: the child, the MCP address and
/// (with `--metrics`) the metrics address.
fn serve(extra: &[&str]) -> (Child, String, Option<String>) {
    let mut child = Command::new(BIN)
        .args(["serve", "--http", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let want_metrics = extra.contains(&"--metrics");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut mcp, mut metrics) = (None, None);
    let mut seen = String::new();
    while mcp.is_none() || (want_metrics && metrics.is_none()) {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            panic!("toolhost serve exited before serving:\n{seen}");
        };
        if let Some(u) = line.split_whitespace().find(|w| w.starts_with("http://")) {
            let addr = u
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap()
                .to_string();
            if line.contains("metrics") {
                metrics = Some(addr);
            } else {
                mcp = Some(addr);
            }
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    std::thread::spawn(move || for _ in lines.by_ref() {});
    (child, mcp.unwrap(), metrics)
}

fn echo_call(addr: &str, text: &str) -> Value {
    let (status, resp) = call_2026(
        addr,
        "echo",
        json!({"arguments": {"text": text}, "_meta": meta(json!({}))}),
    );
    assert_eq!(status, 200, "{resp}");
    body_json(&resp)
}

#[test]
fn a_server_killed_right_after_answering_has_every_answered_calls_line() {
    let d = ToolDir::new();
    d.add("echo", "echo", "");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("host.toml");
    std::fs::write(
        &cfg,
        "[audit]\npath = \"audit.jsonl\"\nfsync = \"always\"\n",
    )
    .unwrap();
    let log = dir.path().join("audit.jsonl");
    let (mut child, addr, _) = serve(&[
        "--tools",
        d.path().to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--watch",
        "false",
    ]);
    let n = 20;
    for i in 0..n {
        let v = echo_call(&addr, &format!("call {i}"));
        assert_eq!(
            v["result"]["content"][0]["text"],
            format!("call {i}"),
            "{v}"
        );
    }
    // No clean shutdown: the process dies at once.
    child.kill().unwrap();
    child.wait().unwrap();
    let recs = records(&log);
    let got: Vec<&str> = recs
        .iter()
        .map(|r| r["args_sha256"].as_str().unwrap())
        .collect();
    let want: Vec<String> = (0..n)
        .map(|i| sha256(&format!(r#"{{"text":"call {i}"}}"#)))
        .collect();
    assert_eq!(got, want, "{recs:#?}");
    assert!(
        recs.iter()
            .all(|r| r["caller"] == "mcp-http" && r["outcome"] == "ok")
    );

    // `toolhost audit` answers "who ran what" from that log.
    let out = Command::new(BIN)
        .args(["audit", "--config", cfg.to_str().unwrap()])
        .args([
            "--tool",
            "echo",
            "--outcome",
            "ok",
            "--since",
            "1h",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), n);
    let out = Command::new(BIN)
        .args(["audit", log.to_str().unwrap(), "--outcome", "error"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 0);
}

/// `--caller mcp-http` matched only the tenantless server's calls, never a
/// tenant's `mcp-http:alpha`, though the help gave it as the example
/// (found by the user review): a name without `:` matches its `NAME:…`
/// callers too; a whole name matches only itself.
#[test]
fn audit_caller_names_match_their_tenants_callers() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let line = |caller: &str| {
        format!(
            r#"{{"time":"2026-12-07T10:00:00Z","caller":"{caller}","tool":"echo","outcome":"ok","duration_us":5}}"#
        )
    };
    let lines: Vec<String> = [
        "mcp-http",
        "mcp-http:alpha",
        "mcp-http:beta",
        "mcp-httpx",
        "cli",
    ]
    .iter()
    .map(|c| line(c))
    .collect();
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let count = |caller: &str| {
        let out = Command::new(BIN)
            .args(["audit", log.to_str().unwrap(), "--json", "--caller", caller])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    assert_eq!(count("mcp-http"), 3);
    assert_eq!(count("mcp-http:alpha"), 1);
    assert_eq!(count("mcp"), 0);
    assert_eq!(count("cli"), 1);
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

#[test]
fn metrics_health_and_readiness_over_http() {
    let d = ToolDir::new();
    d.add("echo", "echo", "");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("host.toml");
    // No sandbox prepared after a reply (it would hold memory between
    // calls), so that no memory is held once no call runs.
    std::fs::write(
        &cfg,
        "[engine]\nprepare-after-reply = false\n[[rule]]\neffect = \"deny\"\ntool = \"echo\"\narg = \"/text\"\ncontains = \"secret\"\n",
    )
    .unwrap();
    let (mut child, addr, metrics) = serve(&[
        "--tools",
        d.path().to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--watch",
        "false",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let m = metrics.unwrap();
    assert_eq!(http_get(&m, "/healthz").0, 200);
    assert_eq!(http_get(&m, "/readyz").0, 200, "the catalog is loaded");
    assert_eq!(http_get(&m, "/nope").0, 404);
    // The review's case: a page that rebinds its own name to 127.0.0.1
    // read every tenant's and tool's name. A name other than `localhost`
    // in `Host` is refused; addresses pass.
    let status_for = |host: &str| {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(&m).unwrap();
        write!(
            c,
            "GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).unwrap();
        resp.split(' ').nth(1).unwrap_or("").to_string()
    };
    assert_eq!(status_for("evil.example:80"), "403");
    assert_eq!(status_for("localhost:9"), "200");
    assert_eq!(status_for(&m), "200");
    assert_eq!(status_for("[::1]:9"), "200");

    echo_call(&addr, "one");
    echo_call(&addr, "two");
    let v = echo_call(&addr, "a secret");
    assert!(v.to_string().contains("denied"), "{v}");
    // Names a caller invents share one series.
    for i in 0..5 {
        let (status, resp) = call_2026(
            &addr,
            &format!("ghost{i}"),
            json!({"arguments": {}, "_meta": meta(json!({}))}),
        );
        assert!(resp.contains("ghost"), "{status} {resp}");
    }
    // A request the MCP endpoint refuses is not a call.
    let (status, _) = http_post(&addr, &[], "not json");
    assert_ne!(status, 200);

    let (status, text) = http_get(&m, "/metrics");
    assert_eq!(status, 200);
    let get =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(
        get(r#"toolhost_calls_total{tool="echo",scope="default",outcome="ok"}"#),
        2.0
    );
    assert_eq!(
        get(r#"toolhost_calls_total{tool="echo",scope="default",outcome="denied"}"#),
        1.0
    );
    assert_eq!(
        get(r#"toolhost_calls_total{tool="_other",scope="default",outcome="unknown_tool"}"#),
        5.0
    );
    assert!(!text.contains("ghost"), "{text}");
    assert_eq!(get(r#"toolhost_call_errors_total{kind="denied"}"#), 1.0);
    assert_eq!(
        get(r#"toolhost_call_errors_total{kind="unknown_tool"}"#),
        5.0
    );
    assert_eq!(
        get(r#"toolhost_call_duration_seconds_count{tool="echo",scope="default"}"#),
        3.0
    );
    assert_eq!(
        get(r#"toolhost_call_duration_seconds_bucket{le="+Inf",tool="echo",scope="default"}"#),
        3.0
    );
    assert!(get(r#"toolhost_call_duration_seconds_sum{tool="echo",scope="default"}"#) > 0.0);
    // Only the two allowed calls reached the pool.
    assert_eq!(
        get(r#"toolhost_queue_wait_seconds_count{scope="default"}"#),
        2.0
    );
    assert_eq!(get(r#"toolhost_calls_in_flight{scope="default"}"#), 0.0);
    // No call runs: no memory held, against the host's bound.
    assert_eq!(get("toolhost_memory_held_bytes"), 0.0);
    assert!(get("toolhost_memory_limit_bytes") >= f64::from(16u32 << 20));
    // Beside it, the most the pool may hold outside that bound: with the
    // defaults, at least a 1.5 MiB fiber stack and 1 MiB of instance state
    // for each of the pool's slots (16 or more: sized for this host), and
    // never more than three quarters of the host's memory beside
    // `max-memory` (the automatic pool's bound).
    let residue = get("toolhost_memory_residue_max_bytes");
    assert!(residue >= f64::from(16 * (5u32 << 19)), "{residue}");
    assert!(
        residue + get("toolhost_memory_limit_bytes") <= physical_memory() * 0.75 + 1.0
            // A pool at its floor of 16 is that size on any host.
            || residue < f64::from(256u32 << 20),
        "{residue}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");

    child.kill().unwrap();
    child.wait().unwrap();
}

/// `toolhost serve --http` over `d`, its audit log `audit.jsonl` in the
/// returned directory with `fsync = "never"` (nothing but the shutdown
/// itself makes the lines durable).
fn serve_audited(d: &ToolDir) -> (Child, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("host.toml");
    std::fs::write(&cfg, "[audit]\npath = \"audit.jsonl\"\nfsync = \"never\"\n").unwrap();
    let (child, addr, _) = serve(&[
        "--tools",
        d.path().to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--watch",
        "false",
    ]);
    (child, addr, dir)
}

/// SIGTERM (a clean shutdown), then the audit log's records.
fn stop_and_read(mut child: Child, dir: &tempfile::TempDir) -> Vec<Value> {
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert!(child.wait().unwrap().success());
    records(&dir.path().join("audit.jsonl"))
}

#[test]
fn a_clean_shutdown_writes_every_line_with_the_session_that_called() {
    let d = ToolDir::new();
    d.add("echo", "echo", "");
    let (child, addr, dir) = serve_audited(&d);
    let (status, resp) = http_post(&addr, &[], INIT);
    assert_eq!(status, 200, "{resp}");
    let session = header(&resp, "mcp-session-id")
        .unwrap_or_else(|| panic!("no session id: {resp}"))
        .to_string();
    let h = [
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    assert_eq!(http_post(&addr, &h, initialized).0, 202);
    let body = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"in a session"}}}"#;
    let (status, resp) = http_post(&addr, &h, body);
    assert!(status == 200 && resp.contains("in a session"), "{resp}");
    // A stateless 2026-07-28 call names a session it has nothing to do with
    // (the header is not checked on that path): not recorded as its.
    let forged = [
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "echo"),
    ];
    let stateless = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"stateless"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
    let (status, resp) = http_post(&addr, &forged, stateless);
    assert!(status == 200 && resp.contains("stateless"), "{resp}");
    // A review's case: a request whose `_meta` carries a version and
    // capabilities is served without a session whatever version it names
    // (rmcp's routing): an older version does not make the header it sends
    // its session.
    let older = [
        ("mcp-session-id", "0123456789abcdef0123456789abcdef.FORGED"),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let sessionless = r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","arguments":{"text":"no session"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2025-11-25","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
    let (status, resp) = http_post(&addr, &older, sessionless);
    assert!(status == 200 && resp.contains("no session"), "{resp}");
    let recs = stop_and_read(child, &dir);
    assert_eq!(recs.len(), 3, "{recs:#?}");
    assert!(recs[2].get("session").is_none(), "{}", recs[2]);
    // The session's SID: the part of its sealed id before the `.`.
    let sid = session.split('.').next().unwrap();
    assert_eq!(sid.len(), 32, "{session}");
    assert_eq!(recs[0]["session"], sid, "{}", recs[0]);
    assert_eq!(recs[0]["outcome"], "ok");
    assert!(recs[1].get("session").is_none(), "{}", recs[1]);
    assert_eq!(recs[1]["outcome"], "ok");
}

/// A stateless call whose client hangs up before its answer is stopped,
/// and recorded as `cancelled`, whichever path served it: the server's
/// stateless lane, or rmcp's service (an `Origin` header leaves a
/// request to it).
#[test]
fn a_stateless_call_whose_client_hangs_up_is_stopped_and_recorded_as_cancelled() {
    let d = ToolDir::new();
    d.add("hostile", "hostile", "[limits]\ntimeout = \"60s\"\n");
    d.add("echo", "echo", "");
    let (child, addr, dir) = serve_audited(&d);
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "spin", "arguments": {}, "_meta": meta(json!({}))}})
    .to_string();
    for origin in ["", "Origin: http://localhost:3000\r\n"] {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: spin\r\n{origin}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        // The guest spins; the client gives up.
        std::thread::sleep(Duration::from_millis(300));
        drop(s);
    }
    let (status, resp) = call_2026(
        &addr,
        "echo",
        json!({"arguments": {"text": "still here"}, "_meta": meta(json!({}))}),
    );
    assert_eq!(status, 200, "{resp}");
    assert_eq!(
        body_json(&resp)["result"]["content"][0]["text"],
        "still here"
    );
    // Stopped when their clients left, not by the shutdown's grace.
    std::thread::sleep(Duration::from_millis(500));
    let recs = stop_and_read(child, &dir);
    let spins: Vec<&Value> = recs.iter().filter(|r| r["tool"] == "spin").collect();
    assert_eq!(spins.len(), 2, "{recs:#?}");
    for r in spins {
        assert_eq!(r["outcome"], "cancelled", "{r}");
        let ran = r["duration_us"].as_u64().unwrap();
        assert!(ran < 5_000_000, "stopped after {ran} µs: {r}");
    }
}

#[tokio::test]
async fn a_full_audit_queue_makes_calls_wait_and_loses_none() {
    let d = ToolDir::new();
    d.add("echo", "echo", "");
    let dir = tempfile::tempdir().unwrap();
    let config = host_config(
        dir.path(),
        "[audit]\npath = \"audit.jsonl\"\nqueue = 1\nfsync = \"always\"\n",
    );
    let core = Core::builder()
        .config(config)
        .source(Scope::default(), d.path())
        .build()
        .await
        .unwrap();
    let n = 32;
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let core = core.clone();
            tokio::spawn(async move {
                call(&core, "echo", json!({"text": format!("call {i}")}))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for c in calls {
        c.await.unwrap();
    }
    let mut got: Vec<String> = records(&dir.path().join("audit.jsonl"))
        .iter()
        .map(|r| r["args_sha256"].as_str().unwrap().to_string())
        .collect();
    let mut want: Vec<String> = (0..n)
        .map(|i| sha256(&format!(r#"{{"text":"call {i}"}}"#)))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

/// The machine's memory, in bytes (`/proc/meminfo`).
fn physical_memory() -> f64 {
    let m = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kib * 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_call_counts_in_its_scopes_calls_in_flight_until_it_ends() {
    let d = ToolDir::new();
    d.add("hostile", "hostile", "");
    let core = core(d.path()).await;
    let in_flight = |core: &Core| {
        sample(
            &core.metrics().encode(),
            r#"toolhost_calls_in_flight{scope="default"}"#,
        )
        .unwrap_or(0.0)
    };
    // The tool's first call (its series looked up then) and a later one
    // (the series kept with the tool) both count while they run.
    for round in 0..2 {
        let running = {
            let core = core.clone();
            tokio::spawn(async move { call(&core, "sleep", json!({ "ms": 1000 })).await })
        };
        let mut seen = in_flight(&core);
        while seen != 1.0 && !running.is_finished() {
            tokio::time::sleep(Duration::from_millis(1)).await;
            seen = in_flight(&core);
        }
        assert_eq!(
            seen, 1.0,
            "round {round}: the sleeping call is not in flight"
        );
        assert_eq!(running.await.unwrap().unwrap().text(), "slept");
        assert_eq!(in_flight(&core), 0.0, "round {round}: it ended");
    }
}

/// The review's case: a client's tool name is its own text, and the audit
/// table printed it as it came. A newline in one printed a forged record
/// of another tenant on a line of its own, and terminal escapes could hide
/// real records. The table escapes them: one line per record, no control
/// byte; `--json` keeps the record as stored.
#[test]
fn the_audit_table_prints_one_line_per_record_whatever_the_names_hold() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let forged = "echo  ok  0.1 ms\n2026-12-10T09:00:00.000000Z  beta  mcp-http:beta  text_delete_all_files\u{1b}[1A\u{1b}[2K\u{202e}";
    let record = serde_json::json!({
        "time": "2026-12-06T18:00:00.000000Z", "event": "call", "tenant": "alpha",
        "caller": "mcp-http:alpha", "tool": forged, "outcome": "unknown_tool",
        "reason": "unknown tool\r", "duration_us": 100,
    });
    std::fs::write(&log, format!("{record}\n")).unwrap();
    let out = Command::new(BIN)
        .args(["audit", log.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        !text
            .trim_end_matches('\n')
            .bytes()
            .any(|b| b < 0x20 || b == 0x7f),
        "{text:?}"
    );
    assert!(!text.contains('\u{202e}'), "{text:?}");
    assert!(
        text.contains("alpha") && text.contains("\\u{a}2026-12-10"),
        "{text}"
    );
    let out = Command::new(BIN)
        .args(["audit", log.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tool"], forged);
}

/// A review's case: a call whose future was dropped while it waited for
/// room in a full audit queue (an embedder's timeout; a front end
/// shutting down) had run, and its record was lost without a count. Here
/// the log is a pipe nobody reads until the end, so the queue fills; calls
/// past that are dropped by their callers' timeouts. Every call is then
/// either written or counted as dropped, and the ones written as
/// abandoned name their tool, its component and the policy's decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_while_the_audit_queue_is_full_is_written_or_counted() {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let d = ToolDir::new();
    d.add("echo", "echo", "");
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("audit.pipe");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // The reader, opened first (without blocking) so that the host's open
    // for writing does not wait; not read until the calls are done.
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let config = host_config(dir.path(), "[audit]\npath = \"audit.pipe\"\nqueue = 1\n");
    let core = core_with(config, d.path()).await;
    let (mut calls, mut timed_out) = (0u32, 0u32);
    while timed_out < 3 {
        assert!(calls < 2_000, "the pipe never filled");
        calls += 1;
        let call = call(&core, "echo", json!({"text": format!("call {calls}")}));
        if tokio::time::timeout(Duration::from_millis(500), call)
            .await
            .is_err()
        {
            timed_out += 1;
        }
    }
    let dropped = || sample(&core.metrics().encode(), "toolhost_audit_dropped_total");
    let mut text = Vec::new();
    let mut lines = Vec::new();
    for _ in 0..400 {
        let mut buf = [0u8; 1 << 16];
        match reader.read(&mut buf) {
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        lines = String::from_utf8_lossy(&text)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect::<Vec<_>>();
        if lines.len() as f64 + dropped().unwrap_or(0.0) >= f64::from(calls) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let dropped = dropped().unwrap_or(0.0);
    assert_eq!(
        lines.len() as f64 + dropped,
        f64::from(calls),
        "{calls} calls, {} lines, {dropped} dropped",
        lines.len()
    );
    let m = core.metrics().encode();
    let ended = |outcome: &str| {
        sample(
            &m,
            &format!(r#"toolhost_calls_total{{tool="echo",scope="default",outcome="{outcome}"}}"#),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(ended("ok") + ended("abandoned"), f64::from(calls), "{m}");
}

/// A review's case: a call whose future was dropped mid-run (its client
/// gone without cancelling, an embedder's timeout) was recorded as
/// undecided, without its component or costs, and counted under no tool.
/// It is recorded with what it got to, and counted under its tool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_call_is_recorded_with_what_it_got_to() {
    let d = ToolDir::new();
    d.add("hostile", "hostile", "");
    let dir = tempfile::tempdir().unwrap();
    let config = host_config(dir.path(), "[audit]\npath = \"audit.jsonl\"\n");
    let core = core_with(config, d.path()).await;
    let sleeping = call(&core, "sleep", json!({"ms": 5000}));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), sleeping)
            .await
            .is_err()
    );
    let path = dir.path().join("audit.jsonl");
    let mut found = None;
    for _ in 0..100 {
        found = records(&path)
            .into_iter()
            .find(|r| r["outcome"] == "abandoned");
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = found.expect("the abandoned call is written");
    assert_eq!(r["tool"], "sleep", "{r}");
    assert_eq!(r["decision"], "allow", "{r}");
    assert!(r["tool_sha256"].is_string(), "{r}");
    let m = core.metrics().encode();
    assert_eq!(
        sample(
            &m,
            r#"toolhost_calls_total{tool="sleep",scope="default",outcome="abandoned"}"#
        ),
        Some(1.0),
        "{m}"
    );
}
