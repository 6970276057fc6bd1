//! Running typed-WIT components (see `crate::typed`): at load, the
//! component's exported functions become tools and each gets the export
//! index it is called through; per call, the JSON arguments become component
//! values, the function runs in the call's fresh store, and its result
//! becomes the tool's output.
//!
//! Instantiation, the store, limits, deadline and cancellation are the
//! caller's (`Sandbox::call`): this file only knows how to find, feed and
//! read a typed function. It must not build stores or touch grants.

use super::state::CallState;
use crate::error::CallErrorKind;
use crate::model::{Annotations, Content, ToolDef, ToolOutput};
use crate::typed::{self, DescribeError, PackageDocs, Signature, Ty, TypedFunction};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use wasmtime::Engine;
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker, Val};

/// Why a component that does not export toolhost's world cannot be served.
#[derive(Debug)]
pub(crate) enum TypedLoadError {
    /// It exports no function at all.
    NotATool(DescribeError),
    /// It exports functions, but they cannot all be tools, or it cannot be
    /// linked.
    Refused(String),
}

/// A typed component, pre-linked, and how to call each of its tools.
pub(crate) struct TypedComponent {
    pub(super) pre: InstancePre<CallState>,
    funcs: HashMap<Arc<str>, TypedTool>,
}

struct TypedTool {
    func: TypedFunction,
    index: ComponentExportIndex,
    /// The most one JSON value of its arguments can become
    /// (`Signature::expansion`), for where to convert them.
    expansion: u64,
}

/// Arguments whose conversion may be more work than this (their text's
/// bytes times the signature's expansion) are converted on a blocking
/// thread, not on the caller's (a front end's I/O thread in a call's
/// first slice).
const CONVERT_INLINE: u64 = 256 << 10;

/// A call's arguments, converted and ready to run.
pub(crate) struct Prepared<'a> {
    component: &'a TypedComponent,
    tool: &'a TypedTool,
    params: Vec<Val>,
}

impl TypedComponent {
    /// Describe the exported functions of `component` (compiled from `wasm`)
    /// and link it with `linker` (the one its grants chose). Returns the
    /// tools it offers, in export order.
    pub(crate) fn load(
        linker: &Linker<CallState>,
        component: &Component,
        engine: &Engine,
        wasm: &[u8],
    ) -> Result<(TypedComponent, Vec<ToolDef>), TypedLoadError> {
        let docs = PackageDocs::from_component(wasm);
        let funcs = typed::functions(&component.component_type(), engine, &docs, super::MAX_TOOLS)
            .map_err(|e| match e {
                DescribeError::NoFunctions => TypedLoadError::NotATool(e),
                other => TypedLoadError::Refused(other.to_string()),
            })?;
        let pre = linker.instantiate_pre(component).map_err(|e| {
            TypedLoadError::Refused(format!(
                "it cannot be linked (toolhost provides WASI 0.2, wasi:http and toolhost:tool/host): {e:#}"
            ))
        })?;
        let mut defs = Vec::with_capacity(funcs.len());
        let mut by_name = HashMap::with_capacity(funcs.len());
        let mut described = 0;
        for func in funcs {
            let index = export_index(component, &func).ok_or_else(|| {
                TypedLoadError::Refused(format!(
                    "function `{}` is in its type but cannot be found among its exports",
                    func.wit_path()
                ))
            })?;
            // The limits a `describe`d tool is held to (found by review:
            // typed tools skipped them).
            let refused = |why: String| {
                TypedLoadError::Refused(format!("function `{}`: {why}", func.wit_path()))
            };
            super::check_name_and_description(&func.tool, &func.description).map_err(refused)?;
            let input_schema = typed::input_schema(&func.sig);
            let output_schema = typed::output_schema(&func.sig);
            for (what, schema) in [("input", &input_schema), ("output", &output_schema)] {
                let size = serde_json::to_string(schema).map_or(usize::MAX, |s| s.len());
                if size > super::MAX_SCHEMA_BYTES {
                    return Err(refused(format!(
                        "its {what} schema is {size} bytes; at most {} are accepted",
                        super::MAX_SCHEMA_BYTES
                    )));
                }
                super::describe_more(&mut described, size).map_err(TypedLoadError::Refused)?;
            }
            super::describe_more(&mut described, func.description.len())
                .map_err(TypedLoadError::Refused)?;
            defs.push(ToolDef {
                name: func.tool.as_str().into(),
                title: None,
                description: func.description.clone(),
                input_schema: Arc::new(input_schema),
                output_schema: Some(Arc::new(output_schema)),
                annotations: Annotations::default(),
                task_support: Default::default(),
            });
            let expansion = func.sig.expansion();
            by_name.insert(
                func.tool.as_str().into(),
                TypedTool {
                    func,
                    index,
                    expansion,
                },
            );
        }
        Ok((
            TypedComponent {
                pre,
                funcs: by_name,
            },
            defs,
        ))
    }

    /// The signature of `tool`, for argument checks before a call.
    pub(crate) fn signature(&self, tool: &str) -> Option<&Signature> {
        self.funcs.get(tool).map(|t| &t.func.sig)
    }

    /// Whether `tool` is one of its functions.
    pub(crate) fn has(&self, tool: &str) -> bool {
        self.funcs.contains_key(tool)
    }

    /// Convert a call's arguments (a JSON object as text) for `tool`,
    /// taking at most `budget` bytes of host memory as values (the tool's
    /// memory limit, held only once the call has its room: the caller
    /// converts after its wait). Arguments that may expand a lot are
    /// converted on a blocking thread (found by review: a call converting
    /// on its first slice built gigabytes on a front end's I/O thread).
    pub(crate) async fn prepare(
        &self,
        tool: &str,
        arguments: &str,
        budget: usize,
    ) -> Result<Prepared<'_>, CallErrorKind> {
        let t = self.funcs.get(tool).ok_or(CallErrorKind::UnknownTool)?;
        fn convert(
            arguments: &str,
            sig: &Signature,
            budget: usize,
        ) -> Result<Vec<Val>, CallErrorKind> {
            let invalid = |details: String| CallErrorKind::InvalidArguments { details };
            let args: Map<String, Value> = serde_json::from_str(arguments)
                .map_err(|e| invalid(format!("not a JSON object: {e}")))?;
            typed::arguments(&args, sig, budget).map_err(|e| invalid(e.to_string()))
        }
        let params = if (arguments.len() as u64).saturating_mul(t.expansion) <= CONVERT_INLINE {
            convert(arguments, &t.func.sig, budget)?
        } else {
            let (arguments, sig) = (arguments.to_string(), t.func.sig.clone());
            tokio::task::spawn_blocking(move || convert(&arguments, &sig, budget))
                .await
                .map_err(|e| CallErrorKind::Internal {
                    message: format!("converting the arguments failed: {e}"),
                })??
        };
        Ok(Prepared {
            component: self,
            tool: t,
            params,
        })
    }
}

impl Prepared<'_> {
    /// Instantiate in `store`, run the function, and turn its result into
    /// the tool's output (or its `err` case into a tool error), no bigger
    /// than `max_output`. The outer error is wasmtime's (traps, limits).
    pub(crate) async fn run(
        &self,
        store: &mut wasmtime::Store<CallState>,
        max_output: u64,
    ) -> wasmtime::Result<Result<ToolOutput, CallErrorKind>> {
        let instance = self.component.pre.instantiate_async(&mut *store).await?;
        let func = instance
            .get_func(&mut *store, self.tool.index)
            .ok_or_else(|| {
                wasmtime::format_err!("export `{}` vanished", self.tool.func.wit_path())
            })?;
        let mut results = vec![Val::Bool(false); usize::from(self.tool.func.sig.result.is_some())];
        func.call_async(&mut *store, &self.params, &mut results)
            .await?;
        let budget = store.data().limiter.budget();
        Ok(self.finish(results.pop(), max_output, &budget))
    }

    fn finish(
        &self,
        result: Option<Val>,
        max_output: u64,
        memory: &Arc<crate::caps::limits::MemoryBudget>,
    ) -> Result<ToolOutput, CallErrorKind> {
        let call = self;
        let bad = |details: String| CallErrorKind::BadResult { details };
        let too_large = |size: usize| CallErrorKind::OutputTooLarge {
            size: size as u64,
            limit: max_output,
        };
        // The output's text is at least as long as the value's compact
        // JSON: past `max_output`, it is refused before its JSON is made.
        // The JSON is charged to the call's memory while it is made and
        // turned into text (a list of records takes a map node each).
        let mut charge = None;
        let mut to_json = |v: &Val, t: &Ty| {
            let least = typed::least_text_size(v);
            if least as u64 > max_output {
                return Err(too_large(least));
            }
            charge = memory.hold_or_refuse(typed::json_weight(v))?;
            typed::to_json(v, t).map_err(|e| bad(e.to_string()))
        };
        let (value, failed) = match (&call.tool.func.sig.result, result) {
            (None, None) => (Value::Null, false),
            // A top-level result: `ok` is the output, `err` a tool error.
            (Some(Ty::Result { ok, err }), Some(Val::Result(r))) => {
                let (ty, payload, failed) = match r {
                    Ok(p) => (ok, p, false),
                    Err(p) => (err, p, true),
                };
                let json = match (ty, payload) {
                    (Some(t), Some(v)) => to_json(&v, t)?,
                    (None, None) => Value::Null,
                    _ => return Err(bad("result payload does not match its type".into())),
                };
                (json, failed)
            }
            (Some(t), Some(v)) => (to_json(&v, t)?, false),
            _ => {
                return Err(bad(
                    "the number of results does not match the signature".into()
                ));
            }
        };
        let text = typed::text(&value);
        if failed {
            let message = if value.is_null() {
                format!(
                    "`{}` returned an error (without details)",
                    call.tool.func.wit_path()
                )
            } else {
                text
            };
            if message.len() as u64 > max_output {
                return Err(too_large(message.len()));
            }
            return Err(CallErrorKind::ToolFailed { message });
        }
        let structured = Value::Object(Map::from_iter([("result".to_string(), value)]));
        let size = text.len() + structured.to_string().len();
        if size as u64 > max_output {
            return Err(too_large(size));
        }
        Ok(ToolOutput {
            content: vec![Content::Text(text)],
            structured: Some(structured),
        })
    }
}

/// Where `func` is among the component's exports.
fn export_index(component: &Component, func: &TypedFunction) -> Option<ComponentExportIndex> {
    match &func.interface {
        None => component.get_export_index(None, &func.func),
        Some(i) => {
            let inst = component.get_export_index(None, i)?;
            component.get_export_index(Some(&inst), &func.func)
        }
    }
}
