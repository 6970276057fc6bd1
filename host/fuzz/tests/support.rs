//! What the targets share: their corpora, time budgets, and the checks on
//! diagnostics.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use toolhost::{Core, Diagnostics, HostConfig, Scope};

/// How long a target runs under `cargo test` unless
/// `BOLERO_RANDOM_TEST_TIME_MS` says otherwise (`make fuzz` does).
pub fn budget(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// The committed corpus of `target`: bolero replays every file, and the
/// targets use them as the seeds their scripts edit.
pub fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/__fuzz__")
        .join(target)
        .join("corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} has no seeds", dir.display());
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// The corpus as text (seeds of text formats are UTF-8).
pub fn text_corpus(target: &str) -> Vec<String> {
    corpus(target)
        .into_iter()
        .map(|b| String::from_utf8(b).expect("a text seed is UTF-8"))
        .collect()
}

/// Check what a parser of a file format returned for `text`: an error is
/// a non-empty list of diagnostics, each within the file, and (when
/// `located`) each with a line unless it is about the file as a whole.
pub fn check_diagnostics<T>(text: &str, result: Result<T, Diagnostics>, located: bool) {
    let Err(d) = result else { return };
    assert!(!d.items.is_empty(), "an error without a diagnostic");
    let lines = text.split('\n').count();
    for item in &d.items {
        match item.line {
            Some(l) => {
                assert!((1..=lines).contains(&l), "line {l} of {lines}: {item}");
                let c = item.column.expect("a line comes with a column");
                assert!(c >= 1, "{item}");
                assert!(item.source_line.is_some(), "{item}");
            }
            None if located => assert!(
                FILE_LEVEL.iter().any(|m| item.message.starts_with(m)),
                "a diagnostic without a line: {item}\n--- input ---\n{text}"
            ),
            None => {}
        }
    }
    let _ = d.render();
    let _ = d.to_string();
}

/// Diagnostics about a file as a whole, which have no line to point at.
const FILE_LEVEL: &[&str] = &["missing `[component]`"];

/// A scratch directory: `tools/echo.wasm` with a manifest pinning it, and the
/// files and directories the seeds name (`data/`, `keys/acme.pub`,
/// `auth/jwks.json`).
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        for d in ["data", "out", "keys", "auth", "tools"] {
            std::fs::create_dir(p.join(d)).unwrap();
        }
        std::fs::write(p.join("keys/acme.pub"), "not a key").unwrap();
        std::fs::write(p.join("auth/jwks.json"), r#"{"keys": []}"#).unwrap();
        let wasm = p.join("tools/echo.wasm");
        std::fs::copy(toolhost_artifacts::ECHO, &wasm).unwrap();
        std::fs::write(p.join("tool.wasm"), b"").unwrap();
        std::fs::write(
            p.join("tools/echo.toml"),
            format!(
                "[component]\npath = \"echo.wasm\"\nsha256 = \"{}\"\n[limits]\ntimeout = \"5s\"\nmemory = \"16 MiB\"\n",
                sha256_hex(&std::fs::read(&wasm).unwrap())
            ),
        )
        .unwrap();
        Scratch { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A core serving `echo` (from a fresh scratch directory) in the default
/// scope, and `more` sources, without a compile cache: what `toolhost
/// serve` would build.
pub async fn echo_core(more: &[(Scope, PathBuf)]) -> (Core, Scratch) {
    let scratch = Scratch::new();
    let mut b = Core::builder()
        .config(HostConfig::default().with_cache_dir(None))
        .source(Scope::default(), scratch.path().join("tools"));
    for (scope, path) in more {
        std::fs::create_dir_all(path).unwrap();
        b = b.source(scope.clone(), path);
    }
    let core = b.build().await.unwrap();
    assert!(core.load_errors().is_empty(), "{:?}", core.load_errors());
    (core, scratch)
}

/// A multi-threaded runtime for the async targets.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
