//! Placeholder for the conformance tools (written separately): an empty
//! toolbox, so that the workspace resolves until the real crate lands.

/// The tools this component offers: none yet.
pub fn tools() -> toolhost_guest::Toolbox {
    toolhost_guest::Toolbox::new()
}

// Component exports exist only in the wasm build: their symbol names break
// native cdylib linking, and native users (tests, benchmarks) call `tools()`.
#[cfg(target_arch = "wasm32")]
toolhost_guest::export!(tools);
