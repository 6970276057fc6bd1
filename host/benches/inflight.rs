//! `make bench` (in-flight part, issue 12 P7): how many calls can be in
//! flight at once, and what each costs the host while it waits.
//!
//! Each row is a child process (this bench re-run with `--one N SLOTS`) so
//! that its memory figures are its own: a `Core` with `max-instances =
//! SLOTS` (a row `auto:N` leaves it at its default, the pool this host
//! affords), ten scopes (tenants) each with the hostile fixture's `sleep`,
//! and `N` calls of `sleep(3 s)` spread over them, started in batches of
//! 500 every 50 ms (a burst of all of them at once would fill each scope's
//! queue of waiting calls, 4096, and be refused). The child samples its own
//! RSS and mappings every 20 ms until every call has returned, then once
//! more a second later, and prints one line of figures; the parent prints
//! the table.
//!
//! Run with `cargo bench -p toolhost --bench inflight [-- N... auto:N...]`
//! after `make tools` (default: `1000 10000 auto:10000`).

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use toolhost::{CallRequest, Core, HostConfig, Scope};

const SLEEP_MS: u64 = 3_000;
const SCOPES: usize = 10;
const BATCH: usize = 500;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// (VmRSS KiB, VmSize KiB, mappings) of this process now.
fn memory() -> (u64, u64, usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let maps = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count();
    (kib("VmRSS:"), kib("VmSize:"), maps)
}

/// A tools directory with the hostile fixture allowed `n` calls at once.
fn tools(dir: &Path, n: usize) {
    let wasm = std::fs::read(root().join("build/test-tools/hostile.wasm"))
        .expect("build/test-tools/hostile.wasm: run `make tools` first");
    std::fs::write(dir.join("hostile.wasm"), &wasm).unwrap();
    std::fs::write(
        dir.join("hostile.toml"),
        format!(
            "[component]\npath = \"hostile.wasm\"\nsha256 = \"{}\"\n\n[limits]\ntimeout = \"120s\"\nmax-concurrency = {n}\n",
            hex::encode(Sha256::digest(&wasm))
        ),
    )
    .unwrap();
}

/// The child: `n` sleeping calls on a pool of `slots` (0: the default);
/// prints `ok idle_rss peak_rss peak_vmsize peak_maps seconds errors
/// after_rss most_open first_error pool`.
fn one(n: usize, slots: u32) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    tools(dir.path(), n);
    let cfg = HostConfig::parse(
        Path::new("toolhost.toml"),
        &format!(
            "[engine]\ncache-dir = \"{}\"\nmax-instances = {slots}\n[limits]\nmax-concurrency = {n}\n",
            root().join("target/bench-cache").display()
        ),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut builder = Core::builder().config(cfg);
        for i in 0..SCOPES {
            builder = builder.source(Scope::new(format!("t{i}")), dir.path());
        }
        let core = builder.build().await?;
        let pool = core.pool_size();
        anyhow::ensure!(core.load_errors().is_empty(), "{:?}", core.load_errors());
        let args = serde_json::json!({ "ms": SLEEP_MS });
        let args = args.as_object().cloned();
        // One call first, so that the idle figure includes a used sandbox.
        core.call(CallRequest::new(
            Scope::new("t0"),
            "sleep",
            serde_json::json!({"ms": 0}).as_object().cloned(),
        ))
        .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let idle = memory();
        let start = Instant::now();
        let mut calls = Vec::with_capacity(n);
        let mut peak = idle;
        while calls.len() < n {
            for _ in 0..BATCH.min(n - calls.len()) {
                let core = core.clone();
                let scope = Scope::new(format!("t{}", calls.len() % SCOPES));
                let req = CallRequest::new(scope, "sleep", args.clone());
                calls.push(tokio::spawn(async move { core.call(req).await }));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let m = memory();
            peak = (peak.0.max(m.0), peak.1.max(m.1), peak.2.max(m.2));
        }
        // The most calls started and not yet returned at one sample.
        let mut most = 0;
        loop {
            let open = calls.iter().filter(|c| !c.is_finished()).count();
            most = most.max(open);
            if open == 0 {
                break;
            }
            let m = memory();
            peak = (peak.0.max(m.0), peak.1.max(m.1), peak.2.max(m.2));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let secs = start.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = memory();
        let mut errors = 0;
        let mut first = String::from("-");
        for c in calls {
            if let Err(e) = c.await? {
                if errors == 0 {
                    first = e.to_string().replace(' ', "_");
                }
                errors += 1;
            }
        }
        println!(
            "ok {} {} {} {} {secs:.2} {errors} {} {most} {first} {pool}",
            idle.0, peak.0, peak.1, peak.2, after.0
        );
        Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--one") {
        return one(args[i + 1].parse()?, args[i + 2].parse()?);
    }
    // (calls, pool): `N` is a pool of N, `auto:N` the default pool.
    let mut rows: Vec<(usize, u32)> = args[1..]
        .iter()
        .filter_map(|a| match a.strip_prefix("auto:") {
            Some(n) => Some((n.parse().ok()?, 0)),
            None => a.parse().ok().map(|n| (n, n as u32)),
        })
        .collect();
    if rows.is_empty() {
        rows = vec![(1_000, 1_000), (10_000, 10_000), (10_000, 0)];
    }
    println!(
        "\n## In flight: N calls of `sleep({SLEEP_MS} ms)` at once, `max-instances = N` or the default\n"
    );
    println!(
        "| calls | pool | calls started, not returned (most) | all returned in | errors | RSS idle | RSS peak | per call in flight | RSS 1 s after | mappings at peak | address space at peak |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (n, slots) in rows {
        let out = std::process::Command::new(std::env::current_exe()?)
            .args(["--one", &n.to_string(), &slots.to_string()])
            .env("TOOLHOST_LOG", "error")
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(line) = text.lines().find(|l| l.starts_with("ok ")) else {
            println!(
                "| {n} | {slots} | | failed: {} | | | | | | | |",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
            continue;
        };
        let f: Vec<&str> = line.split(' ').collect();
        let kib = |i: usize| f[i].parse::<f64>().unwrap();
        let pool = if slots == 0 {
            format!("default: {}", f[10])
        } else {
            f[10].to_string()
        };
        println!(
            "| {n} | {pool} | {} | {} s | {}{} | {:.0} MiB | {:.0} MiB | {:.0} KiB | {:.0} MiB | {} | {:.1} TiB |",
            f[8],
            f[5],
            f[6],
            if f[6] == "0" {
                String::new()
            } else {
                format!(" ({})", f[9].replace('_', " "))
            },
            kib(1) / 1024.0,
            kib(2) / 1024.0,
            (kib(2) - kib(1)) / f[8].parse::<f64>().unwrap().max(1.0),
            kib(7) / 1024.0,
            f[4],
            kib(3) / (1u64 << 30) as f64,
        );
    }
    println!(
        "\nEach row its own process; RSS and mappings sampled every 20 ms (`/proc/self`); per call = (peak - idle) / the most calls in flight at once (started and not returned, sampled). `vm.max_map_count` here: {}.",
        std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .unwrap_or_default()
            .trim()
    );
    Ok(())
}
