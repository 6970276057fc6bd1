//! `make bench` (startup part, issue 12 P5/P6): how long the real
//! `toolhost serve --stdio` takes from spawn to its first `tools/list`
//! reply, and its RSS then, with a warm compile cache.
//!
//! Side by side in one run, rounds alternating: no components (the fixed
//! cost: process, engine and pool, runtimes), the 6 Rust example tools,
//! twenty components (those six and fourteen distinct copies of echo), and
//! all 10 deployed tools (Rust, Python, JavaScript), each loaded one at a
//! time (`[engine] load-parallelism = 1`) and with the default (one per
//! core). Medians over rounds. The first start of each set (not measured)
//! warms the cache; the bench uses its own cache directory. Memory is the
//! RSS and its private part (`RssAnon`; the rest is compiled code mapped
//! from the cache, shared with the page cache).
//!
//! Run with `cargo bench -p toolhost-cli --bench startup`; needs `make tools`.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

const ROUNDS: usize = 11;

const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"0"}}}"#;
const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

const RUST_TOOLS: [&str; 6] = ["echo", "text", "files", "writer", "fetch", "prompts"];
const OTHER_TOOLS: [&str; 4] = ["py-echo", "py-text", "js-echo", "js-text"];

struct Variant {
    name: String,
    manifests: Vec<PathBuf>,
    config: PathBuf,
}

/// Memory of a process, KiB: (`VmRSS`, `RssAnon`).
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"))
}

/// One start: spawn, `initialize`, `tools/list`; the time to its reply,
/// the number of tools listed, and the server's memory (KiB) then.
async fn start_once(v: &Variant, empty: &Path) -> (Duration, usize, (u64, u64)) {
    let started = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_toolhost"));
    cmd.args(["serve", "--stdio", "--watch", "false", "--config"])
        .arg(&v.config);
    if v.manifests.is_empty() {
        cmd.arg("--tools").arg(empty);
    }
    for m in &v.manifests {
        cmd.arg("--tools").arg(m);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env("TOOLHOST_LOG", "error")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn toolhost");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    stdin
        .write_all(format!("{INIT}\n{INITIALIZED}\n{LIST}\n").as_bytes())
        .await
        .unwrap();
    let tools = loop {
        let line = lines.next_line().await.unwrap().expect("a reply");
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["id"] == 1 {
            break v["result"]["tools"].as_array().map_or(0, Vec::len);
        }
    };
    let elapsed = started.elapsed();
    let memory = rss(child.id().unwrap());
    let _ = child.kill().await;
    (elapsed, tools, memory)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let tools = root.join("build/tools");
    anyhow::ensure!(
        tools.join("echo.toml").is_file(),
        "run `make tools` first (no {})",
        tools.join("echo.toml").display()
    );
    let dir = tempfile::tempdir()?;
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty)?;
    let cache = dir.path().join("cache");
    // `load-parallelism = n`, and `max-instances = slots` (0: the
    // default, the pool this host affords).
    let config = |n: u32, slots: u32| -> anyhow::Result<PathBuf> {
        let p = dir.path().join(format!("load-{n}-{slots}.toml"));
        std::fs::write(
            &p,
            format!(
                "[engine]\ncache-dir = \"{}\"\nload-parallelism = {n}\nmax-instances = {slots}\n",
                cache.display()
            ),
        )?;
        Ok(p)
    };
    let serial = config(1, 0)?;
    let parallel = config(0, 0)?;
    // The pool's size, against the fixed 128 of earlier releases.
    let small_pool = config(0, 128)?;
    let pool = toolhost::HostConfig::load(&parallel)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .engine
        .pool_size();
    let manifests = |names: &[&str]| -> Vec<PathBuf> {
        names
            .iter()
            .map(|n| tools.join(format!("{n}.toml")))
            .filter(|p| p.is_file())
            .collect()
    };
    let rust = manifests(&RUST_TOOLS);
    let all: Vec<PathBuf> = manifests(&RUST_TOOLS)
        .into_iter()
        .chain(manifests(&OTHER_TOOLS))
        .collect();
    // Twenty components: the six Rust tools and fourteen copies of echo,
    // each made a distinct component (its own digest, its own compiled
    // artifact in the cache) by a custom section appended to it. The
    // copies define `echo` again, so the catalog refuses their tools after
    // loading them: the load is measured, the listing stays at the six's.
    let mut twenty = rust.clone();
    let echo = std::fs::read(tools.join("echo.wasm"))?;
    for i in 0..14 {
        let mut wasm = echo.clone();
        let name = b"bench-copy";
        let payload = format!("{i:04}");
        let size = 1 + name.len() + payload.len();
        wasm.extend_from_slice(&[0, size as u8, name.len() as u8]);
        wasm.extend_from_slice(name);
        wasm.extend_from_slice(payload.as_bytes());
        let path = dir.path().join(format!("echo-{i}.wasm"));
        std::fs::write(&path, &wasm)?;
        let manifest = dir.path().join(format!("echo-{i}.toml"));
        std::fs::write(
            &manifest,
            format!(
                "[component]\npath = \"echo-{i}.wasm\"\nsha256 = \"{}\"\n",
                sha256_hex(&wasm)
            ),
        )?;
        twenty.push(manifest);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut variants = vec![
        Variant {
            name: format!("no components (default pool: {pool})"),
            manifests: vec![],
            config: parallel.clone(),
        },
        Variant {
            name: "no components, `max-instances = 128`".into(),
            manifests: vec![],
            config: small_pool.clone(),
        },
    ];
    for (set, ms) in [
        ("Rust", &rust),
        ("Rust, 14 of them copies of echo", &twenty),
        ("Rust, Python, JavaScript", &all),
    ] {
        for (how, cfg) in [
            ("one at a time".to_string(), &serial),
            (format!("{cores} at a time (default)"), &parallel),
        ] {
            variants.push(Variant {
                name: format!("{} components ({set}), {how}", ms.len()),
                manifests: ms.clone(),
                config: cfg.clone(),
            });
        }
    }
    variants.push(Variant {
        name: format!(
            "{} components (Rust, 14 of them copies of echo), {cores} at a time, `max-instances = 128`",
            twenty.len()
        ),
        manifests: twenty.clone(),
        config: small_pool.clone(),
    });
    // Warm the cache (compiling the Python and JavaScript components takes
    // a while), and check every set loads.
    for v in &variants {
        let (t, n, _) = start_once(v, &empty).await;
        eprintln!("warm-up: {} -> {n} tools in {t:?}", v.name);
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut resident: Vec<Vec<u64>> = vec![Vec::new(); variants.len()];
    let mut anon: Vec<Vec<u64>> = vec![Vec::new(); variants.len()];
    let mut listed = vec![0; variants.len()];
    for round in 0..ROUNDS {
        for (i, v) in variants.iter().enumerate() {
            let (t, n, r) = start_once(v, &empty).await;
            times[i].push(t.as_secs_f64() * 1e3);
            resident[i].push(r.0);
            anon[i].push(r.1);
            listed[i] = n;
        }
        eprintln!("round {}/{ROUNDS}", round + 1);
    }
    let base = median(times[0].clone());
    println!(
        "| server | tools listed | spawn -> first `tools/list` reply (median) | vs no components | RSS then (median) | of which private (`RssAnon`) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (i, v) in variants.iter().enumerate() {
        let t = median(times[i].clone());
        println!(
            "| {} | {} | {t:.1} ms | {:.2}x | {:.1} MiB | {:.1} MiB |",
            v.name,
            listed[i],
            t / base,
            median(resident[i].clone()) as f64 / 1024.0,
            median(anon[i].clone()) as f64 / 1024.0
        );
    }
    Ok(())
}
