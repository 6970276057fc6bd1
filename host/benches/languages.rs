//! `make bench` (languages part): the same echo tool written in Rust, Python
//! (componentize-py) and JavaScript (componentize-js), side by side in one
//! run, each figure also as a ratio to the Rust tool's.
//!
//! - install (compile): a tool loaded with no compile cache (manifest,
//!   grants, `.wasm` to native code, `describe` in a sandbox): what
//!   installing a tool costs the host once; the build of the component
//!   itself is measured by `make tools` (see BENCHMARKS.md);
//! - cold start: a tool loaded from the on-disk compile cache and its first
//!   call;
//! - call p50: one call through `Core::call`, a fresh sandbox per call; also
//!   in one reused instance (no isolation: what the interpreter itself costs)
//!   and with 16 MiB of each memory slot kept resident (the interpreters'
//!   snapshots are 9-13 MiB: their pages are then reset in place rather
//!   than faulted in again on every call).
//!
//! Prints a Markdown table. Run with
//! `cargo bench -p toolhost --features unstable-bench --bench languages`
//! after `make tools`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use toolhost::{CallRequest, Core, EngineConfig, HostConfig, LoadEvent, Scope};

/// (label, deployed manifest in build/tools, tool name)
const TOOLS: [(&str, &str, &str); 3] = [
    ("Rust (`echo`)", "echo", "echo"),
    ("Python (`py_echo`, componentize-py)", "py-echo", "py_echo"),
    (
        "JavaScript (`js_echo`, componentize-js)",
        "js-echo",
        "js_echo",
    ),
];
const COMPILE_ROUNDS: usize = 3;
const COLD_ROUNDS: usize = 15;
const CALLS: usize = 2_000;
/// The `memory_keep_resident` variant: enough for the interpreters' snapshots.
const KEEP_RESIDENT_BIG: usize = 16 << 20;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

struct Row {
    label: &'static str,
    size_mib: f64,
    compile_ms: f64,
    cold_ms: f64,
    call_us: f64,
    warm_us: f64,
    resident_us: f64,
}

/// A core over `manifests` with `engine`, and whether any was compiled.
async fn core_over(engine: &EngineConfig, manifests: &[PathBuf]) -> (Core, bool) {
    let compiled = Arc::new(AtomicBool::new(false));
    let mut config = HostConfig::default();
    config.engine = engine.clone();
    let mut builder = Core::builder().config(config).on_load({
        let compiled = compiled.clone();
        move |ev| {
            if let LoadEvent::Loaded { compiled: true, .. } = ev {
                compiled.store(true, Ordering::Relaxed)
            }
        }
    });
    for m in manifests {
        builder = builder.source(Scope::default(), m);
    }
    let core = builder.build().await.unwrap();
    assert!(core.load_errors().is_empty(), "{:?}", core.load_errors());
    (core, compiled.load(Ordering::Relaxed))
}

/// p50 of `CALLS` sequential calls of `tool` through `core`, in µs.
async fn call_p50(
    core: &Core,
    tool: &str,
    args: &serde_json::Map<String, serde_json::Value>,
) -> f64 {
    let call = || async {
        let t = Instant::now();
        let r = core
            .call(CallRequest::new(Scope::default(), tool, Some(args.clone())))
            .await
            .unwrap();
        std::hint::black_box(r);
        t.elapsed().as_secs_f64() * 1e6
    };
    for _ in 0..CALLS / 10 {
        call().await;
    }
    let mut calls = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        calls.push(call().await);
    }
    median(calls)
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let deployed = |name: &str, ext: &str| -> PathBuf {
        let p = root.join("build/tools").join(format!("{name}.{ext}"));
        assert!(
            p.is_file(),
            "{} is missing: run `make tools` first",
            p.display()
        );
        p
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let cache = tempfile::tempdir().unwrap();
        let mut engine = EngineConfig::default();
        engine.cache_dir = Some(cache.path().to_path_buf());
        let mut no_cache = engine.clone();
        no_cache.cache_dir = None;
        let mut resident = engine.clone();
        resident.memory_keep_resident = KEEP_RESIDENT_BIG;
        let args = r#"{"text":"hello, sandbox"}"#;
        let argmap =
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(args).unwrap();

        // One Core serving all three, as a host would (it fills the cache);
        // and one with more of each memory slot kept resident.
        let all: Vec<PathBuf> = TOOLS.iter().map(|(_, n, _)| deployed(n, "toml")).collect();
        let (core, _) = core_over(&engine, &all).await;
        let (resident, _) = core_over(&resident, &all).await;

        let mut rows = Vec::new();
        for (label, name, tool) in TOOLS {
            let manifest = [deployed(name, "toml")];
            let size_mib =
                std::fs::metadata(deployed(name, "wasm")).unwrap().len() as f64 / (1 << 20) as f64;

            let mut compile = Vec::new();
            for _ in 0..COMPILE_ROUNDS {
                let t = Instant::now();
                let (_, compiled) = core_over(&no_cache, &manifest).await;
                assert!(compiled);
                compile.push(ms(t));
            }

            let mut cold = Vec::new();
            for _ in 0..COLD_ROUNDS {
                let t = Instant::now();
                let (c, compiled) = core_over(&engine, &manifest).await;
                assert!(!compiled, "{name} was not in the cache");
                let out = c
                    .call(CallRequest::new(Scope::default(), tool, Some(argmap.clone())))
                    .await
                    .unwrap();
                cold.push(ms(t));
                std::hint::black_box(out);
            }

            let mut warm = core
                .bench_warm_instance(&Scope::default(), tool)
                .await
                .unwrap();
            let mut warm_calls = Vec::with_capacity(CALLS);
            for i in 0..CALLS + CALLS / 10 {
                let t = Instant::now();
                std::hint::black_box(warm.call(tool, args).await.unwrap());
                if i >= CALLS / 10 {
                    warm_calls.push(t.elapsed().as_secs_f64() * 1e6);
                }
            }

            rows.push(Row {
                label,
                size_mib,
                compile_ms: median(compile),
                cold_ms: median(cold),
                call_us: call_p50(&core, tool, &argmap).await,
                warm_us: median(warm_calls),
                resident_us: call_p50(&resident, tool, &argmap).await,
            });
        }

        let rust = &rows[0];
        println!("\n## Languages: the echo tool in Rust, Python and JavaScript (one run)\n");
        println!(
            "Install (compile): median of {COMPILE_ROUNDS}; cold start: median of {COLD_ROUNDS}; call: p50 of {CALLS} sequential calls.\n"
        );
        println!(
            "| tool | component | install: load with no cache | vs Rust | cold start (cache -> first call) | vs Rust | call p50, `Core::call` | vs Rust |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for r in &rows {
            println!(
                "| {} | {:.1} MiB | {:.0} ms | {:.1}x | {:.2} ms | {:.1}x | {:.1} µs | {:.1}x |",
                r.label,
                r.size_mib,
                r.compile_ms,
                r.compile_ms / rust.compile_ms,
                r.cold_ms,
                r.cold_ms / rust.cold_ms,
                r.call_us,
                r.call_us / rust.call_us,
            );
        }
        println!();
        println!("Where a call's time goes (p50 of {CALLS} calls each):\n");
        println!(
            "| tool | one reused instance (no isolation) | vs Rust | fresh sandbox, `Core::call` (1 MiB kept resident, the default) | vs Rust | fresh sandbox, {} MiB kept resident | vs Rust |",
            KEEP_RESIDENT_BIG >> 20
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for r in &rows {
            println!(
                "| {} | {:.1} µs | {:.1}x | {:.1} µs | {:.1}x | {:.1} µs | {:.1}x |",
                r.label,
                r.warm_us,
                r.warm_us / rust.warm_us,
                r.call_us,
                r.call_us / rust.call_us,
                r.resident_us,
                r.resident_us / rust.resident_us,
            );
        }
    });
}
