//! Typed errors of the agent transport: what failed talking to the `claude`
//! CLI, with what the user can do about it.

use super::process::{CLI_ENV, PINNED_CLI_VERSION};
use std::path::PathBuf;

/// Why an agent session failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// No `claude` executable was found anywhere we looked.
    #[error(
        "claude CLI not found (tried: {}); install @anthropic-ai/claude-code@{PINNED_CLI_VERSION} (npm) and name it with AgentOptions::cli or ${CLI_ENV}",
        tried.join(", ")
    )]
    CliNotFound {
        /// Every place looked at, in order.
        tried: Vec<String>,
    },
    /// The executable, or the directory it runs from, is where a tool was
    /// granted read-write (in this process): the tool could have replaced
    /// what the host would run outside any sandbox.
    #[error(
        "the claude CLI at {} is not started: a tool was granted read-write access to {}, which could have replaced it; install the CLI where no tool may write",
        path.display(),
        writable.display()
    )]
    CliWritable {
        /// The executable.
        path: PathBuf,
        /// The directory granted read-write.
        writable: PathBuf,
    },
    /// The directory the CLI keeps its settings and credentials in (its
    /// `CLAUDE_CONFIG_DIR`, or `.claude` under its `HOME`, as the session
    /// sets them) is where a tool was granted read-write: the tool could
    /// have written the CLI's settings (hooks: commands it runs).
    #[error(
        "the claude CLI is not started: its settings directory {} is where a tool was granted read-write access ({}), so a tool could write its settings (hooks the CLI runs); give the session a CLAUDE_CONFIG_DIR or HOME no tool may write",
        config.display(),
        writable.display()
    )]
    ConfigWritable {
        /// The CLI's settings directory.
        config: PathBuf,
        /// The directory granted read-write.
        writable: PathBuf,
    },
    /// The executable exists but could not be started.
    #[error("cannot start the claude CLI at {}: {source}", path.display())]
    Spawn {
        /// The executable.
        path: PathBuf,
        /// Why it did not start.
        source: std::io::Error,
    },
    /// The CLI exited before the session was over (or with a failure code).
    #[error("the claude CLI exited ({}){}", code.map_or("killed by a signal".to_string(), |c| format!("code {c}")), if stderr.is_empty() { String::new() } else { format!("; its stderr ends with:\n{stderr}") })]
    ProcessExited {
        /// Its exit code (`None`: killed by a signal).
        code: Option<i32>,
        /// The end of its stderr.
        stderr: String,
    },
    /// A line on the CLI's stdout was not JSON.
    #[error("the claude CLI printed a line that is not JSON ({source}): {line}")]
    JsonDecode {
        /// The line.
        line: String,
        /// Why it did not parse.
        source: serde_json::Error,
    },
    /// A message of the CLI's would hold more memory, parsed, than the
    /// session keeps for messages not yet taken; it was skipped.
    #[error(
        "the claude CLI wrote a message of {weight} bytes as parsed (each JSON value counting 64), more than the {limit} a session holds of messages not yet taken; it was skipped"
    )]
    MessageTooLarge {
        /// What it weighs.
        weight: usize,
        /// The bound.
        limit: usize,
    },
    /// A line on the CLI's stdout exceeded the configured bound.
    #[error("the claude CLI printed a line longer than {limit} bytes; it was skipped")]
    LineTooLong {
        /// The bound, in bytes.
        limit: usize,
    },
    /// The peer broke the control protocol.
    #[error("control protocol error: {0}")]
    Protocol(String),
    /// A control request we sent was answered with an error.
    #[error("control request `{subtype}` failed: {message}")]
    ControlFailed {
        /// The request's subtype (`initialize`, `interrupt`, …).
        subtype: String,
        /// The CLI's error message.
        message: String,
    },
    /// A control request we sent got no answer in time.
    #[error("control request `{subtype}` got no reply within {secs} s")]
    ControlTimeout {
        /// The request's subtype.
        subtype: String,
        /// How long we waited.
        secs: u64,
    },
    /// The session was closed (or the CLI went away) before this completed.
    #[error("the agent session is closed")]
    Closed,
    /// Options that cannot work together, or that name unknown things.
    #[error("invalid agent options: {0}")]
    Options(String),
    /// A rule file (`RuleFile::load`) could not be read or parsed.
    #[error("rule file {}: {message}", path.display())]
    RuleFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Reading from or writing to the CLI failed.
    #[error("i/o error talking to the claude CLI: {0}")]
    Io(#[from] std::io::Error),
}
