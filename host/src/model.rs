//! The shapes that cross the core: tool definitions, results and the events a
//! running tool emits. Protocol-neutral: front ends translate them.

use serde_json::Value;
use std::sync::Arc;

/// Behaviour hints from the tool (MCP tool annotations).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Annotations {
    pub title: Option<String>,
    pub read_only: Option<bool>,
    pub destructive: Option<bool>,
    pub idempotent: Option<bool>,
    pub open_world: Option<bool>,
}

/// A tool as the component describes it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ToolDef {
    pub name: Arc<str>,
    pub title: Option<String>,
    pub description: String,
    pub input_schema: Arc<serde_json::Map<String, Value>>,
    pub output_schema: Option<Arc<serde_json::Map<String, Value>>>,
    pub annotations: Annotations,
}

/// One block of a result.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Text(String),
    Image {
        data: Vec<u8>,
        mime_type: String,
    },
    Audio {
        data: Vec<u8>,
        mime_type: String,
    },
    Resource {
        uri: String,
        mime_type: Option<String>,
        contents: ResourceContents,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResourceContents {
    Text(String),
    Blob(Vec<u8>),
}

/// A successful call's result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ToolOutput {
    pub content: Vec<Content>,
    pub structured: Option<Value>,
}

impl ToolOutput {
    /// The text of all text blocks, joined by newlines.
    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(|c| match c {
                Content::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// MCP log levels, in increasing severity.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Notice,
    Warning,
    Error,
    Critical,
    Alert,
    Emergency,
}

/// Something a running tool told its caller.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    Log {
        level: LogLevel,
        message: String,
    },
    Progress {
        progress: f64,
        total: Option<f64>,
        message: Option<String>,
    },
}

/// Where a call's events go. Unbounded so a guest never blocks on a slow
/// client; the number of events a call can emit is bounded by its limits.
pub type EventSink = tokio::sync::mpsc::UnboundedSender<CallEvent>;

/// The client behind a call, for the requests a tool may send it
/// (`sampling/createMessage`, `elicitation/create`). Front ends that can
/// reach their client (MCP) provide one; the manifest decides which methods a
/// tool may use.
pub trait ClientRequests: Send + Sync {
    fn request(
        &self,
        method: String,
        params: Value,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Value, String>> + Send>>;
}
