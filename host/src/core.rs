//! The one call path. Every front end (CLI, MCP stdio/HTTP, the agent's
//! `mcp_message`) builds a [`CallRequest`] and hands it to [`Core::call`]:
//!
//! scope -> policy -> schema check -> sandbox (on the guest executor,
//! reaching its pool in the scope's fair turn) -> output check -> audit
//!
//! Resource reads, prompt gets, completions and run-time resource listings
//! (`toolhost:tool@0.2.0`) take the same path, with the URI, prompt or
//! reference in the tool's place: scope visibility, policy (rules match the
//! URI or prompt name as they match tool names), a fresh sandbox under the
//! component's grants and limits, `max-output`, metrics and audit.
//!
//! The core owns the live catalog and policy (swapped together, atomically,
//! by [`Core::reload`] and [`Core::reconfigure`]; a running call keeps the
//! version it started with), the tenants' quota state (which outlives a
//! reconfigure), the sandbox, the scheduler (see `scheduler`) and the audit
//! log. It knows no protocol.

use crate::audit::{Audit, AuditRecord};
use crate::caps::{Caps, fs::HostState};
use crate::catalog::{Catalog, CatalogTool, LoadEvent, Previous, Scope, Source};
use crate::config::HostConfig;
use crate::error::{BuildError, CallError, CallErrorKind, LoadError};
use crate::metrics::Metrics;
use crate::model::{ClientRequests, EventSink, ToolDef, ToolOutput};
use crate::policy::{Decision, Policy};
use crate::quota::{Admission, OverQuota, QuotaBook};
use crate::sandbox::{CallContext, Sandbox, Usage};
use crate::sandbox::{LoadedComponent, Op, Output};
use crate::scheduler::Scheduler;
use crate::served::{
    Completion, CompletionRef, PromptDef, PromptOutput, ResourceBody, ResourceDef, TemplateDef,
};
use arc_swap::ArcSwap;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// One tool call, as every front end expresses it.
#[non_exhaustive]
pub struct CallRequest {
    /// Whose tools: the call only sees this scope's catalog.
    pub scope: Scope,
    /// The tool's name.
    pub tool: String,
    /// A JSON object; `None` is the same as `{}`.
    pub arguments: Option<serde_json::Map<String, Value>>,
    /// Where the tool's log and progress events go.
    pub events: Option<EventSink>,
    /// Cancelling it stops the guest and ends the call with `Cancelled`.
    pub cancel: CancellationToken,
    /// Who is calling (front end, session, agent), for the audit log.
    pub caller: Arc<str>,
    /// The client's session, for the audit log, when the front end knows it.
    pub session: Option<Arc<str>>,
    /// Whom the caller acts for (an HTTP tenant's JWT `sub`), for the audit
    /// log, when the front end knows it.
    pub principal: Option<Arc<str>>,
    /// The caller's client, for the requests a tool's manifest grants
    /// (sampling, elicitation). `None`: such requests fail cleanly.
    pub client: Option<Arc<dyn ClientRequests>>,
    /// The call's admission under its tenant's quotas, when a front end
    /// admitted it early (to answer `429` before parsing it); otherwise
    /// the core admits it.
    pub(crate) admission: Option<Admission>,
}

impl CallRequest {
    /// A call of `tool` in `scope` with `arguments`.
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
            // One shared name: a clone, not an allocation per call.
            caller: {
                static LIBRARY: std::sync::LazyLock<Arc<str>> =
                    std::sync::LazyLock::new(|| Arc::from("library"));
                LIBRARY.clone()
            },
            session: None,
            principal: None,
            client: None,
            admission: None,
        }
    }
    /// Name the caller in the audit log (`mcp-http`, `agent:NAME`, …).
    pub fn caller(mut self, caller: impl AsRef<str>) -> Self {
        self.caller = Arc::from(caller.as_ref());
        self
    }
    /// Name the client's session in the audit log.
    pub fn session(mut self, session: impl AsRef<str>) -> Self {
        self.session = Some(Arc::from(session.as_ref()));
        self
    }
    /// Name whom the caller acts for (a user, as an identity provider
    /// names them) in the audit log.
    pub fn principal(mut self, principal: impl AsRef<str>) -> Self {
        self.principal = Some(Arc::from(principal.as_ref()));
        self
    }
    /// Send the tool's log and progress events to `events`.
    pub fn events(mut self, events: EventSink) -> Self {
        self.events = Some(events);
        self
    }
    /// Let the tool send requests to `client` (as its manifest grants).
    pub fn client(mut self, client: Arc<dyn ClientRequests>) -> Self {
        self.client = Some(client);
        self
    }
    /// The call was admitted under its tenant's quotas already (see
    /// `quota`); the core holds the admission for the whole call.
    #[cfg(feature = "mcp")]
    pub(crate) fn admitted(mut self, a: Admission) -> Self {
        self.admission = Some(a);
        self
    }
    /// Cancel the call (and stop its guest) when `cancel` is cancelled.
    pub fn cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }
}

/// Called for each step of loading (see [`LoadEvent`]).
pub type OnLoad = Box<dyn Fn(LoadEvent<'_>) + Send + Sync>;

/// Builds a [`Core`]: the host config, where tools come from, policy, audit.
///
/// ```no_run
/// # async fn demo() -> Result<(), toolhost::BuildError> {
/// use toolhost::{Core, HostConfig, Scope};
/// let core = Core::builder()
///     .config(HostConfig::default())
///     .source(Scope::default(), "build/tools")
///     .on_load(|ev| eprintln!("{ev:?}"))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Default)]
#[must_use]
pub struct CoreBuilder {
    config: HostConfig,
    sources: Vec<Source>,
    policy: Policy,
    audit: Audit,
    metrics: Option<Metrics>,
    protected: Vec<PathBuf>,
    on_load: Option<OnLoad>,
}

impl CoreBuilder {
    /// The operator's host config (default: [`HostConfig::default`]).
    pub fn config(mut self, c: HostConfig) -> Self {
        self.config = c;
        self
    }
    /// Tools from `path` (directory, manifest or .wasm) into `scope`.
    pub fn source(mut self, scope: Scope, path: impl Into<PathBuf>) -> Self {
        self.sources.push(Source::new(scope, path));
        self
    }
    /// Tools from a [`Source`] (with its own caps, say).
    pub fn add_source(mut self, source: Source) -> Self {
        self.sources.push(source);
        self
    }
    /// Rules after the host config's own.
    pub fn policy(mut self, p: Policy) -> Self {
        self.policy = p;
        self
    }
    /// Where audit records go (default: the host config's `[audit] path`,
    /// if it names one).
    pub fn audit(mut self, a: Audit) -> Self {
        self.audit = a;
        self
    }
    /// Where the call path's metrics go (default: a registry of its own,
    /// see [`Core::metrics`]). The core marks it ready once the catalog is
    /// loaded.
    pub fn metrics(mut self, m: Metrics) -> Self {
        self.metrics = Some(m);
        self
    }
    /// A path of the embedder's that no tool may ever be granted (its own
    /// data, credentials, …). Tool sources, the compile cache, the config
    /// file and the audit log are protected already.
    pub fn protect(mut self, path: impl Into<PathBuf>) -> Self {
        self.protected.push(path.into());
        self
    }
    /// Be told of each step of loading.
    pub fn on_load(mut self, f: impl Fn(LoadEvent<'_>) + Send + Sync + 'static) -> Self {
        self.on_load = Some(Box::new(f));
        self
    }

    /// Create the sandbox and load every source. Tools that fail to load
    /// are reported through `on_load` and [`Core::load_errors`]; the rest
    /// are served.
    pub async fn build(self) -> Result<Core, BuildError> {
        let mut audit = self.audit;
        if !audit.enabled()
            && let Some(path) = &self.config.audit.path
        {
            audit = Audit::open(&self.config.audit).map_err(|source| BuildError::Audit {
                path: path.clone(),
                source,
            })?;
        }
        // The tools' schemas compile once components load; what checks
        // them is built meanwhile, beside the pool (if there may be any).
        if self.sources.iter().any(Source::may_have_tools) {
            crate::schema::Schema::prepare_in_background();
        }
        let sandbox = Sandbox::new(self.config.engine.clone()).map_err(BuildError::Engine)?;
        let engine = &self.config.engine;
        let scheduler = Scheduler::new(engine.guest_threads as usize, 1, engine.guest_priority)
            .map_err(|e| {
                BuildError::Engine(anyhow::anyhow!("cannot start the guest executor: {e}"))
            })?;
        sandbox.set_background(scheduler.handle());
        let mut inputs = Inputs {
            own_rules: self.policy.rules,
            protected: self.protected,
            fixed: Fixed::of(&self.config),
            sources: under_scope_caps(&self.config, self.sources),
            caps: self.config.caps.clone(),
            host: HostState::default(),
        };
        // From the sources: they are protected too.
        inputs.host = inputs.host_state(&self.config, &sandbox, &audit);
        let on_load = self.on_load.unwrap_or_else(|| Box::new(|_| {}));
        let quotas = QuotaBook::new(self.config.tenants_and_agents());
        let policy = inputs.policy(&self.config);
        let tasks = self.config.tasks;
        let catalog = Catalog::load(
            &sandbox,
            &inputs.sources,
            &inputs.caps,
            &inputs.host,
            Previous::None,
            &*on_load,
        )
        .await;
        let (changed, served_changed) = (Changes::default(), Changes::default());
        let metrics = self.metrics.unwrap_or_default();
        metrics.attach_audit(&audit);
        metrics.attach_memory(&sandbox.memory());
        metrics.loaded(catalog.errors.len());
        metrics.set_ready(true);
        Ok(Core {
            inner: Arc::new(Inner {
                sandbox: Arc::new(sandbox),
                scheduler,
                live: ArcSwap::from_pointee(Live {
                    catalog,
                    policy: Arc::new(policy),
                }),
                quotas: ArcSwap::from_pointee(quotas),
                refusals: crate::audit::Thinned::default(),
                audit,
                metrics,
                tasks,
                changed,
                served_changed,
                inputs: tokio::sync::Mutex::new(inputs),
            }),
        })
    }
}

/// What the catalog is loaded from and the policy made of: kept for
/// reloads, held by one reload at a time.
struct Inputs {
    sources: Vec<Source>,
    /// The host config's caps.
    caps: Caps,
    /// Paths no grant may reach.
    host: HostState,
    /// The embedder's own rules (`CoreBuilder::policy`), after the host
    /// config's.
    own_rules: Vec<crate::policy::Rule>,
    /// The embedder's protected paths (`CoreBuilder::protect`).
    protected: Vec<PathBuf>,
    /// The sections read once, at build.
    fixed: Fixed,
}

/// The host config sections a reconfigure does not change: the engine
/// (its pool is sized and its memory reserved), the audit log (its file is
/// open) and `[tasks]` (running servers hold it).
#[derive(Clone, PartialEq)]
struct Fixed {
    engine: crate::config::EngineConfig,
    audit: crate::audit::AuditConfig,
    tasks: crate::config::TasksConfig,
    path: Option<PathBuf>,
}

impl Fixed {
    fn of(c: &HostConfig) -> Fixed {
        Fixed {
            engine: c.engine.clone(),
            audit: c.audit.clone(),
            tasks: c.tasks.clone(),
            path: c.path.clone(),
        }
    }

    /// The sections that differ in `other`, by their names in the file.
    fn differences(&self, other: &Fixed) -> Vec<&'static str> {
        let mut d = Vec::new();
        if self.engine != other.engine {
            d.push("[engine]");
        }
        if self.audit != other.audit {
            d.push("[audit]");
        }
        if self.tasks != other.tasks {
            d.push("[tasks]");
        }
        if self.path != other.path {
            d.push("the config file's path");
        }
        d
    }
}

/// `sources`, each in a tenant's or agent's scope narrowed by that
/// tenant's caps too: a scope's caps hold however its tools are named
/// (`--scope-tools`, an embedder's own [`Source`]), not only through the
/// tenant's own `tools` (found by review: `--scope-tools acme=DIR` loaded
/// under the host's caps alone).
fn under_scope_caps(config: &HostConfig, sources: Vec<Source>) -> Vec<Source> {
    sources
        .into_iter()
        .map(|mut s| {
            if let Some(t) = config.tenants_and_agents().find(|t| t.scope() == s.scope) {
                let caps = match &s.caps {
                    Some(c) if **c == t.caps => return s,
                    Some(c) => c.intersect(&t.caps),
                    None => t.caps.clone(),
                };
                s.caps = Some(Arc::new(caps));
            }
            s
        })
        .collect()
}

impl Inputs {
    /// The host config's rules first (the operator's word wins), then the
    /// embedder's.
    fn policy(&self, config: &HostConfig) -> Policy {
        let mut rules = config.rules.clone();
        rules.extend(self.own_rules.iter().cloned());
        Policy { rules }
    }

    /// The paths no grant may reach: tool sources, the compile cache, the
    /// host's own files, the audit log, the embedder's protected paths and
    /// the `claude` CLI's settings.
    fn host_state(&self, config: &HostConfig, sandbox: &Sandbox, audit: &Audit) -> HostState {
        let mut host = HostState::default();
        for s in &self.sources {
            s.protect(&mut host);
        }
        // The configured cache whether or not it opened: one that failed
        // to (a mode its check refuses) is still the directory the next
        // start opens, and a tool that wrote its key or artifacts meanwhile
        // had its own native code run as another tool's (found by review).
        for d in config
            .engine
            .cache_dir
            .iter()
            .map(PathBuf::as_path)
            .chain(sandbox.cache_dir())
        {
            host.protect(d, "compile cache", true);
        }
        // The host's own executable, and the directory of the name it was
        // started by (a symlink there is the executable too): a tool
        // granted the directory holding it replaced it, and the next start
        // ran the tool's program (found by review; as for the CLI).
        // Reading them is harmless: only read-write grants are refused.
        if let Ok(exe) = std::env::current_exe() {
            host.protect_from_writes(&exe, "toolhost executable");
        }
        if let Some(dir) = started_by().as_deref().and_then(Path::parent) {
            host.protect_from_writes(dir, "toolhost executable's directory");
        }
        config.protect_own_files(&mut host);
        if let Some(p) = audit.path() {
            host.protect(p, "audit log", false);
            for r in audit.rotated_paths() {
                host.protect(&r, "audit log", false);
            }
        }
        for p in &self.protected {
            host.protect(p, "protected path", true);
        }
        // The CLI's own settings and credentials: a tool that could write
        // them could make the next agent session run commands.
        if let Some(home) = std::env::var_os("HOME") {
            // (Its `~/.claude.json` beside it is out of reach with it: grants
            // are directories.)
            host.protect(
                &PathBuf::from(home).join(".claude"),
                "claude CLI settings",
                true,
            );
        }
        // Where the CLI keeps them instead, if the host's environment says
        // so (the CLI inherits `CLAUDE_` names): a grant over its parent
        // read the CLI's credentials (found by review).
        if let Some(dir) = std::env::var_os("CLAUDE_CONFIG_DIR").filter(|d| !d.is_empty()) {
            host.protect(Path::new(&dir), "claude CLI settings", true);
        }
        if let Ok(cwd) = std::env::current_dir() {
            host.protect(&cwd.join(".claude"), "claude CLI project settings", true);
        }
        host
    }
}

/// The path the process was started by (`argv[0]`, looked up in `PATH`
/// when it names no directory), as written: not resolved, so a symlink to
/// the executable is where it is.
fn started_by() -> Option<PathBuf> {
    let arg0 = PathBuf::from(std::env::args_os().next()?);
    if arg0.components().count() > 1 {
        return std::path::absolute(&arg0).ok();
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(&arg0))
        .find(|p| p.is_file())
}

/// What [`Core::reconfigure`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Reconfigured {
    /// Tools of the new configuration that failed to load; the rest are
    /// served.
    pub load_errors: Vec<LoadError>,
    /// Sections of the new config that changed but only take effect on a
    /// restart (`[engine]`, `[audit]`, `[tasks]`): the running ones stay.
    pub needs_restart: Vec<&'static str>,
}

/// The host: a catalog of sandboxed tools and the one call path to them.
///
/// A cheap-clone handle (like wasmtime's `Engine`): clones share the same
/// sandbox, catalog and audit log; never wrap it in an `Arc`.
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// use toolhost::{CallRequest, Core, Scope};
/// let core = Core::builder().source(Scope::default(), "build/tools").build().await?;
/// let args = serde_json::json!({"text": "hi"}).as_object().cloned();
/// let out = core.call(CallRequest::new(Scope::default(), "echo", args)).await?;
/// println!("{}", out.text());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Core {
    inner: Arc<Inner>,
}

struct Inner {
    /// Shared with the calls running on the guest executor.
    sandbox: Arc<Sandbox>,
    scheduler: Scheduler,
    /// What calls see: swapped whole by a reload, so no call sees a new
    /// tool under an old rule or the other way round. A running call holds
    /// the one it started with.
    live: ArcSwap<Live>,
    /// Each tenant's quota state (its limits swapped in place on a
    /// reconfigure, its running calls still counted).
    quotas: ArcSwap<QuotaBook>,
    /// The audit lines of refusals before a call (quotas, front ends'
    /// bounds, credentials), thinned out.
    refusals: crate::audit::Thinned,
    audit: Audit,
    metrics: Metrics,
    /// `[tasks]`: read by front ends that serve tasks.
    tasks: crate::config::TasksConfig,
    /// Scopes whose tool lists changed.
    changed: Changes,
    /// Scopes whose resource-serving components changed.
    served_changed: Changes,
    /// What reloads load from; one reload at a time.
    inputs: tokio::sync::Mutex<Inputs>,
}

/// The catalog and the policy that judges its calls.
struct Live {
    catalog: Catalog,
    policy: Arc<Policy>,
}

/// Tells one scope's subscriber when that scope's tool list changes (see
/// [`Core::watch_tools`]).
pub struct ToolsWatch {
    rx: tokio::sync::watch::Receiver<u64>,
}

impl ToolsWatch {
    /// Wait until the scope's tools change (changes since the last call
    /// are told once); `None` once the core is gone.
    pub async fn changed(&mut self) -> Option<()> {
        self.rx.changed().await.ok()
    }
}

/// Which scopes a reload changed, told to each scope's watchers alone: a
/// count of changes per watched scope. (One broadcast of the scopes each
/// reload changed told a watcher that fell 64 reloads behind that its own
/// scope had changed, whatever had: a tenant could learn of others'
/// reloads; found by review.)
#[derive(Default)]
struct Changes(std::sync::Mutex<std::collections::HashMap<Scope, tokio::sync::watch::Sender<u64>>>);

impl Changes {
    fn watch(&self, scope: &Scope) -> ToolsWatch {
        let mut by_scope = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let tx = by_scope
            .entry(scope.clone())
            .or_insert_with(|| tokio::sync::watch::channel(0).0);
        ToolsWatch { rx: tx.subscribe() }
    }

    /// Tell the watchers of each of `scopes`; forget scopes nobody watches.
    fn tell(&self, scopes: &[Scope]) {
        let mut by_scope = self.0.lock().unwrap_or_else(|e| e.into_inner());
        by_scope.retain(|_, tx| tx.receiver_count() > 0);
        for s in scopes {
            if let Some(tx) = by_scope.get(s) {
                tx.send_modify(|n| *n += 1);
            }
        }
    }
}

impl Core {
    /// Start building a core.
    pub fn builder() -> CoreBuilder {
        CoreBuilder::default()
    }

    /// The call path's metrics (what [`CoreBuilder::metrics`] was given).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The operator's `[tasks]` settings (for front ends that serve tasks).
    #[cfg_attr(not(feature = "mcp"), allow(dead_code))]
    pub(crate) fn tasks_config(&self) -> &crate::config::TasksConfig {
        &self.inner.tasks
    }

    /// The audit log.
    pub fn audit(&self) -> &Audit {
        &self.inner.audit
    }

    /// Write and sync every audit record queued so far: call it before a
    /// clean shutdown (dropping the last handle does it too, blocking).
    pub async fn flush_audit(&self) {
        self.inner.audit.flush().await
    }

    /// Tools that failed to load in the current catalog.
    pub fn load_errors(&self) -> Vec<LoadError> {
        self.inner.live.load().catalog.errors.clone()
    }

    /// The tools `scope` may see, sorted by name.
    pub fn tools(&self, scope: &Scope) -> Vec<ToolDef> {
        let live = self.inner.live.load();
        live.catalog
            .tools(scope)
            .filter(|t| live.policy.visible(scope.as_str(), &t.def.name))
            .map(|t| t.def.clone())
            .collect()
    }

    /// Whether a tool `scope` may see can run as a task (its task support
    /// is optional or required), for the capabilities a front end declares.
    pub fn serves_tasks(&self, scope: &Scope) -> bool {
        let live = self.inner.live.load();
        live.catalog
            .tools(scope)
            .filter(|t| t.def.task_support != crate::model::TaskSupport::Forbidden)
            .any(|t| live.policy.visible(scope.as_str(), &t.def.name))
    }

    /// The input schema of `name` in `scope`, if the scope sees it (no
    /// copy of the tool: the HTTP front end asks on every stateless call).
    #[cfg(feature = "http")]
    pub(crate) fn tool_input_schema(
        &self,
        scope: &Scope,
        name: &str,
    ) -> Option<Arc<serde_json::Map<String, Value>>> {
        self.visible_tool(scope, name, |t| t.def.input_schema.clone())
    }

    /// Tool `name` of `scope`'s task support, the component serving it (an
    /// identity, valid while that component is loaded) and how many calls
    /// that component runs at once: for front ends that keep calls running
    /// past their request (tasks). No copy of the tool: it is asked on
    /// every call.
    #[cfg_attr(not(feature = "mcp"), allow(dead_code))]
    pub(crate) fn tool_tasks(
        &self,
        scope: &Scope,
        name: &str,
    ) -> Option<(crate::model::TaskSupport, (usize, u32))> {
        self.visible_tool(scope, name, |t| {
            (
                t.def.task_support,
                (
                    Arc::as_ptr(&t.component) as usize,
                    t.component.grants.limits.max_concurrency,
                ),
            )
        })
    }

    /// Tool `name`, if `scope` may see it.
    pub fn tool(&self, scope: &Scope, name: &str) -> Option<ToolDef> {
        self.visible_tool(scope, name, |t| t.def.clone())
    }

    /// What serves the tool, prompt or resource `name` (`kind`: `tool`,
    /// `prompt`, `resource`) of `scope` now: its component's load
    /// fingerprint (its manifest's text and its component file, not the
    /// host config's caps: answers given to a component still go to it
    /// when only what the operator grants it changed, and it runs under
    /// the new grants). A stateless round's answers are bound to it, so a
    /// reload that swaps what serves a name does not hand the new
    /// component the answers given to the old one (found by review).
    pub(crate) fn served_by(&self, scope: &Scope, kind: &str, name: &str) -> Option<[u8; 32]> {
        let target = match kind {
            "tool" => Target::Call,
            "prompt" => Target::Get,
            "resource" => Target::Read,
            _ => return None,
        };
        let live = self.inner.live.load();
        resolve(&live.catalog, scope, name, &target).map(|(c, _)| c.fingerprint)
    }

    /// `f` of tool `name` of `scope`, if the scope may see it (its policy
    /// does not hide it).
    fn visible_tool<R>(
        &self,
        scope: &Scope,
        name: &str,
        f: impl FnOnce(&CatalogTool) -> R,
    ) -> Option<R> {
        let live = self.inner.live.load();
        live.catalog
            .get(scope, name)
            .filter(|t| live.policy.visible(scope.as_str(), &t.def.name))
            .map(|t| f(t))
    }

    /// Every scope with at least a source.
    pub fn scopes(&self) -> Vec<Scope> {
        let mut s: Vec<Scope> = self.inner.live.load().catalog.scopes().cloned().collect();
        s.sort();
        s
    }

    /// Be told when `scope`'s tool list changes (a reload changed what it
    /// sees). Other scopes' changes are not reported to it.
    pub fn watch_tools(&self, scope: &Scope) -> ToolsWatch {
        self.inner.changed.watch(scope)
    }

    /// Be told when the components serving `scope`'s resources change (a
    /// reload replaced, added or removed one): what a resource
    /// subscription can observe of a change.
    pub fn watch_resources(&self, scope: &Scope) -> ToolsWatch {
        self.inner.served_changed.watch(scope)
    }

    /// Which version of its component serves resource `uri` in `scope`
    /// (the component's digest and load fingerprint), if `scope` may read
    /// it: a subscription notices a change when this does.
    #[cfg(feature = "mcp")]
    pub(crate) fn resource_version(&self, scope: &Scope, uri: &str) -> Option<[u8; 32]> {
        let live = self.inner.live.load();
        if !live.policy.visible(scope.as_str(), uri) {
            return None;
        }
        let c = live.catalog.served(scope)?.owner(uri)?;
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(c.manifest.sha256);
        h.update(c.fingerprint);
        Some(h.finalize().into())
    }

    /// Reload every source. Calls already running finish on the old
    /// catalog; unchanged components are kept as they are. Watchers of
    /// each scope whose tool list changed are told. Returns the load errors
    /// of the new catalog.
    pub async fn reload(&self) -> Vec<LoadError> {
        let inputs = self.inner.inputs.lock().await;
        let old = self.inner.live.load_full();
        let catalog = Catalog::load(
            &self.inner.sandbox,
            &inputs.sources,
            &inputs.caps,
            &inputs.host,
            Previous::Components(&old.catalog),
            &|_| {},
        )
        .await;
        self.swap_in(
            &old,
            Live {
                catalog,
                policy: old.policy.clone(),
            },
        )
    }

    /// Serve `config` (tenants, agents, caps, rules) and `sources` from now
    /// on, in place of what the core was built with, without dropping a
    /// call: calls already running finish on the old catalog, under the
    /// grants they started with; components whose manifest and caps are
    /// unchanged are kept as they are (no recompile, warm pools kept); each
    /// tenant's quota state carries over (its running calls still hold
    /// their `max-concurrent` slots, its budgets their balance). Watchers of
    /// each scope whose tool list changed are told.
    ///
    /// `sources` replaces every source, the builder's included (a front end
    /// passes what it would build with: its own tool directories and
    /// [`HostConfig::sources`]). The embedder's own rules and protected
    /// paths are kept. `[engine]`, `[audit]` and `[tasks]` are read once:
    /// a change to them is reported in [`Reconfigured::needs_restart`] and
    /// takes effect on the next start.
    pub async fn reconfigure(&self, config: HostConfig, sources: Vec<Source>) -> Reconfigured {
        let mut inputs = self.inner.inputs.lock().await;
        let needs_restart = inputs.fixed.differences(&Fixed::of(&config));
        let old = self.inner.live.load_full();
        // Nothing is changed until the new catalog is in: a reconfigure
        // dropped while it loads leaves the core as it was.
        let mut next = Inputs {
            sources: under_scope_caps(&config, sources),
            caps: config.caps.clone(),
            host: HostState::default(),
            own_rules: inputs.own_rules.clone(),
            protected: inputs.protected.clone(),
            // Read once, at build: the running ones stay.
            fixed: inputs.fixed.clone(),
        };
        next.host = next.host_state(&config, &self.inner.sandbox, &self.inner.audit);
        // A component's grants were checked against the paths protected
        // then: when those change, every component is prepared again (what
        // its `describe` answered still holds).
        let previous = if next.host == inputs.host {
            Previous::Components(&old.catalog)
        } else {
            Previous::Described(&old.catalog)
        };
        let catalog = Catalog::load(
            &self.inner.sandbox,
            &next.sources,
            &next.caps,
            &next.host,
            previous,
            &|_| {},
        )
        .await;
        let policy = Arc::new(next.policy(&config));
        *inputs = next;
        // Quotas before the catalog: a new tenant's first call is held to
        // its quotas.
        let quotas =
            QuotaBook::reconfigured(config.tenants_and_agents(), Some(&self.inner.quotas.load()));
        self.inner.quotas.store(Arc::new(quotas));
        let load_errors = self.swap_in(&old, Live { catalog, policy });
        for s in &needs_restart {
            tracing::warn!("reconfigure: {s} changed; it takes effect on a restart");
        }
        Reconfigured {
            load_errors,
            needs_restart,
        }
    }

    /// Replace `old` with `new` and tell the watchers of each scope whose
    /// tools or resources changed; the new catalog's load errors.
    fn swap_in(&self, old: &Live, new: Live) -> Vec<LoadError> {
        // What a client sees of a scope's tools; a change means list_changed.
        let fingerprint = |live: &Live, s: &Scope| -> Vec<_> {
            live.catalog
                .tools(s)
                .filter(|t| live.policy.visible(s.as_str(), &t.def.name))
                .map(|t| {
                    let d = &t.def;
                    (
                        d.name.clone(),
                        t.component.manifest.sha256,
                        d.description.clone(),
                        d.input_schema.clone(),
                        serde_json::to_string(&d.annotations).unwrap_or_default(),
                    )
                })
                .collect()
        };
        let mut scopes: Vec<&Scope> = old.catalog.scopes().chain(new.catalog.scopes()).collect();
        scopes.sort();
        scopes.dedup();
        let changed: Vec<Scope> = scopes
            .iter()
            .filter(|s| fingerprint(old, s) != fingerprint(&new, s))
            .map(|s| (*s).clone())
            .collect();
        // What serves a scope's resources: a change is a possible update of
        // every resource it serves.
        let served = |cat: &Catalog, s: &Scope| -> Vec<_> {
            cat.served(s)
                .into_iter()
                .flat_map(|x| x.components.iter())
                .map(|c| (c.manifest.sha256, c.fingerprint))
                .collect()
        };
        let served_changed: Vec<Scope> = scopes
            .iter()
            .filter(|s| served(&old.catalog, s) != served(&new.catalog, s))
            .map(|s| (*s).clone())
            .collect();
        let errors = new.catalog.errors.clone();
        self.inner.metrics.loaded(errors.len());
        // No sandbox prepared before this reload is used after it, and
        // each scope's share is sized again from its caps now.
        self.inner.sandbox.invalidate_prepared();
        self.inner.sandbox.reset_scope_shares();
        let retired = old.catalog.not_in(&new.catalog);
        self.inner.live.store(Arc::new(new));
        // Calls that found these and still wait for room do not run.
        for c in retired {
            c.retire();
        }
        self.inner.changed.tell(&changed);
        self.inner.served_changed.tell(&served_changed);
        for e in &errors {
            tracing::warn!("reload: {e}");
        }
        errors
    }

    /// How the sandboxes prepared ahead of calls (after a reply,
    /// `[engine] prepare-after-reply`, or in the background, `prewarm`)
    /// were used so far.
    pub fn prewarm_stats(&self) -> crate::sandbox::PrewarmStats {
        self.inner.sandbox.prewarm_stats()
    }

    /// Sandboxes calls may hold at once: `[engine] max-instances`, or the
    /// size this host afforded when the core was built (see
    /// [`EngineConfig::max_instances`](crate::EngineConfig::max_instances)).
    pub fn pool_size(&self) -> u32 {
        self.inner.sandbox.pool_size()
    }

    /// Admit a call of `tool` in `scope` under its tenant's quotas now, or
    /// say which quota it is over (counted, and written to the audit log as
    /// a decision, here: every front end's refusals alike, see
    /// [`Core::refused`]).
    pub(crate) fn admit(
        &self,
        scope: &Scope,
        caller: &str,
        tool: &str,
        rate: bool,
    ) -> Result<Admission, OverQuota> {
        match self.inner.quotas.load().admit(scope, rate) {
            Ok(a) => Ok(a),
            Err(q) => Err(self.over_quota(scope, caller, tool, q)),
        }
    }

    /// `req` admitted under its tenant's quotas now, if a front end has
    /// work to do for it before the core runs it (a stateless read or get
    /// opens its round: decrypting the client's state, digesting its
    /// arguments), so that a tenant over its quotas is refused before that
    /// work, as a call is at the HTTP door (found by review: a tenant over
    /// its quota had 2 MB states decrypted under every key of the ring,
    /// and was told the state was bad). Kept if admitted already.
    #[cfg(feature = "mcp")]
    pub(crate) fn admit_early(&self, mut req: CallRequest) -> Result<CallRequest, CallError> {
        let held = req.admission.take();
        let a = self.admission(held, &req.scope, &req.caller, &req.tool, true)?;
        Ok(req.admitted(a))
    }

    /// `held`, if it is an admission of `scope`'s (a front end's, made
    /// early), else one made now under the tenant's quotas (`rate`:
    /// counted in `calls-per-minute`), or the call's refusal.
    fn admission(
        &self,
        held: Option<Admission>,
        scope: &Scope,
        caller: &str,
        tool: &str,
        rate: bool,
    ) -> Result<Admission, CallError> {
        match held.filter(|a| a.scope() == scope) {
            Some(a) => Ok(a),
            None => self
                .admit(scope, caller, tool, rate)
                .map_err(|q| over_quota_error(tool, q)),
        }
    }

    /// The meter of one of `scope`'s requests before it is a call, if its
    /// tenant has a `fuel-per-minute` (see [`crate::quota::RequestMeter`]):
    /// the host's reading and parsing of a request that is no call, or a
    /// call refused, cost the host that with no quota counting it (found by
    /// review: 60,000 keys of junk in `tools/list` parameters cost 44 ms
    /// each, and two connections' worth slowed another tenant's calls
    /// 13-fold).
    #[cfg(feature = "http")]
    pub(crate) fn meter_request(&self, scope: &Scope) -> Option<crate::quota::RequestMeter> {
        self.inner.quotas.load().meter_request(scope)
    }

    /// Refuse the request `meter` measures (`what`, by `caller`): its
    /// tenant's `fuel-per-minute` was spent when it began. Counted and
    /// audited like a refused call.
    #[cfg(feature = "http")]
    pub(crate) fn refuse_metered(
        &self,
        meter: &crate::quota::RequestMeter,
        scope: &Scope,
        caller: &str,
        what: &str,
    ) -> OverQuota {
        self.over_quota(scope, caller, what, meter.refusal())
    }

    /// Count and audit a quota refusal of `what`, and return it.
    fn over_quota(&self, scope: &Scope, caller: &str, what: &str, refused: OverQuota) -> OverQuota {
        self.refused(scope, refused.quota, caller, what, &refused.message);
        refused
    }

    /// Charge `bytes` sent to `scope` once more (`what`: a task's kept
    /// result, polled again) to its tenant's output quota, or refuse if
    /// that is used up: counted and audited like a refused call. The call
    /// paid for its result once, when it ended; every later copy is paid
    /// for here, so polling a large result is no free way to make the host
    /// send bytes.
    #[cfg(feature = "mcp")]
    pub(crate) fn resend(
        &self,
        scope: &Scope,
        caller: &str,
        what: &str,
        bytes: u64,
    ) -> Result<(), OverQuota> {
        match self.inner.quotas.load().resend(scope, bytes) {
            Ok(()) => Ok(()),
            Err(q) => Err(self.over_quota(scope, caller, what, q)),
        }
    }

    /// Count a refusal of `what` over `quota` (a tenant's quota, or a
    /// front end's bound such as HTTP's `max-sessions`), made by `caller`
    /// before any call: every one in the metrics, and in the audit log
    /// thinned to a line a second per scope and quota, written without
    /// waiting (`audit::Thinned`): a client can repeat refused requests as
    /// fast as it likes.
    pub(crate) fn refused(
        &self,
        scope: &Scope,
        quota: &'static str,
        caller: &str,
        what: &str,
        message: &str,
    ) {
        self.inner.metrics.quota_rejected(scope.as_str(), quota);
        self.decision_thinned(scope.as_str(), quota, caller, what, "over_quota", &message);
    }

    /// Audit a request refused for its credential (none, or one that names
    /// no tenant this endpoint serves), thinned like [`Core::refused`]: the
    /// record's tenant is empty, as none was identified; its message names
    /// the client's address (`peer`, the one of the line's request).
    #[cfg(feature = "http")]
    pub(crate) fn unauthenticated(
        &self,
        caller: &str,
        reason: &str,
        peer: Option<std::net::SocketAddr>,
    ) {
        let from = Peer(peer);
        self.decision_thinned(
            "",
            "credential",
            caller,
            "request",
            "unauthenticated",
            &format_args!("{reason}{from}"),
        );
    }

    /// Write a decision line for `scope` and `key` if one is due (see
    /// `audit::Thinned`), saying how many refusals it stands for.
    fn decision_thinned(
        &self,
        scope: &str,
        key: &'static str,
        caller: &str,
        what: &str,
        outcome: &'static str,
        message: &dyn std::fmt::Display,
    ) {
        if !self.inner.audit.enabled() {
            return;
        }
        if let Some(n) = self.inner.refusals.note(scope, key) {
            let message = match n {
                0 | 1 => message.to_string(),
                n => format!("{message} ({n} refusals since the last line)"),
            };
            self.inner
                .audit
                .record_decision(scope, caller, what, outcome, &message);
        }
    }

    /// The one call path.
    pub async fn call(&self, req: CallRequest) -> Result<ToolOutput, CallError> {
        match self.run(req, Target::Call).await? {
            Output::Tool(out) => Ok(out),
            _ => Err(mismatch()),
        }
    }

    /// The static resources `scope` may see (those its components always
    /// serve), in load order. Run-time ones: [`Core::list_resources`].
    pub fn resources(&self, scope: &Scope) -> Vec<ResourceDef> {
        let live = self.inner.live.load();
        let (cat, policy) = (&live.catalog, &live.policy);
        cat.served(scope)
            .into_iter()
            .flat_map(|s| s.components.iter())
            .flat_map(|c| c.served.resources.iter())
            .filter(|r| policy.visible(scope.as_str(), &r.uri))
            .cloned()
            .collect()
    }

    /// The resource templates `scope` may see.
    pub fn resource_templates(&self, scope: &Scope) -> Vec<TemplateDef> {
        let live = self.inner.live.load();
        let (cat, policy) = (&live.catalog, &live.policy);
        cat.served(scope)
            .into_iter()
            .flat_map(|s| s.components.iter())
            .flat_map(|c| c.served.templates.iter().map(|(t, _)| t))
            .filter(|t| policy.visible(scope.as_str(), &t.uri_template))
            .cloned()
            .collect()
    }

    /// The prompts `scope` may see, sorted by name.
    pub fn prompts(&self, scope: &Scope) -> Vec<PromptDef> {
        let live = self.inner.live.load();
        let Some(s) = live.catalog.served(scope) else {
            return Vec::new();
        };
        s.prompts
            .iter()
            .filter(|(name, _)| live.policy.visible(scope.as_str(), name))
            .filter_map(|(name, c)| c.served.prompts.iter().find(|p| p.name == *name))
            .cloned()
            .collect()
    }

    /// What `scope` is served besides tools: (resources, prompts,
    /// completions), for the capabilities a front end declares.
    pub fn serves(&self, scope: &Scope) -> (bool, bool, bool) {
        let live = self.inner.live.load();
        let Some(s) = live.catalog.served(scope) else {
            return (false, false, false);
        };
        let resources = s.components.iter().any(|c| {
            let d = &c.served;
            !d.resources.is_empty() || !d.templates.is_empty() || d.dynamic
        });
        let prompts = !s.prompts.is_empty();
        let completions = s.components.iter().any(|c| c.served.completions);
        (resources, prompts, completions)
    }

    /// Every resource `scope` may see now: the static ones, and those its
    /// components list at run time (each listing runs like a call, in a
    /// fresh sandbox with the component's grants; `req`'s scope, caller,
    /// session and cancellation apply to each). A component whose listing
    /// fails is left out (and the failure is in the audit log).
    pub async fn list_resources(&self, req: CallRequest) -> Vec<ResourceDef> {
        let mut out = self.resources(&req.scope);
        let dynamic: Vec<(String, PathBuf)> = {
            let live = self.inner.live.load();
            live.catalog
                .served(&req.scope)
                .into_iter()
                .flat_map(|s| s.components.iter())
                .filter(|c| c.served.dynamic)
                .map(|c| (component_name(c), c.manifest.path.clone()))
                .collect()
        };
        for (name, manifest) in dynamic {
            let mut one = CallRequest::new(req.scope.clone(), name.clone(), None)
                .caller(&*req.caller)
                .cancel(req.cancel.clone());
            one.session = req.session.clone();
            one.principal = req.principal.clone();
            let target = Target::List {
                manifest: manifest.clone(),
            };
            match self.run(one, target).await {
                Ok(Output::Listed(list)) => {
                    // Only URIs the listing component serves: a component
                    // cannot list entries in another's URIs.
                    let live = self.inner.live.load();
                    let served = live.catalog.served(&req.scope);
                    for r in list {
                        let own = served
                            .and_then(|s| s.owner(&r.uri))
                            .is_some_and(|c| c.manifest.path == manifest);
                        if own
                            && !out.iter().any(|o| o.uri == r.uri)
                            && live.policy.visible(req.scope.as_str(), &r.uri)
                        {
                            out.push(r);
                        }
                    }
                }
                Ok(_) => {}
                // A guest's own text: escaped, as the audit log's.
                Err(e) => tracing::debug!(
                    "resources/list: {}",
                    crate::audit::shown(&e.to_string(), 4096)
                ),
            }
        }
        out
    }

    /// Read resource `req.tool` (its URI): found among the resources and
    /// templates `req.scope`'s components declare, then read in a fresh
    /// sandbox of the one that serves it. A URI no component of the scope
    /// serves (or one policy hides) is [`CallErrorKind::UnknownTool`], as
    /// for tools.
    pub async fn read_resource(&self, req: CallRequest) -> Result<Vec<ResourceBody>, CallError> {
        match self.run(req, Target::Read).await? {
            Output::Read(b) => Ok(b),
            _ => Err(mismatch()),
        }
    }

    /// Render prompt `req.tool` with `req.arguments` (an object of strings).
    pub async fn get_prompt(&self, req: CallRequest) -> Result<PromptOutput, CallError> {
        match self.run(req, Target::Get).await? {
            Output::Prompt(p) => Ok(p),
            _ => Err(mismatch()),
        }
    }

    /// Suggest values for `argument` of `reference`, starting from `value`;
    /// `req.arguments` holds the arguments already chosen (strings), and
    /// `req.tool` is ignored.
    pub async fn complete(
        &self,
        mut req: CallRequest,
        reference: CompletionRef,
        argument: &str,
        value: &str,
    ) -> Result<Completion, CallError> {
        req.tool = match &reference {
            CompletionRef::Prompt(n) | CompletionRef::ResourceTemplate(n) => n.clone(),
        };
        let target = Target::Complete {
            reference,
            argument: argument.to_string(),
            value: value.to_string(),
        };
        match self.run(req, target).await? {
            Output::Completion(c) => Ok(c),
            _ => Err(mismatch()),
        }
    }

    async fn run(&self, req: CallRequest, target: Target) -> Result<Output, CallError> {
        let span = tracing::info_span!(
            "core.call",
            // The client's text, not yet a tool's name: as messages show it
            // (it went to the OpenTelemetry export whole, found by review).
            tool = %crate::error::Shown(&req.tool),
            method = target.method(),
            scope = %req.scope,
            caller = %req.caller,
            outcome = tracing::field::Empty,
        );
        // Boxed here, where every front end's call comes in: a call's
        // future is kilobytes (its checks, its audit record, its state).
        // Made in its box (in optimized builds, see `boxed_in_place`), it
        // is not copied by being boxed, nor by the futures above that hold
        // it as they are moved (see `Scheduler::run`).
        boxed_in_place(|| self.call_traced(req, target).instrument(span)).await
    }

    async fn call_traced(&self, req: CallRequest, target: Target) -> Result<Output, CallError> {
        let started = Instant::now();
        let inner = &self.inner;
        // Quotas first: a refused call is a decision, not a call.
        let rate = !matches!(target, Target::List { .. });
        let admission = self
            .admission(req.admission, &req.scope, &req.caller, &req.tool, rate)
            .inspect_err(|_| {
                tracing::Span::current().record("outcome", "over_quota");
            })?;
        let admission = Arc::new(admission);
        let args = Value::Object(req.arguments.unwrap_or_default());
        let live = self.inner.live.load_full();
        let scope = req.scope.as_str();
        // Filled in as the call goes; counted and written by the guard if
        // the call's future is dropped before it is.
        let mut pending = Pending {
            core: self,
            rec: inner.audit.enabled().then(|| {
                let mut r = AuditRecord::new(scope, &req.caller, &req.tool);
                r.session = req.session.as_deref().map(str::to_string);
                r.principal = req
                    .principal
                    .as_deref()
                    .map(|p| crate::audit::bounded(p, crate::audit::MAX_TOOL));
                if !matches!(target, Target::Call) {
                    r.event = target.method();
                }
                Box::new(r)
            }),
            scope,
            trace: Trace::default(),
            usage: Arc::new(Usage::default()),
            started,
            counted: false,
        };
        if let Some(rec) = &mut pending.rec {
            inner.audit.describe_arguments(rec, &args);
        }
        // Not boxed: this future is (see `Core::run`).
        let result = self
            .call_inner(
                started,
                &live,
                &req.scope,
                &req.tool,
                &target,
                args,
                &mut pending.trace,
                &admission,
                CallContext {
                    events: req.events,
                    cancel: Some(req.cancel),
                    client: req.client,
                    guests: None,
                    usage: pending.usage.clone(),
                    turn: None,
                    spent: std::time::Duration::ZERO,
                    checked: None,
                    // Scopes share the pool (M1); a catalog of one scope
                    // has no one to share it with (a share would only
                    // halve it).
                    scope: (live.catalog.scope_count() > 1).then(|| req.scope.clone()),
                    cpu: None,
                },
            )
            .await
            .map_err(|kind| CallError::new(req.tool.as_str(), kind).about(target.subject()));
        // Sized only for a tenant that has an output quota: weighing a
        // result (its structured part serialized) is not free. A failure is
        // output too (a guest's error or trap message reaches the caller).
        // So are its events, and the questions a stateless caller is sent
        // to answer (found by review: the event budget, and up to
        // `max-requests` questions of 256 KiB each, went uncharged; a
        // task's are charged as it is polled).
        if admission.meters_output() {
            let result_bytes = match &result {
                Ok(out) => out.size(),
                Err(e) => match e.kind() {
                    CallErrorKind::InputRequired { requests } => requests
                        .iter()
                        .map(|q| {
                            let params = serde_json::to_string(&q.params).map_or(0, |p| p.len());
                            (q.key.len() + q.method.len() + params) as u64
                        })
                        .sum(),
                    _ => e.to_string().len() as u64,
                },
            };
            admission.charge_output(result_bytes.saturating_add(pending.usage.sent()));
        }
        drop(admission);
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        tracing::Span::current().record("outcome", outcome);
        pending.end(outcome, result.as_ref().err());
        if pending.rec.is_some() {
            // Room in the queue is waited for with the record still in the
            // guard: a call whose future is dropped while it waits (an
            // embedder's timeout, a front end shutting down) is still
            // written, or counted as dropped (it was lost, found by
            // review).
            // Both waits boxed: unboxed they would be part of every call's
            // future, audited or not; the first only if the queue is full.
            let room = match inner.audit.try_room() {
                Some(room) => Some(room),
                None => Box::pin(inner.audit.room()).await,
            };
            if let (Some(rec), Some(room)) = (pending.rec.take(), room) {
                Box::pin(inner.audit.send(*rec, room)).await;
            }
        }
        result
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the one call path's inputs, each named at its single call site"
    )]
    async fn call_inner<'c>(
        &self,
        started: Instant,
        live: &'c Live,
        scope: &Scope,
        name: &str,
        target: &Target,
        mut args: Value,
        trace: &mut Trace<'c>,
        admission: &Arc<Admission>,
        cx: CallContext,
    ) -> Result<Output, CallErrorKind> {
        let (catalog, policy) = (&live.catalog, &live.policy);
        let (component, tool) = {
            let _policy = tracing::debug_span!("policy").entered();
            // A tool (resource, prompt) of another scope, and one policy
            // hides, are the same as one that does not exist (to the
            // caller; the audit log says which rule hid it).
            let (component, tool) =
                resolve(catalog, scope, name, target).ok_or(CallErrorKind::UnknownTool)?;
            let (visible, rule) = policy.visible_by(scope.as_str(), name);
            if !visible {
                trace.decision = "deny";
                trace.rule = rule;
                return Err(CallErrorKind::UnknownTool);
            }
            // In flight from here: a call of a tool (resource, prompt)
            // the caller may see. Its scope's gauge comes with the
            // tool's series, looked up once.
            trace.in_flight = Some(match &tool {
                Some(t) => {
                    self.inner
                        .metrics
                        .started_in(series_of(&self.inner.metrics, scope.as_str(), t))
                }
                None => self.inner.metrics.started(scope.as_str()),
            });
            trace.tool = tool;
            trace.component = Some(component);
            let (decision, rule) = policy.decide_by(scope.as_str(), name, &args);
            trace.rule = rule;
            if let Decision::Deny(reason) = decision {
                trace.decision = "deny";
                return Err(CallErrorKind::Denied { reason });
            }
            trace.decision = "allow";
            (component, tool)
        };
        // The arguments are checked, then written out as JSON text for the
        // guest: host work done for this call, charged to it. Its wall
        // time counts from the call's start (admission and policy come off
        // the call's timeout too: a clock read fewer); its CPU time, as
        // fuel, only from here.
        let (spent, checked_at, text) = {
            let checking = HostWork::since(started, admission);
            // Whether the check ran on another thread (a large one runs on
            // the guest executor, `aside`), and the text written there.
            let mut aside = false;
            let mut text = None;
            // Not `to_string()`: `Display` writes through `fmt::Write` into
            // a string grown as it goes; this writes into a buffer sized
            // ahead.
            let text_of =
                |args: &Value| serde_json::to_string(args).expect("a JSON value always serializes");
            let checked = async {
                match (&tool, target) {
                    (Some(tool), _) if let Some(size) = tool.input.small(&args) => tool
                        .input
                        .check_small(&args, size)
                        .map_err(|details| CallErrorKind::InvalidArguments { details }),
                    (Some(tool), _) => {
                        // Off the I/O threads: at the guest threads' lower
                        // priority, so a tenant's large arguments cannot
                        // keep a thread that reads and answers requests
                        // busy (M5). Their text is written there too.
                        let (tool, owned) = (Arc::clone(tool), std::mem::take(&mut args));
                        let check = self.aside(admission, move || {
                            let checked = tool.input.check(&owned).map(|()| text_of(&owned));
                            drop(owned);
                            checked
                        });
                        aside = true;
                        match check.await {
                            Ok(checked) => checked
                                .map(|t| text = Some(t))
                                .map_err(|details| CallErrorKind::InvalidArguments { details }),
                            Err(e) => Err(CallErrorKind::Internal {
                                message: format!("the argument check failed: {e}"),
                            }),
                        }
                    }
                    (None, Target::Get) => check_prompt_arguments(component, name, &args),
                    (None, Target::Complete { .. }) => strings_only("the context", &args),
                    _ => Ok(()),
                }
            }
            .instrument(tracing::debug_span!("schema"))
            .await
            .map(|()| text.take().unwrap_or_else(|| text_of(&args)));
            drop(args);
            // The schema is the tool's and the arguments the caller's: the
            // check is work done for this call, charged to it whether it
            // passes or not (M5).
            let (spent, at) = checking.charge(admission, aside);
            (spent, at, checked?)
        };
        // The guest runs here until it first yields, then on the guest
        // executor (`Scheduler::run`); dropping this future (a caller that
        // went away) stops it wherever it runs. It reaches the pool in its
        // scope's turn (see `scheduler`), within the tool's timeout.
        let sandbox = self.inner.sandbox.clone();
        let t = Arc::clone(component);
        let t_timeout = t.grants.limits.timeout;
        let name = name.to_string();
        let target = target.clone();
        let mut cx = cx;
        cx.turn = Some((self.inner.scheduler.fair(), scope.clone()));
        // Scopes share the guest threads by turns (one scope alone has
        // them to itself, and its calls share them as tasks).
        if cx.scope.is_some() {
            cx.cpu = Some(self.inner.scheduler.cpu_turn(scope.clone()));
        }
        cx.spent = spent;
        cx.checked = Some(checked_at);
        // Only a tool that may make requests runs them on the executor.
        if t.grants.net.any() {
            cx.guests = Some(self.inner.scheduler.handle());
        }
        let usage = cx.usage.clone();
        let charge = Charge {
            usage: cx.usage.clone(),
            admission: admission.clone(),
        };
        // Boxed here, where it is made: see `Scheduler::run`. The span is
        // made here, and the sandbox's future pinned where it is made
        // inside (moved into the span's wrapper, it would be copied whole).
        let span = tracing::debug_span!("sandbox");
        let run = boxed_in_place(|| async move {
            // Dropped last, after the guest's store has recorded its costs
            // (also when the task is aborted).
            let _charge = charge;
            let op = match &target {
                Target::Call => Op::Call {
                    tool: &name,
                    arguments: &text,
                },
                Target::Read => Op::Read { uri: &name },
                Target::Get => Op::Get {
                    prompt: &name,
                    arguments: &text,
                },
                Target::Complete {
                    reference,
                    argument,
                    value,
                } => Op::Complete {
                    reference,
                    argument,
                    value,
                    context: &text,
                },
                Target::List { .. } => Op::List,
            };
            let run = std::pin::pin!(sandbox.run(&t, op, cx));
            run.instrument(span).await
        });
        // The sandbox enforces the deadline inside the guest's task; this
        // one answers the caller even if that task cannot run (its thread
        // held by an instruction the epoch cannot interrupt, or blocked),
        // a grace later. Dropping the task's future aborts it.
        let timeout = t_timeout;
        let backstop = tokio::time::Instant::from_std(checked_at) + timeout + DEADLINE_BACKSTOP;
        let admitted = move || usage.admitted();
        let Some(out) = by_deadline(backstop, self.inner.scheduler.run(run, admitted)).await else {
            return Err(CallErrorKind::Timeout { after: timeout });
        };
        let out = out.map_err(|e| CallErrorKind::Internal {
            message: format!("the guest's task failed: {e}"),
        })??;
        let Some(tool) = tool else {
            return Ok(out);
        };
        let Output::Tool(mut out) = out else {
            return Err(CallErrorKind::Internal {
                message: "a tool call answered as something else".into(),
            });
        };
        if let Some(schema) = &tool.output {
            let structured = out
                .structured
                .as_mut()
                .ok_or_else(|| CallErrorKind::BadResult {
                    details: "the tool declares an output schema but returned no structured result"
                        .into(),
                })?;
            let checking = HostWork::start(admission);
            let size = schema.small(structured);
            let aside = size.is_none();
            let checked = if let Some(size) = size {
                schema.check_small(structured, size)
            } else {
                // Off the I/O threads, as large arguments are (M5): the tool
                // chose both the schema and the result, and would hold a
                // thread that reads and answers requests for as long as it
                // takes (found by review). The caller waits no longer than
                // what is left of its deadline and the backstop.
                let (tool, result) = (Arc::clone(tool), std::mem::take(structured));
                let check = self.aside(admission, move || {
                    let checked = tool.output.as_ref().map_or(Ok(()), |s| s.check(&result));
                    (checked, result)
                });
                match by_deadline(backstop, check).await {
                    None => {
                        checking.charge(admission, aside);
                        return Err(CallErrorKind::Timeout { after: timeout });
                    }
                    Some(Ok((checked, result))) => {
                        *structured = result;
                        checked
                    }
                    Some(Err(e)) => {
                        return Err(CallErrorKind::Internal {
                            message: format!("the result's check failed: {e}"),
                        });
                    }
                }
            };
            checking.charge(admission, aside);
            checked.map_err(|d| CallErrorKind::BadResult {
                details: format!("structured result violates the output schema: {d}"),
            })?;
        }
        Ok(Output::Tool(out))
    }

    /// Run `f`, host work for a call (a large schema check), off the I/O
    /// threads: on the guest executor's blocking threads, at their lower
    /// priority, so that a tenant's large arguments or a tool's large
    /// result cannot keep a thread that reads and answers requests busy
    /// (M5). The CPU time it used there is charged to `admission`'s fuel
    /// when it ends, there, even if the caller stopped waiting for it (a
    /// deadline); the caller charges nothing for the wait. The work holds
    /// the admission (the tenant's `max-concurrent` slot) until it ends:
    /// a client that hung up at once left it running outside every slot,
    /// hundreds at a time (found by review).
    fn aside<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(
        &self,
        admission: &Arc<Admission>,
        f: F,
    ) -> impl Future<Output = Result<T, tokio::task::JoinError>> + use<T, F> {
        let admission = Arc::clone(admission);
        self.inner.scheduler.spawn_blocking(move || {
            let before = admission.meters_fuel().then(thread_cpu_time).flatten();
            let out = f();
            if let Some((a, b)) = before.zip(thread_cpu_time()) {
                admission.charge_fuel(fuel_for(b.saturating_sub(a)));
            }
            drop(admission);
            out
        })
    }

    /// A reused instance of `tool`'s component, for the benchmarks only
    /// (not a sandbox per call).
    #[cfg(feature = "unstable-bench")]
    #[doc(hidden)]
    pub async fn bench_warm_instance(
        &self,
        scope: &Scope,
        tool: &str,
    ) -> anyhow::Result<BenchWarm> {
        let live = self.inner.live.load_full();
        let t = live
            .catalog
            .get(scope, tool)
            .ok_or_else(|| anyhow::anyhow!("no tool `{tool}`"))?;
        Ok(BenchWarm(
            self.inner.sandbox.warm_instance(&t.component).await?,
        ))
    }

    /// The sandbox alone (no scope, policy, schema or audit), for the
    /// benchmarks only.
    #[cfg(feature = "unstable-bench")]
    #[doc(hidden)]
    pub async fn bench_sandbox_call(
        &self,
        scope: &Scope,
        tool: &str,
        args: &str,
    ) -> Result<ToolOutput, CallError> {
        let live = self.inner.live.load_full();
        let t = live
            .catalog
            .get(scope, tool)
            .ok_or_else(|| CallError::new(tool, CallErrorKind::UnknownTool))?;
        self.inner
            .sandbox
            .call(&t.component, tool, args, CallContext::default())
            .await
            .map_err(|k| CallError::new(tool, k))
    }
}

/// ` (from ADDRESS)` after a refusal's reason, when the client's address
/// is known.
#[cfg(feature = "http")]
struct Peer(Option<std::net::SocketAddr>);

#[cfg(feature = "http")]
impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => write!(f, " (from {})", a.ip().to_canonical()),
            None => Ok(()),
        }
    }
}

/// Charges a call's tenant the fuel its guest burnt, once the guest is
/// gone (however the call ended), and holds the tenant's slot till then.
struct Charge {
    usage: Arc<Usage>,
    admission: Arc<Admission>,
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.admission.meters_fuel()
            && let Some((fuel, _)) = self.usage.costs()
        {
            self.admission.charge_fuel(fuel);
        }
    }
}

/// Fuel a busy guest burns per nanosecond of a core (about 10^9 units a
/// second on the machines measured; `limits.fuel`'s documentation).
const FUEL_PER_NANOSECOND: u64 = 1;

/// The fuel host work of `cpu` is charged as: what a guest would have
/// burned in that time.
pub(crate) fn fuel_for(cpu: std::time::Duration) -> u64 {
    u64::try_from(cpu.as_nanos())
        .unwrap_or(u64::MAX)
        .saturating_mul(FUEL_PER_NANOSECOND)
}

/// Host work done for a call on the calling thread (schema checks: the
/// schema is the tool's, the value the caller's or the tool's), measured
/// to charge it to the call: its CPU time to the tenant's fuel, its wall
/// time (from the call's start, admission and policy included) to the
/// call's timeout.
struct HostWork {
    wall: Instant,
    /// The thread's CPU time at the start, when the tenant has a fuel
    /// budget to charge it to.
    cpu: Option<std::time::Duration>,
}

impl HostWork {
    fn start(admission: &Admission) -> HostWork {
        HostWork::since(Instant::now(), admission)
    }

    /// Work that began at `wall` (by the wall clock; its CPU time from
    /// now).
    fn since(wall: Instant, admission: &Admission) -> HostWork {
        HostWork {
            wall,
            cpu: admission.meters_fuel().then(thread_cpu_time).flatten(),
        }
    }

    /// Charge the work to the tenant's `fuel-per-minute`, at the rate a
    /// guest would have burned fuel doing it: the thread's CPU time (what
    /// the work cost, however many other threads ran meanwhile), or the
    /// wall time where that clock is missing. Returns the wall time (what
    /// the call's deadline counts) and when the work ended.
    /// `aside`: the work ran on another thread (`Core::aside`), which
    /// charged its CPU there; this thread only waited (and, across the
    /// wait, the task may have moved to another worker, whose clock says
    /// nothing of it: found by review), so no fuel is charged here.
    fn charge(self, admission: &Admission, aside: bool) -> (std::time::Duration, Instant) {
        let now = Instant::now();
        let wall = now.saturating_duration_since(self.wall);
        if admission.meters_fuel() && !aside {
            let used = match (self.cpu, thread_cpu_time()) {
                (Some(a), Some(b)) => b.saturating_sub(a),
                _ => wall,
            };
            admission.charge_fuel(fuel_for(used));
        }
        (wall, now)
    }
}

/// `make()`'s future in a box allocated before it is made, so that it is
/// made in the box. `Box::pin(fut)` makes the future beside the caller and
/// copies it over whole: a future is sized for its largest state, and a
/// call's are kilobytes of which only what they capture is set when they
/// are made (measured: two copies of 1.9 and 3.2 KB a call gone). That
/// the copy goes is the optimizer's doing, not a guarantee of the
/// language (a debug build still copies); inlined, or the future is made
/// in this function's frame and copied all the same.
#[inline(always)]
fn boxed_in_place<F: Future>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

/// `fut`'s output, or `None` if `deadline` passes first: like
/// `tokio::time::timeout_at`, with its timer made only if `fut` is not
/// ready at its first poll (see `scheduler::LazyTimer`).
async fn by_deadline<F: Future>(deadline: tokio::time::Instant, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut timer = crate::scheduler::LazyTimer::new(deadline);
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(out) = fut.as_mut().poll(cx) {
            return std::task::Poll::Ready(Some(out));
        }
        timer.poll(cx).map(|()| None)
    })
    .await
}

/// How long after a call's deadline the caller is answered even if the
/// guest's own deadline, enforced on its task, has not fired (see the call
/// path).
const DEADLINE_BACKSTOP: std::time::Duration = std::time::Duration::from_secs(1);

/// A refusal under a tenant's quota, as a call of `tool` reports it.
fn over_quota_error(tool: &str, q: OverQuota) -> CallError {
    CallError::new(
        tool,
        CallErrorKind::OverQuota {
            quota: q.quota,
            message: q.message,
            retry_after: q.retry_after,
        },
    )
}

/// The CPU time the calling thread has used.
pub(crate) fn thread_cpu_time() -> Option<std::time::Duration> {
    #[cfg(unix)]
    {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `t` is a valid, writable timespec for the call.
        let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } == 0;
        ok.then(|| std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32))
    }
    #[cfg(not(unix))]
    None
}

/// What a request asks of its component.
#[derive(Clone)]
enum Target {
    /// Call the tool named.
    Call,
    /// Read the resource at the URI named.
    Read,
    /// Render the prompt named.
    Get,
    /// Complete an argument of the prompt or template named.
    Complete {
        reference: CompletionRef,
        argument: String,
        value: String,
    },
    /// List the run-time resources of the component loaded from
    /// `manifest` (named by its file stem in audit and errors).
    List { manifest: PathBuf },
}

impl Target {
    /// The MCP method, for the audit log's `event` and traces.
    fn method(&self) -> &'static str {
        match self {
            Target::Call => "call",
            Target::Read => "resources/read",
            Target::Get => "prompts/get",
            Target::Complete { .. } => "completion/complete",
            Target::List { .. } => "resources/list",
        }
    }

    /// What errors call the thing named.
    fn subject(&self) -> crate::error::Subject {
        use crate::error::Subject;
        match self {
            Target::Call => Subject::Tool,
            Target::Read | Target::List { .. } => Subject::Resource,
            Target::Get => Subject::Prompt,
            Target::Complete {
                reference: CompletionRef::Prompt(_),
                ..
            } => Subject::Prompt,
            Target::Complete { .. } => Subject::Template,
        }
    }
}

/// The component that serves `name` for `target` in `scope`, and for a
/// tool call its catalog entry; `None` if there is none there.
fn resolve<'c>(
    catalog: &'c Catalog,
    scope: &Scope,
    name: &str,
    target: &Target,
) -> Option<(&'c Arc<LoadedComponent>, Option<&'c Arc<CatalogTool>>)> {
    if let Target::Call = target {
        let t = catalog.get(scope, name)?;
        return Some((&t.component, Some(t)));
    }
    let served = catalog.served(scope)?;
    let comp = match target {
        Target::Call => return None,
        Target::Read => served.owner(name)?,
        Target::Get => served.prompts.get(name)?,
        Target::Complete { reference, .. } => {
            let c = match reference {
                CompletionRef::Prompt(p) => served.prompts.get(p.as_str())?,
                CompletionRef::ResourceTemplate(t) => served.template_owner(t)?,
            };
            if !c.served.completions {
                return None;
            }
            c
        }
        Target::List { manifest } => served
            .components
            .iter()
            .find(|c| c.served.dynamic && c.manifest.path == *manifest)?,
    };
    Some((comp, None))
}

/// An operation answered as another (a host bug, never a guest's doing).
fn mismatch() -> CallError {
    CallError::new(
        "",
        CallErrorKind::Internal {
            message: "the host got an answer of the wrong kind".into(),
        },
    )
}

/// A component's name: its manifest's file stem.
fn component_name(c: &LoadedComponent) -> String {
    c.manifest
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A prompt's arguments: strings only, every required one given, none it
/// does not declare.
fn check_prompt_arguments(
    comp: &LoadedComponent,
    name: &str,
    args: &Value,
) -> Result<(), CallErrorKind> {
    strings_only("prompt arguments", args)?;
    let Some(def) = comp.served.prompts.iter().find(|p| &*p.name == name) else {
        return Err(CallErrorKind::UnknownTool);
    };
    let given = args.as_object();
    let missing: Vec<&str> = def
        .arguments
        .iter()
        .filter(|a| a.required && given.is_none_or(|g| !g.contains_key(&a.name)))
        .map(|a| a.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(CallErrorKind::InvalidArguments {
            details: format!("missing required argument(s): {}", missing.join(", ")),
        });
    }
    if let Some(g) = given
        && let Some(extra) = g
            .keys()
            .find(|k| !def.arguments.iter().any(|a| &a.name == *k))
    {
        return Err(CallErrorKind::InvalidArguments {
            details: format!("unknown argument `{extra}`"),
        });
    }
    Ok(())
}

fn strings_only(what: &str, args: &Value) -> Result<(), CallErrorKind> {
    if let Some(o) = args.as_object()
        && let Some((k, _)) = o.iter().find(|(_, v)| !v.is_string())
    {
        return Err(CallErrorKind::InvalidArguments {
            details: format!("{what} are strings; `{k}` is not"),
        });
    }
    Ok(())
}

/// What the call path learned about a call, for the audit log: borrowed
/// from the catalog the call was resolved in.
struct Trace<'c> {
    /// The tool, once found and visible.
    tool: Option<&'c Arc<CatalogTool>>,
    /// The component that ran (or would have run) it.
    component: Option<&'c Arc<LoadedComponent>>,
    /// `allow`, `deny`, or `none` (no such tool).
    decision: &'static str,
    /// The rule that decided (0-based), if one did.
    rule: Option<usize>,
    /// Counts the call in its scope's calls in flight until the call ends
    /// (also when its future is dropped).
    in_flight: Option<crate::metrics::InFlight>,
}

/// `tool`'s metric series in `scope`, looked up at its first call and kept
/// with it (a tool is in one scope of one core's catalog).
fn series_of<'a>(
    metrics: &Metrics,
    scope: &str,
    tool: &'a CatalogTool,
) -> &'a crate::metrics::Series {
    tool.series
        .get_or_init(|| metrics.series(scope, &tool.def.name))
}

impl Default for Trace<'_> {
    fn default() -> Self {
        Trace {
            tool: None,
            component: None,
            decision: "none",
            rule: None,
            in_flight: None,
        }
    }
}

/// A call's metrics and audit record until they are counted and written:
/// if the call's future is dropped first (its client went away without
/// cancelling, an embedder's timeout), it is counted and recorded as
/// `abandoned` with what it got to (its tool, the policy's decision, the
/// guest's fuel and memory), so that no call is missing from the metrics
/// or the log; one dropped after it ended, while it waited for room in the
/// audit queue, is written as it ended.
struct Pending<'a, 'c> {
    core: &'a Core,
    /// Boxed: a record is hundreds of bytes, which every call's future
    /// would carry (and copy), audited or not.
    rec: Option<Box<AuditRecord>>,
    scope: &'a str,
    /// What the call found on its way: filled in by `call_inner`.
    trace: Trace<'c>,
    /// What its guest used: filled in by the sandbox, also when dropped.
    usage: Arc<Usage>,
    started: Instant,
    /// Whether the call's end is counted (in the metrics, and in the
    /// record).
    counted: bool,
}

impl Pending<'_, '_> {
    /// The call ended with `outcome` (`error` if it failed): count it, and
    /// write its end into the record (once).
    fn end(&mut self, outcome: &'static str, error: Option<&CallError>) {
        let elapsed = self.started.elapsed();
        let queue_wait = self.usage.queue_wait();
        let metrics = &self.core.inner.metrics;
        match &self.trace.tool {
            Some(t) => {
                let series = series_of(metrics, self.scope, t);
                metrics.finished_in(series, outcome, elapsed);
                if let Some(wait) = queue_wait {
                    metrics.queued_in(series, wait);
                }
            }
            None => {
                metrics.finished(self.scope, crate::metrics::OTHER, outcome, elapsed);
                if let Some(wait) = queue_wait {
                    metrics.queued(self.scope, wait);
                }
            }
        }
        self.counted = true;
        if let Some(rec) = self.rec.as_deref_mut() {
            rec.time = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
            rec.tool_sha256 = self
                .trace
                .component
                .as_ref()
                .map(|c| hex::encode(c.manifest.sha256));
            rec.decision = self.trace.decision;
            rec.rule = self.trace.rule.map(|i| i + 1);
            if let Some(e) = error {
                if let CallErrorKind::Denied { reason } = e.kind() {
                    rec.reason = Some(reason.clone());
                }
                rec.set_detail(e.to_string());
            }
            rec.outcome = outcome;
            rec.duration_us = elapsed.as_micros().min(u64::MAX as u128) as u64;
            rec.queue_wait_us = queue_wait.map(|d| d.as_micros().min(u64::MAX as u128) as u64);
            if let Some((fuel, mem)) = self.usage.costs() {
                rec.fuel_used = Some(fuel);
                rec.peak_memory = Some(mem);
            }
        }
    }
}

impl Drop for Pending<'_, '_> {
    fn drop(&mut self) {
        if !self.counted {
            self.end("abandoned", None);
        }
        if let Some(rec) = self.rec.take() {
            // Without waiting: past a full queue it is counted as dropped.
            self.core.inner.audit.record(*rec);
        }
    }
}

/// A reused instance, for the benchmarks only.
#[cfg(feature = "unstable-bench")]
#[doc(hidden)]
pub struct BenchWarm(crate::sandbox::WarmInstance);

#[cfg(feature = "unstable-bench")]
impl BenchWarm {
    /// Call a tool of the reused instance.
    pub async fn call(&mut self, tool: &str, args: &str) -> anyhow::Result<ToolOutput> {
        self.0.call(tool, args).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A review's case: work run aside for a call (a large schema check)
    /// went on after its caller left, but the tenant's `max-concurrent`
    /// slot went back with the caller. The work holds it until it ends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_aside_holds_its_calls_slot_until_it_ends() {
        let config = HostConfig::parse(
            Path::new("t.toml"),
            &format!(
                "[[tenant]]\nname = \"t\"\ntools = [\"echo\"]\ntoken-sha256 = [\"{}\"]\nmax-concurrent = 1\n",
                "0".repeat(64)
            ),
        )
        .expect("a valid config");
        let book = QuotaBook::new(config.tenants.iter());
        let core = Core::builder().build().await.unwrap();
        let scope = Scope::new("t");
        let admission = Arc::new(book.admit(&scope, true).expect("the one slot"));
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        let (end, ended) = std::sync::mpsc::channel::<()>();
        let work = core.aside(&admission, move || {
            started_tx.send(()).unwrap();
            let _ = ended.recv();
        });
        started.recv().unwrap();
        // The caller leaves: its future and its admission go.
        drop(work);
        drop(admission);
        let refused = book
            .admit(&scope, true)
            .expect_err("the work holds the slot");
        assert_eq!(refused.quota, "max-concurrent", "{}", refused.message);
        end.send(()).unwrap();
        let waited = Instant::now();
        while book.admit(&scope, true).is_err() {
            assert!(waited.elapsed() < std::time::Duration::from_secs(10));
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// A call done at its first poll gets its output even past its
    /// deadline, and makes no timer: on a runtime without a time driver,
    /// making one would panic.
    #[test]
    fn a_call_done_at_its_first_poll_makes_no_backstop_timer() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let past = tokio::time::Instant::now();
        let out = rt.block_on(by_deadline(past, async { 7 }));
        assert_eq!(out, Some(7));
    }

    /// A call that never ends is answered at its deadline; one that ends
    /// before it, after waiting, gets its output.
    #[tokio::test]
    async fn the_backstop_answers_at_the_deadline() {
        let soon = tokio::time::Instant::now() + std::time::Duration::from_millis(50);
        let started = Instant::now();
        assert_eq!(by_deadline(soon, std::future::pending::<u8>()).await, None);
        assert!(started.elapsed() >= std::time::Duration::from_millis(45));
        let later = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        let waited = async {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            3
        };
        assert_eq!(by_deadline(later, waited).await, Some(3));
    }

    /// The backstop fires even for a call whose every poll uses up the
    /// task's cooperative budget (its timer is polled outside it, as
    /// `tokio::time::timeout_at`'s is).
    #[tokio::test]
    async fn the_backstop_fires_past_a_call_that_spends_its_budget() {
        let soon = tokio::time::Instant::now() + std::time::Duration::from_millis(20);
        let greedy = std::future::poll_fn(|cx| {
            // Spend the task's whole budget, then ask to be polled again.
            loop {
                match tokio::task::coop::poll_proceed(cx) {
                    std::task::Poll::Ready(restore) => restore.made_progress(),
                    std::task::Poll::Pending => return std::task::Poll::<u8>::Pending,
                }
            }
        });
        let answered = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            by_deadline(soon, greedy),
        );
        assert_eq!(answered.await.expect("the backstop fired"), None);
    }
}
