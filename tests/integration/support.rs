//! Shared fixtures: where the built components are, and scratch tool
//! directories with manifests written for one test.

#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use toolhost::{CallRequest, Core, HostConfig, Scope, ToolOutput};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A component built by `make tools`: `build/tools/NAME.wasm`,
/// `build/test-tools/NAME.wasm` or `build/conformance-tools/NAME.wasm`.
pub fn component(name: &str) -> PathBuf {
    for dir in ["build/tools", "build/test-tools", "build/conformance-tools"] {
        let p = root().join(dir).join(format!("{name}.wasm"));
        if p.is_file() {
            return p;
        }
    }
    panic!("component `{name}` is not built: run `make tools` first");
}

/// The deployed example tools directory (with manifests).
pub fn tools_dir() -> PathBuf {
    let d = root().join("build/tools");
    assert!(d.join("echo.toml").is_file(), "run `make tools` first");
    d
}

pub fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// A scratch directory holding one or more tools with hand-written manifests.
pub struct ToolDir {
    pub dir: tempfile::TempDir,
}

impl ToolDir {
    pub fn new() -> ToolDir {
        ToolDir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copy component `name` in as `file.wasm` and write `file.toml` whose
    /// `[component]` pins it, followed by `extra` (more manifest TOML).
    pub fn add(&self, file: &str, name: &str, extra: &str) -> PathBuf {
        let wasm = self.path().join(format!("{file}.wasm"));
        std::fs::copy(component(name), &wasm).unwrap();
        let manifest = self.path().join(format!("{file}.toml"));
        std::fs::write(
            &manifest,
            format!(
                "[component]\npath = \"{file}.wasm\"\nsha256 = \"{}\"\n\n{extra}\n",
                sha256_hex(&wasm)
            ),
        )
        .unwrap();
        manifest
    }

    /// Write a raw manifest file.
    pub fn write(&self, file: &str, text: &str) -> PathBuf {
        let p = self.path().join(file);
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// Host config for tests: a shared compile cache under target/.
pub fn test_config() -> HostConfig {
    HostConfig {
        cache_dir: Some(root().join("target/test-cache")),
        ..HostConfig::default()
    }
}

/// A core over `path` in the default scope; panics on per-tool load errors
/// unless `allow_errors`.
pub async fn core(path: &Path) -> Core {
    let core = Core::builder()
        .config(test_config())
        .source(Scope::default(), path)
        .build(&|_| {})
        .await
        .unwrap();
    assert!(
        core.load_errors().is_empty(),
        "load errors: {:?}",
        core.load_errors()
    );
    core
}

pub fn args(v: serde_json::Value) -> Option<serde_json::Map<String, serde_json::Value>> {
    match v {
        serde_json::Value::Object(m) => Some(m),
        _ => panic!("arguments must be an object"),
    }
}

pub async fn call(
    core: &Core,
    tool: &str,
    a: serde_json::Value,
) -> Result<ToolOutput, toolhost::CallError> {
    core.call(CallRequest::new(Scope::default(), tool, args(a)))
        .await
}
