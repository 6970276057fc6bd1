//! Typed errors of the agent transport: what failed talking to the `claude`
//! CLI, with what the user can do about it.

use std::path::PathBuf;

/// The command that installs the pinned CLI into the project (see
/// `scripts/install-claude-cli.sh`).
pub const INSTALL_HINT: &str =
    "make claude-cli (npm install --prefix .claude-cli @anthropic-ai/claude-code@2.1.330)";

/// Why an agent session failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No `claude` executable was found anywhere we looked.
    #[error(
        "claude CLI not found (tried: {}); install it with `{INSTALL_HINT}` and pass --cli PATH or set TOOLHOST_CLAUDE_CLI",
        tried.join(", ")
    )]
    CliNotFound { tried: Vec<String> },
    /// The executable exists but could not be started.
    #[error("cannot start the claude CLI at {}: {source}", path.display())]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The CLI exited before the session was over (or with a failure code).
    #[error("the claude CLI exited ({}){}", code.map_or("killed by a signal".to_string(), |c| format!("code {c}")), if stderr.is_empty() { String::new() } else { format!("; its stderr ends with:\n{stderr}") })]
    ProcessExited { code: Option<i32>, stderr: String },
    /// A line on the CLI's stdout was not JSON.
    #[error("the claude CLI printed a line that is not JSON ({source}): {line}")]
    JsonDecode {
        line: String,
        source: serde_json::Error,
    },
    /// A line on the CLI's stdout exceeded the configured bound.
    #[error("the claude CLI printed a line longer than {limit} bytes; it was skipped")]
    LineTooLong { limit: usize },
    /// The peer broke the control protocol.
    #[error("control protocol error: {0}")]
    Protocol(String),
    /// A control request we sent was answered with an error.
    #[error("control request `{subtype}` failed: {message}")]
    ControlFailed { subtype: String, message: String },
    /// A control request we sent got no answer in time.
    #[error("control request `{subtype}` got no reply within {secs} s")]
    ControlTimeout { subtype: String, secs: u64 },
    /// The session was closed (or the CLI went away) before this completed.
    #[error("the agent session is closed")]
    Closed,
    /// Options that cannot work together, or that name unknown things.
    #[error("invalid agent options: {0}")]
    Options(String),
    #[error("i/o error talking to the claude CLI: {0}")]
    Io(#[from] std::io::Error),
}
