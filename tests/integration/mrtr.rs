//! Input-required rounds (MRTR) against real components through the real
//! `toolhost serve --http`, on the raw 2026-07-28 wire: each round runs the
//! tool afresh with the recorded answers replayed. Hostile tools try to
//! flood the client with questions, to ignore being told to wait, and to
//! ask something else on replay.

use crate::mcp::{HttpServe, serve_args};
use crate::mcp_2026::{body_json, call_2026, meta};
use crate::support::{ToolDir, conformance_dir};
use serde_json::{Value, json};

/// `toolhost serve --http` over hostile (allowed to elicit) and the
/// conformance tools, with `extra` arguments.
fn serve(extra: &[&str]) -> (ToolDir, HttpServe) {
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        "[client]\nrequests = [\"elicitation\"]\n",
    );
    crate::mcp::copy_tool(&conformance_dir(), "conformance", d.path());
    let mut args = serve_args(&d);
    args.extend(extra.iter().map(|s| s.to_string()));
    let server = HttpServe::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    (d, server)
}

/// One round of `tool`: the JSON-RPC response.
fn round(server: &HttpServe, tool: &str, arguments: Value, retry: Option<(&str, Value)>) -> Value {
    let mut params = json!({"arguments": arguments, "_meta": meta(json!({"elicitation": {}}))});
    if let Some((state, answers)) = retry {
        params["requestState"] = state.into();
        params["inputResponses"] = answers;
    }
    let (status, resp) = call_2026(&server.addr(), tool, params);
    assert_eq!(status, 200, "{resp}");
    body_json(&resp)
}

/// The keys asked and the sealed state of an input-required result.
fn asked(v: &Value) -> (Vec<String>, String) {
    let r = &v["result"];
    assert_eq!(r["resultType"], "input_required", "{v}");
    let keys = r["inputRequests"]
        .as_object()
        .unwrap_or_else(|| panic!("no inputRequests: {v}"))
        .keys()
        .cloned()
        .collect();
    (keys, r["requestState"].as_str().unwrap().to_string())
}

fn accept(field: &str, value: &str) -> Value {
    json!({"action": "accept", "content": {field: value}})
}

#[test]
fn answers_are_replayed_in_a_fresh_sandbox_round_after_round() {
    let (_d, server) = serve(&[]);
    let tool = "test_input_required_result_multi_round";
    let (q1, s1) = asked(&round(&server, tool, json!({}), None));
    assert_eq!(q1, ["step1"]);
    let (q2, s2) = asked(&round(
        &server,
        tool,
        json!({}),
        Some((&s1, json!({"step1": accept("name", "Ada")}))),
    ));
    assert_eq!(q2, ["step2"]);
    // Round three sends only the new answer: the first comes from the state.
    let v = round(
        &server,
        tool,
        json!({}),
        Some((&s2, json!({"step2": accept("color", "green")}))),
    );
    assert_eq!(
        v["result"]["content"][0]["text"], r#""Ada" likes "green""#,
        "{v}"
    );
}

#[test]
fn a_tool_that_asks_something_else_on_replay_is_refused_by_name() {
    let (_d, server) = serve(&[]);
    let (q, state) = asked(&round(&server, "ask_random", json!({}), None));
    assert_eq!(q, ["input-1"]);
    let v = round(
        &server,
        "ask_random",
        json!({}),
        Some((
            &state,
            json!({"input-1": {"action": "accept", "content": {}}}),
        )),
    );
    let r = &v["result"];
    assert_eq!(r["isError"], true, "{v}");
    let msg = r["content"][0]["text"].as_str().unwrap();
    assert!(
        msg.contains("`ask_random` is not deterministic") && msg.contains("input-1"),
        "{msg}"
    );
}

#[test]
fn a_tool_cannot_flood_its_client_with_questions_or_reuse_a_key() {
    let (_d, server) = serve(&[]);
    let (q, _) = asked(&round(&server, "ask_flood", json!({"n": 1000}), None));
    // The host's per-call budget (`[client] max-requests`, 8 by default);
    // the reused key counts once.
    assert_eq!(q.len(), 8, "{q:?}");
    assert_eq!(q.iter().filter(|k| *k == "same").count(), 1, "{q:?}");
}

#[test]
fn questions_asked_together_keep_the_budget_and_an_absurd_batch_stops_the_tool() {
    let (_d, server) = serve(&[]);
    // `request-clients`: the per-call budget holds for a batch too.
    let (q, _) = asked(&round(&server, "ask_batch", json!({"n": 20}), None));
    assert_eq!(q.len(), 8, "{q:?}");
    // More than any call may ask at once: the tool is stopped, by name.
    let v = round(&server, "ask_batch", json!({"n": 20_000}), None);
    assert_eq!(v["result"]["isError"], true, "{v}");
    let text = v["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("request-clients: 20000 questions at once"),
        "{text}"
    );
}

#[test]
fn a_tool_that_ignores_being_told_to_wait_still_waits_for_its_answer_and_is_audited() {
    let audit = tempfile::tempdir().unwrap();
    let log = audit.path().join("audit.jsonl");
    let (_d, server) = serve(&["--audit", log.to_str().unwrap()]);
    let (q, state) = asked(&round(&server, "ask_ignoring", json!({}), None));
    assert_eq!(q, ["input-1"]);
    let v = round(
        &server,
        "ask_ignoring",
        json!({}),
        Some((&state, json!({"input-1": {"action": "decline"}}))),
    );
    assert_eq!(v["result"]["content"][0]["text"], "done anyway", "{v}");
    // The audit log is written by its own thread.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= 2 || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(text.contains(r#""outcome":"input_required""#), "{text}");
}

#[test]
fn a_malformed_answer_is_the_clients_error() {
    let (_d, server) = serve(&[]);
    let tool = "test_input_required_result_elicitation";
    let (_, state) = asked(&round(&server, tool, json!({}), None));
    let v = round(
        &server,
        tool,
        json!({}),
        Some((&state, json!({"user_name": 12345}))),
    );
    assert_eq!(v["error"]["code"], -32602, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("inputResponses.user_name"), "{msg}");
}
