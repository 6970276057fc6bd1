//! The `toolhost` binary: argument parsing and printing only; every command
//! goes through the library's `Core`.

mod agent_cli;
mod audit_cli;
mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
