//! The MCP front end: MCP semantics on the official Rust SDK (`rmcp`), over
//! stdio and Streamable HTTP.
//!
//! Owns: translating MCP requests into `CallRequest`s for `Core::call` and
//! `Core::tools`, translating results, errors and call events back
//! (`server`); serving that handler over stdio (`stdio`: pipes and sockets
//! polled, not read on the blocking pool; `stdio_service`: `tools/call`
//! answered past rmcp's service loop; `lines`: bounded lines in, whole
//! lines out in order) and over hardened Streamable HTTP (`http`;
//! `stateless_call`: a 2026-07-28 `tools/call` with nothing to stream
//! answered past rmcp's per-request service); telling
//! connected clients when the tool list changes.
//!
//! Protocols: 2025-11-25 (sessions, sealed into their ids so any replica
//! serves them, see `session`; `logging/setLevel`; list changes on the
//! session) and 2026-07-28 (stateless; `server/discover`; per-request log
//! level; list changes on `subscriptions/listen`; a tool's questions to
//! its client end the round with an input-required result and sealed
//! request state, see `input`). Cancellation: a
//! `notifications/cancelled`, server shutdown, or (stateless HTTP) the client
//! closing the request's stream stops the running guest; in a 2025-11-25 HTTP
//! session a dropped connection is not a cancellation, as that spec says.
//!
//! Must not touch: tool logic, policy, limits or the catalog's contents. A
//! front end stays thin: everything a tool call means is decided in `core`,
//! and nothing a client sends can widen a tool's grants.

#[cfg(feature = "http")]
pub(crate) mod accept;
#[cfg(feature = "http")]
mod auth;
#[cfg(feature = "http")]
mod http;
mod input;
pub(crate) mod lines;
mod server;
#[cfg(feature = "http")]
mod session;
#[cfg(feature = "http")]
mod stateless_call;
mod stdio;
mod stdio_service;
mod tasks;

#[cfg(feature = "http")]
pub use auth::{AuthError, Tenancy};
#[cfg(feature = "http")]
pub use http::{HttpError, HttpOptions, HttpServer, MIN_TOKEN_BYTES, TenantsHandle};
pub use server::McpServer;
pub(crate) use server::{Finishing, call_past_loop};
pub use stdio::{StdioReader, StdioWriter, stdio};
pub use stdio_service::StdioService;

/// The most bytes of requests (each weighed by [`request_weight`]) one
/// client holds at once by default: an HTTP server's (or tenant's)
/// `max-request-bytes`, a stdio connection's, and the agent's control
/// requests in flight.
pub(crate) const DEFAULT_REQUEST_BYTES: usize = 64 << 20;

/// What a request's text weighs while it is held: its bytes, and what
/// parsing it makes ([`crate::weight::parsed_weight`]). A line-based front end (stdio,
/// the agent's control lines) charges each request this until it is
/// answered, as HTTP charges a body against `max-request-bytes`.
pub(crate) fn request_weight(text: &[u8]) -> usize {
    text.len()
        .saturating_add(crate::weight::parsed_weight(text))
}

/// The longest request id or progress token (as JSON text) a server takes:
/// rmcp keeps both with a request's channel, and a progress token is
/// copied into every progress notice of its call.
pub(crate) const MAX_ID_BYTES: usize = 1 << 10;
