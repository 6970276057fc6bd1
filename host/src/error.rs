//! Typed errors of the library: what failed, on which tool or file, and
//! what the user can do. Front ends map these to their protocol (an MCP
//! error or `isError` result, a CLI exit code) and may add their own hints
//! (a flag to pass); nothing here knows a front end.

use crate::caps::CapError;
use crate::diagnostic::Diagnostics;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why a tool could not be loaded. Loading the other tools carries on.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoadError {
    /// The manifest (or source path) at fault.
    pub manifest: PathBuf,
    /// What went wrong.
    pub kind: LoadErrorKind,
}

impl LoadError {
    pub(crate) fn new(manifest: &Path, kind: LoadErrorKind) -> LoadError {
        LoadError {
            manifest: manifest.to_owned(),
            kind,
        }
    }

    /// Every problem as compiler-style text (manifest diagnostics with their
    /// source lines), for `toolhost check`.
    pub fn render(&self) -> String {
        match &self.kind {
            LoadErrorKind::Manifest(d) => d.render(),
            _ => format!("error: {self}\n"),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            LoadErrorKind::ReadComponent { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// What went wrong loading a tool.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LoadErrorKind {
    /// The manifest has problems (every one of them).
    #[error("{0}")]
    Manifest(Diagnostics),
    /// The operator's caps refuse grants the manifest asks for.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Grants(Vec<CapError>),
    /// The component's bytes are not the pinned ones.
    #[error(
        "component {} does not match its pinned sha256 (manifest says {expected}, file is {actual}); if the new build is trusted, update `sha256` in the manifest",
        component.display()
    )]
    DigestMismatch {
        /// The component file.
        component: PathBuf,
        /// The manifest's digest.
        expected: String,
        /// The file's digest.
        actual: String,
    },
    /// The component file cannot be read.
    #[error("cannot read component {}: {source}", component.display())]
    ReadComponent {
        /// The component file.
        component: PathBuf,
        /// The I/O error.
        source: Arc<std::io::Error>,
    },
    /// Not a WebAssembly component, or it does not compile.
    #[error("{} is not a valid WebAssembly component: {reason}", component.display())]
    InvalidComponent {
        /// The component file.
        component: PathBuf,
        /// The compiler's words.
        reason: String,
    },
    /// A component of another world, or with imports the host does not
    /// offer.
    #[error("{} does not implement the toolhost:tool world: {reason}", component.display())]
    WrongWorld {
        /// The component file.
        component: PathBuf,
        /// The linker's words.
        reason: String,
    },
    /// A component that exports neither the toolhost:tool world nor any
    /// plain WIT function (a typed-WIT component).
    #[error("{} is not a tool component: {reason}", component.display())]
    NotATool {
        /// The component file.
        component: PathBuf,
        /// What it exports instead.
        reason: String,
    },
    /// A typed-WIT component whose exported functions cannot all be tools
    /// (resources, futures or streams in a signature, clashing or too long
    /// names, types too deep), or that imports what the host lacks.
    #[error(
        "{} exports typed WIT functions toolhost cannot serve: {reason}",
        component.display()
    )]
    TypedRefused {
        /// The component file.
        component: PathBuf,
        /// Which function, and why.
        reason: String,
    },
    /// The component needs more of the sandbox than any call may have.
    #[error("{} cannot run in this host's sandbox: {reason}", component.display())]
    TooLarge {
        /// The component file.
        component: PathBuf,
        /// What is too large.
        reason: String,
    },
    /// `describe` failed or misbehaved.
    #[error("`describe` failed: {reason}")]
    Describe {
        /// Why.
        reason: String,
    },
    /// A tool definition is unusable.
    #[error("tool `{tool}`: {reason}")]
    BadToolDef {
        /// The tool.
        tool: String,
        /// Why.
        reason: String,
    },
    /// Two components of one scope offer the same tool name, or names
    /// that differ only in `.` against `_`: neither is served (each gets
    /// this error, naming the other).
    #[error(
        "tool `{tool}` is also provided by {} in scope `{scope}` (under this name, or one that differs only in `.` against `_`, which clients such as the `claude` CLI do not tell apart), so neither is served (a component must not take calls meant for another); rename one of them or load them into different scopes",
        other.display()
    )]
    NameClash {
        /// The tool.
        tool: String,
        /// The manifest that has it already.
        other: PathBuf,
        /// The scope.
        scope: String,
    },
    /// A resource URI, URI template or prompt name another component of
    /// the same scope claims too: which component owns a URI must be
    /// clear, so neither component's resources and prompts are served
    /// (their tools are).
    #[error(
        "{what} is claimed by {} too in scope `{scope}`; rename or remove one (neither component's resources and prompts are served, their tools are)",
        other.display()
    )]
    ServedClash {
        /// The URI, template or prompt, named.
        what: String,
        /// The other manifest that claims it.
        other: PathBuf,
        /// The scope.
        scope: String,
    },
    /// A grant overlaps another tool's, and one of them may write.
    #[error("{message}")]
    Overlap {
        /// Which grants overlap.
        message: String,
    },
    /// A source path that cannot be read.
    #[error("{reason}")]
    Source {
        /// Why.
        reason: String,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            // Diagnostics carry their file and line already.
            LoadErrorKind::Manifest(d) => write!(f, "{d}"),
            // One refusal a line, each at its manifest line.
            LoadErrorKind::Grants(errors) => {
                for (i, e) in errors.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{}", self.manifest.display())?;
                    if let Some(l) = e.line {
                        write!(f, ":{l}")?;
                    }
                    write!(f, ": {}: {}", e.unit, e.message)?;
                    if let Some(h) = &e.hint {
                        write!(f, " ({h})")?;
                    }
                }
                Ok(())
            }
            k => write!(f, "{}: {k}", self.manifest.display()),
        }
    }
}

/// Which limit a call ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Limit {
    /// The wall-clock deadline.
    Timeout,
    /// The fuel budget.
    Fuel,
    /// Linear memory (and host memory held for the call).
    Memory,
    /// The wasm stack.
    Stack,
    /// The result size.
    Output,
    /// Captured stdout/stderr.
    Stdio,
    /// Resource handles or descriptors.
    Resources,
}

/// Why a call produced no result: the tool, once, and what happened.
#[derive(Debug, Clone)]
pub struct CallError {
    tool: Arc<str>,
    kind: CallErrorKind,
    subject: Subject,
}

/// What a [`CallError`] is about: a tool call, or a resource read, prompt
/// get or completion (`toolhost:tool@0.2.0`) that took the same path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Subject {
    /// A tool; [`CallError::tool`] is its name.
    #[default]
    Tool,
    /// A resource; [`CallError::tool`] is its URI.
    Resource,
    /// A prompt; [`CallError::tool`] is its name.
    Prompt,
    /// A resource template (a completion of its variables).
    Template,
}

impl Subject {
    fn noun(self) -> &'static str {
        match self {
            Subject::Tool => "tool",
            Subject::Resource => "resource",
            Subject::Prompt => "prompt",
            Subject::Template => "resource template",
        }
    }
}

/// What ended a call.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CallErrorKind {
    /// The tool does not exist *in the caller's scope*, or the caller may
    /// not see it. Deliberately the same for a tool of another scope, or
    /// one policy hides: scopes cannot be probed.
    UnknownTool,
    /// A policy rule or hook refused the call.
    Denied {
        /// Why, in the rule's words.
        reason: String,
    },
    /// The arguments fail the tool's input schema (or the tool said so).
    InvalidArguments {
        /// Every violation, each with its JSON pointer.
        details: String,
    },
    /// The wall-clock deadline passed.
    Timeout {
        /// The tool's timeout.
        after: Duration,
    },
    /// The fuel budget ran out.
    FuelExhausted {
        /// The budget.
        fuel: u64,
    },
    /// The memory limit was hit.
    MemoryExhausted {
        /// The limit in bytes.
        limit: u64,
    },
    /// The call, within its own memory limit, was refused memory because
    /// calls together hold all they may share: the host's `[engine]
    /// max-memory`, or its scope's (tenant's, agent's) share of it. Not
    /// the tool's fault: retrying once fewer calls run may succeed.
    SharedMemoryExhausted {
        /// The shared bound in bytes.
        limit: u64,
        /// Whether it was the scope's share (else the host's whole).
        share: bool,
    },
    /// The wasm stack overflowed.
    StackOverflow,
    /// The result is over `max-output`.
    OutputTooLarge {
        /// Its size, as serialized.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// stdout or stderr filled its capture buffer.
    StdioFlood {
        /// `stdout` or `stderr`.
        stream: &'static str,
        /// The buffer's size.
        limit: usize,
    },
    /// A per-call host resource ran out (handles, descriptors, disk).
    ResourceExhausted {
        /// Which resource.
        what: &'static str,
        /// The cap.
        limit: u64,
    },
    /// The guest trapped (a panic, an abort, an unreachable).
    Trap {
        /// What the guest said, and the trap.
        message: String,
    },
    /// The result breaks the contract (bad JSON, output schema violated).
    BadResult {
        /// How.
        details: String,
    },
    /// The caller cancelled the call.
    Cancelled,
    /// The tool ran and reported a failure of its own.
    ToolFailed {
        /// The tool's message.
        message: String,
    },
    /// Too many calls of the caller's scope are already waiting for a
    /// sandbox; retry later.
    Busy {
        /// How many are waiting.
        queued: usize,
    },
    /// The caller's tenant is over one of its quotas (`[[tenant]]`); the
    /// call was not started.
    OverQuota {
        /// The quota's key in the host config (`calls-per-minute`, …).
        quota: &'static str,
        /// Which tenant, which quota and its value, and when to retry.
        message: String,
        /// When a retry may be admitted.
        retry_after: Duration,
    },
    /// The tool was reloaded (its component or grants changed, or it was
    /// removed) while the call waited for a sandbox: it did not run, and a
    /// retry runs the tool as it is now.
    Reloaded,
    /// The host could not start the call.
    Internal {
        /// Why.
        message: String,
    },
    /// The tool asked its client questions the client answers when it
    /// retries the call (a stateless front end replays answers; see
    /// [`ClientError::InputRequired`](crate::ClientError::InputRequired)).
    /// Only a call whose client replays answers ends this way.
    InputRequired {
        /// The questions, in the order asked.
        requests: Vec<crate::model::ClientRequest>,
    },
}

impl CallError {
    /// An error of `tool`.
    pub fn new(tool: impl Into<Arc<str>>, kind: CallErrorKind) -> CallError {
        CallError {
            tool: tool.into(),
            kind,
            subject: Subject::Tool,
        }
    }

    /// The same error, about a resource, prompt or template.
    pub(crate) fn about(mut self, subject: Subject) -> CallError {
        self.subject = subject;
        self
    }

    /// What the error is about (a tool unless the request was a read, get
    /// or completion).
    pub fn subject(&self) -> Subject {
        self.subject
    }

    /// The tool the call named.
    pub fn tool(&self) -> &str {
        &self.tool
    }

    /// What happened.
    pub fn kind(&self) -> &CallErrorKind {
        &self.kind
    }

    /// The limit this error is about, if any.
    pub fn limit(&self) -> Option<Limit> {
        Some(match self.kind {
            CallErrorKind::Timeout { .. } => Limit::Timeout,
            CallErrorKind::FuelExhausted { .. } => Limit::Fuel,
            CallErrorKind::MemoryExhausted { .. } => Limit::Memory,
            CallErrorKind::SharedMemoryExhausted { .. } => Limit::Memory,
            CallErrorKind::StackOverflow => Limit::Stack,
            CallErrorKind::OutputTooLarge { .. } => Limit::Output,
            CallErrorKind::StdioFlood { .. } => Limit::Stdio,
            CallErrorKind::ResourceExhausted { .. } => Limit::Resources,
            _ => return None,
        })
    }

    /// A short, stable name for audit logs and metrics.
    pub fn code(&self) -> &'static str {
        use CallErrorKind::*;
        match self.kind {
            UnknownTool => "unknown_tool",
            Denied { .. } => "denied",
            InvalidArguments { .. } => "invalid_arguments",
            Timeout { .. } => "timeout",
            FuelExhausted { .. } => "fuel_exhausted",
            MemoryExhausted { .. } => "memory_exhausted",
            SharedMemoryExhausted { .. } => "shared_memory_exhausted",
            StackOverflow => "stack_overflow",
            OutputTooLarge { .. } => "output_too_large",
            StdioFlood { .. } => "stdio_flood",
            ResourceExhausted { .. } => "resource_exhausted",
            Trap { .. } => "trap",
            BadResult { .. } => "bad_result",
            Cancelled => "cancelled",
            ToolFailed { .. } => "tool_error",
            Busy { .. } => "busy",
            Reloaded => "reloaded",
            OverQuota { .. } => "over_quota",
            Internal { .. } => "internal",
            InputRequired { .. } => "input_required",
        }
    }
}

/// A name the client chose, as a message shows it: control and
/// bidi-control characters escaped, then cut to the audit log's bound. The
/// messages go back to the client and, for refused requests, into the
/// server's log: a 3 MB name was copied whole into every log line, and a
/// newline in one could start a line of its own (found by review).
pub(crate) fn shown_name(name: &str) -> std::borrow::Cow<'_, str> {
    crate::audit::shown(name, crate::audit::MAX_TOOL)
}

/// [`shown_name`], formatted only when shown: for a tracing field, which a
/// subscriber may never record (no work on a call nobody traces).
pub(crate) struct Shown<'a>(pub(crate) &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&shown_name(self.0))
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use CallErrorKind::*;
        let t = shown_name(&self.tool);
        let n = self.subject.noun();
        match &self.kind {
            UnknownTool if self.subject == Subject::Resource => {
                write!(f, "resource `{t}` not found")
            }
            UnknownTool => write!(f, "unknown {n} `{t}`"),
            Denied { reason } => write!(f, "{n} `{t}` was denied: {reason}"),
            InvalidArguments { details } => {
                write!(f, "invalid arguments for {n} `{t}`: {details}")
            }
            Timeout { after } => write!(
                f,
                "{n} `{t}` timed out after {}",
                humantime::format_duration(*after)
            ),
            FuelExhausted { fuel } => write!(
                f,
                "{n} `{t}` ran out of fuel (its limit is {fuel} units); raise `limits.fuel` in its manifest if this input is legitimate"
            ),
            MemoryExhausted { limit } => write!(
                f,
                "{n} `{t}` exceeded its memory limit of {} MiB; raise `limits.memory` in its manifest if this input is legitimate",
                limit >> 20
            ),
            SharedMemoryExhausted { limit, share: true } => write!(
                f,
                "{n} `{t}` was refused memory within its own limit: the calls of its tenant together hold their share of the host's memory ({} MiB); retry once fewer of them run",
                limit >> 20
            ),
            SharedMemoryExhausted {
                limit,
                share: false,
            } => write!(
                f,
                "{n} `{t}` was refused memory within its own limit: all calls together hold the host's `[engine] max-memory` ({} MiB); retry once fewer calls run, or raise it",
                limit >> 20
            ),
            StackOverflow => write!(f, "{n} `{t}` overflowed its stack (deep recursion)"),
            OutputTooLarge { size, limit } => write!(
                f,
                "{n} `{t}` returned {size} bytes, over its max-output limit of {limit} bytes"
            ),
            StdioFlood { stream, limit } => write!(
                f,
                "{n} `{t}` wrote more than {limit} bytes to {stream}; the call was stopped"
            ),
            ResourceExhausted { what, limit } => write!(
                f,
                "{n} `{t}` used more than the {limit} {what} a call may hold; the call was stopped"
            ),
            Trap { message } => write!(f, "{n} `{t}` crashed: {message}"),
            BadResult { details } => write!(f, "{n} `{t}` returned a malformed result: {details}"),
            Cancelled => write!(f, "{n} `{t}` was cancelled"),
            ToolFailed { message } => write!(f, "{message}"),
            Busy { queued } => write!(
                f,
                "{n} `{t}` was not started: {queued} calls of this scope are already waiting for a sandbox; retry when some have finished"
            ),
            OverQuota { message, .. } => write!(f, "{n} `{t}` was not started: {message}"),
            Reloaded => write!(
                f,
                "{n} `{t}` was not started: it was reloaded (its component or grants changed, or it was removed) while the call waited for a sandbox; retry"
            ),
            Internal { message } => write!(f, "{n} `{t}` could not start: {message}"),
            InputRequired { requests } => write!(
                f,
                "{n} `{t}` needs input from its client ({}); retry the call with the answers",
                requests
                    .iter()
                    .map(|r| format!("`{}` as `{}`", r.method, r.key))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

impl std::error::Error for CallError {}

/// Why a `Core` could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The wasmtime engine rejected its configuration (e.g. a pool too
    /// large for this machine's address space).
    #[error("cannot create the sandbox engine: {0:#}")]
    Engine(anyhow::Error),
    /// The audit log named by the host config cannot be opened.
    #[error("cannot open the audit log {path}: {source}")]
    Audit {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_in_a_message_is_bounded_and_shows_no_control_characters() {
        let e = |name: &str| CallError::new(name, CallErrorKind::UnknownTool).to_string();
        assert_eq!(e("echo"), "unknown tool `echo`");
        let long = e(&"n".repeat(3_000_000));
        assert!(long.len() < 400, "{}", long.len());
        assert!(long.ends_with("…`"), "{long}");
        let forged = e("echo\n2026-12-10T09:00:00Z beta ok\u{1b}[2K\u{202e}");
        assert!(
            !forged.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "{forged:?}"
        );
        assert!(
            forged.contains("\\u{a}2026") && forged.contains("\\u{202e}"),
            "{forged}"
        );
    }
}
