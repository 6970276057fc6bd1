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
use toolhost::{CallRequest, Core, EngineConfig, FsyncPolicy, HostConfig, LoadEvent, Scope};

const ROUNDS: usize = 15;

/// CPU time of the whole process (every thread: the caller, the background
/// refills and teardowns, the epoch ticker), in microseconds.
fn cpu_us() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// One configuration of the prewarm table, measured round by round.
struct Variant {
    name: String,
    core: Core,
    /// Each call answered as a front end answers it: inside
    /// `toolhost::reply_first`, timed until its output is back, then what
    /// it left for after the reply done (in the call's mean and CPU).
    replying: bool,
    /// Per round: mean wall time per call, CPU per call, p50 of single calls.
    wall: Vec<f64>,
    cpu: Vec<f64>,
    p50: Vec<f64>,
    /// Per round: p50 of single calls spaced 0.5 ms apart (an agent's
    /// pace, not a loop's: the refill has time to finish between calls).
    paced: Vec<f64>,
    /// Per round: calls/s with 2 callers on the 2 worker threads.
    tput: Vec<f64>,
}

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

/// One `Core::call` of echo with `args`; with `replying`, as a front end
/// makes it (see `Variant::replying`), returning when the output is back
/// and the time that took, before what the call left for after its reply.
async fn echo_timed(
    core: &Core,
    args: &serde_json::Map<String, serde_json::Value>,
    replying: bool,
) -> (toolhost::ToolOutput, f64) {
    let t = Instant::now();
    if replying {
        // Boxed, as the front ends' call futures are: a call's future is
        // kilobytes, and `reply_first` moves what it is given.
        let (out, after) = toolhost::reply_first(Box::pin(echo(core, args))).await;
        let us = t.elapsed().as_secs_f64() * 1e6;
        drop(after);
        (out, us)
    } else {
        let out = echo(core, args).await;
        (out, t.elapsed().as_secs_f64() * 1e6)
    }
}

/// One `Core::call` of echo with `args`.
async fn echo(
    core: &Core,
    args: &serde_json::Map<String, serde_json::Value>,
) -> toolhost::ToolOutput {
    core.call(CallRequest::new(
        Scope::default(),
        "echo",
        Some(args.clone()),
    ))
    .await
    .unwrap()
}

async fn echo_core(engine: EngineConfig, manifest: &Path) -> (Core, bool) {
    let mut config = HostConfig::default();
    config.engine = engine;
    echo_core_with(config, manifest).await
}

/// A core over the echo manifest with `config`, and whether it compiled.
async fn echo_core_with(config: HostConfig, manifest: &Path) -> (Core, bool) {
    let compiled = Arc::new(AtomicBool::new(false));
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

        // `TOOLHOST_BENCH_PROFILE=<seconds>`: only fresh sandboxes, back to
        // back, for that long, then exit (for `perf record`: where a fresh
        // sandbox's time goes, without the other tables around it).
        if let Some(secs) = std::env::var("TOOLHOST_BENCH_PROFILE")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
        {
            let t = Instant::now();
            let mut n = 0u64;
            while t.elapsed().as_secs_f64() < secs {
                std::hint::black_box(core.bench_sandbox_call(&scope, "echo", args).await.unwrap());
                n += 1;
            }
            println!(
                "{n} fresh sandboxes, {:.2} µs each",
                t.elapsed().as_secs_f64() * 1e6 / n as f64
            );
            return;
        }

        // `TOOLHOST_BENCH_PROFILE_REPLY=<seconds>`: the same with calls
        // answered as front ends answer them (`Core::call` in
        // `reply_first`, the next sandbox prepared after each): where a
        // call's time goes once instantiation is off its path.
        if let Some(secs) = std::env::var("TOOLHOST_BENCH_PROFILE_REPLY")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
        {
            let argmap: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(args).unwrap();
            let t = Instant::now();
            let (mut n, mut until_output) = (0u64, 0.0);
            while t.elapsed().as_secs_f64() < secs {
                let (out, us) = echo_timed(&core, &argmap, true).await;
                std::hint::black_box(out);
                until_output += us;
                n += 1;
            }
            println!(
                "{n} calls, {:.2} µs each, {:.2} µs of it until the output",
                t.elapsed().as_secs_f64() * 1e6 / n as f64,
                until_output / n as f64
            );
            return;
        }

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
            let r = echo(&core, &argmap).await;
            std::hint::black_box(r);
        })
        .await;
        // The same, with the audit log on (one JSON line per call, written
        // by its own thread): fsync at most every second (the default), and
        // fsync before each call returns.
        let mut audited = Vec::new();
        for (policy, calls) in [(FsyncPolicy::Interval, 5_000), (FsyncPolicy::Always, 300)] {
            let mut config = HostConfig::default();
            config.engine = engine.clone();
            config.audit.path = Some(scratch.path().join(format!("audit-{policy:?}.jsonl")));
            config.audit.fsync = policy;
            let (ac, _) = echo_core_with(config, &echo_manifest).await;
            let us = measure(calls, || async {
                let r = echo(&ac, &argmap).await;
                std::hint::black_box(r);
            })
            .await;
            audited.push((policy, us));
        }

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
                            echo(&core, &argmap).await;
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

        // Prewarm off vs on: the same `Core::call`, rounds interleaved so
        // every variant sees the same machine.
        let mut variants = Vec::new();
        for (name, n, replying, prepare) in [
            ("`Core::call`, nothing prepared (sandbox built on the call's path)", 0, false, true),
            ("`Core::call` in `reply_first`, prepare-after-reply off (only the reset after the reply)", 0, true, false),
            ("`Core::call` in `reply_first`, prepare-after-reply (the default)", 0, true, true),
            ("`Core::call`, prewarm = 2 (background)", 2, false, true),
            ("`Core::call`, prewarm = 8 (background)", 8, false, true),
        ] {
            let engine = with(&|e| {
                e.prewarm = n;
                e.prepare_after_reply = prepare;
            });
            let (core, _) = echo_core(engine, &echo_manifest).await;
            variants.push(Variant {
                name: name.into(),
                core,
                replying,
                wall: Vec::new(),
                cpu: Vec::new(),
                p50: Vec::new(),
                paced: Vec::new(),
                tput: Vec::new(),
            });
        }
        let per_round = 3_000;
        for round in 0..=ROUNDS {
            for v in &mut variants {
                let core = &v.core;
                let replying = v.replying;
                let mut single = Vec::with_capacity(per_round);
                let (t, c) = (Instant::now(), cpu_us());
                for _ in 0..per_round {
                    let (r, us) = echo_timed(core, &argmap, replying).await;
                    single.push(us);
                    std::hint::black_box(r);
                }
                let wall = t.elapsed().as_secs_f64() * 1e6 / per_round as f64;
                let cpu = (cpu_us() - c) / per_round as f64;
                let t = Instant::now();
                let tasks: Vec<_> = (0..2)
                    .map(|_| {
                        let core = core.clone();
                        let argmap = argmap.clone();
                        tokio::spawn(async move {
                            for _ in 0..per_round / 2 {
                                echo_timed(&core, &argmap, replying).await;
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                let tput = per_round as f64 / t.elapsed().as_secs_f64();
                let mut paced = Vec::with_capacity(200);
                for _ in 0..200 {
                    // Spin on this (non-worker) thread: the workers stay free.
                    let until = Instant::now() + std::time::Duration::from_micros(500);
                    while Instant::now() < until {
                        std::hint::spin_loop();
                    }
                    let (r, us) = echo_timed(core, &argmap, replying).await;
                    paced.push(us);
                    std::hint::black_box(r);
                }
                // Round 0 warms up.
                if round > 0 {
                    v.wall.push(wall);
                    v.cpu.push(cpu);
                    v.p50.push(median(single));
                    v.paced.push(median(paced));
                    v.tput.push(tput);
                }
            }
        }

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
            "full call path, `Core::call` (scope, policy, schema check, sandbox; no audit log)",
            full,
            native,
        );
        for (policy, us) in &audited {
            let how = match policy {
                FsyncPolicy::Always => "fsync before each call returns",
                _ => "fsync at most every second, the default",
            };
            row(
                &format!("full call path with the audit log ({how}): {:+.1} µs", us - full),
                *us,
                native,
            );
        }
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
        println!();
        println!(
            "## Prewarm: fresh sandbox per call, prepared ahead or not (echo, rounds of {per_round} calls interleaved, median of {ROUNDS})\n"
        );
        println!(
            "| case | mean per call, back to back | vs native | p50 call, back to back | p50 call, 0.5 ms apart | vs native | calls/s, 1 caller | calls/s, 2 callers | CPU per call (all threads) | prepared sandboxes used |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        println!(
            "| native Rust function (same Toolbox code, no sandbox) | {native:.2} µs | 1.0x | | | 1.0x | {:.0} | | {native:.2} µs | |",
            1e6 / native
        );
        for v in variants {
            let wall = median(v.wall);
            let stats = v.core.prewarm_stats();
            let used = stats.hits as f64 / (stats.hits + stats.misses).max(1) as f64;
            println!(
                "| {} | {wall:.2} µs | {:.1}x | {:.2} µs | {:.2} µs | {:.1}x | {:.0} | {:.0} | {:.2} µs | {} |",
                v.name,
                wall / native,
                median(v.p50),
                median(v.paced.clone()),
                median(v.paced) / native,
                1e6 / wall,
                median(v.tput),
                median(v.cpu),
                if stats.hits + stats.misses == 0 {
                    "-".to_string()
                } else {
                    format!("{:.0}%", used * 100.0)
                },
            );
        }
        println!(
            "\nEvery row runs each call in a sandbox no earlier call touched. The `reply_first` row's p50s are the time until the call's output is back (its reply); its mean and CPU per call include what the call left for after the reply (the sandbox's reset, the next one's instantiation), done on the same task before the next call."
        );
    });
}
