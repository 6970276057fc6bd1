//! Asking the calling MCP client: sampling, elicitation and roots.
//!
//! A question has a method, params and a key that names it within the call.
//! Over a 2025-11-25 session the host asks the client at once and waits;
//! over 2026-07-28 (stateless) the first run of the call only collects the
//! questions: each one it cannot answer yet fails with
//! [`ClientError::InputRequired`], the tool returns, the client answers, and
//! the host runs the tool again from the start, answering the same questions
//! from the client's replies. So a tool that asks must ask the same
//! questions in the same order for the same arguments, and should keep what
//! it does before asking free of side effects. [`ask_all`] puts several
//! independent questions in one round.
//!
//! ```no_run
//! use toolhost_guest::client::{Ask, ask_all};
//! let name = Ask::elicit("What is your name?", serde_json::json!({
//!     "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]
//! })).key("user_name").send()?;
//! # Ok::<(), toolhost_guest::client::ClientError>(())
//! ```

use crate::host as wit_host;
use serde_json::Value;

/// Why a question got no answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientError {
    /// The client answers when it retries the call: return now (with `?`);
    /// the call is run again and then the answer is there.
    InputRequired(String),
    /// The client cannot answer this kind of question (it did not declare
    /// the capability); a tool may carry on without it.
    Unsupported(String),
    /// Anything else: not granted by the manifest, the client refused, ...
    Failed(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::InputRequired(m)
            | ClientError::Unsupported(m)
            | ClientError::Failed(m) => f.write_str(m),
        }
    }
}

impl ClientError {
    fn from_host(e: wit_host::ClientError) -> ClientError {
        match e {
            wit_host::ClientError::InputRequired(m) => ClientError::InputRequired(m),
            wit_host::ClientError::Unsupported(m) => ClientError::Unsupported(m),
            wit_host::ClientError::Failed(m) => ClientError::Failed(m),
        }
    }
}

/// One question for the client.
#[derive(Debug, Clone)]
pub struct Ask {
    method: String,
    params: Value,
    key: Option<String>,
}

impl Ask {
    /// Any client request by method name and params.
    pub fn new(method: impl Into<String>, params: Value) -> Ask {
        Ask {
            method: method.into(),
            params,
            key: None,
        }
    }

    /// Ask the user to fill in a form (`elicitation/create`, form mode):
    /// `schema` is the requested JSON schema of the answer.
    pub fn elicit(message: impl Into<String>, schema: Value) -> Ask {
        Ask::new(
            "elicitation/create",
            serde_json::json!({"mode": "form", "message": message.into(), "requestedSchema": schema}),
        )
    }

    /// Ask the client's model (`sampling/createMessage`) one user message.
    pub fn sample(prompt: impl Into<String>, max_tokens: u32) -> Ask {
        Ask::new(
            "sampling/createMessage",
            serde_json::json!({
                "messages": [{"role": "user", "content": {"type": "text", "text": prompt.into()}}],
                "maxTokens": max_tokens
            }),
        )
    }

    /// Ask for the client's roots (`roots/list`).
    pub fn roots() -> Ask {
        Ask::new("roots/list", serde_json::json!({}))
    }

    /// Name the question (1-64 of `A-Z a-z 0-9 _ - . : /`, unique within
    /// the call). Without it the host numbers questions `input-1`, ...
    pub fn key(mut self, key: impl Into<String>) -> Ask {
        self.key = Some(key.into());
        self
    }

    /// Ask and wait for the answer (the client's result as JSON).
    pub fn send(self) -> Result<Value, ClientError> {
        let r = wit_host::request_client(&wit_host::ClientRequest {
            key: self.key.clone(),
            method: self.method.clone(),
            params: self.params.to_string(),
        });
        self.answer(r)
    }

    /// The host's answer to this question, parsed.
    fn answer(&self, r: Result<String, wit_host::ClientError>) -> Result<Value, ClientError> {
        let text = r.map_err(ClientError::from_host)?;
        serde_json::from_str(&text).map_err(|e| {
            ClientError::Failed(format!(
                "the client's answer to `{}` is not JSON: {e}",
                self.method
            ))
        })
    }
}

/// Ask several independent questions in one round: every one is put to the
/// client before any answer is needed, so a stateless client answers them
/// all in one retry. The answers come back in order.
pub fn ask_all(asks: impl IntoIterator<Item = Ask>) -> Vec<Result<Value, ClientError>> {
    let asks: Vec<Ask> = asks.into_iter().collect();
    let requests: Vec<wit_host::ClientRequest> = asks
        .iter()
        .map(|a| wit_host::ClientRequest {
            key: a.key.clone(),
            method: a.method.clone(),
            params: a.params.to_string(),
        })
        .collect();
    wit_host::request_clients(&requests)
        .into_iter()
        .zip(&asks)
        .map(|(r, a)| a.answer(r))
        .collect()
}
