//! Tools written in Python (componentize-py) and JavaScript (componentize-js)
//! against the same `toolhost:tool` world as the Rust tools: the example tools
//! built by `make tools` (example-tools/{py,js}-*, scripts/languages.mk),
//! driven end to end by the official Python MCP SDK client over `toolhost
//! serve --stdio`, and their hostile fixtures proving that each language's
//! runtime is held by the same fuel, memory and deadline limits as a Rust
//! tool.
//!
//! The MCP scenario's checks live in tests/clients/mcp_client.py
//! (`languages`).

use crate::mcp::{LIMIT, Sdk, Via, client, copy_tool, run_client};
use crate::support::{ToolDir, call, core, lang_tools_dir, test_config};
use std::time::Duration;
use toolhost::{CallErrorKind, Core, Scope};

const LANGS: [&str; 2] = ["py", "js"];

/// Compile every Python and JavaScript component into the tests' shared
/// compile cache, once per test run, before any test here loads one. Each
/// takes seconds to compile (it embeds a whole interpreter); without this,
/// the tests running in parallel would each compile the same components.
fn warm_cache() {
    static WARM: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut warm = WARM.lock().unwrap_or_else(|e| e.into_inner());
    if *warm {
        return;
    }
    let d = ToolDir::new();
    for lang in LANGS {
        for tool in ["echo", "text"] {
            copy_tool(&lang_tools_dir(lang), &format!("{lang}-{tool}"), d.path());
        }
        let hostile = format!("{lang}-hostile");
        d.add(&hostile, &hostile, "");
    }
    // A runtime of its own: the callers are inside tests' runtimes.
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async { drop(core(d.path()).await) })
        })
        .join()
        .unwrap()
    });
    *warm = true;
}

/// A tools directory with LANG's example tools (their shipped manifests, as
/// `make tools` deploys them) and its hostile fixture under `hostile_limits`.
fn lang_tools(lang: &str, hostile_limits: &str) -> ToolDir {
    warm_cache();
    let d = ToolDir::new();
    for tool in ["echo", "text"] {
        copy_tool(&lang_tools_dir(lang), &format!("{lang}-{tool}"), d.path());
    }
    let hostile = format!("{lang}-hostile");
    d.add(&hostile, &hostile, hostile_limits);
    d
}

/// Fuel and memory for the MCP scenario: enough fuel for a normal call,
/// far too little for an endless loop.
const MCP_HOSTILE_LIMITS: &str =
    "[limits]\ntimeout = \"60s\"\nmemory = \"64 MiB\"\nfuel = 400_000_000\nmax-concurrency = 1\n";

/// The Python client drives `toolhost serve --stdio` over LANG's tools.
///
/// The server shares the tests' compile cache (through its host config),
/// filled by `warm_cache`: compiling these components takes longer than the
/// client waits for `initialize`.
fn over_mcp(lang: &str) {
    let dir = lang_tools(lang, MCP_HOSTILE_LIMITS);
    let config = tempfile::tempdir().unwrap();
    let config_file = config.path().join("host.toml");
    let cache = test_config().engine.cache_dir.unwrap();
    std::fs::write(
        &config_file,
        format!("[engine]\ncache-dir = {:?}\n", cache.display().to_string()),
    )
    .unwrap();
    let serve = [
        "--tools".to_string(),
        dir.path().display().to_string(),
        "--config".to_string(),
        config_file.display().to_string(),
    ];
    let serve: Vec<&str> = serve.iter().map(String::as_str).collect();
    let mut cmd = client(Sdk::Python, "languages", Some("legacy"), Via::Stdio(&serve));
    cmd.env("TOOLHOST_CLIENT_LANG", lang);
    run_client(cmd, "languages", LIMIT);
}

#[test]
fn python_tools_over_mcp() {
    over_mcp("py");
}

#[test]
fn javascript_tools_over_mcp() {
    over_mcp("js");
}

/// A runaway loop in each language's interpreter is stopped at the deadline
/// (epoch interruption reaches into CPython's and SpiderMonkey's loops), and
/// the next call of the same component runs.
#[tokio::test]
async fn deadline_stops_interpreter_loops() {
    for lang in LANGS {
        let dir = lang_tools(
            lang,
            "[limits]\ntimeout = \"1500ms\"\nmax-concurrency = 1\n",
        );
        let core = core(dir.path()).await;
        let err = call(&core, &format!("{lang}_spin"), serde_json::json!({}))
            .await
            .unwrap_err();
        assert!(
            matches!(err.kind(), CallErrorKind::Timeout { after } if *after == Duration::from_millis(1500)),
            "{lang}: {err}"
        );
        assert!(
            err.to_string().contains("timed out after 1s 500ms"),
            "{err}"
        );
        let out = call(
            &core,
            &format!("{lang}_alloc"),
            serde_json::json!({"mib": 1}),
        )
        .await
        .unwrap_or_else(|e| panic!("{lang}: the next call failed: {e}"));
        assert_eq!(out.text(), "allocated 1 MiB");
    }
}

/// The deployed manifests' limits fit the runtimes, and so do the defaults:
/// a Python or JavaScript component with no `[limits]` at all loads and
/// answers.
#[tokio::test]
async fn default_limits_fit_the_runtimes() {
    warm_cache();
    for lang in LANGS {
        let d = ToolDir::new();
        let echo = format!("{lang}-echo");
        d.add(&echo, &echo, "");
        let core = core(d.path()).await;
        let out = call(
            &core,
            &format!("{lang}_echo"),
            serde_json::json!({"text": "default"}),
        )
        .await
        .unwrap_or_else(|e| panic!("{lang}: {e}"));
        assert_eq!(out.text(), "default");
    }
}

/// A memory limit below what the runtime starts with fails at load, naming
/// the tool's manifest and saying why, instead of failing every call.
#[tokio::test]
async fn a_memory_limit_below_the_runtime_fails_at_load() {
    warm_cache();
    for lang in LANGS {
        let d = ToolDir::new();
        let echo = format!("{lang}-echo");
        d.add(&echo, &echo, "[limits]\nmemory = \"4 MiB\"\n");
        let core = Core::builder()
            .config(test_config())
            .source(Scope::default(), d.path())
            .build()
            .await
            .unwrap();
        let errors = core.load_errors();
        assert_eq!(errors.len(), 1, "{lang}: {errors:?}");
        let msg = errors[0].to_string();
        assert!(msg.contains(&format!("{echo}.toml")), "{lang}: {msg}");
        assert!(msg.contains("memory"), "{lang}: {msg}");
    }
}
