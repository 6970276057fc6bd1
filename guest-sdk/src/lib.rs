//! Write toolhost tools in Rust.
//!
//! A tool is a typed function: its arguments are a `serde` + `schemars` type,
//! its result anything that implements [`IntoOutput`] (`String`, [`Json`],
//! [`Output`]). The SDK derives the JSON schemas, decodes arguments with
//! precise errors, and generates the component's exports.
//!
//! ```
//! use toolhost_guest::{export, Toolbox, ToolError, Json};
//! use schemars::JsonSchema;
//! use serde::Deserialize;
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct Args { text: String }
//!
//! fn tools() -> Toolbox {
//!     Toolbox::new().tool("shout", "Upper-cases text", |a: Args| -> Result<String, ToolError> {
//!         Ok(a.text.to_uppercase())
//!     })
//! }
//! export!(tools);
//! ```
//!
//! This crate owns the guest half of the `toolhost:tool` contract; it knows
//! nothing of the host's policies, limits or transports.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "toolhost",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "toolhost_guest::bindings",
    });
}

pub mod client;

use bindings::toolhost::tool::host as wit_host;
use bindings::toolhost::tool::types as wit;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use schemars;
pub use serde;
pub use serde_json;

/// Log levels, as MCP defines them.
pub use wit_host::Level;

/// A failed call. The host reports it to the client as a tool error
/// (`isError: true`) whose text is the message.
#[derive(Debug, Clone)]
pub enum ToolError {
    /// The arguments decoded but are not acceptable.
    InvalidArguments(String),
    /// Any other failure.
    Failed(String),
}

impl ToolError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidArguments(msg.into())
    }
    pub fn failed(msg: impl Into<String>) -> Self {
        Self::Failed(msg.into())
    }
}

impl<E: std::fmt::Display> From<E> for ToolError {
    fn from(e: E) -> Self {
        Self::Failed(e.to_string())
    }
}

/// One block of a tool's output.
#[derive(Debug, Clone)]
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
    ResourceText {
        uri: String,
        mime_type: Option<String>,
        text: String,
    },
    ResourceBlob {
        uri: String,
        mime_type: Option<String>,
        data: Vec<u8>,
    },
}

impl Content {
    pub fn text(s: impl Into<String>) -> Self {
        Self::Text(s.into())
    }
    pub fn image(data: impl Into<Vec<u8>>, mime_type: impl Into<String>) -> Self {
        Self::Image {
            data: data.into(),
            mime_type: mime_type.into(),
        }
    }
    pub fn audio(data: impl Into<Vec<u8>>, mime_type: impl Into<String>) -> Self {
        Self::Audio {
            data: data.into(),
            mime_type: mime_type.into(),
        }
    }
}

impl From<Content> for wit::Content {
    fn from(c: Content) -> Self {
        match c {
            Content::Text(t) => wit::Content::Text(t),
            Content::Image { data, mime_type } => {
                wit::Content::Image(wit::Media { data, mime_type })
            }
            Content::Audio { data, mime_type } => {
                wit::Content::Audio(wit::Media { data, mime_type })
            }
            Content::ResourceText {
                uri,
                mime_type,
                text,
            } => wit::Content::Resource(wit::EmbeddedResource {
                uri,
                mime_type,
                contents: wit::ResourceContents::Text(text),
            }),
            Content::ResourceBlob {
                uri,
                mime_type,
                data,
            } => wit::Content::Resource(wit::EmbeddedResource {
                uri,
                mime_type,
                contents: wit::ResourceContents::Blob(data),
            }),
        }
    }
}

/// A free-form result: content blocks plus optional structured JSON.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub content: Vec<Content>,
    pub structured: Option<serde_json::Value>,
}

impl Output {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn with(mut self, c: Content) -> Self {
        self.content.push(c);
        self
    }
    pub fn structured(mut self, v: serde_json::Value) -> Self {
        self.structured = Some(v);
        self
    }
}

/// A structured result: sent as `structuredContent` (with a derived output
/// schema) and, for clients that read only text, as JSON text.
#[derive(Debug, Clone)]
pub struct Json<T>(pub T);

/// What a tool function may return.
pub trait IntoOutput {
    /// The output schema advertised for the tool, if any.
    fn output_schema() -> Option<serde_json::Value> {
        None
    }
    fn into_output(self) -> Result<Output, ToolError>;
}

impl IntoOutput for String {
    fn into_output(self) -> Result<Output, ToolError> {
        Ok(Output::new().with(Content::Text(self)))
    }
}

impl IntoOutput for Output {
    fn into_output(self) -> Result<Output, ToolError> {
        Ok(self)
    }
}

/// The schema of what `T` *serializes* to (fields skipped when empty are
/// not required), unlike `schema_for!`, which describes what it accepts.
fn serialized_schema<T: JsonSchema>() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::default()
        .for_serialize()
        .into_generator();
    serde_json::to_value(generator.into_root_schema_for::<T>()).expect("schema serializes")
}

impl<T: Serialize + JsonSchema> IntoOutput for Json<T> {
    fn output_schema() -> Option<serde_json::Value> {
        Some(serialized_schema::<T>())
    }
    fn into_output(self) -> Result<Output, ToolError> {
        let v = serde_json::to_value(&self.0)
            .map_err(|e| ToolError::failed(format!("result does not serialize: {e}")))?;
        let text = serde_json::to_string(&v).expect("value serializes");
        Ok(Output {
            content: vec![Content::Text(text)],
            structured: Some(v),
        })
    }
}

/// Behaviour hints for clients (MCP tool annotations).
#[derive(Debug, Clone, Default)]
pub struct Annotations {
    pub title: Option<String>,
    pub read_only: Option<bool>,
    pub destructive: Option<bool>,
    pub idempotent: Option<bool>,
    pub open_world: Option<bool>,
}

type Handler = Box<dyn Fn(serde_json::Value) -> Result<Output, ToolError>>;

/// A schema, derived only when `describe` asks for it: a call (a fresh
/// instance each time) never pays for schema generation.
enum SchemaSource {
    Derived(fn() -> Option<serde_json::Value>),
    Fixed(Option<serde_json::Value>),
}

impl SchemaSource {
    fn get(&self) -> Option<serde_json::Value> {
        match self {
            SchemaSource::Derived(f) => f(),
            SchemaSource::Fixed(v) => v.clone(),
        }
    }
}

fn input_schema_of<A: JsonSchema>() -> Option<serde_json::Value> {
    Some(serde_json::to_value(schemars::schema_for!(A)).expect("schema serializes"))
}

struct Entry {
    name: String,
    title: Option<String>,
    description: String,
    input_schema: SchemaSource,
    output_schema: SchemaSource,
    annotations: Annotations,
    handler: Handler,
}

/// The tools one component offers.
#[derive(Default)]
pub struct Toolbox {
    entries: Vec<Entry>,
}

impl Toolbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a tool: `f` takes the decoded arguments and returns its output.
    pub fn tool<A, O, F>(mut self, name: &str, description: &str, f: F) -> Self
    where
        A: DeserializeOwned + JsonSchema + 'static,
        O: IntoOutput + 'static,
        F: Fn(A) -> Result<O, ToolError> + 'static,
    {
        let tool = name.to_string();
        let handler: Handler = Box::new(move |args| {
            let a: A = serde_json::from_value(args)
                .map_err(|e| ToolError::InvalidArguments(format!("arguments of `{tool}`: {e}")))?;
            f(a)?.into_output()
        });
        self.entries.push(Entry {
            name: name.to_string(),
            title: None,
            description: description.to_string(),
            input_schema: SchemaSource::Derived(input_schema_of::<A>),
            output_schema: SchemaSource::Derived(O::output_schema),
            annotations: Annotations::default(),
            handler,
        });
        self
    }

    /// Replace the derived input schema of the last added tool.
    pub fn input_schema(mut self, schema: serde_json::Value) -> Self {
        self.last().input_schema = SchemaSource::Fixed(Some(schema));
        self
    }

    /// Replace (or remove) the output schema of the last added tool.
    pub fn output_schema(mut self, schema: Option<serde_json::Value>) -> Self {
        self.last().output_schema = SchemaSource::Fixed(schema);
        self
    }

    pub fn title(mut self, title: &str) -> Self {
        self.last().title = Some(title.into());
        self.last().annotations.title = Some(title.into());
        self
    }

    /// The last added tool does not modify its environment.
    pub fn read_only(mut self) -> Self {
        let a = &mut self.last().annotations;
        a.read_only = Some(true);
        a.destructive = Some(false);
        self
    }

    /// The last added tool may destroy data.
    pub fn destructive(mut self) -> Self {
        let a = &mut self.last().annotations;
        a.read_only = Some(false);
        a.destructive = Some(true);
        self
    }

    /// Set any annotations of the last added tool, e.g.
    /// `.annotate(|a| a.destructive = Some(false))`.
    pub fn annotate(mut self, f: impl FnOnce(&mut Annotations)) -> Self {
        f(&mut self.last().annotations);
        self
    }

    pub fn idempotent(mut self) -> Self {
        self.last().annotations.idempotent = Some(true);
        self
    }

    /// Whether the last added tool reaches beyond a closed world (e.g. the web).
    pub fn open_world(mut self, open: bool) -> Self {
        self.last().annotations.open_world = Some(open);
        self
    }

    fn last(&mut self) -> &mut Entry {
        self.entries
            .last_mut()
            .expect("call .tool(...) before setting its properties")
    }

    #[doc(hidden)]
    pub fn __describe(&self) -> Vec<wit::ToolDef> {
        self.entries
            .iter()
            .map(|e| wit::ToolDef {
                name: e.name.clone(),
                title: e.title.clone(),
                description: e.description.clone(),
                input_schema: e
                    .input_schema
                    .get()
                    .unwrap_or_else(|| serde_json::json!({"type": "object"}))
                    .to_string(),
                output_schema: e.output_schema.get().map(|s| s.to_string()),
                annotations: wit::Annotations {
                    title: e.annotations.title.clone(),
                    read_only: e.annotations.read_only,
                    destructive: e.annotations.destructive,
                    idempotent: e.annotations.idempotent,
                    open_world: e.annotations.open_world,
                },
            })
            .collect()
    }

    #[doc(hidden)]
    pub fn __call(&self, name: &str, arguments: &str) -> Result<wit::CallResult, wit::ToolError> {
        let entry = self
            .entries
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| wit::ToolError::UnknownTool(name.to_string()))?;
        let args: serde_json::Value = serde_json::from_str(arguments).map_err(|e| {
            wit::ToolError::InvalidArguments(format!("arguments are not JSON: {e}"))
        })?;
        match (entry.handler)(args) {
            Ok(out) => Ok(wit::CallResult {
                content: out.content.into_iter().map(Into::into).collect(),
                structured: out.structured.map(|v| v.to_string()),
            }),
            Err(ToolError::InvalidArguments(m)) => Err(wit::ToolError::InvalidArguments(m)),
            Err(ToolError::Failed(m)) => Err(wit::ToolError::Failed(m)),
        }
    }
}

/// Send a log message to the caller.
pub fn log(level: Level, message: impl AsRef<str>) {
    wit_host::log(level, message.as_ref());
}

/// Report progress of the current call.
pub fn progress(progress: f64, total: Option<f64>, message: Option<&str>) {
    wit_host::progress(progress, total, message);
}

/// Send the calling MCP client a request of its own and wait for its
/// answer: `method` is `sampling/createMessage`, `elicitation/create` or
/// `roots/list`, `params` its MCP params. Works only if the tool's manifest
/// grants it (`[client] requests = ["sampling", "elicitation", "roots"]`)
/// and the caller can answer; otherwise the error says why. See [`client`]
/// for named questions, several in one round, and how stateless clients
/// answer.
pub fn request_client(
    method: &str,
    params: &serde_json::Value,
) -> Result<serde_json::Value, ToolError> {
    let text = wit_host::request_client(method, &params.to_string()).map_err(ToolError::Failed)?;
    serde_json::from_str(&text).map_err(|e| {
        ToolError::failed(format!(
            "the client's answer to `{method}` is not JSON: {e}"
        ))
    })
}

/// Whether the caller has cancelled this call.
pub fn cancelled() -> bool {
    wit_host::cancelled()
}

/// Export the tools returned by a `fn() -> Toolbox` as this component's
/// `toolhost:tool` implementation. Expands to nothing on non-wasm targets,
/// so a tool crate can also be built natively (tests, benchmarks).
#[macro_export]
macro_rules! export {
    ($tools:path) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __ToolhostComponent;
            impl $crate::bindings::exports::toolhost::tool::tool::Guest for __ToolhostComponent {
                fn describe()
                -> ::std::vec::Vec<$crate::bindings::exports::toolhost::tool::tool::ToolDef>
                {
                    $tools().__describe()
                }
                fn call(
                    name: ::std::string::String,
                    arguments: ::std::string::String,
                ) -> ::std::result::Result<
                    $crate::bindings::exports::toolhost::tool::tool::CallResult,
                    $crate::bindings::exports::toolhost::tool::tool::ToolError,
                > {
                    $tools().__call(&name, &arguments)
                }
            }
            $crate::bindings::__export_world!(
                __ToolhostComponent with_types_in $crate::bindings
            );
        };
    };
}
