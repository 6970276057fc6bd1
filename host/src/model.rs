//! The shapes that cross the core: tool definitions, results and the events a
//! running tool emits. Protocol-neutral: front ends translate them.
//!
//! Must not touch: any protocol's wire format.

use serde_json::Value;
use std::sync::Arc;

/// Behaviour hints (MCP tool annotations). The tool's own word, except
/// where its grants contradict it: a tool with a read-write directory is
/// never read-only, one with a network grant is always open-world.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct Annotations {
    /// A human-readable title.
    pub title: Option<String>,
    /// The tool does not modify its environment.
    pub read_only: Option<bool>,
    /// The tool may destroy data.
    pub destructive: Option<bool>,
    /// Calling it twice with the same arguments has no further effect.
    pub idempotent: Option<bool>,
    /// The tool reaches beyond the host (the network).
    pub open_world: Option<bool>,
}

/// A tool as its component describes it (annotations made honest by its
/// grants).
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct ToolDef {
    /// Unique within a scope.
    pub name: Arc<str>,
    /// A human-readable title.
    pub title: Option<String>,
    /// What the tool does, for the model.
    pub description: String,
    /// JSON Schema (an object schema) of the arguments.
    pub input_schema: Arc<serde_json::Map<String, Value>>,
    /// JSON Schema of the structured result, if the tool declares one.
    pub output_schema: Option<Arc<serde_json::Map<String, Value>>>,
    /// Behaviour hints.
    pub annotations: Annotations,
    /// Whether a call may run as a task (MCP tasks extension).
    pub task_support: TaskSupport,
}

/// Whether a tool's calls may run as tasks (MCP tasks extension, SEP-2663):
/// the caller gets a task handle at once and polls for the result, while
/// the call runs on, in its sandbox and under its limits like any call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum TaskSupport {
    /// Always answered in the request (the default).
    #[default]
    Forbidden,
    /// A task if the caller can follow one (once the tool asks to, or has
    /// run for a while); else answered in the request.
    Optional,
    /// Only for callers that can follow a task; others are refused.
    Required,
}

/// One block of a result.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Content {
    /// Text.
    Text(String),
    /// An image.
    Image {
        /// The bytes.
        data: Vec<u8>,
        /// E.g. `image/png`.
        mime_type: String,
    },
    /// Audio.
    Audio {
        /// The bytes.
        data: Vec<u8>,
        /// E.g. `audio/wav`.
        mime_type: String,
    },
    /// An embedded resource.
    Resource {
        /// Its URI.
        uri: String,
        /// Its MIME type, if known.
        mime_type: Option<String>,
        /// Its contents.
        contents: ResourceContents,
    },
}

impl Content {
    /// Its payload's size in bytes (text, data, URI and MIME type); binary
    /// data counts as sent, base64-encoded.
    pub fn size(&self) -> usize {
        let b64 = |n: usize| n.div_ceil(3) * 4;
        match self {
            Content::Text(t) => t.len(),
            Content::Image { data, mime_type } | Content::Audio { data, mime_type } => {
                b64(data.len()) + mime_type.len()
            }
            Content::Resource {
                uri,
                mime_type,
                contents,
            } => {
                uri.len()
                    + mime_type.as_ref().map_or(0, String::len)
                    + match contents {
                        ResourceContents::Text(t) => t.len(),
                        ResourceContents::Blob(b) => b64(b.len()),
                    }
            }
        }
    }
}

/// The contents of an embedded resource.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ResourceContents {
    /// Text.
    Text(String),
    /// Binary data.
    Blob(Vec<u8>),
}

/// A successful call's result.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct ToolOutput {
    /// The content blocks.
    pub content: Vec<Content>,
    /// The structured result, checked against the tool's output schema.
    pub structured: Option<Value>,
}

impl ToolOutput {
    /// Its size in bytes: every block's text or data and the structured
    /// result as JSON (what a tenant's `output-bytes-per-minute` counts).
    pub fn size(&self) -> u64 {
        let blocks: usize = self.content.iter().map(Content::size).sum();
        let structured = self
            .structured
            .as_ref()
            .map_or(0, |v| serde_json::to_string(v).map_or(0, |s| s.len()));
        (blocks + structured) as u64
    }

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
#[allow(missing_docs, reason = "the syslog severities")]
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
#[non_exhaustive]
pub enum CallEvent {
    /// A log message (MCP `notifications/message`).
    Log {
        /// Its severity.
        level: LogLevel,
        /// Its text.
        message: String,
    },
    /// Progress (MCP `notifications/progress`).
    Progress {
        /// How far.
        progress: f64,
        /// Out of how much, if known.
        total: Option<f64>,
        /// What is happening.
        message: Option<String>,
    },
    /// The last event of a call that lost some: `count` events were dropped
    /// (the call's event budget ran out, or its caller was not reading).
    Dropped {
        /// How many.
        count: u64,
    },
}

/// Where a call's events go: a bounded queue. A guest never waits for its
/// caller: when the queue is full (the caller is not reading) or the call's
/// event budget is spent, events are dropped and counted, and the
/// [`EventStream`] ends with one [`CallEvent::Dropped`].
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: tokio::sync::mpsc::Sender<Queued>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

/// The receiving end of an [`EventSink`].
#[derive(Debug)]
pub struct EventStream {
    rx: tokio::sync::mpsc::Receiver<Queued>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
    done: bool,
}

/// An event waiting for its caller, and the charge to its call's memory
/// it holds until taken (a guest's events are host memory it caused:
/// `caps::stdio`).
struct Queued {
    event: CallEvent,
    _charge: Option<crate::caps::limits::HostCharge>,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.event.fmt(f)
    }
}

impl EventSink {
    /// A sink holding at most `capacity` undelivered events, and its stream.
    pub fn channel(capacity: usize) -> (EventSink, EventStream) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        (
            EventSink {
                tx,
                dropped: dropped.clone(),
            },
            EventStream {
                rx,
                dropped,
                done: false,
            },
        )
    }

    /// Queue `event`, or count it as dropped if the queue is full.
    pub fn send(&self, event: CallEvent) {
        self.queue(event, None);
    }

    /// [`EventSink::send`], `charge` held until the event is taken.
    pub(crate) fn queue(&self, event: CallEvent, charge: Option<crate::caps::limits::HostCharge>) {
        let queued = Queued {
            event,
            _charge: charge,
        };
        if self.tx.try_send(queued).is_err() {
            self.count_dropped();
        }
    }

    pub(crate) fn count_dropped(&self) {
        self.dropped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl EventStream {
    /// The next event; after the last sink is gone, one
    /// [`CallEvent::Dropped`] if any were dropped, then `None`.
    pub async fn recv(&mut self) -> Option<CallEvent> {
        if let Some(q) = self.rx.recv().await {
            return Some(q.event);
        }
        if self.done {
            return None;
        }
        self.done = true;
        match self.dropped.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            count => Some(CallEvent::Dropped { count }),
        }
    }
}

/// A question a running tool puts to the client behind its call: an MCP
/// client request (`sampling/createMessage`, `elicitation/create`,
/// `roots/list`) and its params, already checked and filtered by the
/// tool's `[client]` grant.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ClientRequest {
    /// Names the question within its call (unique per call): chosen by the
    /// tool, or numbered by the host (`input-1`, `input-2`, ...). Stateless
    /// front ends send it to the client as the input request's key.
    pub key: String,
    /// The MCP method.
    pub method: String,
    /// Its params (a JSON object).
    pub params: Value,
}

/// Why the client gave no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The client answers with the call's next round (a stateless front
    /// end): the tool should return now; it is run again with the answer.
    /// A call that got this ends with [`CallErrorKind::InputRequired`](crate::CallErrorKind::InputRequired)
    /// whatever the guest returns.
    #[error(
        "input required: the client answers `{method}` (key `{key}`) when it retries the call; return now, the call will be run again with the answer"
    )]
    InputRequired {
        /// The question's key.
        key: String,
        /// Its method.
        method: String,
    },
    /// The client did not declare the capability this request needs.
    #[error(
        "the client cannot answer `{method}`: it did not declare the `{capability}` capability"
    )]
    Unsupported {
        /// The method asked.
        method: String,
        /// The client capability it needs.
        capability: String,
    },
    /// Anything else (the client refused, the transport failed, ...).
    #[error("{0}")]
    Failed(String),
}

/// The client behind a call, for the requests a tool may send it. Front
/// ends that can reach their client provide one: a session's peer (asks at
/// once) or a replay of a stateless call's answers (the MCP front end's
/// input-required results); the manifest decides which methods a tool may
/// use, and the operator's caps filter the params.
pub trait ClientRequests: Send + Sync {
    /// Ask `req`; the client's result, or why there is none.
    fn request(
        &self,
        req: ClientRequest,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Value, ClientError>> + Send>>;

    /// The running tool asks to go on as a task (its tool supports tasks):
    /// the front end answers the caller with a task handle now and takes
    /// the call's result (and its later questions) through the task. True
    /// if the call now runs as a task. Front ends without tasks keep this
    /// default, which declines.
    fn run_as_task(&self) -> bool {
        false
    }
}
