//! The bidirectional client: one `claude` CLI process (or any pair of
//! pipes speaking its protocol), the control protocol in both directions,
//! and the conversation's messages as a stream.
//!
//! Every control request from the CLI is handled on its own task and always
//! answered (an error reply if the handler fails or panics), except one the
//! CLI cancels, which is aborted and answered by nobody. `mcp_message` goes
//! to the scope's MCP handler through `bridge`; hook and permission
//! callbacks through `hooks`; tool isolation between agents is enforced here
//! as a second layer under the CLI's own per-agent tool lists: with it (or
//! deny rules) on, the host's own PreToolUse hook (the guard) judges each
//! tool use, and a `tools/call` to an SDK server runs only on an approval
//! the guard gave that tool. At most 256 control requests are in flight,
//! holding at most 64 MiB weighed as parsed; one more is refused at once.

use super::bridge::{Bridge, Factory, Outbound, Submitted};
use super::error::AgentError;
use super::hooks::{HookEvent, HookFn, HookInput, HookOutput, Permission, PermissionRequest};
use super::options::{AgentOptions, MAIN_AGENT, cli_args, inherited_env};
use super::process::{CliProcess, find_cli, read_line_bounded};
use super::protocol::{self, Inbound, InboundRequest, Message};
use crate::catalog::Scope;
use crate::core::Core;
use crate::mcp::McpServer;
use crate::mcp::lines::{Output, more_waiting};
use futures::FutureExt;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

/// The most bytes of lines to the CLI held while it does not read them
/// (see `output`): past it, its input is closed.
const REPLY_BACKLOG: usize = 64 << 20;

/// The host's own PreToolUse hook: isolation and deny rules.
const GUARD_HOOK: &str = "toolhost_guard";
/// The MCP protocol version the pinned CLI's client asks its SDK servers
/// for: a handshake made for it under another version is ignored (it
/// then makes its own).
const CLI_MCP_PROTOCOL_VERSION: &str = "2025-11-25";
/// How long a server's handshake may take here before it is left to the
/// CLI (an in-process server answers in microseconds).
const HANDSHAKE_WITHIN: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Inner {
    /// Lines to the CLI's stdin.
    out: Arc<Output>,
    /// Our control requests awaiting the CLI's answer.
    pending: Mutex<HashMap<String, oneshot::Sender<Result<Value, String>>>>,
    /// Told when a control request of ours starts waiting (see
    /// [`MAX_QUEUED_BYTES`]).
    asking: tokio::sync::Notify,
    /// The CLI's control requests being handled, by request id.
    inflight: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    /// The bytes those requests hold, each weighed as parsed
    /// ([`MAX_INFLIGHT_BYTES`]).
    inflight_bytes: Arc<tokio::sync::Semaphore>,
    bridges: HashMap<String, Bridge<McpServer>>,
    hooks: HashMap<String, (HookEvent, HookFn)>,
    options: AgentOptions,
    /// Which SDK servers each agent type may use (`None` key: main thread);
    /// empty when isolation is off.
    entitled: HashMap<Option<String>, Vec<String>>,
    /// agent_id -> agent_type, learned from hook inputs and messages.
    agent_types: Mutex<HashMap<String, String>>,
    counter: AtomicU64,
    /// Approvals the guard hook gave and no request has used yet: by
    /// (server, tool) for `tools/call`, (server, `resource:URI`) for a
    /// resource read.
    approved: Mutex<HashMap<(String, String), u32>>,
}

/// Most agents (subagent runs) a session remembers, and the longest id or
/// type it keeps.
const MAX_AGENTS: usize = 4096;
const MAX_AGENT_NAME: usize = 256;

/// Most control requests from the CLI handled at once (a CLI runs about
/// ten tool calls at a time).
const MAX_INFLIGHT: usize = 256;

/// Most bytes the CLI's control requests in flight may hold, each weighed
/// as parsed (`mcp::request_weight`): as an HTTP tenant's default
/// `max-request-bytes`. Each line may be `max_line_bytes` long, and a
/// parsed line weighs up to 32 times its text: 256 of them were not a
/// bound (found by review).
const MAX_INFLIGHT_BYTES: usize = crate::mcp::DEFAULT_REQUEST_BYTES;
/// Most bytes the CLI's messages not yet taken by the session's reader
/// ([`AgentSession::next`]) hold, weighed as parsed: past it the reader
/// stops reading the CLI's output until some are taken, and the CLI's
/// writes back up. They were queued without a bound (a CLI writing
/// before it answered `initialize`, when nothing takes them, held 17
/// times its output: found by review). While a control request of ours
/// waits for its answer (`interrupt`, `initialize`), they may run over by
/// as much again, so that the answer behind them is read; a message alone
/// heavier than this is refused (an error in its place).
const MAX_QUEUED_BYTES: usize = crate::mcp::DEFAULT_REQUEST_BYTES;
/// What a queued message weighs at least (its parsed form besides its
/// values), and an error in its place.
const MIN_QUEUED_WEIGHT: usize = 1024;
/// How long the CLI has to exit once its input is closed by a dropped
/// session or a finished `query`, before it is killed with its process
/// group (a CLI that ignored its input's end kept `query` waiting for
/// good: found by review).
pub(crate) const EXIT_GRACE: Duration = Duration::from_secs(5);

/// How long an exited CLI's stderr is waited for, to say why it ended.
const STDERR_WAIT: Duration = Duration::from_secs(1);

/// A message of the CLI's, or an error in its place, with the bytes of
/// [`MAX_QUEUED_BYTES`] it holds until the session's reader takes it.
type Queued = (
    Result<Message, AgentError>,
    Option<tokio::sync::OwnedSemaphorePermit>,
);

/// Most unused approvals kept for one tool: a guard approval another hook
/// then denied is never used, and must not pile up.
const MAX_APPROVED: u32 = 16;

/// Most resource reads approved and not yet used, and the longest
/// resource URI approved.
const MAX_APPROVALS: usize = 1024;
const MAX_URI: usize = 8 << 10;

/// The CLI's built-in tools that read and list an MCP server's resources
/// (their input names the server).
const READ_RESOURCE: &str = "ReadMcpResourceTool";
const LIST_RESOURCES: &str = "ListMcpResourcesTool";

/// The approval key of a read of resource `uri` (tool names never hold
/// `:`, so it cannot meet a tool's).
fn resource_key(uri: &str) -> String {
    format!("{RESOURCE_KEY}{uri}")
}
const RESOURCE_KEY: &str = "resource:";

/// Whether the host's guard hook is on (per-agent isolation, or deny
/// rules): then each `tools/call` and resource read to an SDK server needs
/// its approval.
fn guarded(options: &AgentOptions) -> bool {
    options.isolated() || !options.rules.rules.is_empty()
}

/// A tool name as the CLI shows it to the model and to hooks: characters
/// the API does not allow in tool names (toolhost allows `.`) become `_`.
fn as_cli_names(tool: &str) -> String {
    tool.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Inner {
    fn write(&self, v: &Value) -> Result<(), AgentError> {
        let mut line = serde_json::to_vec(v).expect("JSON serializes");
        line.push(b'\n');
        self.out.send(line).map_err(|_| AgentError::Closed)
    }

    async fn control(&self, request: Value) -> Result<Value, AgentError> {
        let subtype = request["subtype"].as_str().unwrap_or("").to_string();
        let id = format!(
            "req_{}_{:08x}",
            self.counter.fetch_add(1, Ordering::Relaxed) + 1,
            std::process::id()
        );
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id.clone(), tx);
        self.asking.notify_waiters();
        if let Err(e) = self.write(&protocol::request(&id, request)) {
            lock(&self.pending).remove(&id);
            return Err(e);
        }
        match tokio::time::timeout(self.options.control_timeout, rx).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(message))) => Err(AgentError::ControlFailed { subtype, message }),
            Ok(Err(_)) => Err(AgentError::Closed),
            Err(_) => {
                lock(&self.pending).remove(&id);
                Err(AgentError::ControlTimeout {
                    subtype,
                    secs: self.options.control_timeout.as_secs(),
                })
            }
        }
    }

    /// Remember `id`'s agent type. At most [`MAX_AGENTS`] are kept, ids and
    /// types of at most [`MAX_AGENT_NAME`] bytes (the CLI's ids are short
    /// UUIDs): a CLI's lines with a new 1 MiB id each grew the map without
    /// bound (found by review). One not kept is an unknown agent, which the
    /// isolation refuses.
    fn learn_agent(&self, id: Option<&str>, ty: Option<&str>) {
        if let (Some(id), Some(ty)) = (id, ty) {
            if id.len() > MAX_AGENT_NAME || ty.len() > MAX_AGENT_NAME {
                return;
            }
            let mut types = lock(&self.agent_types);
            if types.len() < MAX_AGENTS || types.contains_key(id) {
                types.insert(id.to_string(), ty.to_string());
            }
        }
    }

    /// The second isolation layer: may this agent call this tool? Tools of
    /// servers we do not serve are not ours to judge.
    fn isolation_check(
        &self,
        agent_id: Option<&str>,
        agent_type: Option<&str>,
        tool: &str,
        input: &Value,
    ) -> Result<(), String> {
        if self.entitled.is_empty() {
            return Ok(());
        }
        let Some(server) = self.server_of(tool, input) else {
            return Ok(());
        };
        let agent_type = match (agent_id, agent_type) {
            (None, _) => None,
            (Some(_), Some(t)) => Some(t.to_string()),
            (Some(id), None) => match lock(&self.agent_types).get(id) {
                Some(t) => Some(t.clone()),
                None => {
                    // The CLI's words, cut and escaped as every name a
                    // peer chose is (they were quoted whole: found by
                    // review).
                    return Err(format!(
                        "agent `{}` is unknown to the host, so it may not use `{}`",
                        crate::error::shown_name(id),
                        crate::error::shown_name(tool)
                    ));
                }
            },
        };
        let ok = self
            .entitled
            .get(&agent_type)
            .is_some_and(|servers| servers.iter().any(|s| s == server));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{} is not entitled to the tools of `{server}`",
                agent_type.map_or("the main thread".to_string(), |t| format!(
                    "agent `{}`",
                    crate::error::shown_name(&t)
                ))
            ))
        }
    }

    /// `mcp__{server}__{tool}` as (server, tool), for a server of ours.
    fn sdk_tool<'t>(&self, name: &'t str) -> Option<(&'t str, &'t str)> {
        name.strip_prefix("mcp__")
            .and_then(|r| r.split_once("__"))
            .filter(|(s, _)| self.bridges.contains_key(*s))
    }

    /// The server of ours a tool use reaches: an SDK tool's, or the one
    /// the CLI's built-in resource tools name in their input.
    fn server_of<'t>(&self, tool: &'t str, input: &'t Value) -> Option<&'t str> {
        match tool {
            READ_RESOURCE | LIST_RESOURCES => input["server"]
                .as_str()
                .filter(|s| self.bridges.contains_key(*s)),
            _ => self.sdk_tool(tool).map(|(server, _)| server),
        }
    }

    /// What the guard's approval of a tool use lets through, once: an SDK
    /// tool's call (as the CLI names it to hooks: `mcp__{server}__{tool}`),
    /// or a resource read.
    fn approval_of(&self, tool: &str, input: &Value) -> Option<(String, String)> {
        match tool {
            READ_RESOURCE => {
                let server = self.server_of(tool, input)?;
                let uri = input["uri"].as_str().filter(|u| u.len() <= MAX_URI)?;
                Some((server.to_string(), resource_key(uri)))
            }
            _ => self
                .sdk_tool(tool)
                .map(|(server, tool)| (server.to_string(), as_cli_names(tool))),
        }
    }

    /// Record the guard's approval of a tool use (see [`Inner::approval_of`]).
    /// At most [`MAX_APPROVALS`] resource reads are kept unused (their
    /// URIs are the model's to choose): past it, one kept (any) is dropped, so a
    /// flood of approved reads never used costs the session nothing else
    /// (refusing new approvals instead let it block every tool: found by
    /// the review of the fix). A dropped one is refused when used, which
    /// fails closed. Tool approvals are bounded by the tools.
    fn approve(&self, tool: &str, input: &Value) {
        if let Some(key) = self.approval_of(tool, input) {
            let mut approved = lock(&self.approved);
            let is_read = |k: &(String, String)| k.1.starts_with(RESOURCE_KEY);
            if is_read(&key) && !approved.contains_key(&key) {
                let reads = approved.keys().filter(|k| is_read(k)).count();
                if reads >= MAX_APPROVALS
                    && let Some(old) = approved.keys().find(|k| is_read(k)).cloned()
                {
                    approved.remove(&old);
                }
            }
            let n = approved.entry(key).or_default();
            *n = (*n + 1).min(MAX_APPROVED);
        }
    }

    /// Whether an `mcp_message` may go to `server`: with the guard on, a
    /// `tools/call` needs an approval of its tool, which it uses up. The
    /// guard runs as a PreToolUse hook, which the CLI calls before each
    /// tool use; before, a CLI that skipped it (a review's fake one) could
    /// call any SDK tool, whatever the isolation and the rules said.
    ///
    /// Every other request is refused too unless it only lists or shakes
    /// hands: a resource read needs the approval of the CLI's
    /// `ReadMcpResourceTool` use naming it, and prompts, completions and
    /// subscriptions are not served with the guard on (found by review: a
    /// CLI read another agent's resources, and completions listed its
    /// files, past both the isolation and the rules).
    fn may_send(&self, server: &str, message: &Value) -> bool {
        if !guarded(&self.options) {
            return true;
        }
        let method = message["method"].as_str().unwrap_or_default();
        match method {
            "tools/call" => {}
            "resources/read" => {
                let Some(uri) = message["params"]["uri"].as_str() else {
                    return false;
                };
                return self.use_approval((server.to_string(), resource_key(uri)));
            }
            // A server whose every tool a rule denies lists no resources
            // either (the fix review: the CLI listed them past the rule).
            "resources/list" | "resources/templates/list" => {
                return self.server_denied(server, &Value::Null).is_ok();
            }
            "initialize" | "ping" | "tools/list" | "prompts/list" | "logging/setLevel" => {
                return true;
            }
            m => return m.starts_with("notifications/"),
        }
        let tool = as_cli_names(message["params"]["name"].as_str().unwrap_or_default());
        let key = (server.to_string(), tool);
        // No approval, no call, and no rule looks at its arguments: this
        // runs on the session's reader, and a hostile CLI's 30 MB call,
        // unapproved, held every other message for two seconds under 16
        // rules (found by review).
        if !lock(&self.approved).contains_key(&key) {
            return false;
        }
        // The rules again, on the arguments the call carries: an approval
        // names a tool, not the arguments the guard saw.
        if !self.options.rules.rules.is_empty() {
            let args = message["params"].get("arguments").unwrap_or(&Value::Null);
            if self
                .rules_check(&format!("mcp__{server}__{}", key.1), args)
                .is_err()
            {
                return false;
            }
        }
        self.use_approval(key)
    }

    /// Use up one approval of `key`, if there is one.
    fn use_approval(&self, key: (String, String)) -> bool {
        let mut approved = lock(&self.approved);
        match approved.get_mut(&key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(_) => {
                approved.remove(&key);
                true
            }
            None => false,
        }
    }

    /// The agent's rules on a tool use. A rule whose tool pattern covers
    /// every tool of one of our servers (`mcp__S__*`, `mcp__*`) covers the
    /// CLI's resource tools naming that server too: a deny rule on
    /// `mcp__S__*` left `ReadMcpResourceTool` reading S's resources (a
    /// residual of the tenth session's review). Only a rule that matches
    /// decides there: an allow list's default refusal applies to the
    /// resource tool's own name, as before.
    fn rules_check(&self, tool: &str, input: &Value) -> Result<(), String> {
        use crate::policy::Decision;
        if let Decision::Deny(reason) = self.options.rules.decide("", tool, input) {
            return Err(reason);
        }
        if matches!(tool, READ_RESOURCE | LIST_RESOURCES) {
            match self.server_of(tool, input) {
                Some(server) => self.server_denied(server, input)?,
                // A list naming no server lists every one (the fix
                // review): refused if a rule denies any of ours.
                None if tool == LIST_RESOURCES => {
                    for server in self.bridges.keys() {
                        self.server_denied(server, input)?;
                    }
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Whether a rule that matches denies every tool of `server`
    /// (`mcp__S__*`, `mcp__*`): then its resources are not listed or read.
    fn server_denied(&self, server: &str, input: &Value) -> Result<(), String> {
        match self
            .options
            .rules
            .decide_by("", &format!("mcp__{server}__*"), input)
        {
            (crate::policy::Decision::Deny(reason), Some(_)) => Err(reason),
            _ => Ok(()),
        }
    }

    /// Answer one control request. An `mcp_message` was `submitted` to
    /// its server already, in wire order (see `dispatch`).
    async fn handle(&self, req: Inbound, submitted: Option<Submitted>) -> Result<Value, String> {
        match req {
            Inbound::McpMessage {
                server_name,
                message,
            } => {
                let resp = match submitted {
                    Some(s) => s.reply().await,
                    None => {
                        json!({"jsonrpc": "2.0", "id": message.get("id").cloned().unwrap_or(Value::Null),
                        "error": {"code": -32601, "message": format!("Server '{server_name}' not found")}})
                    }
                };
                Ok(json!({ "mcp_response": resp }))
            }
            Inbound::HookCallback {
                callback_id, input, ..
            } => {
                let input = HookInput::from_wire(input);
                self.learn_agent(input.agent_id.as_deref(), input.agent_type.as_deref());
                if callback_id == GUARD_HOOK {
                    let tool = input.tool_name.as_deref().unwrap_or("");
                    let args = input.tool_input.as_ref().unwrap_or(&Value::Null);
                    let verdict = self
                        .isolation_check(
                            input.agent_id.as_deref(),
                            input.agent_type.as_deref(),
                            tool,
                            args,
                        )
                        .and_then(|()| self.rules_check(tool, args));
                    return Ok(match verdict {
                        Ok(()) => {
                            self.approve(tool, args);
                            json!({})
                        }
                        Err(reason) => HookOutput::Deny { reason }.to_wire(&input.event),
                    });
                }
                let (_, f) = self
                    .hooks
                    .get(&callback_id)
                    .ok_or_else(|| format!("no hook callback registered as `{callback_id}`"))?;
                let event = input.event.clone();
                Ok(f(input).await.to_wire(&event))
            }
            Inbound::CanUseTool {
                tool_name,
                input,
                tool_use_id,
                agent_id,
                raw,
            } => {
                let agent_type = agent_id
                    .as_ref()
                    .and_then(|id| lock(&self.agent_types).get(id).cloned());
                if let Err(message) = self
                    .isolation_check(
                        agent_id.as_deref(),
                        agent_type.as_deref(),
                        &tool_name,
                        &input,
                    )
                    .and_then(|()| self.rules_check(&tool_name, &input))
                {
                    return Ok(Permission::deny(message).to_wire(&input));
                }
                let verdict = match &self.options.can_use_tool {
                    Some(f) => {
                        f(PermissionRequest {
                            tool_name,
                            input: input.clone(),
                            tool_use_id,
                            agent_id,
                            agent_type,
                            raw,
                        })
                        .await
                    }
                    // The CLI asks only when its own rules did not decide;
                    // without a callback to ask, the answer is no.
                    None => Permission::deny(format!(
                        "`{tool_name}` needs permission and this session has no can_use_tool callback"
                    )),
                };
                Ok(verdict.to_wire(&input))
            }
            Inbound::Unknown { subtype } => {
                Err(format!("unsupported control request subtype `{subtype}`"))
            }
        }
    }
}

/// A connected agent session: send prompts, read messages, steer it.
pub struct AgentSession {
    inner: Arc<Inner>,
    messages: mpsc::UnboundedReceiver<Queued>,
    process: Arc<tokio::sync::Mutex<Option<CliProcess>>>,
    stderr: Option<super::process::StderrTail>,
    /// The CLI's answer to `initialize` (commands, models, account, ...).
    pub server_info: Value,
}

/// Dropped without [`AgentSession::close`]: the CLI's input closes, so it
/// finishes and exits, and the session's tasks end with its output; a CLI
/// still running 5 seconds later is killed with its process group.
impl Drop for AgentSession {
    fn drop(&mut self) {
        self.end_input_within(EXIT_GRACE);
    }
}

impl AgentSession {
    /// Start the CLI and initialize the session. Tools are served from
    /// `core`: each SDK server in the options shows its scope's tools.
    pub async fn connect(core: Core, options: AgentOptions) -> Result<AgentSession, AgentError> {
        options.validate().map_err(AgentError::Options)?;
        let cli = find_cli(options.cli.as_deref())?;
        // The CLI runs with the host's privileges: never one a tool could
        // have written (found by review).
        if let Some(writable) = crate::caps::fs::writable_around(&cli) {
            return Err(AgentError::CliWritable {
                path: cli,
                writable,
            });
        }
        // Nor settings a tool could have written: the session may name
        // its own HOME or CLAUDE_CONFIG_DIR, which the core's protected
        // paths (the host's own) do not cover (found by the fix review).
        if let Some(config) = settings_dir(&options)
            && let Some(writable) = ["settings.json", ".credentials.json"]
                .iter()
                .flat_map(|f| {
                    // A link there is where it points, if it points at
                    // nothing yet (the third review of the fix: a dangling
                    // `settings.json` into a granted directory was missed).
                    let at = config.join(f);
                    let target = std::fs::read_link(&at).ok().map(|t| config.join(t));
                    std::iter::once(at).chain(target)
                })
                .find_map(|p| crate::caps::fs::writable_around(&p))
        {
            return Err(AgentError::ConfigWritable { config, writable });
        }
        let args = cli_args(&options);
        let (proc, pipes) = CliProcess::spawn(
            &cli,
            &args,
            options.cwd.as_deref(),
            inherited_env(&options),
            &super::options::cli_env(&options),
        )?;
        let stderr = proc.stderr.clone();
        let mut s = Self::start(core, options, pipes.stdout, pipes.stdin, Some(proc)).await?;
        s.stderr = Some(stderr);
        Ok(s)
    }

    /// Speak the protocol over any pipes (the peer plays the CLI). Used by
    /// tests and benchmarks; `connect` is this plus a process.
    pub async fn connect_io<R, W>(
        core: Core,
        options: AgentOptions,
        reader: R,
        writer: W,
    ) -> Result<AgentSession, AgentError>
    where
        R: AsyncBufRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        options.validate().map_err(AgentError::Options)?;
        Self::start(core, options, reader, writer, None).await
    }

    async fn start<R, W>(
        core: Core,
        options: AgentOptions,
        reader: R,
        writer: W,
        proc: Option<CliProcess>,
    ) -> Result<AgentSession, AgentError>
    where
        R: AsyncBufRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        // Hooks: ours first, then the caller's, each under its own id.
        let mut hooks = HashMap::new();
        let mut wire_hooks: std::collections::BTreeMap<&str, Vec<Value>> = Default::default();
        if guarded(&options) {
            wire_hooks
                .entry(HookEvent::PreToolUse.as_str())
                .or_default()
                .push(json!({"matcher": null, "hookCallbackIds": [GUARD_HOOK]}));
        }
        for (i, m) in options.hooks.iter().enumerate() {
            let mut ids = Vec::new();
            for (j, f) in m.hooks.iter().enumerate() {
                let id = format!("hook_{i}_{j}");
                hooks.insert(id.clone(), (m.event, f.clone()));
                ids.push(id);
            }
            let mut entry = json!({"matcher": m.matcher, "hookCallbackIds": ids});
            if let Some(t) = m.timeout {
                entry["timeout"] = json!(t.as_secs_f64());
            }
            wire_hooks.entry(m.event.as_str()).or_default().push(entry);
        }

        // Agents, with each one's tools spelled out when isolation is on.
        let scope_of: HashMap<&str, &Scope> = options
            .servers
            .iter()
            .map(|s| (s.name.as_str(), &s.scope))
            .collect();
        let mcp_tools = |servers: &[String]| -> Vec<String> {
            servers
                .iter()
                .flat_map(|s| {
                    core.tools(scope_of[s.as_str()])
                        .into_iter()
                        .map(move |t| format!("mcp__{s}__{}", t.name))
                })
                .collect()
        };
        let mut agents = Map::new();
        let mut entitled = HashMap::new();
        for (name, def) in &options.agents {
            let mut tools = def.tools.clone();
            tools.extend(mcp_tools(&def.servers));
            let mut a = json!({"description": def.description, "prompt": def.prompt});
            if options.isolated() || !tools.is_empty() {
                a["tools"] = json!(tools);
            }
            if let Some(m) = &def.model {
                a["model"] = json!(m);
            }
            if let Some(n) = def.max_turns {
                a["maxTurns"] = json!(n);
            }
            agents.insert(name.clone(), a);
            entitled.insert(Some(name.clone()), def.servers.clone());
        }
        if options.isolated() {
            let main = options.main_thread_servers();
            let mut tools = options.builtin_tools.clone().unwrap_or_default();
            if !options.agents.is_empty() {
                tools.push("Agent".into());
            }
            tools.extend(mcp_tools(&main));
            agents.insert(
                MAIN_AGENT.into(),
                json!({"description": "The main thread, as toolhost scopes it.",
                       "prompt": options.system_prompt.clone().unwrap_or_default(), "tools": tools}),
            );
            entitled.insert(None, main);
        } else {
            entitled.clear();
        }

        // One bridge per SDK server, each writing its server's notifications
        // to the CLI as `mcp_message` requests (the CLI acknowledges them;
        // nothing waits for that).
        let (out, writer) = Output::new(writer, REPLY_BACKLOG);
        let inner = Arc::new_cyclic(|w: &std::sync::Weak<Inner>| {
            let w = w.clone();
            let notify: Outbound = Arc::new(move |server: &str, message: Value| {
                let Some(inner) = w.upgrade() else { return };
                let id = format!("note_{}", inner.counter.fetch_add(1, Ordering::Relaxed) + 1);
                let _ = inner.write(&protocol::request(
                    &id,
                    json!({"subtype": "mcp_message", "server_name": server, "message": message}),
                ));
            });
            let bridges = options
                .servers
                .iter()
                .map(|s| {
                    let (core, scope) = (core.clone(), s.scope.clone());
                    let caller = format!("agent:{}", s.name);
                    let factory: Factory<McpServer> = Arc::new(move || {
                        McpServer::with_caller(core.clone(), scope.clone(), &caller)
                    });
                    (
                        s.name.clone(),
                        Bridge::new(&s.name, factory, notify.clone()),
                    )
                })
                .collect();
            Inner {
                out,
                pending: Mutex::default(),
                asking: tokio::sync::Notify::new(),
                inflight: Mutex::default(),
                inflight_bytes: Arc::new(tokio::sync::Semaphore::new(MAX_INFLIGHT_BYTES)),
                bridges,
                hooks,
                options,
                entitled,
                agent_types: Mutex::default(),
                counter: AtomicU64::new(0),
                approved: Mutex::default(),
            }
        });
        tokio::spawn(writer);

        let (msg_tx, msg_rx) = mpsc::unbounded_channel();
        let process = Arc::new(tokio::sync::Mutex::new(proc));
        let stderr = None;
        // Each SDK server's MCP handshake, made here before the CLI's
        // output is read (so no `initialize` of the CLI's can meet it) and
        // handed to the CLI with `initialize`: its client then skips the
        // round trips of its own (see `Bridge::handshake`).
        let manifests = manifests(&inner.bridges).await;
        tokio::spawn(reader_task(inner.clone(), reader, msg_tx, process.clone()));
        let mut starting = Starting {
            inner: inner.clone(),
            process: process.clone(),
            armed: true,
        };

        let mut init = json!({"subtype": "initialize", "hooks": if wire_hooks.is_empty() { Value::Null } else { json!(wire_hooks) }});
        if !agents.is_empty() {
            init["agents"] = Value::Object(agents);
        }
        if !inner.bridges.is_empty() {
            let mut names: Vec<&String> = inner.bridges.keys().collect();
            names.sort();
            init["sdkMcpServers"] = json!(names);
            init["sdkMcpServerManifests"] = Value::Object(manifests);
        }
        let server_info = match inner.control(init).await {
            Ok(info) => info,
            Err(e) => {
                // No session to drop: close the CLI's input here, and stop
                // the CLI (a hung one ignores its input's end), or the
                // reader (which holds `inner`) and the CLI outlive the error.
                // A CLI that ended before answering (not logged in, a
                // version without the control protocol) is reported with
                // its exit code and what it said, not as a closed session.
                inner.out.close();
                if let Some(p) = process.lock().await.as_mut() {
                    let code = p.shutdown(Duration::from_secs(2)).await;
                    if matches!(e, AgentError::Closed) {
                        return Err(AgentError::ProcessExited {
                            code,
                            stderr: p.stderr.ended_text(STDERR_WAIT).await,
                        });
                    }
                }
                return Err(e);
            }
        };
        starting.armed = false;
        Ok(AgentSession {
            inner,
            messages: msg_rx,
            process,
            stderr,
            server_info,
        })
    }

    /// Send a user prompt.
    pub fn send(&self, prompt: &str) -> Result<(), AgentError> {
        self.inner.write(&protocol::user_prompt(prompt))
    }

    /// The next message; `None` when the CLI's output has ended.
    pub async fn next(&mut self) -> Option<Result<Message, AgentError>> {
        // Its bytes go back to the queue's budget as it is taken.
        self.messages.recv().await.map(|(m, _held)| m)
    }

    /// Messages up to and including the next `result`.
    pub async fn receive_turn(&mut self) -> Result<Vec<Message>, AgentError> {
        let mut out = Vec::new();
        while let Some(m) = self.next().await {
            let m = m?;
            let done = matches!(m, Message::Result(_));
            out.push(m);
            if done {
                return Ok(out);
            }
        }
        Err(AgentError::Closed)
    }

    /// Stop the current turn.
    pub async fn interrupt(&self) -> Result<(), AgentError> {
        self.inner
            .control(json!({"subtype": "interrupt"}))
            .await
            .map(drop)
    }

    /// Switch the permission mode for the rest of the session.
    pub async fn set_permission_mode(
        &self,
        mode: super::options::PermissionMode,
    ) -> Result<(), AgentError> {
        self.inner
            .control(json!({"subtype": "set_permission_mode", "mode": mode.as_str()}))
            .await
            .map(drop)
    }

    /// Switch model; `None` goes back to the default.
    pub async fn set_model(&self, model: Option<&str>) -> Result<(), AgentError> {
        self.inner
            .control(json!({"subtype": "set_model", "model": model}))
            .await
            .map(drop)
    }

    /// The CLI's view of its MCP servers.
    pub async fn mcp_status(&self) -> Result<Value, AgentError> {
        self.inner.control(json!({"subtype": "mcp_status"})).await
    }

    /// Close the CLI's input: it finishes what it is doing and exits.
    pub fn end_input(&self) {
        self.inner.out.close();
    }

    /// Close the CLI's input, and kill it with its process group if it is
    /// still running `grace` from now (needs a Tokio runtime; without one,
    /// only the input is closed).
    pub(crate) fn end_input_within(&self, grace: Duration) {
        end_within(&self.inner, &self.process, grace);
    }

    /// The tail of the CLI's stderr.
    pub fn stderr(&self) -> String {
        self.stderr.as_ref().map(|s| s.text()).unwrap_or_default()
    }

    /// End the session: close input, drain messages, wait for the CLI to
    /// exit (killing it after `grace`). Returns its exit code.
    pub async fn close(mut self, grace: Duration) -> Option<i32> {
        self.end_input();
        let _ = tokio::time::timeout(grace, async {
            while self.messages.recv().await.is_some() {}
        })
        .await;
        match self.process.lock().await.as_mut() {
            Some(p) => p.shutdown(grace).await,
            None => Some(0),
        }
    }
}

/// Close the CLI's input, and kill it with its process group if it is
/// still running `grace` from now (needs a Tokio runtime; without one, only
/// the input is closed).
fn end_within(
    inner: &Inner,
    process: &Arc<tokio::sync::Mutex<Option<CliProcess>>>,
    grace: Duration,
) {
    inner.out.close();
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let process = Arc::downgrade(process);
    rt.spawn(async move {
        tokio::time::sleep(grace).await;
        // Gone: the reader shut it down and the session was dropped.
        let Some(process) = process.upgrade() else {
            return;
        };
        if let Some(p) = process.lock().await.as_mut() {
            p.kill();
        }
    });
}

/// A session being started, until `start` returns it: if its future is
/// dropped first (an embedder's timeout on `connect`), the CLI is ended as
/// a dropped session's is. Before, the reader held the CLI and nothing
/// ever ended it (found by the fix review).
struct Starting {
    inner: Arc<Inner>,
    process: Arc<tokio::sync::Mutex<Option<CliProcess>>>,
    armed: bool,
}

impl Drop for Starting {
    fn drop(&mut self) {
        if self.armed {
            end_within(&self.inner, &self.process, EXIT_GRACE);
        }
    }
}

/// Where the CLI will keep its settings: the session's
/// `CLAUDE_CONFIG_DIR`, else the host's, else `.claude` under the session's
/// or the host's `HOME`; a relative one from the CLI's working directory.
fn settings_dir(o: &AgentOptions) -> Option<std::path::PathBuf> {
    let set = |name: &str| {
        o.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| std::ffi::OsString::from(v))
            .or_else(|| std::env::var_os(name))
            .filter(|v| !v.is_empty())
    };
    let dir = match set("CLAUDE_CONFIG_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => std::path::PathBuf::from(set("HOME")?).join(".claude"),
    };
    Some(match (&o.cwd, dir.is_relative()) {
        (Some(cwd), true) => cwd.join(dir),
        _ => dir,
    })
}

/// Every SDK server's handshake, made in process for the CLI's
/// `sdkMcpServerManifests`, all at once within one deadline, by server
/// name. A server that does not answer in time is left out (the CLI makes
/// its own handshake); one that announced a tool change while its tools
/// were listed has its listing left out (the CLI then lists them itself),
/// as the official SDK does.
async fn manifests(bridges: &HashMap<String, Bridge<McpServer>>) -> Map<String, Value> {
    let deadline = tokio::time::Instant::now() + HANDSHAKE_WITHIN;
    let each = bridges.iter().map(|(name, bridge)| async move {
        let changes = bridge.tool_list_changes();
        let handshake = bridge.handshake(CLI_MCP_PROTOCOL_VERSION);
        let mut manifest = tokio::time::timeout_at(deadline, handshake).await.ok()??;
        if bridge.tool_list_changes() != changes
            && let Some(m) = manifest.as_object_mut()
        {
            m.remove("toolsListResult");
        }
        Some((name.clone(), manifest))
    });
    futures::future::join_all(each)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn reader_task<R: AsyncBufRead + Unpin>(
    inner: Arc<Inner>,
    mut reader: R,
    messages: mpsc::UnboundedSender<Queued>,
    process: Arc<tokio::sync::Mutex<Option<CliProcess>>>,
) {
    let max = inner.options.max_line_bytes;
    let queued = Arc::new(tokio::sync::Semaphore::new(MAX_QUEUED_BYTES));
    let overdraft = Arc::new(tokio::sync::Semaphore::new(MAX_QUEUED_BYTES));
    // Queue `m`, weighing `weight` (at most the budget), once the queue has
    // room, or the overdraft has while a control request of ours waits.
    let queue = async |m: Result<Message, AgentError>, weight: usize| {
        let n = weight.clamp(MIN_QUEUED_WEIGHT, MAX_QUEUED_BYTES) as u32;
        let held = loop {
            if let Ok(p) = queued.clone().try_acquire_many_owned(n) {
                break Some(p);
            }
            let asked = inner.asking.notified();
            let mut asked = std::pin::pin!(asked);
            asked.as_mut().enable();
            if !lock(&inner.pending).is_empty()
                && let Ok(p) = overdraft.clone().try_acquire_many_owned(n)
            {
                break Some(p);
            }
            tokio::select! {
                p = queued.clone().acquire_many_owned(n) => break p.ok(),
                () = &mut asked => {}
            }
        };
        let _ = messages.send((m, held));
    };
    let mut buf = Vec::with_capacity(4096);
    let mut saw_result = false;
    loop {
        match read_line_bounded(&mut reader, &mut buf, max).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(e @ AgentError::LineTooLong { .. }) => {
                queue(Err(e), 0).await;
                continue;
            }
            Err(e) => {
                queue(Err(e), 0).await;
                break;
            }
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // Weighed before it is parsed: a line heavier than anything the
        // session holds of the CLI's is not parsed at all (one 32 MiB line
        // of `[0,0,…]` took 610 MB parsed before it was refused).
        let weight = crate::mcp::request_weight(&buf);
        if weight > MAX_QUEUED_BYTES.max(MAX_INFLIGHT_BYTES) {
            // Its head only (the rest skipped, nothing kept): a control
            // request is still answered, under its id, a response to one of
            // ours still ends its wait, and a result still counts.
            let head = serde_json::from_slice::<Head<'_>>(&buf).ok();
            let kind = head.as_ref().and_then(|h| h.kind.as_deref());
            match (kind, head.as_ref()) {
                (
                    Some("control_request"),
                    Some(Head {
                        request_id: Some(Id(id)),
                        ..
                    }),
                ) => {
                    let _ = inner.write(&protocol::error(
                        id,
                        &format!(
                            "this control request weighs {weight} bytes parsed (each JSON value counting 64), more than the {MAX_INFLIGHT_BYTES} the session holds of them"
                        ),
                    ));
                }
                (
                    Some("control_response"),
                    Some(Head {
                        response:
                            Some(ResponseHead {
                                request_id: Some(Id(id)),
                            }),
                        ..
                    }),
                ) => {
                    if let Some(tx) = lock(&inner.pending).remove(id) {
                        let _ = tx.send(Err(format!(
                            "its answer weighs {weight} bytes parsed, more than the {MAX_QUEUED_BYTES} the session takes"
                        )));
                    }
                }
                _ => {
                    saw_result |= kind == Some("result");
                    let e = AgentError::MessageTooLarge {
                        weight,
                        limit: MAX_QUEUED_BYTES,
                    };
                    queue(Err(e), 0).await;
                }
            }
            continue;
        }
        let v: Value = match serde_json::from_slice(&buf) {
            Ok(v) => v,
            Err(source) => {
                let line: String = String::from_utf8_lossy(&buf).chars().take(2000).collect();
                // Weighed as what it keeps (up to 8 KB of text): at the
                // least weight, lines of 2,000 emoji held 17 times the
                // budget (found by the second review of the fix).
                let held = line.len();
                queue(Err(AgentError::JsonDecode { line, source }), held).await;
                continue;
            }
        };
        match v.get("type").and_then(Value::as_str) {
            Some("control_response") => {
                let r = &v["response"];
                let id = r["request_id"].as_str().unwrap_or_default();
                if let Some(tx) = lock(&inner.pending).remove(id) {
                    let _ = tx.send(if r["subtype"] == "error" {
                        Err(r["error"].as_str().unwrap_or("unknown error").to_string())
                    } else {
                        Ok(r.get("response").cloned().unwrap_or(Value::Null))
                    });
                }
            }
            // Replies can no longer reach the CLI (it left 64 MiB unread, or
            // its input broke): run nothing more for it.
            Some("control_request") if inner.out.is_broken() => break,
            // No more lines already waiting? Then a call's first slice may
            // run on this task (see `dispatch`).
            Some("control_request") => dispatch(&inner, v, weight, || !more_waiting(&mut reader)),
            Some("control_cancel_request") => {
                if let Some(id) = InboundRequest::request_id(&v)
                    && let Some(h) = lock(&inner.inflight).remove(&id)
                {
                    h.abort();
                }
            }
            _ => {
                let m = Message::parse(v);
                if let Message::Assistant(a) = &m {
                    inner.learn_agent(a.agent_id.as_deref(), a.subagent_type.as_deref());
                }
                if let Message::User(u) = &m {
                    inner.learn_agent(u.agent_id.as_deref(), u.subagent_type.as_deref());
                }
                saw_result |= matches!(m, Message::Result(_));
                if weight > MAX_QUEUED_BYTES {
                    drop(m);
                    let e = AgentError::MessageTooLarge {
                        weight,
                        limit: MAX_QUEUED_BYTES,
                    };
                    queue(Err(e), 0).await;
                } else {
                    queue(Ok(m), weight).await;
                }
            }
        }
    }
    // Output ended (or replies cannot reach the CLI): nothing we asked
    // will be answered, and nobody waits for what is still running, so its
    // guests are stopped. Not reading on, the CLI's output is closed, so a
    // CLI blocked writing to it ends rather than waiting out the grace.
    drop(reader);
    lock(&inner.pending).clear();
    for (_, running) in lock(&inner.inflight).drain() {
        running.abort();
    }
    inner.out.close();
    if let Some(p) = process.lock().await.as_mut() {
        let code = p.shutdown(EXIT_GRACE).await;
        if code != Some(0) || !saw_result {
            let _ = messages.send((
                Err(AgentError::ProcessExited {
                    code,
                    stderr: p.stderr.ended_text(STDERR_WAIT).await,
                }),
                None,
            ));
        }
    }
}

/// The head of a line too heavy to parse: its type and the ids that say
/// what it answers or asks, read without building anything of the rest
/// (skipped as it is scanned). An id is a short string or a number; any
/// other value fails the read (the third review of the fix: an id parsed
/// as any JSON value let a 32 MiB array id be built whole, 1.1 GB).
#[derive(serde::Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    request_id: Option<Id>,
    response: Option<ResponseHead>,
}

#[derive(serde::Deserialize)]
struct ResponseHead {
    request_id: Option<Id>,
}

/// A control message's id: a string of at most 256 bytes, or a number.
struct Id(String);

impl<'de> serde::Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Id;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string of at most 256 bytes or a number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Id, E> {
                if v.len() > 256 {
                    return Err(E::custom("an id longer than 256 bytes"));
                }
                Ok(Id(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Id, E> {
                Ok(Id(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Id, E> {
                Ok(Id(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Handle one control request from the CLI on its own task.
fn dispatch(inner: &Arc<Inner>, v: Value, weight: usize, idle: impl FnOnce() -> bool) {
    // Answered under the id `parse` reads (a number too), or the CLI waits
    // for this reply forever.
    let id = InboundRequest::request_id(&v);
    let req = match InboundRequest::parse(v) {
        Ok(r) => r,
        Err(e) => {
            if let Some(id) = id {
                let _ = inner.write(&protocol::error(&id, &e));
            }
            return;
        }
    };
    let id = req.request_id.clone();
    // An id still in flight is refused: its handle would replace the
    // running one's, which could then be neither cancelled nor aborted
    // when the session ends.
    // And past MAX_INFLIGHT, none is taken: each holds its request (a
    // line of up to `max_line_bytes`) and a task until it is answered, and
    // a CLI that never waits for answers could pile up any number (found
    // by review).
    // And past MAX_INFLIGHT_BYTES: each holds its parsed request.
    let held = {
        let inflight = lock(&inner.inflight);
        if inflight.contains_key(&id) {
            Err("a control request with this request_id is still in flight".to_string())
        } else if inflight.len() >= MAX_INFLIGHT {
            Err(format!(
                "{MAX_INFLIGHT} control requests are in flight already; send more once some are answered"
            ))
        } else {
            u32::try_from(weight)
                .ok()
                .and_then(|n| inner.inflight_bytes.clone().try_acquire_many_owned(n).ok())
                .ok_or_else(|| {
                    format!(
                        "the control requests in flight would hold more than {MAX_INFLIGHT_BYTES} bytes with this one (it weighs {weight} parsed, each JSON value counting 64); send it once some are answered"
                    )
                })
        }
    };
    let held = match held {
        Ok(held) => held,
        Err(why) => {
            let _ = inner.write(&protocol::error(&id, &why));
            return;
        }
    };
    // MCP messages reach their server here, in the order the CLI wrote
    // them; only the replies are awaited concurrently. (Handled on the
    // tasks, a request written before a re-`initialize` could reach the
    // new connection after it, and be answered as another request.)
    let submitted = match &req.request {
        Inbound::McpMessage {
            server_name,
            message,
        } => {
            if !inner.may_send(server_name, message) {
                let refused = json!({"jsonrpc": "2.0", "id": message.get("id").cloned().unwrap_or(Value::Null),
                    "error": {"code": -32600, "message": "this tool use was not approved by the host's PreToolUse check (with agent isolation or rules on, tool calls and resource reads need it, and prompts, completions and subscriptions are not served)"}});
                let _ = inner.write(&protocol::success(&id, json!({ "mcp_response": refused })));
                return;
            }
            inner
                .bridges
                .get(server_name)
                .map(|b| b.submit(message.clone()))
        }
        _ => None,
    };
    let direct = matches!(submitted, Some(Submitted::Direct(_)));
    let task_inner = inner.clone();
    let answer = async move {
        // The request's bytes, until it is answered.
        let _held = held;
        let inner = task_inner;
        let result = std::panic::AssertUnwindSafe(inner.handle(req.request, submitted))
            .catch_unwind()
            .await;
        let reply = match result {
            Ok(Ok(v)) => protocol::success(&req.request_id, v),
            Ok(Err(e)) => protocol::error(&req.request_id, &e),
            Err(_) => protocol::error(&req.request_id, "the handler panicked"),
        };
        lock(&inner.inflight).remove(&req.request_id);
        let _ = inner.write(&reply);
    };
    // A tool call's sandbox that finished on this task is torn down once
    // the reply is written, not before (`toolhost::reply_first`).
    // Only for a direct call: a hook's future may go on awaiting (an
    // approval) after calls it made, which must not hold their sandboxes.
    let mut answer: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = if direct {
        Box::pin(async move {
            let ((), teardown) = crate::reply_first(answer).await;
            drop(teardown);
        })
    } else {
        Box::pin(answer)
    };
    // A tool call's first slice runs here, on the reader's task, when no
    // other line is waiting to be read: most calls end within it (the
    // guest's first slice is at most an epoch tick and a grace,
    // `scheduler`), answered with no task spawned or woken. One that goes
    // on is handed to its own task, which polls it again (with its own
    // waker) at once. Lines that arrive meanwhile wait for at most that
    // slice; a burst the CLI sent together runs on tasks, in parallel.
    if direct && idle() && answer.as_mut().now_or_never().is_some() {
        return;
    }
    // Register before the task can finish, so its own removal wins.
    let mut inflight = lock(&inner.inflight);
    let handle = tokio::spawn(answer);
    inflight.insert(id, handle.abort_handle());
}

#[cfg(test)]
mod tests {
    /// The hook sees a tool by the name the CLI gives the model (its
    /// `[^a-zA-Z0-9_-]` made `_`, as the pinned CLI's code does); the
    /// `tools/call` names it as the server listed it. Both are keyed alike,
    /// or every call of a tool with a `.` in its name would be refused.
    #[test]
    fn approvals_key_tools_as_the_cli_names_them() {
        assert_eq!(super::as_cli_names("files.read"), "files_read");
        assert_eq!(
            super::as_cli_names("scalars_echo-text"),
            "scalars_echo-text"
        );
    }
}
