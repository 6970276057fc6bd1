//! MCP 2026-07-28 end to end: tools that ask their client (input-required
//! results on the stateless protocol, server-to-client requests on
//! 2025-11-25 sessions), driven by the official SDK clients
//! (tests/clients/) against the real `toolhost serve`, plus raw HTTP for
//! what the wire must look like.

use crate::mcp::{
    HttpServe, LIMIT, Sdk, Via, client, header, http_post, run_client, serve_args, stdio_scenario,
    tools,
};

// --- a tool asks its client: MRTR on 2026-07-28, the session on 2025-11-25

fn elicit_over_http(sdk: Sdk, mode: &str) {
    let dir = tools(true);
    let args = serve_args(&dir);
    let server = HttpServe::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    run_client(
        client(sdk, "elicit", Some(mode), Via::Http(&server.url)),
        "elicit",
        LIMIT,
    );
}

#[test]
fn python_answers_a_tool_through_input_required_results_over_http() {
    elicit_over_http(Sdk::Python, "2026-07-28");
}

#[test]
fn python_auto_answers_a_tool_through_input_required_results_over_stdio() {
    stdio_scenario(Sdk::Python, "elicit", Some("auto"), &tools(true), &[]);
}

#[test]
fn python_answers_a_tool_through_session_requests_over_http() {
    elicit_over_http(Sdk::Python, "legacy");
}

#[test]
fn python_answers_a_tool_through_session_requests_over_stdio() {
    stdio_scenario(Sdk::Python, "elicit", Some("legacy"), &tools(true), &[]);
}

// --- the wire

/// The `_meta` every 2026-07-28 request carries.
pub(crate) fn meta(caps: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": caps,
    })
}

/// POST one 2026-07-28 `tools/call`; the status and the raw response.
pub(crate) fn call_2026(addr: &str, tool: &str, params: serde_json::Value) -> (u16, String) {
    let mut p = params;
    p["name"] = tool.into();
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": p});
    http_post(
        addr,
        &[
            ("MCP-Protocol-Version", "2026-07-28"),
            ("Mcp-Method", "tools/call"),
            ("Mcp-Name", tool),
        ],
        &body.to_string(),
    )
}

/// The JSON body of a raw HTTP/1.1 response (chunked or not).
pub(crate) fn body_json(resp: &str) -> serde_json::Value {
    let (_, mut rest) = resp.split_once("\r\n\r\n").unwrap_or((resp, ""));
    let body = if header(resp, "transfer-encoding") == Some("chunked") {
        let mut body = String::new();
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || tail.len() < n {
                break;
            }
            body.push_str(&tail[..n]);
            rest = tail[n..].trim_start_matches("\r\n");
        }
        body
    } else {
        rest.to_string()
    };
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not a JSON body ({e}): {resp}"))
}

#[test]
fn a_stateless_call_with_nothing_to_stream_is_plain_json_without_a_session() {
    let dir = tools(true);
    let server = HttpServe::start(
        &serve_args(&dir)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let (status, resp) = call_2026(
        &server.addr(),
        "echo",
        serde_json::json!({"arguments": {"text": "hi"}, "_meta": meta(serde_json::json!({}))}),
    );
    assert_eq!(status, 200, "{resp}");
    assert_eq!(
        header(&resp, "content-type"),
        Some("application/json"),
        "{resp}"
    );
    assert_eq!(header(&resp, "mcp-session-id"), None, "{resp}");
    // A whole reply is framed by its length, not chunked: it goes out with
    // its head, and no end-of-body chunk follows.
    let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert_eq!(header(&resp, "transfer-encoding"), None, "{resp}");
    assert_eq!(
        header(&resp, "content-length"),
        Some(body.len().to_string().as_str()),
        "{resp}"
    );
    let v = body_json(&resp);
    assert_eq!(v["result"]["content"][0]["text"], "hi", "{v}");
}

/// A 2026-07-28 `tools/call` with nothing to stream is answered past
/// rmcp's per-request service (`stateless_call`); every other request
/// takes rmcp's path. The same requests sent down both paths (an allowed
/// `Origin` is enough to leave a request to rmcp) get the same status,
/// type and body; the lane took exactly the requests it may take; and
/// the requests it must not take (headers that disagree with the body or
/// repeat, a foreign `Host`, a session, a body with a repeated key...)
/// got rmcp's answers.
#[test]
fn the_stateless_lane_answers_exactly_as_rmcp_does() {
    use serde_json::json;
    let dir = tools(true);
    let args = serve_args(&dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = HttpServe::start_env(
        &args,
        &[("TOOLHOST_LOG", "toolhost::mcp::stateless_call=debug")],
    );
    let addr = server.addr();
    let none = json!({});
    let elicit = json!({"elicitation": {}});
    let call = |tool: &str, params: serde_json::Value| {
        let mut p = params;
        p["name"] = tool.into();
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": p}).to_string()
    };
    let echo = call(
        "echo",
        json!({"arguments": {"text": "hi"}, "_meta": meta(none.clone())}),
    );
    let std_headers = |tool: &'static str| -> Vec<(&'static str, &'static str)> {
        vec![
            ("MCP-Protocol-Version", "2026-07-28"),
            ("Mcp-Method", "tools/call"),
            ("Mcp-Name", tool),
        ]
    };
    struct Case {
        what: &'static str,
        headers: Vec<(&'static str, &'static str)>,
        body: String,
        lane: bool,
    }
    let plain = |what, tool: &'static str, params: serde_json::Value, lane| Case {
        what,
        headers: std_headers(tool),
        body: call(tool, params),
        lane,
    };
    let with = |what, headers: Vec<(&'static str, &'static str)>, body: &str| Case {
        what,
        headers,
        body: body.to_string(),
        lane: false,
    };
    let extra = |add: &[(&'static str, &'static str)]| {
        let mut h = std_headers("echo");
        h.extend_from_slice(add);
        h
    };
    let cases = vec![
        plain(
            "a call",
            "echo",
            json!({"arguments": {"text": "hi"}, "_meta": meta(none.clone())}),
            true,
        ),
        plain(
            "arguments the schema refuses",
            "echo",
            json!({"arguments": {"text": 5}, "_meta": meta(none.clone())}),
            true,
        ),
        plain(
            "no arguments",
            "echo",
            json!({"_meta": meta(none.clone())}),
            true,
        ),
        plain(
            "no such tool",
            "nope",
            json!({"arguments": {}, "_meta": meta(none.clone())}),
            true,
        ),
        plain(
            "a tool that traps",
            "panic",
            json!({"arguments": {"message": "boom"}, "_meta": meta(none.clone())}),
            true,
        ),
        plain(
            "output breaking its schema",
            "bad_output",
            json!({"arguments": {}, "_meta": meta(none.clone())}),
            true,
        ),
        plain(
            "an undeclared capability (400, -32021)",
            "test_missing_capability",
            json!({"arguments": {}, "_meta": meta(none.clone())}),
            true,
        ),
        plain(
            "a first round ending in questions",
            "test_input_required_result_elicitation",
            json!({"arguments": {}, "_meta": meta(elicit.clone())}),
            true,
        ),
        plain(
            "a tampered retry (-32602)",
            "test_input_required_result_elicitation",
            json!({"arguments": {}, "_meta": meta(elicit.clone()),
            "inputResponses": {"user_name": {"action": "accept", "content": {"name": "Ada"}}},
            "requestState": "A".repeat(120)}),
            true,
        ),
        plain(
            "an unsupported version in `_meta`",
            "echo",
            json!({"arguments": {"text": "hi"}, "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2099-01-01",
            "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
            "io.modelcontextprotocol/clientCapabilities": {}}}),
            false,
        ),
        plain(
            "`_meta` without the client's capabilities",
            "echo",
            json!({"arguments": {"text": "hi"}, "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28"}}),
            false,
        ),
        plain(
            "a progress token (an SSE stream)",
            "log_and_progress",
            json!({"arguments": {}, "_meta": {
            "progressToken": "p1",
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
            "io.modelcontextprotocol/clientCapabilities": {}}}),
            false,
        ),
        plain(
            "a tool asking for a header argument",
            "test_header_param",
            json!({"arguments": {"region": "eu"}, "_meta": meta(none.clone())}),
            false,
        ),
        // Hostile: headers that disagree with the body, or repeat.
        with(
            "Mcp-Name naming another tool than the body",
            std_headers("panic"),
            &echo,
        ),
        with(
            "Mcp-Method given twice",
            extra(&[("Mcp-Method", "tools/call")]),
            &echo,
        ),
        with(
            "Mcp-Name given twice",
            extra(&[("Mcp-Name", "echo")]),
            &echo,
        ),
        with(
            "Mcp-Method not the body's",
            vec![
                ("MCP-Protocol-Version", "2026-07-28"),
                ("Mcp-Method", "tools/list"),
                ("Mcp-Name", "echo"),
            ],
            &echo,
        ),
        with(
            "a stray Mcp-Param header",
            extra(&[("Mcp-Param-Region", "eu")]),
            &echo,
        ),
        with(
            "a session id",
            extra(&[("Mcp-Session-Id", "forged")]),
            &echo,
        ),
        with(
            "a foreign Host (403)",
            extra(&[("Host", "evil.example")]),
            &echo,
        ),
        with(
            "no Mcp-Method",
            vec![("MCP-Protocol-Version", "2026-07-28"), ("Mcp-Name", "echo")],
            &echo,
        ),
        // Hostile: bodies that could read differently to rmcp.
        with(
            "a repeated method key",
            std_headers("echo"),
            &echo.replacen(
                r#""method":"tools/call""#,
                r#""method":"tools/list","method":"tools/call""#,
                1,
            ),
        ),
        with(
            "a repeated tool name",
            std_headers("echo"),
            &echo.replacen(r#""name":"echo""#, r#""name":"panic","name":"echo""#, 1),
        ),
        with(
            "a body written by position",
            std_headers("echo"),
            r#"["2.0",7,"tools/call",{"name":"echo","arguments":{"text":"hi"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}]"#,
        ),
    ];
    let answer = |case: &Case, extra: &[(&str, &str)]| {
        let mut headers = case.headers.clone();
        headers.extend_from_slice(extra);
        let (status, resp) = http_post(&addr, &headers, &case.body);
        let kind = header(&resp, "content-type").map(str::to_string);
        let mut v = if kind.as_deref() == Some("application/json") {
            body_json(&resp)
        } else {
            // Not JSON (an SSE stream, a refusal in words): its kind, and
            // its body when short.
            let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            json!({"kind": kind, "body": if body.len() < 200 { body } else { "" }})
        };
        // Sealed afresh on every round (a nonce): compared by presence.
        if let Some(state) = v.pointer_mut("/result/requestState") {
            *state = serde_json::Value::Bool(true);
        }
        (status, kind, v)
    };
    // Lines the lane logged (read from the server's stderr by a thread:
    // waited for until `at_least` arrive, or for 5 s).
    let lane_log = |at_least: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let n = server.stderr().matches("answered in the lane").count();
            if n >= at_least || std::time::Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    // Each check also catches a line a request before it logged late.
    let mut taken = 0;
    let mut answers = Vec::new();
    for case in &cases {
        let fast = answer(case, &[]);
        let after = lane_log(taken + usize::from(case.lane));
        assert_eq!(
            after - taken,
            usize::from(case.lane),
            "{}: the lane should {}have taken it",
            case.what,
            if case.lane { "" } else { "not " }
        );
        taken = after;
        let rmcp = answer(case, &[("Origin", "http://localhost:3000")]);
        assert_eq!(lane_log(taken), taken, "an Origin leaves it to rmcp");
        assert_eq!(fast, rmcp, "{}", case.what);
        answers.push(fast);
    }
    // The cases meant something: a result, an error result, JSON-RPC
    // errors, and refusals of the hostile ones.
    let of = |what: &str| &answers[cases.iter().position(|c| c.what == what).unwrap()];
    let (status, _, v) = of("a call");
    assert_eq!(
        (*status, &v["result"]["content"][0]["text"]),
        (200, &"hi".into()),
        "{v}"
    );
    let (status, _, v) = of("an undeclared capability (400, -32021)");
    assert_eq!(
        (*status, &v["error"]["code"]),
        (400, &(-32021).into()),
        "{v}"
    );
    assert_eq!(of("a tool that traps").2["result"]["isError"], true);
    for refused in [
        "Mcp-Name naming another tool than the body",
        "Mcp-Method given twice",
        "Mcp-Name given twice",
        "Mcp-Method not the body's",
        "no Mcp-Method",
    ] {
        let (status, _, v) = of(refused);
        assert_eq!(*status, 400, "{refused}: {v}");
    }
    assert_eq!(of("a foreign Host (403)").0, 403);
    assert!(
        of("a body written by position").0 >= 400,
        "{:?}",
        of("a body written by position")
    );
    // A round begun in the lane goes on through rmcp, and the other way.
    let first = call(
        "test_input_required_result_elicitation",
        json!({"arguments": {}, "_meta": meta(elicit.clone())}),
    );
    let state_of = |extra: &[(&str, &str)]| {
        let case = with(
            "",
            std_headers("test_input_required_result_elicitation"),
            &first,
        );
        let mut headers = case.headers.clone();
        headers.extend_from_slice(extra);
        let (_, resp) = http_post(&addr, &headers, &case.body);
        body_json(&resp)["result"]["requestState"]
            .as_str()
            .unwrap_or_else(|| panic!("{resp}"))
            .to_string()
    };
    for (begin, finish) in [
        (&[][..], &[("Origin", "http://localhost:3000")][..]),
        (&[("Origin", "http://localhost:3000")][..], &[][..]),
    ] {
        let state = state_of(begin);
        let retry = call(
            "test_input_required_result_elicitation",
            json!({"arguments": {}, "_meta": meta(elicit.clone()),
            "inputResponses": {"user_name": {"action": "accept", "content": {"name": "Ada"}}},
            "requestState": state}),
        );
        let mut headers = std_headers("test_input_required_result_elicitation");
        headers.extend_from_slice(finish);
        let (_, resp) = http_post(&addr, &headers, &retry);
        assert_eq!(
            body_json(&resp)["result"]["content"][0]["text"],
            "Hello, Ada!",
            "{resp}"
        );
    }
}

#[test]
fn the_first_round_of_an_asking_tool_is_an_input_required_result_and_tampering_is_refused() {
    let dir = tools(true);
    let server = HttpServe::start(
        &serve_args(&dir)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let addr = server.addr();
    let caps = serde_json::json!({"elicitation": {}});
    let tool = "test_input_required_result_elicitation";
    let (status, resp) = call_2026(
        &addr,
        tool,
        serde_json::json!({"arguments": {}, "_meta": meta(caps.clone())}),
    );
    assert_eq!(status, 200, "{resp}");
    let r = body_json(&resp)["result"].clone();
    assert_eq!(r["resultType"], "input_required", "{r}");
    assert_eq!(
        r["inputRequests"]["user_name"]["method"], "elicitation/create",
        "{r}"
    );
    let state = r["requestState"]
        .as_str()
        .expect("sealed state")
        .to_string();
    // The state is sealed, not signed: the question's text is not in it.
    assert!(!state.contains("name"), "{state}");
    let answers =
        serde_json::json!({"user_name": {"action": "accept", "content": {"name": "Ada"}}});
    // Flip one character: refused, and the error says what to do.
    let mut tampered: Vec<char> = state.chars().collect();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    let (_, resp) = call_2026(
        &addr,
        tool,
        serde_json::json!({"arguments": {}, "_meta": meta(caps.clone()),
            "inputResponses": answers, "requestState": tampered}),
    );
    let e = body_json(&resp)["error"].clone();
    assert_eq!(e["code"], -32602, "{e}");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("altered") && msg.contains("start the call again"),
        "{msg}"
    );
    // Other arguments: the state is bound to the call it was issued for.
    let (_, resp) = call_2026(
        &addr,
        tool,
        serde_json::json!({"arguments": {"extra": 1}, "_meta": meta(caps.clone()),
            "inputResponses": answers, "requestState": state}),
    );
    assert!(
        body_json(&resp)["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("another call")),
        "{resp}"
    );
    // The honest retry completes.
    let (_, resp) = call_2026(
        &addr,
        tool,
        serde_json::json!({"arguments": {}, "_meta": meta(caps),
            "inputResponses": answers, "requestState": state}),
    );
    let r = body_json(&resp)["result"].clone();
    assert_eq!(r["content"][0]["text"], "Hello, Ada!", "{r}");
}

#[test]
fn a_tool_needing_an_undeclared_capability_is_refused_with_32021() {
    let dir = tools(true);
    let server = HttpServe::start(
        &serve_args(&dir)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let (status, resp) = call_2026(
        &server.addr(),
        "test_missing_capability",
        serde_json::json!({"arguments": {}, "_meta": meta(serde_json::json!({}))}),
    );
    assert_eq!(status, 400, "{resp}");
    let e = body_json(&resp)["error"].clone();
    assert_eq!(e["code"], -32021, "{e}");
    assert_eq!(
        e["data"]["requiredCapabilities"]["sampling"],
        serde_json::json!({}),
        "{e}"
    );
}

#[test]
fn replicas_sharing_a_state_key_serve_each_others_rounds() {
    let dir = tools(true);
    let args = serve_args(&dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let key = "7f".repeat(32);
    let env = [("TOOLHOST_STATE_KEY", key.as_str())];
    let a = HttpServe::start_env(&args, &env);
    let b = HttpServe::start_env(&args, &env);
    let stranger = HttpServe::start(&args);
    let caps = serde_json::json!({"elicitation": {}});
    let tool = "test_input_required_result_elicitation";
    let (_, resp) = call_2026(
        &a.addr(),
        tool,
        serde_json::json!({"arguments": {}, "_meta": meta(caps.clone())}),
    );
    let state = body_json(&resp)["result"]["requestState"]
        .as_str()
        .unwrap()
        .to_string();
    let retry = serde_json::json!({"arguments": {}, "_meta": meta(caps),
        "inputResponses": {"user_name": {"action": "accept", "content": {"name": "Bo"}}},
        "requestState": state});
    // Round two on the other replica.
    let (_, resp) = call_2026(&b.addr(), tool, retry.clone());
    assert_eq!(
        body_json(&resp)["result"]["content"][0]["text"],
        "Hello, Bo!",
        "{resp}"
    );
    // A server with another key cannot open it.
    let (_, resp) = call_2026(&stranger.addr(), tool, retry);
    assert_eq!(body_json(&resp)["error"]["code"], -32602, "{resp}");
}

// --- the MCP Inspector CLI

/// `inspector --cli TARGET... ARGS...`; its JSON output.
fn inspector(target: &[&str], args: &[&str]) -> serde_json::Value {
    let deps = crate::mcp::deps_dir();
    let bin = deps.join("node/node_modules/.bin");
    assert!(
        bin.join("inspector").is_file(),
        "the MCP Inspector is not installed: run `scripts/install-test-deps.sh`"
    );
    let catalog = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(bin.join("inspector"));
    cmd.arg("--cli")
        .args(target)
        .args(args)
        // Node 22 from the test deps; the Inspector's catalog in a scratch dir.
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("MCP_CATALOG_PATH", catalog.path().join("mcp.json"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = crate::mcp::wait_output(cmd.spawn().unwrap(), LIMIT);
    assert!(
        out.status.success(),
        "inspector {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "inspector printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn the_inspector_cli_lists_and_calls_over_http_and_stdio() {
    let dir = tools(true);
    let args = serve_args(&dir);
    let server = HttpServe::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let listed = inspector(&[&server.url], &["--method", "tools/list"]);
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"echo") && names.contains(&"test_simple_text"),
        "{names:?}"
    );
    let called = inspector(
        &[&server.url],
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "echo",
            "--tool-arg",
            "text=through the inspector",
        ],
    );
    assert_eq!(
        called["content"][0]["text"], "through the inspector",
        "{called}"
    );
    let bin = env!("CARGO_BIN_EXE_toolhost");
    let dir_arg = dir.path().display().to_string();
    let called = inspector(
        &[bin, "serve", "--watch", "false", "--tools", &dir_arg],
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "echo",
            "--tool-arg",
            "text=over stdio",
        ],
    );
    assert_eq!(called["content"][0]["text"], "over stdio", "{called}");
}
