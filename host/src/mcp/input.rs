//! How a call's questions to its client travel over MCP.
//!
//! - 2025-11-25 sessions: [`PeerClient`] sends each question as a
//!   server-to-client request on the session and waits for the answer.
//! - 2026-07-28 (stateless): [`Stateless`] wraps an `mrtr::Replay` for one
//!   round of the call; when the call needs answers it ends with an
//!   `InputRequiredResult` (the questions under their keys, plus the sealed
//!   `requestState`), and the client's retry brings them back.
//!
//! Owns the wire mapping only: questions to `inputRequests`, MCP client
//! capabilities to what `mrtr` may ask, `mrtr` errors to JSON-RPC errors or
//! tool errors. The sealing and replay live in `crate::mrtr`; the call path
//! in `crate::core` is the same for both.

use crate::error::CallError;
use crate::model::{self, ClientError, ClientRequest};
use crate::mrtr::{self, Binding, Capabilities, MrtrError, Outcome, Replay};
use rmcp::model::{
    ClientCapabilities, CustomRequest, ErrorData, InputRequest, InputRequests, InputRequiredResult,
};
use rmcp::service::RequestContext;
use rmcp::{Peer, RoleServer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The session's client, asked at once (2025-11-25). A question goes
/// only if the client declared the capability it needs, and in the shape
/// the protocol gives it (members it does not define dropped), as on the
/// stateless and task paths: before, a tool's `sampling/createMessage`
/// went to a client that declared none, with `task` and `_meta` of the
/// tool's own (found by review). Results pass through as JSON: the tool
/// sees exactly what the client said.
pub(super) struct PeerClient {
    pub(super) peer: Peer<RoleServer>,
    pub(super) capabilities: Capabilities,
}

impl PeerClient {
    /// The client of `ctx`'s session.
    pub(super) fn of(ctx: &RequestContext<RoleServer>) -> PeerClient {
        PeerClient {
            peer: ctx.peer.clone(),
            capabilities: capabilities(ctx.client_capabilities().as_ref()),
        }
    }
}

impl model::ClientRequests for PeerClient {
    fn request(
        &self,
        req: ClientRequest,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Value, ClientError>> + Send>> {
        let peer = self.peer.clone();
        if let Err(capability) = self.capabilities.check(&req.method) {
            return Box::pin(std::future::ready(Err(ClientError::Unsupported {
                method: req.method,
                capability: capability.to_string(),
            })));
        }
        let params = input_request(&req)
            .and_then(|r| {
                serde_json::to_value(&r)
                    .map(|v| v.get("params").cloned().unwrap_or(Value::Null))
                    .map_err(|e| e.to_string())
            })
            .map_err(ClientError::Failed);
        Box::pin(async move {
            let method = req.method;
            let request = rmcp::model::ServerRequest::CustomRequest(CustomRequest::new(
                method.clone(),
                Some(params?),
            ));
            let result = peer.send_request(request).await.map_err(|e| {
                ClientError::Failed(format!("the client did not answer `{method}`: {e}"))
            })?;
            serde_json::to_value(result).map_err(|e| ClientError::Failed(e.to_string()))
        })
    }
}

/// Whether this request speaks 2026-07-28 or later (stateless: questions
/// travel as input-required results).
pub(super) fn is_stateless(ctx: &RequestContext<RoleServer>) -> bool {
    ctx.protocol_version()
        .is_some_and(|v| v.as_str() >= rmcp::model::ProtocolVersion::V_2026_07_28.as_str())
}

/// Whether rmcp served this request without a session: a 2026-07-28 one,
/// or any whose `_meta` carries what a 2026-07-28 request must, whatever
/// version it names (the test rmcp's Streamable HTTP routing makes; such a
/// request's `Mcp-Session-Id` is never checked).
pub(super) fn sessionless(ctx: &RequestContext<RoleServer>) -> bool {
    is_stateless(ctx)
        || ctx
            .meta
            .missing_required_keys(&rmcp::model::ProtocolVersion::V_2026_07_28)
            .is_empty()
}

/// What a stateless client may be asked, from its declared capabilities.
pub(super) fn capabilities(caps: Option<&ClientCapabilities>) -> Capabilities {
    Capabilities {
        sampling: caps.is_some_and(|c| c.sampling.is_some()),
        elicitation: caps.is_some_and(|c| c.elicitation.is_some()),
        roots: caps.is_some_and(|c| c.roots.is_some()),
    }
}

/// One round of a stateless call: the replaying client to pass to the core,
/// and the means to turn the call's result into this round's MCP answer.
pub(super) struct Stateless {
    replay: Arc<Replay>,
}

/// What a round of a stateless call answers.
pub(super) enum Round<T> {
    /// The call finished (its own result or error).
    Complete(Result<T, CallError>),
    /// Ask the client these, and retry.
    InputRequired(InputRequiredResult),
    /// A tool's fault the model should read (it asked too much, or asked
    /// differently on replay): a tool error, not a protocol error.
    ToolError(String),
}

impl Stateless {
    /// Open round N of a call from the request's `requestState` and
    /// `inputResponses`. A bad state or answer is the client's protocol
    /// error (invalid params).
    pub(super) fn open(
        key: &mrtr::StateKey,
        limits: mrtr::Limits,
        binding: Binding,
        ctx: &RequestContext<RoleServer>,
        state: Option<&str>,
        responses: Option<BTreeMap<String, Value>>,
    ) -> Result<Stateless, ErrorData> {
        let caps = ctx.client_capabilities();
        Replay::open(
            key,
            limits,
            binding,
            state,
            responses.unwrap_or_default(),
            capabilities(caps.as_ref()),
        )
        .map(|replay| Stateless { replay })
        .map_err(mrtr_error)
    }

    pub(super) fn client(&self) -> Arc<dyn model::ClientRequests> {
        self.replay.clone()
    }

    /// Whether this round is ending with questions for the client.
    pub(super) fn waiting(&self) -> bool {
        self.replay.waiting()
    }

    /// The client's answer to `req`, if it already gave one.
    pub(super) fn known(&self, req: &ClientRequest) -> Option<Result<Value, ClientError>> {
        self.replay.known(req)
    }

    /// This round's answer for the call's `result`.
    pub(super) fn finish<T>(&self, result: Result<T, CallError>) -> Result<Round<T>, ErrorData> {
        match self.replay.finish(result) {
            Ok(Outcome::Complete(r)) => Ok(Round::Complete(r)),
            Ok(Outcome::InputRequired { requests, state }) => {
                let mut map = InputRequests::new();
                for r in requests {
                    let request = input_request(&r).map_err(|e| {
                        ErrorData::internal_error(e, Some(serde_json::json!({"key": r.key})))
                    });
                    match request {
                        Ok(q) => {
                            map.insert(r.key, q);
                        }
                        // The tool's question is not a valid MCP request:
                        // the tool's fault, and it says which.
                        Err(e) => return Ok(Round::ToolError(e.message.to_string())),
                    }
                }
                Ok(Round::InputRequired(InputRequiredResult::new(
                    Some(map),
                    Some(state),
                )))
            }
            Err(
                e @ (MrtrError::Diverged { .. }
                | MrtrError::TooManyRounds { .. }
                | MrtrError::StateTooLarge { .. }),
            ) => Ok(Round::ToolError(e.to_string())),
            Err(e) => Err(mrtr_error(e)),
        }
    }
}

/// A tool's question as an MCP input request.
fn input_request(r: &ClientRequest) -> Result<InputRequest, String> {
    let wire = serde_json::json!({"method": r.method, "params": r.params});
    serde_json::from_value(wire).map_err(|e| {
        format!(
            "the tool asked its client a malformed `{}` (key `{}`): {e}",
            r.method, r.key
        )
    })
}

/// A protocol error for the client: what was wrong with its retry.
fn mrtr_error(e: MrtrError) -> ErrorData {
    match &e {
        MrtrError::MissingCapability { capability, .. } => {
            let mut caps = serde_json::Map::new();
            caps.insert(capability.clone(), serde_json::json!({}));
            let required: ClientCapabilities =
                serde_json::from_value(Value::Object(caps)).unwrap_or_default();
            let mut err = ErrorData::missing_required_client_capability(required);
            err.message = e.to_string().into();
            err
        }
        _ => ErrorData::invalid_params(e.to_string(), None),
    }
}
