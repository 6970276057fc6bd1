//! # toolhost
//!
//! Run untrusted AI-agent tools as WASI components, inside the host process,
//! in a fresh sandbox per call, with fuel, memory and wall-clock limits, and
//! with only the capabilities each tool's manifest grants.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use toolhost::{Core, CallRequest, Scope};
//! let core = Core::builder().source(Scope::default(), "build/tools").build(&|_| {}).await?;
//! let args = serde_json::json!({"text": "hi"}).as_object().cloned();
//! let out = core.call(CallRequest::new(Scope::default(), "echo", args)).await?;
//! println!("{}", out.text());
//! # Ok(()) }
//! ```
//!
//! Layers, each using only those below it: `core` (the one call path) ->
//! `catalog`, `policy`, `schema`, `audit` -> `sandbox` -> `manifest`,
//! `config`, `model`, `error`.

pub mod agent;
pub mod audit;
pub mod catalog;
pub mod config;
pub mod core;
pub mod error;
pub mod manifest;
pub mod mcp;
pub mod model;
pub mod policy;
pub mod sandbox;
pub mod schema;
pub mod watch;

pub use crate::catalog::{LoadEvent, Scope, Source};
pub use crate::config::HostConfig;
pub use crate::core::{CallRequest, Core, CoreBuilder};
pub use crate::error::{CallError, LoadError};
pub use crate::model::{CallEvent, Content, LogLevel, ToolDef, ToolOutput};
