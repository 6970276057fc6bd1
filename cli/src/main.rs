//! The `toolhost` binary: argument parsing and printing only; every command
//! goes through the library's `Core` (packages: `toolhost-package`).

mod agent_cli;
mod audit_cli;
mod cli;
#[cfg(feature = "otel")]
mod otel;
mod package_cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
