//! The Claude Agent SDK transport, in Rust: toolhost plays the SDK's part
//! towards the `claude` CLI, serving WASM tools as in-process ("sdk") MCP
//! servers over the CLI's stdin/stdout control protocol.
//!
//! Layers, each using only those below it:
//! - `client` (`query`) and `session` (`AgentSession`): the API;
//! - `bridge`: `mcp_message` through the one MCP handler (`crate::mcp`),
//!   so every tool call goes through `Core::call`;
//! - `hooks`, `options`: callbacks, rules, and the CLI's command line;
//! - `protocol`: the wire messages; `process`: the CLI process;
//!   `error`: what can fail.
//!
//! ```no_run
//! # async fn demo(core: toolhost::Core) -> Result<(), toolhost::agent::AgentError> {
//! use futures::StreamExt;
//! use toolhost::agent::{AgentOptions, Message, query};
//! let opts = AgentOptions::default().server("tools", toolhost::Scope::default());
//! let mut s = std::pin::pin!(query(core, "Echo hi", opts));
//! while let Some(m) = s.next().await {
//!     if let Message::Result(r) = m? { println!("{:?}", r.result); }
//! }
//! # Ok(()) }
//! ```

mod bridge;
mod client;
mod error;
mod hooks;
mod options;
mod process;
mod protocol;
mod session;

pub use client::query;
pub use error::AgentError;
pub use hooks::{
    CanUseTool, HookEvent, HookFn, HookInput, HookMatcher, HookOutput, Permission,
    PermissionRequest, RuleFile, can_use_tool, hook,
};
pub use options::{
    AgentDefinition, AgentOptions, INHERITED_ENV, MAIN_AGENT, PermissionMode, SdkServer,
    SettingSource,
};
pub use process::{CLI_ENV, PINNED_CLI_VERSION};
pub use protocol::{
    ApiMessage, AssistantMessage, ContentBlock, Message, ResultMessage, StreamEvent, SystemMessage,
    UserBody, UserContent, UserMessage,
};
pub use session::AgentSession;
