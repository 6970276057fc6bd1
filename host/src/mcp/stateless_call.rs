//! The stateless call lane: a 2026-07-28 `tools/call` over HTTP that has
//! nothing to stream, handed to the server's handler without rmcp's
//! per-request machinery.
//!
//! rmcp's Streamable HTTP service serves each stateless request with a
//! service loop of its own (a new peer, channels, two spawned tasks and
//! the handler's), and parses the body twice more (into its message enum,
//! and back into a `Value` for the header checks). For the commonest
//! request of a stateless client, a tool call with no progress token and
//! no log level, none of that carries anything: its answer is one JSON
//! body. Profiled under 64 clients it was about a third of the server's
//! CPU (BENCHMARKS.md, "MCP round trip").
//!
//! The lane takes a request only when it is sure rmcp would serve it the
//! same way; anything else goes to rmcp, which serves or refuses it as
//! always. So the lane's checks accept a strict subset of what rmcp's
//! accept, and never refuse anything themselves:
//! - `Content-Type: application/json`; one `Accept` naming
//!   `application/json` and `text/event-stream`, unquoted;
//! - a `Host` the server allows by name (an allowed entry without a
//!   port: rmcp allows that name on any port); no `Origin` (a browser's
//!   request takes rmcp's path and its origin check);
//! - no `Mcp-Session-Id`; `Mcp-Protocol-Version: 2026-07-28`;
//! - `Mcp-Method: tools/call` and `Mcp-Name` the tool's name, each once
//!   and written plainly (not in the Base64 form); no `Mcp-Param-*`
//!   header, and a tool whose input schema asks for none
//!   (`x-mcp-header`);
//! - a body that is one JSON-RPC `tools/call` request, parsed into a
//!   typed envelope that refuses a duplicated key (so a body cannot read
//!   as one method here and another to rmcp), whose `_meta` names
//!   2026-07-28 and the client's capabilities, with no progress token and
//!   no log level (their events would go out on an SSE stream).
//!
//! What it answers is made by the same code as rmcp's answer: the
//! handler's whole request path (rmcp's own checks of the version and
//! metadata, then `McpServer::call_tool`), in a context made as rmcp's
//! stateless service makes it (the request's `_meta`, its HTTP parts, a
//! peer that knows only that the client speaks 2026-07-28), with the HTTP
//! status rmcp gives a JSON-RPC error. The tests send the same requests
//! down both paths and compare status, type and JSON body (a sealed
//! `requestState`, fresh on every round, by its presence). Two answers
//! differ on purpose, where rmcp's loses the handler's: a handler that
//! panics is answered as a JSON-RPC internal error (rmcp's spawned
//! handler dies, and it answers 500, "empty response"), and a call that
//! shutdown stops (past its grace) answers as stopped. A call whose
//! client goes away is cancelled, and recorded so, as on rmcp's path.
//!
//! Must not touch: tenants, quotas and body limits (`http` applies them
//! to the lane's calls as to rmcp's: the tenant's bounds and body limits
//! before the lane reads a request, its call quotas once the lane has
//! taken it), or what a call means (`server`, `core`).

use super::McpServer;
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use rmcp::model::{
    CallToolRequestMethod, CallToolRequestParams, ErrorCode, InitializeRequestParams,
    JsonRpcMessage, JsonRpcVersion2_0, ProtocolVersion, RequestId, ServerJsonRpcMessage,
};
use rmcp::service::RequestContext;
use rmcp::{Peer, RoleServer, ServerHandler};
use serde::Deserialize;
use std::sync::OnceLock;
use tokio_util::sync::CancellationToken;

/// Which requests the lane may take for one server: the `Host` names it
/// allows on any port.
pub(super) struct Lane {
    hosts: Vec<String>,
    /// The peer its calls' contexts name (see [`stateless_peer`]).
    peer: OnceLock<Peer<RoleServer>>,
}

/// A request the lane took: a `tools/call` to answer.
pub(super) struct Call {
    id: RequestId,
    params: CallToolRequestParams,
    meta: rmcp::model::RequestMetaObject,
    peer: Peer<RoleServer>,
}

/// A `tools/call` request, as the lane reads a body: derived structs, so
/// a key given twice is an error (and the request rmcp's), each read
/// from a JSON object only (a derived struct would also read an array,
/// by position: rmcp's parser reads objects alone, and a body written
/// positionally would hide its arguments from whatever inspects bodies
/// by key on the way).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    #[allow(dead_code, reason = "checked by its type")]
    jsonrpc: JsonRpcVersion2_0,
    id: RequestId,
    #[allow(dead_code, reason = "checked by its type")]
    method: CallToolRequestMethod,
    params: ObjectOnly<CallToolRequestParams>,
}

/// `T`, read from a JSON object and nothing else.
struct ObjectOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Object<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Object(std::marker::PhantomData))
            .map(ObjectOnly)
    }
}

impl Lane {
    /// For a server whose rmcp service allows `allowed_hosts` (its config's
    /// list: `name` or `name:port` entries).
    pub(super) fn new(allowed_hosts: &[String]) -> Lane {
        let hosts = allowed_hosts
            .iter()
            .filter_map(|entry| {
                let entry = entry.trim();
                // An entry with a port allows that port only: the lane
                // leaves its requests to rmcp rather than compare ports.
                match http::uri::Authority::try_from(entry) {
                    Ok(a) if a.port().is_some() => None,
                    Ok(a) => Some(host_name(a.host())),
                    Err(_) => Some(host_name(entry)),
                }
            })
            .filter(|h| !h.is_empty())
            .collect();
        Lane {
            hosts,
            peer: OnceLock::new(),
        }
    }

    /// The request, if the lane takes it (see the module's doc); `None`
    /// leaves it to rmcp.
    pub(super) fn take(&self, parts: &Parts, body: &[u8], server: &McpServer) -> Option<Call> {
        let h = &parts.headers;
        // Cheapest first: most requests that are not the lane's (sessions,
        // other methods, browsers) fail the first three.
        if h.contains_key(super::http::HEADER_SESSION_ID)
            || !single_is(
                h,
                "mcp-protocol-version",
                ProtocolVersion::V_2026_07_28.as_str(),
            )
            || !single_is(h, "mcp-method", "tools/call")
            || h.contains_key(header::ORIGIN)
            || !self.host_allowed(h)
            || !json_content(h)
            || !accepts_json_and_sse(h)
            || h.keys().any(|k| k.as_str().starts_with("mcp-param-"))
        {
            return None;
        }
        let ObjectOnly(Envelope {
            id,
            params: ObjectOnly(mut params),
            ..
        }) = serde_json::from_slice(body).ok()?;
        let name = single(h, "mcp-name")?.to_str().ok()?;
        if name != params.name || name.starts_with("=?") {
            return None;
        }
        let meta = params.meta.take()?;
        if meta.protocol_version()? != ProtocolVersion::V_2026_07_28
            || !meta
                .missing_required_keys(&ProtocolVersion::V_2026_07_28)
                .is_empty()
            || meta.contains_key("progressToken")
            || meta.contains_key("io.modelcontextprotocol/logLevel")
            || server.asks_param_headers(&params.name)
        {
            return None;
        }
        let peer = self.peer.get_or_init(stateless_peer).clone();
        Some(Call {
            id,
            params,
            meta,
            peer,
        })
    }

    fn host_allowed(&self, h: &HeaderMap) -> bool {
        let Some(host) = single(h, header::HOST.as_str()).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let Some(name) = super::accept::host_name(host) else {
            return false;
        };
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(&name))
    }
}

impl Call {
    /// The request's JSON-RPC id, as a refusal answers it.
    pub(super) fn id(&self) -> serde_json::Value {
        serde_json::to_value(&self.id).unwrap_or_default()
    }

    /// The tool it calls.
    pub(super) fn tool(&self) -> &str {
        &self.params.name
    }

    /// Answer it with `server`'s handler, the request's HTTP `parts` in
    /// its context (the front end's admission travels in them, and the
    /// audit reads them), `ct` stopping the call. The answer and its HTTP
    /// status, as rmcp's stateless service gives them.
    pub(super) async fn answer(
        self,
        server: McpServer,
        ct: CancellationToken,
        parts: Parts,
    ) -> (StatusCode, Vec<u8>) {
        tracing::debug!(
            tool = %crate::error::Shown(&self.params.name),
            "stateless call answered in the lane"
        );
        let mut ctx = RequestContext::new(self.id, self.peer);
        ctx.meta = self.meta;
        let ct_of_call = ct.clone();
        ctx.ct = ct;
        ctx.extensions.insert(parts);
        // Dropped unanswered (the client went away, the request timed
        // out), the call is cancelled, and recorded so, as on rmcp's path.
        let call = super::server::call_in_context(server, ctx, self.params);
        let message = super::Finishing::new(call, ct_of_call).await;
        match serde_json::to_vec(&message) {
            Ok(body) => (status_of(&message), body),
            // As rmcp answers a response it cannot serialize.
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("serialize json response: {e}").into_bytes(),
            ),
        }
    }
}

/// The HTTP status of a stateless request's answer, as rmcp gives it (a
/// few JSON-RPC errors are HTTP errors too; its case of malformed
/// metadata cannot arise: the lane takes only well-formed metadata).
fn status_of(message: &ServerJsonRpcMessage) -> StatusCode {
    let JsonRpcMessage::Error(e) = message else {
        return StatusCode::OK;
    };
    match e.error.code {
        ErrorCode::UNSUPPORTED_PROTOCOL_VERSION
        | ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY
        | ErrorCode::HEADER_MISMATCH => StatusCode::BAD_REQUEST,
        ErrorCode::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

/// The peer a lane's calls' contexts name: what rmcp's stateless service
/// gives a request (a peer whose client speaks 2026-07-28, with default
/// capabilities and identity: the request's own come from its `_meta`).
/// Nothing is ever sent through it: the lane takes no call with progress
/// or log messages to send, and a 2026-07-28 call asks its client through
/// an input-required result, never the peer (rmcp refuses a server's
/// request to a 2026-07-28 peer). Its input is empty, so its service loop
/// ends at once. One per lane (per tenant), so nothing a call could do to
/// it reaches another tenant's calls.
fn stateless_peer() -> Peer<RoleServer> {
    struct Nowhere;
    impl ServerHandler for Nowhere {}
    let info = InitializeRequestParams::new(Default::default(), Default::default())
        .with_protocol_version(ProtocolVersion::V_2026_07_28);
    let running = rmcp::service::serve_directly(
        Nowhere,
        (
            futures::sink::drain::<rmcp::service::TxJsonRpcMessage<RoleServer>>(),
            futures::stream::empty::<rmcp::service::RxJsonRpcMessage<RoleServer>>(),
        ),
        Some(info),
    );
    running.peer().clone()
}

/// A host name as rmcp compares them: without IPv6 brackets, lower case
/// (its brackets trimmed as rmcp trims them, `[` then `]`).
fn host_name(host: &str) -> String {
    host.trim_matches('[')
        .trim_matches(']')
        .to_ascii_lowercase()
}

/// The header's value, if it is given exactly once.
fn single<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a http::HeaderValue> {
    let mut all = h.get_all(name).iter();
    let first = all.next()?;
    all.next().is_none().then_some(first)
}

fn single_is(h: &HeaderMap, name: &str, value: &str) -> bool {
    single(h, name).is_some_and(|v| v.as_bytes() == value.as_bytes())
}

/// `Content-Type` is JSON (parameters allowed, as rmcp allows them).
fn json_content(h: &HeaderMap) -> bool {
    single(h, header::CONTENT_TYPE.as_str())
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let essence = v.split_once(';').map_or(v, |(e, _)| e);
            essence.trim().eq_ignore_ascii_case("application/json")
        })
}

/// One `Accept` naming both types the transport requires, each without
/// parameters (so no weight can exclude it), with nothing quoted.
fn accepts_json_and_sse(h: &HeaderMap) -> bool {
    let Some(v) = single(h, header::ACCEPT.as_str()).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    if v.contains('"') {
        return false;
    }
    let (mut json, mut sse) = (false, false);
    for t in v.split(',').map(str::trim) {
        json |= t.eq_ignore_ascii_case("application/json");
        sse |= t.eq_ignore_ascii_case("text/event-stream");
    }
    json && sse
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_with_a_port_are_left_to_rmcp() {
        let lane = Lane::new(&[
            "localhost".into(),
            "::1".into(),
            "Example.COM".into(),
            "api.example.com:8443".into(),
        ]);
        assert_eq!(lane.hosts, ["localhost", "::1", "example.com"]);
        let allowed = |host: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, host.parse().unwrap());
            lane.host_allowed(&h)
        };
        assert!(allowed("localhost:8080"));
        assert!(allowed("[::1]:8080"));
        assert!(allowed("EXAMPLE.com"));
        assert!(!allowed("api.example.com:8443"));
        assert!(!allowed("evil.example"));
        assert!(!allowed("localhost.evil.example"));
        let mut twice = HeaderMap::new();
        twice.append(header::HOST, "localhost".parse().unwrap());
        twice.append(header::HOST, "evil.example".parse().unwrap());
        assert!(!lane.host_allowed(&twice));
    }

    #[test]
    fn accept_must_name_both_types_plainly() {
        let accepts = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, v.parse().unwrap());
            accepts_json_and_sse(&h)
        };
        assert!(accepts("application/json, text/event-stream"));
        assert!(accepts("text/event-stream,application/json"));
        assert!(!accepts("application/json"));
        assert!(!accepts("application/json;q=0, text/event-stream"));
        assert!(!accepts("application/json, text/event-stream;q=0"));
        assert!(!accepts(r#"application/json;p="a,text/event-stream""#));
    }

    #[test]
    fn a_duplicated_key_or_a_positional_body_leaves_it_to_rmcp() {
        let read = |body: &[u8]| serde_json::from_slice::<ObjectOnly<Envelope>>(body);
        let ok = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#;
        assert!(read(ok).is_ok());
        for body in [
            &br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"echo"}}"#[..],
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"other"}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"},"result":{}}"#,
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}]"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"name":"echo"}}"#,
            // Written by position, not by key (a derived struct reads both).
            br#"["2.0",1,"tools/call",{"name":"echo"}]"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[null,"echo",{"text":"hi"},null,null]}"#,
        ] {
            assert!(
                read(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
