//! Pre-instantiated single-use sandboxes, prepared in the background
//! (`[engine] prewarm`) or by a call's task once its reply is written
//! (`[engine] prepare-after-reply`, `toolhost::reply_first`): a prepared
//! sandbox serves exactly one call, never sees another call's data, and one
//! prepared before a reload is never used after it. The `remember` tool of
//! `hostile` keeps each call's secret and a call count in globals: an
//! instance that served an earlier call would give it away.

use crate::support::*;
use serde_json::{Value, json};
use std::time::Duration;
use toolhost::{Core, Scope};

async fn core_with_prewarm(path: &std::path::Path, n: u32) -> Core {
    core_with(test_config().with_prewarm(n), path).await
}

/// Wait (boundedly) until at least `n` sandboxes are prepared, so the next
/// calls are served from them.
async fn wait_ready(core: &Core, n: u64) {
    for _ in 0..10_000 {
        if core.prewarm_stats().ready >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!(
        "no {n} sandboxes were prepared ahead: {:?}",
        core.prewarm_stats()
    );
}

async fn remember(core: &Core, secret: &str) -> Value {
    let out = call(core, "remember", json!({ "secret": secret }))
        .await
        .unwrap();
    serde_json::from_str(&out.text()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_sandbox_serves_one_call_and_never_sees_another_calls_data() {
    let d = ToolDir::new();
    d.add("hostile", "hostile", "");
    let core = core_with_prewarm(d.path(), 4).await;
    for i in 0..40 {
        // The first call finds nothing prepared (nothing is, before a
        // component's first call); later ones wait for a prepared one now
        // and then, so that many of them run in one.
        if i % 4 == 1 {
            wait_ready(&core, 1).await;
        }
        let seen = remember(&core, &format!("secret-{i}")).await;
        assert_eq!(
            seen,
            json!({ "calls": 0, "before": null }),
            "call {i} ran in an instance an earlier call used"
        );
    }
    let stats = core.prewarm_stats();
    assert!(
        stats.hits >= 10,
        "calls should have run in prepared sandboxes: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_each_get_a_distinct_never_used_instance() {
    let d = ToolDir::new();
    d.add("hostile", "hostile", "[limits]\nmax-concurrency = 32\n");
    let core = core_with_prewarm(d.path(), 8).await;
    // A burst of calls raises the component's rate, so several are ready.
    for i in 0..16 {
        remember(&core, &format!("warm-up-{i}")).await;
    }
    wait_ready(&core, 1).await;
    let hits_before = core.prewarm_stats().hits;
    let calls = (0..24).map(|i| {
        let core = core.clone();
        tokio::spawn(async move { remember(&core, &format!("concurrent-{i}")).await })
    });
    for (i, seen) in futures::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            seen.unwrap(),
            json!({ "calls": 0, "before": null }),
            "concurrent call {i} shared an instance"
        );
    }
    let stats = core.prewarm_stats();
    assert!(
        stats.hits > hits_before,
        "some concurrent calls should have run in prepared sandboxes: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_prepared_before_a_reload_is_never_used_after_it() {
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        "[env]\nset = { GREETING = \"before\" }\n",
    );
    let core = core_with_prewarm(d.path(), 4).await;
    let greeting = |core: Core| async move {
        call(&core, "getenv", json!({ "name": "GREETING" }))
            .await
            .unwrap()
            .text()
    };
    assert_eq!(greeting(core.clone()).await, "before");
    wait_ready(&core, 1).await;

    // New grants: the sandboxes prepared with the old ones are dropped, and
    // every later call sees the new value.
    d.add(
        "hostile",
        "hostile",
        "[env]\nset = { GREETING = \"after\" }\n",
    );
    let ready = core.prewarm_stats();
    assert!(core.reload().await.is_empty());
    let after = core.prewarm_stats();
    assert!(
        after.discarded > ready.discarded,
        "the prepared sandboxes should have been dropped: {ready:?} -> {after:?}"
    );
    for _ in 0..20 {
        assert_eq!(greeting(core.clone()).await, "after");
    }
    wait_ready(&core, 1).await;
    assert_eq!(greeting(core.clone()).await, "after");

    // A new component under the same manifest: its tools, never the old
    // component's sandboxes.
    d.add("hostile", "echo", "");
    let ready = core.prewarm_stats();
    assert!(core.reload().await.is_empty());
    let after = core.prewarm_stats();
    assert!(
        after.discarded > ready.discarded,
        "the prepared sandboxes should have been dropped: {ready:?} -> {after:?}"
    );
    let err = call(&core, "getenv", json!({ "name": "GREETING" }))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &toolhost::CallErrorKind::UnknownTool, "{err}");
    for i in 0..20 {
        let text = format!("echo {i}");
        let out = call(&core, "echo", json!({ "text": text })).await.unwrap();
        assert_eq!(out.text(), text);
    }
}

/// With `prewarm = 0`, calls made outside `reply_first` prepare nothing;
/// with `prepare-after-reply = false` too, nor do calls made inside it.
#[tokio::test]
async fn with_both_off_nothing_is_prepared() {
    let d = ToolDir::new();
    d.add("hostile", "hostile", "");
    let plain = core_with_prewarm(d.path(), 0).await;
    let replying = core_replying(d.path(), false).await;
    for i in 0..5 {
        assert_eq!(
            remember(&plain, &format!("s{i}")).await,
            json!({ "calls": 0, "before": null })
        );
        assert_eq!(
            remember_replying(&replying, &Scope::default(), &format!("r{i}")).await,
            json!({ "calls": 0, "before": null })
        );
        tokio::task::yield_now().await;
    }
    for core in [plain, replying] {
        let stats = core.prewarm_stats();
        assert_eq!((stats.hits, stats.ready), (0, 0), "{stats:?}");
    }
}

/// Prepared sandboxes, the calls they serve and the ones torn down off the
/// call's path all hold pool permits, so no call ever finds the pool's
/// async stacks (or memories, or instances) used up: it waits for room
/// instead. One release run of the sandbox bench (2026-12-04) failed a
/// call with wasmtime's "maximum concurrent limit of 129 for fibers
/// reached" while two callers ran back to back with prewarm variants
/// loaded (wasmtime's sharded pools; SECURITY.md, "The pool").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_calls_with_prewarm_never_run_out_of_the_pool() {
    let d = ToolDir::new();
    d.add("echo", "echo", "");
    let core = core_with_prewarm(d.path(), 8).await;
    let callers: Vec<_> = (0..2)
        .map(|c| {
            let core = core.clone();
            tokio::spawn(async move {
                for i in 0..1500 {
                    let text = format!("{c}-{i}");
                    let out = call(&core, "echo", json!({ "text": text }))
                        .await
                        .unwrap_or_else(|e| panic!("call {i} of caller {c}: {e}"));
                    assert_eq!(out.text(), text);
                }
            })
        })
        .collect();
    for c in callers {
        c.await.unwrap();
    }
}

/// `tool` in `scope`, answered as a front end answers: the call inside
/// `reply_first`, and what it leaves done once the "reply" is out.
async fn call_replying(
    core: &Core,
    scope: &Scope,
    tool: &str,
    arguments: Value,
) -> Result<toolhost::ToolOutput, toolhost::CallError> {
    let request = toolhost::CallRequest::new(scope.clone(), tool, args(arguments));
    let (out, after) = toolhost::reply_first(core.call(request)).await;
    drop(after);
    out
}

/// `remember` in `scope` through [`call_replying`]: what the call saw.
async fn remember_replying(core: &Core, scope: &Scope, secret: &str) -> Value {
    let out = call_replying(core, scope, "remember", json!({ "secret": secret })).await;
    serde_json::from_str(&out.unwrap().text()).unwrap()
}

/// A config whose calls finish within their first slice (on the caller's
/// task, so inside its `reply_first`) even on a loaded machine: a call
/// past its first slice finishes on the guest executor, which leaves
/// nothing for after the reply. With a 200 ms tick, a call or preparation
/// preempted for a few milliseconds could still meet a tick and yield
/// (and these tests count exactly which calls took prepared sandboxes):
/// the tick is an hour (set in code: a config file allows at most 1 s).
/// Guests still yield every `FUEL_FLUSH` units of fuel, so a runaway,
/// a long start-up or a cancelled spin still ends its slice.
fn one_slice_config() -> toolhost::HostConfig {
    let mut config = test_config();
    config.engine.epoch_tick = Duration::from_secs(3600);
    config
}

async fn core_replying(path: &std::path::Path, after_reply: bool) -> Core {
    core_with(
        one_slice_config().with_prepare_after_reply(after_reply),
        path,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_prepared_after_a_reply_serves_the_next_call_only_and_fresh() {
    let d = ToolDir::new();
    d.add("hostile", "hostile", "");
    // On by default.
    assert!(test_config().engine.prepare_after_reply);
    let core = core_replying(d.path(), true).await;
    let scope = Scope::default();
    for i in 0..40 {
        let seen = remember_replying(&core, &scope, &format!("secret-{i}")).await;
        assert_eq!(
            seen,
            json!({ "calls": 0, "before": null }),
            "call {i} ran in an instance an earlier call used"
        );
    }
    let stats = core.prewarm_stats();
    // The first call finds nothing prepared; each later one the sandbox
    // its predecessor's task prepared once it had answered.
    assert_eq!(
        (stats.hits, stats.misses, stats.ready),
        (39, 1, 1),
        "{stats:?}"
    );
    // A call not answered through `reply_first` leaves nothing prepared,
    // but still takes the one that is.
    assert_eq!(
        remember(&core, "plain").await,
        json!({ "calls": 0, "before": null })
    );
    let stats = core.prewarm_stats();
    assert_eq!((stats.hits, stats.ready), (40, 0), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_replying_first_never_share_an_instance() {
    let d = ToolDir::new();
    d.add("hostile", "hostile", "[limits]\nmax-concurrency = 32\n");
    let core = core_replying(d.path(), true).await;
    let callers = (0..8).map(|c| {
        let core = core.clone();
        tokio::spawn(async move {
            let scope = Scope::default();
            for i in 0..25 {
                let seen = remember_replying(&core, &scope, &format!("{c}-{i}")).await;
                assert_eq!(
                    seen,
                    json!({ "calls": 0, "before": null }),
                    "call {i} of caller {c} shared an instance"
                );
            }
        })
    });
    for c in futures::future::join_all(callers).await {
        c.unwrap();
    }
    // Eight callers share one prepared sandbox at a time: some find it.
    let stats = core.prewarm_stats();
    assert!(stats.hits >= 20, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_prepared_after_a_reply_before_a_reload_is_never_used_after_it() {
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        "[env]\nset = { GREETING = \"before\" }\n",
    );
    let core = core_replying(d.path(), true).await;
    let greeting = |core: Core| async move {
        let args = json!({ "name": "GREETING" });
        let out = call_replying(&core, &Scope::default(), "getenv", args).await;
        out.unwrap().text()
    };
    assert_eq!(greeting(core.clone()).await, "before");
    assert_eq!(core.prewarm_stats().ready, 1);

    // A reload that changes nothing still drops it (the component may be
    // the same object, and its set with it): the next call builds its own.
    let after = reload_dropping_the_prepared(&core).await;
    assert_eq!(greeting(core.clone()).await, "before");
    assert_eq!(core.prewarm_stats().hits, after.hits, "a stale sandbox ran");
    assert_eq!(greeting(core.clone()).await, "before");
    assert_eq!(core.prewarm_stats().hits, after.hits + 1);

    // New grants: the sandbox prepared with the old ones is dropped, and
    // every later call (the first of them built fresh, the rest prepared)
    // sees the new value.
    d.add(
        "hostile",
        "hostile",
        "[env]\nset = { GREETING = \"after\" }\n",
    );
    let after = reload_dropping_the_prepared(&core).await;
    assert_eq!(after.ready, 0, "{after:?}");
    for _ in 0..5 {
        assert_eq!(greeting(core.clone()).await, "after");
    }
    assert!(core.prewarm_stats().hits >= after.hits + 4);

    // A new component under the same manifest: its tools, never the old
    // component's sandbox.
    d.add("hostile", "echo", "");
    assert!(core.reload().await.is_empty());
    let err = call(&core, "getenv", json!({ "name": "GREETING" }))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &toolhost::CallErrorKind::UnknownTool, "{err}");
    for i in 0..5 {
        let text = format!("echo {i}");
        let out = call_replying(&core, &Scope::default(), "echo", json!({ "text": text })).await;
        assert_eq!(out.unwrap().text(), text);
    }
}

/// A prepared sandbox holds a pool slot; a call that needs that slot gets
/// it (prepared sandboxes are shed as soon as a call waits for room), and
/// none is prepared into the pool's last quarter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_sandboxes_give_their_pool_room_to_calls() {
    let d = ToolDir::new();
    d.add("hostile", "hostile", "[limits]\nmax-concurrency = 8\n");
    d.add("echo", "echo", "");
    // One component may fill the pool: its calls then wait for the pool
    // itself, not for their share of it.
    let mut config = one_slice_config().with_max_instances(4);
    config.caps.limits.pool_share = 1.0;
    let core = core_with(config, d.path()).await;
    let scope = Scope::default();
    remember_replying(&core, &scope, "one").await;
    call_replying(&core, &scope, "echo", json!({ "text": "x" }))
        .await
        .unwrap();
    // Two prepared (one per component), within three quarters of 4 slots.
    assert_eq!(core.prewarm_stats().ready, 2, "{:?}", core.prewarm_stats());
    // Four calls that hold their slots at once: the one prepared for
    // `hostile` serves one, two slots are free, and the fourth call can
    // only have the one `echo`'s prepared sandbox holds. All run.
    let sleeps = (0..4).map(|_| {
        let core = core.clone();
        tokio::spawn(async move {
            call(&core, "sleep", json!({ "ms": 200 }))
                .await
                .map(|o| o.text())
        })
    });
    for s in futures::future::join_all(sleeps).await {
        s.unwrap().unwrap();
    }
    let stats = core.prewarm_stats();
    assert_eq!(stats.ready, 0, "{stats:?}");
    assert!(stats.discarded >= 1, "{stats:?}");
}

/// A core of `config` serving `a`'s tools to scope `tenant-a` and `b`'s to
/// `tenant-b`, every component loaded; the core and the two scopes.
async fn two_tenants(
    config: toolhost::HostConfig,
    a: &ToolDir,
    b: &ToolDir,
) -> (Core, Scope, Scope) {
    let (sa, sb) = (Scope::new("tenant-a"), Scope::new("tenant-b"));
    let core = Core::builder()
        .config(config)
        .source(sa.clone(), a.path())
        .source(sb.clone(), b.path())
        .build()
        .await
        .unwrap();
    assert!(core.load_errors().is_empty(), "{:?}", core.load_errors());
    (core, sa, sb)
}

/// With two scopes, each call's sandbox counts against its scope's share
/// of the host's memory, and a sandbox prepared after a reply joins that
/// share before it is instantiated: each scope's calls run in sandboxes
/// prepared for them, and none sees another's data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scope_gets_sandboxes_prepared_in_its_own_share() {
    let (a, b) = (ToolDir::new(), ToolDir::new());
    a.add("hostile", "hostile", "");
    b.add("hostile", "hostile", "");
    let (core, sa, sb) = two_tenants(one_slice_config(), &a, &b).await;
    for i in 0..20 {
        let scope = if i % 2 == 0 { &sa } else { &sb };
        assert_eq!(
            remember_replying(&core, scope, &format!("{}-{i}", scope.as_str())).await,
            json!({ "calls": 0, "before": null }),
            "call {i} ran in an instance an earlier call used"
        );
    }
    let stats = core.prewarm_stats();
    // The first call of each scope builds its own; every later one takes
    // the sandbox its scope's previous call left, already in its share
    // (one refused by the share would count as discarded, not a hit).
    assert_eq!(
        (stats.hits, stats.misses, stats.discarded, stats.ready),
        (18, 2, 0, 2),
        "{stats:?}"
    );
}

/// The front ends prepare after their replies, through the real binary:
/// over stdio and over HTTP's stateless lane, each `remember` call runs
/// in an instance no earlier call used, and the server's log shows the
/// calls after the first took sandboxes prepared for them.
#[test]
fn front_ends_prepare_after_the_reply_and_every_call_stays_fresh() {
    use crate::mcp::{BIN, HttpServe, serve_args};
    use crate::mcp_2026::{body_json, call_2026, meta};
    use std::io::{BufRead, BufReader, Write};
    const PREPARED: &str = "a call takes a sandbox prepared before it";
    let d = ToolDir::new();
    d.add("hostile", "hostile", "");
    let fresh = json!({ "calls": 0, "before": null });
    let log = ("TOOLHOST_LOG", "toolhost::sandbox::warm=debug");
    // As `one_slice_config`: calls end within their first slice even in
    // a debug build on a loaded machine (the longest tick a config file
    // allows).
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), "[engine]\nepoch-tick = \"1s\"\n").unwrap();
    let config = cfg.path().to_str().unwrap();

    // stdio: one call after another, each after the previous reply.
    let mut child = std::process::Command::new(BIN)
        .args([
            "serve", "--stdio", "--watch", "false", "--config", config, "--tools",
        ])
        .arg(d.path())
        .env(log.0, log.1)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    writeln!(stdin, "{}", crate::mcp::INIT).unwrap();
    let _ = lines.next().unwrap().unwrap();
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
    )
    .unwrap();
    for i in 0..10 {
        let call = json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
            "params": {"name": "remember", "arguments": {"secret": format!("stdio-{i}")}}});
        writeln!(stdin, "{call}").unwrap();
        let reply: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        let text = reply["result"]["content"][0]["text"].as_str().unwrap();
        let seen: Value = serde_json::from_str(text).unwrap();
        assert_eq!(seen, fresh, "stdio call {i} ran in a used instance");
    }
    drop(stdin);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(child.wait().unwrap().success());
    let n = stderr.matches(PREPARED).count();
    assert_eq!(n, 9, "stdio: {n} of 10 calls ran prepared:\n{stderr}");

    // HTTP, 2026-07-28 stateless calls (the lane): the same.
    let mut args = serve_args(&d);
    args.extend(["--config".to_string(), config.to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = HttpServe::start_env(&args, &[log]);
    for i in 0..10 {
        let params =
            json!({"arguments": {"secret": format!("http-{i}")}, "_meta": meta(json!({}))});
        let (status, resp) = call_2026(&server.addr(), "remember", params);
        assert_eq!(status, 200, "{resp}");
        let v = body_json(&resp);
        let seen: Value =
            serde_json::from_str(v["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
        assert_eq!(seen, fresh, "HTTP call {i} ran in a used instance");
        // The work after a response runs as a task queued behind the
        // connection's, which on a loaded machine (the suite's other
        // tests) may run after a next request that comes at once: a
        // client's pause between calls, as an agent's, leaves it time.
        std::thread::sleep(Duration::from_millis(20));
    }
    let n = server.stderr().matches(PREPARED).count();
    assert!(
        n >= 7,
        "HTTP: {n} of 10 calls ran prepared:\n{}",
        server.stderr()
    );
}

/// Reload `core` (no errors) and check that it dropped its one prepared
/// sandbox; the stats after.
async fn reload_dropping_the_prepared(core: &Core) -> toolhost::PrewarmStats {
    let before = core.prewarm_stats();
    assert!(core.reload().await.is_empty());
    let after = core.prewarm_stats();
    assert_eq!(
        after.discarded,
        before.discarded + 1,
        "{before:?} -> {after:?}"
    );
    after
}

/// The memory all calls hold now, by the metrics (`toolhost_memory_held_bytes`).
fn memory_held(core: &Core) -> f64 {
    let text = core.metrics().encode();
    text.lines()
        .find_map(|l| l.strip_prefix("toolhost_memory_held_bytes "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no memory held in\n{text}"))
}

/// A tenant's prepared sandboxes count against its own share of the host's
/// memory, from before they are instantiated: however many components it
/// has, what they hold prepared stays within its share. (Charged to the
/// host's bound alone, as they once were, this tenant's seven prepared
/// sandboxes held about 48 MiB, half again its share, and only the host's
/// own bound stood between them and another tenant's calls.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_prepared_sandboxes_stay_within_its_share() {
    let (a, b) = (ToolDir::new(), ToolDir::new());
    // Prepared, these hold about 13 (each Python one), 9 (each JavaScript
    // one) and 1.2 MiB (each Rust one).
    for t in [
        "py-echo", "py-text", "js-echo", "js-text", "echo", "text", "hostile",
    ] {
        a.add(t, t, "");
    }
    b.add("hostile", "hostile", "[limits]\nmemory = \"32 MiB\"\n");
    // Each tenant may hold a quarter of the host's 128 MiB: 32 MiB.
    let mut config = one_slice_config().with_max_memory(128 << 20);
    config.caps.limits.pool_share = 0.25;
    let (core, sa, sb) = two_tenants(config, &a, &b).await;
    // Tenant A calls each of its components, each answered first: after
    // each reply, its task prepares that component's next sandbox where
    // A's share has room for it.
    let calls = [
        ("py_echo", json!({ "text": "a" })),
        ("py_word_count", json!({ "text": "a" })),
        ("js_echo", json!({ "text": "a" })),
        ("js_table", json!({ "rows": [] })),
        ("echo", json!({ "text": "a" })),
        ("json_query", json!({ "json": "{}", "path": "" })),
        ("remember", json!({ "secret": "a" })),
    ];
    for (tool, args) in calls {
        call_replying(&core, &sa, tool, args)
            .await
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
    }
    let (held, stats) = (memory_held(&core), core.prewarm_stats());
    assert!(stats.ready >= 1, "nothing was prepared: {stats:?}");
    assert!(
        held <= f64::from(32u32 << 20),
        "tenant A's {} prepared sandboxes hold {held} bytes, past its share of 32 MiB",
        stats.ready
    );
    // Tenant B's call needs most of its own share: it runs.
    let out = call_replying(&core, &sb, "alloc", json!({ "mib": 28, "hold_ms": 0 }))
        .await
        .unwrap();
    assert_eq!(out.text(), "allocated 28 MiB");
}

/// Component `name` with a start function added to its first core module:
/// every instantiation, before anything else, counts to `n` (eight units
/// of fuel a step: one an instruction).
fn with_start_up(name: &str, n: u64) -> Vec<u8> {
    let text = wasmprinter::print_bytes(std::fs::read(component(name)).unwrap()).unwrap();
    let module = text.find("(core module").expect("a core module");
    let end = closing_paren(&text, module);
    let start_up = format!(
        "(func $fixture_start_up (local i64)
           (loop $l
             (local.set 0 (i64.add (local.get 0) (i64.const 1)))
             (br_if $l (i64.lt_u (local.get 0) (i64.const {n})))))
         (start $fixture_start_up)"
    );
    let text = format!("{}{start_up}{}", &text[..end], &text[end..]);
    wat::parse_str(&text).expect("the fixture parses")
}

/// The index of the `)` that closes the `(` at `open` in WAT `text`
/// (skipping strings and comments).
fn closing_paren(text: &str, open: usize) -> usize {
    let b = text.as_bytes();
    let (mut i, mut depth) = (open, 0usize);
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'(' if b.get(i + 1) == Some(&b';') => {
                i += text[i..].find(";)").expect("a closed comment") + 1;
            }
            b';' if b.get(i + 1) == Some(&b';') => {
                i += text[i..].find('\n').unwrap_or(text.len() - i);
            }
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    panic!("unbalanced WAT")
}

/// Components with a start function (run at every instantiation, before
/// any call's data exists). One whose start-up outlasts a slice is never
/// started on a replying task: its calls yield, so they end on the guest
/// threads, past the reply, and leave nothing to prepare; each call builds
/// its own sandbox, start-up included, within its own limits. One whose
/// start-up fits in a slice is prepared after each reply like any other,
/// and each of its calls still runs in an instance no other call saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_up_runs_after_a_reply_only_if_it_fits_in_a_slice() {
    // 2^23 steps: about 67 million units of fuel, well past the 10 million
    // at which a running guest yields; 2^12 steps: about 33 thousand, a few
    // microseconds.
    for (steps, prepared) in [(1u64 << 23, false), (1 << 12, true)] {
        let d = ToolDir::new();
        d.add_bytes("start-up", &with_start_up("hostile", steps), "");
        let core = core_replying(d.path(), true).await;
        let scope = Scope::default();
        for i in 0..12 {
            assert_eq!(
                remember_replying(&core, &scope, &format!("secret-{i}")).await,
                json!({ "calls": 0, "before": null }),
                "call {i} ran in an instance an earlier call used ({steps} steps)"
            );
        }
        let stats = core.prewarm_stats();
        assert_eq!(stats.failed, 0, "{steps} steps: {stats:?}");
        if prepared {
            assert_eq!(
                (stats.hits, stats.misses),
                (11, 1),
                "{steps} steps: {stats:?}"
            );
        } else {
            assert_eq!(
                (stats.hits, stats.misses, stats.ready),
                (0, 12, 0),
                "{stats:?}"
            );
        }
    }
}

/// A prepared sandbox's monotonic clock starts with its call, not when it
/// was prepared: wasmtime-wasi's own clock counts from the WASI context's
/// making, so in a sandbox prepared after the last reply it told the guest
/// how long ago that reply went out, maybe to another client (found by
/// review). Prepared after the first call, taken a second later, the
/// clock of the second call reads well under that second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_sandboxs_clock_starts_with_its_call() {
    let d = ToolDir::new();
    d.add("hostile", "hostile", "");
    let core = core_replying(d.path(), true).await;
    let scope = Scope::default();
    let uptime = |out: toolhost::ToolOutput| -> Duration {
        Duration::from_nanos(out.text().parse().expect("nanoseconds"))
    };
    let first = uptime(
        call_replying(&core, &scope, "uptime", json!({}))
            .await
            .unwrap(),
    );
    assert_eq!(core.prewarm_stats().ready, 1, "{:?}", core.prewarm_stats());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = uptime(
        call_replying(&core, &scope, "uptime", json!({}))
            .await
            .unwrap(),
    );
    let stats = core.prewarm_stats();
    assert_eq!((stats.hits, stats.misses), (1, 1), "{stats:?}");
    assert!(
        second < Duration::from_millis(500),
        "the prepared sandbox's clock read {second:?} (the first call's {first:?}): it counts from its preparation"
    );
}

/// Component `name` with a core instance added after the component's
/// imports are all in place, whose start function runs `body` with the
/// lowered function `func` of WASI interface `iface` imported as `$f` of
/// type `sig`, and the main memory as `$mem`: what a start-up could do
/// once every import works.
fn with_start_calling(name: &str, iface: &str, func: &str, sig: &str, body: &str) -> Vec<u8> {
    let text = wasmprinter::print_bytes(std::fs::read(component(name)).unwrap()).unwrap();
    let fixup = text
        .find("(core instance $fixup")
        .expect("wit-component's fixup instance");
    let end = closing_paren(&text, fixup) + 1;
    let lowered = text
        .lines()
        .find(|l| {
            // Lowered through wit-component's shim when it takes memory
            // (named after its interface), else directly (named after the
            // function alone: `subscribe-duration` is only the clock's).
            l.contains("(core func $")
                && l.contains("canon lower")
                && ((l.contains(&format!("/{iface}@")) && l.contains(&format!("-{func}\" (@name")))
                    || (iface == "monotonic-clock"
                        && l.contains(&format!(" {func}\" (@name \"{func}\")"))))
        })
        .unwrap_or_else(|| panic!("the lowered {iface} {func}"));
    let at = lowered.find("(core func ").unwrap() + "(core func ".len();
    let func = &lowered[at..at + lowered[at..].find(" (@name").unwrap()];
    let spy = format!(
        "(core module $fixture_spy
           (import \"m\" \"mem\" (memory $mem 0))
           (import \"c\" \"f\" (func $f {sig}))
           (func $s {body})
           (start $s))
         (core instance $fixture_spy_instance (instantiate $fixture_spy
           (with \"m\" (instance (export \"mem\" (memory $memory))))
           (with \"c\" (instance (export \"f\" (func {func}))))))"
    );
    let text = format!("{}{spy}{}", &text[..end], &text[end..]);
    wat::parse_str(&text).expect("the fixture parses")
}

/// Component `name` whose start function reads
/// `wasi:clocks/wall-clock.now` into address 16 of the main memory at
/// every instantiation: what a start-up could keep of the time its sandbox
/// was made (`start_up_wall` reads it back).
fn with_wall_clock_spy(name: &str) -> Vec<u8> {
    with_start_calling(
        name,
        "wall-clock",
        "now",
        "(param i32)",
        "(call $f (i32.const 16))",
    )
}

/// A component granted a read-write directory is never prepared ahead: a
/// start-up run in the background (four slices) could write to it before
/// any call existed, and read the host's time back from the file's times
/// (found by review). Its calls build their own sandboxes and run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_with_a_read_write_directory_is_never_prepared_ahead() {
    let out = tempfile::tempdir().unwrap();
    let d = ToolDir::new();
    d.add("hostile", "hostile", &fs_grant("/out", out.path(), "rw"));
    never_prepared(d.path()).await;
    // Read-only, it is prepared ahead (its calls ask for their
    // directories, its instantiation does not), and a call in a prepared
    // sandbox reads through the grant (one that reads yields, so it ends
    // past its reply and leaves nothing prepared: the others do not).
    std::fs::write(out.path().join("f"), "through the grant").unwrap();
    let d = ToolDir::new();
    d.add("hostile", "hostile", &fs_grant("/data", out.path(), "ro"));
    let core = core_replying(d.path(), true).await;
    let scope = Scope::default();
    for i in 0..3 {
        call_replying(&core, &scope, "uptime", json!({}))
            .await
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
    }
    let read = call_replying(&core, &scope, "read_path", json!({"path": "/data/f"}))
        .await
        .unwrap();
    assert_eq!(read.text(), "through the grant");
    let stats = core.prewarm_stats();
    assert_eq!(
        (stats.hits, stats.misses, stats.failed),
        (3, 1, 0),
        "{stats:?}"
    );
}

/// Four calls of `uptime` from the tools at `path`, answered as front ends
/// answer them, all run, none in a prepared sandbox; the prewarm stats.
async fn never_prepared(path: &std::path::Path) -> toolhost::PrewarmStats {
    let core = core_replying(path, true).await;
    let scope = Scope::default();
    for i in 0..4 {
        call_replying(&core, &scope, "uptime", json!({}))
            .await
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
    }
    let stats = core.prewarm_stats();
    assert_eq!((stats.hits, stats.ready), (0, 0), "{stats:?}");
    stats
}

/// A start-up that makes a clock's pollable (its deadline the host's
/// time) measured, waiting on it in the call, how long its sandbox sat
/// prepared (found by review). Such a start-up traps when run ahead, so
/// the component is prepared no more; each call builds its own sandbox
/// and runs.
///
/// So is one that asks for its directories: its file operations would run
/// outside any call (a blocking one outliving the failed preparation),
/// and what they returned told it whether it ran ahead (found by review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_up_that_sets_a_timer_or_opens_its_directories_is_never_run_ahead() {
    let data = tempfile::tempdir().unwrap();
    let timer = with_start_calling(
        "hostile",
        "monotonic-clock",
        "subscribe-duration",
        "(param i64) (result i32)",
        "(drop (call $f (i64.const 3000000000)))",
    );
    let dirs = with_start_calling(
        "hostile",
        "preopens",
        "get-directories",
        "(param i32)",
        "(call $f (i32.const 16))",
    );
    for fixture in [timer, dirs] {
        let d = ToolDir::new();
        d.add_bytes("start-up", &fixture, &fs_grant("/data", data.path(), "ro"));
        let stats = never_prepared(d.path()).await;
        assert!(stats.failed >= 1, "{stats:?}");
    }
}

/// A prepared sandbox's wall clock shows its start-up no time of the
/// host's: a start function that kept the time of its preparation in
/// memory told the next call, maybe another client's, when the previous
/// call was answered (found by review). The call itself reads the host's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_sandboxs_start_up_sees_no_time_of_the_host() {
    let d = ToolDir::new();
    d.add_bytes("spy", &with_wall_clock_spy("hostile"), "");
    let core = core_replying(d.path(), true).await;
    let scope = Scope::default();
    let seconds = |s: &str| -> f64 { s.parse().expect("seconds") };
    let host_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    // Built on its call's path, the start-up reads the host's clock.
    let first = call_replying(&core, &scope, "start_up_wall", json!({}))
        .await
        .unwrap()
        .text();
    let (start_up, now) = first.split_once(' ').unwrap();
    assert!((seconds(start_up) - host_now()).abs() < 60.0, "{first}");
    assert!((seconds(now) - host_now()).abs() < 60.0, "{first}");
    assert_eq!(core.prewarm_stats().ready, 1, "{:?}", core.prewarm_stats());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = call_replying(&core, &scope, "start_up_wall", json!({}))
        .await
        .unwrap()
        .text();
    let stats = core.prewarm_stats();
    assert_eq!((stats.hits, stats.misses), (1, 1), "{stats:?}");
    let (start_up, now) = second.split_once(' ').unwrap();
    assert!((seconds(now) - host_now()).abs() < 60.0, "{second}");
    assert!(
        seconds(start_up) < 60.0,
        "the prepared start-up read {start_up}, {:.3} s before its call: when it was made",
        seconds(now) - seconds(start_up)
    );
}

/// The background refill (`[engine] prewarm`) starts a sandbox within one
/// slice too. A start-up run ahead of demand is no call's: it has no
/// deadline and no CPU turn of its tenant, so one that ran up to the
/// component's timeout gave each call a second timeout of guest CPU (found
/// by review: calls of a start-up spinning 2 s answered in 2 ms, the spin
/// done beside them). A start-up past a slice is never prepared ahead, each
/// call runs it within its own limits; one within a slice is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_up_runs_in_the_background_only_if_it_fits_in_a_slice() {
    // As above: 2^23 steps, several slices; 2^12, a few microseconds.
    for (steps, prepared) in [(1u64 << 23, false), (1 << 12, true)] {
        let d = ToolDir::new();
        d.add_bytes("start-up", &with_start_up("hostile", steps), "");
        let core = core_with(one_slice_config().with_prewarm(2), d.path()).await;
        for i in 0..4 {
            assert_eq!(
                remember(&core, &format!("secret-{i}")).await,
                json!({ "calls": 0, "before": null }),
                "call {i} ran in an instance an earlier call used ({steps} steps)"
            );
        }
        if prepared {
            wait_ready(&core, 1).await;
            assert_eq!(core.prewarm_stats().failed, 0, "{:?}", core.prewarm_stats());
            continue;
        }
        // Each refill the calls start fails within a slice, until the
        // component is given up (four failures, none prepared).
        let mut stats = core.prewarm_stats();
        for i in 0..400 {
            if stats.failed >= 4 {
                break;
            }
            if i % 10 == 0 {
                remember(&core, "more").await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            stats = core.prewarm_stats();
        }
        assert_eq!(
            (stats.failed, stats.hits, stats.ready),
            (4, 0, 0),
            "{stats:?}"
        );
        for _ in 0..4 {
            remember(&core, "after").await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stats = core.prewarm_stats();
        assert_eq!(
            (stats.failed, stats.hits, stats.ready),
            (4, 0, 0),
            "{stats:?}"
        );
    }
}

/// A prepared sandbox no call takes within `prepared-idle` is dropped: its
/// slot and memory go back, so a host whose calls stopped returns to
/// holding nothing. The next call builds its own, and leaves one prepared
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_sandbox_no_call_takes_is_dropped_after_prepared_idle() {
    let d = ToolDir::new();
    d.add("hostile", "hostile", "");
    let config = one_slice_config().with_prepared_idle(Duration::from_millis(200));
    let core = core_with(config, d.path()).await;
    let scope = Scope::default();
    remember_replying(&core, &scope, "first").await;
    assert_eq!(core.prewarm_stats().ready, 1, "{:?}", core.prewarm_stats());
    assert!(memory_held(&core) > 0.0);
    let mut stats = core.prewarm_stats();
    for _ in 0..500 {
        if stats.ready == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        stats = core.prewarm_stats();
    }
    assert_eq!((stats.ready, stats.discarded), (0, 1), "{stats:?}");
    assert_eq!(memory_held(&core), 0.0);
    // Calls go on as before: the next builds its own sandbox and leaves
    // one prepared, which the one after takes (unless this machine stalls
    // past `prepared-idle` between them), each fresh.
    for secret in ["second", "third"] {
        assert_eq!(
            remember_replying(&core, &scope, secret).await,
            json!({ "calls": 0, "before": null })
        );
    }
    let stats = core.prewarm_stats();
    assert_eq!(stats.hits + stats.misses, 3, "{stats:?}");
    assert!(stats.misses >= 2, "{stats:?}");
}

/// A call that takes a sandbox prepared after the last reply gets its own
/// cancellation token at hand-out (`CallState::begin`): cancelling it stops
/// the guest, the guest's `cancelled()` sees it (`spin_checked` logs a
/// warning when it does), and the slot is free at once. A prepared sandbox
/// has no token of its own; had the hand-out not attached the call's, the
/// caller would still get `Cancelled` (the host watches its own clone), but
/// the guest would spin on, never told.
///
/// The guest sees the cancellation only if it fires while the guest runs a
/// slice: one that fires while the guest waits between slices ends the
/// call at its next poll, before the guest runs again (the caller is told
/// at once; the guest is not). A loaded machine can land there, so each
/// attempt takes a freshly prepared sandbox and the guest must see it in
/// one of five; without the token at hand-out it sees it in none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_a_prepared_sandbox_is_cancelled_and_its_guest_sees_it() {
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        "[limits]\ntimeout = \"60s\"\nmax-concurrency = 1\n",
    );
    let core = core_replying(d.path(), true).await;
    let scope = Scope::default();
    let mut attempts = Vec::new();
    for _ in 0..5 {
        // A call that ends within its first slice prepares the sandbox the
        // next one takes.
        remember_replying(&core, &scope, "first").await;
        let before = core.prewarm_stats();
        assert_eq!(before.ready, 1, "{before:?}");

        let cancel = toolhost::CancellationToken::new();
        let (tx, mut rx) = toolhost::EventSink::channel(64);
        let request = toolhost::CallRequest::new(scope.clone(), "spin_checked", args(json!({})))
            .cancel(cancel.clone())
            .events(tx);
        let canceller = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            cancel.cancel();
        });
        let result = tokio::time::timeout(Duration::from_secs(10), async {
            let (out, after) = toolhost::reply_first(core.call(request)).await;
            drop(after);
            out
        })
        .await
        .expect("a cancelled call ends at once");
        canceller.await.unwrap();
        let err = result.unwrap_err();
        assert!(
            matches!(err.kind(), toolhost::CallErrorKind::Cancelled),
            "{err:?}"
        );
        let stats = core.prewarm_stats();
        assert_eq!(stats.hits, before.hits + 1, "{stats:?}");
        // The channel closes when the guest's store is dropped.
        let mut warnings = Vec::new();
        while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            if let toolhost::CallEvent::Log { message, .. } = ev {
                warnings.push(message);
            }
        }
        let seen = warnings == ["cancelled"];
        attempts.push(warnings);
        if seen {
            break;
        }
    }
    assert!(
        attempts.last().is_some_and(|w| w == &["cancelled"]),
        "the guest never saw its call cancelled: {attempts:?}"
    );
    // max-concurrency = 1: a guest still spinning would hold the slot for
    // the 60 s timeout.
    let next = tokio::time::timeout(
        Duration::from_secs(10),
        call_replying(&core, &scope, "sleep", json!({ "ms": 1 })),
    )
    .await
    .expect("the cancelled call's slot was freed");
    assert_eq!(next.unwrap().text(), "slept");
}
