//! Hooks and permissions: Rust async closures the CLI calls back before and
//! after tool uses (`hook_callback`), declarative deny rules from config,
//! and the `can_use_tool` permission callback.
//!
//! Everything here decides; nothing here runs a tool.

use crate::policy::Rule;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[non_exhaustive]
pub enum HookEvent {
    /// Before a tool runs: may deny it, allow it, or change its arguments.
    PreToolUse,
    /// After a tool succeeded: may add context for the model.
    PostToolUse,
    /// After a tool failed.
    PostToolUseFailure,
    /// When a prompt is submitted.
    UserPromptSubmit,
    /// When the main thread is about to stop.
    Stop,
    /// When a subagent starts.
    SubagentStart,
    /// When a subagent is about to stop.
    SubagentStop,
    /// Before the conversation is compacted.
    PreCompact,
    /// A notification the CLI would show.
    Notification,
}

impl HookEvent {
    /// The CLI's name for the event (`"PreToolUse"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::PreToolUse => "PreToolUse",
            HookEvent::PostToolUse => "PostToolUse",
            HookEvent::PostToolUseFailure => "PostToolUseFailure",
            HookEvent::UserPromptSubmit => "UserPromptSubmit",
            HookEvent::Stop => "Stop",
            HookEvent::SubagentStart => "SubagentStart",
            HookEvent::SubagentStop => "SubagentStop",
            HookEvent::PreCompact => "PreCompact",
            HookEvent::Notification => "Notification",
        }
    }
}

/// What a hook is told.
#[derive(Debug, Clone)]
pub struct HookInput {
    /// `hook_event_name`, e.g. "PreToolUse".
    pub event: String,
    /// The tool, for tool events (`mcp__SERVER__TOOL` for toolhost's).
    pub tool_name: Option<String>,
    /// The tool's arguments, for tool events.
    pub tool_input: Option<Value>,
    /// The tool use's id, for tool events.
    pub tool_use_id: Option<String>,
    /// The subagent making the call (`None`: the main thread).
    pub agent_id: Option<String>,
    /// The subagent's type, i.e. its name in the options' `agents`.
    pub agent_type: Option<String>,
    /// Everything the CLI sent (tool_response, error, session_id, cwd, ...).
    pub raw: Value,
}

impl HookInput {
    pub(crate) fn from_wire(raw: Value) -> HookInput {
        let s = |k: &str| raw.get(k).and_then(Value::as_str).map(str::to_string);
        HookInput {
            event: s("hook_event_name").unwrap_or_default(),
            tool_name: s("tool_name"),
            tool_input: raw.get("tool_input").cloned(),
            tool_use_id: s("tool_use_id"),
            agent_id: s("agent_id"),
            agent_type: s("agent_type"),
            raw,
        }
    }
}

/// A hook's verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum HookOutput {
    /// No opinion: carry on as without the hook.
    Continue,
    /// PreToolUse: refuse the call; the model sees `reason`.
    Deny {
        /// Why, for the model.
        reason: String,
    },
    /// PreToolUse: allow without asking for permission.
    Allow {
        /// Why, if worth saying.
        reason: Option<String>,
    },
    /// PreToolUse: allow, with these arguments instead.
    AllowWith {
        /// The arguments the tool gets.
        input: Value,
    },
    /// Add context for the model (PostToolUse and others).
    Context {
        /// The context.
        text: String,
    },
    /// Stop the session after this.
    Stop {
        /// Why, shown as the stop reason.
        reason: String,
    },
    /// A reply in the CLI's own hook-output shape, sent as is.
    Raw(Value),
}

impl HookOutput {
    /// The `hook_callback` reply for `event`.
    pub(crate) fn to_wire(&self, event: &str) -> Value {
        match self {
            HookOutput::Continue => json!({}),
            HookOutput::Deny { reason } => json!({"hookSpecificOutput": {
                "hookEventName": event, "permissionDecision": "deny",
                "permissionDecisionReason": reason}}),
            HookOutput::Allow { reason } => {
                let mut o = json!({"hookEventName": event, "permissionDecision": "allow"});
                if let Some(r) = reason {
                    o["permissionDecisionReason"] = json!(r);
                }
                json!({ "hookSpecificOutput": o })
            }
            HookOutput::AllowWith { input } => json!({"hookSpecificOutput": {
                "hookEventName": event, "permissionDecision": "allow", "updatedInput": input}}),
            HookOutput::Context { text } => json!({"hookSpecificOutput": {
                "hookEventName": event, "additionalContext": text}}),
            HookOutput::Stop { reason } => json!({"continue": false, "stopReason": reason}),
            HookOutput::Raw(v) => v.clone(),
        }
    }
}

/// A hook callback.
pub type HookFn = Arc<dyn Fn(HookInput) -> BoxFuture<'static, HookOutput> + Send + Sync>;

/// Wrap an async closure as a [`HookFn`].
pub fn hook<F, Fut>(f: F) -> HookFn
where
    F: Fn(HookInput) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HookOutput> + Send + 'static,
{
    Arc::new(move |i| Box::pin(f(i)))
}

/// Hooks for one event and tool matcher.
#[derive(Clone)]
pub struct HookMatcher {
    /// When the hooks run.
    pub event: HookEvent,
    /// Tool name or the CLI's matcher pattern (e.g. "mcp__.*"); `None`: all.
    pub matcher: Option<String>,
    /// The callbacks, called in order.
    pub hooks: Vec<HookFn>,
    /// How long the CLI waits for each (its default when `None`).
    pub timeout: Option<Duration>,
}

/// Agent rules as a file: `[[rule]]` tables, the host config's rule
/// language (`effect`, `tool`, `arg`, `contains`, `pattern`, `reason`;
/// `scope` does not apply to an agent's own tool uses), and `[[deny]]` as
/// shorthand for a rule with `effect = "deny"`. Checked in file order,
/// `[[rule]]`s first; the first match decides.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// `[[rule]]` tables.
    #[serde(default)]
    rule: Vec<Rule>,
    /// `[[deny]]` tables.
    #[serde(default)]
    deny: Vec<DenyTable>,
}

/// `[[deny]]`: a rule whose effect is deny.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DenyTable {
    tool: String,
    #[serde(default)]
    arg: Option<String>,
    #[serde(default)]
    contains: Option<String>,
    #[serde(default)]
    pattern: Option<String>,
    reason: String,
}

impl RuleFile {
    /// Read and parse a rule file.
    pub fn load(path: &std::path::Path) -> Result<RuleFile, super::AgentError> {
        let failed = |message: String| super::AgentError::RuleFile {
            path: path.to_path_buf(),
            message,
        };
        let text = crate::files::read_trusted_text(path, crate::files::MAX_CONFIG_BYTES)
            .map_err(|e| failed(e.to_string()))?;
        let file: RuleFile = toml::from_str(&text).map_err(|e| failed(e.to_string()))?;
        if let Some(r) = file.rule.iter().find(|r| r.scope.is_some()) {
            return Err(failed(format!(
                "the rule for `{}` has a `scope`: agent rules apply to the agent's own tool uses; leave it out",
                r.tool
            )));
        }
        Ok(file)
    }

    /// The rules, in the order they are checked.
    pub fn rules(&self) -> Vec<Rule> {
        let deny = self.deny.iter().map(|d| {
            let mut r = Rule::deny(d.tool.clone(), d.reason.clone());
            r.arg = d.arg.clone();
            r.contains = d.contains.clone();
            r.pattern = d.pattern.clone();
            r
        });
        self.rule.iter().cloned().chain(deny).collect()
    }
}

/// What `can_use_tool` is asked.
#[derive(Debug, Clone)]
pub struct PermissionRequest {
    /// The tool, as the model names it.
    pub tool_name: String,
    /// Its arguments.
    pub input: Value,
    /// The tool use's id.
    pub tool_use_id: Option<String>,
    /// The subagent asking (`None`: the main thread).
    pub agent_id: Option<String>,
    /// The subagent's type when the session knows it.
    pub agent_type: Option<String>,
    /// Everything the CLI sent (permission_suggestions, mcp_server, ...).
    pub raw: Value,
}

/// The answer to `can_use_tool`.
#[derive(Debug, Clone, PartialEq)]
pub enum Permission {
    /// Allow, with the arguments as they are.
    Allow,
    /// Allow, running the tool with this input instead.
    AllowWith(Value),
    /// Refuse; the model sees `message`. With `interrupt`, the turn ends.
    Deny {
        /// Why, for the model.
        message: String,
        /// End the turn too.
        interrupt: bool,
    },
}

impl Permission {
    /// Refuse, without ending the turn.
    pub fn deny(message: impl Into<String>) -> Permission {
        Permission::Deny {
            message: message.into(),
            interrupt: false,
        }
    }
    /// The wire reply; `input` is the original input, sent back on a plain allow.
    pub(crate) fn to_wire(&self, input: &Value) -> Value {
        match self {
            Permission::Allow => json!({"behavior": "allow", "updatedInput": input}),
            Permission::AllowWith(v) => json!({"behavior": "allow", "updatedInput": v}),
            Permission::Deny { message, interrupt } => {
                json!({"behavior": "deny", "message": message, "interrupt": interrupt})
            }
        }
    }
}

/// The permission callback.
pub type CanUseTool =
    Arc<dyn Fn(PermissionRequest) -> BoxFuture<'static, Permission> + Send + Sync>;

/// Wrap an async closure as a [`CanUseTool`].
pub fn can_use_tool<F, Fut>(f: F) -> CanUseTool
where
    F: Fn(PermissionRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Permission> + Send + 'static,
{
    Arc::new(move |r| Box::pin(f(r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The review of the fix's case: a rule file any user may write was
    /// read (whoever rewrote it took its deny rules out). Refused, and
    /// read once private.
    #[test]
    fn a_rule_file_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("rules.toml");
        std::fs::write(&p, "[[rule]]\neffect = \"deny\"\ntool = \"Bash\"\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = RuleFile::load(&p).expect_err("refused").to_string();
        assert!(e.contains("may be written by every user (mode 666)"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(RuleFile::load(&p).unwrap().rule.len(), 1);
    }

    #[test]
    fn rule_files_speak_the_host_policy_language() {
        let r: RuleFile = toml::from_str(
            r#"
            [[rule]]
            effect = "allow"
            tool = "mcp__t__fetch"
            arg = "/url"
            pattern = "https://docs.example.com/*"
            [[deny]]
            tool = "mcp__*__fetch"
            arg = "/url"
            contains = "169.254"
            reason = "no metadata service"
            [[deny]]
            tool = "mcp__*__write_*"
            reason = "read-only"
            "#,
        )
        .unwrap();
        let p = crate::policy::Policy { rules: r.rules() };
        let decide = |tool: &str, input: Value| p.decide("", tool, &input);
        use crate::policy::Decision::{Allow, Deny};
        assert_eq!(
            decide(
                "mcp__t__fetch",
                json!({"url": "https://docs.example.com/a"})
            ),
            Allow
        );
        assert_eq!(
            decide("mcp__t__fetch", json!({"url": "http://169.254.169.254/"})),
            Deny("no metadata service".into())
        );
        assert_eq!(
            decide("mcp__t__write_file", json!({})),
            Deny("read-only".into())
        );
        // An allow rule makes the rules an allow list.
        assert!(matches!(decide("Bash", json!({})), Deny(_)));
        assert!(toml::from_str::<RuleFile>("[[deny]]\ntool='x'\nreason='r'\nbogus=1").is_err());
    }

    #[test]
    fn wire_shapes() {
        assert_eq!(
            Permission::deny("no").to_wire(&json!({})),
            json!({"behavior": "deny", "message": "no", "interrupt": false})
        );
        assert_eq!(
            Permission::Allow.to_wire(&json!({"a": 1})),
            json!({"behavior": "allow", "updatedInput": {"a": 1}})
        );
        assert_eq!(
            HookOutput::Deny { reason: "r".into() }.to_wire("PreToolUse")["hookSpecificOutput"]["permissionDecision"],
            "deny"
        );
    }
}
