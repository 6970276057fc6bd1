//! The one call path. Every front end (CLI, MCP stdio/HTTP, the agent's
//! `mcp_message`) builds a `CallRequest` and hands it to `Core::call`:
//!
//! scope -> policy -> schema check -> sandbox -> output check -> audit
//!
//! The core owns the live catalog (swapped atomically on reload), the
//! sandbox, the policy and the audit log. It knows no protocol.

use crate::audit::{Audit, AuditRecord};
use crate::catalog::{Catalog, CatalogTool, LoadEvent, Scope, Source};
use crate::config::HostConfig;
use crate::error::CallError;
use crate::model::{ClientRequests, EventSink, ToolDef, ToolOutput};
use crate::policy::{Decision, Policy};
use crate::sandbox::{CallContext, Sandbox};
use arc_swap::ArcSwap;
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// One tool call, as every front end expresses it.
pub struct CallRequest {
    /// Whose tools: the call only sees this scope's catalog.
    pub scope: Scope,
    pub tool: String,
    /// A JSON object; `None` is the same as `{}`.
    pub arguments: Option<serde_json::Map<String, Value>>,
    /// Where the tool's log and progress events go.
    pub events: Option<EventSink>,
    /// Cancelling it stops the guest and ends the call with `Cancelled`.
    pub cancel: CancellationToken,
    /// Who is calling (front end, session, agent), for the audit log.
    pub caller: Arc<str>,
    /// The caller's client, for the requests a tool's manifest grants
    /// (sampling, elicitation). `None`: such requests fail cleanly.
    pub client: Option<Arc<dyn ClientRequests>>,
}

impl CallRequest {
    pub fn new(
        scope: Scope,
        tool: impl Into<String>,
        arguments: Option<serde_json::Map<String, Value>>,
    ) -> CallRequest {
        CallRequest {
            scope,
            tool: tool.into(),
            arguments,
            events: None,
            cancel: CancellationToken::new(),
            caller: Arc::from("library"),
            client: None,
        }
    }
    pub fn caller(mut self, caller: impl AsRef<str>) -> Self {
        self.caller = Arc::from(caller.as_ref());
        self
    }
    pub fn events(mut self, events: EventSink) -> Self {
        self.events = Some(events);
        self
    }
    pub fn client(mut self, client: Arc<dyn ClientRequests>) -> Self {
        self.client = Some(client);
        self
    }
    pub fn cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }
}

/// Builds a `Core`.
#[derive(Default)]
pub struct CoreBuilder {
    config: HostConfig,
    sources: Vec<Source>,
    policy: Policy,
    audit: Audit,
}

impl CoreBuilder {
    pub fn config(mut self, c: HostConfig) -> Self {
        self.config = c;
        self
    }
    /// Tools from `path` (directory, manifest or .wasm) into `scope`.
    pub fn source(mut self, scope: Scope, path: impl Into<std::path::PathBuf>) -> Self {
        self.sources.push(Source::new(scope, path));
        self
    }
    pub fn policy(mut self, p: Policy) -> Self {
        self.policy = p;
        self
    }
    pub fn audit(mut self, a: Audit) -> Self {
        self.audit = a;
        self
    }
    /// Create the sandbox and load every source; per-tool failures are in
    /// `Core::load_errors`.
    pub async fn build(
        mut self,
        on_event: &(dyn Fn(LoadEvent<'_>) + Sync),
    ) -> anyhow::Result<Core> {
        // Rules from the host config come first: the operator's word wins.
        let mut rules = std::mem::take(&mut self.config.rules);
        rules.append(&mut self.policy.rules);
        self.policy.rules = rules;
        let sandbox = Arc::new(Sandbox::new(self.config)?);
        let catalog = Catalog::load(&sandbox, &self.sources, on_event).await;
        let (changed, _) = tokio::sync::watch::channel(0);
        Ok(Core {
            sandbox,
            catalog: ArcSwap::from_pointee(catalog),
            policy: self.policy,
            audit: self.audit,
            sources: self.sources,
            changed,
        })
    }
}

pub struct Core {
    sandbox: Arc<Sandbox>,
    catalog: ArcSwap<Catalog>,
    policy: Policy,
    audit: Audit,
    sources: Vec<Source>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl Core {
    pub fn builder() -> CoreBuilder {
        CoreBuilder::default()
    }

    /// Tools that failed to load in the current catalog.
    pub fn load_errors(&self) -> Vec<String> {
        self.catalog
            .load()
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    /// The tools `scope` may see, sorted by name.
    pub fn tools(&self, scope: &Scope) -> Vec<ToolDef> {
        self.catalog
            .load()
            .tools(scope)
            .filter(|t| self.policy.visible(scope.as_str(), &t.def.name))
            .map(|t| t.def.clone())
            .collect()
    }

    /// Every scope with at least a source.
    pub fn scopes(&self) -> Vec<Scope> {
        let mut s: Vec<Scope> = self.catalog.load().scopes().cloned().collect();
        s.sort();
        s
    }

    /// A receiver that changes whenever the tool set changes (reload).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Reload every source. Calls already running finish on the old
    /// catalog. Subscribers are told if any scope's tool list changed.
    /// Returns the load errors of the new catalog.
    pub async fn reload(&self) -> Vec<String> {
        let new = Catalog::load(&self.sandbox, &self.sources, &|_| {}).await;
        let old = self.catalog.load_full();
        // What a client sees of a scope's tools; a change means list_changed.
        let fingerprint = |cat: &Catalog, s: &Scope| -> Vec<_> {
            cat.tools(s)
                .map(|t| {
                    let d = &t.def;
                    (
                        d.name.clone(),
                        t.component.manifest.sha256,
                        d.description.clone(),
                        d.input_schema.clone(),
                    )
                })
                .collect()
        };
        let differs = {
            let mut scopes: Vec<&Scope> = old.scopes().chain(new.scopes()).collect();
            scopes.sort();
            scopes.dedup();
            scopes
                .into_iter()
                .any(|s| fingerprint(&old, s) != fingerprint(&new, s))
        };
        let errors: Vec<String> = new.errors.iter().map(|e| e.to_string()).collect();
        self.catalog.store(Arc::new(new));
        if differs {
            self.changed.send_modify(|n| *n += 1);
        }
        for e in &errors {
            tracing::warn!("reload: {e}");
        }
        errors
    }

    /// The one call path.
    pub async fn call(&self, req: CallRequest) -> Result<ToolOutput, CallError> {
        let started = Instant::now();
        let args = Value::Object(req.arguments.unwrap_or_default());
        let catalog = self.catalog.load_full();
        let mut args_bytes = 0;
        let result = self
            .call_inner(
                &catalog,
                &req.scope,
                &req.tool,
                &args,
                &mut args_bytes,
                CallContext {
                    events: req.events,
                    cancel: req.cancel,
                    client: req.client,
                },
            )
            .await;
        if self.audit.enabled() {
            self.audit.record(AuditRecord {
                ts_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0),
                scope: req.scope.to_string(),
                caller: req.caller.to_string(),
                tool: req.tool.clone(),
                outcome: match &result {
                    Ok(_) => "ok",
                    Err(e) => e.kind(),
                },
                detail: result.as_ref().err().map(|e| e.to_string()),
                duration_us: started.elapsed().as_micros() as u64,
                args_bytes,
            });
        }
        result
    }

    async fn call_inner(
        &self,
        catalog: &Catalog,
        scope: &Scope,
        name: &str,
        args: &Value,
        args_bytes: &mut usize,
        cx: CallContext,
    ) -> Result<ToolOutput, CallError> {
        let tool: &Arc<CatalogTool> =
            catalog
                .get(scope, name)
                .ok_or_else(|| CallError::UnknownTool {
                    tool: name.to_string(),
                })?;
        if let Decision::Deny(reason) = self.policy.decide(scope.as_str(), name, args) {
            return Err(CallError::Denied {
                tool: name.to_string(),
                reason,
            });
        }
        tool.input
            .check(args)
            .map_err(|details| CallError::InvalidArguments {
                tool: name.to_string(),
                details,
            })?;
        let text = args.to_string();
        *args_bytes = text.len();
        let out = self.sandbox.call(&tool.component, name, &text, cx).await?;
        if let Some(schema) = &tool.output {
            let structured = out
                .structured
                .as_ref()
                .ok_or_else(|| CallError::BadResult {
                    tool: name.to_string(),
                    details: "the tool declares an output schema but returned no structured result"
                        .into(),
                })?;
            schema.check(structured).map_err(|d| CallError::BadResult {
                tool: name.to_string(),
                details: format!("structured result violates the output schema: {d}"),
            })?;
        }
        Ok(out)
    }
}
