//! Options of an agent session, recognisable to Claude Agent SDK users:
//! model, prompts, turns, cwd, env, tool allow/deny lists, permission mode,
//! subagents, hooks, `can_use_tool`, and which tool scope each in-process
//! ("sdk") MCP server exposes.
//!
//! Also turns them into the CLI's command line.

use super::hooks::{CanUseTool, HookEvent, HookFn, HookMatcher};
use crate::catalog::Scope;
use crate::policy::{Policy, Rule};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The CLI's permission modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PermissionMode {
    /// Ask (through `can_use_tool`) for tools not allowed outright.
    Default,
    /// Accept file edits without asking.
    AcceptEdits,
    /// Plan only: no tool runs.
    Plan,
    /// Run every tool without asking (the host's rules and hooks still apply).
    BypassPermissions,
    /// Refuse what is not allowed outright, without asking.
    DontAsk,
}

impl PermissionMode {
    /// The CLI's name for the mode (`--permission-mode`).
    pub fn as_str(self) -> &'static str {
        match self {
            PermissionMode::Default => "default",
            PermissionMode::AcceptEdits => "acceptEdits",
            PermissionMode::Plan => "plan",
            PermissionMode::BypassPermissions => "bypassPermissions",
            PermissionMode::DontAsk => "dontAsk",
        }
    }
}

impl std::str::FromStr for PermissionMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "default" => PermissionMode::Default,
            "acceptEdits" => PermissionMode::AcceptEdits,
            "plan" => PermissionMode::Plan,
            "bypassPermissions" => PermissionMode::BypassPermissions,
            "dontAsk" => PermissionMode::DontAsk,
            _ => {
                return Err(format!(
                    "unknown permission mode `{s}` (default, acceptEdits, plan, bypassPermissions, dontAsk)"
                ));
            }
        })
    }
}

/// A settings file the CLI may load (`--setting-sources`). The host loads
/// none by default: a working directory's `.claude/settings.json` can name
/// shell-command hooks that would run as the host's user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SettingSource {
    /// `~/.claude/settings.json`.
    User,
    /// `.claude/settings.json` in the working directory.
    Project,
    /// `.claude/settings.local.json` in the working directory.
    Local,
}

impl SettingSource {
    /// The CLI's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            SettingSource::User => "user",
            SettingSource::Project => "project",
            SettingSource::Local => "local",
        }
    }
}

/// Environment variables the CLI inherits from the host by default: what a
/// process needs to run, locale and proxies/certificates, nothing else.
/// Names under the CLI's own prefixes (`ANTHROPIC_`, `CLAUDE_`) are
/// inherited too; `TOOLHOST_` names never are (the host's secrets).
pub const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TZ",
    "TERM",
    "TMPDIR",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
    "XDG_RUNTIME_DIR",
    "NODE_EXTRA_CA_CERTS",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// Prefixes of the CLI's own variables, inherited by default.
const INHERITED_PREFIXES: &[&str] = &["ANTHROPIC_", "CLAUDE_"];

/// A subagent the model can delegate to (through the `Agent` tool).
#[derive(Debug, Clone, Default)]
pub struct AgentDefinition {
    /// When the model should use it.
    pub description: String,
    /// Its system prompt.
    pub prompt: String,
    /// Other tools it may use, by name (built-ins such as "Read").
    pub tools: Vec<String>,
    /// The SDK servers (tool scopes) it may use. Their tools are listed to
    /// this agent only, and the host refuses its calls to any other server.
    pub servers: Vec<String>,
    /// Model alias or id.
    pub model: Option<String>,
    /// Most model turns the subagent may take.
    pub max_turns: Option<u32>,
}

impl AgentDefinition {
    /// A subagent the model picks by `description`, running with `prompt`.
    pub fn new(description: impl Into<String>, prompt: impl Into<String>) -> Self {
        AgentDefinition {
            description: description.into(),
            prompt: prompt.into(),
            ..Default::default()
        }
    }
    /// Give it the SDK server `name` (its tools only it may call, unless
    /// another agent names it too).
    pub fn server(mut self, name: impl Into<String>) -> Self {
        self.servers.push(name.into());
        self
    }
    /// Give it a built-in tool (e.g. `Read`).
    pub fn tool(mut self, name: impl Into<String>) -> Self {
        self.tools.push(name.into());
        self
    }
    /// Run it on this model (alias or id).
    pub fn model(mut self, m: impl Into<String>) -> Self {
        self.model = Some(m.into());
        self
    }
}

/// An in-process MCP server: the tools of `scope`, named `name` to the CLI
/// (the model sees them as `mcp__NAME__TOOL`).
#[derive(Debug, Clone)]
pub struct SdkServer {
    /// The server's name (`mcp__NAME__TOOL`).
    pub name: String,
    /// Whose tools it serves.
    pub scope: Scope,
}

/// The host environment the CLI inherits under `o`: name-value pairs.
pub(crate) fn inherited_env(o: &AgentOptions) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    std::env::vars_os()
        .filter(|(k, _)| {
            let Some(k) = k.to_str() else { return false };
            if k.starts_with("TOOLHOST_") {
                return false;
            }
            o.inherit_all_env
                || INHERITED_ENV.contains(&k)
                || INHERITED_PREFIXES.iter().any(|p| k.starts_with(p))
                || o.inherit_env.iter().any(|n| n == k)
        })
        .collect()
}

/// What the host sets in the CLI's environment: its own settings first
/// (auto-memory off unless asked for), then the embedder's `env`, which
/// may override them.
pub(crate) fn cli_env(o: &AgentOptions) -> Vec<(String, String)> {
    let mut env = Vec::with_capacity(o.env.len() + 1);
    if !o.auto_memory {
        env.push(("CLAUDE_CODE_DISABLE_AUTO_MEMORY".into(), "1".into()));
    }
    env.extend(o.env.iter().cloned());
    env
}

/// Everything about a session. Build with the chaining methods.
#[derive(Clone)]
pub struct AgentOptions {
    /// The CLI (else `$TOOLHOST_CLAUDE_CLI`, else `claude` on PATH).
    pub cli: Option<PathBuf>,
    /// Model alias or id (`--model`); the CLI's default when `None`.
    pub model: Option<String>,
    /// Replaces the system prompt (`--system-prompt`).
    pub system_prompt: Option<String>,
    /// Appended to the system prompt (`--append-system-prompt`).
    pub append_system_prompt: Option<String>,
    /// Most model turns per prompt (`--max-turns`).
    pub max_turns: Option<u32>,
    /// The CLI's working directory; the host's when `None`. The core
    /// keeps every grant away from the host's own `./.claude` (project
    /// settings); with another directory here and project settings loaded
    /// ([`AgentOptions::setting_sources`]), protect its `.claude` too
    /// ([`CoreBuilder::protect`](crate::CoreBuilder::protect)).
    pub cwd: Option<PathBuf>,
    /// Set in the CLI's environment (after the inherited names).
    pub env: Vec<(String, String)>,
    /// More host variables the CLI inherits, beyond [`INHERITED_ENV`].
    pub inherit_env: Vec<String>,
    /// Pass the host's whole environment (bearer tokens, cloud
    /// credentials, ...). Off by default; `TOOLHOST_` names stay out even then.
    pub inherit_all_env: bool,
    /// Settings files the CLI loads; none by default.
    pub setting_sources: Vec<SettingSource>,
    /// Ignore MCP servers from `.mcp.json` and settings
    /// (`--strict-mcp-config`); on by default.
    pub strict_mcp_config: bool,
    /// Tools that run without asking (`--allowedTools`).
    pub allowed_tools: Vec<String>,
    /// Tools removed from the model's context (`--disallowedTools`).
    pub disallowed_tools: Vec<String>,
    /// The built-in tools available at all (`--tools`). `Some(vec![])`,
    /// the default, removes every built-in tool; `None` keeps the CLI's
    /// default set (Bash, Write, WebFetch...: they run with the host's
    /// privileges, outside any sandbox).
    pub builtin_tools: Option<Vec<String>>,
    /// Let the CLI save the session's transcript (prompts, tool arguments
    /// and results) under `~/.claude/projects/`; off by default
    /// (`--no-session-persistence`), which also rules out resuming it.
    pub persist_session: bool,
    /// Let the CLI keep its auto-memory: notes under
    /// `~/.claude/projects/<cwd>/memory/` that it writes without asking
    /// and loads into every later session started in the same directory,
    /// as instructions that override its defaults. A prompt-injected
    /// session could plant instructions for every agent after it (found
    /// by review). Off by default (`CLAUDE_CODE_DISABLE_AUTO_MEMORY=1`).
    pub auto_memory: bool,
    /// The permission mode (`--permission-mode`); the CLI's default when `None`.
    pub permission_mode: Option<PermissionMode>,
    /// The in-process MCP servers, each serving one scope.
    pub servers: Vec<SdkServer>,
    /// The servers the main thread may use; `None`: all of them, unless a
    /// subagent owns a server (then the main thread gets the servers no
    /// subagent names).
    pub main_servers: Option<Vec<String>>,
    /// Subagents, by name.
    pub agents: BTreeMap<String, AgentDefinition>,
    /// Hook callbacks.
    pub hooks: Vec<HookMatcher>,
    /// Rules (the host policy's language), checked before every tool use
    /// of the model, the CLI's built-in tools included; the first that
    /// matches decides (a deny refuses the use, an allow lets it go on to
    /// the hooks and `can_use_tool`). Rule scopes do not apply here.
    pub rules: Policy,
    /// Asked about every tool use not allowed outright; without it such
    /// uses are denied.
    pub can_use_tool: Option<CanUseTool>,
    /// Emit `StreamEvent`s for partial messages.
    pub include_partial_messages: bool,
    /// More CLI flags, passed as given.
    pub extra_args: Vec<String>,
    /// The longest stdout line accepted from the CLI.
    pub max_line_bytes: usize,
    /// How long control requests we send wait for their answer.
    pub control_timeout: Duration,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            cli: None,
            model: None,
            system_prompt: None,
            append_system_prompt: None,
            max_turns: None,
            cwd: None,
            env: Vec::new(),
            inherit_env: Vec::new(),
            inherit_all_env: false,
            setting_sources: Vec::new(),
            strict_mcp_config: true,
            allowed_tools: Vec::new(),
            disallowed_tools: Vec::new(),
            builtin_tools: Some(Vec::new()),
            persist_session: false,
            auto_memory: false,
            permission_mode: None,
            servers: Vec::new(),
            main_servers: None,
            agents: BTreeMap::new(),
            hooks: Vec::new(),
            rules: Policy::default(),
            can_use_tool: None,
            include_partial_messages: false,
            extra_args: Vec::new(),
            max_line_bytes: 32 << 20,
            control_timeout: Duration::from_secs(60),
        }
    }
}

impl AgentOptions {
    /// The options of `[[agent]]` `name` of a host config: its tools served
    /// as the SDK server `tools`, each of its subagents defined with its
    /// own `[[agent]]`'s tools (served as an SDK server named after it, to
    /// that subagent alone), its `model` and `prompt` (the system prompt),
    /// and the agent's MCP tools allowed without asking. The core serving them must load the config's sources
    /// ([`HostConfig::sources`](crate::HostConfig::sources)); their quotas
    /// are the core's.
    pub fn from_config(
        config: &crate::HostConfig,
        name: &str,
    ) -> Result<AgentOptions, super::AgentError> {
        let find = |n: &str| config.agents.iter().find(|a| a.tenant.name == n);
        let Some(agent) = find(name) else {
            let known: Vec<&str> = config
                .agents
                .iter()
                .map(|a| a.tenant.name.as_str())
                .collect();
            return Err(super::AgentError::Options(if known.is_empty() {
                format!("no agent `{name}`: the host config defines no `[[agent]]`")
            } else {
                format!(
                    "no agent `{name}` in the host config (its agents: {})",
                    known.join(", ")
                )
            }));
        };
        let server = crate::tenant::SDK_SERVER;
        let mut o = AgentOptions::default()
            .server(server, agent.tenant.scope())
            .allow(format!("mcp__{server}"));
        if let Some(m) = &agent.model {
            o = o.model(m);
        }
        // Its system prompt, as a subagent's is (it was read and dropped:
        // found by the user review).
        if let Some(p) = &agent.prompt {
            o = o.system_prompt(p);
        }
        for sub in &agent.subagents {
            // Checked when the config was read: each is an `[[agent]]`.
            let Some(s) = find(sub) else { continue };
            let mut def = AgentDefinition::new(
                s.description
                    .clone()
                    .unwrap_or_else(|| format!("The `{sub}` agent")),
                s.prompt
                    .clone()
                    .unwrap_or_else(|| format!("You are the `{sub}` agent.")),
            )
            .server(sub.as_str());
            def.model = s.model.clone();
            o = o
                .server(sub.as_str(), s.tenant.scope())
                .allow(format!("mcp__{sub}"))
                .agent(sub.as_str(), def);
        }
        Ok(o)
    }

    /// Use this CLI executable.
    pub fn cli(mut self, p: impl Into<PathBuf>) -> Self {
        self.cli = Some(p.into());
        self
    }
    /// Run on this model (alias or id).
    pub fn model(mut self, m: impl Into<String>) -> Self {
        self.model = Some(m.into());
        self
    }
    /// Replace the system prompt.
    pub fn system_prompt(mut self, s: impl Into<String>) -> Self {
        self.system_prompt = Some(s.into());
        self
    }
    /// Stop after `n` model turns per prompt.
    pub fn max_turns(mut self, n: u32) -> Self {
        self.max_turns = Some(n);
        self
    }
    /// Run the CLI in this directory.
    pub fn cwd(mut self, d: impl Into<PathBuf>) -> Self {
        self.cwd = Some(d.into());
        self
    }
    /// Set `k=v` in the CLI's environment.
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    /// Let the CLI inherit the host's variable `name` (e.g. `AWS_PROFILE`
    /// for Bedrock). `TOOLHOST_` names are never inherited.
    pub fn inherit_env(mut self, name: impl Into<String>) -> Self {
        self.inherit_env.push(name.into());
        self
    }
    /// Pass the host's whole environment to the CLI (except `TOOLHOST_`
    /// names). Only for hosts whose environment holds no secrets.
    pub fn inherit_all_env(mut self, yes: bool) -> Self {
        self.inherit_all_env = yes;
        self
    }
    /// Load these settings files (the CLI's hooks in them run shell
    /// commands as the host's user: only for trusted directories).
    pub fn setting_sources<I: IntoIterator<Item = SettingSource>>(mut self, s: I) -> Self {
        self.setting_sources = s.into_iter().collect();
        self
    }
    /// Whether the CLI ignores `.mcp.json` and settings' MCP servers.
    pub fn strict_mcp_config(mut self, yes: bool) -> Self {
        self.strict_mcp_config = yes;
        self
    }
    /// Let `tool` run without asking (a name, or `mcp__SERVER` for all of a server's).
    pub fn allow(mut self, tool: impl Into<String>) -> Self {
        self.allowed_tools.push(tool.into());
        self
    }
    /// Remove `tool` from the model's context.
    pub fn disallow(mut self, tool: impl Into<String>) -> Self {
        self.disallowed_tools.push(tool.into());
        self
    }
    /// Make only these built-in tools available (none, the default: no
    /// built-in tool).
    pub fn builtin_tools<I: IntoIterator<Item = S>, S: Into<String>>(mut self, t: I) -> Self {
        self.builtin_tools = Some(t.into_iter().map(Into::into).collect());
        self
    }
    /// Keep the CLI's own default set of built-in tools (Bash, Write,
    /// WebFetch...), which run with the host's privileges.
    pub fn cli_default_builtin_tools(mut self) -> Self {
        self.builtin_tools = None;
        self
    }
    /// Let the CLI save the session's transcript ([`AgentOptions::persist_session`]).
    pub fn persist_session(mut self, on: bool) -> Self {
        self.persist_session = on;
        self
    }
    /// Let the CLI keep its auto-memory ([`AgentOptions::auto_memory`]).
    pub fn auto_memory(mut self, on: bool) -> Self {
        self.auto_memory = on;
        self
    }
    /// Use this permission mode.
    pub fn permission_mode(mut self, m: PermissionMode) -> Self {
        self.permission_mode = Some(m);
        self
    }
    /// Serve `scope`'s tools as the SDK server `name`.
    pub fn server(mut self, name: impl Into<String>, scope: Scope) -> Self {
        self.servers.push(SdkServer {
            name: name.into(),
            scope,
        });
        self
    }
    /// The SDK servers the main thread may use (the rest are its subagents').
    pub fn main_servers<I: IntoIterator<Item = S>, S: Into<String>>(mut self, s: I) -> Self {
        self.main_servers = Some(s.into_iter().map(Into::into).collect());
        self
    }
    /// Add the subagent `name`.
    pub fn agent(mut self, name: impl Into<String>, def: AgentDefinition) -> Self {
        self.agents.insert(name.into(), def);
        self
    }
    /// Run `f` on `event` for tools matching `matcher` (`None`: every tool).
    pub fn hook(mut self, event: HookEvent, matcher: Option<&str>, f: HookFn) -> Self {
        self.hooks.push(HookMatcher {
            event,
            matcher: matcher.map(str::to_string),
            hooks: vec![f],
            timeout: None,
        });
        self
    }
    /// Check tool uses against `r` (after the rules added before it),
    /// before anything else is asked.
    pub fn rule(mut self, r: Rule) -> Self {
        self.rules.rules.push(r);
        self
    }
    /// Ask `f` about tool uses not allowed outright.
    pub fn can_use_tool(mut self, f: CanUseTool) -> Self {
        self.can_use_tool = Some(f);
        self
    }
    /// Also emit partial-message [`StreamEvent`](super::StreamEvent)s.
    pub fn include_partial_messages(mut self, yes: bool) -> Self {
        self.include_partial_messages = yes;
        self
    }
    /// Pass one more flag to the CLI, as given.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.extra_args.push(a.into());
        self
    }

    /// Whether per-agent tool isolation is in force: some subagent owns a
    /// server, or the main thread's servers are restricted.
    pub fn isolated(&self) -> bool {
        self.main_servers.is_some() || self.agents.values().any(|a| !a.servers.is_empty())
    }

    /// The servers the main thread may use.
    pub fn main_thread_servers(&self) -> Vec<String> {
        match &self.main_servers {
            Some(s) => s.clone(),
            None => self
                .servers
                .iter()
                .filter(|s| !self.agents.values().any(|a| a.servers.contains(&s.name)))
                .map(|s| s.name.clone())
                .collect(),
        }
    }

    /// Check that every server an agent or the main thread names exists.
    pub fn validate(&self) -> Result<(), String> {
        let known = |n: &String| self.servers.iter().any(|s| &s.name == n);
        let mut names = std::collections::HashSet::new();
        for s in &self.servers {
            if !names.insert(&s.name) {
                return Err(format!("two SDK servers are named `{}`", s.name));
            }
            // The CLI names tools `mcp__SERVER__TOOL`: see
            // `tenant::is_sdk_server_name` for the names that stay apart.
            let normal = crate::tenant::is_sdk_server_name(&s.name);
            if !normal {
                return Err(format!(
                    "SDK server name `{}` must be non-empty, use only A-Z a-z 0-9 _ -, not contain `__`, and not start or end with `_`",
                    s.name
                ));
            }
        }
        for (agent, def) in &self.agents {
            if let Some(n) = def.servers.iter().find(|n| !known(n)) {
                return Err(format!("agent `{agent}` names unknown SDK server `{n}`"));
            }
        }
        if let Some(n) = self.main_servers.iter().flatten().find(|n| !known(n)) {
            return Err(format!("main_servers names unknown SDK server `{n}`"));
        }
        if self.agents.contains_key(MAIN_AGENT) {
            return Err(format!("the agent name `{MAIN_AGENT}` is reserved"));
        }
        Ok(())
    }
}

/// The agent that runs the main thread when isolation is in force.
pub const MAIN_AGENT: &str = "toolhost-main";

/// The command-line flags for `o` (the control protocol carries the rest).
pub fn cli_args(o: &AgentOptions) -> Vec<String> {
    let mut a: Vec<String> = [
        "--output-format",
        "stream-json",
        "--verbose",
        "--input-format",
        "stream-json",
    ]
    .map(String::from)
    .to_vec();
    let mut flag = |k: &str, v: String| {
        a.push(k.into());
        a.push(v);
    };
    // No settings file is read unless the embedder names it: project
    // settings can hold shell-command hooks.
    flag(
        "--setting-sources",
        o.setting_sources
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(","),
    );
    if let Some(s) = &o.system_prompt {
        flag("--system-prompt", s.clone());
    }
    if let Some(s) = &o.append_system_prompt {
        flag("--append-system-prompt", s.clone());
    }
    if let Some(m) = &o.model {
        flag("--model", m.clone());
    }
    if let Some(n) = o.max_turns {
        flag("--max-turns", n.to_string());
    }
    if let Some(m) = o.permission_mode {
        flag("--permission-mode", m.as_str().into());
    }
    if let Some(t) = &o.builtin_tools {
        // Subagents are reached through the built-in `Agent` tool.
        let mut t = t.clone();
        if !o.agents.is_empty() && !t.iter().any(|n| n == "Agent") {
            t.push("Agent".into());
        }
        flag("--tools", t.join(","));
    }
    // Tools the host serves are pre-approved for the CLI's permission system
    // only where the caller said so; the host's own checks run regardless.
    if !o.allowed_tools.is_empty() {
        flag("--allowedTools", o.allowed_tools.join(","));
    }
    if !o.disallowed_tools.is_empty() {
        flag("--disallowedTools", o.disallowed_tools.join(","));
    }
    if o.can_use_tool.is_some() {
        flag("--permission-prompt-tool", "stdio".into());
    }
    if !o.servers.is_empty() {
        let servers: serde_json::Map<String, serde_json::Value> = o
            .servers
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    serde_json::json!({"type": "sdk", "name": s.name}),
                )
            })
            .collect();
        flag(
            "--mcp-config",
            serde_json::json!({ "mcpServers": servers }).to_string(),
        );
    }
    if o.isolated() {
        flag("--agent", MAIN_AGENT.into());
    }
    if o.strict_mcp_config {
        a.push("--strict-mcp-config".into());
    }
    if o.include_partial_messages {
        a.push("--include-partial-messages".into());
    }
    if !o.persist_session {
        a.push("--no-session-persistence".into());
    }
    a.extend(o.extra_args.iter().cloned());
    a
}
