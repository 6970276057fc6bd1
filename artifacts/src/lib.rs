//! The guest tools of `example-tools/`, built for `wasm32-wasip2` by this
//! crate's build script: `cargo test` needs nothing but
//! `rustup target add wasm32-wasip2`.
//!
//! Each constant is the path of a component; [`foreach_hostile!`] lists the
//! tools of the `hostile` fixture so a test suite can require a test for
//! each.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
