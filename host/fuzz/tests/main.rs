//! toolhost's fuzz targets, one `#[test]` each (bolero `check!`):
//!
//! | target | input | what must hold |
//! |---|---|---|
//! | `manifest` | a tool manifest | no panic; `Ok`, or diagnostics each with a line |
//! | `host_config` | `toolhost.toml` | the same |
//! | `mcp_jsonrpc` | JSON-RPC lines to a real `McpServer` | no panic; one response per request; echo still works |
//! | `mcp_http` | raw HTTP/1.1 requests to a real `HttpServer` (headers, framing, bodies) | no panic; an answer or a close within the request timeout; no 5xx; echo still works |
//! | `agent_control` | the `claude` CLI's stdout lines to a real `AgentSession` | no panic; typed errors; one reply per control request; echo still works |
//! | `component_load` | a mutated `echo` component | no panic or abort; a typed `LoadError`, or a tool that works |
//!
//! Each target reads its input both as it is and as a `Script` that edits a
//! seed of its committed corpus (`tests/__fuzz__/TARGET/corpus/`), so random
//! bytes on stable reach past the syntax. `cargo test` runs each for a few
//! seconds; `make fuzz` (`BOLERO_RANDOM_TEST_TIME_MS`) runs each longer.

mod agent;
mod component;
mod config;
mod http;
mod manifest;
mod mcp;
mod support;
