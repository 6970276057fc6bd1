//! Pre-instantiated single-use sandboxes (`[engine] prewarm`): a prepared
//! sandbox serves exactly one call, never sees another call's data, and one
//! prepared before a reload is never used after it. The `remember` tool of
//! `hostile` keeps each call's secret and a call count in globals: an
//! instance that served an earlier call would give it away.

use crate::support::*;
use serde_json::{Value, json};
use std::time::Duration;
use toolhost::{Core, Scope};

async fn core_with_prewarm(path: &std::path::Path, n: u32) -> Core {
    let core = Core::builder()
        .config(test_config().with_prewarm(n))
        .source(Scope::default(), path)
        .build()
        .await
        .unwrap();
    assert!(core.load_errors().is_empty(), "{:?}", core.load_errors());
    core
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

#[tokio::test]
async fn with_prewarm_off_nothing_is_prepared() {
    let d = ToolDir::new();
    d.add("hostile", "hostile", "");
    let core = core_with_prewarm(d.path(), 0).await;
    for i in 0..5 {
        assert_eq!(
            remember(&core, &format!("s{i}")).await,
            json!({ "calls": 0, "before": null })
        );
        tokio::task::yield_now().await;
    }
    let stats = core.prewarm_stats();
    assert_eq!((stats.hits, stats.ready), (0, 0), "{stats:?}");
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
    let core = Core::builder()
        .config(test_config().with_prewarm(8))
        .source(Scope::default(), d.path())
        .build()
        .await
        .unwrap();
    assert!(core.load_errors().is_empty(), "{:?}", core.load_errors());
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
