//! The stream-json wire format of the `claude` CLI: the messages it prints
//! (system, assistant, user, result, stream events) and the control
//! protocol's requests and responses in both directions.
//!
//! Parsing is forward-compatible: unknown message types become
//! [`Message::Other`], unknown fields are kept in `extra`, and a known type
//! whose shape changed falls back to `Other` rather than failing the session.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// One message of the conversation, as the CLI prints it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Message {
    /// `init`, status and task messages.
    System(SystemMessage),
    /// The model's turn: text, thinking and tool uses.
    Assistant(AssistantMessage),
    /// The user side: the prompt and tool results.
    User(UserMessage),
    /// The end of a turn.
    Result(ResultMessage),
    /// A partial-message event (`--include-partial-messages`).
    StreamEvent(StreamEvent),
    /// A message type this version does not know, kept as it came.
    Other(Value),
}

impl Message {
    /// Parse one line's JSON. Never fails: what does not fit a known shape
    /// is kept as `Other`.
    pub(crate) fn parse(v: Value) -> Message {
        // Read from the value in place: no copy of the whole line's tree.
        fn typed<T: for<'de> Deserialize<'de>>(v: &Value) -> Option<T> {
            T::deserialize(v).ok()
        }
        let parsed = match v.get("type").and_then(Value::as_str) {
            Some("system") => typed(&v).map(Message::System),
            Some("assistant") => typed(&v).map(Message::Assistant),
            Some("user") => typed(&v).map(Message::User),
            Some("result") => typed(&v).map(Message::Result),
            Some("stream_event") => typed(&v).map(Message::StreamEvent),
            _ => None,
        };
        parsed.unwrap_or(Message::Other(v))
    }

    /// The message as JSON (what the CLI printed, modulo field order).
    pub fn to_json(&self) -> Value {
        let (ty, v) = match self {
            Message::System(m) => ("system", serde_json::to_value(m)),
            Message::Assistant(m) => ("assistant", serde_json::to_value(m)),
            Message::User(m) => ("user", serde_json::to_value(m)),
            Message::Result(m) => ("result", serde_json::to_value(m)),
            Message::StreamEvent(m) => ("stream_event", serde_json::to_value(m)),
            Message::Other(v) => return v.clone(),
        };
        let mut v = v.unwrap_or(Value::Null);
        if let Value::Object(o) = &mut v {
            o.insert("type".into(), json!(ty));
        }
        v
    }

    /// The subagent this message belongs to (`None`: the main thread).
    pub fn agent_id(&self) -> Option<&str> {
        match self {
            Message::Assistant(m) => m.agent_id.as_deref(),
            Message::User(m) => m.agent_id.as_deref(),
            _ => None,
        }
    }
}

/// `system` messages: `init` (tools, MCP servers, model), status changes,
/// task lifecycle and whatever else the CLI reports; all fields kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SystemMessage {
    /// `init`, `status`, `task_started`, …
    pub subtype: String,
    /// Every other field, as the CLI sent it.
    #[serde(flatten)]
    pub data: Map<String, Value>,
}

impl SystemMessage {
    /// For `init`: the tools the main thread has.
    pub fn tools(&self) -> Vec<&str> {
        self.data
            .get("tools")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }
}

/// One block of a message's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ContentBlock {
    /// Text the model wrote.
    Text {
        /// The text.
        text: String,
    },
    /// The model's reasoning.
    Thinking {
        /// The reasoning text.
        thinking: String,
        /// The API's signature over it, when given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
    },
    /// The model calls a tool (`mcp__SERVER__TOOL` for toolhost's).
    ToolUse {
        /// The tool use's id, which its result refers to.
        id: String,
        /// The tool's name as the model sees it.
        name: String,
        /// The arguments.
        #[serde(default)]
        input: Value,
    },
    /// A tool's result, in a user message.
    ToolResult {
        /// The [`ContentBlock::ToolUse`] it answers.
        tool_use_id: String,
        /// The result's content (a string or content blocks; see
        /// [`ContentBlock::result_text`]).
        #[serde(default)]
        content: Value,
        /// Whether the tool failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
    },
    /// A block type this version does not know.
    #[serde(untagged)]
    Other(Value),
}

impl ContentBlock {
    /// The text of a tool result's content (string or text blocks).
    pub fn result_text(content: &Value) -> String {
        match content {
            Value::String(s) => s.clone(),
            Value::Array(a) => a
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }
}

/// The API message inside an assistant message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ApiMessage {
    /// The model that answered.
    #[serde(default)]
    pub model: Option<String>,
    /// What it said and did, in order.
    #[serde(default)]
    pub content: Vec<ContentBlock>,
    /// Token usage, as the API reported it.
    #[serde(default)]
    pub usage: Option<Value>,
    /// Every other field, as the CLI sent it.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The model's side of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AssistantMessage {
    /// The API message: model, content blocks, usage.
    pub message: ApiMessage,
    /// The `Task` tool use this message runs under (a subagent's).
    #[serde(default)]
    pub parent_tool_use_id: Option<String>,
    /// Set on a subagent's messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The subagent's name (its `agents` key), on a subagent's messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subagent_type: Option<String>,
    /// The CLI's session id.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Every other field, as the CLI sent it.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The user side of the conversation: prompts and tool results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UserMessage {
    /// The role and content.
    pub message: UserContent,
    /// The `Task` tool use this message runs under (a subagent's).
    #[serde(default)]
    pub parent_tool_use_id: Option<String>,
    /// Set on a subagent's messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The subagent's name (its `agents` key), on a subagent's messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subagent_type: Option<String>,
    /// The CLI's session id.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Every other field, as the CLI sent it.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The body of a [`UserMessage`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UserContent {
    /// `user`, when given.
    #[serde(default)]
    pub role: Option<String>,
    /// A prompt's text, or blocks (tool results).
    pub content: UserBody,
    /// Every other field, as the CLI sent it.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What a [`UserContent`] holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UserBody {
    /// Plain text (a prompt).
    Text(String),
    /// Content blocks (tool results, or text blocks).
    Blocks(Vec<ContentBlock>),
}

/// The end of a turn: outcome, usage and cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ResultMessage {
    /// `success`, or why the turn ended without one
    /// (`error_max_turns`, `error_during_execution`, …).
    pub subtype: String,
    /// Whether the turn failed.
    #[serde(default)]
    pub is_error: bool,
    /// Model turns taken.
    #[serde(default)]
    pub num_turns: u32,
    /// Wall time of the turn.
    #[serde(default)]
    pub duration_ms: u64,
    /// Time spent waiting for the API.
    #[serde(default)]
    pub duration_api_ms: u64,
    /// What the turn cost, as the CLI reckons it.
    #[serde(default)]
    pub total_cost_usd: Option<f64>,
    /// Token usage.
    #[serde(default)]
    pub usage: Option<Value>,
    /// The final answer (on success).
    #[serde(default)]
    pub result: Option<String>,
    /// The CLI's session id.
    #[serde(default)]
    pub session_id: Option<String>,
    /// The API's stop reason for the last model turn.
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// Tool uses that were refused (by a hook, a rule or `can_use_tool`).
    #[serde(default)]
    pub permission_denials: Vec<Value>,
    /// Every other field, as the CLI sent it.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A raw API streaming event (`--include-partial-messages`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StreamEvent {
    /// The API's event, as sent.
    pub event: Value,
    /// The `Task` tool use this event runs under (a subagent's).
    #[serde(default)]
    pub parent_tool_use_id: Option<String>,
    /// The CLI's session id.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Every other field, as the CLI sent it.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A control request the CLI sent us.
#[derive(Debug, Clone)]
pub(crate) struct InboundRequest {
    pub request_id: String,
    pub request: Inbound,
}

/// What the CLI asks of us.
#[derive(Debug, Clone)]
pub(crate) enum Inbound {
    /// May this tool run (`--permission-prompt-tool stdio`)?
    CanUseTool {
        tool_name: String,
        input: Value,
        tool_use_id: Option<String>,
        agent_id: Option<String>,
        raw: Value,
    },
    /// Run the hook callback registered under `callback_id`.
    HookCallback { callback_id: String, input: Value },
    /// A JSON-RPC message for the SDK MCP server `server_name`.
    McpMessage { server_name: String, message: Value },
    /// A subtype this version does not handle (answered with an error).
    Unknown { subtype: String },
}

impl InboundRequest {
    /// Parse a `control_request` line, taken apart rather than copied (a
    /// review's case: one 32 MiB line was held four times, as the line's
    /// tree, the request, its input and the request again). `Err` names
    /// what is missing.
    pub(crate) fn parse(mut v: Value) -> Result<InboundRequest, String> {
        let request_id =
            Self::request_id(&v).ok_or_else(|| "control_request without request_id".to_string())?;
        let mut r = v.get_mut("request").map(Value::take).unwrap_or(Value::Null);
        let s = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_string);
        let subtype = s("subtype").unwrap_or_default();
        let request = match subtype.as_str() {
            "can_use_tool" => {
                let tool_name = s("tool_name").ok_or("can_use_tool without tool_name")?;
                let (tool_use_id, agent_id) = (s("tool_use_id"), s("agent_id"));
                // The input twice: as itself, and in the request handed
                // to the permission callback whole.
                let input = r.get("input").cloned().unwrap_or_else(|| json!({}));
                Inbound::CanUseTool {
                    tool_name,
                    input,
                    tool_use_id,
                    agent_id,
                    raw: r,
                }
            }
            "hook_callback" => {
                let callback_id = s("callback_id").ok_or("hook_callback without callback_id")?;
                Inbound::HookCallback {
                    callback_id,
                    input: r.get_mut("input").map(Value::take).unwrap_or(Value::Null),
                }
            }
            "mcp_message" => {
                let server_name = s("server_name").ok_or("mcp_message without server_name")?;
                Inbound::McpMessage {
                    server_name,
                    message: r
                        .get_mut("message")
                        .map(Value::take)
                        .ok_or("mcp_message without message")?,
                }
            }
            _ => Inbound::Unknown { subtype },
        };
        Ok(InboundRequest {
            request_id,
            request,
        })
    }
}

impl InboundRequest {
    /// The `request_id` of a `control_request` line, as it is answered: a
    /// string, or a number as text. `None` when there is none to answer.
    /// [`InboundRequest::parse`] reads it the same way, so a request that
    /// fails to parse is still answered under the id it would have had.
    pub(crate) fn request_id(v: &Value) -> Option<String> {
        match v.get("request_id") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// A successful control response.
pub(crate) fn success(request_id: &str, response: Value) -> Value {
    json!({"type": "control_response", "response": {
        "subtype": "success", "request_id": request_id, "response": response}})
}

/// An error control response.
pub(crate) fn error(request_id: &str, message: &str) -> Value {
    json!({"type": "control_response", "response": {
        "subtype": "error", "request_id": request_id, "error": message}})
}

/// A control request from us to the CLI.
pub(crate) fn request(request_id: &str, request: Value) -> Value {
    json!({"type": "control_request", "request_id": request_id, "request": request})
}

/// A user prompt.
pub(crate) fn user_prompt(text: &str) -> Value {
    json!({"type": "user", "session_id": "", "parent_tool_use_id": null,
           "message": {"role": "user", "content": text}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_types_and_fields_survive() {
        let v = json!({"type": "brand_new", "x": 1});
        assert_eq!(Message::parse(v.clone()), Message::Other(v));
        let r = Message::parse(
            json!({"type": "result", "subtype": "success", "is_error": false,
            "num_turns": 2, "total_cost_usd": 0.5, "result": "hi", "future_field": [1]}),
        );
        let Message::Result(r) = r else { panic!() };
        assert_eq!(r.num_turns, 2);
        assert_eq!(r.result.as_deref(), Some("hi"));
        assert_eq!(r.extra["future_field"], json!([1]));
        let a = Message::parse(json!({"type": "assistant", "message": {"content": [
            {"type": "text", "text": "t"}, {"type": "hologram", "z": 3},
            {"type": "tool_use", "id": "1", "name": "n", "input": {"a": 1}}]}}));
        let Message::Assistant(a) = a else { panic!() };
        assert!(matches!(&a.message.content[1], ContentBlock::Other(v) if v["z"] == 3));
        assert!(matches!(&a.message.content[2], ContentBlock::ToolUse { name, .. } if name == "n"));
    }

    #[test]
    fn inbound_requests() {
        let r = InboundRequest::parse(json!({"type": "control_request", "request_id": "r1",
            "request": {"subtype": "mcp_message", "server_name": "s", "message": {"jsonrpc": "2.0"}}}))
        .unwrap();
        assert!(
            matches!(r.request, Inbound::McpMessage { ref server_name, .. } if server_name == "s")
        );
        let r = InboundRequest::parse(json!({"request_id": "r2", "request": {"subtype": "zzz"}}))
            .unwrap();
        assert!(matches!(r.request, Inbound::Unknown { ref subtype } if subtype == "zzz"));
        assert!(InboundRequest::parse(json!({"request": {}})).is_err());
        // A numeric id is read as text, also when the request is malformed,
        // so that its error reply carries it.
        let bad = json!({"request_id": 42, "request": {"subtype": "can_use_tool"}});
        assert!(InboundRequest::parse(bad.clone()).is_err());
        assert_eq!(InboundRequest::request_id(&bad).as_deref(), Some("42"));
    }
}
