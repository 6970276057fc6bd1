//! The operator's rules and the audit log: a denied tool is refused (and an
//! always-denied one is not even listed), and every call and decision lands
//! in the audit log.

use crate::support::*;
use serde_json::json;
use toolhost::{CallErrorKind, CallRequest, Core, HostConfig, Scope};

#[tokio::test]
async fn host_rules_deny_and_hide_tools_and_every_decision_is_audited() {
    let d = ToolDir::new();
    d.add("echo", "echo", "");
    d.add("text", "text", "");
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("host.toml");
    std::fs::write(
        &cfg,
        r#"
[limits]
timeout = "2s"
[[rule]]
effect = "deny"
tool = "regex_*"
reason = "regexes are disabled on this host"
[[rule]]
effect = "deny"
tool = "echo"
arg = "/text"
contains = "password"
reason = "no secrets through echo"
"#,
    )
    .unwrap();
    let config = HostConfig::load(&cfg)
        .unwrap()
        .with_cache_dir(test_config().engine.cache_dir);
    assert_eq!(
        config.caps.limits.max.timeout,
        std::time::Duration::from_secs(2)
    );
    let audit_path = cfg_dir.path().join("audit.jsonl");
    let core = Core::builder()
        .config(config)
        .source(Scope::default(), d.path())
        .audit(toolhost::Audit::to_file(&audit_path).unwrap())
        .build()
        .await
        .unwrap();

    let names: Vec<String> = core
        .tools(&Scope::default())
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(
        names,
        ["echo", "json_query"],
        "an always-denied tool is not listed"
    );

    let err = call(&core, "regex_extract", json!({"pattern": "a", "text": "a"}))
        .await
        .unwrap_err();
    // A tool the rules always deny is hidden, and hidden is the same as
    // absent: a caller cannot tell it exists.
    assert!(matches!(err.kind(), CallErrorKind::UnknownTool), "{err}");
    assert_eq!(err.to_string(), "unknown tool `regex_extract`");
    let err = call(&core, "echo", json!({"text": "my password is hunter2"}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no secrets through echo"), "{err}");
    call(&core, "echo", json!({"text": "fine"})).await.unwrap();
    let _ = core
        .call(CallRequest::new(Scope::default(), "ghost", None).caller("tester"))
        .await;

    // The audit writer flushes when its queue drains.
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = std::fs::read_to_string(&audit_path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        if lines.len() >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let recs: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let outcomes: Vec<(&str, &str)> = recs
        .iter()
        .map(|r| (r["tool"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("regex_extract", "unknown_tool"),
            ("echo", "denied"),
            ("echo", "ok"),
            ("ghost", "unknown_tool")
        ]
    );
    assert_eq!(recs[3]["caller"], "tester");
    assert_eq!(recs[0]["scope"], "default");
}

/// A review's case: a rule on a number argument matched the number's text
/// as serde_json prints it, so `{"n":3.0}` and `{"n":3e0}` passed a rule
/// denying 3, and the typed tool, which reads a whole float as its
/// integer, ran with 3. Every spelling is now denied, by the argument's
/// rule and by the rule on the whole arguments.
#[tokio::test]
async fn a_rule_on_a_number_sees_every_spelling_of_it() {
    let d = ToolDir::new();
    d.add("sink", "typed-kitchen-sink", "");
    let config = HostConfig::parse(
        std::path::Path::new("host.toml"),
        r#"
[[rule]]
effect = "deny"
tool = "big"
arg = "/n"
pattern = "3"
reason = "never three bytes"
[[rule]]
effect = "deny"
tool = "big"
contains = ":5}"
reason = "never five bytes"
"#,
    )
    .unwrap()
    .with_cache_dir(test_config().engine.cache_dir);
    let core = core_with(config, d.path()).await;
    for (n, reason) in [("3", "never three"), ("5", "never five")] {
        for spelling in [
            n.to_string(),
            format!("{n}.0"),
            format!("{n}e0"),
            format!("{n}0e-1"),
        ] {
            let args: serde_json::Value =
                serde_json::from_str(&format!(r#"{{"n":{spelling}}}"#)).unwrap();
            let err = call(&core, "big", args).await.unwrap_err();
            assert!(err.to_string().contains(reason), "n = {spelling}: {err}");
        }
    }
    let out = call(&core, "big", json!({"n": 4.0})).await.unwrap();
    assert_eq!(out.structured.unwrap()["result"], json!([7, 7, 7, 7]));
}
