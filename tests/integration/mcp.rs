//! The MCP front end, end to end: the real `toolhost serve` binary over stdio
//! and Streamable HTTP, driven by the official Python (`mcp`) and TypeScript
//! (`@modelcontextprotocol/sdk`) SDK clients (tests/clients/), plus raw
//! requests for what no SDK client would send (bad hosts, missing tokens,
//! methods the server does not serve).
//!
//! The clients come from `scripts/install-test-deps.sh`; without them these
//! tests fail and say so.

use crate::support::{ToolDir, conformance_dir, root, tools_dir};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_toolhost");

/// Where the pinned test clients are installed.
pub(crate) fn deps_dir() -> PathBuf {
    let d = std::env::var_os("TOOLHOST_TEST_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".test-deps"));
    let python = d.join("venv/bin/python");
    let sdk = d.join("node/node_modules/@modelcontextprotocol/sdk/package.json");
    assert!(
        python.is_file() && sdk.is_file(),
        "the MCP SDK clients are not installed in {}: run `scripts/install-test-deps.sh` (or `make test-deps`)",
        d.display()
    );
    d
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Sdk {
    Python,
    TypeScript,
    /// v2 of the TypeScript SDK (`@modelcontextprotocol/client`, HTTP only;
    /// tests/clients/ts_v2_client.mjs).
    TypeScriptV2,
}

/// How the client reaches the server.
pub(crate) enum Via<'a> {
    /// The client spawns `toolhost serve` over stdio with these arguments.
    Stdio(&'a [&'a str]),
    Http(&'a str),
}

/// The client command for `scenario`, ready to spawn.
pub(crate) fn client(sdk: Sdk, scenario: &str, mode: Option<&str>, via: Via<'_>) -> Command {
    let deps = deps_dir();
    let mut cmd = match sdk {
        Sdk::Python => {
            let mut c = Command::new(deps.join("venv/bin/python"));
            c.arg(root().join("tests/clients/mcp_client.py"));
            c
        }
        Sdk::TypeScript => {
            let mut c = Command::new("node");
            c.arg(root().join("tests/clients/mcp_client.mjs"));
            c
        }
        Sdk::TypeScriptV2 => {
            let mut c = Command::new("node");
            c.arg(root().join("tests/clients/ts_v2_client.mjs"));
            c
        }
    };
    cmd.env("TOOLHOST_TEST_DEPS", &deps).arg(scenario);
    if let Some(m) = mode {
        cmd.args(["--mode", m]);
    }
    match via {
        Via::Http(url) => {
            cmd.args(["--http", url]);
        }
        Via::Stdio(args) => {
            cmd.args(["--", BIN, "serve"]).args(args);
        }
    }
    cmd
}

/// Run a client to completion (at most `limit`) and require `ok SCENARIO`.
pub(crate) fn run_client(mut cmd: Command, scenario: &str, limit: Duration) -> String {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the MCP client");
    let out = wait_output(child, limit);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.lines().last() == Some(&format!("ok {scenario}")),
        "client scenario `{scenario}` failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    stdout
}

/// `wait_with_output`, killing the child after `limit`.
pub(crate) fn wait_output(mut child: Child, limit: Duration) -> Output {
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut b);
        }
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut b);
        }
        b
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let s = child.wait().unwrap();
            eprintln!("killed after {limit:?}");
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// A tools directory for the clients' scenarios: echo, text (unless
/// `without_text`), the conformance tools and `hostile` (one call at a time,
/// so a guest left running would block the next call).
pub(crate) fn tools(without_text: bool) -> ToolDir {
    let d = ToolDir::new();
    let mut deployed = vec![(tools_dir(), "echo"), (conformance_dir(), "conformance")];
    if !without_text {
        deployed.push((tools_dir(), "text"));
    }
    for (dir, name) in &deployed {
        copy_tool(dir, name, d.path());
    }
    d.add(
        "hostile",
        "hostile",
        "[limits]\ntimeout = \"60s\"\nmax-concurrency = 1\n",
    );
    d
}

/// Copy a deployed tool (its .wasm and rendered manifest) into `to`.
pub(crate) fn copy_tool(from: &Path, name: &str, to: &Path) {
    for ext in ["wasm", "toml"] {
        let src = from.join(format!("{name}.{ext}"));
        assert!(src.is_file(), "{} is missing", src.display());
        std::fs::copy(&src, to.join(format!("{name}.{ext}"))).unwrap();
    }
}

/// `toolhost serve --http` on a free loopback port; killed on drop.
pub(crate) struct HttpServe {
    child: Child,
    pub(crate) url: String,
    /// What it printed after its URL.
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl HttpServe {
    pub(crate) fn start(args: &[&str]) -> HttpServe {
        HttpServe::start_env(args, &[])
    }

    /// Like `start`, with more environment variables.
    pub(crate) fn start_env(args: &[&str], env: &[(&str, &str)]) -> HttpServe {
        let mut child = Command::new(BIN)
            .args(["serve", "--http", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = String::new();
        let url = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                panic!("toolhost serve --http exited before serving:\n{seen}");
            };
            if let Some(u) = line.split_whitespace().find(|w| w.starts_with("http://")) {
                break u.to_string();
            }
            seen.push_str(&line);
            seen.push('\n');
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in lines.by_ref().map_while(Result::ok) {
                let mut k = kept.lock().unwrap();
                k.push_str(&line);
                k.push('\n');
            }
        });
        HttpServe { child, url, log }
    }

    /// What the server printed to stderr after its URL, so far.
    pub(crate) fn stderr(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn addr(&self) -> String {
        self.url
            .trim_start_matches("http://")
            .trim_end_matches("/mcp")
            .to_string()
    }
}

impl HttpServe {
    /// SIGKILL (no shutdown, no flush), and reap it.
    pub(crate) fn sigkill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status (within `limit`).
    pub(crate) fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for HttpServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) const LIMIT: Duration = Duration::from_secs(90);

pub(crate) fn serve_args(dir: &ToolDir) -> Vec<String> {
    vec!["--tools".into(), dir.path().display().to_string()]
}

pub(crate) fn stdio_scenario(
    sdk: Sdk,
    scenario: &str,
    mode: Option<&str>,
    dir: &ToolDir,
    extra: &[&str],
) {
    let args = serve_args(dir);
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    run_client(
        client(sdk, scenario, mode, Via::Stdio(&all)),
        scenario,
        LIMIT,
    );
}

pub(crate) fn http_scenario(sdk: Sdk, scenario: &str, mode: Option<&str>) {
    let dir = tools(false);
    let args = serve_args(&dir);
    let server = HttpServe::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    run_client(
        client(sdk, scenario, mode, Via::Http(&server.url)),
        scenario,
        LIMIT,
    );
}

// --- the SDK clients: list, call, structured output, progress, logging, errors

#[test]
fn python_over_stdio_2025_11_25() {
    stdio_scenario(Sdk::Python, "basic", Some("legacy"), &tools(false), &[]);
}

#[test]
fn python_over_stdio_2026_07_28_stateless() {
    // `auto` probes `server/discover` first, then speaks 2026-07-28.
    stdio_scenario(Sdk::Python, "basic", Some("auto"), &tools(false), &[]);
}

#[test]
fn python_over_http_2025_11_25() {
    http_scenario(Sdk::Python, "basic", Some("legacy"));
}

#[test]
fn python_over_http_2026_07_28_stateless() {
    http_scenario(Sdk::Python, "basic", Some("auto"));
}

#[test]
fn typescript_over_stdio() {
    stdio_scenario(Sdk::TypeScript, "basic", None, &tools(false), &[]);
}

#[test]
fn typescript_over_http() {
    http_scenario(Sdk::TypeScript, "basic", None);
}

// --- cancellation stops the guest, frees its slot and is audited

fn cancel_with_audit(sdk: Sdk, http: bool) {
    let dir = tools(false);
    let audit = dir.path().join("audit.jsonl");
    let audit_arg = audit.display().to_string();
    if http {
        let mut args = serve_args(&dir);
        args.extend(["--audit".into(), audit_arg]);
        let server = HttpServe::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
        run_client(
            client(sdk, "cancel", None, Via::Http(&server.url)),
            "cancel",
            LIMIT,
        );
    } else {
        stdio_scenario(sdk, "cancel", None, &dir, &["--audit", &audit_arg]);
    }
    assert_cancelled_in_audit(&audit, "spin", Duration::from_secs(5));
}

/// The audit log at `audit` records the call of `tool` as `cancelled`,
/// its guest stopped within `within`.
fn assert_cancelled_in_audit(audit: &Path, tool: &str, within: Duration) {
    let records = std::fs::read_to_string(audit).unwrap();
    let record: serde_json::Value = records
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["tool"] == tool)
        .unwrap_or_else(|| panic!("no audit record of `{tool}`:\n{records}"));
    assert_eq!(record["outcome"], "cancelled", "{record}");
    assert!(
        u128::from(record["duration_us"].as_u64().unwrap()) < within.as_micros(),
        "the guest ran on after the cancellation: {record}"
    );
}

#[test]
fn python_cancels_a_runaway_guest_over_stdio() {
    cancel_with_audit(Sdk::Python, false);
}

#[test]
fn python_cancels_a_runaway_guest_over_http() {
    cancel_with_audit(Sdk::Python, true);
}

#[test]
fn typescript_cancels_a_runaway_guest_over_stdio() {
    cancel_with_audit(Sdk::TypeScript, false);
}

#[test]
fn typescript_cancels_a_runaway_guest_over_http() {
    cancel_with_audit(Sdk::TypeScript, true);
}

// --- guest output never reaches the protocol stream

#[test]
fn guest_stdout_flood_never_reaches_the_stdio_stream() {
    let dir = tools(false);
    stdio_scenario(Sdk::Python, "flood", Some("legacy"), &dir, &[]);
    stdio_scenario(Sdk::TypeScript, "flood", None, &dir, &[]);
}

/// A review's case: a client's text in a refusal (an unknown method of
/// 1 MB) went whole into the reply and, through rmcp's log of every
/// refused request, into the server's log. Both are bounded now, and every log
/// line is cut at 8 KiB whatever the operator's filter logs.
#[test]
fn a_huge_unknown_method_makes_no_huge_reply_or_log_line() {
    // The default filter, and an operator's that replaces it and logs
    // everything: every line is cut whatever is logged.
    for filter in [None, Some("debug")] {
        let dir = tempfile::tempdir().unwrap();
        copy_tool(&tools_dir(), "echo", dir.path());
        let log = dir.path().join("stderr.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_toolhost"));
        cmd.args(["serve", "--stdio", "--watch", "false", "--tools"])
            .arg(dir.path())
            .env_remove("TOOLHOST_LOG")
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(f) = filter {
            cmd.env("TOOLHOST_LOG", f);
        }
        let (mut child, mut stdin, mut lines) = crate::support::stdio_session(cmd);
        let method = "m".repeat(1 << 20);
        writeln!(stdin, r#"{{"jsonrpc":"2.0","id":2,"method":"{method}"}}"#).unwrap();
        let reply = lines.next().unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(v["id"], 2, "{reply:.300}");
        assert_eq!(v["error"]["code"], -32601, "{reply:.300}");
        assert!(reply.len() < 2048, "a reply of {} bytes", reply.len());
        // A 1 MB request id: the reply must echo it, the log need not.
        writeln!(
            stdin,
            r#"{{"jsonrpc":"2.0","id":"{method}","method":"nothing"}}"#
        )
        .unwrap();
        let reply = lines.next().unwrap().unwrap();
        assert!(reply.contains("-32601"), "{reply:.300}");
        writeln!(stdin, r#"{{"jsonrpc":"2.0","id":3,"method":"ping"}}"#).unwrap();
        lines.next().unwrap().unwrap();
        drop(stdin);
        let _ = child.wait();
        let logged = std::fs::read(&log).unwrap();
        match filter {
            None => assert!(
                logged.len() < 64 << 10,
                "the log grew by {} bytes",
                logged.len()
            ),
            Some(_) => {
                let longest = logged
                    .split(|&b| b == b'\n')
                    .map(<[u8]>::len)
                    .max()
                    .unwrap_or(0);
                // 8 KiB and the note of what was cut.
                assert!(longest < (8 << 10) + 64, "a log line of {longest} bytes");
                let text = String::from_utf8_lossy(&logged);
                assert!(text.contains("bytes cut)"), "the debug log cut nothing");
            }
        }
    }
}

// --- hot reload: tools/list_changed

/// A review's case: a client repeating `notifications/initialized` had its
/// peer kept once per repeat, so a change reached it once per repeat (and
/// the list, and each notification's work, grew without bound). Once per
/// session now.
#[test]
fn a_client_repeating_initialized_is_told_of_a_change_once() {
    let dir = tempfile::tempdir().unwrap();
    copy_tool(&tools_dir(), "echo", dir.path());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_toolhost"));
    cmd.args(["serve", "--stdio", "--tools"])
        .arg(dir.path())
        .stderr(Stdio::null());
    let (mut child, mut stdin, lines) = crate::support::stdio_session(cmd);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Lines until the reply to request `id`, which is returned last.
    let until = |id: u64| -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no reply to {id} after {seen:?}"));
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            seen.push(line);
            if v["id"] == id {
                return seen;
            }
        }
    };
    for _ in 0..200 {
        writeln!(
            stdin,
            r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
        )
        .unwrap();
    }
    writeln!(stdin, r#"{{"jsonrpc":"2.0","id":2,"method":"tools/list"}}"#).unwrap();
    until(2);
    copy_tool(&tools_dir(), "text", dir.path());
    // The change, then a moment for any repeats, then a ping to mark the end.
    let changed = |l: &String| l.contains("notifications/tools/list_changed");
    let first = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("no tools/list_changed after the change");
        if changed(&line) {
            break line;
        }
    };
    std::thread::sleep(Duration::from_millis(1500));
    writeln!(stdin, r#"{{"jsonrpc":"2.0","id":3,"method":"ping"}}"#).unwrap();
    let more = until(3).into_iter().filter(changed).count();
    // One change, told once (a reload or two more of the same files on a
    // loaded machine may tell again; 200 repeats told it 201 times).
    assert!(more < 10, "{} more after {first}", more);
    let _ = child.kill();
    let _ = child.wait();
}

/// Start the client, wait until it has listed the tools, add `text` to the
/// watched directory, and require the client to see it after the
/// notification.
fn list_changed(sdk: Sdk, http: bool, mode: Option<&str>) {
    let dir = tools(true);
    let args = serve_args(&dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = http.then(|| HttpServe::start(&args));
    let via = match &server {
        Some(s) => Via::Http(&s.url),
        None => Via::Stdio(&args),
    };
    let mut child = client(sdk, "list_changed", mode, via)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout: ChildStdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines.next().and_then(Result::ok).unwrap_or_default();
    if !ready.starts_with("READY") {
        let out = wait_output(child, Duration::from_secs(5));
        panic!(
            "client not ready: {ready}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(!ready.contains("json_query"), "{ready}");
    copy_tool(&tools_dir(), "text", dir.path());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = wait_output(child, LIMIT);
    let tools = rest
        .iter()
        .find(|l| l.starts_with("TOOLS"))
        .unwrap_or_else(|| {
            panic!(
                "no tool list after the change: {rest:?}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(
        tools.contains("json_query") && tools.contains("regex_extract"),
        "{tools}"
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn python_sees_tools_list_changed_over_stdio() {
    list_changed(Sdk::Python, false, Some("legacy"));
}

#[test]
fn typescript_sees_tools_list_changed_over_http() {
    list_changed(Sdk::TypeScript, true, None);
}

#[test]
fn python_2026_07_28_listens_for_tools_list_changed_over_http() {
    list_changed(Sdk::Python, true, Some("auto"));
}

#[test]
fn python_2026_07_28_listens_for_tools_list_changed_over_stdio() {
    list_changed(Sdk::Python, false, Some("auto"));
}

// --- raw protocol: what no SDK client sends

/// `toolhost serve --stdio` over `dir`, its stdin and stdout piped.
fn stdio_server(dir: &ToolDir) -> Child {
    Command::new(BIN)
        .args(["serve", "--stdio", "--watch", "false", "--tools"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// One JSON-RPC exchange over stdio: send `lines`, collect every reply line
/// until stdin closes and the server exits.
fn stdio_raw(lines: &[serde_json::Value]) -> Vec<serde_json::Value> {
    let dir = tools(true);
    let mut child = stdio_server(&dir);
    let mut stdin = child.stdin.take().unwrap();
    for l in lines {
        writeln!(stdin, "{l}").unwrap();
    }
    let reader = BufReader::new(child.stdout.take().unwrap());
    let mut replies = Vec::new();
    let want = lines.iter().filter(|l| l.get("id").is_some()).count();
    for line in reader.lines().map_while(Result::ok) {
        replies.push(serde_json::from_str(&line).unwrap());
        if replies.len() == want {
            break;
        }
    }
    drop(stdin);
    let _ = wait_output(child, Duration::from_secs(20));
    replies
}

#[test]
fn requests_it_cannot_serve_get_errors_not_silence() {
    use serde_json::json;
    let replies = stdio_raw(&[
        json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}),
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        json!({"jsonrpc":"2.0","id":2,"method":"server/discover"}),
        json!({"jsonrpc":"2.0","id":3,"method":"no/such/method","params":{}}),
        json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"no_such_tool","arguments":{}}}),
        json!({"jsonrpc":"2.0","id":5,"method":"ping"}),
    ]);
    let by_id = |id: i64| {
        replies
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no reply to request {id}: {replies:?}"))
    };
    assert_eq!(by_id(1)["result"]["protocolVersion"], "2025-11-25");
    assert_eq!(by_id(2)["error"]["code"], -32602, "{:?}", by_id(2));
    assert_eq!(by_id(3)["error"]["code"], -32601, "{:?}", by_id(3));
    let unknown = by_id(4);
    assert_eq!(unknown["error"]["code"], -32602, "{unknown:?}");
    assert!(
        unknown["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown tool")
    );
    assert_eq!(by_id(5)["result"], json!({}));
}

/// A raw stdio session past its start (initialized, and a `ping` answered,
/// so that the session is ready and a `tools/call` takes the direct path,
/// see `toolhost::mcp::StdioService`), of a server over `dir` with `extra`
/// arguments.
fn stdio_ready(
    dir: &ToolDir,
    extra: &[&str],
) -> (Child, std::process::ChildStdin, BufReader<ChildStdout>) {
    stdio_ready_as(dir, extra, INIT)
}

/// A client that answers a tool's elicitation questions (form mode).
const ELICITING_INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"elicitation":{"form":{}}},"clientInfo":{"name":"raw","version":"0"}}}"#;

/// [`stdio_ready`] with `init` as the client's `initialize` (id 1).
fn stdio_ready_as(
    dir: &ToolDir,
    extra: &[&str],
    init: &str,
) -> (Child, std::process::ChildStdin, BufReader<ChildStdout>) {
    use serde_json::json;
    let mut child = Command::new(BIN)
        .args(["serve", "--stdio", "--watch", "false", "--tools"])
        .arg(dir.path())
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    writeln!(stdin, "{init}").unwrap();
    assert_eq!(next_line(&mut reader)["id"], 1);
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
    )
    .unwrap();
    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc":"2.0","id":"ready","method":"ping"})
    )
    .unwrap();
    assert_eq!(next_line(&mut reader)["id"], "ready");
    (child, stdin, reader)
}

/// The server's next line, as JSON.
fn next_line(reader: &mut BufReader<ChildStdout>) -> serde_json::Value {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

/// A raw stdio session past its start ([`stdio_ready`]): write `lines`,
/// close stdin at once, and return every line the server writes until it
/// exits, in order, with its exit status.
fn stdio_then_close(
    lines: &[serde_json::Value],
) -> (Vec<serde_json::Value>, std::process::ExitStatus) {
    stdio_then_close_with(&tools(true), &[], lines)
}

/// [`stdio_then_close`] with a server over `dir` with `extra` arguments.
fn stdio_then_close_with(
    dir: &ToolDir,
    extra: &[&str],
    lines: &[serde_json::Value],
) -> (Vec<serde_json::Value>, std::process::ExitStatus) {
    let (mut child, mut stdin, mut reader) = stdio_ready(dir, extra);
    for l in lines {
        writeln!(stdin, "{l}").unwrap();
    }
    drop(stdin);
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    let lines = rest
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (lines, status)
}

/// A call still running when the client closes its input is answered
/// before the server exits (within the drain), whole and last.
#[test]
fn a_call_running_when_input_ends_is_still_answered() {
    use serde_json::json;
    let (lines, status) = stdio_then_close(&[
        json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":300}}}),
    ]);
    assert!(status.success(), "{status}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["id"], 7);
    assert_eq!(
        lines[0]["result"]["content"][0]["text"], "slept",
        "{lines:?}"
    );
}

/// A call still running when the drain after the end of input runs out
/// is cancelled: never answered, its guest stopped, and audited as
/// `cancelled`; the server exits soon after the drain (5 s).
#[test]
fn a_call_that_outlasts_the_drain_is_cancelled_and_audited() {
    use serde_json::json;
    let dir = tools(true);
    let audit = dir.path().join("audit.jsonl");
    let audit_arg = audit.display().to_string();
    let start = Instant::now();
    let (lines, status) = stdio_then_close_with(
        &dir,
        &["--audit", &audit_arg],
        &[
            json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":30000}}}),
        ],
    );
    let took = start.elapsed();
    assert!(status.success(), "{status}");
    assert!(lines.is_empty(), "a cancelled call was answered: {lines:?}");
    assert!(
        took < Duration::from_secs(20),
        "the server waited for the call ({took:?}), not the drain"
    );
    assert_cancelled_in_audit(&audit, "sleep", Duration::from_secs(20));
}

/// A client cannot make one connection hold calls without bound: past 256
/// calls waiting on it, the server reads no more input until one ends. So
/// a `ping` sent behind 256 calls that each sleep 300 ms is answered only
/// after one of them (unbounded, it would be answered at once, first).
#[test]
fn a_connection_reads_no_more_past_256_calls_waiting() {
    use serde_json::json;
    let dir = ToolDir::new();
    dir.add(
        "hostile",
        "hostile",
        "[limits]\ntimeout = \"60s\"\nmax-concurrency = 256\n",
    );
    let (mut child, mut stdin, mut reader) = stdio_ready(&dir, &[]);
    let mut batch = String::new();
    for id in 0..256 {
        let call = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":300}}});
        batch.push_str(&format!("{call}\n"));
    }
    batch.push_str(&format!(
        "{}\n",
        json!({"jsonrpc":"2.0","id":"behind","method":"ping"})
    ));
    stdin.write_all(batch.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let mut order = Vec::new();
    loop {
        let line = next_line(&mut reader);
        let id = line["id"].clone();
        order.push(id.clone());
        if id == "behind" {
            break;
        }
        assert_eq!(line["result"]["content"][0]["text"], "slept", "{line}");
    }
    drop(stdin);
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(
        order.len() > 1,
        "the ping behind 256 waiting calls was answered before any of them ended"
    );
}

/// A zero-filled array of `n` values: 2 bytes a value as text, and a
/// `serde_json::Value` of 32 bytes and more once parsed.
fn zeros(n: usize) -> serde_json::Value {
    serde_json::Value::Array(vec![serde_json::json!(0); n])
}

/// A request that alone weighs more than a stdio connection may hold
/// (64 MiB, each JSON value counted 64 bytes as over HTTP) is refused by
/// its id, and the connection goes on. Before, any line up to 16 MiB was
/// parsed and held (256 MiB of `Value`s each), 256 calls at a time and
/// more through rmcp's loop (found by review).
#[test]
fn a_stdio_request_too_large_to_hold_is_refused_and_the_connection_goes_on() {
    use serde_json::json;
    let (lines, status) = stdio_then_close(&[
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x","pad":zeros(1_200_000)}}}),
        json!({"jsonrpc":"2.0","id":2,"method":"resources/list","params":{"pad":zeros(1_200_000)}}),
        json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"after"}}}),
    ]);
    assert!(status.success(), "{status}");
    for id in [1, 2] {
        let refused = lines.iter().find(|l| l["id"] == id).expect("answered");
        assert_eq!(refused["error"]["code"], -32600, "{refused}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("too large"),
            "{refused}"
        );
    }
    let after = lines.iter().find(|l| l["id"] == 3).expect("answered");
    assert_eq!(after["result"]["content"][0]["text"], "after", "{after}");
}

/// Requests a stdio connection holds count against its 64 MiB as they run:
/// three calls of 26 MB each (400,000 values in their `_meta`, which no
/// schema checks) do not fit, so the third,
/// and the `ping` behind it, wait for one of the first two to end. (Not
/// bounded, the ping would be answered first, at once.)
#[test]
fn a_stdio_connection_holds_at_most_its_bytes_of_requests() {
    use serde_json::json;
    let dir = ToolDir::new();
    dir.add(
        "hostile",
        "hostile",
        "[limits]\ntimeout = \"60s\"\nmax-concurrency = 8\n",
    );
    let (mut child, mut stdin, mut reader) = stdio_ready(&dir, &[]);
    let mut batch = String::new();
    for id in 0..3 {
        let call = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":1500},"_meta":{"pad":zeros(400_000)}}});
        batch.push_str(&format!("{call}\n"));
    }
    batch.push_str(&format!(
        "{}\n",
        json!({"jsonrpc":"2.0","id":"behind","method":"ping"})
    ));
    stdin.write_all(batch.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let mut order = Vec::new();
    while order.len() < 4 {
        let line = next_line(&mut reader);
        if line["id"] != "behind" {
            assert_eq!(line["result"]["content"][0]["text"], "slept", "{line}");
        }
        order.push(line["id"].clone());
    }
    drop(stdin);
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    assert_ne!(
        order[0], "behind",
        "the ping behind a request that did not fit was answered first: {order:?}"
    );
}

/// A request rmcp's loop answers (a `tools/call` naming its protocol
/// version) is in flight under its id like a direct call: a direct call
/// under the same id is refused while it runs (before, both ran, and two
/// replies carried the id), and a cancelled one frees its id at once (rmcp
/// never answers it).
#[test]
fn a_stdio_request_the_loop_answers_holds_its_id_until_answered_or_cancelled() {
    use serde_json::json;
    let dir = ToolDir::new();
    dir.add(
        "hostile",
        "hostile",
        "[limits]\ntimeout = \"60s\"\nmax-concurrency = 8\n",
    );
    let (mut child, mut stdin, mut reader) = stdio_ready(&dir, &[]);
    let looped = |id: &str, ms: u64| json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":ms},"_meta":{"io.modelcontextprotocol/protocolVersion":"2025-11-25"}}});
    let direct = |id: &str| json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":1}}});
    for l in [
        looped("L", 1500),
        direct("L"),
        looped("M", 30_000),
        json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"M"}}),
        direct("M"),
    ] {
        writeln!(stdin, "{l}").unwrap();
    }
    stdin.flush().unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        got.push(next_line(&mut reader));
    }
    drop(stdin);
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    let by_id = |id: &str| got.iter().filter(|l| l["id"] == id).collect::<Vec<_>>();
    let l = by_id("L");
    assert_eq!(l.len(), 2, "{got:?}");
    assert!(
        l[0]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("already in flight")),
        "{got:?}"
    );
    assert_eq!(l[1]["result"]["content"][0]["text"], "slept", "{got:?}");
    let m = by_id("M");
    assert_eq!(m.len(), 1, "{got:?}");
    assert_eq!(m[0]["result"]["content"][0]["text"], "slept", "{got:?}");
}

/// A cancellation frees a request the loop answers only as rmcp reads it
/// (a review's cases): one with `"id": null`, which rmcp refuses, frees
/// nothing (before, it gave the request's room back while it ran on: no
/// bound at all); one with a member more, which rmcp takes, frees its id
/// (before, the id stayed taken, and its room held, for good).
#[test]
fn a_stdio_cancellation_frees_only_what_rmcp_cancels() {
    use serde_json::json;
    let dir = ToolDir::new();
    dir.add(
        "hostile",
        "hostile",
        "[limits]\ntimeout = \"60s\"\nmax-concurrency = 8\n",
    );
    let (mut child, mut stdin, mut reader) = stdio_ready(&dir, &[]);
    let version =
        json!({"io.modelcontextprotocol/protocolVersion": "2025-11-25", "pad": zeros(400_000)});
    let heavy = |id: &str, ms: u64| json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":ms},"_meta":version}});
    let direct = |id: &str| json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":1}}});
    let mut batch = String::new();
    for l in [
        // Two heavy requests hold most of the room; the refused
        // cancellation frees none of it, so the third waits for one of them.
        heavy("H1", 1500),
        heavy("H2", 1500),
        json!({"jsonrpc":"2.0","id":null,"method":"notifications/cancelled","params":{"requestId":"H1"}}),
        heavy("H3", 1),
    ] {
        batch.push_str(&format!("{l}\n"));
    }
    stdin.write_all(batch.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let mut answered = Vec::new();
    while answered.len() < 3 {
        let line = next_line(&mut reader);
        // (rmcp's refusal of the null-id line carries no id.)
        if line["id"].is_null() {
            continue;
        }
        assert_eq!(line["result"]["content"][0]["text"], "slept", "{line}");
        answered.push(line["id"].clone());
    }
    assert_ne!(
        answered[0], "H3",
        "a refused cancellation freed a running request's room: {answered:?}"
    );
    // A cancellation with a member more: rmcp cancels the request, and its
    // id is free at once for the next.
    for l in [
        json!({"jsonrpc":"2.0","id":"B","method":"tools/call","params":{"name":"sleep","arguments":{"ms":30_000},"_meta":{"io.modelcontextprotocol/protocolVersion":"2025-11-25"}}}),
        json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"B"},"x":1}),
        direct("B"),
    ] {
        writeln!(stdin, "{l}").unwrap();
    }
    stdin.flush().unwrap();
    let line = next_line(&mut reader);
    assert_eq!(line["id"], "B", "{line}");
    assert_eq!(line["result"]["content"][0]["text"], "slept", "{line}");
    drop(stdin);
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
}

/// A 2026-07-28 client's first request (no `initialize`: it names its
/// version inline) reaches the loop before the session is up: it holds its
/// id like any other (a review's case: it was not tracked, and a direct
/// call under its id ran beside it, two replies carrying the id).
#[test]
fn a_stdio_first_request_holds_its_id_too() {
    use serde_json::json;
    let dir = tools(true);
    let mut child = stdio_server(&dir);
    let mut stdin = child.stdin.take().unwrap();
    let meta = json!({"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"raw","version":"0"},"io.modelcontextprotocol/clientCapabilities":{}});
    let first = json!({"jsonrpc":"2.0","id":"X","method":"tools/call","params":{"name":"sleep","arguments":{"ms":2000},"_meta":meta}});
    // A `ping` answered: the session is up, and the next line takes the
    // direct path (as `stdio_ready` waits).
    let ping = json!({"jsonrpc":"2.0","id":"up","method":"ping","params":{"_meta":meta}});
    writeln!(stdin, "{first}\n{ping}").unwrap();
    stdin.flush().unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    assert_eq!(next_line(&mut reader)["id"], "up");
    let second = json!({"jsonrpc":"2.0","id":"X","method":"tools/call","params":{"name":"sleep","arguments":{"ms":1}}});
    writeln!(stdin, "{second}").unwrap();
    stdin.flush().unwrap();
    let refused = next_line(&mut reader);
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("already in flight")),
        "{refused}"
    );
    let slept = next_line(&mut reader);
    assert_eq!(slept["id"], "X", "{slept}");
    assert_eq!(slept["result"]["content"][0]["text"], "slept", "{slept}");
    drop(stdin);
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(rest.is_empty(), "more replies: {rest}");
    assert!(child.wait().unwrap().success());
}

/// A line that is a JSON array is no message: rmcp answers it as such, and
/// it runs nothing (a review's case: the fast path read
/// `["2.0","tools/call",5,{…}]` as a `tools/call`, and ran the tool).
#[test]
fn a_stdio_array_line_runs_nothing() {
    use serde_json::json;
    let (lines, status) = stdio_then_close(&[
        json!(["2.0", "tools/call", 5, {"name": "echo", "arguments": {"text": "ran"}}]),
        json!({"jsonrpc":"2.0","id":6,"method":"ping"}),
    ]);
    assert!(status.success(), "{status}");
    assert!(
        !lines.iter().any(|l| l["id"] == 5),
        "an array line was answered as a request: {lines:?}"
    );
    assert!(lines.iter().any(|l| l["id"] == 6), "{lines:?}");
}

/// A client's answer to a tool's question is taken up to 1 MiB (as JSON
/// text): a call holds its answers until its guest reads them, outside its
/// memory limit (a review's case: eight 15 MiB answers a call held 723 MB).
#[test]
fn a_client_answer_past_its_bound_is_refused() {
    use serde_json::json;
    let dir = ToolDir::new();
    dir.add(
        "hostile",
        "hostile",
        "[limits]\ntimeout = \"60s\"\n[client]\nrequests = [\"elicitation\"]\n",
    );
    let (mut child, mut stdin, mut reader) = stdio_ready_as(&dir, &[], ELICITING_INIT);
    let ask = |id: u32| json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"ask_random","arguments":{}}});
    for (id, pad) in [(2, 2 << 20), (3, 1000)] {
        writeln!(stdin, "{}", ask(id)).unwrap();
        let q = next_line(&mut reader);
        assert_eq!(q["method"], "elicitation/create", "{q}");
        let answer = json!({"jsonrpc":"2.0","id":q["id"],"result":{"action":"accept","content":{"ok":true,"pad":"x".repeat(pad)}}});
        writeln!(stdin, "{answer}").unwrap();
        let r = next_line(&mut reader);
        assert_eq!(r["id"], id, "{r}");
        let text = r["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default();
        if pad > 1 << 20 {
            assert_eq!(r["result"]["isError"], true, "{r}");
            assert!(text.contains("at most 1048576"), "{text}");
        } else {
            assert_ne!(r["result"]["isError"], true, "{r}");
        }
    }
    drop(stdin);
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
}

/// While the reader waits for room, it reads on: the client's answers to
/// the questions of the calls that hold the room pass the line that waits
/// (a review's case: they queued behind it, and those calls timed out).
/// Five asking calls of 15 MiB each: four fit, the fifth waits; the client
/// writes all five, then answers each question as it comes.
#[test]
fn answers_pass_a_stdio_line_waiting_for_room() {
    use serde_json::json;
    let dir = ToolDir::new();
    dir.add(
        "hostile",
        "hostile",
        "[limits]\ntimeout = \"20s\"\nmax-concurrency = 8\n[client]\nrequests = [\"elicitation\"]\n",
    );
    let (mut child, mut stdin, mut reader) = stdio_ready_as(&dir, &[], ELICITING_INIT);
    let pad = "x".repeat(15 << 20);
    let mut batch = String::new();
    for id in 0..5 {
        let call = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"ask_random","arguments":{},"_meta":{"pad":pad}}});
        batch.push_str(&format!("{call}\n"));
    }
    stdin.write_all(batch.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let mut results = Vec::new();
    while results.len() < 5 {
        let line = next_line(&mut reader);
        if line["method"] == "elicitation/create" {
            let answer = json!({"jsonrpc":"2.0","id":line["id"],"result":{"action":"accept","content":{"ok":true}}});
            writeln!(stdin, "{answer}").unwrap();
            stdin.flush().unwrap();
        } else if line.get("result").is_some() || line.get("error").is_some() {
            results.push(line);
        }
    }
    for r in &results {
        assert_ne!(r["result"]["isError"], true, "{r}");
        assert!(r.get("error").is_none(), "{r}");
    }
    drop(stdin);
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
}

/// A call's progress and log notifications reach the client before its
/// result, and the lines of two calls never mix.
#[test]
fn progress_reaches_the_client_before_the_result_over_stdio() {
    use serde_json::json;
    let (lines, status) = stdio_then_close(&[
        json!({"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":"info"}}),
        json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"log_and_progress","arguments":{"steps":3,"ms":20},"_meta":{"progressToken":"p2"}}}),
        json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"beside"}}}),
        // A review's case: the token is copied into every progress notice;
        // one of 1 MB made a call send 1.2 GB. Past 1 KiB it is refused.
        json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"log_and_progress","arguments":{"steps":3,"ms":1},"_meta":{"progressToken":"t".repeat(2000)}}}),
    ]);
    assert!(status.success(), "{status}");
    let long = lines.iter().find(|l| l["id"] == 4).expect("answered");
    assert_eq!(long["error"]["code"], -32602, "{long}");
    assert!(
        !lines.iter().any(|l| l["params"]["progressToken"]
            .as_str()
            .is_some_and(|t| t.len() > 1024)),
        "a notice carried the long token"
    );
    let at = |pred: &dyn Fn(&serde_json::Value) -> bool| {
        lines
            .iter()
            .enumerate()
            .filter(|(_, l)| pred(l))
            .map(|(i, _)| i)
            .collect::<Vec<_>>()
    };
    let progress =
        at(&|l| l["method"] == "notifications/progress" && l["params"]["progressToken"] == "p2");
    let logs = at(&|l| l["method"] == "notifications/message");
    let result = at(&|l| l["id"] == 2);
    assert_eq!(progress.len(), 3, "{lines:?}");
    assert_eq!(logs.len(), 3, "{lines:?}");
    assert_eq!(result.len(), 1, "{lines:?}");
    assert!(
        progress.iter().chain(&logs).all(|&i| i < result[0]),
        "a notification came after the result: {lines:?}"
    );
    let echo = lines.iter().find(|l| l["id"] == 3).expect("echo answered");
    assert_eq!(echo["result"]["content"][0]["text"], "beside");
}

/// A review's case: over a session, a tool's question went to the client
/// whatever it had declared (this client declared no capabilities), as the
/// tool wrote it. It is refused in the call now, and nothing is sent.
#[test]
fn a_session_client_is_asked_only_what_it_declared() {
    use serde_json::json;
    let (lines, status) = stdio_then_close(&[
        json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"test_sampling","arguments":{"prompt":"hi"}}}),
    ]);
    assert!(status.success(), "{status}");
    assert!(
        !lines
            .iter()
            .any(|l| l["method"] == "sampling/createMessage"),
        "a question the client cannot answer was sent: {lines:?}"
    );
    let answer = lines.iter().find(|l| l["id"] == 2).expect("answered");
    assert!(
        answer
            .to_string()
            .contains("did not declare the `sampling` capability"),
        "{answer}"
    );
}

/// A request under the id of a call still running is refused (its reply
/// could not be told from the call's), and the call is answered once.
#[test]
fn a_request_under_a_running_calls_id_is_refused() {
    use serde_json::json;
    let (lines, status) = stdio_then_close(&[
        json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":300}}}),
        json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","arguments":{"text":"twin"}}}),
        json!({"jsonrpc":"2.0","id":5,"method":"tools/list"}),
        // Written so that the direct path would not take it: still refused.
        json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","arguments":{"text":"twin"}},"extra":true}),
    ]);
    assert!(status.success(), "{status}");
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines.iter().all(|l| l["id"] == 5), "{lines:?}");
    let refused = lines
        .iter()
        .filter(|l| l["error"]["code"] == -32600)
        .count();
    assert_eq!(refused, 3, "{lines:?}");
    assert_eq!(
        lines[3]["result"]["content"][0]["text"], "slept",
        "{lines:?}"
    );
}

/// A client that writes its first calls with its handshake, not waiting
/// for the `initialize` reply: the calls are routed once the service is
/// up, so a request under the id of a running call is still refused (the
/// first calls do not slip to the loop, their ids untracked).
#[test]
fn calls_sent_with_the_handshake_are_routed_as_after_it() {
    use serde_json::json;
    let dir = tools(true);
    let mut child = Command::new(BIN)
        .args(["serve", "--stdio", "--watch", "false", "--tools"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let burst = [
        serde_json::from_str::<serde_json::Value>(INIT).unwrap(),
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":300}}}),
        json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","arguments":{"text":"twin"}}}),
    ];
    let text: String = burst.iter().map(|l| format!("{l}\n")).collect();
    stdin.write_all(text.as_bytes()).unwrap();
    drop(stdin);
    let mut rest = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut rest)
        .unwrap();
    assert!(child.wait().unwrap().success());
    let lines: Vec<serde_json::Value> = rest
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of_5: Vec<&serde_json::Value> = lines.iter().filter(|l| l["id"] == 5).collect();
    assert_eq!(of_5.len(), 2, "{lines:?}");
    assert_eq!(of_5[0]["error"]["code"], -32600, "{lines:?}");
    assert_eq!(
        of_5[1]["result"]["content"][0]["text"], "slept",
        "{lines:?}"
    );
}

/// A line past the 16 MiB bound is dropped whole, never buffered into a
/// call, and the connection goes on: the next call is answered.
#[test]
fn a_line_past_the_bound_is_dropped_and_the_next_call_answered() {
    use serde_json::json;
    let huge = "x".repeat(16 << 20);
    let (lines, status) = stdio_then_close(&[
        json!({"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"echo","arguments":{"text":huge}}}),
        json!({"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo","arguments":{"text":"after"}}}),
    ]);
    assert!(status.success(), "{status}");
    assert_eq!(lines.len(), 1, "one reply only, to the call after it");
    assert_eq!(lines[0]["id"], 9);
    assert_eq!(lines[0]["result"]["content"][0]["text"], "after");
}

/// What the direct path does not take goes to rmcp's loop and is answered
/// as before: a `tools/call` with a member JSON-RPC does not define, one
/// without a tool name, and a line that is not JSON (ignored).
#[test]
fn tools_calls_the_direct_path_does_not_take_are_answered_as_before() {
    use serde_json::json;
    let (lines, status) = stdio_then_close(&[
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"odd"}},"extra":true}),
        json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"arguments":{}}}),
        json!("not a message"),
        json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"plain"}}}),
        // Params as an array: rmcp reads none, so no tool runs.
        json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":[null,"echo",{"text":"array"},null,null]}),
    ]);
    assert!(status.success(), "{status}");
    assert!(
        !lines
            .iter()
            .any(|l| l["result"]["content"][0]["text"] == "array"),
        "a tools/call with array params ran: {lines:?}"
    );
    let by_id = |id: i64| lines.iter().find(|l| l["id"] == id);
    assert_eq!(
        by_id(1).unwrap()["result"]["content"][0]["text"],
        "odd",
        "{lines:?}"
    );
    assert_eq!(
        by_id(3).unwrap()["result"]["content"][0]["text"],
        "plain",
        "{lines:?}"
    );
    // rmcp's own answer to a request it cannot read: Invalid Request.
    assert!(
        lines
            .iter()
            .any(|l| l["error"]["code"] == -32600
                || by_id(2).is_some_and(|r| r.get("error").is_some())),
        "{lines:?}"
    );
}

/// A raw HTTP/1.1 POST of an `initialize` request; the status code and body.
pub(crate) fn http_post(addr: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "POST /mcp HTTP/1.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // The server may answer (413) and close before reading the whole
    // body: the rest of the write then fails (a broken pipe, seen once in
    // a full run), and the answer is read all the same.
    let _ = s.write_all(body.as_bytes());
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {resp:?}"));
    (status, resp)
}

pub(crate) const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#;

/// A raw POST of a `sleep` call of `ms` under request id `id` in session
/// `sid`, its response left to read (the connection closes after it).
fn post_sleep(addr: &str, sid: &str, id: u64, ms: u64) -> std::net::TcpStream {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"sleep","arguments":{{"ms":{ms}}}}}}}"#
    );
    write!(
        c,
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nmcp-session-id: {sid}\r\nmcp-protocol-version: 2025-11-25\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    c
}

/// A review's case: rmcp routes a session's messages by request id, and a
/// second request under an id in flight overwrote the first's route: the
/// first's channel stayed for the session's life (concurrent `ping`s under
/// one id leaked 120 MB). A request under an id in flight in its session
/// is refused, as over stdio, and so is an id past 1 KiB; the id is free
/// again once its request is answered.
#[test]
fn a_request_id_in_flight_in_an_http_session_is_not_taken_twice() {
    let dir = tools(true);
    let server = HttpServe::start(
        &serve_args(&dir)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let addr = server.addr();
    let (st, resp) = http_post(&addr, &[], INIT);
    assert_eq!(st, 200, "{resp}");
    let sid = header(&resp, "mcp-session-id").unwrap().to_string();
    let h = [
        ("mcp-session-id", sid.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let (st, _) = http_post(
        &addr,
        &h,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    assert_eq!(st, 202);
    // A `sleep` call of `ms` under id `id`, on a thread of its own; sent
    // again if it met one of the test's pings under that id.
    let slow = |id: u64, ms: u64| {
        let (addr, sid) = (addr.clone(), sid.clone());
        std::thread::spawn(move || {
            let h = [
                ("mcp-session-id", sid.as_str()),
                ("mcp-protocol-version", "2025-11-25"),
            ];
            let call = format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"sleep","arguments":{{"ms":{ms}}}}}}}"#
            );
            loop {
                let (st, resp) = http_post(&addr, &h, &call);
                if !resp.contains("already in flight") {
                    return (st, resp);
                }
            }
        })
    };
    let first = slow(7, 3000);
    let ping = |id: &str| {
        http_post(
            &addr,
            &h,
            &format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#),
        )
    };
    // Until the slow call holds id 7 (then, while it runs, refused).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (st, resp) = ping("7");
        assert_eq!(st, 200, "{resp}");
        if resp.contains("already in flight in this session") {
            assert!(resp.contains("-32600"), "{resp}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "id 7 was never in flight: {resp}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (st, resp) = first.join().unwrap();
    assert_eq!(st, 200, "{resp}");
    assert!(
        resp.contains("slept"),
        "the first request is answered: {resp}"
    );
    let (_, resp) = ping("7");
    assert!(
        resp.contains(r#""result":{}"#),
        "id 7 is free again: {resp}"
    );
    let (_, resp) = ping(&format!("\"{}\"", "i".repeat(2000)));
    assert!(resp.contains("longer than 1024 bytes"), "{resp:.300}");
    let (_, resp) = http_post(
        &addr,
        &h,
        &format!(
            r#"{{"jsonrpc":"2.0","id":8,"method":"ping","params":{{"_meta":{{"progressToken":"{}"}}}}}}"#,
            "t".repeat(2000)
        ),
    );
    assert!(resp.contains("progress tokens longer than"), "{resp:.300}");

    // A review's case: resuming a request's stream (`Last-Event-ID`) ended
    // the request's own stream before its response. The id stays in
    // flight until the resumed stream carries the response.
    let mut post = post_sleep(&addr, &sid, 9, 2000);
    // The stream's first event id.
    let mut seen = Vec::new();
    let event = loop {
        let mut b = [0u8; 512];
        let n = post.read(&mut b).unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&b[..n]);
        let text = String::from_utf8_lossy(&seen);
        if let Some(line) = text.lines().find_map(|l| l.strip_prefix("id: ")) {
            break line.trim().to_string();
        }
    };
    let resumed = {
        let (addr, sid) = (addr.clone(), sid.clone());
        std::thread::spawn(move || {
            let mut get = std::net::TcpStream::connect(&addr).unwrap();
            write!(
                get,
                "GET /mcp HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nmcp-session-id: {sid}\r\nmcp-protocol-version: 2025-11-25\r\nLast-Event-ID: {event}\r\n\r\n"
            )
            .unwrap();
            get.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; 4096];
            while !String::from_utf8_lossy(&got).contains("slept") {
                match get.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&b[..n]),
                }
            }
            String::from_utf8_lossy(&got).to_string()
        })
    };
    // The request's own stream ends once the resumed one took its place
    // (the end of its chunked body).
    post.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    while !String::from_utf8_lossy(&seen).contains("\r\n0\r\n\r\n") {
        let mut b = [0u8; 512];
        let n = post.read(&mut b).unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&b[..n]);
    }
    assert!(!String::from_utf8_lossy(&seen).contains("slept"));
    let (_, resp) = ping("9");
    assert!(
        resp.contains("already in flight in this session"),
        "resumed, id 9 was freed before its response: {resp}"
    );
    let carried = resumed.join().unwrap();
    assert!(carried.contains("slept"), "{carried}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, resp) = ping("9");
        if resp.contains(r#""result":{}"#) {
            break;
        }
        assert!(Instant::now() < deadline, "id 9 never freed: {resp}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A cancelled request's id is free at once. Cancelled once rmcp has
    // the request (the head of its response has come): cancelled while it
    // was being set up, rmcp may see the cancellation first and run the
    // call to its end (`session.rs`, `Stage::CancelledEarly`), which a
    // loaded machine made this test meet now and then.
    let (headed, head) = std::sync::mpsc::channel();
    let cancelled = {
        let (addr, sid) = (addr.clone(), sid.clone());
        std::thread::spawn(move || {
            let mut c = post_sleep(&addr, &sid, 10, 5000);
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; 4096];
            let mut told = false;
            loop {
                match c.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&b[..n]),
                }
                if !told && got.windows(4).any(|w| w == b"\r\n\r\n") {
                    told = true;
                    headed.send(()).unwrap();
                }
            }
            ((), String::from_utf8_lossy(&got).to_string())
        })
    };
    head.recv_timeout(Duration::from_secs(20))
        .expect("id 10's response never started");
    assert!(ping("10").1.contains("already in flight"));
    let (st, _) = http_post(
        &addr,
        &h,
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":10}}"#,
    );
    assert_eq!(st, 202);
    // Freed at once once rmcp had the request; a request cancelled while
    // it was being set up is freed when its stream ends.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, resp) = ping("10");
        if resp.contains(r#""result":{}"#) {
            break;
        }
        assert!(Instant::now() < deadline, "id 10 never freed: {resp}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The call was cancelled: it ended well before its 5 s.
    let (_, resp) = cancelled.join().unwrap();
    assert!(!resp.contains("slept"), "{resp}");
}

#[test]
fn http_rejects_foreign_hosts_and_origins() {
    let dir = tools(true);
    let server = HttpServe::start(
        &serve_args(&dir)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let addr = server.addr();
    assert_eq!(http_post(&addr, &[], INIT).0, 200);
    // The refusal says what to do (rmcp's named neither the check nor the
    // fix: found by the user review), and does not echo the header.
    let (st, resp) = http_post(&addr, &[("Host", "evil.example.com")], INIT);
    assert_eq!(st, 403, "{resp}");
    assert!(
        resp.contains("--allow-host NAME") && !resp.contains("evil.example.com"),
        "{resp}"
    );
    // An unknown protocol version is refused naming the ones it speaks.
    let (st, resp) = http_post(
        &addr,
        &[("MCP-Protocol-Version", "2099-01-01")],
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    );
    assert_eq!(st, 400, "{resp}");
    assert!(
        resp.contains("this server speaks") && resp.contains("2025-11-25"),
        "{resp}"
    );
    let evil = [("Origin", "http://evil.example.com")];
    let (st, resp) = http_post(&addr, &evil, INIT);
    assert_eq!(st, 403, "{resp}");
    assert!(!resp.contains("--allow-host"), "{resp}");
    let local = [("Origin", "http://localhost:3000")];
    assert_eq!(http_post(&addr, &local, INIT).0, 200);
}

#[test]
fn http_bearer_token_is_required_when_set() {
    let dir = tools(true);
    let mut args = serve_args(&dir);
    args.extend(["--bearer-token".into(), "s3cret-s3cret-s3cret".into()]);
    let server = HttpServe::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let addr = server.addr();
    let (status, resp) = http_post(&addr, &[], INIT);
    assert_eq!(status, 401, "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{resp}"
    );
    assert_eq!(
        http_post(&addr, &[("Authorization", "Bearer wrong")], INIT).0,
        401
    );
    assert_eq!(
        http_post(
            &addr,
            &[("Authorization", "Bearer s3cret-s3cret-s3cret")],
            INIT
        )
        .0,
        200
    );
}

#[test]
fn http_refuses_a_public_address_without_a_token() {
    let out = Command::new(BIN)
        .args([
            "serve",
            "--http",
            "0.0.0.0:0",
            "--watch",
            "false",
            "--tools",
        ])
        .arg(tools(true).path())
        .env_remove("TOOLHOST_BEARER_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without a bearer token"), "{err}");
}

/// A host loads only what it is named: run in a directory holding
/// `tools/` (a cloned project's, say) with no `--tools`, it loads nothing
/// and says so. Before, `--tools` defaulted to `./tools` (found by review).
#[test]
fn no_tools_are_loaded_unless_named() {
    let project = tempfile::tempdir().unwrap();
    let planted = project.path().join("tools");
    std::fs::create_dir(&planted).unwrap();
    copy_tool(&tools_dir(), "echo", &planted);
    let out = Command::new(BIN)
        .args(["list"])
        .current_dir(project.path())
        .env_remove("TOOLHOST_TOOLS")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("no tools named"), "{err}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("echo"),
        "the planted tool was loaded"
    );
}

/// A token short enough to guess is refused, on any address.
#[test]
fn http_refuses_a_short_token() {
    // (Taken, it would serve until killed.)
    let child = Command::new(BIN)
        .args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--watch",
            "false",
            "--tools",
        ])
        .arg(tools(true).path())
        .env("TOOLHOST_BEARER_TOKEN", "s3cret")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(20));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the bearer token is 6 bytes"), "{err}");
}

#[test]
fn http_limits_the_request_body() {
    let dir = tools(true);
    let server = HttpServe::start(
        &serve_args(&dir)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(5 << 20)
    );
    assert_eq!(http_post(&server.addr(), &[], &big).0, 413);
}

/// The value of response header `name` in a raw HTTP response.
pub(crate) fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    resp.lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

#[test]
fn http_shutdown_lets_running_calls_finish() {
    let dir = tools(false);
    let mut server = HttpServe::start(
        &serve_args(&dir)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let addr = server.addr();
    let (status, resp) = http_post(&addr, &[], INIT);
    assert_eq!(status, 200, "{resp}");
    let session = header(&resp, "mcp-session-id")
        .unwrap_or_else(|| panic!("no session id: {resp}"))
        .to_string();
    let in_session = |session: &str| {
        vec![
            ("mcp-session-id".to_string(), session.to_string()),
            ("mcp-protocol-version".to_string(), "2025-11-25".to_string()),
        ]
    };
    let headers = in_session(&session);
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    assert_eq!(http_post(&addr, &h, initialized).0, 202);
    let call = std::thread::spawn({
        let addr = addr.clone();
        move || {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let body = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":3000}}}"#;
            http_post(&addr, &h, body)
        }
    });
    // Long enough for the server to have read the request even on a
    // loaded machine (a request not yet read when the signal comes is an
    // idle connection, which a graceful shutdown closes).
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    let exit = server.terminate(Duration::from_secs(20));
    let (status, resp) = call.join().unwrap();
    assert_eq!(status, 200, "{resp}");
    assert!(
        resp.contains(r#""text":"slept""#) && !resp.contains("isError\":true"),
        "the running call did not finish: {resp}"
    );
    assert!(exit.success(), "{exit}");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the server exited before the call finished"
    );
}

/// A client that promises a longer body than it sends gets `408 Request
/// Timeout` once the request timeout passes (found by the `mcp_http` fuzz
/// target: it was a 504, blaming a gateway for the client's upload), and
/// the server serves the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_is_a_408_not_a_server_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = echo_http_server(|o| o.request_timeout = Duration::from_millis(500)).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    s.write_all(
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len() + 100
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut resp = String::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut resp))
        .await
        .expect("an answer after the request timeout")
        .unwrap();
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    let addr = addr.to_string();
    let (status, _) = tokio::task::spawn_blocking(move || {
        http_post(
            &addr,
            &[],
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#,
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
}

/// A body that stops coming is refused once it has sent nothing for the
/// header timeout, not held until the request's timeout: one tenant's
/// silent bodies held every connection a host's descriptors allowed for
/// 120 s each (found by review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_coming_is_refused_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = echo_http_server(|o| {
        o.header_read_timeout = Duration::from_secs(1);
        o.request_timeout = Duration::from_secs(60);
    })
    .await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    s.write_all(
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{}",
            body.len(),
            &body[..10]
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut resp = String::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut resp))
        .await
        .expect("an answer well before the request timeout")
        .unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 408") && resp.contains("request body stalled"),
        "{resp}"
    );
    assert!(started.elapsed() >= Duration::from_millis(900), "{resp}");
    // A body that keeps coming, however slowly, is read whole.
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    for part in body.as_bytes().chunks(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(part).await.unwrap();
    }
    let mut resp = String::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut resp))
        .await
        .unwrap()
        .unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

/// `echo` served over HTTP in this process, with `opts` changed by `set`;
/// its address.
async fn echo_http_server(
    set: impl FnOnce(&mut toolhost::mcp::HttpOptions),
) -> std::net::SocketAddr {
    let core = toolhost::Core::builder()
        .source(toolhost::Scope::default(), tools_dir().join("echo.toml"))
        .build()
        .await
        .unwrap();
    let mut opts = toolhost::mcp::HttpOptions::new("127.0.0.1:0".parse().unwrap());
    set(&mut opts);
    let http = toolhost::mcp::HttpServer::bind(
        toolhost::mcp::McpServer::new(core, toolhost::Scope::default()),
        opts,
    )
    .await
    .unwrap();
    let addr = http.local_addr();
    tokio::spawn(http.serve(std::future::pending()));
    addr
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;

fn initialize_request(addr: std::net::SocketAddr) -> String {
    format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-11-25\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{INITIALIZE}",
        INITIALIZE.len()
    )
}

/// M7: connections that never finish their headers (slowloris) are closed
/// after the header-read timeout, holding nothing; the server serves the
/// next client all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_their_headers_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = echo_http_server(|o| o.header_read_timeout = Duration::from_millis(500)).await;
    let mut idle = Vec::new();
    for i in 0..50 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Half of them trickle part of a request line; half send nothing.
        if i % 2 == 0 {
            s.write_all(b"POST /mcp HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        idle.push(s);
    }
    let started = Instant::now();
    for mut s in idle {
        let mut buf = Vec::new();
        // Closed by the server: the read ends (or is reset), well before
        // the test's own limit.
        let r = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
        assert!(r.is_ok(), "a connection without headers stayed open");
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(initialize_request(addr).as_bytes())
        .await
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

/// A review's case: hyper buffered an unfinished request head up to about
/// 408 KiB, so each connection sending a long header held that for the
/// header timeout, with no credential (1.6 GB at the connection cap). A
/// head past 64 KiB is answered 431 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_past_64_kib_is_refused_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = echo_http_server(|o| o.header_read_timeout = Duration::from_secs(60)).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /mcp HTTP/1.1\r\nHost: x\r\nX-A: ")
        .await
        .unwrap();
    // Unfinished: the head never ends.
    let _ = s.write_all(&vec![b'a'; 100 << 10]).await;
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "the connection was held");
    assert!(
        buf.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    // A head of a few KiB (a long bearer token) is fine.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = initialize_request(addr).replacen(
        "Connection: close\r\n",
        &format!("Connection: close\r\nX-Pad: {}\r\n", "p".repeat(16 << 10)),
        1,
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp:.300}");
}

/// The review's case: the metrics listener was served by `axum::serve`,
/// with no header timeout and no connection cap, and the shipped
/// deployment exposes it. Connections that never finished their headers
/// each held a descriptor forever, until `/mcp` and `/healthz` failed
/// with "too many open files". It is bounded as the MCP listener is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_connections_that_never_finish_their_headers_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server =
        toolhost::MetricsServer::bind("127.0.0.1:0".parse().unwrap(), toolhost::Metrics::new())
            .await
            .unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.serve(std::future::pending()));
    let mut idle = Vec::new();
    for i in 0..40 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        idle.push(s);
    }
    // Past 8 from one address, a connection is answered 429 and closed at
    // once; the rest are closed by the header timeout (10 s), well before
    // this test's own limit.
    let mut refused = 0;
    for mut s in idle {
        let mut buf = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(40), s.read_to_end(&mut buf)).await;
        assert!(
            r.is_ok(),
            "a metrics connection without headers stayed open"
        );
        refused += usize::from(buf.starts_with(b"HTTP/1.1 429"));
    }
    assert_eq!(refused, 32, "one address holds at most 8");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

/// M7: at most `max_connections` are served at once; the next waits in
/// the accept queue (no descriptor is spent on it in the server) and is
/// served as soon as one closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_more_connections_than_its_limit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = echo_http_server(|o| {
        o.max_connections_per_address = 3;
        o.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let from = |ip: &str| {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        async move {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind((ip, 0).into()).unwrap();
            s.connect(addr).await.unwrap()
        }
    };
    let served = |mut c: tokio::net::TcpStream| async move {
        c.write_all(initialize_request(addr).as_bytes())
            .await
            .unwrap();
        let mut resp = String::new();
        tokio::time::timeout(Duration::from_secs(20), c.read_to_string(&mut resp))
            .await
            .expect("an answer")
            .unwrap();
        resp
    };
    // Three idle connections from 127.0.0.1 hold its limit.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(from("127.0.0.1").await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A fourth is answered 429 and closed at once, before it sends
    // anything.
    let mut fourth = from("127.0.0.1").await;
    let mut refused = String::new();
    tokio::time::timeout(Duration::from_secs(20), fourth.read_to_string(&mut refused))
        .await
        .expect("closed at once")
        .unwrap();
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    assert!(refused.contains("the most one address may"), "{refused}");
    // Another client (127.0.0.2 is loopback too) is served.
    let other = served(from("127.0.0.2").await).await;
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    // Once one of the three closes, 127.0.0.1 is served again (once the
    // server has seen it close: on a loaded machine, maybe not at once).
    drop(held.pop());
    let mut again = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        again = served(from("127.0.0.1").await).await;
        if !again.starts_with("HTTP/1.1 429") {
            break;
        }
    }
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_until_one_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = echo_http_server(|o| {
        o.max_connections = 2;
        o.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let held: Vec<_> =
        futures::future::join_all((0..2).map(|_| tokio::net::TcpStream::connect(addr)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    // Let the server accept both.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    third
        .write_all(initialize_request(addr).as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(1500), third.read(&mut buf)).await;
    assert!(early.is_err(), "served past the cap: {early:?}");
    drop(held);
    let mut resp = String::new();
    tokio::time::timeout(Duration::from_secs(20), third.read_to_string(&mut resp))
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

/// A handler dropped takes its change watchers with it, at once, not at
/// the scope's next change: a client that makes servers in a loop (an
/// agent CLI re-initializing its SDK server) leaves no tasks behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_server_leaves_no_watcher_tasks() {
    let core = toolhost::Core::builder()
        .source(toolhost::Scope::default(), tools_dir().join("echo.toml"))
        .build()
        .await
        .unwrap();
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let before = tasks();
    for _ in 0..50 {
        drop(toolhost::mcp::McpServer::new(
            core.clone(),
            toolhost::Scope::default(),
        ));
    }
    let waited = Instant::now();
    while tasks() > before + 5 {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "{} tasks left by 50 dropped servers",
            tasks() - before
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A server started on a socket pair, as every Node client (Claude Code,
/// the TypeScript SDK) starts one, serves over it (polled, see
/// `toolhost::mcp::stdio`), and leaves the socket blocking again for
/// whoever else holds it (here: this test's copy of the server's end).
#[test]
fn stdio_over_a_socket_pair_serves_and_puts_the_socket_back() {
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let blocking = |s: &UnixStream| {
        // SAFETY: F_GETFL on a socket this test holds.
        let flags = unsafe { libc::fcntl(s.as_raw_fd(), libc::F_GETFL) };
        flags & libc::O_NONBLOCK == 0
    };
    assert!(blocking(&theirs));
    let mut child = Command::new(BIN)
        .args(["serve", "--watch", "false", "--stdio", "--tools"])
        .arg(tools_dir().join("echo.toml"))
        .stdin(Stdio::from(OwnedFd::from(theirs.try_clone().unwrap())))
        .stdout(Stdio::from(OwnedFd::from(theirs.try_clone().unwrap())))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(ours.try_clone().unwrap()).lines();
    writeln!(ours, "{INITIALIZE}").unwrap();
    assert!(lines.next().unwrap().unwrap().contains("\"id\":1"));
    // Polled: the server made the socket (this description) non-blocking.
    assert!(!blocking(&theirs), "the socket is not polled");
    writeln!(
        ours,
        r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
    )
    .unwrap();
    for i in 2..12 {
        writeln!(ours, r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"over a socket {i}"}}}}}}"#).unwrap();
        let reply = lines.next().unwrap().unwrap();
        assert!(reply.contains(&format!("over a socket {i}")), "{reply}");
    }
    // The server saw its input end and exited; the socket it polled is
    // blocking again.
    ours.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(blocking(&theirs), "the server left the socket non-blocking");
}
