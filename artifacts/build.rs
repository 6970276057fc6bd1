//! Builds every guest tool in `example-tools/` for `wasm32-wasip2` (profile
//! `tools`) with a nested cargo, into `target/artifacts/` (the same place
//! `make tools` builds into, so each is compiled once), checks that each
//! is a WebAssembly component, and generates:
//! - `pub const NAME: &str`, the path of each component;
//! - `foreach_hostile!(m)`, which calls `m!(tool)` for every tool of the
//!   `hostile` fixture (read from its source), so a test suite can fail to
//!   compile when a hostile tool has no test of its own (the pattern of
//!   wasmtime's `test-programs/artifacts`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// (constant, crate, file stem) of every guest tool.
const TOOLS: &[(&str, &str, &str)] = &[
    ("ECHO", "toolhost-tool-echo", "toolhost_tool_echo"),
    ("TEXT", "toolhost-tool-text", "toolhost_tool_text"),
    ("FILES", "toolhost-tool-files", "toolhost_tool_files"),
    ("WRITER", "toolhost-tool-writer", "toolhost_tool_writer"),
    ("FETCH", "toolhost-tool-fetch", "toolhost_tool_fetch"),
    ("PROMPTS", "toolhost-tool-prompts", "toolhost_tool_prompts"),
    (
        "CONFORMANCE",
        "toolhost-tool-conformance",
        "toolhost_tool_conformance",
    ),
    ("HOSTILE", "toolhost-tool-hostile", "toolhost_tool_hostile"),
    (
        "HOSTILE_DESCRIBE",
        "toolhost-tool-hostile-describe",
        "toolhost_tool_hostile_describe",
    ),
    (
        "TYPED_KITCHEN_SINK",
        "toolhost-tool-typed-kitchen-sink",
        "toolhost_tool_typed_kitchen_sink",
    ),
];

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap())
        .parent()
        .unwrap()
        .to_path_buf();
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let target_dir = root.join("target/artifacts");
    for dir in ["example-tools", "guest-sdk", "wit"] {
        rerun_if_changed(&root.join(dir));
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        // `--locked`: the crates Cargo.lock names, which the outer build
        // has resolved (and written) before it runs this script.
        .args([
            "build",
            "--locked",
            "--profile",
            "tools",
            "--target",
            "wasm32-wasip2",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        // Its own build directory too: the outer build holds the lock on
        // whatever build directory it uses.
        .env("CARGO_BUILD_BUILD_DIR", &target_dir);
    for (_, krate, _) in TOOLS {
        cmd.args(["-p", krate]);
    }
    // The outer build's flags are for the host, not for wasm.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("cannot run cargo to build the guest tools");
    if !status.success() {
        panic!(
            "building the guest tools for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)"
        );
    }

    let built = target_dir.join("wasm32-wasip2/tools");
    let mut code = String::new();
    for (name, _, stem) in TOOLS {
        let path = built.join(format!("{stem}.wasm"));
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{} was not built: {e}", path.display()));
        // A component starts `\0asm` then version 0x0d, layer 0x01.
        assert_eq!(
            bytes.get(..8),
            Some(&[0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00][..]),
            "{} is not a WebAssembly component",
            path.display()
        );
        code.push_str(&format!(
            "/// The `{stem}` component.\npub const {name}: &str = {:?};\n",
            path.display().to_string()
        ));
    }

    let hostile = std::fs::read_to_string(root.join("example-tools/hostile/src/lib.rs"))
        .expect("example-tools/hostile/src/lib.rs");
    let names = tool_names(&hostile);
    assert!(!names.is_empty(), "no tools found in the hostile fixture");
    code.push_str(
        "/// Calls `$mac!(tool)` for every tool of the `hostile` fixture.\n#[macro_export]\nmacro_rules! foreach_hostile {\n    ($mac:ident) => {\n",
    );
    for n in &names {
        code.push_str(&format!("        $mac!({n});\n"));
    }
    code.push_str("    };\n}\n");
    std::fs::write(out.join("artifacts.rs"), code).unwrap();
}

/// The names in `Tool::new("name", ...)` calls (the name may be on the
/// next line).
fn tool_names(src: &str) -> Vec<String> {
    let mut names = Vec::new();
    let marker = "Tool::new(";
    let mut rest = src;
    while let Some(i) = rest.find(marker) {
        rest = rest[i + marker.len()..].trim_start();
        let Some(quoted) = rest.strip_prefix('"') else {
            continue;
        };
        if let Some(end) = quoted.find('"') {
            let name = &quoted[..end];
            if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !names.iter().any(|n| n == name)
            {
                names.push(name.to_string());
            }
        }
    }
    names
}

fn rerun_if_changed(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| {
            ["target", "data", "__pycache__", "node_modules"]
                .iter()
                .any(|s| n == *s)
        }) {
            continue;
        }
        if p.is_dir() {
            rerun_if_changed(&p);
        } else {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
}
