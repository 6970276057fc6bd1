//! `toolhost agent`: run the `claude` CLI with a scope's tools served as an
//! in-process MCP server, and print a readable transcript (or raw JSON
//! messages). Argument handling and printing only: the session is
//! `toolhost::agent`, every tool call goes through `Core::call`.

use anyhow::Result;
use clap::Args;
use futures::StreamExt;
use std::path::PathBuf;
use std::process::ExitCode;
use toolhost::agent::{
    AgentError, AgentOptions, ContentBlock, Message, PermissionMode, RuleFile, SettingSource,
    UserBody, query,
};
use toolhost::{Core, HostConfig, Scope};

/// The SDK server name the catalog's tools are served under.
const SERVER: &str = "tools";

#[derive(Args)]
pub struct AgentArgs {
    /// What to ask the agent.
    #[arg(long, short)]
    prompt: String,
    /// Which scope's tools to serve (as `mcp__tools__NAME`).
    #[arg(long, default_value = "default", conflicts_with = "agent")]
    scope: String,
    /// Run `[[agent]]` NAME of the host config (`--config`): its tools as
    /// `mcp__tools__*`, its subagents each with their own agent's tools,
    /// under the agents' caps and quotas.
    #[arg(long, value_name = "NAME")]
    agent: Option<String>,
    /// The claude CLI (else $TOOLHOST_CLAUDE_CLI, else `claude` on PATH).
    #[arg(long)]
    cli: Option<PathBuf>,
    /// Tools the agent may use without asking (repeatable; a catalog tool
    /// name or a full CLI tool name). Default: every tool of the scope.
    #[arg(long, value_delimiter = ',')]
    allow: Vec<String>,
    /// Tools hidden from the model (repeatable, same names as --allow).
    #[arg(long, value_delimiter = ',')]
    deny: Vec<String>,
    /// Rules for the model's tool uses (TOML: `[[rule]]` tables as in the host
    /// config, or `[[deny]]` tables: tool, arg, contains, pattern, reason).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// The CLI's built-in tools to keep (e.g. Read,Grep); default none.
    #[arg(long, value_delimiter = ',')]
    builtin: Vec<String>,
    #[arg(long)]
    model: Option<String>,
    #[arg(long)]
    system_prompt: Option<String>,
    #[arg(long, default_value_t = 10)]
    max_turns: u32,
    /// default, acceptEdits, plan, bypassPermissions, dontAsk.
    #[arg(long)]
    permission_mode: Option<PermissionMode>,
    /// Settings files the CLI may load (user,project,local); default none,
    /// since a directory's settings can run shell-command hooks.
    #[arg(long, value_delimiter = ',')]
    setting_sources: Vec<SettingSourceArg>,
    /// Also load MCP servers from `.mcp.json` and settings (off by default).
    #[arg(long)]
    project_mcp: bool,
    /// More host environment variables the CLI inherits (repeatable),
    /// beyond PATH, HOME, locale, proxies and ANTHROPIC_*/CLAUDE_*.
    #[arg(long, value_delimiter = ',')]
    inherit_env: Vec<String>,
    /// Print every message as a JSON line instead of a transcript.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SettingSourceArg {
    User,
    Project,
    Local,
}

impl From<SettingSourceArg> for SettingSource {
    fn from(s: SettingSourceArg) -> SettingSource {
        match s {
            SettingSourceArg::User => SettingSource::User,
            SettingSourceArg::Project => SettingSource::Project,
            SettingSourceArg::Local => SettingSource::Local,
        }
    }
}

pub async fn run(core: Core, config: &HostConfig, a: AgentArgs) -> Result<ExitCode> {
    let mut o = match &a.agent {
        Some(name) => AgentOptions::from_config(config, name)?,
        None => AgentOptions::default().server(SERVER, Scope::new(&a.scope)),
    }
    .max_turns(a.max_turns)
    .builtin_tools(a.builtin.clone());
    if a.model.is_some() {
        o.model = a.model.clone();
    }
    o.cli = a.cli.clone();
    if a.system_prompt.is_some() {
        o.system_prompt = a.system_prompt.clone();
    }
    o.permission_mode = a.permission_mode;
    o.setting_sources = a.setting_sources.iter().map(|&s| s.into()).collect();
    o.strict_mcp_config = !a.project_mcp;
    o.inherit_env = a.inherit_env.clone();
    // A name of a tool of the served scope is that tool
    // (`mcp__tools__NAME`), whatever it looks like; any other is a
    // built-in (a capital) or another server's tool in full (`mcp__…`).
    // A typo was allowed as `mcp__tools__ecoh` in silence (found by the
    // user review), and a scope tool named `Bash` or `delete__all` was
    // taken for a built-in or a full name (found by the review of the fix).
    let (scope, known): (String, Vec<String>) = o
        .servers
        .iter()
        .find(|s| s.name == SERVER)
        .map(|s| {
            let tools = core.tools(&s.scope);
            (
                s.scope.to_string(),
                tools.iter().map(|t| t.name.to_string()).collect(),
            )
        })
        .unwrap_or_default();
    let tool_name = |n: &String| -> Result<String> {
        if known.contains(n) {
            return Ok(format!("mcp__{SERVER}__{n}"));
        }
        if n.starts_with("mcp__") || n.chars().next().is_some_and(char::is_uppercase) {
            return Ok(n.clone());
        }
        anyhow::bail!(
            "--allow/--deny `{n}`: no such tool in scope `{scope}` (its tools: {}); a built-in tool is named with a capital (`Read`), another server's in full (`mcp__SERVER__TOOL`)",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )
    };
    // Default: every tool of the served scopes (what `from_config` allowed,
    // or the one scope's server).
    if !a.allow.is_empty() {
        o.allowed_tools = a.allow.iter().map(tool_name).collect::<Result<_>>()?;
    } else if o.allowed_tools.is_empty() {
        o.allowed_tools = vec![format!("mcp__{SERVER}")];
    }
    o.disallowed_tools = a.deny.iter().map(tool_name).collect::<Result<_>>()?;
    if let Some(p) = &a.rules {
        o.rules.rules = RuleFile::load(p)?.rules();
    }
    let mut stream = std::pin::pin!(query(core, a.prompt.clone(), o));
    let mut ok = false;
    while let Some(m) = stream.next().await {
        let m = m.map_err(|e| match e {
            AgentError::CliNotFound { tried } => anyhow::anyhow!(
                "claude CLI not found (tried: {}); pass --cli PATH or set {}; in a checkout, `make claude-cli` installs the pinned version ({})",
                tried.join(", "),
                toolhost::agent::CLI_ENV,
                toolhost::agent::PINNED_CLI_VERSION
            ),
            e => e.into(),
        })?;
        if a.json {
            println!("{}", crate::cli::json_safe(&m.to_json().to_string()));
        } else {
            print_message(&m);
        }
        if let Message::Result(r) = &m {
            ok = !r.is_error;
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn short(s: &str, n: usize) -> String {
    let one_line = s.replace('\n', " ⏎ ");
    if one_line.chars().count() > n {
        format!("{}…", one_line.chars().take(n).collect::<String>())
    } else {
        one_line
    }
}

fn print_message(m: &Message) {
    print!("{}", transcript(m));
}

/// What the transcript shows of `m`, escaped for a terminal: the model's
/// text and tools' results are others' to choose (found by review: a
/// result's `ESC]52` wrote the clipboard of whoever watched).
fn transcript(m: &Message) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let who = |agent: Option<&str>| agent.map(|a| format!("[{a}] ")).unwrap_or_default();
    match m {
        Message::System(s) if s.subtype == "init" => {
            let tools: Vec<&str> = s
                .tools()
                .into_iter()
                .filter(|t| t.starts_with("mcp__"))
                .collect();
            let _ = writeln!(
                out,
                "· session started, model {}, {} tool(s): {}",
                s.data.get("model").and_then(|v| v.as_str()).unwrap_or("?"),
                tools.len(),
                tools.join(", ")
            );
        }
        Message::Assistant(am) => {
            for b in &am.message.content {
                match b {
                    ContentBlock::Text { text } => {
                        let _ = writeln!(out, "{}assistant: {text}", who(am.agent_id.as_deref()));
                    }
                    ContentBlock::ToolUse { name, input, .. } => {
                        let _ = writeln!(
                            out,
                            "{}→ {name} {}",
                            who(am.agent_id.as_deref()),
                            short(&input.to_string(), 200)
                        );
                    }
                    _ => {}
                }
            }
        }
        Message::User(u) => {
            if let UserBody::Blocks(blocks) = &u.message.content {
                for b in blocks {
                    if let ContentBlock::ToolResult {
                        content, is_error, ..
                    } = b
                    {
                        let text = ContentBlock::result_text(content);
                        let tag = if *is_error == Some(true) {
                            "✗ error"
                        } else {
                            "← result"
                        };
                        let _ = writeln!(
                            out,
                            "{}{tag}: {}",
                            who(u.agent_id.as_deref()),
                            short(&text, 300)
                        );
                    }
                }
            }
        }
        Message::Result(r) => {
            for d in &r.permission_denials {
                let _ = writeln!(
                    out,
                    "✗ denied: {}",
                    d.get("tool_name").and_then(|v| v.as_str()).unwrap_or("?")
                );
            }
            let _ = writeln!(
                out,
                "· {} after {} turn(s), {} ms, cost ${:.6}",
                if r.is_error {
                    format!("failed ({})", r.subtype)
                } else {
                    "done".into()
                },
                r.num_turns,
                r.duration_ms,
                r.total_cost_usd.unwrap_or(0.0)
            );
            if let Some(text) = &r.result {
                let _ = writeln!(out, "\n{text}");
            }
        }
        _ => {}
    }
    crate::cli::shown(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transcript_escapes_what_others_wrote() {
        let m = Message::Result(
            serde_json::from_value(serde_json::json!({
                "subtype": "success", "result": "done\r\u{1b}]52;c;ZXZpbA==\u{7}\u{1b}[2K\nnext"
            }))
            .unwrap(),
        );
        let shown = transcript(&m);
        assert!(
            !shown.chars().any(|c| c.is_control() && c != '\n'),
            "{shown:?}"
        );
        assert!(
            shown.contains("done\\u{d}\\u{1b}]52;c;ZXZpbA==") && shown.ends_with("next\n"),
            "{shown}"
        );
    }
}
