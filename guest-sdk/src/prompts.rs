//! Prompts: message templates a component offers (MCP `prompts/*`), and
//! completions for their arguments.
//!
//! A prompt is a typed function like a tool: its arguments are a `serde` +
//! `schemars` type of string fields (MCP prompt arguments are strings), from
//! which the SDK derives the argument list (doc comments become
//! descriptions, non-`Option` fields are required).
//!
//! ```
//! use toolhost_guest::{Content, Toolbox, ToolError};
//! use toolhost_guest::prompts::{Message, Prompt};
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! struct ReviewArgs {
//!     /// The code to review.
//!     code: String,
//!     /// What to focus on.
//!     focus: Option<String>,
//! }
//!
//! fn tools() -> Toolbox {
//!     Toolbox::new().prompt(
//!         Prompt::new("review", "Ask for a code review.").title("Code review"),
//!         |a: ReviewArgs| -> Result<Vec<Message>, ToolError> {
//!             let focus = a.focus.unwrap_or_else(|| "anything".into());
//!             Ok(vec![Message::user(format!("Review this, focusing on {focus}:\n{}", a.code))])
//!         },
//!     )
//! }
//! ```

use crate::Content;
use crate::ToolError;
use crate::bindings::exports::toolhost::tool::completions as wit_completions;
use crate::bindings::exports::toolhost::tool::prompts as wit;

/// A prompt's name and how clients show it.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub name: String,
    pub title: Option<String>,
    pub description: Option<String>,
}

impl Prompt {
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Prompt {
        Prompt {
            name: name.into(),
            title: None,
            description: Some(description.into()),
        }
    }
    pub fn title(mut self, t: impl Into<String>) -> Self {
        self.title = Some(t.into());
        self
    }
}

/// Who says a message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Role {
    User,
    Assistant,
}

/// One message of a rendered prompt.
#[derive(Debug, Clone)]
pub struct Message {
    pub role: Role,
    pub content: Content,
}

impl Message {
    /// A user message of text.
    pub fn user(text: impl Into<String>) -> Message {
        Message {
            role: Role::User,
            content: Content::Text(text.into()),
        }
    }
    /// An assistant message of text.
    pub fn assistant(text: impl Into<String>) -> Message {
        Message {
            role: Role::Assistant,
            content: Content::Text(text.into()),
        }
    }
    /// A message of any content (image, audio, embedded resource).
    pub fn new(role: Role, content: Content) -> Message {
        Message { role, content }
    }

    pub(crate) fn into_wit(self) -> wit::Message {
        wit::Message {
            role: match self.role {
                Role::User => wit::Role::User,
                Role::Assistant => wit::Role::Assistant,
            },
            content: self.content.into(),
        }
    }
}

/// What a prompt function may return: its messages, or messages with a
/// description.
pub trait IntoMessages {
    fn into_messages(self) -> (Option<String>, Vec<Message>);
}

impl IntoMessages for Vec<Message> {
    fn into_messages(self) -> (Option<String>, Vec<Message>) {
        (None, self)
    }
}

impl IntoMessages for (String, Vec<Message>) {
    fn into_messages(self) -> (Option<String>, Vec<Message>) {
        (Some(self.0), self.1)
    }
}

pub(crate) type PromptHandler =
    Box<dyn Fn(serde_json::Value) -> Result<(Option<String>, Vec<Message>), ToolError>>;

pub(crate) struct PromptEntry {
    pub(crate) prompt: Prompt,
    pub(crate) arguments: fn() -> Vec<wit::ArgumentDef>,
    pub(crate) handler: PromptHandler,
}

/// The arguments a prompt's argument type derives: its schema's properties
/// (descriptions from doc comments), required unless optional.
pub(crate) fn arguments_of<A: schemars::JsonSchema>() -> Vec<wit::ArgumentDef> {
    let schema = serde_json::to_value(schemars::schema_for!(A)).expect("schema serializes");
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    schema["properties"]
        .as_object()
        .map(|props| {
            props
                .iter()
                .map(|(name, p)| wit::ArgumentDef {
                    name: name.clone(),
                    title: p["title"].as_str().map(String::from),
                    description: p["description"].as_str().map(String::from),
                    required: required.contains(&name.as_str()),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What completions are for.
#[derive(Debug, Clone, PartialEq)]
pub enum Ref {
    /// An argument of the prompt of this name.
    Prompt(String),
    /// A variable of the resource template with this URI template.
    ResourceTemplate(String),
}

impl Ref {
    pub fn prompt(name: impl Into<String>) -> Ref {
        Ref::Prompt(name.into())
    }
    pub fn resource_template(uri_template: impl Into<String>) -> Ref {
        Ref::ResourceTemplate(uri_template.into())
    }
    pub(crate) fn from_wit(r: wit_completions::Reference) -> Ref {
        match r {
            wit_completions::Reference::Prompt(n) => Ref::Prompt(n),
            wit_completions::Reference::ResourceTemplate(t) => Ref::ResourceTemplate(t),
        }
    }
}

/// The arguments already chosen when a completion is asked for.
pub type Context = serde_json::Map<String, serde_json::Value>;

pub(crate) type Completer = Box<dyn Fn(&str, &Context) -> Vec<String>>;

pub(crate) struct CompletionEntry {
    pub(crate) target: Ref,
    pub(crate) argument: String,
    pub(crate) complete: Completer,
}

/// At most this many values go back to the client (MCP's limit).
pub(crate) const MAX_VALUES: usize = 100;

pub(crate) fn complete(
    entries: &[CompletionEntry],
    target: Ref,
    argument: &str,
    value: &str,
    context: &str,
) -> wit_completions::Completion {
    let context: Context = serde_json::from_str(context).unwrap_or_default();
    let mut values = entries
        .iter()
        .find(|e| e.target == target && e.argument == argument)
        .map(|e| (e.complete)(value, &context))
        .unwrap_or_default();
    let total = values.len();
    values.truncate(MAX_VALUES);
    wit_completions::Completion {
        has_more: total > values.len(),
        total: Some(total as u32),
        values,
    }
}
