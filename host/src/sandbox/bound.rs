//! A toolhost-world component as the host binds it: which version of the
//! world it was built for (`toolhost:tool@0.1.0`, tools only, or `@0.2.0`,
//! whose resources, prompts and completions interfaces are each optional),
//! found from its exports at load, and the one way to run an operation of
//! it in an instance. A `@0.1.0` component's results are lifted into the
//! `@0.2.0` shapes here, so nothing above this module knows there are two.
//!
//! Must not touch: stores, limits or pools (that is `Sandbox::run`).

use super::bindings::{v1, v2};
use super::state::CallState;
use crate::served::CompletionRef;
use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre};

use v1::exports::toolhost::tool::tool as v1_tool;
use v2::exports::toolhost::tool::{
    completions as v2_completions, prompts as v2_prompts, resources as v2_resources,
    tool as v2_tool,
};
use v2::toolhost::tool::types as v2_types;

/// One operation of a component, each run in a fresh sandbox.
pub(crate) enum Op<'a> {
    /// `tool.call`.
    Call { tool: &'a str, arguments: &'a str },
    /// `resources.list`: the resources there are now.
    List,
    /// `resources.read`.
    Read { uri: &'a str },
    /// `prompts.get`.
    Get { prompt: &'a str, arguments: &'a str },
    /// `completions.complete`.
    Complete {
        reference: &'a CompletionRef,
        argument: &'a str,
        value: &'a str,
        context: &'a str,
    },
}

impl Op<'_> {
    /// What errors of it name: the tool, URI or prompt.
    pub(crate) fn subject(&self) -> &str {
        match self {
            Op::Call { tool, .. } => tool,
            Op::List => "resources/list",
            Op::Read { uri } => uri,
            Op::Get { prompt, .. } => prompt,
            Op::Complete { reference, .. } => match reference {
                CompletionRef::Prompt(n) | CompletionRef::ResourceTemplate(n) => n,
            },
        }
    }
}

/// What an operation returned, in the core's shapes.
#[derive(Debug)]
pub(crate) enum Output {
    Tool(crate::model::ToolOutput),
    Listed(Vec<crate::served::ResourceDef>),
    Read(Vec<crate::served::ResourceBody>),
    Prompt(crate::served::PromptOutput),
    Completion(crate::served::Completion),
}

impl Output {
    /// Its size in bytes, as a tenant's `output-bytes-per-minute` counts
    /// it: the text and data it carries.
    pub(crate) fn size(&self) -> u64 {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let n: usize = match self {
            Output::Tool(t) => return t.size(),
            Output::Listed(defs) => defs
                .iter()
                .map(|d| {
                    d.uri.len()
                        + d.name.len()
                        + opt(&d.title)
                        + opt(&d.description)
                        + opt(&d.mime_type)
                })
                .sum(),
            Output::Read(bodies) => bodies
                .iter()
                .map(|b| {
                    b.uri.len()
                        + opt(&b.mime_type)
                        + match &b.contents {
                            crate::model::ResourceContents::Text(t) => t.len(),
                            crate::model::ResourceContents::Blob(d) => d.len().div_ceil(3) * 4,
                        }
                })
                .sum(),
            Output::Prompt(p) => {
                opt(&p.description) + p.messages.iter().map(|m| m.content.size()).sum::<usize>()
            }
            Output::Completion(c) => c.values.iter().map(String::len).sum(),
        };
        n as u64
    }
}

/// What the guest returned, before checks and conversion.
pub(crate) enum Raw {
    Toolhost(Result<v2_tool::CallResult, v2_tool::ToolError>),
    Typed(Result<crate::model::ToolOutput, crate::error::CallErrorKind>),
    Listed(Result<Vec<v2_resources::ResourceDef>, v2_resources::ResourceError>),
    Read(Result<Vec<v2_resources::Contents>, v2_resources::ResourceError>),
    Prompt(Result<v2_prompts::PromptResult, v2_prompts::PromptError>),
    Completion(v2_completions::Completion),
}

/// What `describe` found besides tools.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Described {
    pub(crate) resources: Option<v2_resources::Catalog>,
    pub(crate) prompts: Vec<v2_prompts::PromptDef>,
    pub(crate) completions: bool,
}

/// An instance and, for a `@0.2.0` component, its tool export, looked up
/// and type-checked (wasmtime's bindings check an export's type each time
/// they look it up: a tenth of a prepared call's time on its path, done
/// here when the sandbox is prepared instead).
pub(crate) struct Instantiated {
    pub(crate) instance: Instance,
    tool: Option<v2_tool::Guest>,
}

impl From<Instance> for Instantiated {
    fn from(instance: Instance) -> Instantiated {
        Instantiated {
            instance,
            tool: None,
        }
    }
}

/// A pre-linked toolhost-world component and the exports it has.
#[derive(Clone)]
pub(crate) struct Bound {
    pre: InstancePre<CallState>,
    exports: Exports,
}

#[derive(Clone)]
enum Exports {
    V1(v1_tool::GuestIndices),
    V2 {
        tool: v2_tool::GuestIndices,
        resources: Option<v2_resources::GuestIndices>,
        prompts: Option<v2_prompts::GuestIndices>,
        completions: Option<v2_completions::GuestIndices>,
    },
}

impl Bound {
    /// Find the world version from the exports: `@0.2.0`'s tool interface,
    /// else `@0.1.0`'s (an error names what is missing).
    pub(crate) fn new(pre: InstancePre<CallState>) -> wasmtime::Result<Bound> {
        let exports = match v2_tool::GuestIndices::new(&pre) {
            Ok(tool) => Exports::V2 {
                tool,
                resources: v2_resources::GuestIndices::new(&pre).ok(),
                prompts: v2_prompts::GuestIndices::new(&pre).ok(),
                completions: v2_completions::GuestIndices::new(&pre).ok(),
            },
            Err(v2_missing) => match v1_tool::GuestIndices::new(&pre) {
                Ok(tool) => Exports::V1(tool),
                Err(_) => return Err(v2_missing),
            },
        };
        Ok(Bound { pre, exports })
    }

    /// A new instance in `store`, with its tool export looked up and
    /// type-checked ([`Instantiated`]).
    pub(crate) async fn instantiate_ready(
        &self,
        store: &mut Store<CallState>,
    ) -> wasmtime::Result<Instantiated> {
        let instance = self.instantiate(&mut *store).await?;
        let tool = match &self.exports {
            Exports::V2 { tool, .. } => Some(tool.load(&mut *store, &instance)?),
            Exports::V1(_) => None,
        };
        Ok(Instantiated { instance, tool })
    }

    /// A new instance in `store`.
    pub(crate) async fn instantiate(
        &self,
        store: &mut Store<CallState>,
    ) -> wasmtime::Result<Instance> {
        self.pre.instantiate_async(store).await
    }

    /// Instantiate and ask for everything the component offers: its
    /// tools, and (`@0.2.0`) its resources catalog and prompts. Every
    /// export's type is checked here, at load.
    pub(crate) async fn describe(
        &self,
        store: &mut Store<CallState>,
    ) -> wasmtime::Result<(Vec<v2_tool::ToolDef>, Described)> {
        let inst = self.instantiate(store).await?;
        match &self.exports {
            Exports::V1(tool) => {
                let defs = tool
                    .load(&mut *store, &inst)?
                    .call_describe(&mut *store)
                    .await?;
                Ok((
                    defs.into_iter().map(up_def).collect(),
                    Described {
                        resources: None,
                        prompts: Vec::new(),
                        completions: false,
                    },
                ))
            }
            Exports::V2 {
                tool,
                resources,
                prompts,
                completions,
            } => {
                let defs = tool
                    .load(&mut *store, &inst)?
                    .call_describe(&mut *store)
                    .await?;
                let resources = match resources {
                    Some(r) => Some(
                        r.load(&mut *store, &inst)?
                            .call_describe(&mut *store)
                            .await?,
                    ),
                    None => None,
                };
                let prompts = match prompts {
                    Some(p) => {
                        p.load(&mut *store, &inst)?
                            .call_describe(&mut *store)
                            .await?
                    }
                    None => Vec::new(),
                };
                if let Some(c) = completions {
                    c.load(&mut *store, &inst)?;
                }
                Ok((
                    defs,
                    Described {
                        resources,
                        prompts,
                        completions: completions.is_some(),
                    },
                ))
            }
        }
    }

    /// Run `op` in `ready`'s instance.
    pub(crate) async fn run(
        &self,
        store: &mut Store<CallState>,
        ready: &Instantiated,
        op: &Op<'_>,
    ) -> wasmtime::Result<Raw> {
        let inst = &ready.instance;
        let missing = |what: &str| {
            wasmtime::Error::msg(format!(
                "the component does not export toolhost:tool/{what}"
            ))
        };
        match (&self.exports, op) {
            (
                Exports::V1(tool),
                Op::Call {
                    tool: name,
                    arguments,
                },
            ) => {
                let r = tool
                    .load(&mut *store, inst)?
                    .call_call(&mut *store, name, arguments)
                    .await?;
                Ok(Raw::Toolhost(r.map(up_result).map_err(up_error)))
            }
            (Exports::V1(_), _) => Err(missing(
                "resources@0.2.0 (a toolhost:tool@0.1.0 component serves tools only)",
            )),
            (
                Exports::V2 { tool, .. },
                Op::Call {
                    tool: name,
                    arguments,
                },
            ) => {
                let loaded;
                let tool = match &ready.tool {
                    Some(t) => t,
                    None => {
                        loaded = tool.load(&mut *store, inst)?;
                        &loaded
                    }
                };
                Ok(Raw::Toolhost(
                    tool.call_call(&mut *store, name, arguments).await?,
                ))
            }
            (Exports::V2 { resources, .. }, Op::List) => {
                let r = resources.as_ref().ok_or_else(|| missing("resources"))?;
                Ok(Raw::Listed(
                    r.load(&mut *store, inst)?.call_list(&mut *store).await?,
                ))
            }
            (Exports::V2 { resources, .. }, Op::Read { uri }) => {
                let r = resources.as_ref().ok_or_else(|| missing("resources"))?;
                Ok(Raw::Read(
                    r.load(&mut *store, inst)?
                        .call_read(&mut *store, uri)
                        .await?,
                ))
            }
            (Exports::V2 { prompts, .. }, Op::Get { prompt, arguments }) => {
                let p = prompts.as_ref().ok_or_else(|| missing("prompts"))?;
                Ok(Raw::Prompt(
                    p.load(&mut *store, inst)?
                        .call_get(&mut *store, prompt, arguments)
                        .await?,
                ))
            }
            (
                Exports::V2 { completions, .. },
                Op::Complete {
                    reference,
                    argument,
                    value,
                    context,
                },
            ) => {
                let c = completions.as_ref().ok_or_else(|| missing("completions"))?;
                let r = match reference {
                    CompletionRef::Prompt(n) => v2_completions::Reference::Prompt(n.clone()),
                    CompletionRef::ResourceTemplate(t) => {
                        v2_completions::Reference::ResourceTemplate(t.clone())
                    }
                };
                Ok(Raw::Completion(
                    c.load(&mut *store, inst)?
                        .call_complete(&mut *store, &r, argument, value, context)
                        .await?,
                ))
            }
        }
    }
}

/// A `@0.1.0` tool definition in `@0.2.0`'s shape.
fn up_def(d: v1_tool::ToolDef) -> v2_tool::ToolDef {
    let a = d.annotations;
    v2_tool::ToolDef {
        name: d.name,
        title: d.title,
        description: d.description,
        input_schema: d.input_schema,
        output_schema: d.output_schema,
        annotations: v2_types::Annotations {
            title: a.title,
            read_only: a.read_only,
            destructive: a.destructive,
            idempotent: a.idempotent,
            open_world: a.open_world,
        },
        task_support: v2_types::TaskSupport::Forbidden,
    }
}

/// A `@0.1.0` call result in `@0.2.0`'s shape.
fn up_result(r: v1_tool::CallResult) -> v2_tool::CallResult {
    v2_tool::CallResult {
        content: r.content.into_iter().map(up_content).collect(),
        structured: r.structured,
    }
}

fn up_content(c: v1::toolhost::tool::types::Content) -> v2_types::Content {
    use v1::toolhost::tool::types as o;
    let media = |m: o::Media| v2_types::Media {
        data: m.data,
        mime_type: m.mime_type,
    };
    match c {
        o::Content::Text(t) => v2_types::Content::Text(t),
        o::Content::Image(m) => v2_types::Content::Image(media(m)),
        o::Content::Audio(m) => v2_types::Content::Audio(media(m)),
        o::Content::Resource(r) => v2_types::Content::Resource(v2_types::EmbeddedResource {
            uri: r.uri,
            mime_type: r.mime_type,
            contents: match r.contents {
                o::ResourceContents::Text(t) => v2_types::ResourceContents::Text(t),
                o::ResourceContents::Blob(b) => v2_types::ResourceContents::Blob(b),
            },
        }),
    }
}

fn up_error(e: v1_tool::ToolError) -> v2_tool::ToolError {
    match e {
        v1_tool::ToolError::InvalidArguments(m) => v2_tool::ToolError::InvalidArguments(m),
        v1_tool::ToolError::UnknownTool(m) => v2_tool::ToolError::UnknownTool(m),
        v1_tool::ToolError::Failed(m) => v2_tool::ToolError::Failed(m),
    }
}
