#!/bin/sh
# rustdoc with `-Z` options allowed (RUSTC_BOOTSTRAP=1), for the rustdoc
# JSON of `make check-api`; cargo calls it as $RUSTDOC.
#
# Only rustdoc sees RUSTC_BOOTSTRAP: set for the whole cargo run, the build
# scripts that probe for a nightly compiler (proc-macro2, anyhow, ...) re-run
# with it, and every crate above them is checked again (about 4 minutes of
# CI for nothing).
RUSTC_BOOTSTRAP=1 exec rustdoc "$@"
