//! The `toolhost` binary: argument parsing and printing only; every command
//! goes through the library's `Core` (packages: `toolhost-package`).

mod agent_cli;
mod audit_cli;
mod cli;
mod log;
#[cfg(feature = "otel")]
mod otel;
mod package_cli;

/// mimalloc (in its hardened `secure` mode), not glibc's malloc: under many
/// concurrent requests the runtime's worker threads contended for glibc's
/// arenas, and allocation was a quarter of the HTTP path's CPU
/// (BENCHMARKS.md, "MCP round trip"). The library leaves the allocator to
/// its embedder.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Freed memory goes back to the OS at once, as glibc's does, rather than
/// after mimalloc's default of a second: with it, and without transparent
/// huge pages (the `no_thp` feature), an idle server holds about what it
/// did with glibc (+60% otherwise; BENCHMARKS.md), at no cost in calls/s.
/// Set as the default, so an operator's `MIMALLOC_PURGE_DELAY` (however
/// spelled, or its old name) still wins.
fn tune_allocator() {
    // `mi_option_purge_delay` in the mimalloc.h of the pinned
    // libmimalloc-sys 0.1.49 (its Rust bindings do not name it).
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: mimalloc's options are plain globals, written here before
    // any thread of ours exists (the first thing `main` does); any value
    // is valid for this one.
    unsafe { libmimalloc_sys::mi_option_set_default(PURGE_DELAY, 0) }
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    cli::main()
}
