//! The `client` unit: requests a tool may send back to the client that
//! called it (MCP `sampling/createMessage`, `elicitation/create`).
//!
//! - parse: `[client] requests` of the manifest (`sampling`, `elicitation`);
//! - narrow: the operator's `[client] requests` list, a `max-tokens` cap on
//!   sampling and a per-call request budget. A kind outside the list fails
//!   to load, naming the setting;
//! - prepare: the granted kinds, once;
//! - apply: a [`CallClient`] per call, holding the caller's client (if any)
//!   and the call's budget;
//! - enforce: an ungranted method, a call with no client, or a call over
//!   budget is refused; sampling params are filtered (`includeContext` is
//!   forced to `"none"`: a tool never reads the client's other servers'
//!   context; `maxTokens` is capped).
//!
//! Must not touch: what the client answers (it is the caller's business) or
//! any front end.

use super::AllowList;
use crate::diagnostic::Collector;
use crate::manifest::schema;
use crate::model::ClientRequests;
use serde_json::Value;
use std::sync::Arc;

/// A kind of request a tool may send its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ClientRequestKind {
    /// `sampling/createMessage`: ask the client's model.
    Sampling,
    /// `elicitation/create`: ask the client's user.
    Elicitation,
}

impl ClientRequestKind {
    /// The MCP method.
    pub fn method(self) -> &'static str {
        match self {
            ClientRequestKind::Sampling => "sampling/createMessage",
            ClientRequestKind::Elicitation => "elicitation/create",
        }
    }

    /// The manifest's name for it.
    pub fn name(self) -> &'static str {
        match self {
            ClientRequestKind::Sampling => "sampling",
            ClientRequestKind::Elicitation => "elicitation",
        }
    }

    /// By manifest name.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "sampling" => Some(ClientRequestKind::Sampling),
            "elicitation" => Some(ClientRequestKind::Elicitation),
            _ => None,
        }
    }

    fn from_method(m: &str) -> Option<Self> {
        [ClientRequestKind::Sampling, ClientRequestKind::Elicitation]
            .into_iter()
            .find(|k| k.method() == m)
    }
}

impl std::fmt::Display for ClientRequestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The operator's caps (`[client]` in the host config).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientCaps {
    /// Kinds a manifest may ask for; unrestricted: any.
    pub requests: AllowList<ClientRequestKind>,
    /// The largest `maxTokens` a sampling request may ask for; larger ones
    /// are lowered to it.
    pub max_tokens: u64,
    /// Requests one call may make in all.
    pub max_requests: u32,
}

impl Default for ClientCaps {
    fn default() -> Self {
        ClientCaps {
            requests: AllowList::any(),
            max_tokens: 4096,
            max_requests: 8,
        }
    }
}

impl ClientCaps {
    /// Both caps at once.
    pub fn intersect(&self, other: &ClientCaps) -> ClientCaps {
        ClientCaps {
            requests: self.requests.intersect(&other.requests),
            max_tokens: self.max_tokens.min(other.max_tokens),
            max_requests: self.max_requests.min(other.max_requests),
        }
    }
}

/// A kind the operator does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientRefusal {
    pub(crate) kind: ClientRequestKind,
    pub(crate) hint: String,
}

/// Read `[client] requests`; every problem is recorded.
pub(crate) fn parse(raw: &schema::Client, cx: &mut Collector<'_>) -> Vec<ClientRequestKind> {
    let mut out = Vec::new();
    for r in &raw.requests {
        match ClientRequestKind::from_name(r.get_ref()) {
            Some(k) if !out.contains(&k) => out.push(k),
            Some(_) => cx.error(
                Some(r.span()),
                format!("`{}` is listed twice", r.get_ref()),
                None,
            ),
            None => cx.error(
                Some(r.span()),
                format!("`{}` is not a client request a tool may make", r.get_ref()),
                Some("use `sampling` or `elicitation`".into()),
            ),
        }
    }
    out
}

/// The kinds one component may use, with the operator's bounds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Prepared {
    granted: Arc<[ClientRequestKind]>,
    max_tokens: u64,
    max_requests: u32,
}

pub(crate) fn prepare(
    req: &[ClientRequestKind],
    caps: &ClientCaps,
) -> Result<Prepared, Vec<ClientRefusal>> {
    let refused: Vec<ClientRefusal> = req
        .iter()
        .filter(|k| !caps.requests.allows(|a| a == *k))
        .map(|&kind| ClientRefusal {
            kind,
            hint: format!(
                "the host config's `[client] requests` allows {}",
                caps.requests
            ),
        })
        .collect();
    if !refused.is_empty() {
        return Err(refused);
    }
    Ok(Prepared {
        granted: req.into(),
        max_tokens: caps.max_tokens,
        max_requests: caps.max_requests,
    })
}

/// One call's access to its client.
pub(crate) struct CallClient {
    client: Option<Arc<dyn ClientRequests>>,
    granted: Arc<[ClientRequestKind]>,
    max_tokens: u64,
    max_requests: u32,
    left: u32,
}

impl Prepared {
    pub(crate) fn apply(&self, client: Option<Arc<dyn ClientRequests>>) -> CallClient {
        CallClient {
            client,
            granted: self.granted.clone(),
            max_tokens: self.max_tokens,
            max_requests: self.max_requests,
            left: self.max_requests,
        }
    }
}

impl CallClient {
    /// A call with nothing granted.
    pub(crate) fn none() -> CallClient {
        CallClient {
            client: None,
            granted: Arc::from([]),
            max_tokens: 0,
            max_requests: 0,
            left: 0,
        }
    }

    /// Check and filter a request, then send it (the future owns all it
    /// needs, so the store is free while the client answers).
    pub(crate) fn request(
        &mut self,
        method: String,
        params: String,
    ) -> impl Future<Output = Result<String, String>> + Send + use<> {
        let checked = self.check(&method, &params);
        let client = self.client.clone();
        async move {
            let params = checked?;
            let client = client.ok_or_else(|| {
                format!("`{method}` is not available: this call did not come from a client that can answer it")
            })?;
            client.request(method, params).await.map(|v| v.to_string())
        }
    }

    fn check(&mut self, method: &str, params: &str) -> Result<Value, String> {
        let kind = ClientRequestKind::from_method(method)
            .filter(|k| self.granted.contains(k))
            .ok_or_else(|| {
                format!(
                    "`{method}` is not granted to this tool (its manifest needs `[client] requests`)"
                )
            })?;
        if self.left == 0 {
            return Err(format!(
                "this call has used all its client requests; the host allows {} per call",
                self.max_requests
            ));
        }
        self.left -= 1;
        let mut params: Value = serde_json::from_str(params)
            .map_err(|e| format!("params of `{method}` are not JSON: {e}"))?;
        if !params.is_object() {
            return Err(format!("params of `{method}` must be a JSON object"));
        }
        if kind == ClientRequestKind::Sampling {
            filter_sampling(&mut params, self.max_tokens);
        }
        Ok(params)
    }
}

/// A tool never reads the client's other context, and never asks for more
/// tokens than the operator allows.
fn filter_sampling(params: &mut Value, max_tokens: u64) {
    let Some(obj) = params.as_object_mut() else {
        return;
    };
    obj.insert("includeContext".into(), Value::String("none".into()));
    let asked = obj.get("maxTokens").and_then(Value::as_u64);
    let tokens = asked.map_or(max_tokens, |n| n.min(max_tokens));
    obj.insert("maxTokens".into(), Value::from(tokens));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(granted: &[ClientRequestKind], caps: &ClientCaps) -> CallClient {
        prepare(granted, caps).unwrap().apply(None)
    }

    #[test]
    fn sampling_is_filtered_and_budgeted() {
        let caps = ClientCaps {
            max_tokens: 100,
            max_requests: 2,
            ..ClientCaps::default()
        };
        let mut c = call(&[ClientRequestKind::Sampling], &caps);
        let p = c
            .check(
                "sampling/createMessage",
                r#"{"messages":[],"maxTokens":100000,"includeContext":"allServers"}"#,
            )
            .unwrap();
        assert_eq!(p["includeContext"], "none");
        assert_eq!(p["maxTokens"], 100);
        assert!(c.check("sampling/createMessage", "{}").is_ok());
        let e = c.check("sampling/createMessage", "{}").unwrap_err();
        assert!(e.contains("all its client requests"), "{e}");
    }

    #[test]
    fn ungranted_methods_and_kinds_outside_the_operator_list_are_refused() {
        let mut c = call(&[ClientRequestKind::Sampling], &ClientCaps::default());
        assert!(
            c.check("elicitation/create", "{}")
                .unwrap_err()
                .contains("not granted")
        );
        assert!(
            c.check("roots/list", "{}")
                .unwrap_err()
                .contains("not granted")
        );
        let only_elicit = ClientCaps {
            requests: AllowList::only([ClientRequestKind::Elicitation]),
            ..ClientCaps::default()
        };
        let e = prepare(&[ClientRequestKind::Sampling], &only_elicit).unwrap_err();
        assert!(e[0].hint.contains("[client] requests"), "{e:?}");
    }
}
