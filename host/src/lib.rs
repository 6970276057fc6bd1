#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// Layers, each using only those below it:
//   front ends: mcp (server, http), agent, watch
//   core (the one call path) -> catalog, policy, schema, audit, metrics
//   -> sandbox
//   -> caps (the capability units), typed (typed-WIT schemas and values)
//   -> manifest, config, model, error, diagnostic

mod audit;
pub mod caps;
mod catalog;
mod config;
mod core;
mod diagnostic;
mod error;
#[doc(hidden)]
pub mod files;
mod manifest;
mod metrics;
mod model;
#[cfg(feature = "mcp")]
mod mrtr;
mod policy;
mod quota;
mod sandbox;
mod scheduler;
mod schema;
mod served;
mod tenant;
mod trust;
mod typed;
mod weight;

#[cfg(feature = "agent")]
pub mod agent;
#[cfg(feature = "mcp")]
pub mod mcp;
#[cfg(feature = "watch")]
mod watch;

pub use crate::audit::{Audit, AuditConfig, AuditRecord, FsyncPolicy};
pub use crate::catalog::{LoadEvent, Scope, Source};
pub use crate::config::{EngineConfig, GuestPriority, HostConfig, TasksConfig};
pub use crate::core::{CallRequest, Core, CoreBuilder, OnLoad, Reconfigured, ToolsWatch};
pub use crate::diagnostic::{Diagnostic, Diagnostics};
pub use crate::error::{
    BuildError, CallError, CallErrorKind, Limit, LoadError, LoadErrorKind, Subject,
};
pub use crate::manifest::Manifest;
#[cfg(feature = "http")]
pub use crate::metrics::MetricsServer;
pub use crate::metrics::{MAX_LABEL_VALUES, Metrics};
pub use crate::model::{
    Annotations, CallEvent, ClientError, ClientRequest, ClientRequests, Content, EventSink,
    EventStream, LogLevel, ResourceContents, TaskSupport, ToolDef, ToolOutput,
};
#[cfg(feature = "mcp")]
pub use crate::mrtr::{StateKey, StateKeyError};
pub use crate::policy::{Decision, Effect, Policy, Rule};
pub use crate::sandbox::{AfterReply, PrewarmStats, reply_first};
pub use crate::served::{
    Completion, CompletionRef, MAX_COMPLETION_VALUES, PromptArgument, PromptDef, PromptMessage,
    PromptOutput, ResourceBody, ResourceDef, Role, TemplateDef,
};
pub use crate::tenant::{AgentEntry, AuthConfig, JwtConfig, Quotas, Tenant, TenantTools};
pub use crate::trust::{KeylessIdentity, TrustRule};
#[cfg(feature = "watch")]
pub use crate::watch::Changes;

#[doc(no_inline)]
pub use tokio_util::sync::CancellationToken;

#[cfg(feature = "unstable-bench")]
#[doc(hidden)]
pub use crate::core::BenchWarm;
