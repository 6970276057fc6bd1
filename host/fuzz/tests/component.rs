//! Target `component_load`: component bytes through the host's own load
//! path. A tools directory holds a mutated `echo` (or typed kitchen sink)
//! with a manifest pinning the mutated bytes; `Core::reload` (what hot
//! reload runs) reads, verifies, validates, compiles and describes it with
//! the compile cache off. The load must end in a tool or a typed
//! `LoadError`, never a panic or an abort, and the intact `echo` beside it
//! must still answer afterwards.
//!
//! Compiling is costly, so this target runs for a few seconds under
//! `cargo test` (most mutations fail validation early and are cheap; the
//! ones that survive are compiled in full).

use crate::support::{budget, corpus, echo_core, runtime, sha256_hex};
use serde_json::json;
use std::panic::AssertUnwindSafe;
use toolhost::{CallRequest, LoadErrorKind, Scope};
use toolhost_fuzz::{Script, mutate_bytes};

/// The WebAssembly preamble: an input that starts with it is loaded as it is.
const MAGIC: &[u8] = b"\0asm";

#[test]
fn component_load() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fuzzed");
    let (core, _scratch) = rt.block_on(echo_core(&[(Scope::new("fuzz"), dir.clone())]));
    let seeds = [
        std::fs::read(toolhost_artifacts::ECHO).unwrap(),
        std::fs::read(toolhost_artifacts::TYPED_KITCHEN_SINK).unwrap(),
    ];
    let donors: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
    let scripts = corpus("component_load");
    assert!(!scripts.is_empty());
    // A panic fails the test; nothing observes the core after one.
    let (rt, core) = (AssertUnwindSafe(&rt), AssertUnwindSafe(&core));
    let tally = std::sync::Mutex::new(std::collections::BTreeMap::<String, usize>::new());
    let manifest = dir.join("m.toml");
    let wasm = dir.join("m.wasm");
    bolero::check!(name = "component_load")
        .with_test_time(budget(6000))
        .for_each(|input: &[u8]| {
            let bytes = if input.starts_with(MAGIC) {
                input.to_vec()
            } else {
                let mut script = Script::new(input);
                let seed = script.pick(&seeds).expect("seeds");
                mutate_bytes(seed, &mut script, &donors)
            };
            std::fs::write(&wasm, &bytes).unwrap();
            std::fs::write(
                &manifest,
                format!(
                    "[component]\npath = \"m.wasm\"\nsha256 = \"{}\"\n[limits]\ntimeout = \"2s\"\nmemory = \"16 MiB\"\nfuel = 100000000\n",
                    sha256_hex(&bytes)
                ),
            )
            .unwrap();
            rt.block_on(async {
                let errors = core.reload().await;
                for e in &errors {
                    assert_eq!(e.manifest, manifest, "only the fuzzed tool may fail: {e}");
                    assert!(
                        !matches!(
                            e.kind,
                            LoadErrorKind::DigestMismatch { .. }
                                | LoadErrorKind::ReadComponent { .. }
                                | LoadErrorKind::Manifest(_)
                        ),
                        "the manifest pins these very bytes: {e}"
                    );
                    let _ = e.to_string();
                    *tally.lock().unwrap().entry(kind_name(&e.kind)).or_default() += 1;
                }
                if errors.is_empty() {
                    *tally.lock().unwrap().entry("loaded".to_string()).or_default() += 1;
                }
                // Whatever loaded is called like any tool: a result or a
                // typed error.
                for tool in core.tools(&Scope::new("fuzz")) {
                    let args = json!({"text": "hi"}).as_object().cloned();
                    let _ = core
                        .call(CallRequest::new(Scope::new("fuzz"), &*tool.name, args))
                        .await;
                }
                let out = core
                    .call(CallRequest::new(
                        Scope::default(),
                        "echo",
                        json!({"text": "still here"}).as_object().cloned(),
                    ))
                    .await
                    .expect("echo beside the fuzzed component still works");
                assert!(format!("{out:?}").contains("still here"), "{out:?}");
            });
        });
    eprintln!("component_load outcomes: {:?}", tally.lock().unwrap());
}

/// The variant's name, for the tally.
fn kind_name(k: &LoadErrorKind) -> String {
    let debug = format!("{k:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_string()
}
