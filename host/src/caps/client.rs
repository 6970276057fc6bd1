//! The `client` unit: requests a tool may send back to the client that
//! called it (MCP `sampling/createMessage`, `elicitation/create`,
//! `roots/list`).
//!
//! - parse: `[client] requests` of the manifest (`sampling`, `elicitation`,
//!   `roots`);
//! - narrow: the operator's `[client] requests` list, a `max-tokens` cap on
//!   sampling and a per-call request budget. A kind outside the list fails
//!   to load, naming the setting;
//! - prepare: the granted kinds, once;
//! - apply: a [`CallClient`] per sandbox, holding the call's budget, and
//!   (`CallClient::attach`, when a call takes the sandbox) the caller's
//!   client, if any;
//! - enforce: an ungranted method, a call with no client, or a call over
//!   budget is refused; so is a question key that is malformed or used
//!   twice in one call, and params over 256 KiB; sampling params are
//!   filtered (`includeContext` is forced to `"none"`: a tool never reads
//!   the client's other servers' context; `maxTokens` is capped);
//! - wait: a question the client answers only when it retries the call (a
//!   stateless front end) is noted; from then on the guest is told it is
//!   cancelled, and the call ends with `CallErrorKind::InputRequired`
//!   whatever the guest returns.
//!
//! Must not touch: what the client answers (it is the caller's business) or
//! any front end.

use super::AllowList;
use crate::diagnostic::Collector;
use crate::manifest::schema;
use crate::model::{ClientError, ClientRequest, ClientRequests};
use serde_json::Value;
use std::sync::{Arc, Mutex};

/// A kind of request a tool may send its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ClientRequestKind {
    /// `sampling/createMessage`: ask the client's model.
    Sampling,
    /// `elicitation/create`: ask the client's user.
    Elicitation,
    /// `roots/list`: ask for the client's roots.
    Roots,
}

impl ClientRequestKind {
    /// The MCP method.
    pub fn method(self) -> &'static str {
        match self {
            ClientRequestKind::Sampling => "sampling/createMessage",
            ClientRequestKind::Elicitation => "elicitation/create",
            ClientRequestKind::Roots => "roots/list",
        }
    }

    /// The manifest's name for it.
    pub fn name(self) -> &'static str {
        match self {
            ClientRequestKind::Sampling => "sampling",
            ClientRequestKind::Elicitation => "elicitation",
            ClientRequestKind::Roots => "roots",
        }
    }

    /// By manifest name.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "sampling" => Some(ClientRequestKind::Sampling),
            "elicitation" => Some(ClientRequestKind::Elicitation),
            "roots" => Some(ClientRequestKind::Roots),
            _ => None,
        }
    }

    fn from_method(m: &str) -> Option<Self> {
        [
            ClientRequestKind::Sampling,
            ClientRequestKind::Elicitation,
            ClientRequestKind::Roots,
        ]
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
                Some("use `sampling`, `elicitation` or `roots`".into()),
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

/// The most questions any call may ask (the ceiling of `[client]
/// max-requests`); `request-clients` with more traps.
pub(crate) const MAX_REQUESTS_PER_CALL: usize = 10_000;

/// One call's access to its client.
pub(crate) struct CallClient {
    client: Option<Arc<dyn ClientRequests>>,
    granted: Arc<[ClientRequestKind]>,
    max_tokens: u64,
    max_requests: u32,
    left: u32,
    /// Keys of the questions this call asked, in order.
    keys: Vec<String>,
    /// Questions the client answers when it retries the call.
    waiting: Arc<Mutex<Vec<ClientRequest>>>,
}

/// Params of one client request, as JSON text.
const MAX_PARAMS: usize = 256 << 10;

/// The longest answer a question takes (as JSON text): a call holds its
/// questions' answers until its guest reads them, outside its memory limit
/// (found by review: eight 15 MiB answers a call, 723 MB held by the host).
const MAX_ANSWER: usize = 1 << 20;

impl Prepared {
    pub(crate) fn apply(&self, client: Option<Arc<dyn ClientRequests>>) -> CallClient {
        CallClient {
            client,
            granted: self.granted.clone(),
            max_tokens: self.max_tokens,
            max_requests: self.max_requests,
            left: self.max_requests,
            keys: Vec::new(),
            waiting: Arc::default(),
        }
    }
}

impl CallClient {
    /// Give a client prepared ahead (with no caller's client) its call's
    /// client: what it may ask stays what it was prepared with.
    pub(crate) fn attach(&mut self, client: Option<Arc<dyn ClientRequests>>) {
        self.client = client;
    }

    /// A call with nothing granted.
    pub(crate) fn none() -> CallClient {
        CallClient {
            client: None,
            granted: Arc::from([]),
            max_tokens: 0,
            max_requests: 0,
            left: 0,
            keys: Vec::new(),
            waiting: Arc::default(),
        }
    }

    /// Check and filter a request, then send it (the future owns all it
    /// needs, so the store is free while the client answers). `method` may
    /// name the question as `METHOD#KEY`; unnamed ones are numbered.
    pub(crate) fn request(
        &mut self,
        method: String,
        params: String,
    ) -> impl Future<Output = Result<String, String>> + Send + use<> {
        let checked = self.check(&method, &params);
        let client = self.client.clone();
        let waiting = self.waiting.clone();
        async move {
            let req = checked?;
            let client = client.ok_or_else(|| {
                format!(
                    "`{}` is not available: this call did not come from a client that can answer it",
                    req.method
                )
            })?;
            match client.request(req.clone()).await {
                Ok(v) => {
                    let answer = v.to_string();
                    if answer.len() > MAX_ANSWER {
                        return Err(format!(
                            "the client's answer to `{}` is {} bytes; at most {MAX_ANSWER} are taken",
                            req.method,
                            answer.len()
                        ));
                    }
                    Ok(answer)
                }
                Err(e) => {
                    if let ClientError::InputRequired { .. } = e {
                        lock(&waiting).push(req);
                    }
                    Err(e.to_string())
                }
            }
        }
    }

    /// Whether the call waits for its client's answers (it should return).
    /// Ask the call's front end to take the call over as a task (see
    /// [`ClientRequests::run_as_task`]). No client, no task.
    pub(crate) fn run_as_task(&self) -> bool {
        self.client.as_ref().is_some_and(|c| c.run_as_task())
    }

    pub(crate) fn waiting(&self) -> bool {
        !lock(&self.waiting).is_empty()
    }

    /// The questions the call waits for, if any.
    pub(crate) fn take_waiting(&self) -> Vec<ClientRequest> {
        std::mem::take(&mut *lock(&self.waiting))
    }

    fn check(&mut self, method: &str, params: &str) -> Result<ClientRequest, String> {
        let (method, key) = match method.split_once('#') {
            Some((m, k)) => (m, Some(k)),
            None => (method, None),
        };
        let kind = ClientRequestKind::from_method(method)
            .filter(|k| self.granted.contains(k))
            .ok_or_else(|| {
                // The guest's text, cut: a refusal is held until the call's
                // granted questions are answered (found by review: keys
                // and methods of 64 MiB were kept whole).
                format!(
                    "`{}` is not granted to this tool (its manifest needs `[client] requests`)",
                    crate::error::shown_name(method)
                )
            })?;
        let key = match key {
            Some(k) => k.to_string(),
            None => format!("input-{}", self.keys.len() + 1),
        };
        if !valid_key(&key) {
            return Err(format!(
                "`{}` is not a valid request key (1-64 characters of A-Z a-z 0-9 _ - . : /)",
                crate::error::shown_name(&key)
            ));
        }
        if self.keys.contains(&key) {
            return Err(format!(
                "this call already asked its client a question with key `{key}`; each question needs its own key"
            ));
        }
        if self.left == 0 {
            return Err(format!(
                "this call has used all its client requests; the host allows {} per call",
                self.max_requests
            ));
        }
        self.left -= 1;
        if params.len() > MAX_PARAMS {
            return Err(format!(
                "params of `{method}` are {} bytes, over the limit of {MAX_PARAMS}",
                params.len()
            ));
        }
        let mut params: Value = serde_json::from_str(params)
            .map_err(|e| format!("params of `{method}` are not JSON: {e}"))?;
        if !params.is_object() {
            return Err(format!("params of `{method}` must be a JSON object"));
        }
        if kind == ClientRequestKind::Sampling {
            filter_sampling(&mut params, self.max_tokens);
        }
        self.keys.push(key.clone());
        Ok(ClientRequest {
            key,
            method: method.to_string(),
            params,
        })
    }
}

fn lock(m: &Mutex<Vec<ClientRequest>>) -> std::sync::MutexGuard<'_, Vec<ClientRequest>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keys a tool may give its questions: short and printable, so they travel
/// as JSON object keys and read well in errors.
fn valid_key(key: &str) -> bool {
    (1..=64).contains(&key.len())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:/".contains(c))
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
        assert_eq!(p.params["includeContext"], "none");
        assert_eq!(p.params["maxTokens"], 100);
        assert_eq!(p.key, "input-1");
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
        assert!(c.check("ping", "{}").unwrap_err().contains("not granted"));
        let only_elicit = ClientCaps {
            requests: AllowList::only([ClientRequestKind::Elicitation]),
            ..ClientCaps::default()
        };
        let e = prepare(&[ClientRequestKind::Sampling], &only_elicit).unwrap_err();
        assert!(e[0].hint.contains("[client] requests"), "{e:?}");
    }

    /// A review's case: a refusal quoted the guest's whole method or key,
    /// and is held until the call's granted questions are answered.
    #[test]
    fn a_refusal_quotes_a_huge_method_or_key_cut() {
        let mut c = call(&[ClientRequestKind::Elicitation], &ClientCaps::default());
        let huge = "k".repeat(1 << 20);
        let e = c.check(&huge, "{}").unwrap_err();
        assert!(e.len() < 1024 && e.contains("not granted"), "{}", e.len());
        let e = c
            .check(&format!("elicitation/create#{huge}"), "{}")
            .unwrap_err();
        assert!(
            e.len() < 1024 && e.contains("not a valid request key"),
            "{}",
            e.len()
        );
    }

    #[test]
    fn keys_are_checked_and_unique_within_a_call() {
        let mut c = call(&[ClientRequestKind::Elicitation], &ClientCaps::default());
        let r = c.check("elicitation/create#name", "{}").unwrap();
        assert_eq!(
            (r.key.as_str(), r.method.as_str()),
            ("name", "elicitation/create")
        );
        let e = c.check("elicitation/create#name", "{}").unwrap_err();
        assert!(e.contains("already asked"), "{e}");
        let e = c.check("elicitation/create#bad key", "{}").unwrap_err();
        assert!(e.contains("not a valid request key"), "{e}");
        let e = c.check("elicitation/create#", "{}").unwrap_err();
        assert!(e.contains("not a valid request key"), "{e}");
        assert_eq!(c.check("elicitation/create", "{}").unwrap().key, "input-2");
        let big = format!(r#"{{"m":"{}"}}"#, "x".repeat(MAX_PARAMS));
        let e = c.check("elicitation/create", &big).unwrap_err();
        assert!(e.contains("over the limit"), "{e}");
    }
}
