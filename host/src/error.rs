//! Typed errors of the library: what failed, on which tool, and what the
//! user can do. Front ends map these to their protocol (MCP error vs
//! `isError` result, CLI exit code); nothing here knows a front end.

use std::path::PathBuf;
use std::time::Duration;

use crate::manifest::ManifestError;

/// Why a tool could not be loaded. Loading the other tools carries on.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(
        "{manifest}: component {component} does not match its pinned sha256 (manifest says {expected}, file is {actual}); if the new build is trusted, update `sha256` in the manifest"
    )]
    DigestMismatch {
        manifest: PathBuf,
        component: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{manifest}: cannot read component {component}: {source}")]
    ReadComponent {
        manifest: PathBuf,
        component: PathBuf,
        source: std::io::Error,
    },
    #[error("{manifest}: {component} is not a valid WebAssembly component: {reason}")]
    InvalidComponent {
        manifest: PathBuf,
        component: PathBuf,
        reason: String,
    },
    #[error("{manifest}: {component} does not implement the toolhost:tool world: {reason}")]
    WrongWorld {
        manifest: PathBuf,
        component: PathBuf,
        reason: String,
    },
    #[error("{manifest}: `describe` failed: {reason}")]
    Describe { manifest: PathBuf, reason: String },
    #[error("{manifest}: tool `{tool}`: {reason}")]
    BadToolDef {
        manifest: PathBuf,
        tool: String,
        reason: String,
    },
    #[error("{manifest}: the host config forbids this grant: {reason}")]
    GrantRefused { manifest: PathBuf, reason: String },
    #[error(
        "{manifest}: tool `{tool}` is already provided by {other} in scope `{scope}`; rename one of them or load them into different scopes"
    )]
    NameClash {
        manifest: PathBuf,
        tool: String,
        other: PathBuf,
        scope: String,
    },
    #[error("{path}: {reason}")]
    Source { path: PathBuf, reason: String },
}

/// Which limit a call ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    Timeout,
    Fuel,
    Memory,
    Stack,
    Output,
    Stdio,
}

/// Why a call produced no result. Every variant names the tool.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The tool does not exist *in the caller's scope*. Deliberately the same
    /// error for a tool of another scope: scopes cannot be probed.
    #[error("unknown tool `{tool}`")]
    UnknownTool { tool: String },
    #[error("tool `{tool}` was denied: {reason}")]
    Denied { tool: String, reason: String },
    #[error("invalid arguments for tool `{tool}`: {details}")]
    InvalidArguments { tool: String, details: String },
    #[error("tool `{tool}` timed out after {}", humantime::format_duration(*.after))]
    Timeout { tool: String, after: Duration },
    #[error(
        "tool `{tool}` ran out of fuel (its limit is {fuel} units); raise `limits.fuel` in its manifest if this input is legitimate"
    )]
    FuelExhausted { tool: String, fuel: u64 },
    #[error("tool `{tool}` exceeded its memory limit of {} MiB; raise `limits.memory` in its manifest if this input is legitimate", .limit >> 20)]
    MemoryExhausted { tool: String, limit: u64 },
    #[error("tool `{tool}` overflowed its stack (deep recursion)")]
    StackOverflow { tool: String },
    #[error("tool `{tool}` returned {size} bytes, over its max-output limit of {limit} bytes")]
    OutputTooLarge { tool: String, size: u64, limit: u64 },
    #[error("tool `{tool}` wrote more than {limit} bytes to {stream}; the call was stopped")]
    StdioFlood {
        tool: String,
        stream: &'static str,
        limit: usize,
    },
    #[error("tool `{tool}` crashed: {message}")]
    Trap { tool: String, message: String },
    #[error("tool `{tool}` returned a malformed result: {details}")]
    BadResult { tool: String, details: String },
    #[error("tool `{tool}` was cancelled")]
    Cancelled { tool: String },
    /// The tool ran and reported a failure of its own.
    #[error("{message}")]
    ToolFailed { tool: String, message: String },
    #[error("tool `{tool}` could not start: {message}")]
    Internal { tool: String, message: String },
}

impl CallError {
    pub fn tool(&self) -> &str {
        use CallError::*;
        match self {
            UnknownTool { tool }
            | Denied { tool, .. }
            | InvalidArguments { tool, .. }
            | Timeout { tool, .. }
            | FuelExhausted { tool, .. }
            | MemoryExhausted { tool, .. }
            | StackOverflow { tool }
            | OutputTooLarge { tool, .. }
            | StdioFlood { tool, .. }
            | Trap { tool, .. }
            | BadResult { tool, .. }
            | Cancelled { tool }
            | ToolFailed { tool, .. }
            | Internal { tool, .. } => tool,
        }
    }

    /// The limit this error is about, if any.
    pub fn limit(&self) -> Option<Limit> {
        Some(match self {
            CallError::Timeout { .. } => Limit::Timeout,
            CallError::FuelExhausted { .. } => Limit::Fuel,
            CallError::MemoryExhausted { .. } => Limit::Memory,
            CallError::StackOverflow { .. } => Limit::Stack,
            CallError::OutputTooLarge { .. } => Limit::Output,
            CallError::StdioFlood { .. } => Limit::Stdio,
            _ => return None,
        })
    }

    /// A short, stable name for audit logs and metrics.
    pub fn kind(&self) -> &'static str {
        use CallError::*;
        match self {
            UnknownTool { .. } => "unknown_tool",
            Denied { .. } => "denied",
            InvalidArguments { .. } => "invalid_arguments",
            Timeout { .. } => "timeout",
            FuelExhausted { .. } => "fuel_exhausted",
            MemoryExhausted { .. } => "memory_exhausted",
            StackOverflow { .. } => "stack_overflow",
            OutputTooLarge { .. } => "output_too_large",
            StdioFlood { .. } => "stdio_flood",
            Trap { .. } => "trap",
            BadResult { .. } => "bad_result",
            Cancelled { .. } => "cancelled",
            ToolFailed { .. } => "tool_error",
            Internal { .. } => "internal",
        }
    }
}
