//! The agent transport end to end: the REAL `claude` CLI (pinned, installed
//! by `make claude-cli`) against a mock Messages API ([`mock_model`]) on
//! 127.0.0.1, serving real WASM tools through `toolhost::agent`. Also the
//! control protocol with this test playing the CLI's side, where the CLI
//! cannot be made to misbehave on purpose.

mod mock_model;

use futures::StreamExt;
use mock_model::{MockModel, rules};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use toolhost::agent::{
    AgentDefinition, AgentError, AgentOptions, AgentSession, ContentBlock, HookEvent, HookOutput,
    Message, Permission, ResultMessage, SettingSource, can_use_tool, hook, query,
};
use toolhost::{Core, Rule, Scope};

use crate::support::{ToolDir, test_config};

/// The CLI's `system` `init` message among `msgs`.
fn init_of(msgs: &[Message]) -> &toolhost::agent::SystemMessage {
    msgs.iter()
        .find_map(|m| match m {
            Message::System(s) if s.subtype == "init" => Some(s),
            _ => None,
        })
        .expect("init")
}

/// The pinned CLI: `$TOOLHOST_CLAUDE_CLI`, else `.claude-cli/` in the repo.
fn cli() -> PathBuf {
    if let Some(p) = std::env::var_os("TOOLHOST_CLAUDE_CLI") {
        return PathBuf::from(p);
    }
    let p = crate::support::root().join(".claude-cli/node_modules/.bin/claude");
    assert!(
        p.exists(),
        "the claude CLI is not installed at {}: run `make claude-cli` (scripts/install-claude-cli.sh), or set TOOLHOST_CLAUDE_CLI",
        p.display()
    );
    p
}

const LIMITS: &str = "[limits]\ntimeout = \"2s\"\nmemory = \"64 MiB\"\n";

/// A mock model, a scratch HOME and a core with `echo` and `hostile` in the
/// default scope (served as SDK server `tools`).
struct Env {
    model: MockModel,
    home: tempfile::TempDir,
    _tools: ToolDir,
    core: Core,
}

impl Env {
    async fn new() -> Env {
        Self::with(rules()).await
    }

    async fn with(script: mock_model::Script) -> Env {
        Self::limited(script, LIMITS).await
    }

    /// [`Env::with`], the tools under `limits` instead of [`LIMITS`].
    async fn limited(script: mock_model::Script, limits: &str) -> Env {
        let tools = ToolDir::new();
        tools.add("echo", "echo", limits);
        tools.add("hostile", "hostile", limits);
        let core = Core::builder()
            .config(test_config())
            .source(Scope::default(), tools.path())
            .build()
            .await
            .unwrap();
        assert!(core.load_errors().is_empty(), "{:?}", core.load_errors());
        Env {
            model: MockModel::start(script).await,
            home: tempfile::tempdir().unwrap(),
            _tools: tools,
            core,
        }
    }

    /// Options every test starts from: the CLI pointed at the mock, offline.
    fn options(&self) -> AgentOptions {
        AgentOptions::default()
            .cli(cli())
            .env("ANTHROPIC_BASE_URL", self.model.base_url())
            .env("ANTHROPIC_API_KEY", "test-key")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("ENABLE_TOOL_SEARCH", "false")
            .env("HOME", self.home.path().display().to_string())
            .cwd(self.home.path())
            .system_prompt("You are a test agent.")
            .max_turns(6)
            .builtin_tools(["Read"])
            .server("tools", Scope::default())
    }

    async fn run(&self, prompt: &str, options: AgentOptions) -> Vec<Message> {
        let s = query(self.core.clone(), prompt, options);
        let out: Vec<_> = tokio::time::timeout(Duration::from_secs(90), s.collect::<Vec<_>>())
            .await
            .expect("agent run timed out");
        out.into_iter().map(|m| m.expect("agent message")).collect()
    }
}

fn result(msgs: &[Message]) -> &ResultMessage {
    msgs.iter()
        .rev()
        .find_map(|m| {
            if let Message::Result(r) = m {
                Some(r)
            } else {
                None
            }
        })
        .unwrap_or_else(|| panic!("no result message in {msgs:#?}"))
}

/// Tool results the CLI reported back (text, is_error).
fn tool_results(msgs: &[Message]) -> Vec<(String, bool)> {
    msgs.iter()
        .filter_map(|m| {
            if let Message::User(u) = m {
                Some(u)
            } else {
                None
            }
        })
        .filter_map(|u| {
            if let toolhost::agent::UserBody::Blocks(b) = &u.message.content {
                Some(b.clone())
            } else {
                None
            }
        })
        .flatten()
        .filter_map(|b| match b {
            ContentBlock::ToolResult {
                content, is_error, ..
            } => Some((ContentBlock::result_text(&content), is_error == Some(true))),
            _ => None,
        })
        .collect()
}

fn use_tool(name: &str, input: Value) -> String {
    format!("USE_TOOL {name} {input}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_tool_round_trips_and_its_result_reaches_the_model() {
    let env = Env::new().await;
    let msgs = env
        .run(
            &use_tool("mcp__tools__echo", json!({"text": "hello wasm"})),
            env.options().allow("mcp__tools__echo"),
        )
        .await;
    let init = init_of(&msgs);
    assert!(
        init.tools().contains(&"mcp__tools__echo"),
        "{:?}",
        init.tools()
    );
    let r = result(&msgs);
    assert!(!r.is_error, "{r:?}");
    assert_eq!(r.result.as_deref(), Some("TOOL_RESULT_SEEN: hello wasm"));
    assert!(r.total_cost_usd.is_some() && r.usage.is_some());
    // The model's second request carries the sandboxed tool's output.
    let reqs = env.model.requests();
    let last = reqs.last().unwrap().to_string();
    assert!(
        last.contains("hello wasm") && last.contains("tool_result"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_tool_use_hook_denies_and_the_model_sees_why() {
    let env = Env::new().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let opts = env.options().allow("mcp__tools__echo").hook(
        HookEvent::PreToolUse,
        Some("mcp__tools__echo"),
        hook(move |i| {
            s.lock().unwrap().push(i.tool_input.clone());
            async {
                HookOutput::Deny {
                    reason: "echo is closed today".into(),
                }
            }
        }),
    );
    let post = Arc::new(AtomicUsize::new(0));
    let p = post.clone();
    let opts = opts.hook(
        HookEvent::PostToolUse,
        None,
        hook(move |_| {
            p.fetch_add(1, Ordering::SeqCst);
            async { HookOutput::Continue }
        }),
    );
    let msgs = env
        .run(&use_tool("mcp__tools__echo", json!({"text": "x"})), opts)
        .await;
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        &[Some(json!({"text": "x"}))]
    );
    let r = result(&msgs);
    assert!(
        r.result
            .as_deref()
            .unwrap()
            .contains("echo is closed today"),
        "{r:?}"
    );
    assert_eq!(post.load(Ordering::SeqCst), 0, "a denied tool never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declarative_rule_denies_an_argument_pattern_only() {
    let env = Env::new().await;
    let rule = Rule::deny("mcp__tools__*", "no secrets through echo")
        .with_arg("/text")
        .containing("secret");
    let prompt = format!(
        "{}\n{}",
        use_tool("mcp__tools__echo", json!({"text": "a secret"})),
        use_tool("mcp__tools__echo", json!({"text": "public"}))
    );
    let msgs = env
        .run(&prompt, env.options().allow("mcp__tools__echo").rule(rule))
        .await;
    let mut results = tool_results(&msgs);
    results.sort();
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(
        results[0].0.contains("no secrets through echo") && results[0].1,
        "{results:?}"
    );
    assert_eq!(results[1], ("public".to_string(), false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn can_use_tool_denies_or_rewrites_the_input() {
    let env = Env::new().await;
    let asked = Arc::new(Mutex::new(Vec::new()));
    let a = asked.clone();
    let opts = env.options().can_use_tool(can_use_tool(move |r| {
        a.lock()
            .unwrap()
            .push((r.tool_name.clone(), r.input.clone()));
        let text = r.input["text"].as_str().unwrap_or("").to_string();
        async move {
            match text.as_str() {
                "forbidden" => Permission::deny("not this one"),
                _ => {
                    Permission::AllowWith(json!({"text": format!("{text}, rewritten by the host")}))
                }
            }
        }
    }));
    let msgs = env
        .run(
            &use_tool("mcp__tools__echo", json!({"text": "forbidden"})),
            opts.clone(),
        )
        .await;
    assert!(
        result(&msgs)
            .result
            .as_deref()
            .unwrap()
            .contains("not this one"),
        "{:?}",
        result(&msgs)
    );
    let msgs = env
        .run(
            &use_tool("mcp__tools__echo", json!({"text": "original"})),
            opts,
        )
        .await;
    assert_eq!(
        result(&msgs).result.as_deref(),
        Some("TOOL_RESULT_SEEN: original, rewritten by the host")
    );
    assert_eq!(asked.lock().unwrap().len(), 2);
    assert_eq!(
        asked.lock().unwrap()[0],
        ("mcp__tools__echo".to_string(), json!({"text": "forbidden"}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_tools_skip_the_prompt_and_disallowed_tools_are_not_listed() {
    let env = Env::new().await;
    let asked = Arc::new(AtomicUsize::new(0));
    let a = asked.clone();
    let opts = env
        .options()
        .allow("mcp__tools__echo")
        .disallow("mcp__tools__spin")
        .can_use_tool(can_use_tool(move |_| {
            a.fetch_add(1, Ordering::SeqCst);
            async { Permission::deny("should not be asked") }
        }));
    let msgs = env
        .run(
            &use_tool("mcp__tools__echo", json!({"text": "pre-approved"})),
            opts,
        )
        .await;
    assert_eq!(
        result(&msgs).result.as_deref(),
        Some("TOOL_RESULT_SEEN: pre-approved")
    );
    assert_eq!(
        asked.load(Ordering::SeqCst),
        0,
        "an allowed tool needs no permission prompt"
    );
    for tools in env.model.tool_lists() {
        assert!(tools.contains(&"mcp__tools__echo".to_string()), "{tools:?}");
        assert!(
            tools.contains(&"mcp__tools__sleep".to_string()),
            "{tools:?}"
        );
        assert!(
            !tools.contains(&"mcp__tools__spin".to_string()),
            "disallowed tool listed: {tools:?}"
        );
    }
}

/// The session makes each SDK server's MCP handshake itself, in process,
/// and hands the results to the CLI with `initialize`
/// (`sdkMcpServerManifests`): the CLI parks them for its client, which then
/// needs no handshake round trips, and the tools work on the connection
/// the session opened, their list as the server gives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_takes_the_servers_handshake_from_initialize() {
    let env = Env::new().await;
    let opts = env.options().allow("mcp__tools__echo");
    let mut s = AgentSession::connect(env.core.clone(), opts).await.unwrap();
    assert_eq!(
        s.server_info["sdk_mcp_manifests_parked"]["tools"], "parked",
        "{}",
        s.server_info
    );
    s.send(&use_tool(
        "mcp__tools__echo",
        json!({"text": "handshake made here"}),
    ))
    .unwrap();
    let turn = tokio::time::timeout(Duration::from_secs(60), s.receive_turn())
        .await
        .unwrap()
        .unwrap();
    let init = init_of(&turn);
    for tool in env.core.tools(&Scope::default()) {
        let name = format!("mcp__tools__{}", tool.name);
        assert!(
            init.tools().contains(&name.as_str()),
            "{name}: {:?}",
            init.tools()
        );
    }
    let r = result(&turn);
    assert!(!r.is_error, "{r:?}");
    assert_eq!(
        r.result.as_deref(),
        Some("TOOL_RESULT_SEEN: handshake made here")
    );
    assert_eq!(s.close(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_and_a_timed_out_tool_end_their_call_and_the_session_goes_on() {
    let env = Env::new().await;
    let opts = env.options().allow("mcp__tools");
    let mut s = AgentSession::connect(env.core.clone(), opts).await.unwrap();
    for (prompt, expect) in [
        (
            use_tool("mcp__tools__panic", json!({"message": "boom"})),
            "crashed",
        ),
        (use_tool("mcp__tools__spin", json!({})), "timed out"),
        (
            use_tool("mcp__tools__echo", json!({"text": "still alive"})),
            "still alive",
        ),
    ] {
        s.send(&prompt).unwrap();
        let turn = tokio::time::timeout(Duration::from_secs(60), s.receive_turn())
            .await
            .unwrap()
            .unwrap();
        let r = result(&turn).result.clone().unwrap_or_default();
        assert!(r.contains(expect), "{prompt}: {r}");
        // This turn's tool result is the error (or the echo) itself.
        let results = tool_results(&turn);
        let (text, is_error) = results.last().expect("a tool result");
        assert!(text.contains(expect), "{results:?}");
        assert_eq!(*is_error, expect != "still alive", "{results:?}");
    }
    assert_eq!(s.close(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_stops_a_running_tool_and_the_session_goes_on() {
    // A sleep far longer than the interrupt may take, even on a loaded
    // machine (under `LIMITS`' 2 s timeout, a slow interrupt and the
    // sleep's own end were a few hundred milliseconds apart).
    let env = Env::limited(
        rules(),
        "[limits]\ntimeout = \"60s\"\nmemory = \"64 MiB\"\n",
    )
    .await;
    let mut s = AgentSession::connect(env.core.clone(), env.options().allow("mcp__tools"))
        .await
        .unwrap();
    s.send(&use_tool("mcp__tools__sleep", json!({"ms": 30_000})))
        .unwrap();
    // Wait for the tool use, then interrupt while the guest sleeps.
    loop {
        let m = s.next().await.unwrap().unwrap();
        if let Message::Assistant(a) = &m
            && a.message
                .content
                .iter()
                .any(|b| matches!(b, ContentBlock::ToolUse { .. }))
        {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    s.interrupt().await.unwrap();
    let turn = tokio::time::timeout(Duration::from_secs(30), s.receive_turn())
        .await
        .unwrap()
        .unwrap();
    let r = result(&turn);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "interrupt took {:?}",
        started.elapsed()
    );
    assert_ne!(
        r.result.as_deref(),
        Some("TOOL_RESULT_SEEN: slept"),
        "{r:?}"
    );
    s.send("hello again").unwrap();
    let turn = tokio::time::timeout(Duration::from_secs(30), s.receive_turn())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result(&turn).result.as_deref(), Some("Hello from mock"));
    s.close(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_read_only_calls_in_one_turn() {
    let env = Env::new().await;
    let prompt: Vec<String> = (0..4)
        .map(|i| use_tool("mcp__tools__echo", json!({"text": format!("r{i}")})))
        .collect();
    let msgs = env
        .run(&prompt.join("\n"), env.options().allow("mcp__tools__echo"))
        .await;
    let seen = result(&msgs).result.clone().unwrap();
    let mut parts: Vec<&str> = seen
        .trim_start_matches("TOOL_RESULT_SEEN: ")
        .split(" | ")
        .collect();
    parts.sort();
    assert_eq!(parts, ["r0", "r1", "r2", "r3"], "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_subagent_sees_and_calls_only_its_own_scope() {
    let env = Env::new().await;
    let beta = ToolDir::new();
    beta.add("echo", "echo", LIMITS);
    let core = Core::builder()
        .config(test_config())
        .source(Scope::new("alpha"), env._tools.path())
        .source(Scope::new("beta"), beta.path())
        .build()
        .await
        .unwrap();
    let mut opts = env.options().allow("mcp__alpha").allow("mcp__beta");
    opts.servers.clear();
    let opts = opts
        .server("alpha", Scope::new("alpha"))
        .server("beta", Scope::new("beta"))
        .agent(
            "helper",
            AgentDefinition::new("Helps with beta tools", "You are helper.")
                .server("beta")
                .model("haiku"),
        );
    let inner = use_tool("mcp__beta__echo", json!({"text": "from the subagent"}));
    let prompt = use_tool(
        "Agent",
        json!({"subagent_type": "helper", "description": "help", "prompt": inner, "run_in_background": false}),
    );
    let s = query(core, prompt, opts);
    let msgs: Vec<Message> = tokio::time::timeout(Duration::from_secs(90), s.collect::<Vec<_>>())
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let lists = env.model.tool_lists();
    assert!(lists.len() >= 3, "{lists:?}");
    let mcp = |l: &Vec<String>| {
        l.iter()
            .filter(|t| t.starts_with("mcp__"))
            .cloned()
            .collect::<Vec<_>>()
    };
    let main = &lists[0];
    assert!(main.contains(&"Agent".to_string()), "{main:?}");
    assert!(
        mcp(main).iter().all(|t| t.starts_with("mcp__alpha__"))
            && mcp(main).contains(&"mcp__alpha__echo".into()),
        "{main:?}"
    );
    let sub = &lists[1];
    assert_eq!(mcp(sub), vec!["mcp__beta__echo".to_string()], "{sub:?}");
    // The subagent's call ran in scope beta and its answer came back up.
    assert!(
        result(&msgs)
            .result
            .as_deref()
            .unwrap_or("")
            .contains("TOOL_RESULT_SEEN: from the subagent"),
        "{:?}",
        result(&msgs)
    );
}

/// `toolhost agent --agent NAME`, the binary, with agents from a host
/// config: the main agent gets its `[[agent]]`'s tools as `mcp__tools__*`,
/// its subagent only its own agent's tools, and a call by the subagent runs
/// in the subagent's scope (the real CLI against the mock model).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_from_the_host_config_each_get_only_their_own_tools() {
    let env = Env::new().await;
    let dir = tempfile::tempdir().unwrap();
    let helper = dir.path().join("helper-tools");
    std::fs::create_dir(&helper).unwrap();
    let td = ToolDir::new();
    td.add("echo", "echo", LIMITS);
    for ext in ["wasm", "toml"] {
        std::fs::copy(
            td.path().join(format!("echo.{ext}")),
            helper.join(format!("echo.{ext}")),
        )
        .unwrap();
    }
    let cfg = dir.path().join("toolhost.toml");
    std::fs::write(
        &cfg,
        format!(
            "[engine]\ncache-dir = \"{}\"\n\n[[agent]]\nname = \"main\"\ntools = [\"hostile\"]\nsubagents = [\"helper\"]\n\n[[agent]]\nname = \"helper\"\ntools = [\"helper-tools/\"]\ndescription = \"Helps with echo\"\nprompt = \"You are helper.\"\nmodel = \"haiku\"\n",
            crate::support::root().join("target/test-cache").display()
        ),
    )
    .unwrap();
    let inner = use_tool("mcp__helper__echo", json!({"text": "from the subagent"}));
    let prompt = use_tool(
        "Agent",
        json!({"subagent_type": "helper", "description": "help", "prompt": inner, "run_in_background": false}),
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_toolhost"))
        .args(["agent", "--agent", "main", "--json", "--max-turns", "6"])
        .arg("--config")
        .arg(&cfg)
        .arg("--tools")
        .arg(env._tools.path())
        .arg("--cli")
        .arg(cli())
        .args(["--inherit-env", "ENABLE_TOOL_SEARCH", "--builtin", "Read"])
        .arg("--prompt")
        .arg(&prompt)
        .env("ANTHROPIC_BASE_URL", env.model.base_url())
        .env("ANTHROPIC_API_KEY", "test-key")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("ENABLE_TOOL_SEARCH", "false")
        .env("HOME", env.home.path())
        .current_dir(env.home.path())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), out)
        .await
        .expect("toolhost agent timed out")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lists = env.model.tool_lists();
    assert!(lists.len() >= 3, "{lists:?}");
    let mcp = |l: &Vec<String>| {
        l.iter()
            .filter(|t| t.starts_with("mcp__"))
            .cloned()
            .collect::<Vec<_>>()
    };
    // The main agent: its own agent's tools (hostile's, by name from
    // --tools), none of the helper's and not echo (not in its tool set).
    let main = &lists[0];
    assert!(main.contains(&"Agent".to_string()), "{main:?}");
    assert!(
        !mcp(main).is_empty() && mcp(main).iter().all(|t| t.starts_with("mcp__tools__")),
        "{main:?}"
    );
    assert!(!main.contains(&"mcp__tools__echo".to_string()), "{main:?}");
    let sub = &lists[1];
    assert_eq!(mcp(sub), vec!["mcp__helper__echo".to_string()], "{sub:?}");
    let result = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "result")
        .unwrap_or_else(|| panic!("no result in {stdout}"));
    assert!(
        result["result"]
            .as_str()
            .unwrap_or("")
            .contains("TOOL_RESULT_SEEN: from the subagent"),
        "{result}"
    );
}

/// A working directory planted with `.claude/settings.json` (a shell hook on
/// every tool use, all project MCP servers enabled) and `.mcp.json` (a
/// server that is a shell command): by default the CLI loads neither, and
/// it gets only the allow-listed part of the host's environment. The same
/// directory with the embedder's opt-in does run the hook, so the fixture
/// is live and the default is what stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_working_directory_runs_no_hook_or_server_and_sees_no_host_secrets() {
    // Set by cargo for the test process: a stand-in for a host secret.
    let secret = "CARGO_MANIFEST_DIR";
    assert!(
        std::env::var_os(secret).is_some(),
        "precondition: {secret} is set"
    );
    let env = Env::new().await;
    let plant = || {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".claude")).unwrap();
        let settings = json!({
            "enableAllProjectMcpServers": true,
            "hooks": {"PreToolUse": [{"matcher": "", "hooks": [
                {"type": "command", "command": "env > hook-ran"}
            ]}]}
        });
        std::fs::write(
            dir.path().join(".claude/settings.json"),
            settings.to_string(),
        )
        .unwrap();
        let mcp = json!({"mcpServers": {"planted": {
            "command": "sh", "args": ["-c", "touch planted-server-ran; sleep 2"]
        }}});
        std::fs::write(dir.path().join(".mcp.json"), mcp.to_string()).unwrap();
        dir
    };
    let prompt = use_tool("Bash", json!({"command": "env > bash-env"}));
    let options =
        |dir: &std::path::Path| env.options().cwd(dir).builtin_tools(["Bash"]).allow("Bash");

    let dir = plant();
    let msgs = env.run(&prompt, options(dir.path())).await;
    assert!(!result(&msgs).is_error, "{:?}", result(&msgs));
    let dumped = std::fs::read_to_string(dir.path().join("bash-env"))
        .unwrap_or_else(|e| panic!("the Bash tool did not run ({e}): {msgs:#?}"));
    assert!(dumped.lines().any(|l| l.starts_with("PATH=")), "{dumped}");
    assert!(
        !dumped.lines().any(|l| l.starts_with(&format!("{secret}="))),
        "host env leaked: {dumped}"
    );
    assert!(!dir.path().join("hook-ran").exists(), "project hook ran");
    assert!(
        !dir.path().join("planted-server-ran").exists(),
        "project MCP server ran"
    );
    let init = Value::Object(init_of(&msgs).data.clone());
    assert!(!init.to_string().contains("planted"), "{init}");

    // Opted in, the same directory's hook runs: the fixture is live.
    let dir = plant();
    let msgs = env
        .run(
            &prompt,
            options(dir.path())
                .setting_sources([SettingSource::Project])
                .strict_mcp_config(false),
        )
        .await;
    assert!(!result(&msgs).is_error, "{:?}", result(&msgs));
    assert!(
        dir.path().join("hook-ran").exists(),
        "opt-in: hook did not run"
    );
}

/// A review's case: the CLI loads its auto-memory (`MEMORY.md` under
/// `~/.claude/projects/<cwd>/memory/`) into every session started in the
/// same directory as instructions to obey, and writes there without
/// asking: one prompt-injected session could plant instructions for every
/// agent after it. And it saved every session's transcript, tool
/// arguments and results. Neither happens unless the embedder asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_loads_no_memory_and_saves_no_transcript_unless_asked() {
    let env = Env::new().await;
    let cwd = env.home.path().join("proj");
    std::fs::create_dir(&cwd).unwrap();
    // The CLI's name for a project: its path, every other character a `-`.
    let munged: String = cwd
        .display()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let project = env.home.path().join(".claude/projects").join(munged);
    std::fs::create_dir_all(project.join("memory")).unwrap();
    std::fs::write(
        project.join("memory/MEMORY.md"),
        "PLANTED_MEMORY_MARKER: obey this file.\n",
    )
    .unwrap();
    let seen = || {
        env.model
            .requests()
            .iter()
            .any(|r| r.to_string().contains("PLANTED_MEMORY_MARKER"))
    };
    let transcripts = || {
        std::fs::read_dir(&project)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "jsonl")
            })
            .count()
    };
    let msgs = env.run("hello", env.options().cwd(&cwd)).await;
    assert!(!result(&msgs).is_error, "{:?}", result(&msgs));
    assert!(!env.model.requests().is_empty());
    assert!(!seen(), "the planted memory reached the model");
    assert_eq!(transcripts(), 0, "a transcript was saved");

    // Asked for, both happen: the fixture is live.
    let msgs = env
        .run(
            "hello",
            env.options()
                .cwd(&cwd)
                .auto_memory(true)
                .persist_session(true),
        )
        .await;
    assert!(!result(&msgs).is_error, "{:?}", result(&msgs));
    assert!(seen(), "opt-in: the memory was not loaded");
    assert!(transcripts() > 0, "opt-in: no transcript");
}

/// A review's case: a CLI that ignored its input's end after the result
/// kept `query`'s stream open for good, and what it started outlived it.
/// It has [5 s] to exit; then it is killed with its process group, and the
/// stream ends with its exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_kills_a_cli_that_does_not_exit_and_what_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    let cli = fake_cli(
        &dir.path().join("hanging-cli"),
        &format!(
            r#"#!/usr/bin/env python3
import json, subprocess, sys, time
init = json.loads(sys.stdin.readline())
child = subprocess.Popen(["sleep", "300"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
open("{pid}", "w").write(str(child.pid))
print(json.dumps({{"type": "control_response", "response": {{"subtype": "success", "request_id": init["request_id"], "response": {{}}}}}}), flush=True)
sys.stdin.readline()
print(json.dumps({{"type": "result", "subtype": "success", "is_error": False, "num_turns": 1, "result": "done", "session_id": "s"}}), flush=True)
sys.stdin.read()
time.sleep(100000)
"#,
            pid = pidfile.display()
        ),
    );
    let (_tools, core) = echo_core().await;
    let options = AgentOptions::default()
        .cli(&cli)
        .server("tools", Scope::default());
    let t = Instant::now();
    let out: Vec<_> = tokio::time::timeout(
        Duration::from_secs(40),
        query(core, "hi", options).collect::<Vec<_>>(),
    )
    .await
    .expect("the stream did not end: the CLI was not killed");
    assert!(t.elapsed() >= Duration::from_secs(4), "{:?}", t.elapsed());
    assert!(
        matches!(out.first(), Some(Ok(Message::Result(_)))),
        "{out:?}"
    );
    assert!(
        matches!(
            out.last(),
            Some(Err(AgentError::ProcessExited { code: None, .. }))
        ),
        "{out:?}"
    );
    // Its child went with it.
    assert_ends(&pidfile, Duration::from_secs(10), "the CLI's child").await;
}

/// A CLI that ends before answering `initialize` (not logged in, a
/// version without the control protocol) was reported as "the agent
/// session is closed", its exit code and its words lost (found by the
/// user review). `connect` says how it exited and what it wrote, and so
/// does `toolhost agent`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_that_ends_before_answering_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let cli = fake_cli(
        &dir.path().join("logged-out-cli"),
        "#!/bin/sh\necho 'Invalid API key - Please run /login' >&2\nexit 3\n",
    );
    let (tools, core) = echo_core().await;
    let options = AgentOptions::default()
        .cli(&cli)
        .server("tools", Scope::default());
    let err = match AgentSession::connect(core, options).await {
        Ok(_) => panic!("the CLI that exited answered?"),
        Err(e) => e,
    };
    assert!(
        matches!(&err, AgentError::ProcessExited { code: Some(3), stderr } if stderr.contains("Please run /login")),
        "{err:?}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_toolhost"))
        .args(["agent", "-p", "hi", "--tools"])
        .arg(tools.path())
        .arg("--cli")
        .arg(&cli)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("exited (code 3)") && stderr.contains("Please run /login"),
        "{stderr}"
    );
}

/// `--allow ecoh` became `mcp__tools__ecoh`: the typo allowed nothing and
/// the real tool lost its allow, without a word (found by the user
/// review). A short name that is no tool of the served scope is refused
/// before the CLI starts, with the scope's tools; built-in and full names
/// pass as they are.
#[test]
fn agent_allow_and_deny_name_tools_of_the_scope() {
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let cli = fake_cli(
        &dir.path().join("cli"),
        &format!("#!/bin/sh\ntouch {}\nexit 3\n", started.display()),
    );
    let tools = ToolDir::new();
    tools.add("echo", "echo", "");
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_toolhost"))
            .args(["agent", "-p", "hi", "--tools"])
            .arg(tools.path())
            .arg("--cli")
            .arg(&cli)
            .args(extra)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    for bad in [["--allow", "ecoh"], ["--deny", "ecoh"]] {
        let said = run(&bad);
        assert!(
            said.contains("`ecoh`: no such tool in scope `default` (its tools: echo)"),
            "{said}"
        );
        assert!(!started.exists(), "the CLI was started");
    }
    let said = run(&["--allow", "echo,Read,mcp__other__x"]);
    assert!(!said.contains("no such tool"), "{said}");
    assert!(started.exists(), "the CLI was not started: {said}");
}

/// `script` written at `path`, executable: a CLI of the test's own.
fn fake_cli(path: &std::path::Path, script: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, script).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_path_buf()
}

/// A core serving `echo` in the default scope, and the directory it loads.
async fn echo_core() -> (ToolDir, Core) {
    let tools = ToolDir::new();
    tools.add("echo", "echo", "");
    let core = crate::support::core(tools.path()).await;
    (tools, core)
}

/// Assert that the process whose id `pidfile` holds ends within `within`
/// (gone, or dead and not yet reaped by its new parent).
async fn assert_ends(pidfile: &std::path::Path, within: Duration, what: &str) {
    let pid: i32 = std::fs::read_to_string(pidfile).unwrap().parse().unwrap();
    let deadline = Instant::now() + within;
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        if state
            .as_deref()
            .is_none_or(|s| s.split(' ').nth(2) == Some("Z"))
        {
            return;
        }
        assert!(Instant::now() < deadline, "{what} ({pid}) outlived it");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The fix review's case: a `connect` whose future was dropped (an
/// embedder's timeout) while the CLI had not answered `initialize` left the
/// CLI running for good: the session's reader held it, and no session
/// existed to end it. It is ended as a dropped session's CLI is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_given_up_on_ends_its_cli() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("cli.pid");
    let cli = fake_cli(
        &dir.path().join("silent-cli"),
        &format!(
            "#!/usr/bin/env python3\nimport os, time\nopen(\"{}\", \"w\").write(str(os.getpid()))\ntime.sleep(100000)\n",
            pidfile.display()
        ),
    );
    let (_tools, core) = echo_core().await;
    let options = AgentOptions::default()
        .cli(&cli)
        .server("tools", Scope::default());
    let gave_up =
        tokio::time::timeout(Duration::from_secs(2), AgentSession::connect(core, options)).await;
    assert!(gave_up.is_err(), "the silent CLI answered?");
    assert_ends(&pidfile, Duration::from_secs(20), "the CLI of the connect").await;
}

#[tokio::test]
async fn an_sdk_server_name_the_cli_would_rewrite_is_refused() {
    let env = Env::new().await;
    // `helper_`'s tool `x` would be `mcp__helper___x`, which also reads as
    // server `helper`'s tool `_x`: the isolation check could not tell.
    for name in ["a.b", "tools!", "a__b", "", "t\u{e9}", "helper_", "_helper"] {
        let e = AgentSession::connect(
            env.core.clone(),
            env.options().server(name, Scope::default()),
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("`{name}` accepted"));
        assert!(e.to_string().contains("A-Z a-z 0-9 _ -"), "{e}");
    }
}

#[tokio::test]
async fn missing_cli_is_a_clear_error() {
    let env = Env::new().await;
    let e = AgentSession::connect(env.core.clone(), env.options().cli("/nonexistent/claude"))
        .await
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(
        msg.contains("/nonexistent/claude") && msg.contains("@anthropic-ai/claude-code@"),
        "{msg}"
    );
}

/// A review's case: the CLI runs with the host's privileges, so one a tool
/// could have rewritten (in a directory it was granted read-write, or
/// beside one) is never started; an error says why.
#[tokio::test]
async fn a_cli_where_a_tool_may_write_is_not_started() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = Env::new().await;
    // Two tools: one granted the CLI's directory, one a directory inside
    // it (each CLI in a place of its own: grants are remembered).
    for (name, inside) in [("whole", ""), ("part", "data")] {
        let place = tempfile::tempdir().unwrap();
        let bin = place.path().join("bin");
        let dir = bin.join(inside);
        std::fs::create_dir_all(&dir).unwrap();
        let fake = bin.join("claude");
        std::fs::write(&fake, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Before the grant: it starts (and fails the handshake). (Grants
        // are remembered process-wide: no other test grants this place.)
        let e = AgentSession::connect(env.core.clone(), env.options().cli(&fake))
            .await
            .err()
            .unwrap();
        assert!(!matches!(e, AgentError::CliWritable { .. }), "{e}");
        let tools = ToolDir::new();
        let grant = format!(
            "[[fs]]\nguest = \"/w\"\nhost = \"{}\"\nmode = \"rw\"\n",
            dir.display()
        );
        tools.add(name, "hostile", &grant);
        // Loaded (no load error): its grant is made.
        let _granted = crate::support::core(tools.path()).await;
        let e = AgentSession::connect(env.core.clone(), env.options().cli(&fake))
            .await
            .err()
            .unwrap_or_else(|| panic!("started a CLI beside the `{name}` grant"));
        let msg = e.to_string();
        assert!(
            matches!(e, AgentError::CliWritable { .. })
                && msg.contains(&dir.canonicalize().unwrap().display().to_string()),
            "{msg}"
        );
    }
}

/// The fix review's case: a session may give its CLI a `HOME` (or a
/// `CLAUDE_CONFIG_DIR`) of its own, where the core's protected paths (the
/// host's own) do not reach: with a tool granted read-write there, the tool
/// could write the CLI's settings (hooks: commands it runs). Such a session
/// is refused before the CLI starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_cli_settings_a_tool_may_write_is_not_started() {
    let env = Env::new().await;
    for var in ["HOME", "CLAUDE_CONFIG_DIR"] {
        let home = tempfile::tempdir().unwrap();
        let tools = ToolDir::new();
        let grant = format!(
            "[[fs]]\nguest = \"/w\"\nhost = \"{}\"\nmode = \"rw\"\n",
            home.path().display()
        );
        tools.add("writer", "hostile", &grant);
        // Loaded (no load error): its grant is made.
        let _granted = crate::support::core(tools.path()).await;
        let options = env.options().env(var, home.path().display().to_string());
        let e = AgentSession::connect(env.core.clone(), options)
            .await
            .err()
            .unwrap_or_else(|| panic!("started a CLI whose {var} a tool may write"));
        assert!(matches!(e, AgentError::ConfigWritable { .. }), "{var}: {e}");
    }
}

/// The library's error speaks of the library; `toolhost agent` adds how to
/// get the CLI in a checkout.
#[tokio::test]
async fn missing_cli_on_the_command_line_says_how_to_install_it() {
    let env = Env::new().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_toolhost"))
        .args(["agent", "--prompt", "hi", "--cli", "/nonexistent/claude"])
        .arg("--tools")
        .arg(env._tools.path())
        .env("HOME", env.home.path())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("/nonexistent/claude")
            && stderr.contains("make claude-cli")
            && stderr.contains("--cli PATH"),
        "{stderr}"
    );
}

/// The control protocol with this test as the CLI: what the real CLI cannot
/// be made to do on purpose.
mod protocol {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    pub struct FakeCli {
        pub to_host: tokio::io::WriteHalf<tokio::io::DuplexStream>,
        pub from_host: tokio::io::Lines<BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>>,
    }

    impl FakeCli {
        pub async fn send(&mut self, v: Value) {
            let mut l = v.to_string();
            l.push('\n');
            self.to_host.write_all(l.as_bytes()).await.unwrap();
        }
        pub async fn recv(&mut self) -> Value {
            let l = tokio::time::timeout(Duration::from_secs(20), self.from_host.next_line())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            serde_json::from_str(&l).unwrap()
        }
        /// Answer `initialize` and return it.
        pub async fn accept_initialize(&mut self) -> Value {
            let init = self.recv().await;
            assert_eq!(init["request"]["subtype"], "initialize");
            let id = init["request_id"].clone();
            self.send(json!({"type": "control_response", "response": {"subtype": "success", "request_id": id, "response": {}}})).await;
            init
        }
        pub async fn mcp(&mut self, rid: &str, server: &str, message: Value) {
            self.send(json!({"type": "control_request", "request_id": rid, "request": {"subtype": "mcp_message", "server_name": server, "message": message}})).await;
        }
    }

    /// The CLI asking toolhost's guard (its PreToolUse hook) about `input`.
    fn guard(rid: &str, input: Value) -> Value {
        json!({"type": "control_request", "request_id": rid, "request": {"subtype": "hook_callback", "callback_id": "toolhost_guard", "input": input}})
    }

    /// The guard's input for a use of `tool` with `tool_input`.
    fn pre_tool_use(tool: &str, tool_input: Value) -> Value {
        json!({"hook_event_name": "PreToolUse", "tool_name": tool, "tool_input": tool_input})
    }

    /// A `tools/call` of `echo` with `text`, as the CLI forwards it.
    fn call_echo(id: u64, text: &str) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": text}}})
    }

    /// How many `sleep` calls ended with `outcome`, by the core's metrics.
    fn sleep_calls(core: &Core, outcome: &str) -> f64 {
        let metrics = core.metrics().encode();
        metrics
            .lines()
            .find(|l| {
                l.starts_with("toolhost_calls_total{")
                    && l.contains(r#"tool="sleep""#)
                    && l.contains(&format!(r#"outcome="{outcome}""#))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    }

    /// A session over in-memory pipes, and the CLI's end of them.
    pub async fn connect(core: Core, options: AgentOptions) -> (AgentSession, FakeCli) {
        let (session, cli, _) = connect_init(core, options).await;
        (session, cli)
    }

    /// [`connect`], and the session's `initialize` request.
    pub async fn connect_init(core: Core, options: AgentOptions) -> (AgentSession, FakeCli, Value) {
        let (host_end, cli_end) = tokio::io::duplex(1 << 20);
        let (hr, hw) = tokio::io::split(host_end);
        let (cr, cw) = tokio::io::split(cli_end);
        let mut cli = FakeCli {
            to_host: cw,
            from_host: BufReader::new(cr).lines(),
        };
        let session = tokio::spawn(AgentSession::connect_io(
            core,
            options,
            BufReader::new(hr),
            hw,
        ));
        let init = cli.accept_initialize().await;
        (session.await.unwrap().unwrap(), cli, init)
    }

    /// A session serving the default scope as `tools`, past its handshake.
    async fn serving_tools(env: &Env) -> (AgentSession, FakeCli) {
        let (session, mut cli) = connect(
            env.core.clone(),
            AgentOptions::default().server("tools", Scope::default()),
        )
        .await;
        handshake(&mut cli, "tools").await;
        (session, cli)
    }

    /// Assert that nothing more reaches the CLI for `ms` milliseconds.
    async fn assert_silent(cli: &mut FakeCli, ms: u64) {
        let more = tokio::time::timeout(Duration::from_millis(ms), cli.from_host.next_line()).await;
        assert!(more.is_err(), "unexpected line: {more:?}");
    }

    pub async fn handshake(cli: &mut FakeCli, server: &str) {
        cli.mcp("i0", server, json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "fake", "version": "0"}}})).await;
        let r = cli.recv().await;
        assert_eq!(r["response"]["response"]["mcp_response"]["id"], 0, "{r}");
        cli.mcp(
            "i1",
            server,
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        )
        .await;
        let r = cli.recv().await;
        assert_eq!(
            r["response"]["response"]["mcp_response"],
            json!({"jsonrpc": "2.0", "result": {}})
        );
    }

    /// The session's `initialize` carries each SDK server's handshake,
    /// made in process (`sdkMcpServerManifests`): the server's own
    /// `initialize` result for the CLI's protocol version and its tool
    /// list. A CLI that takes it calls tools with no MCP handshake of its
    /// own: the calls reach the connection the session opened.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cli_that_takes_the_handshake_calls_tools_without_its_own() {
        let env = Env::new().await;
        let (session, mut cli, init) = connect_init(env.core.clone(), env.options()).await;
        let req = &init["request"];
        assert_eq!(req["sdkMcpServers"], json!(["tools"]), "{req}");
        let manifest = &req["sdkMcpServerManifests"]["tools"];
        assert_eq!(
            manifest["initializeResult"]["protocolVersion"], "2025-11-25",
            "{manifest}"
        );
        let listed: Vec<&str> = manifest["toolsListResult"]["tools"]
            .as_array()
            .expect("a tool list")
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        let tools = env.core.tools(&Scope::default());
        let served: Vec<&str> = tools.iter().map(|t| &*t.name).collect();
        assert_eq!(listed, served);
        cli.mcp("c1", "tools", call_echo(1, "no handshake")).await;
        let r = cli.recv().await;
        let resp = &r["response"]["response"]["mcp_response"];
        assert_eq!(resp["result"]["content"][0]["text"], "no handshake", "{r}");
        drop(session);
    }

    /// A review's case: the CLI's messages were queued without a bound
    /// until the session's reader took them (a CLI writing before it
    /// answered `initialize` held 17 times its output). They hold at most
    /// 64 MiB weighed as parsed: past it the session reads no more of the
    /// CLI's output until they are taken, and the CLI's writes wait.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cli_writes_no_faster_than_its_messages_are_taken() {
        let env = Env::new().await;
        let (mut session, cli) = connect(env.core.clone(), AgentOptions::default()).await;
        // Each line 1 MiB of text, 512 Ki values: 32 MiB as parsed.
        let line = {
            let zeros = vec!["0"; 512 << 10].join(",");
            let mut l = format!(
                r#"{{"type":"assistant","message":{{"role":"assistant","content":[]}},"pad":[{zeros}]}}"#
            );
            l.push('\n');
            l
        };
        // Not taken, the writes stop (12 lines would be 384 MiB parsed);
        // taken, they go on.
        writes_wait_until_taken(&mut session, cli, line, 12, |m| assert!(m.is_ok(), "{m:?}")).await;
    }

    /// The CLI writes `line` `lines` times: the writes stop before the
    /// last while no message is taken, and go on as the session's messages
    /// are taken, each of which `taken` checks.
    async fn writes_wait_until_taken(
        session: &mut AgentSession,
        mut cli: FakeCli,
        line: String,
        lines: usize,
        taken: impl Fn(&Result<Message, AgentError>),
    ) {
        let writing = tokio::spawn(async move {
            for _ in 0..lines {
                cli.to_host.write_all(line.as_bytes()).await.unwrap();
            }
            cli
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!writing.is_finished(), "the CLI wrote all it had");
        for _ in 0..lines {
            let m = tokio::time::timeout(Duration::from_secs(20), session.next())
                .await
                .expect("a message")
                .expect("the session is open");
            taken(&m);
        }
        tokio::time::timeout(Duration::from_secs(20), writing)
            .await
            .expect("the writes went on")
            .unwrap();
    }

    /// The second fix review's case: a line that is not JSON is queued as
    /// an error holding up to 2,000 characters of it (8 KB), but was weighed
    /// 1 KiB, so lines of 2,000 emoji held 17 times the bound. It is weighed
    /// as what it keeps: the writes stop at the bound.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lines_that_are_not_json_count_what_they_keep() {
        let env = Env::new().await;
        let (mut session, cli) = connect(env.core.clone(), AgentOptions::default()).await;
        let line = format!("{}\n", "€".repeat(2000));
        // 20,000 lines, 120 MB: at 1 KiB each, all would be queued.
        writes_wait_until_taken(&mut session, cli, line, 20_000, |m| {
            assert!(matches!(m, Err(AgentError::JsonDecode { .. })), "{m:?}")
        })
        .await;
    }

    /// Lines heavier than the session holds are not parsed (a 32 MiB line
    /// of `[0,0,…]` took 610 MB parsed), only their head: a control
    /// request among them is still answered under its id, and one whose id
    /// is no id (a huge array, which the first head read built whole) is a
    /// message too large, nothing built.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn heavy_lines_are_answered_from_their_head() {
        let env = Env::new().await;
        let (mut session, mut cli) = connect(env.core.clone(), AgentOptions::default()).await;
        let zeros = vec!["0"; 1_200_000].join(",");
        let asked = format!(
            r#"{{"type":"control_request","request_id":"big","request":{{"subtype":"hook_callback","callback_id":"x","input":{{"pad":[{zeros}]}}}}}}"#
        );
        cli.to_host.write_all(asked.as_bytes()).await.unwrap();
        cli.to_host.write_all(b"\n").await.unwrap();
        let r = cli.recv().await;
        assert_eq!(r["response"]["request_id"], "big", "{r}");
        assert_eq!(r["response"]["subtype"], "error", "{r}");
        let no_id = format!(r#"{{"type":"control_request","request_id":[{zeros}]}}"#);
        cli.to_host.write_all(no_id.as_bytes()).await.unwrap();
        cli.to_host.write_all(b"\n").await.unwrap();
        let m = tokio::time::timeout(Duration::from_secs(20), session.next())
            .await
            .expect("a message")
            .expect("the session is open");
        assert!(
            matches!(m, Err(AgentError::MessageTooLarge { .. })),
            "{m:?}"
        );
    }

    /// The fix review's case: with the CLI's messages at their bound and
    /// none taken, the answer to a control request of the host's
    /// (`interrupt`) sat unread behind them until it timed out. While the
    /// host waits for an answer the messages may run over the bound (by as
    /// much again), and the answer is read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_control_answer_is_read_past_messages_not_taken() {
        let env = Env::new().await;
        let options = AgentOptions {
            control_timeout: Duration::from_secs(10),
            ..Default::default()
        };
        let (session, mut cli) = connect(env.core.clone(), options).await;
        // Each 24 MiB as parsed: two fill most of the 64 MiB, the third
        // waits.
        let zeros = vec!["0"; 384 << 10].join(",");
        let line = format!(
            r#"{{"type":"assistant","message":{{"role":"assistant","content":[]}},"pad":[{zeros}]}}"#
        );
        let peer = async {
            for _ in 0..3 {
                cli.to_host.write_all(line.as_bytes()).await.unwrap();
                cli.to_host.write_all(b"\n").await.unwrap();
            }
            let req = cli.recv().await;
            assert_eq!(req["request"]["subtype"], "interrupt", "{req}");
            let id = req["request_id"].clone();
            cli.send(json!({"type": "control_response", "response": {"subtype": "success", "request_id": id, "response": {}}})).await;
        };
        let (answer, ()) = tokio::join!(
            async {
                // Once the third message waits.
                tokio::time::sleep(Duration::from_millis(500)).await;
                session.interrupt().await
            },
            peer
        );
        answer.expect("the interrupt's answer was read");
    }

    /// A permission request the session has no callback for is denied,
    /// never allowed by default.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn can_use_tool_without_a_callback_denies() {
        let env = Env::new().await;
        let (_s, mut cli) = connect(
            env.core.clone(),
            AgentOptions::default().server("tools", Scope::default()),
        )
        .await;
        cli.send(json!({"type": "control_request", "request_id": "p1", "request": {"subtype": "can_use_tool", "tool_name": "mcp__tools__echo", "input": {"text": "x"}}})).await;
        let r = cli.recv().await;
        assert_eq!(r["response"]["response"]["behavior"], "deny", "{r}");
        assert!(
            r["response"]["response"]["message"]
                .as_str()
                .unwrap()
                .contains("no can_use_tool callback"),
            "{r}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_request_is_answered_concurrently_and_cancels_write_nothing() {
        let env = Env::new().await;
        let (_s, mut cli) = serving_tools(&env).await;
        // Four 1 s sleeps at once finish in well under 4 x 1 s (with room
        // for a loaded machine: one after another they would take 4 s;
        // under `LIMITS`' 2 s timeout each).
        let started = Instant::now();
        for i in 0..4 {
            cli.mcp(&format!("c{i}"), "tools", json!({"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call", "params": {"name": "sleep", "arguments": {"ms": 1000}}})).await;
        }
        // One that will be cancelled, and junk that must still get replies.
        cli.mcp("cancel-me", "tools", json!({"jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": {"name": "sleep", "arguments": {"ms": 1500}}})).await;
        cli.send(json!({"type": "control_request", "request_id": "u1", "request": {"subtype": "teleport"}})).await;
        cli.mcp(
            "u2",
            "nope",
            json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list"}),
        )
        .await;
        cli.send(json!({"type": "control_request", "request_id": "u3", "request": {"subtype": "hook_callback", "callback_id": "hook_77", "input": {}}})).await;
        cli.send(json!({"type": "control_cancel_request", "request_id": "cancel-me"}))
            .await;
        let mut replies = std::collections::HashMap::new();
        for _ in 0..7 {
            let r = cli.recv().await;
            replies.insert(
                r["response"]["request_id"].as_str().unwrap().to_string(),
                r["response"].clone(),
            );
        }
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_millis(3000),
            "calls ran one after another: {elapsed:?}"
        );
        for i in 0..4 {
            let r = &replies[&format!("c{i}")]["response"]["mcp_response"];
            assert_eq!(r["result"]["content"][0]["text"], "slept", "{r}");
        }
        assert_eq!(replies["u1"]["subtype"], "error");
        assert_eq!(
            replies["u2"]["response"]["mcp_response"]["error"]["code"],
            -32601
        );
        assert_eq!(replies["u3"]["subtype"], "error");
        assert!(!replies.contains_key("cancel-me"));
        // Nothing more arrives for the cancelled request.
        assert_silent(&mut cli, 1700).await;
        // And its guest was stopped, not left to sleep its 1.5 s out.
        let sleeps = |outcome: &str| sleep_calls(&env.core, outcome);
        assert_eq!((sleeps("ok"), sleeps("cancelled")), (4.0, 1.0));
    }

    /// A control request whose id is still in flight is refused, and the
    /// running one stays cancellable: a second handle under the same id
    /// would have replaced the first's, leaving it to run out its time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_id_still_in_flight_is_refused_and_the_first_stays_cancellable() {
        let env = Env::new().await;
        let (_s, mut cli) = serving_tools(&env).await;
        let sleep = |id: u32| json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "sleep", "arguments": {"ms": 1500}}});
        cli.mcp("dup", "tools", sleep(1)).await;
        cli.mcp("dup", "tools", sleep(2)).await;
        let r = cli.recv().await;
        assert_eq!(r["response"]["request_id"], "dup", "{r}");
        assert_eq!(r["response"]["subtype"], "error", "{r}");
        assert!(
            r["response"]["error"]
                .as_str()
                .unwrap_or_default()
                .contains("still in flight"),
            "{r}"
        );
        cli.send(json!({"type": "control_cancel_request", "request_id": "dup"}))
            .await;
        assert_silent(&mut cli, 1700).await;
        let sleeps = |outcome: &str| sleep_calls(&env.core, outcome);
        assert_eq!((sleeps("ok"), sleeps("cancelled")), (0.0, 1.0));
    }

    /// A call's progress notifications reach the CLI before its result:
    /// a call answered past rmcp's loop (see `agent::bridge`) still waits
    /// for what the server sent before it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_calls_progress_reaches_the_cli_before_its_result() {
        let core = Core::builder()
            .config(test_config())
            .source(Scope::default(), crate::support::conformance_dir())
            .build()
            .await
            .unwrap();
        assert!(core.load_errors().is_empty(), "{:?}", core.load_errors());
        let (_s, mut cli) = connect(
            core,
            AgentOptions::default().server("tools", Scope::default()),
        )
        .await;
        handshake(&mut cli, "tools").await;
        for round in 0..3 {
            let token = format!("tok{round}");
            cli.mcp(&format!("p{round}"), "tools", json!({"jsonrpc": "2.0", "id": 100 + round, "method": "tools/call", "params": {"name": "test_tool_with_progress", "arguments": {}, "_meta": {"progressToken": token}}})).await;
            let mut progress = Vec::new();
            let reply = loop {
                let m = cli.recv().await;
                if m["type"] == "control_request" {
                    let note = &m["request"]["message"];
                    assert_eq!(note["method"], "notifications/progress", "{m}");
                    assert_eq!(note["params"]["progressToken"], token.as_str(), "{m}");
                    progress.push(note["params"]["progress"].as_f64().unwrap());
                    continue;
                }
                break m;
            };
            assert_eq!(
                reply["response"]["request_id"],
                format!("p{round}"),
                "{reply}"
            );
            assert_eq!(progress, [0.0, 50.0, 100.0], "round {round}: {reply}");
        }
    }

    /// A `tools/call` the CLI cancels with the MCP `notifications/cancelled`
    /// stops its guest, its control request is still answered (the server
    /// sends no response to a cancelled request), and the session goes on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_mcp_cancelled_notification_stops_the_running_call() {
        let env = Env::new().await;
        let (_s, mut cli) = serving_tools(&env).await;
        let started = Instant::now();
        cli.mcp("long", "tools", json!({"jsonrpc": "2.0", "id": 42, "method": "tools/call", "params": {"name": "sleep", "arguments": {"ms": 20000}}})).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        cli.mcp(
            "n",
            "tools",
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 42, "reason": "user"}}),
        )
        .await;
        let mut replies = std::collections::HashMap::new();
        for _ in 0..2 {
            let r = cli.recv().await;
            replies.insert(
                r["response"]["request_id"].as_str().unwrap().to_string(),
                r["response"].clone(),
            );
        }
        // Not a speed test: the call would have slept 20 s.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the cancelled call ran on: {:?}",
            started.elapsed()
        );
        let r = &replies["long"]["response"]["mcp_response"];
        assert!(r.to_string().contains("cancel"), "{r}");
        // The guest was stopped: the call ends `cancelled` (by its 2 s
        // timeout it would end `timeout`).
        let ended = |m: &str| {
            m.lines().any(|l| {
                l.starts_with("toolhost_calls_total{")
                    && l.contains(r#"tool="sleep""#)
                    && l.contains(r#"outcome="cancelled""#)
            })
        };
        let waited = Instant::now();
        while !ended(&env.core.metrics().encode()) {
            assert!(
                waited.elapsed() < Duration::from_secs(10),
                "the call was not cancelled:\n{}",
                env.core.metrics().encode()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        cli.mcp("after", "tools", call_echo(43, "still here")).await;
        let r = cli.recv().await;
        assert_eq!(
            r["response"]["response"]["mcp_response"]["result"]["content"][0]["text"], "still here",
            "{r}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_host_refuses_a_call_from_an_agent_not_entitled_to_the_scope() {
        let env = Env::new().await;
        let opts = AgentOptions::default()
            .server("alpha", Scope::default())
            .server("beta", Scope::default())
            .agent("helper", AgentDefinition::new("h", "p").server("beta"));
        let (_s, mut cli) = connect(env.core.clone(), opts).await;
        let hook = |rid: &str, agent: Option<&str>, tool: &str| {
            let mut input = pre_tool_use(tool, json!({}));
            if let Some(a) = agent {
                input["agent_id"] = json!("a1");
                input["agent_type"] = json!(a);
            }
            guard(rid, input)
        };
        for (rid, agent, tool, denied) in [
            ("h1", Some("helper"), "mcp__alpha__echo", true),
            ("h2", Some("helper"), "mcp__beta__echo", false),
            ("h3", None, "mcp__beta__echo", true),
            ("h4", None, "mcp__alpha__echo", false),
            ("h5", Some("general-purpose"), "mcp__alpha__echo", true),
            ("h6", Some("helper"), "Read", false),
        ] {
            cli.send(hook(rid, agent, tool)).await;
            let r = cli.recv().await;
            let decision = &r["response"]["response"]["hookSpecificOutput"]["permissionDecision"];
            assert_eq!(decision == "deny", denied, "{rid}: {r}");
        }
        // can_use_tool carries only agent_id: the host remembers its type.
        cli.send(json!({"type": "control_request", "request_id": "p1", "request": {"subtype": "can_use_tool", "tool_name": "mcp__alpha__echo", "input": {}, "agent_id": "a1"}})).await;
        assert_eq!(cli.recv().await["response"]["response"]["behavior"], "deny");
        cli.send(json!({"type": "control_request", "request_id": "p2", "request": {"subtype": "can_use_tool", "tool_name": "mcp__beta__echo", "input": {}, "agent_id": "zzz"}})).await;
        assert_eq!(
            cli.recv().await["response"]["response"]["behavior"],
            "deny",
            "unknown agents are refused"
        );

        // The review's case: a CLI that skips the hook and sends the call
        // straight to the server. Each `tools/call` needs an approval the
        // guard gave (h2 for beta's echo, h4 for alpha's), and uses it up;
        // a denied use (h1) gave none.
        for (rid, server, runs) in [
            ("c1", "beta", true),
            ("c2", "beta", false),
            ("c3", "alpha", true),
            ("c4", "alpha", false),
        ] {
            cli.mcp(rid, server, call_echo(7, "hi")).await;
            let r = cli.recv().await;
            let resp = &r["response"]["response"]["mcp_response"];
            if runs {
                assert_eq!(resp["result"]["content"][0]["text"], "hi", "{rid}: {r}");
            } else {
                assert_eq!(resp["error"]["code"], -32600, "{rid}: {r}");
                assert!(
                    resp["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("not approved"),
                    "{r}"
                );
            }
        }
        // Lists need no approval.
        cli.mcp(
            "l1",
            "beta",
            json!({"jsonrpc": "2.0", "id": 8, "method": "tools/list"}),
        )
        .await;
        let r = cli.recv().await;
        assert!(
            r["response"]["response"]["mcp_response"]["result"]["tools"].is_array(),
            "{r}"
        );

        // A later review's case: resources, prompts and completions went
        // to any server unapproved. A resource read needs the guard's
        // approval of the CLI's `ReadMcpResourceTool` use naming it (and
        // its agent's entitlement to the server); prompts, completions
        // and subscriptions are not served with the guard on.
        let read = |id: u64| json!({"jsonrpc": "2.0", "id": id, "method": "resources/read", "params": {"uri": "hostile://big/5"}});
        let refused =
            |r: &Value| r["response"]["response"]["mcp_response"]["error"]["code"] == -32600;
        cli.mcp("r1", "beta", read(9)).await;
        assert!(refused(&cli.recv().await), "read without an approval");
        for (rid, server, denied) in [("h7", "alpha", true), ("h8", "beta", false)] {
            let mut input = pre_tool_use(
                "ReadMcpResourceTool",
                json!({"server": server, "uri": "hostile://big/5"}),
            );
            input["agent_id"] = json!("a1");
            input["agent_type"] = json!("helper");
            cli.send(guard(rid, input)).await;
            let r = cli.recv().await;
            let decision = &r["response"]["response"]["hookSpecificOutput"]["permissionDecision"];
            assert_eq!(decision == "deny", denied, "{rid}: {r}");
        }
        cli.mcp("r2", "alpha", read(10)).await;
        assert!(refused(&cli.recv().await), "h7 was denied: no approval");
        cli.mcp("r3", "beta", read(11)).await;
        let r = cli.recv().await;
        assert_eq!(
            r["response"]["response"]["mcp_response"]["result"]["contents"][0]["text"], "xxxxx",
            "{r}"
        );
        cli.mcp("r4", "beta", read(12)).await;
        assert!(refused(&cli.recv().await), "an approval is used once");
        for (rid, message) in [
            (
                "p1",
                json!({"jsonrpc": "2.0", "id": 13, "method": "prompts/get", "params": {"name": "x"}}),
            ),
            (
                "p2",
                json!({"jsonrpc": "2.0", "id": 14, "method": "completion/complete", "params": {"ref": {"type": "ref/resource", "uri": "hostile://big/{bytes}"}, "argument": {"name": "bytes", "value": ""}}}),
            ),
            (
                "p3",
                json!({"jsonrpc": "2.0", "id": 15, "method": "resources/subscribe", "params": {"uri": "hostile://spin"}}),
            ),
        ] {
            cli.mcp(rid, "beta", message).await;
            assert!(refused(&cli.recv().await), "{rid}");
        }
    }

    /// A review's case: every new agent id a CLI named was remembered,
    /// whatever its size (1,000 ids of 1 MiB held 2 GB). Ids and types of
    /// more than 256 bytes are not kept, and such an agent is one the
    /// isolation does not know.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn huge_agent_ids_are_not_remembered() {
        let env = Env::new().await;
        let opts = AgentOptions::default()
            .server("beta", Scope::default())
            .agent("helper", AgentDefinition::new("h", "p").server("beta"))
            .can_use_tool(can_use_tool(|_| async { Permission::Allow }));
        let (_s, mut cli) = connect(env.core.clone(), opts).await;
        let long = "a".repeat(300);
        for (rid, id, denied) in [("k1", "short-id", false), ("k2", long.as_str(), true)] {
            let mut input = pre_tool_use("Read", json!({}));
            input["agent_id"] = json!(id);
            input["agent_type"] = json!("helper");
            cli.send(guard(&format!("g{rid}"), input)).await;
            cli.recv().await;
            // `can_use_tool` names the agent by id only: its type is what
            // the host remembered.
            cli.send(json!({"type": "control_request", "request_id": rid, "request": {"subtype": "can_use_tool", "tool_name": "mcp__beta__echo", "input": {}, "agent_id": id}})).await;
            let r = cli.recv().await;
            assert_eq!(
                r["response"]["response"]["behavior"] == "deny",
                denied,
                "{rid}: {r}"
            );
            // The refusal names the agent cut, as every name a peer chose
            // (it quoted the CLI's id whole).
            if denied {
                let said = r["response"]["response"]["message"].as_str().unwrap();
                assert!(!said.contains(&long) && said.contains('…'), "{said}");
            }
        }
    }

    /// Unused approvals pile up to 16 a tool, no more: a CLI that asks the
    /// guard a thousand times ahead cannot bank a thousand calls (and the
    /// host keeps one counter, not one entry an approval).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unused_approvals_of_a_tool_are_capped_at_sixteen() {
        let env = Env::new().await;
        // A rule puts the guard on; it denies nothing sent here.
        let opts = AgentOptions::default()
            .server("tools", Scope::default())
            .rule(
                Rule::deny("mcp__tools__*", "no secrets")
                    .with_arg("/text")
                    .containing("secret"),
            );
        let (_s, mut cli) = connect(env.core.clone(), opts).await;
        for i in 0..20 {
            cli.send(guard(
                &format!("g{i}"),
                pre_tool_use("mcp__tools__echo", json!({"text": "hi"})),
            ))
            .await;
            let r = cli.recv().await;
            assert_eq!(r["response"]["subtype"], "success", "{r}");
        }
        for i in 0..17 {
            cli.mcp(&format!("c{i}"), "tools", call_echo(i, "hi")).await;
            let r = cli.recv().await;
            let resp = &r["response"]["response"]["mcp_response"];
            if i < 16 {
                assert_eq!(resp["result"]["content"][0]["text"], "hi", "c{i}: {r}");
            } else {
                assert_eq!(resp["error"]["code"], -32600, "c{i}: {r}");
            }
        }
    }

    /// A deny rule on every tool of a server (`mcp__beta__*`) covers the
    /// CLI's resource tools naming it: before, `ReadMcpResourceTool` read
    /// beta's resources past it. Another server's resources still read,
    /// and a rule on one tool of beta (not every tool) does not cover them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rule_on_every_tool_of_a_server_covers_its_resources() {
        let env = Env::new().await;
        let opts = AgentOptions::default()
            .server("alpha", Scope::default())
            .server("beta", Scope::default())
            .rule(Rule::deny("mcp__beta__*", "beta is off"))
            .rule(Rule::deny("mcp__alpha__echo", "no echo"));
        let (_s, mut cli) = connect(env.core.clone(), opts).await;
        let uri = "hostile://big/5";
        for (rid, tool, input, denied) in [
            (
                "h1",
                "ReadMcpResourceTool",
                json!({"server": "beta", "uri": uri}),
                true,
            ),
            (
                "h2",
                "ListMcpResourcesTool",
                json!({"server": "beta"}),
                true,
            ),
            (
                "h3",
                "ReadMcpResourceTool",
                json!({"server": "alpha", "uri": uri}),
                false,
            ),
            (
                "h4",
                "ListMcpResourcesTool",
                json!({"server": "alpha"}),
                false,
            ),
            // Naming no server lists every one, beta's too.
            ("h5", "ListMcpResourcesTool", json!({}), true),
        ] {
            cli.send(guard(rid, pre_tool_use(tool, input))).await;
            let r = cli.recv().await;
            let out = &r["response"]["response"]["hookSpecificOutput"];
            assert_eq!(out["permissionDecision"] == "deny", denied, "{rid}: {r}");
            if denied {
                assert_eq!(out["permissionDecisionReason"], "beta is off", "{rid}: {r}");
            }
        }
        // Beta's resources are not listed to the CLI either; alpha's are.
        for (rid, server, listed) in [("l1", "beta", false), ("l2", "alpha", true)] {
            cli.mcp(
                rid,
                server,
                json!({"jsonrpc": "2.0", "id": 8, "method": "resources/list"}),
            )
            .await;
            let r = cli.recv().await;
            let resp = &r["response"]["response"]["mcp_response"];
            assert_eq!(resp["result"]["resources"].is_array(), listed, "{rid}: {r}");
        }
        let read = |id: u64| json!({"jsonrpc": "2.0", "id": id, "method": "resources/read", "params": {"uri": uri}});
        for (rid, server, runs) in [("r1", "beta", false), ("r2", "alpha", true)] {
            cli.mcp(rid, server, read(9)).await;
            let r = cli.recv().await;
            let resp = &r["response"]["response"]["mcp_response"];
            if runs {
                assert_eq!(resp["result"]["contents"][0]["text"], "xxxxx", "{rid}: {r}");
            } else {
                assert_eq!(resp["error"]["code"], -32600, "{rid}: {r}");
            }
        }
    }

    /// The diff review's case: an approval names a tool, not arguments.
    /// The guard approves `echo` with harmless text; the call then carries
    /// text a deny rule matches: refused, nothing run. The same call with
    /// the approved text runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_with_arguments_the_rules_deny_is_refused_after_an_approval() {
        let env = Env::new().await;
        let rule = Rule::deny("mcp__tools__*", "no secrets through echo")
            .with_arg("/text")
            .containing("secret");
        let opts = AgentOptions::default()
            .server("tools", Scope::default())
            .rule(rule);
        let (_s, mut cli) = connect(env.core.clone(), opts).await;

        for (rid, approved, sent, runs) in [
            ("g1", "hello", "a secret", false),
            ("g2", "hello", "hello", true),
        ] {
            cli.send(guard(
                rid,
                pre_tool_use("mcp__tools__echo", json!({"text": approved})),
            ))
            .await;
            let r = cli.recv().await;
            assert!(
                r["response"]["response"]
                    .get("hookSpecificOutput")
                    .is_none(),
                "{r}"
            );
            cli.mcp(&format!("c-{rid}"), "tools", call_echo(3, sent))
                .await;
            let r = cli.recv().await;
            let resp = &r["response"]["response"]["mcp_response"];
            if runs {
                assert_eq!(resp["result"]["content"][0]["text"], sent, "{r}");
            } else {
                assert_eq!(resp["error"]["code"], -32600, "{r}");
            }
        }
    }

    /// A review's case: a CLI that never waits for answers could keep any
    /// number of control requests running, each holding its line and a
    /// task. At most 256 are in flight; past that one is refused at once,
    /// and room comes back as they end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn control_requests_in_flight_are_bounded() {
        let env = Env::new().await;
        let opts = AgentOptions::default()
            .server("tools", Scope::default())
            .hook(
                HookEvent::PreToolUse,
                None,
                hook(|_| std::future::pending::<HookOutput>()),
            );
        let (_s, mut cli) = connect(env.core.clone(), opts).await;
        let ask = |rid: String| json!({"type": "control_request", "request_id": rid, "request": {"subtype": "hook_callback", "callback_id": "hook_0_0", "input": {"hook_event_name": "PreToolUse", "tool_name": "Read", "tool_input": {}}}});
        for i in 0..=256 {
            cli.send(ask(format!("h{i}"))).await;
        }
        let r = cli.recv().await;
        assert_eq!(r["response"]["request_id"], "h256", "{r}");
        assert_eq!(r["response"]["subtype"], "error", "{r}");
        assert!(
            r["response"]["error"]
                .as_str()
                .unwrap()
                .contains("in flight"),
            "{r}"
        );
        // One cancelled: the next is taken (and waits on its hook).
        cli.send(json!({"type": "control_cancel_request", "request_id": "h0"}))
            .await;
        cli.send(ask("h257".into())).await;
        assert_silent(&mut cli, 500).await;
        cli.send(ask("h258".into())).await;
        let r = cli.recv().await;
        assert_eq!(r["response"]["request_id"], "h258", "{r}");
        assert_eq!(r["response"]["subtype"], "error", "{r}");
    }

    /// A review's case: 256 control requests of up to `max_line_bytes` each
    /// (32 MiB, up to 32 times that parsed) were no bound on what they
    /// hold. Together they hold at most 64 MiB, each weighed as parsed:
    /// three of 19.8 MB fit, a fourth is refused at once, and room comes
    /// back as they end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn control_requests_in_flight_hold_at_most_their_bytes() {
        let env = Env::new().await;
        let opts = AgentOptions::default()
            .server("tools", Scope::default())
            .hook(
                HookEvent::PreToolUse,
                None,
                hook(|_| std::future::pending::<HookOutput>()),
            );
        let (_s, mut cli) = connect(env.core.clone(), opts).await;
        let pad = Value::Array(vec![json!(0); 300_000]);
        let ask = |rid: &str| json!({"type": "control_request", "request_id": rid, "request": {"subtype": "hook_callback", "callback_id": "hook_0_0", "input": {"hook_event_name": "PreToolUse", "tool_name": "Read", "tool_input": {"pad": pad}}}});
        for rid in ["b0", "b1", "b2", "b3"] {
            cli.send(ask(rid)).await;
        }
        let r = cli.recv().await;
        assert_eq!(r["response"]["request_id"], "b3", "{r}");
        assert_eq!(r["response"]["subtype"], "error", "{r}");
        assert!(
            r["response"]["error"]
                .as_str()
                .unwrap()
                .contains("would hold more than 67108864 bytes"),
            "{r}"
        );
        // One cancelled: the next is taken (and waits on its hook).
        cli.send(json!({"type": "control_cancel_request", "request_id": "b0"}))
            .await;
        // Its task, aborted, gives its bytes back when the runtime drops it:
        // until then one more is refused as before.
        for i in 0.. {
            cli.send(ask(&format!("b4-{i}"))).await;
            let more =
                tokio::time::timeout(Duration::from_millis(300), cli.from_host.next_line()).await;
            let Ok(line) = more else { break };
            let r: Value = serde_json::from_str(&line.unwrap().unwrap()).unwrap();
            assert!(
                r["response"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("would hold more")),
                "{r}"
            );
            assert!(i < 50, "the cancelled request's bytes never came back");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tool_list_changes_reach_the_cli() {
        let env = Env::new().await;
        let (_s, mut cli) = serving_tools(&env).await;
        cli.mcp(
            "l1",
            "tools",
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        )
        .await;
        let r = cli.recv().await;
        assert!(
            r["response"]["response"]["mcp_response"]["result"]["tools"]
                .as_array()
                .unwrap()
                .len()
                > 3
        );
        // Remove hostile from the catalog and reload: the CLI is told. Its
        // resources go too, so resources/list_changed may come first (the
        // two notifications are independent).
        std::fs::remove_file(env._tools.path().join("hostile.toml")).unwrap();
        env.core.reload().await;
        let mut methods = Vec::new();
        while !methods
            .iter()
            .any(|m| m == "notifications/tools/list_changed")
        {
            assert!(methods.len() < 4, "no tools/list_changed among {methods:?}");
            let note = cli.recv().await;
            assert_eq!(note["type"], "control_request", "{note}");
            assert_eq!(note["request"]["subtype"], "mcp_message");
            assert_eq!(note["request"]["server_name"], "tools");
            methods.push(
                note["request"]["message"]["method"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
}
