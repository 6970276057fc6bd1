//! The MCP front end: MCP semantics on the official Rust SDK (`rmcp`), over
//! stdio and Streamable HTTP.
//!
//! Owns: translating MCP requests into `CallRequest`s for `Core::call` and
//! `Core::tools`, translating results, errors and call events back
//! (`server`); serving that handler over stdio and over hardened Streamable
//! HTTP (`http`); telling connected clients when the tool list changes.
//!
//! Must not touch: tool logic, policy, limits or the catalog's contents. A
//! front end stays thin: everything a tool call means is decided in `core`,
//! and nothing a client sends can widen a tool's grants.

mod http;
mod server;

pub use http::{HttpError, HttpOptions, HttpServer};
pub use server::McpServer;
