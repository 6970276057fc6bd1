//! OpenTelemetry export (the CLI's `otel` feature, on by default) to an
//! OTLP/HTTP receiver that decodes the spans with the OpenTelemetry
//! project's own protobuf messages (tests/clients/otlp_receiver.py).

use crate::mcp::{BIN, deps_dir};
use crate::support::*;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Run `toolhost call --tools <tools> TOOL ARGS` with its spans exported to
/// a fresh OTLP receiver; the run's output and the spans received.
fn call_exported(tool: &str, args: &str) -> (std::process::Output, Vec<serde_json::Value>) {
    let mut rx = Command::new(deps_dir().join("venv/bin/python"))
        .arg(root().join("tests/clients/otlp_receiver.py"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("the OTLP receiver starts");
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = rx.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(l);
        }
    });
    let first = lines.recv_timeout(Duration::from_secs(60)).unwrap();
    let port = first
        .strip_prefix("port ")
        .unwrap_or_else(|| panic!("{first}"));

    let out = Command::new(BIN)
        .args(["call", "--tools"])
        .arg(tools_dir())
        .args([tool, args])
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        )
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("TOOLHOST_OTEL_LOG")
        .output()
        .unwrap();

    // The batch is sent at exit, before the process ends.
    let mut spans = Vec::new();
    while let Ok(l) = lines.recv_timeout(Duration::from_secs(5)) {
        spans.push(serde_json::from_str::<serde_json::Value>(&l).unwrap());
    }
    let _ = rx.kill();
    let _ = rx.wait();
    (out, spans)
}

fn call_span(spans: &[serde_json::Value]) -> &serde_json::Value {
    spans
        .iter()
        .find(|s| s["name"] == "core.call")
        .unwrap_or_else(|| panic!("no core.call span in {spans:?}"))
}

#[test]
fn a_call_is_exported_as_spans_to_an_otlp_receiver() {
    let (out, spans) = call_exported("echo", r#"{"text": "traced"}"#);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("traced"));
    let call = call_span(&spans);
    assert_eq!(call["service"], "toolhost", "{call}");
    assert_eq!(call["attributes"]["tool"], "echo", "{call}");
    assert_eq!(call["attributes"]["outcome"], "ok", "{call}");
    // The call's text never leaves: a span carries names, not data.
    assert!(
        !spans.iter().any(|s| s.to_string().contains("traced")),
        "{spans:?}"
    );
}

/// The tool name a client sends is exported as messages show it: control
/// characters escaped, cut to 256 bytes. It was exported whole, before the
/// tool was even looked up: 40 requests naming a 3 MiB unknown tool sent
/// 125 MB to the collector, held by the host until sent, and a newline or
/// escape sequence reached whatever shows the attribute (found by review).
#[test]
fn a_clients_tool_name_is_exported_escaped_and_cut() {
    let name = format!(
        "x\n{}\u{1b}[31mforged\n{}",
        "a".repeat(300),
        "b".repeat(64 << 10)
    );
    let (out, spans) = call_exported(&name, "{}");
    assert!(!out.status.success(), "{out:?}");
    let tool = call_span(&spans)["attributes"]["tool"]
        .as_str()
        .expect("a tool attribute")
        .to_string();
    assert!(tool.len() <= 260, "{} bytes exported", tool.len());
    assert!(tool.starts_with(r"x\u{a}aaa"), "{tool:?}");
    assert!(!tool.chars().any(char::is_control), "{tool:?}");
}
