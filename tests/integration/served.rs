//! Resources, prompts and completions served from components
//! (`toolhost:tool@0.2.0`): the `files` example's grant as `file:///data/...`
//! resources, the `prompts` example's prompts, driven by the real Python
//! `mcp` client over both protocol revisions, with the `hostile` fixture's
//! huge and runaway reads stopped by their limits; and, through the
//! library, that a scope never sees another's resources or prompts (the
//! same "not found" as for a URI nobody serves), that policy and audit
//! apply to reads as to calls, that components built for `@0.1.0` keep
//! loading next to `@0.2.0` ones, and that two components claiming the
//! same URIs in a scope is a load error.

use crate::mcp::{HttpServe, LIMIT, Sdk, Via, client, run_client};
use crate::support::*;
use serde_json::json;
use toolhost::{CallErrorKind, CallRequest, CompletionRef, Core, LoadErrorKind, Scope};

/// The hostile fixture with a short timeout and a small `max-output`.
fn hostile_dir() -> ToolDir {
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        "[limits]\ntimeout = \"3s\"\nmax-output = \"1 MiB\"\n",
    );
    d
}

fn notes() -> String {
    root()
        .join("example-tools/files/data/notes.txt")
        .display()
        .to_string()
}

/// The files tool (granted the example data, read-only) and the prompts
/// tool.
fn files_and_prompts() -> ToolDir {
    let d = ToolDir::new();
    crate::mcp::copy_tool(&tools_dir(), "prompts", d.path());
    let data = root().join("example-tools/files/data");
    d.add(
        "files",
        "files",
        &format!(
            "[[fs]]\nguest = \"/data\"\nhost = \"{}\"\nmode = \"ro\"\n",
            data.display()
        ),
    );
    d
}

fn served_scenario(mode: &str, http: bool) {
    let served = files_and_prompts();
    let tools = served.path().display().to_string();
    let hostile = hostile_dir();
    let hostile_path = hostile.path().display().to_string();
    let args = ["--tools", &tools, "--tools", &hostile_path];
    let server;
    let mut cmd = if http {
        server = HttpServe::start(&args);
        client(Sdk::Python, "served", Some(mode), Via::Http(&server.url))
    } else {
        client(Sdk::Python, "served", Some(mode), Via::Stdio(&args))
    };
    cmd.env("TOOLHOST_CLIENT_NOTES", notes())
        .env("TOOLHOST_CLIENT_HOSTILE", "1");
    run_client(cmd, "served", LIMIT);
}

/// The v2 TypeScript SDK over HTTP, in `mode` (`auto`: 2026-07-28,
/// `legacy`: a 2025-11-25 session).
fn ts_v2_served(mode: &str) {
    ts_served(Sdk::TypeScriptV2, Some(mode));
}

/// A TypeScript SDK over HTTP: v2 in `mode` (`auto`: 2026-07-28,
/// `legacy`: a 2025-11-25 session), or v1 (`mode` `None`: a session).
fn ts_served(sdk: Sdk, mode: Option<&str>) {
    let served = files_and_prompts();
    let tools = served.path().display().to_string();
    let server = HttpServe::start(&["--tools", &tools]);
    let mut cmd = client(sdk, "served", mode, Via::Http(&server.url));
    cmd.env("TOOLHOST_CLIENT_NOTES", notes());
    run_client(cmd, "served", LIMIT);
}

#[test]
fn typescript_v1_reads_resources_and_gets_prompts_over_http() {
    ts_served(Sdk::TypeScript, None);
}

#[test]
fn typescript_v2_reads_resources_and_gets_prompts_over_http_2026_07_28() {
    ts_v2_served("auto");
}

#[test]
fn typescript_v2_reads_resources_and_gets_prompts_over_http_2025_11_25() {
    ts_v2_served("legacy");
}

#[test]
fn python_reads_resources_gets_prompts_and_completes_over_stdio_2026_07_28() {
    served_scenario("auto", false);
}

#[test]
fn python_reads_resources_gets_prompts_and_completes_over_http_2025_11_25() {
    served_scenario("legacy", true);
}

/// A 2025-11-25 session subscribed to a file resource is told when a reload
/// replaces the component serving it (what the host can observe).
#[test]
fn a_subscribed_session_is_told_when_its_resources_component_is_replaced() {
    updated_on_reload("subscribe", "legacy");
}

/// A 2026-07-28 `subscriptions/listen` stream for prompt and resource list
/// changes and one resource gets all three when a reload replaces the
/// component serving them.
#[test]
fn a_2026_07_28_listener_is_told_of_list_changes_and_its_resource_update() {
    updated_on_reload("listen_served", "auto");
}

/// Start client `scenario`, wait until it is READY, replace the files
/// tool's manifest, and require the client to report the update of
/// `file:///data/notes.txt`.
fn updated_on_reload(scenario: &str, mode: &str) {
    use std::io::BufRead as _;
    let served = files_and_prompts();
    let tools = served.path().display().to_string();
    let args = ["--tools", tools.as_str(), "--watch", "true"];
    let mut child = client(Sdk::Python, scenario, Some(mode), Via::Stdio(&args))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.next().and_then(Result::ok).unwrap_or_default();
    if ready != "READY" {
        let out = crate::mcp::wait_output(child, std::time::Duration::from_secs(5));
        panic!(
            "client not ready: {ready}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A new version of the files tool's manifest: a reload replaces it.
    let m = served.path().join("files.toml");
    let text = std::fs::read_to_string(&m).unwrap();
    std::fs::write(&m, format!("{text}\n[limits]\ntimeout = \"9s\"\n")).unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = crate::mcp::wait_output(child, LIMIT);
    assert!(
        rest.iter().any(|l| l == "UPDATED file:///data/notes.txt") && out.status.success(),
        "{rest:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Scope `a` has the files and prompts tools; scope `b` only echo. The
/// directories live as long as the core is used.
async fn two_scopes(audit: Option<&std::path::Path>) -> (Core, ToolDir, ToolDir) {
    let a = files_and_prompts();
    crate::mcp::copy_tool(&tools_dir(), "echo", a.path());
    let b = ToolDir::new();
    b.add("echo", "echo", "");
    let mut builder = Core::builder()
        .config(test_config())
        .source(Scope::new("a"), a.path())
        .source(Scope::new("b"), b.path());
    if let Some(p) = audit {
        builder = builder.audit(toolhost::Audit::to_file(p).unwrap());
    }
    let core = builder.build().await.unwrap();
    assert!(core.load_errors().is_empty(), "{:?}", core.load_errors());
    (core, a, b)
}

#[tokio::test]
async fn a_scope_never_sees_or_reads_another_scopes_resources_or_prompts() {
    let (core, _a, _b) = two_scopes(None).await;
    let (a, b) = (Scope::new("a"), Scope::new("b"));
    assert_eq!(core.serves(&a), (true, true, true));
    assert_eq!(core.serves(&b), (false, false, false));
    assert!(
        core.resource_templates(&a)
            .iter()
            .any(|t| t.uri_template == "file:///data/{+path}")
    );
    assert!(core.resource_templates(&b).is_empty());
    assert!(core.prompts(&b).is_empty() && core.resources(&b).is_empty());
    let listed = core
        .list_resources(CallRequest::new(b.clone(), "", None))
        .await;
    assert!(listed.is_empty(), "{listed:?}");

    let uri = "file:///data/notes.txt";
    let mine = core
        .read_resource(CallRequest::new(a.clone(), uri, None))
        .await
        .unwrap();
    assert_eq!(mine.len(), 1);
    // Another scope's URI is exactly a URI nobody serves.
    let theirs = core
        .read_resource(CallRequest::new(b.clone(), uri, None))
        .await
        .unwrap_err();
    let nobody = core
        .read_resource(CallRequest::new(b.clone(), "file:///nowhere/x", None))
        .await
        .unwrap_err();
    assert_eq!(theirs.kind(), &CallErrorKind::UnknownTool);
    assert_eq!(nobody.kind(), &CallErrorKind::UnknownTool);
    assert_eq!(
        theirs.to_string().replace(uri, "URI"),
        nobody.to_string().replace("file:///nowhere/x", "URI")
    );
    // Prompts and completions likewise.
    let args = json!({"code": "x = 1", "language": "python"});
    assert!(
        core.get_prompt(CallRequest::new(
            a.clone(),
            "code_review",
            args.as_object().cloned()
        ))
        .await
        .is_ok()
    );
    let theirs = core
        .get_prompt(CallRequest::new(
            b.clone(),
            "code_review",
            args.as_object().cloned(),
        ))
        .await
        .unwrap_err();
    assert_eq!(theirs.kind(), &CallErrorKind::UnknownTool);
    assert_eq!(theirs.to_string(), "unknown prompt `code_review`");
    let c = core
        .complete(
            CallRequest::new(a.clone(), "", None),
            CompletionRef::Prompt("code_review".into()),
            "language",
            "py",
        )
        .await
        .unwrap();
    assert!(c.values.contains(&"python".to_string()), "{c:?}");
    let theirs = core
        .complete(
            CallRequest::new(b, "", None),
            CompletionRef::Prompt("code_review".into()),
            "language",
            "py",
        )
        .await
        .unwrap_err();
    assert_eq!(theirs.kind(), &CallErrorKind::UnknownTool);
}

#[tokio::test]
async fn reads_are_audited_and_a_uri_outside_the_declared_ones_never_reaches_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let (core, _a, _b) = two_scopes(Some(&audit)).await;
    let a = Scope::new("a");
    core.read_resource(CallRequest::new(a.clone(), "file:///data/notes.txt", None))
        .await
        .unwrap();
    // Not under the template's prefix: refused before any sandbox.
    let e = core
        .read_resource(CallRequest::new(a.clone(), "file:///etc/passwd", None))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "resource `file:///etc/passwd` not found");
    // Under it, but escaping the grant: the guest's sandbox refuses it, and
    // no host path reaches the caller.
    let e = core
        .read_resource(CallRequest::new(a, "file:///data/../../etc/passwd", None))
        .await
        .unwrap_err();
    assert!(
        !e.to_string().contains(&root().display().to_string()),
        "{e}"
    );
    core.flush_audit().await;
    let log = std::fs::read_to_string(&audit).unwrap();
    let recs: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 3, "{log}");
    assert_eq!(recs[0]["event"], "resources/read");
    assert_eq!(recs[0]["tool"], "file:///data/notes.txt");
    assert_eq!(recs[0]["outcome"], "ok");
    assert!(recs[0]["tool_sha256"].is_string() && recs[0]["fuel_used"].is_u64());
    assert_eq!(recs[1]["decision"], "none");
    assert_eq!(recs[1]["outcome"], "unknown_tool");
}

#[tokio::test]
async fn policy_rules_match_resource_uris_and_prompt_names() {
    let a = ToolDir::new();
    crate::mcp::copy_tool(&tools_dir(), "prompts", a.path());
    let policy = toolhost::Policy {
        rules: vec![
            serde_json::from_value(json!({
                "effect": "deny", "tool": "summarize", "reason": "no summaries here"
            }))
            .unwrap(),
            serde_json::from_value(json!({"effect": "deny", "tool": "explain_*"})).unwrap(),
        ],
    };
    let core = Core::builder()
        .config(test_config())
        .source(Scope::default(), a.path())
        .policy(policy)
        .build()
        .await
        .unwrap();
    let names: Vec<String> = core
        .prompts(&Scope::default())
        .iter()
        .map(|p| p.name.to_string())
        .collect();
    // A rule without an argument hides what it denies.
    assert_eq!(names, ["code_review"]);
    let e = core
        .get_prompt(CallRequest::new(
            Scope::default(),
            "summarize",
            json!({"text": "t"}).as_object().cloned(),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &CallErrorKind::UnknownTool);
}

#[tokio::test]
async fn components_built_for_0_1_0_keep_loading_next_to_0_2_0_ones() {
    let d = ToolDir::new();
    d.add("py-echo", "py-echo", "");
    crate::mcp::copy_tool(&tools_dir(), "prompts", d.path());
    let core = Core::builder()
        .config(test_config())
        .source(Scope::default(), d.path())
        .build()
        .await
        .unwrap();
    assert!(core.load_errors().is_empty(), "{:?}", core.load_errors());
    let out = core
        .call(CallRequest::new(
            Scope::default(),
            "py_echo",
            json!({"text": "old world"}).as_object().cloned(),
        ))
        .await
        .unwrap();
    assert_eq!(out.text(), "old world");
    assert_eq!(core.serves(&Scope::default()), (false, true, true));
}

/// Two components claiming the same URIs: neither serves them (keeping
/// the first let a hostile package named to sort first take another's
/// resource reads and prompts, found by review), each gets an error naming
/// the other, and a third claiming them is refused too.
#[tokio::test]
async fn two_components_claiming_the_same_uris_in_a_scope_is_a_load_error() {
    let dirs: Vec<ToolDir> = ["hostile", "hostile2", "hostile3"]
        .iter()
        .map(|name| {
            let d = ToolDir::new();
            d.add(name, "hostile", "");
            d
        })
        .collect();
    let mut builder = Core::builder().config(test_config());
    for d in &dirs {
        builder = builder.source(Scope::default(), d.path());
    }
    let core = builder.build().await.unwrap();
    let errors = core.load_errors();
    let clashes: Vec<String> = errors
        .iter()
        .filter(|e| matches!(e.kind, LoadErrorKind::ServedClash { .. }))
        .map(ToString::to_string)
        .collect();
    assert_eq!(clashes.len(), 3, "{clashes:#?}");
    assert!(
        clashes.iter().all(|c| c.contains("hostile://")),
        "{clashes:#?}"
    );
    for d in &dirs {
        let named = d.path().display().to_string();
        assert!(
            clashes.iter().any(|c| c.contains(&named)),
            "no error names {named}: {clashes:#?}"
        );
    }
    assert!(core.resources(&Scope::default()).is_empty());
    assert!(core.resource_templates(&Scope::default()).is_empty());
    assert!(core.prompts(&Scope::default()).is_empty());
}

/// The review's case: subscriptions hold their URIs for as long as their
/// sessions live, outside every request's count, so a tenant opening
/// session after session (256 subscriptions each) grew the server without
/// bound. All sessions of a server hold at most 4,096 together; past that
/// a subscribe is refused with a clear error, and the sessions still
/// serve.
#[test]
fn subscriptions_of_all_sessions_together_are_bounded() {
    use crate::mcp::{INIT, header, http_post};
    let served = files_and_prompts();
    let tools = served.path().display().to_string();
    let server = HttpServe::start(&["--tools", tools.as_str(), "--watch", "false"]);
    let addr = server
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_string();
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let mut refused = None;
    'sessions: for s in 0..17 {
        let (status, resp) = http_post(&addr, &[], INIT);
        assert_eq!(status, 200, "{resp}");
        let sid = header(&resp, "mcp-session-id").unwrap().to_string();
        let h = [
            ("mcp-session-id", sid.as_str()),
            ("mcp-protocol-version", "2025-11-25"),
        ];
        assert_eq!(http_post(&addr, &h, initialized).0, 202);
        for i in 0..256 {
            let body = json!({"jsonrpc": "2.0", "id": 2 + i, "method": "resources/subscribe",
                "params": {"uri": format!("file:///data/{s}/{i}/{}", "x".repeat(1000))}});
            let (status, resp) = http_post(&addr, &h, &body.to_string());
            assert_eq!(status, 200, "{resp}");
            if resp.contains("\"error\"") {
                refused = Some((s * 256 + i, resp, sid.clone()));
                break 'sessions;
            }
        }
    }
    let (at, resp, sid) = refused.expect("a subscribe past the bound is refused");
    assert_eq!(at, 4096, "{resp}");
    assert!(resp.contains("4096 resource subscriptions"), "{resp}");
    // The session that was refused still serves.
    let h = [
        ("mcp-session-id", sid.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let read = r#"{"jsonrpc":"2.0","id":9999,"method":"resources/read","params":{"uri":"file:///data/notes.txt"}}"#;
    let (status, resp) = http_post(&addr, &h, read);
    assert!(status == 200 && resp.contains("\"contents\""), "{resp}");
}

/// A resource's error text reaches the client as its contents would, so
/// `max-output` bounds it too (as a tool's error text): the files tool
/// names the missing path it was asked for, here 1,500 bytes of it, under
/// a 1 KiB limit. Before, an error weighed nothing.
#[tokio::test]
async fn an_oversized_resource_error_is_refused_like_oversized_contents() {
    let d = ToolDir::new();
    let data = root().join("example-tools/files/data");
    d.add(
        "files",
        "files",
        &format!(
            "[[fs]]\nguest = \"/data\"\nhost = \"{}\"\nmode = \"ro\"\n\n[limits]\nmax-output = \"1 KiB\"\n",
            data.display()
        ),
    );
    let core = core(d.path()).await;
    let scope = Scope::default();
    let long = format!("file:///data/{}", "x".repeat(1500));
    let err = core
        .read_resource(CallRequest::new(scope.clone(), &long, None))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            CallErrorKind::OutputTooLarge { limit: 1024, .. }
        ),
        "{err:?}"
    );
    // A short one is the tool's answer, as before.
    let err = core
        .read_resource(CallRequest::new(
            scope.clone(),
            "file:///data/nowhere",
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &CallErrorKind::UnknownTool, "{err:?}");
    let ok = core
        .read_resource(CallRequest::new(scope, "file:///data/notes.txt", None))
        .await
        .unwrap();
    assert_eq!(ok.len(), 1);
}

/// A prompt's error text weighs against `max-output` like its messages do:
/// `summarize` refuses an unknown style by quoting it, so a 1,500-byte
/// style makes a 1.5 KB error under a 1 KiB limit.
#[tokio::test]
async fn an_oversized_prompt_error_is_refused_like_oversized_messages() {
    let d = ToolDir::new();
    d.add("prompts", "prompts", "[limits]\nmax-output = \"1 KiB\"\n");
    let core = core(d.path()).await;
    let scope = Scope::default();
    let get = |style: String| {
        CallRequest::new(
            scope.clone(),
            "summarize",
            json!({"text": "t", "style": style}).as_object().cloned(),
        )
    };
    let err = core.get_prompt(get("x".repeat(1500))).await.unwrap_err();
    assert!(
        matches!(
            err.kind(),
            CallErrorKind::OutputTooLarge { limit: 1024, .. }
        ),
        "{err:?}"
    );
    // A short one is the tool's own refusal, as before.
    let err = core.get_prompt(get("loud".into())).await.unwrap_err();
    assert!(err.to_string().contains("unknown style `loud`"), "{err}");
    assert!(core.get_prompt(get("brief".into())).await.is_ok());
}
