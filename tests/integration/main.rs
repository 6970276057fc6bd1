//! toolhost's integration tests: one binary, a module per concern. Every test
//! runs real components built by `make tools` (from `example-tools/`) inside
//! the real host; front-end tests drive real clients and real processes.

mod support;

mod agent;
mod audit;
mod grants;
mod languages;
mod limits;
mod manifest;
mod mcp;
mod mcp_2026;
mod mrtr;
mod otel;
mod package;
mod policy;
mod prewarm;
mod scale_out;
mod served;
mod tasks;
mod tenants;
mod typed;
