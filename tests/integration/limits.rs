//! Every limit stops a hostile guest with a precise error naming the tool and
//! the limit, and the same host serves a normal call right after.

use crate::support::*;
use serde_json::json;
use std::time::Duration;
use toolhost::CancellationToken;
use toolhost::{CallErrorKind, CallRequest, Core, Scope};

/// A host with the hostile fixture (under `limits`) and echo.
async fn host(limits: &str) -> (ToolDir, Core) {
    let d = ToolDir::new();
    d.add("hostile", "hostile", &format!("[limits]\n{limits}\n"));
    d.add("echo", "echo", "");
    let core = core(d.path()).await;
    (d, core)
}

/// The host still works: a normal call right after the failure succeeds.
async fn still_serves(core: &Core) {
    let out = call(core, "echo", json!({"text": "still here"}))
        .await
        .expect("a normal call after a failure must succeed");
    assert_eq!(out.text(), "still here");
}

#[tokio::test]
async fn infinite_loop_is_stopped_by_the_deadline() {
    let (_d, core) = host("timeout = \"300ms\"").await;
    let err = call(&core, "spin", json!({})).await.unwrap_err();
    assert!(
        matches!(err.kind(), CallErrorKind::Timeout { after } if err.tool() == "spin" && *after == Duration::from_millis(300)),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "tool `spin` timed out after 300ms");
    still_serves(&core).await;
}

#[tokio::test]
async fn infinite_loop_is_stopped_by_fuel() {
    let (_d, core) = host("timeout = \"30s\"\nfuel = 50_000_000").await;
    let err = call(&core, "spin", json!({})).await.unwrap_err();
    assert!(
        matches!(
            err.kind(),
            CallErrorKind::FuelExhausted { fuel: 50_000_000 }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("ran out of fuel"), "{err}");
    // Fuel is per call, not per host: the next call starts with a full tank.
    let ok = call(&core, "sleep", json!({"ms": 0})).await.unwrap();
    assert_eq!(ok.text(), "slept");
    still_serves(&core).await;
}

#[tokio::test]
async fn memory_bomb_is_stopped_at_the_limit() {
    let (_d, core) = host("memory = \"16 MiB\"").await;
    let err = call(&core, "alloc", json!({"mib": 64})).await.unwrap_err();
    assert!(
        matches!(err.kind(), CallErrorKind::MemoryExhausted { limit } if *limit == 16 << 20),
        "{err:?}"
    );
    assert!(err.to_string().contains("memory limit of 16 MiB"), "{err}");
    // A guest that handles the refusal itself reports a tool error instead.
    let err = call(&core, "alloc", json!({"mib": 64, "graceful": true}))
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), CallErrorKind::ToolFailed { .. }),
        "{err:?}"
    );
    // Within the limit it works.
    assert_eq!(
        call(&core, "alloc", json!({"mib": 4}))
            .await
            .unwrap()
            .text(),
        "allocated 4 MiB"
    );
    still_serves(&core).await;
}

/// Calls that each stay under their own memory limit cannot together take
/// the host's memory (`[engine] max-memory`), nor one tenant more than its
/// share of it: past either, growth is refused with an error naming the
/// shared bound, while another tenant's calls still get memory. Memory is
/// charged as it grows, so small calls are not held back by large limits,
/// and it is given back when a call ends.
#[tokio::test]
async fn calls_under_their_own_limits_cannot_together_take_the_hosts_memory() {
    // The host: 128 MiB for all calls; each scope three quarters (96 MiB).
    let mut config = test_config().with_max_memory(128 << 20);
    config.caps.limits.pool_share = 0.75;
    let (alpha, beta) = (ToolDir::new(), ToolDir::new());
    for d in [&alpha, &beta] {
        d.add(
            "hostile",
            "hostile",
            "[limits]\nmemory = \"80 MiB\"\ntimeout = \"30s\"\n",
        );
    }
    beta.add("echo", "echo", "");
    let core = Core::builder()
        .config(config)
        .source(Scope::new("alpha"), alpha.path())
        .source(Scope::new("beta"), beta.path())
        .build()
        .await
        .unwrap();
    assert!(core.load_errors().is_empty(), "{:?}", core.load_errors());
    let alloc = |scope: &str, mib: u32, hold_ms: u64| {
        let req = CallRequest::new(
            Scope::new(scope),
            "alloc",
            args(json!({"mib": mib, "hold_ms": hold_ms})),
        );
        let core = core.clone();
        async move { core.call(req).await }
    };
    // A call holding 56 MiB for 5 s, and the time it takes to hold it.
    let hold = |scope: &'static str| tokio::spawn(alloc(scope, 56, 5_000));
    let settle = || tokio::time::sleep(Duration::from_millis(700));

    // alpha holds 56 MiB; a second alpha call of 56 is within its own 80
    // and the host's 128, but not within alpha's 96.
    let held = hold("alpha");
    settle().await;
    let err = alloc("alpha", 56, 0).await.unwrap_err();
    assert!(
        matches!(err.kind(), CallErrorKind::SharedMemoryExhausted { limit, share: true } if *limit == 96 << 20),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("its tenant together hold their share"),
        "{err}"
    );
    // beta still gets its memory: 56 + 56 fits the host's 128.
    assert_eq!(
        alloc("beta", 56, 0).await.unwrap().text(),
        "allocated 56 MiB"
    );
    assert_eq!(held.await.unwrap().unwrap().text(), "allocated 56 MiB");

    // alpha and beta hold 56 MiB each; a beta call of 24 is within its
    // own limit and beta's share, but the host has about 16 MiB left.
    let (held_alpha, held_beta) = (hold("alpha"), hold("beta"));
    settle().await;
    let err = alloc("beta", 24, 0).await.unwrap_err();
    assert!(
        matches!(err.kind(), CallErrorKind::SharedMemoryExhausted { limit, share: false } if *limit == 128 << 20),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("`[engine] max-memory` (128 MiB)"),
        "{err}"
    );
    // Small calls still fit in what is left.
    let out = core
        .call(CallRequest::new(
            Scope::new("beta"),
            "echo",
            args(json!({"text": "still here"})),
        ))
        .await
        .unwrap();
    assert_eq!(out.text(), "still here");
    held_alpha.await.unwrap().unwrap();
    held_beta.await.unwrap().unwrap();

    // Everything was given back: the 24 MiB call fits now, and a call as
    // large as the share allows.
    assert_eq!(
        alloc("beta", 24, 0).await.unwrap().text(),
        "allocated 24 MiB"
    );
    assert_eq!(
        alloc("alpha", 76, 0).await.unwrap().text(),
        "allocated 76 MiB"
    );
}

/// A component whose `describe` never returns is given up on within the
/// describe deadline (`[engine] describe-timeout`), not its own, longer
/// timeout: the others load and serve, a start waits for it at most that
/// long, and while a reload waits for one, the tools already served keep
/// answering (it spins on the guest executor, not on the threads that
/// serve calls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_describe_that_never_returns_fails_alone_within_its_deadline() {
    let d = ToolDir::new();
    d.add(
        "spinner",
        "hostile-describe",
        "[limits]\ntimeout = \"120s\"\n",
    );
    d.add("echo", "echo", "");
    let mut config = test_config();
    config.engine.describe_timeout = Duration::from_secs(1);
    let started = std::time::Instant::now();
    let core = Core::builder()
        .config(config)
        .source(Scope::default(), d.path())
        .build()
        .await
        .unwrap();
    let took = started.elapsed();
    let errors: Vec<String> = core.load_errors().iter().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("spinner.toml") && errors[0].contains("did not answer within 1s"),
        "{errors:?}"
    );
    assert!(
        took < Duration::from_secs(60),
        "the start waited {took:?}: bounded by the component's own 120 s, not describe-timeout"
    );
    still_serves(&core).await;

    // A reload that adds two more: echo answers all the while it waits.
    d.add("spinner-2", "hostile-describe", "");
    d.add("spinner-3", "hostile-describe", "");
    let reload = tokio::spawn({
        let core = core.clone();
        async move { core.reload().await }
    });
    let mut answered = 0;
    while !reload.is_finished() {
        still_serves(&core).await;
        answered += 1;
    }
    let errors = reload.await.unwrap();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        answered > 10,
        "only {answered} calls answered during the reload"
    );
    still_serves(&core).await;
}

#[tokio::test]
async fn deep_recursion_overflows_the_stack_cleanly() {
    let (_d, core) = host("").await;
    let err = call(&core, "recurse", json!({"depth": 10_000_000}))
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), CallErrorKind::StackOverflow),
        "{err:?}"
    );
    assert_eq!(
        call(&core, "recurse", json!({"depth": 100}))
            .await
            .unwrap()
            .text(),
        "recursed 100"
    );
    still_serves(&core).await;
}

#[tokio::test]
async fn guest_panic_is_a_trap_with_its_message() {
    let (_d, core) = host("").await;
    let err = call(&core, "panic", json!({"message": "boom at line 7"}))
        .await
        .unwrap_err();
    match err.kind() {
        CallErrorKind::Trap { message } => {
            assert_eq!(err.tool(), "panic");
            assert!(
                message.contains("boom at line 7"),
                "the panic message should reach the caller: {message}"
            );
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    let err = call(&core, "exit", json!({"code": 3})).await.unwrap_err();
    // Said as an exit (WASI p2 reports any failing code as 1), without
    // wasmtime's backtrace of it.
    assert!(
        matches!(err.kind(), CallErrorKind::Trap { message }
            if message.contains("the tool exited with status 1") && !message.contains("backtrace")),
        "exit mid-call is a trap: {err:?}"
    );
    still_serves(&core).await;
}

#[tokio::test]
async fn stdout_flood_is_capped_and_never_reaches_the_host() {
    let (_d, core) = host("").await;
    // 10 MiB to stdout: the capture stops at the host's cap (64 KiB); the
    // guest sees its writes fail and says so.
    let out = call(&core, "flood", json!({"bytes": 10 << 20}))
        .await
        .unwrap();
    let text = out.text();
    assert!(
        text.starts_with("flooded (stdout failed after 65536 bytes"),
        "{text}"
    );
    still_serves(&core).await;
}

#[tokio::test]
async fn oversized_result_is_refused() {
    let (_d, core) = host("max-output = \"64 KiB\"").await;
    let err = call(&core, "big_output", json!({"bytes": 100_000}))
        .await
        .unwrap_err();
    assert!(
        // The text, plus the fixed weight of one content block.
        matches!(
            err.kind(),
            CallErrorKind::OutputTooLarge {
                size: 100_048,
                limit: 65_536,
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        call(&core, "big_output", json!({"bytes": 60_000}))
            .await
            .unwrap()
            .text()
            .len(),
        60_000
    );
    still_serves(&core).await;
}

/// The review's case: a tool's error text reaches the client as a result's
/// does (and a task keeps it), so `max-output` bounds it too. Before, a
/// `failed` error of any size passed (a 100 KB one under a 1 KiB limit).
#[tokio::test]
async fn an_oversized_tool_error_is_refused_like_an_oversized_result() {
    let (_d, core) = host("max-output = \"1 KiB\"").await;
    let long = "x".repeat(100_000);
    let err = call(&core, "read_path", json!({ "path": long }))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            CallErrorKind::OutputTooLarge { size, limit: 1024 } if *size > 100_000
        ),
        "{err:?}"
    );
    // A short error still reaches the caller as the tool's failure.
    let err = call(&core, "read_path", json!({"path": "/nowhere"}))
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), CallErrorKind::ToolFailed { message } if message.contains("/nowhere")),
        "{err:?}"
    );
    still_serves(&core).await;
}

#[tokio::test]
async fn result_violating_the_output_schema_is_refused() {
    let (_d, core) = host("").await;
    let err = call(&core, "bad_output", json!({})).await.unwrap_err();
    match err.kind() {
        CallErrorKind::BadResult { details } => {
            assert_eq!(err.tool(), "bad_output");
            assert!(details.contains("violates the output schema"), "{details}");
            assert!(
                details.contains("count"),
                "the offending field is named: {details}"
            );
        }
        other => panic!("expected BadResult, got {other:?}"),
    }
    still_serves(&core).await;
}

/// The review's case: a tool chooses both its output schema and its
/// result, and the result's check ran on a thread that reads and answers
/// requests, for as long as it took (2,000 `anyOf` branches an item, and
/// as many items as fit `max-output`). Now a check is bounded by the
/// schema's factor times the result's size: a result within the bound is
/// checked (off the I/O threads when large), one past it is refused
/// without being checked, and the host answers on.
#[tokio::test]
async fn a_result_too_costly_to_check_is_refused_unchecked() {
    let (_d, core) = host("").await;
    let ok = call(&core, "wide_output", json!({"bytes": 3000}))
        .await
        .unwrap();
    assert_eq!(
        ok.structured.as_ref().unwrap()["r"]
            .as_array()
            .unwrap()
            .len(),
        3000
    );
    let t = std::time::Instant::now();
    let err = call(&core, "wide_output", json!({"bytes": 200_000}))
        .await
        .unwrap_err();
    match err.kind() {
        CallErrorKind::BadResult { details } => {
            assert!(details.contains("too large to check"), "{details}")
        }
        other => panic!("expected BadResult, got {other:?}"),
    }
    // Refused by counting, not by checking 200,000 items against 2,000
    // branches each (minutes).
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    still_serves(&core).await;
}

/// A review's case: a structured result is parsed into a tree many times
/// its text (7 MB of small objects held 400 MiB) that no bound counted.
/// Its weight is charged to the call's memory while it is made: a result
/// within `max-output` whose tree would not fit is refused, and one that
/// fits is served.
#[tokio::test]
async fn a_structured_result_is_charged_to_the_calls_memory_as_parsed() {
    let (_d, core) = host("memory = \"48 MiB\"\nmax-output = \"8 MiB\"").await;
    let ok = call(&core, "wide_output", json!({"bytes": 3_000}))
        .await
        .unwrap();
    assert_eq!(ok.structured.unwrap()["r"].as_array().unwrap().len(), 3_000);
    // 2 MB of text, a million values: 64 MB once parsed.
    let err = call(&core, "wide_output", json!({"bytes": 1_000_000}))
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), CallErrorKind::MemoryExhausted { limit } if *limit == 48 << 20),
        "{err:?}"
    );
    assert!(err.to_string().contains("raise `limits.memory`"), "{err}");
    still_serves(&core).await;
}

#[tokio::test]
async fn arguments_violating_the_input_schema_never_reach_the_guest() {
    let d = ToolDir::new();
    let out = tempfile::tempdir().unwrap();
    d.add(
        "hostile",
        "hostile",
        &format!(
            "[[fs]]\nguest = \"/out\"\nhost = \"{}\"\nmode = \"rw\"\n",
            out.path().display()
        ),
    );
    d.add("echo", "echo", "");
    let core = core(d.path()).await;
    // `content` must be a string: the schema check refuses the call, so the
    // guest never runs and the file is never written.
    let err = call(
        &core,
        "write_path",
        json!({"path": "/out/x.txt", "content": 5}),
    )
    .await
    .unwrap_err();
    match err.kind() {
        CallErrorKind::InvalidArguments { details } => {
            assert_eq!(err.tool(), "write_path");
            assert!(
                details.contains("/content"),
                "the pointer to the bad value is given: {details}"
            );
        }
        other => panic!("expected InvalidArguments, got {other:?}"),
    }
    assert!(
        !out.path().join("x.txt").exists(),
        "the guest must not have run"
    );
    // Missing required argument, and unknown extra argument.
    let err = call(&core, "echo", json!({})).await.unwrap_err();
    assert!(
        matches!(err.kind(), CallErrorKind::InvalidArguments { .. })
            && err.to_string().contains("text"),
        "{err}"
    );
    // The same call with good arguments does run.
    call(
        &core,
        "write_path",
        json!({"path": "/out/x.txt", "content": "five"}),
    )
    .await
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(out.path().join("x.txt")).unwrap(),
        "five"
    );
    still_serves(&core).await;
}

#[tokio::test]
async fn unknown_tool_is_reported_as_such() {
    let (_d, core) = host("").await;
    let err = call(&core, "no_such_tool", json!({})).await.unwrap_err();
    assert!(matches!(err.kind(), CallErrorKind::UnknownTool));
    assert_eq!(err.to_string(), "unknown tool `no_such_tool`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_call_does_not_block_other_calls() {
    // The runaway's timeout leaves a loaded machine room for the fifty.
    let (_d, core) = host("timeout = \"10s\"\nmax-concurrency = 4").await;
    let spinning = {
        let core = core.clone();
        tokio::spawn(async move { call(&core, "spin", json!({})).await })
    };
    // While one guest burns CPU, many short calls complete.
    for i in 0..50 {
        let out = call(&core, "echo", json!({"text": format!("n{i}")}))
            .await
            .unwrap();
        assert_eq!(out.text(), format!("n{i}"));
    }
    assert!(
        !spinning.is_finished(),
        "the echo calls finished while the runaway call was still running"
    );
    assert!(matches!(
        spinning.await.unwrap(),
        Err(e) if matches!(e.kind(), CallErrorKind::Timeout { .. })
    ));
}

/// Cancelling stops a guest that never looks (`spin`) and one that polls
/// `cancelled()` and returns (`spin_checked`) alike: the caller gets
/// `Cancelled`, not what the guest returned, and the slot is free at once.
#[tokio::test]
async fn cancellation_stops_the_guest_and_frees_its_slot() {
    let (_d, core) = host("timeout = \"60s\"\nmax-concurrency = 1").await;
    for tool in ["spin", "spin_checked"] {
        let cancel = CancellationToken::new();
        let req = CallRequest::new(Scope::default(), tool, args(json!({}))).cancel(cancel.clone());
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            c2.cancel();
        });
        let err = core.call(req).await.unwrap_err();
        assert!(
            matches!(err.kind(), CallErrorKind::Cancelled),
            "{tool}: {err:?}"
        );
        // max-concurrency = 1: if the cancelled guest still held its slot
        // this would wait for the 60 s timeout.
        let ok = tokio::time::timeout(
            Duration::from_secs(10),
            call(&core, "sleep", json!({"ms": 1})),
        )
        .await;
        assert_eq!(
            ok.expect("slot was freed").unwrap().text(),
            "slept",
            "{tool}"
        );
    }
}

#[tokio::test]
async fn progress_and_logs_reach_the_caller_in_order() {
    let (_d, core) = host("").await;
    let (tx, mut rx) = toolhost::EventSink::channel(64);
    let out = core
        .call(
            CallRequest::new(
                Scope::default(),
                "log_and_progress",
                args(json!({"steps": 3, "ms": 1})),
            )
            .events(tx),
        )
        .await
        .unwrap();
    assert!(!out.text().is_empty());
    let mut progress = Vec::new();
    let mut logs = 0;
    while let Some(ev) = rx.recv().await {
        match ev {
            toolhost::CallEvent::Progress {
                progress: p, total, ..
            } => {
                assert_eq!(total, Some(3.0));
                progress.push(p);
            }
            toolhost::CallEvent::Log { .. } => logs += 1,
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(progress, vec![1.0, 2.0, 3.0]);
    assert!(logs >= 3, "one log per step, got {logs}");
}

/// A review's case: a tenant's `output-bytes-per-minute` counted a call's
/// result only; its events (up to the event budget) and its questions to
/// the client (up to `max-requests` of 256 KiB each) were sent free. A call
/// of 40 logged steps and a short result overdraws 4 KiB; the next waits.
#[tokio::test]
async fn events_count_against_a_tenants_output_quota() {
    let d = ToolDir::new();
    d.add("hostile", "hostile", "");
    let cfg = tempfile::tempdir().unwrap();
    std::fs::create_dir(cfg.path().join("t")).unwrap();
    let text = format!(
        "[[tenant]]\nname = \"quiet\"\ntools = [\"t/\"]\ntoken-sha256 = [\"{}\"]\noutput-bytes-per-minute = \"4 KiB\"\n",
        "ab".repeat(32)
    );
    let config = toolhost::HostConfig::parse(&cfg.path().join("toolhost.toml"), &text)
        .unwrap()
        .with_cache_dir(Some(root().join("target/test-cache")));
    let core = Core::builder()
        .config(config)
        .source(Scope::new("quiet"), d.path())
        .build()
        .await
        .unwrap();
    let run = || {
        let (tx, rx) = toolhost::EventSink::channel(1024);
        let call = core.call(
            CallRequest::new(
                Scope::new("quiet"),
                "log_and_progress",
                args(json!({"steps": 40, "ms": 0})),
            )
            .events(tx),
        );
        async move {
            let out = call.await;
            drop(rx);
            out
        }
    };
    let first = run().await.unwrap();
    assert!(first.text().len() < 200, "{}", first.text());
    let e = run().await.unwrap_err();
    assert!(matches!(e.kind(), CallErrorKind::OverQuota { .. }), "{e:#}");
}
