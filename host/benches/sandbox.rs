//! `make bench` (sandbox part): what a fresh sandbox per call costs, as ratios
//! to the same echo tool run natively, measured side by side in one run.
//!
//! Prints a Markdown table. Each figure is the median over rounds of the mean
//! per-call time within a round (rounds absorb the noise of a shared
//! machine). Run with `cargo bench --bench sandbox`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use toolhost::{CallRequest, Core, EngineConfig, HostConfig, LoadEvent, Scope};

const ROUNDS: usize = 15;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Median over rounds of the mean time per call, in microseconds.
async fn measure<F, Fut>(per_round: usize, mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..per_round / 4 + 1 {
        f().await;
    }
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..per_round {
            f().await;
        }
        rounds.push(t.elapsed().as_secs_f64() * 1e6 / per_round as f64);
    }
    median(rounds)
}

fn row(name: &str, us: f64, base: f64) {
    println!("| {name} | {us:.2} µs | {:.1}x |", us / base);
}

/// A core over the echo manifest with `engine`, and whether it compiled.
async fn echo_core(engine: EngineConfig, manifest: &Path) -> (Core, bool) {
    let compiled = Arc::new(AtomicBool::new(false));
    let mut config = HostConfig::default();
    config.engine = engine;
    let core = Core::builder()
        .config(config)
        .source(Scope::default(), manifest)
        .on_load({
            let compiled = compiled.clone();
            move |ev| {
                if let LoadEvent::Loaded { compiled: c, .. } = ev {
                    compiled.store(c, Ordering::Relaxed)
                }
            }
        })
        .build()
        .await
        .unwrap();
    (core, compiled.load(Ordering::Relaxed))
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let tools = root.join("build/tools");
    let echo_manifest = tools.join("echo.toml");
    assert!(echo_manifest.is_file(), "run `make tools` first");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let scratch = tempfile::tempdir().unwrap();
        let mut engine = EngineConfig::default();
        engine.cache_dir = Some(scratch.path().join("cache"));
        // `engine` with some fields changed (the type is non-exhaustive).
        let with = |f: &dyn Fn(&mut EngineConfig)| {
            let mut e = engine.clone();
            f(&mut e);
            e
        };
        let args = r#"{"text":"hello, sandbox"}"#;
        let scope = Scope::default();

        // Native: the same Toolbox code path, no sandbox, no schema check.
        let native = measure(20_000, || async {
            let r = toolhost_tool_echo::call_native("echo", args).unwrap();
            std::hint::black_box(r);
        })
        .await;

        // Compile vs cached load (the whole load: manifest, grants, component).
        let mut compile = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let (_, compiled) = echo_core(with(&|e| e.cache_dir = None), &echo_manifest).await;
            assert!(compiled);
            compile.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let (core, _) = echo_core(engine.clone(), &echo_manifest).await; // fills the cache
        let mut cached = Vec::new();
        for _ in 0..15 {
            let t = Instant::now();
            let (_, compiled) = echo_core(engine.clone(), &echo_manifest).await;
            assert!(!compiled);
            cached.push(t.elapsed().as_secs_f64() * 1e3);
        }

        let mut warm = core.bench_warm_instance(&scope, "echo").await.unwrap();
        let warm_us = {
            let warm = &mut warm;
            let mut rounds = Vec::new();
            for _ in 0..ROUNDS {
                let t = Instant::now();
                for _ in 0..5_000 {
                    std::hint::black_box(warm.call("echo", args).await.unwrap());
                }
                rounds.push(t.elapsed().as_secs_f64() * 1e6 / 5_000.0);
            }
            median(rounds)
        };

        let fresh = measure(5_000, || async {
            std::hint::black_box(core.bench_sandbox_call(&scope, "echo", args).await.unwrap());
        })
        .await;

        // The pooling allocator's keep-resident size: what a fresh sandbox
        // costs when the first N bytes of memory are reset in place.
        let mut resident = Vec::new();
        let variants = [
            (0usize, false),
            (1 << 20, false),
            (256 << 10, true),
            (1 << 20, true),
            (2 << 20, true),
            (4 << 20, true),
        ];
        for (keep, pagemap_scan) in variants {
            let e = with(&|e| {
                e.memory_keep_resident = keep;
                e.pagemap_scan = pagemap_scan;
            });
            let (sb, _) = echo_core(e, &echo_manifest).await;
            let us = measure(3_000, || async {
                std::hint::black_box(sb.bench_sandbox_call(&scope, "echo", args).await.unwrap());
            })
            .await;
            resident.push((keep, pagemap_scan, us));
        }

        let argmap =
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(args).unwrap();
        let full = measure(5_000, || async {
            let r = core
                .call(CallRequest::new(
                    Scope::default(),
                    "echo",
                    Some(argmap.clone()),
                ))
                .await
                .unwrap();
            std::hint::black_box(r);
        })
        .await;

        // Throughput: 2 tasks on 2 worker threads, full call path.
        let mut tput = Vec::new();
        for _ in 0..5 {
            let n = 10_000;
            let t = Instant::now();
            let tasks: Vec<_> = (0..2)
                .map(|_| {
                    let core = core.clone();
                    let argmap = argmap.clone();
                    tokio::spawn(async move {
                        for _ in 0..n / 2 {
                            core.call(CallRequest::new(
                                Scope::default(),
                                "echo",
                                Some(argmap.clone()),
                            ))
                            .await
                            .unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            tput.push(n as f64 / t.elapsed().as_secs_f64());
        }
        let single = 1e6 / full;

        println!("\n## Sandbox: echo tool, one run (median of {ROUNDS} rounds)\n");
        println!("| case | per call | vs native |");
        println!("|---|---|---|");
        row(
            "native Rust function (same Toolbox code, no sandbox)",
            native,
            native,
        );
        row(
            "wasm, one reused instance (no isolation between calls)",
            warm_us,
            native,
        );
        row(
            "wasm, fresh sandbox per call (all limits on), `Core::bench_sandbox_call`",
            fresh,
            native,
        );
        row(
            "full call path, `Core::call` (scope, policy, schema check, sandbox, audit)",
            full,
            native,
        );
        println!();
        println!("| load | median |");
        println!("|---|---|");
        println!(
            "| compile echo.wasm (no cache) | {:.1} ms |",
            median(compile)
        );
        println!(
            "| load echo from the on-disk cache | {:.3} ms |",
            median(cached)
        );
        println!();
        println!("| fresh sandbox, by `memory_keep_resident` | per call | vs native |");
        println!("|---|---|---|");
        for (keep, scan, us) in resident {
            let how = if scan {
                "dirty pages only (pagemap scan)"
            } else {
                "memset"
            };
            row(&format!("{} KiB, {how}", keep >> 10), us, native);
        }
        println!();
        println!("| throughput, full call path | calls/s |");
        println!("|---|---|");
        println!("| 1 task (sequential) | {:.0} |", single);
        println!(
            "| 2 tasks on 2 threads | {:.0} ({:.2}x) |",
            median(tput.clone()),
            median(tput) / single
        );
    });
}
