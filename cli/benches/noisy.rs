//! `make bench` (noisy neighbour): one `toolhost serve --http` with two
//! tenants. The victim calls `echo` sequentially on its own session; the
//! attacker keeps 4 runaway calls (`spin`, an endless loop) in flight on
//! sessions of its own, each stopped by its 3 s deadline and started again
//! at once. The victim's p50 and p99 alone and under attack, in one run on
//! one server: rounds alternate alone and attacked, each figure is the
//! median over rounds. Three servers side by side: the default (a core left
//! to the front end: `guest-threads` one per core but one), guests on every
//! core (the default before), and every core at `guest-priority = "idle"`,
//! their rounds interleaved so that all see the same machine.
//!
//! Prints a Markdown table (see BENCHMARKS.md, "Noisy neighbour"), and a
//! second one that says where the victim's slowest calls spent their time:
//! each server writes the audit log, whose victim lines (one per call, in
//! call order) give the time inside the core (`duration_us`, of which
//! `queue_wait_us` waiting for a sandbox); the rest of what the client
//! measured is outside it (HTTP, the I/O runtime, the MCP layer).
//! Run with `cargo bench -p toolhost-cli --bench noisy` after `make tools`.

#[path = "common/mod.rs"]
mod common;
use common::{INIT, INITIALIZED, connect, http_addr, reply_of};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

const ROUNDS: usize = 5;
/// The victim's CPU-bound calls a round (alone and attacked), and the fuel
/// that ends each (~0.2 s of CPU).
const LONG_CALLS: usize = 3;
const LONG_FUEL: u64 = 200_000_000;
/// The servers, side by side: (name, `[engine]` lines). The default
/// leaves one core to the front end (`guest-threads` one per core but
/// one); "every core" is the default before that.
fn variants() -> Vec<(String, String)> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    vec![
        (
            format!(
                "default (guest-threads = {})",
                cores.saturating_sub(1).max(1)
            ),
            String::new(),
        ),
        (
            format!("guest-threads = {cores} (every core)"),
            format!("guest-threads = {cores}"),
        ),
        (
            format!("guest-threads = {cores}, guest-priority = idle"),
            format!("guest-threads = {cores}\nguest-priority = \"idle\""),
        ),
    ]
}
const VICTIM_CALLS: usize = 400;
const RUNAWAYS: usize = 4;
const VICTIM_TOKEN: &str = "victim-token-5e1f";
const ATTACKER_TOKEN: &str = "attacker-token-9c0d";

fn sha(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The host config and tools: `victim` gets `echo`, `attacker` gets
/// `hostile` (its `spin` loops forever) with a 3 s deadline.
fn setup(root: &Path, dir: &Path, engine: &str) -> PathBuf {
    let victim = dir.join("victim");
    let attacker = dir.join("attacker");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::create_dir_all(&attacker).unwrap();
    for f in ["echo.wasm", "echo.toml"] {
        std::fs::copy(root.join("build/tools").join(f), victim.join(f)).unwrap();
    }
    let wasm = std::fs::read(root.join("build/test-tools/hostile.wasm")).unwrap();
    std::fs::write(attacker.join("hostile.wasm"), &wasm).unwrap();
    // The victim's own CPU-bound call: `spin`, ended by its fuel.
    std::fs::write(victim.join("hostile.wasm"), &wasm).unwrap();
    std::fs::write(
        victim.join("hostile.toml"),
        format!(
            "[component]\npath = \"hostile.wasm\"\nsha256 = \"{}\"\n\n[limits]\ntimeout = \"60s\"\nfuel = {LONG_FUEL}\n",
            sha(&wasm)
        ),
    )
    .unwrap();
    std::fs::write(
        attacker.join("hostile.toml"),
        format!(
            "[component]\npath = \"hostile.wasm\"\nsha256 = \"{}\"\n\n[limits]\ntimeout = \"3s\"\nmax-concurrency = 16\n",
            sha(&wasm)
        ),
    )
    .unwrap();
    let cfg = dir.join("toolhost.toml");
    std::fs::write(
        &cfg,
        format!(
            "[engine]\ncache-dir = \"{cache}\"\n{engine}\n\n[audit]\npath = \"{audit}\"\n\n[[tenant]]\nname = \"victim\"\ntools = [\"victim/\"]\ntoken-sha256 = [\"{v}\"]\n\n[[tenant]]\nname = \"attacker\"\ntools = [\"attacker/\"]\ntoken-sha256 = [\"{a}\"]\nmax-concurrent = {RUNAWAYS}\n",
            cache = root.join("target/bench-cache").display(),
            audit = dir.join("audit.jsonl").display(),
            v = sha(VICTIM_TOKEN.as_bytes()),
            a = sha(ATTACKER_TOKEN.as_bytes()),
        ),
    )
    .unwrap();
    cfg
}

fn spawn(cfg: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_toolhost"))
        .args(["serve", "--watch", "false", "--config"])
        .arg(cfg)
        .args(["--http", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("TOOLHOST_LOG", "error")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn toolhost")
}

/// One session on its own keep-alive connection.
struct Session {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: String,
    token: &'static str,
    id: String,
}

impl Session {
    async fn open(addr: &str, token: &'static str) -> Session {
        let send = connect(addr).await;
        let mut s = Session {
            send,
            addr: addr.to_string(),
            token,
            id: String::new(),
        };
        let (headers, body) = s.post(INIT).await;
        s.id = headers
            .get("mcp-session-id")
            .expect("a session id")
            .to_str()
            .unwrap()
            .to_string();
        assert!(body.contains("protocolVersion"), "{body}");
        s.post(INITIALIZED).await;
        s
    }

    async fn post(&mut self, body: &str) -> (hyper::HeaderMap, String) {
        let mut req = hyper::Request::post("/mcp")
            .header("host", &self.addr)
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        if !self.id.is_empty() {
            req = req
                .header("mcp-session-id", &self.id)
                .header("mcp-protocol-version", "2025-11-25");
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

    /// Call `tool`; the JSON-RPC reply.
    async fn call(&mut self, id: u64, tool: &str, args: &str) -> Value {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
        );
        let (_, text) = self.post(&body).await;
        reply_of(&text)
    }
}

/// The victim's latencies over `n` sequential echo calls.
async fn victim_round(s: &mut Session, n: usize) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let v = s
            .call(i as u64 + 1, "echo", r#"{"text":"hello, sandbox"}"#)
            .await;
        lat.push(t.elapsed());
        assert_eq!(
            v["result"]["content"][0]["text"], "hello, sandbox",
            "unexpected reply {v}"
        );
    }
    lat
}

/// The victim's CPU-bound calls (`spin`, ended by its fuel, ~0.2 s of
/// CPU alone): the median time in ms. What a tool that runs past its first
/// slice gets of the guest threads.
async fn long_calls(s: &mut Session) -> f64 {
    let mut took = Vec::with_capacity(LONG_CALLS);
    for i in 0..LONG_CALLS {
        let t = Instant::now();
        let v = s.call(1_000_000 + i as u64, "spin", "{}").await;
        took.push(t.elapsed().as_secs_f64() * 1e3);
        let text = v["result"]["content"][0]["text"].as_str().unwrap_or("");
        assert!(
            text.contains("ran out of fuel"),
            "the victim's spin ends by its fuel: {v}"
        );
    }
    median(took)
}

/// Runaway calls, each started again when its deadline ends it, until
/// `stop`; returns how many ended (all by their deadline).
async fn attacker(addr: String, stop: Arc<AtomicBool>, running: Arc<AtomicUsize>) -> usize {
    let mut s = Session::open(&addr, ATTACKER_TOKEN).await;
    let mut ended = 0;
    let mut id = 1;
    while !stop.load(Ordering::Relaxed) {
        running.fetch_add(1, Ordering::Relaxed);
        let v = s.call(id, "spin", "{}").await;
        running.fetch_sub(1, Ordering::Relaxed);
        id += 1;
        let text = v["result"]["content"][0]["text"].as_str().unwrap_or("");
        assert!(
            v["result"]["isError"] == true && text.contains("timed out"),
            "a runaway call ends by its deadline: {v}"
        );
        ended += 1;
    }
    ended
}

fn pct(lat: &mut [Duration], p: usize) -> f64 {
    lat.sort();
    lat[(lat.len() * p / 100).min(lat.len() - 1)].as_secs_f64() * 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// For the victim's calls alone and attacked: the median call and the
/// slowest 1%, each as the medians of (client µs, core µs, queue µs,
/// client minus core µs), each call matched to the victim's audit lines
/// in order.
fn breakdown(audit: &Path, calls: &[(Option<bool>, Duration)]) -> Vec<(String, [f64; 4])> {
    let text = std::fs::read_to_string(audit).unwrap_or_default();
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["tenant"] == "victim" && v["tool"] == "echo")
        .collect();
    assert_eq!(
        lines.len(),
        calls.len(),
        "one audit line per victim call ({})",
        audit.display()
    );
    let mut rows = Vec::new();
    for (attacked, label) in [(false, "alone"), (true, "attacked")] {
        let mut group: Vec<[f64; 4]> = calls
            .iter()
            .zip(&lines)
            .filter(|((a, _), _)| *a == Some(attacked))
            .map(|((_, d), v)| {
                let us = |k: &str| v[k].as_f64().unwrap_or(0.0);
                let client = d.as_secs_f64() * 1e6;
                let core = us("duration_us");
                [client, core, us("queue_wait_us"), client - core]
            })
            .collect();
        group.sort_by(|a, b| a[0].partial_cmp(&b[0]).unwrap());
        let mid = group.len() / 2;
        let slow = &group[group.len() * 99 / 100..];
        let med = |rows: &[[f64; 4]], i: usize| median(rows.iter().map(|r| r[i]).collect());
        rows.push((format!("{label}, median call"), group[mid]));
        rows.push((
            format!("{label}, slowest 1% ({} calls)", slow.len()),
            [med(slow, 0), med(slow, 1), med(slow, 2), med(slow, 3)],
        ));
    }
    rows
}

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    anyhow::ensure!(
        root.join("build/tools/echo.toml").is_file()
            && root.join("build/test-tools/hostile.wasm").is_file(),
        "run `make tools` first"
    );
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        /// One server and what was measured on it.
        struct Target {
            variant: String,
            /// Per round: the median time of the victim's CPU-bound calls.
            long_alone: Vec<f64>,
            long_hit: Vec<f64>,
            _dir: tempfile::TempDir,
            _child: Child,
            addr: String,
            victim: Session,
            /// Every victim call in order, and whether it was attacked
            /// (`None`: warm-up).
            calls: Vec<(Option<bool>, Duration)>,
            dir: PathBuf,
            alone50: Vec<f64>,
            alone99: Vec<f64>,
            hit50: Vec<f64>,
            hit99: Vec<f64>,
            runaways: usize,
        }
        let mut targets = Vec::new();
        for (variant, engine) in variants() {
            let dir = tempfile::tempdir()?;
            let cfg = setup(&root, dir.path(), &engine);
            let mut child = spawn(&cfg);
            let addr = http_addr(&mut child).await;
            let mut victim = Session::open(&addr, VICTIM_TOKEN).await;
            // Warm up: the first calls map the pool's memory.
            let warm = victim_round(&mut victim, 100).await;
            targets.push(Target {
                variant,
                long_alone: vec![],
                long_hit: vec![],
                calls: warm.into_iter().map(|d| (None, d)).collect(),
                dir: dir.path().to_path_buf(),
                _dir: dir,
                _child: child,
                addr,
                victim,
                alone50: vec![],
                alone99: vec![],
                hit50: vec![],
                hit99: vec![],
                runaways: 0,
            });
        }
        for _ in 0..ROUNDS {
            for t in &mut targets {
                let mut lat = victim_round(&mut t.victim, VICTIM_CALLS).await;
                t.calls.extend(lat.iter().map(|d| (Some(false), *d)));
                t.alone50.push(pct(&mut lat, 50));
                t.alone99.push(pct(&mut lat, 99));
                t.long_alone.push(long_calls(&mut t.victim).await);

                let stop = Arc::new(AtomicBool::new(false));
                let running = Arc::new(AtomicUsize::new(0));
                let attackers: Vec<_> = (0..RUNAWAYS)
                    .map(|_| {
                        tokio::spawn(attacker(t.addr.clone(), stop.clone(), running.clone()))
                    })
                    .collect();
                // All four runaways in flight, and spinning, before measuring.
                while running.load(Ordering::Relaxed) < RUNAWAYS {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut lat = victim_round(&mut t.victim, VICTIM_CALLS).await;
                t.calls.extend(lat.iter().map(|d| (Some(true), *d)));
                t.hit50.push(pct(&mut lat, 50));
                t.hit99.push(pct(&mut lat, 99));
                t.long_hit.push(long_calls(&mut t.victim).await);
                stop.store(true, Ordering::Relaxed);
                for a in attackers {
                    t.runaways += a.await?;
                }
            }
        }
        println!("\n## Noisy neighbour: victim `echo` alone and while another tenant runs {RUNAWAYS} runaway calls\n");
        println!("| server (`[engine]`) | victim | alone | under attack | ratio |");
        println!("|---|---|---|---|---|");
        let mut runaways = 0;
        let long_rows: Vec<(String, f64, f64)> = targets
            .iter()
            .map(|t| {
                (
                    t.variant.clone(),
                    median(t.long_alone.clone()),
                    median(t.long_hit.clone()),
                )
            })
            .collect();
        // The audit log is written in the background: let it catch up.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let breakdowns: Vec<_> = targets
            .iter()
            .map(|t| (t.variant.clone(), breakdown(&t.dir.join("audit.jsonl"), &t.calls)))
            .collect();
        for t in targets {
            let (a50, a99, h50, h99) = (
                median(t.alone50),
                median(t.alone99),
                median(t.hit50),
                median(t.hit99),
            );
            let p = &t.variant;
            println!("| {p} | p50 | {a50:.0} µs | {h50:.0} µs | {:.2}x |", h50 / a50);
            println!("| {p} | p99 | {a99:.0} µs | {h99:.0} µs | {:.2}x |", h99 / a99);
            runaways += t.runaways;
        }
        println!(
            "\nMedian of {ROUNDS} rounds per server; one `toolhost serve --http` per `[engine]` variant, their rounds interleaved (each round: alone, then attacked); {VICTIM_CALLS} sequential victim calls a round on one 2025-11-25 session; the attacker (another tenant, `max-concurrent = {RUNAWAYS}`) kept {RUNAWAYS} `spin` calls in flight on its own sessions, {runaways} of them ended by their 3 s deadline. Goal: p99 under attack < 2x alone."
        );
        println!("\n## The victim's CPU-bound call (`spin` ended by {LONG_FUEL} units of fuel), alone and attacked\n");
        println!("| server (`[engine]`) | alone | under attack | ratio |");
        println!("|---|---|---|---|");
        for t in &long_rows {
            println!(
                "| {} | {:.0} ms | {:.0} ms | {:.2}x |",
                t.0,
                t.1,
                t.2,
                t.2 / t.1
            );
        }
        println!(
            "\nMedian over rounds of each round's median of {LONG_CALLS} calls; the attacker's {RUNAWAYS} runaways share the guest threads with it."
        );
        println!("\n## Where the victim's time went: its slowest 1% of calls against its median ones\n");
        println!("| server (`[engine]`) | victim calls | client saw | inside the core (`duration_us`) | of which waiting for a sandbox | outside the core (HTTP, I/O runtime, MCP) |");
        println!("|---|---|---|---|---|---|");
        for (p, rows) in breakdowns {
            for (name, r) in rows {
                println!(
                    "| {p} | {name} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs |",
                    r[0], r[1], r[2], r[3]
                );
            }
        }
        println!(
            "\nMedians over the calls in each group, each column its own median (outside = client - core, per call); each call's figures matched to its audit line (one per call, in call order). The slowest 1% are those of all rounds together; the median call is the median of that group."
        );
        anyhow::Ok(())
    })
}
