#![doc = include_str!("../README.md")]
//!
//! ## The crate
//!
//! A component may also serve resources ([`resources`]) and prompts with
//! completions for their arguments ([`prompts`]), and ask its calling client
//! questions ([`client`]). Natively, [`testing`] stands in for the host, so
//! a tool crate's own tests can run tools that use host services.
//!
//! This crate owns the guest half of the `toolhost:tool@0.2.0` contract; it
//! knows nothing of the host's policies, limits or transports.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit/tool.wit",
        world: "toolhost",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "toolhost_guest::bindings",
    });
}

mod arena;
pub mod client;
mod host;
pub mod prompts;
pub mod resources;
// Documented on every target, so that links to it resolve; compiled natively.
#[cfg(any(not(target_arch = "wasm32"), doc))]
pub mod testing;

use bindings::toolhost::tool::types as wit;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[doc(hidden)]
pub use arena::cabi_realloc as __cabi_realloc;
pub use arena::{ARENA_BYTES, Arena};
pub use schemars;
pub use serde;
pub use serde_json;

/// Log levels, as MCP defines them.
pub use bindings::toolhost::tool::host::Level;

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

/// Whether a tool's calls may run as tasks (MCP tasks extension): the
/// client gets a task handle at once and polls for the result. For tools
/// that take long.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum TaskSupport {
    /// Always answered in the request.
    #[default]
    Forbidden,
    /// A task when the client supports tasks.
    Optional,
    /// Only as a task.
    Required,
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

/// A tool's handler: gets the tool's name (for its errors) and the call's
/// arguments.
type Handler = Box<dyn Fn(&str, Arguments<'_>) -> Result<Output, ToolError>>;

/// A call's arguments as they arrive: the host's JSON text, decoded
/// straight into the tool's argument type (no `serde_json::Value` in
/// between: a call in a fresh instance pays for every allocation), or a
/// native caller's value ([`Toolbox::call`]).
enum Arguments<'a> {
    Text(&'a str),
    Value(serde_json::Value),
}

impl Arguments<'_> {
    /// `A` from the arguments, or the error the caller gets: text that is
    /// not JSON at all, or JSON that does not fit tool `tool`'s arguments.
    fn decode<A: DeserializeOwned>(self, tool: &str) -> Result<A, ToolError> {
        let decoded = match self {
            Arguments::Text(text) => serde_json::from_str(text),
            Arguments::Value(v) => serde_json::from_value(v),
        };
        decoded.map_err(|e| {
            ToolError::InvalidArguments(if e.is_syntax() || e.is_eof() {
                format!("arguments are not JSON: {e}")
            } else {
                format!("arguments of `{tool}`: {e}")
            })
        })
    }
}

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
    task_support: TaskSupport,
    handler: Handler,
}

/// The tools (and resources, prompts, completions) one component offers.
#[derive(Default)]
pub struct Toolbox {
    entries: Vec<Entry>,
    resources: resources::Resources,
    prompts: Vec<prompts::PromptEntry>,
    completions: Vec<prompts::CompletionEntry>,
}

/// One tool: its name, description and handler, and how clients should
/// see it. Built on its own and handed to [`Toolbox::tool`]:
///
/// ```
/// use toolhost_guest::{Tool, Toolbox, ToolError};
/// # #[derive(serde::Deserialize, schemars::JsonSchema)] struct Args { text: String }
/// let toolbox = Toolbox::new().tool(
///     Tool::new("shout", "Upper-cases text", |a: Args| -> Result<String, ToolError> {
///         Ok(a.text.to_uppercase())
///     })
///     .title("Shout")
///     .read_only()
///     .idempotent(),
/// );
/// ```
pub struct Tool {
    entry: Entry,
}

impl Tool {
    /// A tool called `name`: `f` takes the decoded arguments (their JSON
    /// Schema derived from `A`) and returns its output (an output schema
    /// derived from `O` where it has one, e.g. [`Json`]).
    pub fn new<A, O, F>(name: &str, description: &str, f: F) -> Tool
    where
        A: DeserializeOwned + JsonSchema + 'static,
        O: IntoOutput + 'static,
        F: Fn(A) -> Result<O, ToolError> + 'static,
    {
        let handler: Handler = Box::new(move |tool, args| f(args.decode(tool)?)?.into_output());
        Tool {
            entry: Entry {
                name: name.to_string(),
                title: None,
                description: description.to_string(),
                input_schema: SchemaSource::Derived(input_schema_of::<A>),
                output_schema: SchemaSource::Derived(O::output_schema),
                annotations: Annotations::default(),
                task_support: TaskSupport::Forbidden,
                handler,
            },
        }
    }

    /// Whether calls may run as tasks (default: never).
    pub fn task_support(mut self, t: TaskSupport) -> Self {
        self.entry.task_support = t;
        self
    }

    /// Replace the derived input schema.
    pub fn input_schema(mut self, schema: serde_json::Value) -> Self {
        self.entry.input_schema = SchemaSource::Fixed(Some(schema));
        self
    }

    /// Replace (or, with `None`, remove) the derived output schema.
    pub fn output_schema(mut self, schema: Option<serde_json::Value>) -> Self {
        self.entry.output_schema = SchemaSource::Fixed(schema);
        self
    }

    /// A human-readable name (also its `title` annotation).
    pub fn title(mut self, title: &str) -> Self {
        self.entry.title = Some(title.into());
        self.entry.annotations.title = Some(title.into());
        self
    }

    /// The tool does not modify its environment.
    pub fn read_only(mut self) -> Self {
        let a = &mut self.entry.annotations;
        a.read_only = Some(true);
        a.destructive = Some(false);
        self
    }

    /// The tool may destroy data.
    pub fn destructive(mut self) -> Self {
        let a = &mut self.entry.annotations;
        a.read_only = Some(false);
        a.destructive = Some(true);
        self
    }

    /// Calling it again with the same arguments changes nothing more.
    pub fn idempotent(mut self) -> Self {
        self.entry.annotations.idempotent = Some(true);
        self
    }

    /// Whether the tool reaches beyond a closed world (e.g. the web).
    pub fn open_world(mut self, open: bool) -> Self {
        self.entry.annotations.open_world = Some(open);
        self
    }

    /// Set any annotations, e.g. `.annotate(|a| a.destructive = Some(false))`.
    pub fn annotate(mut self, f: impl FnOnce(&mut Annotations)) -> Self {
        f(&mut self.entry.annotations);
        self
    }
}

impl Toolbox {
    /// An empty toolbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `tool`.
    pub fn tool(mut self, tool: Tool) -> Self {
        self.entries.push(tool.entry);
        self
    }

    /// Call tool `name` with `arguments`, natively: what the host would get,
    /// for a tool crate's own unit tests (no wasm, no host). There is no
    /// host here: a tool that uses host services ([`log`], [`progress`],
    /// [`cancelled`], [`run_as_task`], [`request_client`], [`client`])
    /// panics unless it runs under a fake one: call it with
    /// [`testing::FakeHost::call`] instead, which also tells what it logged,
    /// reported and asked.
    ///
    /// ```
    /// use toolhost_guest::{Tool, Toolbox, ToolError};
    /// # #[derive(serde::Deserialize, schemars::JsonSchema)] struct Args { text: String }
    /// let toolbox = Toolbox::new().tool(Tool::new("shout", "Upper-cases text", |a: Args| -> Result<String, ToolError> {
    ///     Ok(a.text.to_uppercase())
    /// }));
    /// let out = toolbox.call("shout", serde_json::json!({"text": "hi"})).unwrap();
    /// assert!(matches!(&out.content[0], toolhost_guest::Content::Text(t) if t == "HI"));
    /// assert!(toolbox.call("shout", serde_json::json!({})).is_err());
    /// assert!(toolbox.call("whisper", serde_json::json!({})).is_err());
    /// ```
    pub fn call(&self, name: &str, arguments: serde_json::Value) -> Result<Output, ToolError> {
        let entry = self
            .entries
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| ToolError::InvalidArguments(format!("no tool is named `{name}`")))?;
        (entry.handler)(&entry.name, Arguments::Value(arguments))
    }

    /// Serve a fixed resource: `read` produces its body (its MIME type is
    /// the resource's).
    pub fn resource<F>(mut self, resource: resources::Resource, read: F) -> Self
    where
        F: Fn() -> Result<resources::Body, resources::ResourceError> + 'static,
    {
        self.resources.fixed.push((resource, Box::new(read)));
        self
    }

    /// Serve the resources whose URIs match `template`: `read` gets the URI
    /// and the template's variables.
    pub fn resource_template<F>(mut self, template: resources::Template, read: F) -> Self
    where
        F: Fn(
                &str,
                &resources::Vars,
            ) -> Result<Vec<resources::ResourceContent>, resources::ResourceError>
            + 'static,
    {
        self.resources.templates.push((template, Box::new(read)));
        self
    }

    /// List the resources there are at run time, beyond the fixed ones
    /// (read them through a template).
    pub fn list_resources<F>(mut self, list: F) -> Self
    where
        F: Fn() -> Result<Vec<resources::Resource>, resources::ResourceError> + 'static,
    {
        self.resources.lister = Some(Box::new(list));
        self
    }

    /// Offer a prompt: `f` takes the decoded arguments (a struct of string
    /// fields) and returns its messages.
    pub fn prompt<A, R, F>(mut self, prompt: prompts::Prompt, f: F) -> Self
    where
        A: DeserializeOwned + JsonSchema + 'static,
        R: prompts::IntoMessages + 'static,
        F: Fn(A) -> Result<R, ToolError> + 'static,
    {
        let name = prompt.name.clone();
        self.prompts.push(prompts::PromptEntry {
            prompt,
            arguments: prompts::arguments_of::<A>,
            handler: Box::new(move |args| {
                let a: A = serde_json::from_value(args).map_err(|e| {
                    ToolError::InvalidArguments(format!("arguments of prompt `{name}`: {e}"))
                })?;
                Ok(f(a)?.into_messages())
            }),
        });
        self
    }

    /// Suggest values for `argument` of `target` (a prompt or a resource
    /// template): `f` gets what the user typed so far and the arguments
    /// already chosen.
    pub fn complete<F>(mut self, target: prompts::Ref, argument: &str, f: F) -> Self
    where
        F: Fn(&str, &prompts::Context) -> Vec<String> + 'static,
    {
        self.completions.push(prompts::CompletionEntry {
            target,
            argument: argument.to_string(),
            complete: Box::new(f),
        });
        self
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
                task_support: match e.task_support {
                    TaskSupport::Forbidden => wit::TaskSupport::Forbidden,
                    TaskSupport::Optional => wit::TaskSupport::Optional,
                    TaskSupport::Required => wit::TaskSupport::Required,
                },
            })
            .collect()
    }

    #[doc(hidden)]
    pub fn __describe_resources(&self) -> bindings::exports::toolhost::tool::resources::Catalog {
        self.resources.describe()
    }

    #[doc(hidden)]
    pub fn __list_resources(
        &self,
    ) -> Result<
        Vec<bindings::exports::toolhost::tool::resources::ResourceDef>,
        bindings::exports::toolhost::tool::resources::ResourceError,
    > {
        self.resources.list()
    }

    #[doc(hidden)]
    pub fn __read_resource(
        &self,
        uri: &str,
    ) -> Result<
        Vec<bindings::exports::toolhost::tool::resources::Contents>,
        bindings::exports::toolhost::tool::resources::ResourceError,
    > {
        self.resources.read(uri)
    }

    #[doc(hidden)]
    pub fn __describe_prompts(&self) -> Vec<bindings::exports::toolhost::tool::prompts::PromptDef> {
        self.prompts
            .iter()
            .map(|p| bindings::exports::toolhost::tool::prompts::PromptDef {
                name: p.prompt.name.clone(),
                title: p.prompt.title.clone(),
                description: p.prompt.description.clone(),
                arguments: (p.arguments)(),
            })
            .collect()
    }

    #[doc(hidden)]
    pub fn __get_prompt(
        &self,
        name: &str,
        arguments: &str,
    ) -> Result<
        bindings::exports::toolhost::tool::prompts::PromptResult,
        bindings::exports::toolhost::tool::prompts::PromptError,
    > {
        use bindings::exports::toolhost::tool::prompts as wp;
        let entry = self
            .prompts
            .iter()
            .find(|p| p.prompt.name == name)
            .ok_or_else(|| wp::PromptError::UnknownPrompt(name.to_string()))?;
        let args: serde_json::Value = serde_json::from_str(arguments).map_err(|e| {
            wp::PromptError::InvalidArguments(format!("arguments are not JSON: {e}"))
        })?;
        match (entry.handler)(args) {
            Ok((description, messages)) => Ok(wp::PromptResult {
                description,
                messages: messages
                    .into_iter()
                    .map(prompts::Message::into_wit)
                    .collect(),
            }),
            Err(ToolError::InvalidArguments(m)) => Err(wp::PromptError::InvalidArguments(m)),
            Err(ToolError::Failed(m)) => Err(wp::PromptError::Failed(m)),
        }
    }

    #[doc(hidden)]
    pub fn __complete(
        &self,
        target: bindings::exports::toolhost::tool::completions::Reference,
        argument: &str,
        value: &str,
        context: &str,
    ) -> bindings::exports::toolhost::tool::completions::Completion {
        prompts::complete(
            &self.completions,
            prompts::Ref::from_wit(target),
            argument,
            value,
            context,
        )
    }

    #[doc(hidden)]
    pub fn __call(&self, name: &str, arguments: &str) -> Result<wit::CallResult, wit::ToolError> {
        let entry = self
            .entries
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| wit::ToolError::UnknownTool(name.to_string()))?;
        match (entry.handler)(&entry.name, Arguments::Text(arguments)) {
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
///
/// Natively, like every host service, it needs a fake host ([`testing`]).
pub fn log(level: Level, message: impl AsRef<str>) {
    host::log(level, message.as_ref());
}

/// Report progress of the current call.
///
/// Natively, like every host service, it needs a fake host ([`testing`]).
pub fn progress(progress: f64, total: Option<f64>, message: Option<&str>) {
    host::progress(progress, total, message);
}

/// Send the calling MCP client a request of its own and wait for its
/// answer: `method` is `sampling/createMessage`, `elicitation/create` or
/// `roots/list`, `params` its MCP params. Works only if the tool's manifest
/// grants it (`[client] requests = ["sampling", "elicitation", "roots"]`)
/// and the caller can answer; otherwise the error says why. See [`client`]
/// for named questions, several in one round, and how stateless clients
/// answer.
///
/// Natively, like every host service, it needs a fake host ([`testing`]).
pub fn request_client(
    method: &str,
    params: &serde_json::Value,
) -> Result<serde_json::Value, ToolError> {
    client::Ask::new(method, params.clone())
        .send()
        .map_err(|e| ToolError::Failed(e.to_string()))
}

/// Hand the caller a task handle now and finish this call in the background
/// (MCP tasks extension), if the tool supports tasks (see
/// [`Tool::task_support`]) and the caller can follow one. Returns whether
/// the call now runs as a task. Call it before the long part of the work.
///
/// Natively, like every host service, it needs a fake host ([`testing`]).
pub fn run_as_task() -> bool {
    host::run_as_task()
}

/// Whether the caller has cancelled this call (or the call must return so
/// that its client can answer a question: see [`client`]).
///
/// Natively, like every host service, it needs a fake host ([`testing`]).
pub fn cancelled() -> bool {
    host::cancelled()
}

/// Export the toolbox returned by a `fn() -> Toolbox` as this component's
/// `toolhost:tool` implementation (tools, resources, prompts, completions).
/// Expands to nothing on non-wasm targets, so a tool crate can also be built
/// natively (tests, benchmarks).
///
/// It also makes [`Arena`] the component's global allocator (a call runs in
/// an instance of its own, see [`Arena`]); `export!(tools, system_allocator)`
/// leaves the allocator to the crate. Such an allocator must take blocks
/// it did not make (WASI's results, placed by `cabi_realloc` with
/// wasi-libc's `malloc`) and hand them to `std::alloc::System`, as
/// [`Arena`] does: Rust frees them through the global allocator, and
/// wasi-libc frees some itself.
#[macro_export]
macro_rules! export {
    ($tools:path) => {
        // SAFETY: a wasm32 component without threads allocates on one.
        #[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
        #[global_allocator]
        static __TOOLHOST_ALLOCATOR: $crate::Arena = unsafe { $crate::Arena::new() };
        /// See `toolhost_guest::arena::cabi_realloc`.
        #[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
        #[unsafe(export_name = "cabi_realloc")]
        unsafe extern "C" fn __toolhost_cabi_realloc(
            old: *mut u8,
            old_len: usize,
            align: usize,
            new_len: usize,
        ) -> *mut u8 {
            unsafe { $crate::__cabi_realloc(old, old_len, align, new_len) }
        }
        $crate::export!($tools, system_allocator);
    };
    ($tools:path, system_allocator) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::bindings::exports::toolhost::tool as __exports;
            struct __ToolhostComponent;
            impl __exports::tool::Guest for __ToolhostComponent {
                fn describe() -> ::std::vec::Vec<__exports::tool::ToolDef> {
                    $tools().__describe()
                }
                fn call(
                    name: ::std::string::String,
                    arguments: ::std::string::String,
                ) -> ::std::result::Result<__exports::tool::CallResult, __exports::tool::ToolError>
                {
                    $tools().__call(&name, &arguments)
                }
            }
            impl __exports::resources::Guest for __ToolhostComponent {
                fn describe() -> __exports::resources::Catalog {
                    $tools().__describe_resources()
                }
                fn list() -> ::std::result::Result<
                    ::std::vec::Vec<__exports::resources::ResourceDef>,
                    __exports::resources::ResourceError,
                > {
                    $tools().__list_resources()
                }
                fn read(
                    uri: ::std::string::String,
                ) -> ::std::result::Result<
                    ::std::vec::Vec<__exports::resources::Contents>,
                    __exports::resources::ResourceError,
                > {
                    $tools().__read_resource(&uri)
                }
            }
            impl __exports::prompts::Guest for __ToolhostComponent {
                fn describe() -> ::std::vec::Vec<__exports::prompts::PromptDef> {
                    $tools().__describe_prompts()
                }
                fn get(
                    name: ::std::string::String,
                    arguments: ::std::string::String,
                ) -> ::std::result::Result<
                    __exports::prompts::PromptResult,
                    __exports::prompts::PromptError,
                > {
                    $tools().__get_prompt(&name, &arguments)
                }
            }
            impl __exports::completions::Guest for __ToolhostComponent {
                fn complete(
                    target: __exports::completions::Reference,
                    argument: ::std::string::String,
                    value: ::std::string::String,
                    context: ::std::string::String,
                ) -> __exports::completions::Completion {
                    $tools().__complete(target, &argument, &value, &context)
                }
            }
            $crate::bindings::__export_world!(
                __ToolhostComponent with_types_in $crate::bindings
            );
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, JsonSchema)]
    struct Args {
        n: u32,
    }

    fn invalid(r: Result<wit::CallResult, wit::ToolError>) -> String {
        match r {
            Err(wit::ToolError::InvalidArguments(m)) => m,
            Err(e) => panic!("not invalid arguments: {e:?}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn arguments_decode_straight_from_the_hosts_text_and_errors_say_what_is_wrong() {
        let tools = Toolbox::new().tool(Tool::new("count", "Counts.", |a: Args| {
            Ok::<_, ToolError>(a.n.to_string())
        }));
        let out = tools.__call("count", r#"{"n":3}"#).unwrap();
        assert!(matches!(&out.content[..], [wit::Content::Text(t)] if t == "3"));
        let m = invalid(tools.__call("count", r#"{"n":"#));
        assert!(m.starts_with("arguments are not JSON: "), "{m}");
        let m = invalid(tools.__call("count", r#"{"n":3} trailing"#));
        assert!(m.starts_with("arguments are not JSON: "), "{m}");
        let m = invalid(tools.__call("count", r#"{"n":"three"}"#));
        assert!(m.starts_with("arguments of `count`: invalid type"), "{m}");
        // A native caller's value decodes the same way.
        match tools.call("count", serde_json::json!({"n": "three"})) {
            Err(ToolError::InvalidArguments(m)) => {
                assert!(m.starts_with("arguments of `count`: invalid type"), "{m}")
            }
            _ => panic!("accepted"),
        }
    }
}
