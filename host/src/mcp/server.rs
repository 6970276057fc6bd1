//! `McpServer`: the MCP `ServerHandler`. Lists a scope's tools, runs calls
//! through `Core::call`, forwards the running tool's log and progress events
//! to the caller, and tells every connected client when the tool list
//! changes. Serves the scope's resources, prompts and completions
//! (`toolhost:tool@0.2.0` components) through the core's same path
//! (`Core::read_resource`, `get_prompt`, `complete`). Transport-agnostic: stdio, Streamable HTTP and the agent's
//! in-memory `mcp_message` channel all serve this same handler.

#![allow(deprecated)] // rmcp marks MCP logging deprecated (SEP-2577); the spec still has it.

use crate::catalog::Scope;
use crate::core::{CallRequest, Core};
use crate::error::{CallError, CallErrorKind};
use crate::model::{self, CallEvent, LogLevel, TaskSupport, ToolDef, ToolOutput};
use base64::Engine as _;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, CustomRequest,
    CustomResult, ErrorCode, ErrorData, Implementation, ListToolsResult, LoggingLevel,
    LoggingMessageNotificationParam, PaginatedRequestParams, ProgressNotificationParam,
    ProgressToken, ProtocolVersion, ResourceContents, ServerCapabilities, ServerConfig,
    SetLevelRequestParams, SubscriptionFilter, Tool, ToolAnnotations,
};
use rmcp::model::{
    CancelTaskParams, CreateTaskResult, GetTaskParams, GetTaskResult, Task, UpdateTaskParams,
};
use rmcp::model::{
    CompleteRequestParams, CompleteResult, CompletionInfo, GetPromptRequestParams,
    GetPromptResponse, GetPromptResult, ListPromptsResult, ListResourceTemplatesResult,
    ListResourcesResult, Prompt, PromptArgument, PromptMessage, PromptsCapability,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Reference, Resource,
    ResourceTemplate, ResourcesCapability, Role,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::{Peer, RoleServer, ServerHandler};

use super::input::{self, PeerClient, Round, Stateless};
use super::tasks::{Switch, SwitchParts, Tasks};
use crate::mrtr;
use futures::future::BoxFuture;
use std::sync::{Arc, Mutex, Weak};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The MCP handler for one scope's tools. Cheap to clone; clones share the
/// session (its log level, and whether it was told of changes). Use [`McpServer::new_session`] for a handler of
/// another session of the same server (what the HTTP transport does per
/// client).
#[derive(Clone)]
pub struct McpServer {
    shared: Arc<Shared>,
    session: Arc<Session>,
}

/// What every session of one server shares.
struct Shared {
    core: Core,
    scope: Scope,
    /// Who is calling, for the audit log.
    caller: Arc<str>,
    /// Initialized clients, told when the tool list changes.
    peers: Mutex<Vec<Peer<RoleServer>>>,
    /// Running calls; closed once the server drains for shutdown.
    calls: TaskTracker,
    /// Cancelled when the server drains: open `subscriptions/listen`
    /// streams end gracefully.
    closing: CancellationToken,
    /// Seals the request state of stateless calls that need client input.
    state_key: mrtr::StateKey,
    mrtr_limits: mrtr::Limits,
    /// Resource subscriptions of the sessions (2025-11-25 `resources/subscribe`).
    subscriptions: Mutex<Vec<Subscription>>,
    /// Calls that went on as tasks.
    tasks: Arc<Tasks>,
    /// Cancels the change watchers when the last handler goes, rather than
    /// at the next change (a CLI re-initializing in a loop would otherwise
    /// pile up two watchers a server).
    _gone: tokio_util::sync::DropGuard,
}

/// One session's subscription to one resource: it is told
/// (`notifications/resources/updated`) when the version of the component
/// serving the URI changes (a reload replaced, removed or added it).
struct Subscription {
    /// The session's identity (its `Session`'s address).
    session: usize,
    peer: Peer<RoleServer>,
    uri: String,
    version: Option<[u8; 32]>,
}

/// Most resources one session may subscribe to.
const MAX_SUBSCRIPTIONS: usize = 256;

/// Most subscriptions all sessions of one server (one scope) hold
/// together. Each holds its URI (up to 2 KiB) for as long as its session
/// lives, outside every request's count: a review's tenant opened session
/// after session, 256 subscriptions each, and grew the server by 800 KB a
/// session (about 800 MB within `max-sessions`); every subscribe scans
/// them all, under a lock.
const MAX_SUBSCRIPTIONS_TOTAL: usize = 4096;

/// Per-client state.
struct Session {
    /// The minimum level of log messages this client wants (`logging/setLevel`).
    log_level: Mutex<LogLevel>,
    /// Whether its peer is kept for change notifications: once, however
    /// often its client repeats `notifications/initialized` (a review's
    /// case: every repeat kept it again, growing the list, and the work
    /// and copies of every notification, without bound).
    announced: std::sync::atomic::AtomicBool,
}

impl Session {
    fn new() -> Arc<Session> {
        Arc::new(Session {
            log_level: Mutex::new(LogLevel::Info),
            announced: Default::default(),
        })
    }
    fn log_level(&self) -> LogLevel {
        *self.log_level.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl McpServer {
    /// A server for `scope`'s tools. When called inside a tokio runtime, it
    /// also starts forwarding the core's tool-list changes to its clients
    /// (as `notifications/tools/list_changed`) for as long as it lives.
    pub fn new(core: Core, scope: Scope) -> McpServer {
        McpServer::with_caller(core, scope, "mcp")
    }

    /// Like [`McpServer::new`], naming the caller in the audit log (e.g.
    /// `mcp-http`, `agent:NAME`).
    pub fn with_caller(core: Core, scope: Scope, caller: &str) -> McpServer {
        McpServer::with_state_key(core, scope, caller, mrtr::StateKey::random())
    }

    /// Like [`McpServer::with_caller`], sealing the request state of
    /// stateless (2026-07-28) calls that wait for client input with `key`:
    /// replicas behind one load balancer must share it.
    pub fn with_state_key(
        core: Core,
        scope: Scope,
        caller: &str,
        key: mrtr::StateKey,
    ) -> McpServer {
        let changes = core.watch_tools(&scope);
        let resource_changes = core.watch_resources(&scope);
        let tasks = Tasks::new(core.tasks_config().clone());
        let gone = CancellationToken::new();
        let shared = Arc::new(Shared {
            core,
            scope,
            caller: Arc::from(caller),
            peers: Mutex::new(Vec::new()),
            calls: TaskTracker::new(),
            closing: CancellationToken::new(),
            state_key: key,
            mrtr_limits: mrtr::Limits::default(),
            subscriptions: Mutex::new(Vec::new()),
            tasks,
            _gone: gone.clone().drop_guard(),
        });
        forward_list_changes(Arc::downgrade(&shared), changes, gone.clone());
        forward_resource_updates(Arc::downgrade(&shared), resource_changes, gone);
        McpServer {
            shared,
            session: Session::new(),
        }
    }

    /// A handler for a new client session of this server: same tools and
    /// change notifications, its own log level.
    pub fn new_session(&self) -> McpServer {
        McpServer {
            shared: self.shared.clone(),
            session: Session::new(),
        }
    }

    /// Send `notifications/tools/list_changed` to every connected client.
    pub async fn notify_tools_changed(&self) {
        self.shared.notify_tools_changed().await;
    }

    /// The scope whose tools this server serves.
    #[cfg(feature = "http")]
    pub(crate) fn scope(&self) -> &Scope {
        &self.shared.scope
    }

    /// The core this server serves from.
    #[cfg(feature = "http")]
    pub(crate) fn core(&self) -> &Core {
        &self.shared.core
    }

    /// The key that seals this server's stateless request state (and, over
    /// HTTP, its session ids).
    #[cfg(feature = "http")]
    pub(crate) fn state_key(&self) -> &mrtr::StateKey {
        &self.shared.state_key
    }

    /// Refuse new calls and wait until the running ones have finished.
    pub async fn drain(&self) {
        self.shared.closing.cancel();
        // Running tasks stop: once the server is gone no client could read
        // them. Calls still answering their request finish.
        self.shared.tasks.cancel_all();
        self.shared.calls.close();
        self.shared.calls.wait().await;
    }

    /// Which log messages the client of this request wants: what the
    /// request's `_meta` opts in to (2026-07-28, SEP-2575); without it, none
    /// on 2026-07-28 and later, else the session's `logging/setLevel`.
    fn log_level_for(&self, ctx: &RequestContext<RoleServer>) -> Option<LogLevel> {
        if let Some(l) = ctx.meta.log_level() {
            return Some(log_level(l));
        }
        let modern = ctx
            .protocol_version()
            .is_some_and(|v| v.as_str() >= ProtocolVersion::V_2026_07_28.as_str());
        (!modern).then(|| self.session.log_level())
    }

    fn tools(&self) -> Vec<Tool> {
        self.shared
            .core
            .tools(&self.shared.scope)
            .iter()
            .map(mcp_tool)
            .collect()
    }
}

impl Shared {
    async fn notify_tools_changed(&self) {
        let peers: Vec<Peer<RoleServer>> = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            peers.retain(|p| !p.is_transport_closed());
            peers.clone()
        };
        tell_each(peers, "tools/list_changed", |p| async move {
            p.notify_tool_list_changed().await
        })
        .await;
    }
}

/// How long a change notice waits on one session. A session whose client
/// stopped reading its stream blocks what is sent to it: told one after
/// another, one such session held every later session's notice, and every
/// later change's (found by review). Each session is told at once, and
/// waited on this long at most.
const NOTICE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Send `what` to each of `to` (sessions, or sessions and what to tell
/// them) with `send`, all at once, each for at most [`NOTICE_WAIT`].
async fn tell_each<T, F, Fut>(to: Vec<T>, what: &str, send: F)
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<(), rmcp::service::ServiceError>>,
{
    let told = to
        .into_iter()
        .map(|p| tokio::time::timeout(NOTICE_WAIT, send(p)));
    for r in futures::future::join_all(told).await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!("{what} not delivered: {e}"),
            Err(_) => tracing::debug!("{what} not delivered within {NOTICE_WAIT:?}"),
        }
    }
}

/// When the components serving resources and prompts change (a reload):
/// tell every session that both lists may have changed, and each subscribed
/// session of each resource whose serving component changed, while
/// `shared` lives.
fn forward_resource_updates(
    shared: Weak<Shared>,
    mut changes: crate::ToolsWatch,
    gone: CancellationToken,
) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        while gone
            .run_until_cancelled(changes.changed())
            .await
            .flatten()
            .is_some()
        {
            let Some(shared) = shared.upgrade() else {
                break;
            };
            // Sessions re-list what a reload may have changed.
            let peers: Vec<Peer<RoleServer>> = {
                let mut peers = shared.peers.lock().unwrap_or_else(|e| e.into_inner());
                peers.retain(|p| !p.is_transport_closed());
                peers.clone()
            };
            tell_each(
                peers,
                "resources and prompts list_changed",
                |p| async move {
                    p.notify_resource_list_changed().await?;
                    p.notify_prompt_list_changed().await
                },
            )
            .await;
            let due: Vec<(Peer<RoleServer>, String)> = {
                let mut subs = shared
                    .subscriptions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                subs.retain(|s| !s.peer.is_transport_closed());
                subs.iter_mut()
                    .filter_map(|s| {
                        let now = shared.core.resource_version(&shared.scope, &s.uri);
                        (now != s.version).then(|| {
                            s.version = now;
                            (s.peer.clone(), s.uri.clone())
                        })
                    })
                    .collect()
            };
            tell_each(due, "resources/updated", |(peer, uri)| async move {
                let note = rmcp::model::ResourceUpdatedNotificationParam::new(uri);
                peer.notify_resource_updated(note).await
            })
            .await;
        }
    });
}

/// Forward the core's change signal to the clients of `shared` while it
/// lives. Needs a tokio runtime; without one there is nothing to forward to.
fn forward_list_changes(
    shared: Weak<Shared>,
    mut changes: crate::ToolsWatch,
    gone: CancellationToken,
) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        while gone
            .run_until_cancelled(changes.changed())
            .await
            .flatten()
            .is_some()
        {
            let Some(shared) = shared.upgrade() else {
                break;
            };
            shared.notify_tools_changed().await;
        }
    });
}

impl McpServer {
    /// Run a call that may become a task (see `tasks`): in its request
    /// until the tool asks to go on as a task or has run for `[tasks]
    /// after`; then the request is answered with the task's handle
    /// (`Err(task)`) while the call goes on, stopped only by `tasks/cancel`,
    /// its limits, or the server shutting down.
    async fn call_as_task(
        &self,
        request: CallRequest,
        parts: SwitchParts,
        forwarder: impl Future<Output = ()> + Send + 'static,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Result<ToolOutput, CallError>, Task> {
        // The call's own cancellation, not the request's: the request ends
        // when it is answered, a task goes on (until `tasks/cancel`, its
        // limits, or `drain`, which stops tasks but lets requests finish).
        let cancel = CancellationToken::new();
        let (switch, mut done) = Switch::new(parts, self.shared.tasks.clone(), cancel.clone());
        let tool: Arc<str> = Arc::from(request.tool.as_str());
        let request = request.cancel(cancel.clone()).client(switch.clone());
        let (core, sw, tool_name) = (self.shared.core.clone(), switch.clone(), tool.clone());
        self.shared.calls.spawn(async move {
            use futures::FutureExt as _;
            // Events reach the request until the call becomes a task.
            let events = async {
                tokio::select! {
                    () = forwarder => {}
                    () = sw.became_task() => {}
                }
            };
            // A panic in the call still ends its task (else it stayed
            // `working` for good, holding a place of the tenant's tasks),
            // as `call_in_context` ends a panicking request with an error.
            let call = std::panic::AssertUnwindSafe(core.call(request)).catch_unwind();
            let (outcome, ()) = tokio::join!(call, events);
            sw.finish(outcome.unwrap_or_else(|_| {
                Err(CallError::new(
                    &*tool_name,
                    CallErrorKind::Internal {
                        message: "the tool call panicked".into(),
                    },
                ))
            }));
        });
        // Dropping the request (its client went away, or rmcp dropped the
        // handler) before it answered stops the call, and forgets its task
        // if it had just become one (no client has the task's id).
        let stop = Abandon(Some(switch.clone()));
        let timer = tokio::time::sleep(self.shared.tasks.after());
        tokio::pin!(timer);
        let (mut timed_out, mut request_cancelled) = (false, false);
        loop {
            tokio::select! {
                r = &mut done => {
                    stop.disarm();
                    // Becoming a task drops the request's end of the call.
                    if let Some(task) = switch.seed() {
                        return Err(task);
                    }
                    return Ok(r.unwrap_or_else(|_| Err(CallError::new(
                        tool,
                        CallErrorKind::Internal { message: "the call ended without a result".into() },
                    ))));
                }
                () = switch.became_task() => {
                    stop.disarm();
                    return Err(switch.seed().expect("a task has its first state"));
                }
                () = &mut timer, if !timed_out => {
                    timed_out = true;
                    switch.to_task();
                }
                () = ctx.ct.cancelled(), if !request_cancelled => {
                    request_cancelled = true;
                    cancel.cancel();
                }
            }
        }
    }

    /// A request of the core's for `name` (a URI, prompt or reference) on
    /// behalf of this request's client: its scope, caller, session and
    /// cancellation, as a tool call has them.
    fn request(
        &self,
        name: &str,
        args: Option<rmcp::model::JsonObject>,
        ctx: &RequestContext<RoleServer>,
    ) -> CallRequest {
        #[cfg_attr(not(feature = "http"), allow(unused_mut))]
        let mut request = CallRequest::new(self.shared.scope.clone(), name, args)
            .caller(&*self.shared.caller)
            // Cancelled on notifications/cancelled, on shutdown and (stateless
            // HTTP) when the client goes away: the guest is stopped.
            .cancel(ctx.ct.child_token());
        #[cfg(feature = "http")]
        {
            let parts = ctx.extensions.get::<http::request::Parts>();
            // Admitted under the tenant's quotas at the HTTP door (to answer
            // 429 there): the core holds that admission for the call.
            if let Some(a) = parts
                .and_then(|p| p.extensions.get::<crate::quota::AdmittedCall>())
                .and_then(|a| a.take())
            {
                request = request.admitted(a);
            }
            // Whom the tenant's JWT names, for the audit log.
            if let Some(p) = parts.and_then(|p| p.extensions.get::<super::auth::Principal>()) {
                request.principal = Some(p.0.clone());
            }
            // The HTTP session (2025-11-25 clients), for the audit log. A
            // request served without a session has none: whatever
            // `Mcp-Session-Id` it sends is not verified, so not recorded
            // (a review's case: a 2025-11-25 one with a sessionless
            // `_meta` wrote any id it liked into its record).
            if !input::sessionless(ctx)
                && let Some(id) = parts.and_then(|p| p.headers.get("mcp-session-id")?.to_str().ok())
            {
                // The session's `SID`, not the whole sealed id (see `session`).
                request = request.session(super::session::audit_id(id));
            }
        }
        request
    }

    /// How a read or get asks its client, as a call does: on 2026-07-28
    /// through an input-required round bound to (`kind`, `name`, `args`),
    /// on a session through the peer.
    fn open_round(
        &self,
        kind: &'static str,
        name: &str,
        args: &serde_json::Value,
        ctx: &RequestContext<RoleServer>,
        request_state: Option<&str>,
        input_responses: Option<rmcp::model::InputResponses>,
    ) -> Result<(Option<Stateless>, Arc<dyn model::ClientRequests>), ErrorData> {
        if !input::is_stateless(ctx) {
            return Ok((None, Arc::new(PeerClient::of(ctx))));
        }
        let round = Stateless::open(
            &self.shared.state_key,
            self.shared.mrtr_limits,
            mrtr::Binding::new(
                self.shared.scope.as_str(),
                kind,
                name,
                self.shared.core.served_by(&self.shared.scope, kind, name),
                args,
            ),
            ctx,
            request_state,
            input_responses,
        )?;
        let client = round.client();
        Ok((Some(round), client))
    }

    /// Whether `tool`'s input schema asks for an argument in an
    /// `Mcp-Param-*` header (SEP-2243's `x-mcp-header`), anywhere in it.
    #[cfg(feature = "http")]
    pub(super) fn asks_param_headers(&self, tool: &str) -> bool {
        fn mentions(v: &serde_json::Value) -> bool {
            match v {
                serde_json::Value::Object(m) => has(m),
                serde_json::Value::Array(a) => a.iter().any(mentions),
                _ => false,
            }
        }
        fn has(m: &serde_json::Map<String, serde_json::Value>) -> bool {
            m.contains_key("x-mcp-header") || m.values().any(mentions)
        }
        self.shared
            .core
            .tool_input_schema(&self.shared.scope, tool)
            .is_some_and(|s| has(&s))
    }

    /// Refused like a call once the server drains.
    fn closing(&self) -> Result<(), ErrorData> {
        if self.shared.calls.is_closed() {
            return Err(ErrorData::internal_error(
                "the server is shutting down; try again later",
                None,
            ));
        }
        Ok(())
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        let mut caps = ServerCapabilities::builder()
            .enable_logging()
            .enable_tools()
            .enable_tool_list_changed()
            .build();
        // Declared only when the scope has them (`discover` says exactly
        // what is served).
        let (resources, prompts, completions) = self.shared.core.serves(&self.shared.scope);
        if resources {
            let mut r = ResourcesCapability::default();
            r.list_changed = Some(true);
            caps.resources = Some(r);
        }
        if prompts {
            let mut p = PromptsCapability::default();
            p.list_changed = Some(true);
            caps.prompts = Some(p);
        }
        if completions {
            caps.completions = Some(Default::default());
        }
        if let Some(r) = &mut caps.resources {
            r.subscribe = Some(true);
        }
        if self.shared.tasks.enabled() && self.shared.core.serves_tasks(&self.shared.scope) {
            caps.extensions.get_or_insert_with(Default::default).insert(
                rmcp::model::TASKS_EXTENSION_ID.to_string(),
                Default::default(),
            );
        }
        ServerConfig::new(caps).with_server_info(
            Implementation::new("toolhost", env!("CARGO_PKG_VERSION"))
                .with_title("toolhost: sandboxed WebAssembly tools"),
        )
    }

    async fn on_initialized(&self, ctx: NotificationContext<RoleServer>) {
        if self
            .session
            .announced
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let mut peers = self.shared.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.retain(|p| !p.is_transport_closed());
        peers.push(ctx.peer);
    }

    async fn set_level(
        &self,
        req: SetLevelRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        // 2026-07-28 removed logging/setLevel (the level travels per request).
        if input::is_stateless(&ctx) {
            return Err(ErrorData::method_not_found::<
                rmcp::model::SetLevelRequestMethod,
            >());
        }
        *self
            .session
            .log_level
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = log_level(req.level);
        Ok(())
    }

    async fn list_tools(
        &self,
        _req: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.shared
            .core
            .tool(&self.shared.scope, name)
            .as_ref()
            .map(mcp_tool)
    }

    async fn call_tool(
        &self,
        req: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if self.shared.calls.is_closed() {
            return Ok(CallToolResult::error(vec![ContentBlock::text(
                "the server is shutting down; try again later",
            )])
            .into());
        }
        let tool: Arc<str> = Arc::from(req.name.as_ref());
        // A progress token is copied into every progress notice of the
        // call: past `MAX_ID_BYTES` it is refused, on every path (found by
        // review: over the stateless wire, a 1 MB token made one call send
        // 1.2 GB, charged as 256 KiB; sessions refused it already).
        if let Some(token) = ctx.meta.get_progress_token()
            && matches!(&token.0, rmcp::model::NumberOrString::String(s) if s.len() > super::MAX_ID_BYTES)
        {
            return Err(ErrorData::invalid_params(
                format!(
                    "progress tokens longer than {} bytes are refused",
                    super::MAX_ID_BYTES
                ),
                None,
            ));
        }
        // Tasks: a task-supporting tool, called by a client that follows
        // tasks (declared for the session or in this request's `_meta`).
        let tasks = self.shared.core.tool_tasks(&self.shared.scope, &tool);
        let support = tasks.map(|(s, _)| s).unwrap_or_default();
        // (Asked only for task-supporting tools: it copies the capabilities.)
        let follows_tasks = support != TaskSupport::Forbidden
            && ctx
                .client_capabilities()
                .is_some_and(|c| c.supports_tasks());
        if support == TaskSupport::Required && !follows_tasks {
            let mut e = ErrorData::missing_required_client_capability(
                rmcp::model::ClientCapabilities::builder()
                    .enable_tasks()
                    .build(),
            );
            e.message = format!(
                "tool `{tool}` runs only as a task: declare the `{}` extension in the client's capabilities",
                rmcp::model::TASKS_EXTENSION_ID
            )
            .into();
            return Err(e);
        }
        let component = tasks
            .filter(|_| follows_tasks && self.shared.tasks.enabled())
            .map(|(_, c)| c);
        // 2026-07-28: questions to the client end the round with an
        // input-required result; sessions ask the peer at once. The core's
        // call path is the same for both: only the client differs.
        let round = if input::is_stateless(&ctx) {
            Some(Arc::new(Stateless::open(
                &self.shared.state_key,
                self.shared.mrtr_limits,
                mrtr::Binding::of_arguments(
                    self.shared.scope.as_str(),
                    "tool",
                    &tool,
                    self.shared
                        .core
                        .served_by(&self.shared.scope, "tool", &tool),
                    req.arguments.as_ref(),
                ),
                &ctx,
                req.request_state.as_deref(),
                req.input_responses,
            )?))
        } else {
            None
        };
        let client: Arc<dyn model::ClientRequests> = match &round {
            Some(r) => r.client(),
            None => Arc::new(PeerClient::of(&ctx)),
        };
        let (events, rx) = model::EventSink::channel(EVENT_QUEUE);
        let forwarder = forward_events(
            rx,
            EventTarget {
                peer: ctx.peer.clone(),
                progress: ctx.meta.get_progress_token(),
                log_level: self.log_level_for(&ctx),
                tool: tool.clone(),
            },
        );
        let request = self.request(&tool, req.arguments, &ctx).events(events);
        let result = if let Some(component) = component {
            let parts = SwitchParts {
                request_client: client,
                round: round.clone(),
                capabilities: input::capabilities(ctx.client_capabilities().as_ref()),
                component,
            };
            match self.call_as_task(request, parts, forwarder, &ctx).await {
                Ok(result) => result,
                Err(task) => return Ok(CallToolResponse::Task(CreateTaskResult::new(task))),
            }
        } else {
            // Both in this task (no spawn, no thread hop): the forwarder
            // ends when the finished call drops its event sender, so every
            // event reaches the client before the response does.
            let call = self
                .shared
                .calls
                .track_future(self.shared.core.call(request.client(client)));
            let (result, ()) = tokio::join!(call, forwarder);
            result
        };
        let result = match round {
            None => result,
            Some(round) => match round.finish(result)? {
                Round::Complete(r) => r,
                Round::InputRequired(ir) => return Ok(CallToolResponse::InputRequired(ir)),
                Round::ToolError(message) => return Ok(tool_error(message).into()),
            },
        };
        match result {
            Ok(out) => Ok(call_result(out).into()),
            Err(e) => call_error(e).map(Into::into),
        }
    }

    async fn get_task(
        &self,
        req: GetTaskParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        let got = self.shared.tasks.peek(&req.task_id)?;
        if let Some(bytes) = got.again {
            let sh = &self.shared;
            let what = format!("tasks/get {}", crate::error::shown_name(&req.task_id));
            if let Err(over) = sh.core.resend(&sh.scope, &sh.caller, &what, bytes) {
                // A server error (JSON-RPC's implementation-defined range):
                // the request was valid, the tenant's budget is spent.
                return Err(ErrorData::new(
                    ErrorCode(-32000),
                    over.message,
                    Some(serde_json::json!({"retryAfter": over.retry_after.as_secs()})),
                ));
            }
        }
        Ok(got.result())
    }

    async fn update_task(
        &self,
        req: UpdateTaskParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.shared.tasks.update(&req.task_id, req.input_responses)
    }

    async fn cancel_task(
        &self,
        req: CancelTaskParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.shared.tasks.cancel(&req.task_id)
    }

    async fn list_resources(
        &self,
        _req: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let req = self.request("resources/list", None, &ctx);
        let list = self
            .shared
            .calls
            .track_future(self.shared.core.list_resources(req))
            .await;
        Ok(ListResourcesResult::with_all_items(
            list.into_iter().map(mcp_resource).collect(),
        ))
    }

    async fn list_resource_templates(
        &self,
        _req: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(
            self.shared
                .core
                .resource_templates(&self.shared.scope)
                .into_iter()
                .map(|t| {
                    let mut m = ResourceTemplate::new(t.uri_template, t.name);
                    m.title = t.title;
                    m.description = t.description;
                    m.mime_type = t.mime_type;
                    m
                })
                .collect(),
        ))
    }

    async fn read_resource(
        &self,
        req: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        self.closing()?;
        // Admitted before its round opens (see `Core::admit_early`).
        let request = self.request(&req.uri, None, &ctx);
        let request = self
            .shared
            .core
            .admit_early(request)
            .map_err(served_error)?;
        let (round, client) = self.open_round(
            "resource",
            &req.uri,
            &serde_json::Value::Null,
            &ctx,
            req.request_state.as_deref(),
            req.input_responses,
        )?;
        let request = request.client(client);
        let r = self
            .shared
            .calls
            .track_future(self.shared.core.read_resource(request))
            .await;
        let r = match settle(round, r)? {
            Ok(r) => r,
            Err(ir) => return Ok(ReadResourceResponse::InputRequired(ir)),
        };
        match r {
            Ok(bodies) => Ok(ReadResourceResult::new(
                bodies
                    .into_iter()
                    .map(|b| resource_contents(b.uri, b.mime_type, b.contents))
                    .collect(),
            )
            .into()),
            Err(e) => Err(served_error(e)),
        }
    }

    async fn list_prompts(
        &self,
        _req: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(
            self.shared
                .core
                .prompts(&self.shared.scope)
                .into_iter()
                .map(|p| {
                    let args = p
                        .arguments
                        .into_iter()
                        .map(|a| {
                            let mut m = PromptArgument::new(a.name).with_required(a.required);
                            m.title = a.title;
                            m.description = a.description;
                            m
                        })
                        .collect::<Vec<_>>();
                    let mut m = Prompt::new(
                        p.name.to_string(),
                        p.description,
                        (!args.is_empty()).then_some(args),
                    );
                    m.title = p.title;
                    m
                })
                .collect(),
        ))
    }

    async fn get_prompt(
        &self,
        req: GetPromptRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        self.closing()?;
        // Admitted before its round opens (see `Core::admit_early`).
        let request = self.request(&req.name, None, &ctx);
        let mut request = self
            .shared
            .core
            .admit_early(request)
            .map_err(served_error)?;
        let args = serde_json::Value::Object(req.arguments.unwrap_or_default());
        let (round, client) = self.open_round(
            "prompt",
            &req.name,
            &args,
            &ctx,
            req.request_state.as_deref(),
            req.input_responses,
        )?;
        // The arguments back, not copied (a prompt's may be large).
        if let serde_json::Value::Object(args) = args {
            request.arguments = Some(args);
        }
        let request = request.client(client);
        let r = self
            .shared
            .calls
            .track_future(self.shared.core.get_prompt(request))
            .await;
        let r = match settle(round, r)? {
            Ok(r) => r,
            Err(ir) => return Ok(GetPromptResponse::InputRequired(ir)),
        };
        match r {
            Ok(p) => {
                let messages = p
                    .messages
                    .into_iter()
                    .map(|m| {
                        let role = match m.role {
                            crate::Role::Assistant => Role::Assistant,
                            _ => Role::User,
                        };
                        PromptMessage::new(role, content_block(m.content))
                    })
                    .collect();
                let mut out = GetPromptResult::new(messages);
                out.description = p.description;
                Ok(out.into())
            }
            Err(e) => Err(served_error(e)),
        }
    }

    async fn complete(
        &self,
        req: CompleteRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        self.closing()?;
        let reference = match &req.r#ref {
            Reference::Prompt(p) => crate::CompletionRef::Prompt(p.name.clone()),
            Reference::Resource(r) => crate::CompletionRef::ResourceTemplate(r.uri.clone()),
            _ => {
                return Err(ErrorData::invalid_params(
                    "unknown completion reference type",
                    None,
                ));
            }
        };
        let context = req.context.and_then(|c| c.arguments).map(|a| {
            a.into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect()
        });
        let request = self.request("", context, &ctx);
        let r = self
            .shared
            .calls
            .track_future(self.shared.core.complete(
                request,
                reference,
                &req.argument.name,
                &req.argument.value,
            ))
            .await;
        match r {
            Ok(c) => {
                let info = CompletionInfo::with_pagination(c.values, c.total, c.has_more)
                    .map_err(|e| ErrorData::internal_error(e, None))?;
                Ok(CompleteResult::new(info))
            }
            Err(e) => Err(served_error(e)),
        }
    }

    /// A session's subscription to a resource its scope serves: it is told
    /// when a reload changes the component serving it (the host observes
    /// nothing finer; see `Subscription`).
    async fn subscribe(
        &self,
        req: rmcp::model::SubscribeRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let Some(version) = self
            .shared
            .core
            .resource_version(&self.shared.scope, &req.uri)
        else {
            // The URI is the client's text: escaped and bounded, as in
            // every refusal (it reaches the log).
            let uri = crate::error::shown_name(&req.uri);
            return Err(ErrorData::resource_not_found(
                format!("resource `{uri}` not found"),
                Some(serde_json::json!({ "uri": uri })),
            ));
        };
        let session = Arc::as_ptr(&self.session) as usize;
        let mut subs = self
            .shared
            .subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        subs.retain(|s| !s.peer.is_transport_closed());
        if subs
            .iter()
            .any(|s| s.session == session && s.uri == req.uri)
        {
            return Ok(());
        }
        if subs.iter().filter(|s| s.session == session).count() >= MAX_SUBSCRIPTIONS {
            return Err(ErrorData::invalid_params(
                format!(
                    "a session may subscribe to at most {MAX_SUBSCRIPTIONS} resources; unsubscribe from some first"
                ),
                None,
            ));
        }
        if subs.len() >= MAX_SUBSCRIPTIONS_TOTAL {
            return Err(ErrorData::invalid_params(
                format!(
                    "this server's sessions hold {MAX_SUBSCRIPTIONS_TOTAL} resource subscriptions, the most it keeps; unsubscribe, or close sessions that no longer listen"
                ),
                None,
            ));
        }
        subs.push(Subscription {
            session,
            peer: ctx.peer,
            uri: req.uri,
            version: Some(version),
        });
        Ok(())
    }

    async fn unsubscribe(
        &self,
        req: rmcp::model::UnsubscribeRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let session = Arc::as_ptr(&self.session) as usize;
        self.shared
            .subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| !(s.session == session && s.uri == req.uri));
        Ok(())
    }

    /// 2026-07-28 clients learn of tool-list changes on a
    /// `subscriptions/listen` stream (older ones get them on the session).
    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        // Resource subscriptions: the URIs this scope serves (the SDK
        // intersects this with what was asked and what is declared).
        let uris: Vec<String> = requested
            .resource_subscriptions
            .iter()
            .flatten()
            .filter(|u| {
                self.shared
                    .core
                    .resource_version(&self.shared.scope, u)
                    .is_some()
            })
            .take(MAX_SUBSCRIPTIONS)
            .cloned()
            .collect();
        Some(
            SubscriptionFilter::builder()
                .tools_list_changed()
                .prompts_list_changed()
                .resources_list_changed()
                .resource_subscriptions(uris)
                .build(),
        )
    }

    async fn listen(&self, cx: SubscriptionContext) -> Result<(), ErrorData> {
        let accepted = cx.accepted().clone();
        let tools = accepted.tools_list_changed == Some(true);
        let prompts = accepted.prompts_list_changed == Some(true);
        let resources = accepted.resources_list_changed == Some(true);
        let core = &self.shared.core;
        let scope = &self.shared.scope;
        let mut subscribed: Vec<(String, Option<[u8; 32]>)> = accepted
            .resource_subscriptions
            .iter()
            .flatten()
            .map(|u| (u.clone(), core.resource_version(scope, u)))
            .collect();
        if !tools && !prompts && !resources && subscribed.is_empty() {
            cx.cancelled().await;
            return Ok(());
        }
        let mut changes = core.watch_tools(scope);
        let mut served = core.watch_resources(scope);
        loop {
            tokio::select! {
                _ = cx.cancelled() => return Ok(()),
                _ = self.shared.closing.cancelled() => return Ok(()),
                changed = changes.changed() => {
                    if changed.is_none() {
                        return Ok(());
                    }
                    if tools && let Err(e) = cx.sink().notify_tool_list_changed().await {
                        tracing::debug!("tools/list_changed not delivered to a listener: {e}");
                        return Ok(());
                    }
                }
                changed = served.changed() => {
                    if changed.is_none() {
                        return Ok(());
                    }
                    let sink = cx.sink();
                    let mut sent = Ok(());
                    if prompts {
                        sent = sent.and(sink.notify_prompt_list_changed().await);
                    }
                    if resources {
                        sent = sent.and(sink.notify_resource_list_changed().await);
                    }
                    for (uri, version) in &mut subscribed {
                        let now = core.resource_version(scope, uri);
                        if now != *version {
                            *version = now;
                            sent = sent.and(sink.notify_resource_updated(uri.clone()).await);
                        }
                    }
                    if let Err(e) = sent {
                        tracing::debug!("a change not delivered to a listener: {e}");
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn on_custom_request(
        &self,
        req: CustomRequest,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<CustomResult, ErrorData> {
        Err(if req.method == "server/discover" {
            // A 2026-07-28 discovery lands here only when it lacks the
            // request `_meta` that protocol requires.
            ErrorData::invalid_params(
                "server/discover needs `_meta` with the 2026-07-28 request metadata \
                 (protocolVersion, clientInfo, clientCapabilities); clients of older \
                 protocols use `initialize`",
                None,
            )
        } else {
            ErrorData::new(
                ErrorCode::METHOD_NOT_FOUND,
                format!(
                    "method not found: {}",
                    crate::error::shown_name(&req.method)
                ),
                None,
            )
        })
    }
}

/// Where a call's events go.
struct EventTarget {
    peer: Peer<RoleServer>,
    progress: Option<ProgressToken>,
    /// The least severe log level the client wants; `None`: no log messages.
    log_level: Option<LogLevel>,
    tool: Arc<str>,
}

/// Send each event to the client until the call ends (its sender drops).
/// Progress goes out only if the client asked for it (a progress token);
/// log messages only at or above the level it asked for.
async fn forward_events(mut rx: model::EventStream, to: EventTarget) {
    while let Some(ev) = rx.recv().await {
        let sent = match ev {
            CallEvent::Dropped { count } => {
                if to.log_level.is_none_or(|min| LogLevel::Warning < min) {
                    continue;
                }
                to.peer
                    .notify_logging_message(
                        LoggingMessageNotificationParam::new(
                            LoggingLevel::Warning,
                            serde_json::Value::String(format!(
                                "{count} log or progress messages of this call were dropped (over its event budget, or not read in time)"
                            )),
                        )
                        .with_logger(&*to.tool),
                    )
                    .await
            }
            CallEvent::Progress {
                progress,
                total,
                message,
            } => {
                let Some(token) = &to.progress else { continue };
                let mut p = ProgressNotificationParam::new(token.clone(), progress);
                p.total = total;
                p.message = message;
                to.peer.notify_progress(p).await
            }
            CallEvent::Log { level, message } => {
                if to.log_level.is_none_or(|min| level < min) {
                    continue;
                }
                to.peer
                    .notify_logging_message(
                        LoggingMessageNotificationParam::new(
                            logging_level(level),
                            serde_json::Value::String(message),
                        )
                        .with_logger(&*to.tool),
                    )
                    .await
            }
        };
        if let Err(e) = sent {
            tracing::debug!("event of `{}` not delivered: {e}", to.tool);
        }
    }
}

/// A tool definition as MCP lists it.
fn mcp_tool(t: &ToolDef) -> Tool {
    let a = &t.annotations;
    let mut tool = Tool::new(
        t.name.to_string(),
        t.description.clone(),
        t.input_schema.clone(),
    );
    if let Some(title) = &t.title {
        tool = tool.with_title(title.clone());
    }
    if let Some(schema) = &t.output_schema {
        tool = tool.with_raw_output_schema(schema.clone());
    }
    if *a != model::Annotations::default() {
        tool = tool.with_annotations(ToolAnnotations::from_raw(
            a.title.clone(),
            a.read_only,
            a.destructive,
            a.idempotent,
            a.open_world,
        ));
    }
    tool
}

fn b64(d: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(d)
}

/// A resource body as MCP carries it.
fn resource_contents(
    uri: String,
    mime_type: Option<String>,
    contents: model::ResourceContents,
) -> ResourceContents {
    match contents {
        model::ResourceContents::Text(text) => ResourceContents::TextResourceContents {
            uri,
            mime_type,
            text,
            meta: None,
        },
        model::ResourceContents::Blob(data) => ResourceContents::BlobResourceContents {
            uri,
            mime_type,
            blob: b64(&data),
            meta: None,
        },
    }
}

/// One content block as MCP carries it.
fn content_block(c: model::Content) -> ContentBlock {
    match c {
        model::Content::Text(t) => ContentBlock::text(t),
        model::Content::Image { data, mime_type } => ContentBlock::image(b64(&data), mime_type),
        model::Content::Audio { data, mime_type } => ContentBlock::audio(b64(&data), mime_type),
        model::Content::Resource {
            uri,
            mime_type,
            contents,
        } => ContentBlock::resource(resource_contents(uri, mime_type, contents)),
    }
}

/// A resource as MCP lists it.
fn mcp_resource(r: crate::ResourceDef) -> Resource {
    let mut m = Resource::new(r.uri, r.name);
    m.title = r.title;
    m.description = r.description;
    m.mime_type = r.mime_type;
    m.size = r.size;
    m
}

/// A failed read, get or completion: a protocol error (these have no
/// `isError` result). Not found is MCP's resource-not-found for a URI, an
/// invalid-params error for a prompt or reference; the message names the
/// URI or prompt, never a host path.
fn served_error(e: CallError) -> ErrorData {
    match e.kind() {
        CallErrorKind::UnknownTool if e.subject() == crate::Subject::Resource => {
            ErrorData::resource_not_found(
                e.to_string(),
                Some(serde_json::json!({ "uri": e.tool() })),
            )
        }
        CallErrorKind::UnknownTool | CallErrorKind::InvalidArguments { .. } => {
            ErrorData::invalid_params(e.to_string(), None)
        }
        _ => ErrorData::internal_error(e.to_string(), None),
    }
}

/// A successful call as an MCP result.
pub(super) fn call_result(out: ToolOutput) -> CallToolResult {
    let content = out.content.into_iter().map(content_block).collect();
    let mut r = CallToolResult::success(content);
    r.structured_content = out.structured;
    r
}

/// A failed call: an unknown tool is a protocol error (the client asked for
/// something that does not exist); anything else is a tool error the model
/// can read and act on.
/// How a read or get ends within its input-required round, if it has one:
/// its own result, or (`Err`) the questions to send the client first. A
/// round that failed (asked too much, or differently on replay) is a
/// protocol error here: there is no tool result to carry it.
fn settle<T>(
    round: Option<Stateless>,
    r: Result<T, CallError>,
) -> Result<Result<Result<T, CallError>, rmcp::model::InputRequiredResult>, ErrorData> {
    match round {
        None => Ok(Ok(r)),
        Some(round) => match round.finish(r)? {
            Round::Complete(r) => Ok(Ok(r)),
            Round::InputRequired(ir) => Ok(Err(ir)),
            Round::ToolError(message) => Err(ErrorData::internal_error(message, None)),
        },
    }
}

/// A tool error result the model reads.
pub(super) fn tool_error(message: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message)])
}

pub(super) fn call_error(e: CallError) -> Result<CallToolResult, ErrorData> {
    match e.kind() {
        CallErrorKind::UnknownTool => Err(ErrorData::invalid_params(e.to_string(), None)),
        _ => Ok(CallToolResult::error(vec![ContentBlock::text(
            e.to_string(),
        )])),
    }
}

/// Dropped with a request that may become a task before it answered: see
/// `call_as_task`.
struct Abandon(Option<Arc<Switch>>);

impl Abandon {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            s.abandon();
        }
    }
}

/// Events of one call waiting for its client; past this, they are dropped
/// and counted (a client that does not read never grows the server).
const EVENT_QUEUE: usize = 256;

fn log_level(l: LoggingLevel) -> LogLevel {
    match l {
        LoggingLevel::Debug => LogLevel::Debug,
        LoggingLevel::Info => LogLevel::Info,
        LoggingLevel::Notice => LogLevel::Notice,
        LoggingLevel::Warning => LogLevel::Warning,
        LoggingLevel::Error => LogLevel::Error,
        LoggingLevel::Critical => LogLevel::Critical,
        LoggingLevel::Alert => LogLevel::Alert,
        LoggingLevel::Emergency => LogLevel::Emergency,
    }
}

fn logging_level(l: LogLevel) -> LoggingLevel {
    match l {
        LogLevel::Debug => LoggingLevel::Debug,
        LogLevel::Info => LoggingLevel::Info,
        LogLevel::Notice => LoggingLevel::Notice,
        LogLevel::Warning => LoggingLevel::Warning,
        LogLevel::Error => LoggingLevel::Error,
        LogLevel::Critical => LoggingLevel::Critical,
        LogLevel::Alert => LoggingLevel::Alert,
        LogLevel::Emergency => LoggingLevel::Emergency,
    }
}

/// A `tools/call` for `server`'s handler past rmcp's service loop (the
/// agent transport's and stdio's hot path), with a context made as the
/// loop makes it: the connection's `peer`, the request's `_meta`, and `ct`
/// (cancelling it stops the call). `None` for a request naming its own
/// protocol version: the loop scopes that version for the handler (a
/// task-local rmcp checks before the server sends its client a request),
/// and on a connection whose peer speaks another version it must take the
/// loop. (The HTTP stateless lane calls [`call_in_context`] with such
/// requests: its peer speaks 2026-07-28, the version they name, so rmcp's
/// check comes out the same.)
pub(crate) fn call_past_loop<S>(
    server: S,
    peer: Peer<RoleServer>,
    id: rmcp::model::RequestId,
    mut params: CallToolRequestParams,
    ct: CancellationToken,
) -> Option<BoxFuture<'static, rmcp::model::ServerJsonRpcMessage>>
where
    S: ServerHandler + Send + Sync + 'static,
{
    let meta = params.meta.take().unwrap_or_default();
    if meta.protocol_version().is_some() {
        return None;
    }
    let mut ctx = RequestContext::new(id, peer);
    ctx.meta = meta;
    ctx.ct = ct;
    Some(call_in_context(server, ctx, params))
}

/// A `tools/call` for `server`'s handler in `ctx` (its id, peer, `_meta`,
/// cancellation and extensions made by the caller, as rmcp's loop makes
/// them; not the loop's task-locals, see [`call_past_loop`]), through the
/// handler's whole request path (rmcp's checks of the request's protocol
/// version and metadata included), answered as the loop answers it. A
/// panicking handler is answered as an internal error here, so the call
/// is never left half-run (and polled again) by whoever holds it. Boxed:
/// the handler's future is kilobytes (rmcp's, sized for every request it
/// handles), which the front end would otherwise copy each time it moves
/// the call (see `Scheduler::run`).
pub(crate) fn call_in_context<S>(
    server: S,
    ctx: RequestContext<RoleServer>,
    params: CallToolRequestParams,
) -> BoxFuture<'static, rmcp::model::ServerJsonRpcMessage>
where
    S: ServerHandler + Send + Sync + 'static,
{
    use futures::FutureExt as _;
    use rmcp::model::{ClientRequest, JsonRpcMessage, Request};
    let id = ctx.id.clone();
    let request = ClientRequest::CallToolRequest(Request::new(params));
    async move {
        let handled = std::panic::AssertUnwindSafe(rmcp::Service::<RoleServer>::handle_request(
            &server, request, ctx,
        ))
        .catch_unwind()
        .await;
        match handled {
            Ok(Ok(result)) => JsonRpcMessage::response(result, id),
            Ok(Err(error)) => JsonRpcMessage::error(error, Some(id)),
            Err(_) => JsonRpcMessage::error(
                ErrorData::internal_error("the tool call panicked", None),
                Some(id),
            ),
        }
    }
    .boxed()
}

/// A call run past rmcp's loop, awaited by whoever answers it. Dropped
/// before it has finished (its client went away, cancelled it, or its
/// request timed out), it cancels the call's token, which stops the
/// guest, and lets the call end on a task of its own: it is recorded as
/// `cancelled`, as a call the loop ran is (the loop cancels its handler's
/// token then), not `abandoned` (a dropped call).
pub(crate) struct Finishing<T: Send + 'static> {
    /// `None` once it has finished.
    call: Option<BoxFuture<'static, T>>,
    stop: CancellationToken,
}

impl<T: Send + 'static> Finishing<T> {
    /// `call`, which `stop` stops.
    pub(crate) fn new(call: BoxFuture<'static, T>, stop: CancellationToken) -> Finishing<T> {
        Finishing {
            call: Some(call),
            stop,
        }
    }
}

impl<T: Send + 'static> Future for Finishing<T> {
    type Output = T;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<T> {
        // Out while polled: a call that panics is dropped in the unwind,
        // not handed to a task of its own by `drop` (to panic again there).
        let mut call = self.call.take().expect("not polled after it finished");
        let done = call.as_mut().poll(cx);
        if done.is_pending() {
            self.call = Some(call);
        }
        done
    }
}

impl<T: Send + 'static> Drop for Finishing<T> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            self.stop.cancel();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(call);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A review's case: sessions were told of a change one after another,
    /// so one whose client stopped reading held every later session's
    /// notice (and every later change's). Each is told at once, and waited
    /// on for [`NOTICE_WAIT`] at most.
    #[tokio::test]
    async fn a_session_that_never_takes_its_notice_delays_no_other() {
        let told = Arc::new(AtomicUsize::new(0));
        let started = std::time::Instant::now();
        tell_each(vec![0, 1, 2], "a notice", |i| {
            let told = told.clone();
            async move {
                if i == 0 {
                    std::future::pending::<()>().await;
                }
                told.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        })
        .await;
        assert_eq!(told.load(Ordering::Relaxed), 2);
        let took = started.elapsed();
        assert!(took >= NOTICE_WAIT && took < 2 * NOTICE_WAIT, "{took:?}");
    }
}
