//! Tenants over HTTP, end to end: the real `toolhost serve --http` with a
//! host config of `[[tenant]]`s, driven by real HTTP requests on 127.0.0.1
//! (2026-07-28 stateless requests, one POST each).
//!
//! Each tenant sees and calls only its own tools (another tenant's tool is
//! the same error as a missing one), its file tools see only its root, a
//! missing or bad credential is a 401 pointing at the protected-resource
//! metadata, JWTs are checked (signature, expiry, audience, issuer), and
//! each quota is a 429 with `Retry-After`.

use crate::mcp::{HttpServe, copy_tool, header};
use crate::mcp_2026::{body_json, meta};
use crate::support::{ToolDir, tools_dir};
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TOKEN_A: &str = "alpha-token-7f3a9c";
const TOKEN_B: &str = "beta-token-21be04";

fn sha(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// One raw HTTP/1.1 request; the status and the whole response.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    // Generous: a test of completion, not of speed (a thousand calls in
    // flight on a CI machine running other tests can take a while); a
    // timeout shows as an empty response.
    s.set_read_timeout(Some(Duration::from_secs(180))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {resp:?}"));
    (status, resp)
}

/// A 2026-07-28 request `method` with `params` as `token`'s holder.
fn rpc(
    addr: &str,
    token: Option<&str>,
    method: &str,
    params: Value,
    name: Option<&str>,
) -> (u16, String) {
    let mut p = params;
    p["_meta"] = meta(json!({}));
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": p});
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", method),
    ];
    if let Some(n) = name {
        headers.push(("Mcp-Name", n));
    }
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    http(addr, "POST", "/mcp", &headers, &body.to_string())
}

fn list(addr: &str, token: &str) -> Vec<String> {
    let (status, resp) = rpc(addr, Some(token), "tools/list", json!({}), None);
    assert_eq!(status, 200, "{resp}");
    let v = body_json(&resp);
    let mut names: Vec<String> = v["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn call(addr: &str, token: &str, tool: &str, args: Value) -> (u16, String) {
    rpc(
        addr,
        Some(token),
        "tools/call",
        json!({"name": tool, "arguments": args}),
        Some(tool),
    )
}

/// What a client sees of a call's failure: the JSON-RPC error or the tool
/// error's text, with the tool's name replaced by `TOOL`.
fn failure(resp: &str, tool: &str) -> String {
    let v = body_json(resp);
    let shown = if v.get("error").is_some() {
        v["error"].to_string()
    } else {
        assert_eq!(v["result"]["isError"], true, "{v}");
        v["result"]["content"].to_string()
    };
    shown.replace(tool, "TOOL")
}

/// Two tenants over one host: `alpha` gets echo (by name) and a files tool
/// over `data-a`; `beta` gets text (by name) and a files tool over
/// `data-b`. Alpha also names beta's tool directory, but its root keeps
/// that grant from loading.
struct Setup {
    dir: ToolDir,
    _share: Share,
}

/// The thousand-call test has the machine to itself (its load would make
/// other servers' calls miss their deadlines); the others share it.
static MACHINE: std::sync::RwLock<()> = std::sync::RwLock::new(());

enum Share {
    Shared(
        #[expect(dead_code, reason = "held for its drop")] std::sync::RwLockReadGuard<'static, ()>,
    ),
    Alone(
        #[expect(dead_code, reason = "held for its drop")] std::sync::RwLockWriteGuard<'static, ()>,
    ),
}

impl Setup {
    fn new(extra: &str) -> Setup {
        let share = Share::Shared(MACHINE.read().unwrap_or_else(|e| e.into_inner()));
        Setup::with_share(extra, share)
    }

    /// Like `new`, with no other tenant test running meanwhile.
    fn alone(extra: &str) -> Setup {
        let share = Share::Alone(MACHINE.write().unwrap_or_else(|e| e.into_inner()));
        Setup::with_share(extra, share)
    }

    fn with_share(extra: &str, share: Share) -> Setup {
        let dir = ToolDir::new();
        let root = dir.path();
        let base = root.join("base");
        std::fs::create_dir(&base).unwrap();
        copy_tool(&tools_dir(), "echo", &base);
        copy_tool(&tools_dir(), "text", &base);
        for t in ["a", "b"] {
            let data = root.join(format!("data-{t}"));
            std::fs::create_dir(&data).unwrap();
            std::fs::write(
                data.join(format!("secret-{t}.txt")),
                format!("{t}'s secret"),
            )
            .unwrap();
            let tools = root.join(format!("tools-{t}"));
            std::fs::create_dir(&tools).unwrap();
            copy_tool(&tools_dir(), "files", &tools);
            let m = tools.join("files.toml");
            let text = std::fs::read_to_string(&m).unwrap();
            let text = text
                .lines()
                .map(|l| {
                    if l.starts_with("host = ") {
                        format!("host = \"../data-{t}\"")
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            std::fs::write(&m, text).unwrap();
        }
        std::fs::write(
            root.join("toolhost.toml"),
            format!(
                r#"[engine]
cache-dir = "{cache}"

[[tenant]]
name = "alpha"
tools = ["echo", "tools-a/", "tools-b/"]
token-sha256 = ["{a}"]
[tenant.fs]
roots = ["data-a"]

[[tenant]]
name = "beta"
tools = ["text", "tools-b/"]
token-sha256 = ["{b}"]
[tenant.fs]
roots = ["data-b"]
{extra}"#,
                cache = crate::support::root().join("target/test-cache").display(),
                a = sha(TOKEN_A),
                b = sha(TOKEN_B),
            ),
        )
        .unwrap();
        Setup { dir, _share: share }
    }

    fn serve(&self) -> HttpServe {
        self.serve_watching(false)
    }

    /// Like `serve`; `watch`: reload when the config or a tool changes.
    fn serve_watching(&self, watch: bool) -> HttpServe {
        let root = self.dir.path();
        serve_config(&root.join("toolhost.toml"), &root.join("base"), watch, &[])
    }
}

#[test]
fn each_tenant_lists_and_calls_only_its_own_tools() {
    let s = Setup::new("");
    let server = s.serve();
    let addr = server.addr();
    let a_tools = list(&addr, TOKEN_A);
    assert!(a_tools.contains(&"echo".to_string()), "{a_tools:?}");
    assert!(a_tools.contains(&"list_dir".to_string()), "{a_tools:?}");
    assert!(!a_tools.contains(&"json_query".to_string()), "{a_tools:?}");
    let b_tools = list(&addr, TOKEN_B);
    assert!(!b_tools.contains(&"echo".to_string()), "{b_tools:?}");
    assert!(b_tools.contains(&"json_query".to_string()), "{b_tools:?}");

    let (st, resp) = call(&addr, TOKEN_A, "echo", json!({"text": "hi"}));
    assert_eq!(st, 200, "{resp}");
    assert_eq!(body_json(&resp)["result"]["content"][0]["text"], "hi");

    // Beta's tool, called by alpha, and a tool that exists nowhere: the
    // same status and the same error, but for the name.
    let (st_other, other) = call(&addr, TOKEN_A, "json_query", json!({}));
    let (st_none, none) = call(&addr, TOKEN_A, "no_such_tool", json!({}));
    assert_eq!(st_other, st_none);
    assert_eq!(
        failure(&other, "json_query"),
        failure(&none, "no_such_tool"),
        "{other}\n{none}"
    );
    // And the other way round.
    let (st_other, other) = call(&addr, TOKEN_B, "echo", json!({"text": "x"}));
    assert_eq!(st_other, st_none);
    assert_eq!(failure(&other, "echo"), failure(&none, "no_such_tool"));
}

#[test]
fn a_session_of_one_tenant_means_nothing_to_another() {
    let s = Setup::new("");
    let server = s.serve();
    let addr = server.addr();
    let bearer = |t: &str| format!("Bearer {t}");
    let (a, b) = (bearer(TOKEN_A), bearer(TOKEN_B));
    let (st, resp) = http(
        &addr,
        "POST",
        "/mcp",
        &[("Authorization", &a)],
        crate::mcp::INIT,
    );
    assert_eq!(st, 200, "{resp}");
    let sid = header(&resp, "mcp-session-id").unwrap().to_string();
    let session = |auth: &str, body: &str| {
        http(
            &addr,
            "POST",
            "/mcp",
            &[
                ("Authorization", auth),
                ("Mcp-Session-Id", &sid),
                ("MCP-Protocol-Version", "2025-11-25"),
            ],
            body,
        )
    };
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    assert_eq!(session(&a, initialized).0, 202);
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let (st, resp) = session(&a, list);
    assert_eq!(st, 200, "{resp}");
    assert!(resp.contains("\"echo\""), "{resp}");
    // Beta presenting alpha's session id: no such session for beta.
    let (st, resp) = session(&b, list);
    assert_eq!(st, 404, "{resp}");
    assert!(!resp.contains("echo"), "{resp}");
    // And no session at all without a credential.
    let (st, _) = http(&addr, "POST", "/mcp", &[("Mcp-Session-Id", &sid)], list);
    assert_eq!(st, 401);
}

#[test]
fn a_tenants_file_tool_sees_only_its_own_root() {
    let s = Setup::new("");
    let server = s.serve();
    let addr = server.addr();
    for (token, mine, theirs) in [
        (TOKEN_A, "secret-a.txt", "secret-b.txt"),
        (TOKEN_B, "secret-b.txt", "secret-a.txt"),
    ] {
        let (st, resp) = call(&addr, token, "list_dir", json!({"path": "/data"}));
        assert_eq!(st, 200, "{resp}");
        let v = body_json(&resp);
        let text = v["result"].to_string();
        assert!(text.contains(mine), "{v}");
        assert!(!text.contains(theirs), "{v}");
    }
    // Alpha names beta's tool directory too, but that grant lies outside
    // alpha's root: it never loaded for alpha, so no read reaches data-b.
    let (st, resp) = call(
        &addr,
        TOKEN_A,
        "read_file",
        json!({"path": "/data/secret-b.txt"}),
    );
    assert_eq!(st, 200, "{resp}");
    let v = body_json(&resp);
    assert_eq!(v["result"]["isError"], true, "{v}");
    assert!(!v.to_string().contains("b's secret"), "{v}");
}

/// A resource read (toolhost:tool@0.2.0) as `token`'s holder.
fn read(addr: &str, token: &str, uri: &str) -> (u16, String) {
    rpc(
        addr,
        Some(token),
        "resources/read",
        json!({"uri": uri}),
        Some(uri),
    )
}

#[test]
fn a_tenant_lists_and_reads_only_its_own_resources() {
    let s = Setup::new("");
    let server = s.serve();
    let addr = server.addr();
    for (token, mine, theirs) in [
        (TOKEN_A, "secret-a.txt", "secret-b.txt"),
        (TOKEN_B, "secret-b.txt", "secret-a.txt"),
    ] {
        let (st, resp) = rpc(&addr, Some(token), "resources/list", json!({}), None);
        assert_eq!(st, 200, "{resp}");
        let listed = body_json(&resp)["result"]["resources"].to_string();
        assert!(listed.contains(&format!("file:///data/{mine}")), "{listed}");
        assert!(!listed.contains(theirs), "{listed}");
        let (st, resp) = read(&addr, token, &format!("file:///data/{mine}"));
        assert_eq!(st, 200, "{resp}");
        let v = body_json(&resp);
        assert!(
            v["result"]["contents"][0]["text"]
                .as_str()
                .unwrap()
                .ends_with("'s secret"),
            "{v}"
        );
        // The other tenant's file, and a file nobody has: the same error
        // but for the URI.
        let uri = format!("file:///data/{theirs}");
        let (st_other, other) = read(&addr, token, &uri);
        let (st_none, none) = read(&addr, token, "file:///data/nothing.txt");
        assert_eq!(st_other, st_none);
        let shown =
            |resp: &str, uri: &str| body_json(resp)["error"].to_string().replace(uri, "URI");
        assert_eq!(
            shown(&other, &uri),
            shown(&none, "file:///data/nothing.txt")
        );
        assert!(!other.contains("'s secret"), "{other}");
    }
}

#[test]
fn no_or_a_wrong_token_is_401_pointing_at_the_resource_metadata() {
    let s = Setup::new("");
    let server = s.serve();
    let addr = server.addr();
    let (st, resp) = rpc(&addr, None, "tools/list", json!({}), None);
    assert_eq!(st, 401, "{resp}");
    let challenge = header(&resp, "www-authenticate").unwrap_or_else(|| panic!("{resp}"));
    let url = format!("http://{addr}/.well-known/oauth-protected-resource/mcp");
    assert_eq!(challenge, format!("Bearer resource_metadata=\"{url}\""));

    let (st, resp) = rpc(&addr, Some("not-a-token"), "tools/list", json!({}), None);
    assert_eq!(st, 401, "{resp}");
    let challenge = header(&resp, "www-authenticate").unwrap();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    // A token's digest is not a token.
    let (st, _) = rpc(&addr, Some(&sha(TOKEN_A)), "tools/list", json!({}), None);
    assert_eq!(st, 401);
    // A refused client does not keep its connection (nor the connection
    // slot it holds): the server closes a keep-alive connection after a 401.
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        c,
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    )
    .unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp)
        .expect("the server closes the connection");
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");

    // The metadata document (RFC 9728), without credentials.
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let (st, resp) = http(&addr, "GET", path, &[], "");
        assert_eq!(st, 200, "{resp}");
        let v = body_json(&resp);
        assert_eq!(v["resource"], format!("http://{addr}/mcp"), "{v}");
        assert_eq!(v["bearer_methods_supported"], json!(["header"]));
    }
}

#[test]
fn each_quota_is_a_429_with_retry_after() {
    let s = Setup::new("");
    // A tenant with one call a minute and one at a time; `sleep` holds
    // its slot.
    let hostile = s.dir.path().join("slow");
    std::fs::create_dir(&hostile).unwrap();
    let td = ToolDir::new();
    td.add("hostile", "hostile", "[limits]\ntimeout = \"30s\"\n");
    for ext in ["wasm", "toml"] {
        std::fs::copy(
            td.path().join(format!("hostile.{ext}")),
            hostile.join(format!("hostile.{ext}")),
        )
        .unwrap();
    }
    let cfg = s.dir.path().join("toolhost.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "\n[[tenant]]\nname = \"gamma\"\ntools = [\"echo\"]\ntoken-sha256 = [\"{}\"]\ncalls-per-minute = 2\n\n[[tenant]]\nname = \"delta\"\ntools = [\"slow/\"]\ntoken-sha256 = [\"{}\"]\nmax-concurrent = 1\n\n[[tenant]]\nname = \"omega\"\ntools = [\"echo\"]\ntoken-sha256 = [\"{}\"]\noutput-bytes-per-minute = \"1 KiB\"\n",
        sha("gamma-token"),
        sha("delta-token"),
        sha("omega-token")
    ));
    std::fs::write(&cfg, text).unwrap();
    let server = s.serve();
    let addr = server.addr();

    for _ in 0..2 {
        let (st, resp) = call(&addr, "gamma-token", "echo", json!({"text": "x"}));
        assert_eq!(st, 200, "{resp}");
    }
    let (st, resp) = call(&addr, "gamma-token", "echo", json!({"text": "x"}));
    assert_eq!(st, 429, "{resp}");
    let retry: u64 = header(&resp, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{resp}");
    let v = body_json(&resp);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("calls-per-minute = 2") && msg.contains("retry in"),
        "{msg}"
    );
    // Listing is not a call; other tenants are not affected.
    assert_eq!(list(&addr, "gamma-token"), ["echo"]);
    assert_eq!(call(&addr, TOKEN_A, "echo", json!({"text": "x"})).0, 200);

    // Omega: a call may overdraw its output budget once; the next waits
    // until the budget has refilled past what it overdrew.
    let big = "x".repeat(2000);
    let (st, resp) = call(&addr, "omega-token", "echo", json!({"text": big}));
    assert_eq!(st, 200, "{resp}");
    let (st, resp) = call(&addr, "omega-token", "echo", json!({"text": "x"}));
    assert_eq!(st, 429, "{resp}");
    let retry: u64 = header(&resp, "retry-after").unwrap().parse().unwrap();
    // About a minute per KiB overdrawn (2000 result bytes against 1024):
    // close to a minute, under three.
    assert!((45..=180).contains(&retry), "{resp}");
    let msg = body_json(&resp)["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("output-bytes-per-minute = 1024"), "{msg}");

    // Delta: one call holds the only slot until its response is complete.
    let a2 = addr.clone();
    // (It retries while the probes below hold the slot: refused at the door
    // with 429, or, when a probe took the slot between the door's look and
    // the call, with the same quota as a tool error.)
    let slow = std::thread::spawn(move || {
        loop {
            let r = call(&a2, "delta-token", "sleep", json!({"ms": 3000}));
            if r.0 != 429 && !r.1.contains("max-concurrent") {
                return r;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let (st, resp) = call(&addr, "delta-token", "sleep", json!({"ms": 1}));
        if st == 429 {
            break resp;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never refused: {}",
            &resp[resp.len().saturating_sub(600)..]
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(header(&refused, "retry-after"), Some("1"), "{refused}");
    let msg = body_json(&refused)["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("max-concurrent = 1"), "{msg}");
    let (st, resp) = slow.join().unwrap();
    assert_eq!(st, 200, "{resp}");
    assert_eq!(call(&addr, "delta-token", "sleep", json!({"ms": 1})).0, 200);

    // A 2025-11-25 session's call runs on when its client hangs up (that
    // is not a cancellation there): it keeps its slot until it is over.
    let bearer = "Bearer delta-token";
    let (st, resp) = http(
        &addr,
        "POST",
        "/mcp",
        &[("Authorization", bearer)],
        crate::mcp::INIT,
    );
    assert_eq!(st, 200, "{resp}");
    let sid = header(&resp, "mcp-session-id").unwrap().to_string();
    let in_session = [
        ("Authorization", bearer),
        ("Mcp-Session-Id", sid.as_str()),
        ("MCP-Protocol-Version", "2025-11-25"),
    ];
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    assert_eq!(http(&addr, "POST", "/mcp", &in_session, initialized).0, 202);
    let body = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":4000}}}"#;
    hang_up_once_started(&addr, &in_session, body);
    // On a loaded machine a probe may still come first (and take the slot
    // for its millisecond): probe again, within the hung-up call's 4 s.
    let mut probes = Vec::new();
    for _ in 0..20 {
        let (st, resp) = call(&addr, "delta-token", "sleep", json!({"ms": 1}));
        if st == 429 {
            return;
        }
        probes.push((st, resp));
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("a hung-up session call still runs, but every probe ran: {probes:?}");
}

#[test]
fn a_tenants_narrowed_limits_hold_and_do_not_touch_another_tenants() {
    let s = Setup::new("");
    let slow = s.dir.path().join("slow");
    std::fs::create_dir(&slow).unwrap();
    let td = ToolDir::new();
    td.add("hostile", "hostile", "[limits]\ntimeout = \"30s\"\n");
    for ext in ["wasm", "toml"] {
        std::fs::copy(
            td.path().join(format!("hostile.{ext}")),
            slow.join(format!("hostile.{ext}")),
        )
        .unwrap();
    }
    let cfg = s.dir.path().join("toolhost.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    // The same tool for two tenants; one of them may run it for 1 s only,
    // and asking for more (1 h) does not raise the manifest's 30 s.
    text.push_str(&format!(
        "\n[[tenant]]\nname = \"tight\"\ntools = [\"slow/\"]\ntoken-sha256 = [\"{}\"]\n[tenant.limits]\ntimeout = \"1s\"\n\n[[tenant]]\nname = \"loose\"\ntools = [\"slow/\"]\ntoken-sha256 = [\"{}\"]\n[tenant.limits]\ntimeout = \"1h\"\n",
        sha("tight-token"),
        sha("loose-token")
    ));
    std::fs::write(&cfg, text).unwrap();
    let server = s.serve();
    let addr = server.addr();
    let (st, resp) = call(&addr, "tight-token", "sleep", json!({"ms": 2500}));
    assert_eq!(st, 200, "{resp}");
    let v = body_json(&resp);
    assert_eq!(v["result"]["isError"], true, "{v}");
    assert!(v.to_string().contains("timed out after 1"), "{v}");
    let (st, resp) = call(&addr, "loose-token", "sleep", json!({"ms": 2500}));
    assert_eq!(st, 200, "{resp}");
    assert_eq!(body_json(&resp)["result"]["content"][0]["text"], "slept");
}

// --- JWTs

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh Ed25519 key: its PKCS#8 document and public key.
fn ed25519() -> (Vec<u8>, Vec<u8>) {
    use ring::signature::KeyPair as _;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    (pkcs8.as_ref().to_vec(), pair.public_key().as_ref().to_vec())
}

fn jwt(pkcs8: &[u8], claims: Value) -> String {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    h.kid = Some("k1".into());
    jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_ed_der(pkcs8)).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn write_jwks(path: &Path, public: &[u8]) {
    let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64(public), "kid": "k1", "alg": "EdDSA", "use": "sig"}]});
    std::fs::write(path, jwks.to_string()).unwrap();
}

/// A setup whose `[auth.jwt]` (issuer `https://auth.example`, audience
/// `https://tools.example/mcp`, plus `jwt_keys`) trusts a fresh Ed25519
/// key, its JWKS written, then `extra`: the key's PKCS#8, and the setup.
fn jwt_setup(jwt_keys: &str, extra: &str) -> (Vec<u8>, Setup) {
    let (key, public) = ed25519();
    let s = Setup::new(&format!(
        "\n[auth.jwt]\nissuer = \"https://auth.example\"\naudience = \"https://tools.example/mcp\"\njwks-file = \"jwks.json\"\n{jwt_keys}\n{extra}"
    ));
    write_jwks(&s.dir.path().join("jwks.json"), &public);
    (key, s)
}

/// A token of `key` for [`jwt_setup`]'s issuer and audience, valid ten
/// minutes, with `claims` besides.
fn token_with(key: &[u8], claims: Value) -> String {
    let mut c = json!({
        "iss": "https://auth.example",
        "aud": "https://tools.example/mcp",
        "exp": now() + 600,
    });
    if let (Some(c), Value::Object(more)) = (c.as_object_mut(), claims) {
        c.extend(more);
    }
    jwt(key, c)
}

/// A review's case: the JWKS file decides who a caller is, yet it was
/// read whatever its mode: any local user who could write it put in her
/// own key and signed in as any tenant. One others may write is refused;
/// the same file, private, is read.
#[test]
fn a_jwks_file_others_may_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let (_, public) = ed25519();
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    write_jwks(&jwks, &public);
    let config = toolhost::HostConfig::parse(
        &dir.path().join("host.toml"),
        &format!(
            "[[tenant]]\nname = \"t\"\ntools = [\"echo\"]\ntoken-sha256 = [\"{}\"]\n[auth.jwt]\nissuer = \"https://auth.example\"\naudience = \"https://tools.example/mcp\"\njwks-file = \"jwks.json\"\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    std::fs::set_permissions(&jwks, std::fs::Permissions::from_mode(0o666)).unwrap();
    let e = toolhost::mcp::Tenancy::new(&config.tenants, &config.auth)
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("may be written by every user (mode 666)"), "{e}");
    std::fs::set_permissions(&jwks, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(toolhost::mcp::Tenancy::new(&config.tenants, &config.auth).is_ok());
}

/// With many users behind a tenant's JWTs, "who ran what" needs the
/// user: each call's audit record names the JWT's `sub` as its
/// `principal` (found by the user review), without a session and in one,
/// and a static token's call names none. `toolhost audit --principal`
/// finds them.
#[test]
fn a_jwts_principal_is_recorded_with_each_call() {
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("audit.jsonl");
    let (key, s) = jwt_setup(
        "tenant-claim = \"org\"",
        &format!(
            "[audit]\npath = \"{}\"\nfsync = \"always\"\n",
            log.display()
        ),
    );
    let server = s.serve();
    let addr = server.addr();
    let token = |sub: &str| token_with(&key, json!({"org": "alpha", "sub": sub}));
    let alice = token("alice@example.com");
    for (who, text) in [
        (alice.clone(), "from alice"),
        (token("mallory\nforged"), "from mallory"),
        (TOKEN_A.to_string(), "from the static token"),
    ] {
        let (st, resp) = call(&addr, &who, "echo", json!({"text": text}));
        assert_eq!(st, 200, "{resp}");
    }
    // In a 2025-11-25 session.
    let (st, resp) = initialize(&addr, &alice);
    assert_eq!(st, 200, "{resp}");
    let sid = header(&resp, "mcp-session-id").unwrap().to_string();
    let bearer = format!("Bearer {alice}");
    let in_session = |body: &str| {
        http(
            &addr,
            "POST",
            "/mcp",
            &[
                ("Authorization", &bearer),
                ("Mcp-Session-Id", &sid),
                ("MCP-Protocol-Version", "2025-11-25"),
            ],
            body,
        )
    };
    in_session(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    let (st, resp) = in_session(
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"in a session"}}}"#,
    );
    assert!(st == 200 && resp.contains("in a session"), "{resp}");
    drop(server);
    let calls: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["event"] == "call" && v["tool"] == "echo")
        .collect();
    let principals: Vec<&Value> = calls.iter().map(|c| &c["principal"]).collect();
    assert_eq!(
        principals,
        [
            &json!("alice@example.com"),
            &json!("mallory\nforged"),
            &Value::Null,
            &json!("alice@example.com"),
        ],
        "{calls:#?}"
    );
    assert!(calls[3]["session"].is_string(), "{calls:#?}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_toolhost"))
        .args(["audit", log.to_str().unwrap(), "--json"])
        .args(["--principal", "alice@example.com"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
}

#[test]
fn jwts_select_the_tenant_and_bad_ones_are_refused() {
    let (key, public) = ed25519();
    let (other_key, _) = ed25519();
    let s = Setup::new(
        "\n[auth]\nauthorization-servers = [\"https://auth.example\"]\n[auth.jwt]\nissuer = \"https://auth.example\"\naudience = \"https://tools.example/mcp\"\njwks-file = \"jwks.json\"\ntenant-claim = \"org\"\nleeway = \"0s\"\n",
    );
    write_jwks(&s.dir.path().join("jwks.json"), &public);
    let server = s.serve();
    let addr = server.addr();
    let good = json!({
        "iss": "https://auth.example",
        "aud": "https://tools.example/mcp",
        "exp": now() + 600,
        "org": "beta",
    });
    let valid = jwt(&key, good.clone());
    assert_eq!(list(&addr, &valid), list(&addr, TOKEN_B));
    let (st, resp) = call(&addr, &valid, "echo", json!({"text": "x"}));
    assert_eq!(st, 200);
    assert!(failure(&resp, "echo").contains("TOOL"), "{resp}");

    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let refused = [
        ("expired", jwt(&key, with("exp", json!(now() - 120)))),
        (
            "another audience",
            jwt(&key, with("aud", json!("https://elsewhere/mcp"))),
        ),
        (
            "another issuer",
            jwt(&key, with("iss", json!("https://evil.example"))),
        ),
        ("signature", jwt(&other_key, good.clone())),
        ("not served here", jwt(&key, with("org", json!("nobody")))),
        ("names no tenant", jwt(&key, with("org", json!(7)))),
        // Algorithm confusion: HMAC keyed with the public key, and `none`.
        ("no key of the issuer", {
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            h.kid = Some("k1".into());
            let secret = jsonwebtoken::EncodingKey::from_secret(&public);
            jsonwebtoken::encode(&h, &good, &secret).unwrap()
        }),
        ("malformed", {
            let h = b64(br#"{"alg":"none","kid":"k1"}"#);
            format!("{h}.{}.", b64(good.to_string().as_bytes()))
        }),
        // A review's case: signed, but naming a critical extension this
        // server does not understand (RFC 7515 says refuse).
        ("critical extensions", {
            let h = b64(br#"{"alg":"EdDSA","kid":"k1","crit":["foo"],"foo":1}"#);
            let signed = format!("{h}.{}", b64(good.to_string().as_bytes()));
            let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&key).unwrap();
            format!("{signed}.{}", b64(pair.sign(signed.as_bytes()).as_ref()))
        }),
        // The same, `crit` given twice (read as no `crit` at all, it
        // would pass).
        ("critical extensions", {
            let h = b64(br#"{"alg":"EdDSA","kid":"k1","crit":["foo"],"crit":["foo"],"foo":1}"#);
            let signed = format!("{h}.{}", b64(good.to_string().as_bytes()));
            let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&key).unwrap();
            format!("{signed}.{}", b64(pair.sign(signed.as_bytes()).as_ref()))
        }),
        // A review's case: a header of 48 KB, parsed once and then again
        // for every key tried, by anyone: refused before it is decoded.
        ("header is over 4096 bytes", {
            let zeros = vec!["0"; 20_000].join(",");
            let h = b64(format!(r#"{{"alg":"EdDSA","z":[{zeros}]}}"#).as_bytes());
            format!("{h}.{}.{}", b64(good.to_string().as_bytes()), b64(&[0; 64]))
        }),
    ];
    for (why, token) in refused {
        let (st, resp) = rpc(&addr, Some(&token), "tools/list", json!({}), None);
        assert_eq!(st, 401, "{why}: {resp}");
        let challenge = header(&resp, "www-authenticate").unwrap();
        assert!(
            challenge.contains("invalid_token") && challenge.contains(why),
            "{why}: {challenge}"
        );
    }
    // The metadata names the authorization server.
    let (_, resp) = http(
        &addr,
        "GET",
        "/.well-known/oauth-protected-resource",
        &[],
        "",
    );
    assert_eq!(
        body_json(&resp)["authorization_servers"],
        json!(["https://auth.example"])
    );
}

// --- the official Python MCP SDK client

fn python_tenant(mode: &str) {
    use crate::mcp::{LIMIT, Sdk, Via, client, run_client};
    let s = Setup::new("");
    let server = s.serve();
    let mut cmd = client(Sdk::Python, "tenant", Some(mode), Via::Http(&server.url));
    cmd.env("TOOLHOST_CLIENT_TOKEN", TOKEN_A)
        .env("TOOLHOST_CLIENT_TOOLS", "echo,list_dir,read_file,search")
        .env("TOOLHOST_CLIENT_FORBIDDEN", "json_query");
    run_client(cmd, "tenant", LIMIT);
}

#[test]
fn python_sdk_sees_only_its_tenants_tools_2025_11_25() {
    python_tenant("legacy");
}

#[test]
fn python_sdk_sees_only_its_tenants_tools_2026_07_28() {
    python_tenant("2026-07-28");
}

#[test]
fn a_session_moves_between_replicas_sharing_the_key_but_never_to_another_tenant() {
    let s = Setup::new("");
    let root = s.dir.path();
    // Two keys on the replicas (newest first), as mid-rotation; a third
    // replica that has only an unrelated key.
    let keys = root.join("state-keys");
    crate::support::write_private(
        &keys,
        format!("# newest first\n{}\n{}\n", "5a".repeat(32), "a5".repeat(32)),
    );
    let stranger_keys = root.join("stranger-keys");
    crate::support::write_private(&stranger_keys, "c3".repeat(32));
    let replica = |keys: &Path| {
        HttpServe::start_env(
            &[
                "--watch",
                "false",
                "--config",
                &root.join("toolhost.toml").display().to_string(),
                "--tools",
                &root.join("base").display().to_string(),
                "--state-key-file",
                &keys.display().to_string(),
            ],
            &[],
        )
    };
    let (one, two, stranger) = (replica(&keys), replica(&keys), replica(&stranger_keys));
    let bearer = |t: &str| format!("Bearer {t}");
    let (a, b) = (bearer(TOKEN_A), bearer(TOKEN_B));
    let (st, resp) = http(
        &one.addr(),
        "POST",
        "/mcp",
        &[("Authorization", &a)],
        crate::mcp::INIT,
    );
    assert_eq!(st, 200, "{resp}");
    let sid = header(&resp, "mcp-session-id").unwrap().to_string();
    let session = |addr: &str, auth: &str, sid: &str, body: &str| {
        http(
            addr,
            "POST",
            "/mcp",
            &[
                ("Authorization", auth),
                ("Mcp-Session-Id", sid),
                ("MCP-Protocol-Version", "2025-11-25"),
            ],
            body,
        )
    };
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    assert_eq!(session(&one.addr(), &a, &sid, initialized).0, 202);
    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"on replica two"}}}"#;
    // The other replica never saw the session: it opens the id and serves it.
    let (st, resp) = session(&two.addr(), &a, &sid, call);
    assert_eq!(st, 200, "{resp}");
    assert!(resp.contains("on replica two"), "{resp}");
    // Beta presenting alpha's session id, on either replica: no such session.
    for r in [&one, &two] {
        let (st, resp) = session(&r.addr(), &b, &sid, call);
        assert_eq!(st, 404, "{resp}");
        assert!(!resp.contains("on replica two"), "{resp}");
    }
    // A replica without the key cannot open it.
    let (st, _) = session(&stranger.addr(), &a, &sid, call);
    assert_eq!(st, 404);
    // Forged and altered ids are sessions that do not exist.
    let (head, sealed) = sid.split_once('.').unwrap();
    let mut flipped = sealed.as_bytes().to_vec();
    let mid = flipped.len() / 2;
    flipped[mid] = if flipped[mid] == b'A' { b'B' } else { b'A' };
    let altered = format!("{head}.{}", String::from_utf8(flipped).unwrap());
    let other_sid = format!("{}.{sealed}", "0".repeat(32));
    for forged in [
        altered.as_str(),
        other_sid.as_str(),
        "00000000000000000000000000000000.AAAA",
        "not-a-session",
    ] {
        let (st, resp) = session(&two.addr(), &a, forged, call);
        assert_eq!(st, 404, "{forged}: {resp}");
    }
}
// --- fair scheduling and scale

impl Setup {
    /// `hostile` (`spin`, `sleep`, …) in `slow/`, with `limits`.
    fn slow_tool(&self, limits: &str) {
        let slow = self.dir.path().join("slow");
        std::fs::create_dir_all(&slow).unwrap();
        let td = ToolDir::new();
        td.add("hostile", "hostile", limits);
        for ext in ["wasm", "toml"] {
            std::fs::copy(
                td.path().join(format!("hostile.{ext}")),
                slow.join(format!("hostile.{ext}")),
            )
            .unwrap();
        }
    }

    /// Append `tenants` to the host config, and set `[engine]` keys.
    fn configure(&self, engine: &str, tenants: &str) {
        let cfg = self.dir.path().join("toolhost.toml");
        let text = std::fs::read_to_string(&cfg).unwrap().replacen(
            "[engine]\n",
            &format!("[engine]\n{engine}"),
            1,
        );
        std::fs::write(&cfg, format!("{text}\n{tenants}")).unwrap();
    }
}

fn tenant_entry(name: &str, tools: &str, token: &str, extra: &str) -> String {
    format!(
        "\n[[tenant]]\nname = \"{name}\"\ntools = [\"{tools}\"]\ntoken-sha256 = [\"{}\"]\n{extra}\n",
        sha(token)
    )
}

/// POST `body` in a session (`in_session`: its headers), and hang up once
/// its response has started (the call is running).
fn hang_up_once_started(addr: &str, in_session: &[(&str, &str)], body: &str) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in in_session {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut first = [0u8; 12];
    s.read_exact(&mut first).unwrap();
    assert_eq!(
        &first,
        b"HTTP/1.1 200",
        "{}",
        String::from_utf8_lossy(&first)
    );
    // The stream starts before the call reaches the tenant's gate: give it
    // time to take its slot before hanging up.
    std::thread::sleep(Duration::from_millis(500));
}

/// A 2025-11-25 session's call runs on when its client hangs up, and its
/// arguments with it: the request stays counted against the tenant's
/// `max-open-requests` (and its body against `max-request-bytes`) until
/// the call has ended. Before, both were given back with the response, so
/// a tenant could hold any number of calls' arguments (found by review).
#[test]
fn a_session_call_whose_client_hung_up_stays_counted_until_it_ends() {
    let s = Setup::new("");
    s.slow_tool("[limits]\ntimeout = \"30s\"\n");
    s.configure(
        "",
        &tenant_entry("kappa", "slow/", "kappa-token", "max-open-requests = 1"),
    );
    let server = s.serve();
    let addr = server.addr();
    let (st, resp) = initialize(&addr, "kappa-token");
    assert_eq!(st, 200, "{resp}");
    let sid = header(&resp, "mcp-session-id").unwrap().to_string();
    let in_session = [
        ("Authorization", "Bearer kappa-token"),
        ("Mcp-Session-Id", sid.as_str()),
        ("MCP-Protocol-Version", "2025-11-25"),
    ];
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    assert_eq!(http(&addr, "POST", "/mcp", &in_session, initialized).0, 202);
    let body = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":6000}}}"#;
    hang_up_once_started(&addr, &in_session, body);
    // For the next 3 s (the call sleeps 6 s) the tenant's one open request
    // is the call's: every other is refused, naming the bound.
    let hung_up = std::time::Instant::now();
    while hung_up.elapsed() < Duration::from_secs(3) {
        let (st, resp) = rpc(&addr, Some("kappa-token"), "tools/list", json!({}), None);
        assert_eq!(st, 429, "{resp}");
        assert!(resp.contains("max-open-requests = 1"), "{resp}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Once it has ended, its place is free.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (st, resp) = rpc(&addr, Some("kappa-token"), "tools/list", json!({}), None);
        if st == 200 {
            break;
        }
        assert_eq!(st, 429, "{resp}");
        assert!(
            std::time::Instant::now() < deadline,
            "the call has ended, but its request still counts"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A host with tenant `name` (echo, `token`, the quota `extra`) beside the
/// setup's own, and an audit log: the setup and the log's path.
fn with_audited_tenant(name: &str, token: &str, extra: &str) -> (Setup, std::path::PathBuf) {
    let s = Setup::new("");
    let log = s.dir.path().join("audit.jsonl");
    s.configure(
        "",
        &format!(
            "{}\n[audit]\npath = \"{}\"\nfsync = \"always\"\n",
            tenant_entry(name, "echo", token, extra),
            log.display()
        ),
    );
    (s, log)
}

/// The `decision` lines of the audit log at `log`.
fn decisions(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["event"] == "decision")
        .collect()
}

/// The first decision line of `log` that `pick` accepts, waiting up to
/// 10 s for it.
fn wait_for_decision(log: &Path, pick: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(d) = decisions(log).into_iter().find(|d| pick(d)) {
            return d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no such decision in {:?}",
            decisions(log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_fuel_quota_is_a_429_naming_it_counted_and_audited() {
    let (s, log) = with_audited_tenant("burner", "burner-token", "fuel-per-minute = 1000");
    let server = s.serve();
    let addr = server.addr();
    // The budget is positive: the call runs, and overdraws it (an echo
    // burns far more than 1000 units).
    let (st, resp) = call(&addr, "burner-token", "echo", json!({"text": "x"}));
    assert_eq!(st, 200, "{resp}");
    assert_eq!(body_json(&resp)["result"]["content"][0]["text"], "x");
    let (st, resp) = call(&addr, "burner-token", "echo", json!({"text": "x"}));
    assert_eq!(st, 429, "{resp}");
    let retry: u64 = header(&resp, "retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1, "{resp}");
    let msg = body_json(&resp)["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("tenant `burner` is over its quota `fuel-per-minute = 1000`")
            && msg.contains(&format!("retry in {retry} s")),
        "{msg}"
    );
    // Another tenant's calls are not affected.
    assert_eq!(call(&addr, TOKEN_A, "echo", json!({"text": "x"})).0, 200);
    // The refusal is a decision in the audit log, naming the quota.
    let decision = wait_for_decision(&log, |_| true);
    assert_eq!(decision["tenant"], "burner", "{decision}");
    assert_eq!(decision["tool"], "echo", "{decision}");
    assert_eq!(decision["decision"], "deny", "{decision}");
    assert_eq!(decision["outcome"], "over_quota", "{decision}");
    assert!(
        decision["reason"]
            .as_str()
            .unwrap()
            .contains("fuel-per-minute = 1000"),
        "{decision}"
    );
}

#[test]
fn a_flood_of_refused_calls_writes_a_line_a_second_with_the_name_cut() {
    // A refusal costs its tenant nothing, so a client can repeat it as fast
    // as it likes: the audit log must get a line a second, not a line per
    // refusal (which would rotate every tenant's records out of the log),
    // and never the client's megabytes of tool name.
    let (s, log) = with_audited_tenant("flood", "flood-token", "calls-per-minute = 1");
    let server = s.serve();
    let addr = server.addr();
    assert_eq!(
        call(&addr, "flood-token", "echo", json!({"text": "x"})).0,
        200
    );
    let long = "A".repeat(3000);
    let started = std::time::Instant::now();
    for _ in 0..30 {
        let (st, resp) = call(&addr, "flood-token", &long, json!({}));
        assert_eq!(st, 429, "{resp}");
    }
    let seconds = started.elapsed().as_secs();
    wait_for_decision(&log, |_| true);
    std::thread::sleep(Duration::from_millis(300));
    let lines = decisions(&log);
    assert!(
        !lines.is_empty() && lines.len() as u64 <= seconds + 1,
        "{} lines for 30 refusals in {seconds} s: {lines:?}",
        lines.len()
    );
    let tool = lines[0]["tool"].as_str().unwrap();
    assert!(tool.len() < 300 && tool.ends_with('…'), "{tool}");
    assert_eq!(lines[0]["outcome"], "over_quota");
    // The other tenant's records still get through at once.
    assert_eq!(call(&addr, TOKEN_A, "echo", json!({"text": "x"})).0, 200);
    // A request without a valid credential is a decision too.
    assert_eq!(call(&addr, "no-such-token", "echo", json!({})).0, 401);
    let refused = wait_for_decision(&log, |d| d["outcome"] == "unauthenticated");
    assert_eq!(refused["tenant"], "", "{refused}");
    assert_eq!(refused["decision"], "deny", "{refused}");
    // Where it came from, for the operator to act on.
    let reason = refused["reason"].as_str().unwrap_or_default();
    assert!(reason.ends_with("(from 127.0.0.1)"), "{refused}");
}

#[test]
fn a_flooding_tenant_at_its_cap_does_not_stop_another_tenants_call() {
    // Room for two guests at once; the flooder has six calls in: two run,
    // four wait for a sandbox.
    let s = Setup::new("");
    s.slow_tool("[limits]\ntimeout = \"60s\"\nmax-concurrency = 16\n");
    s.configure(
        "max-instances = 2\n",
        &tenant_entry("flood", "slow/", "flood-token", "max-concurrent = 6"),
    );
    let server = s.serve();
    let addr = server.addr();
    let done = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let flooders: Vec<_> = (0..6)
        .map(|i| {
            let (addr, done) = (addr.clone(), done.clone());
            std::thread::spawn(move || {
                loop {
                    let (st, resp) = call(&addr, "flood-token", "sleep", json!({"ms": 3000}));
                    // Refused at the door (429), or just past it (a tool
                    // error) when another call took the last slot first.
                    if st == 429 || resp.contains("over its quota") {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    done.lock().unwrap().push(format!("flood{i}"));
                    return (st, resp);
                }
            })
        })
        .collect();
    // Wait until the flooder is at its cap: all six calls are in. (The
    // probe names no tool, so when it is let in it ends at once.)
    loop {
        let (st, resp) = call(&addr, "flood-token", "no-such-tool", json!({}));
        if st == 429 || resp.contains("over its quota") {
            assert!(resp.contains("max-concurrent = 6"), "{resp}");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Another tenant's call waits in its own queue, not behind the
    // flooder's four: it gets the next sandbox but one.
    let (st, resp) = call(&addr, TOKEN_A, "echo", json!({"text": "through"}));
    done.lock().unwrap().push("victim".into());
    assert_eq!(st, 200, "{resp}");
    assert_eq!(
        body_json(&resp)["result"]["content"][0]["text"],
        "through",
        "{resp}"
    );
    for f in flooders {
        let (st, resp) = f.join().unwrap();
        assert_eq!(st, 200, "{resp}");
        assert_eq!(
            body_json(&resp)["result"]["content"][0]["text"],
            "slept",
            "{resp}"
        );
    }
    let order = done.lock().unwrap().clone();
    let victim = order.iter().position(|o| o == "victim").unwrap();
    // Served round robin: one flood call may take a freed sandbox before
    // the victim's turn (its queue came first); at least three of the four
    // that waited come after it. (One queue for all would serve the
    // victim after all four.)
    assert!(
        order.len() - 1 - victim >= 3,
        "the victim's call waited behind the flood: {order:?}"
    );
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn a_thousand_calls_in_flight_across_ten_tenants_all_complete() {
    const TENANTS: usize = 10;
    const EACH: usize = 100;
    let s = Setup::alone("");
    s.slow_tool("[limits]\ntimeout = \"60s\"\nmax-concurrency = 200\n");
    let tenants: String = (0..TENANTS)
        .map(|t| tenant_entry(&format!("t{t}"), "slow/", &format!("token-{t}"), ""))
        .collect();
    s.configure("max-instances = 1100\n", &tenants);
    let server = s.serve();
    let addr = server.addr();
    for t in 0..TENANTS {
        let (st, resp) = call(&addr, &format!("token-{t}"), "sleep", json!({"ms": 1}));
        assert_eq!(st, 200, "{resp}");
    }
    let base = rss_kib(server.pid());
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..TENANTS * EACH)
        .map(|i| {
            let addr = addr.clone();
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    let token = format!("token-{}", i % TENANTS);
                    call(&addr, &token, "sleep", json!({"ms": 4000}))
                })
                .unwrap()
        })
        .collect();
    // The peak while they sleep, sampled until the first has come back.
    let mut peak = base;
    while !calls.iter().any(|c| c.is_finished()) {
        peak = peak.max(rss_kib(server.pid()));
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut failed = Vec::new();
    for c in calls {
        let (st, resp) = c.join().unwrap();
        let ok = st == 200 && body_json(&resp)["result"]["content"][0]["text"] == "slept";
        if !ok {
            failed.push(resp);
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} calls failed; the first: {}",
        failed.len(),
        TENANTS * EACH,
        failed[0]
    );
    println!(
        "{} calls in flight across {TENANTS} tenants completed in {:.1} s; server RSS {} MiB before, {} MiB at peak: {} KiB per in-flight call",
        TENANTS * EACH,
        started.elapsed().as_secs_f64(),
        base >> 10,
        peak >> 10,
        (peak.saturating_sub(base)) / (TENANTS * EACH) as u64
    );
}

/// `fixture` (a test component) as `SUB/SUB.wasm` under `dir`, with a
/// manifest of `extra` TOML: a tenant's tool directory.
fn deploy(dir: &Path, sub: &str, fixture: &str, extra: &str) {
    let td = ToolDir::new();
    td.add(sub, fixture, extra);
    let to = dir.join(sub);
    std::fs::create_dir(&to).unwrap();
    for ext in ["wasm", "toml"] {
        let file = format!("{sub}.{ext}");
        std::fs::copy(td.path().join(&file), to.join(&file)).unwrap();
    }
}

/// A core serving the tenants of host config `text` (written into `dir`),
/// each from its own sources, every tool loaded.
async fn core_of_tenants(dir: &Path, text: &str) -> toolhost::Core {
    let cfg = dir.join("toolhost.toml");
    std::fs::write(&cfg, text).unwrap();
    let config = toolhost::HostConfig::load(&cfg)
        .unwrap()
        .with_cache_dir(crate::support::test_config().engine.cache_dir);
    let mut b = toolhost::Core::builder().config(config.clone());
    for t in &config.tenants {
        for s in t.sources(&[]) {
            b = b.add_source(s);
        }
    }
    let core = b.build().await.unwrap();
    assert!(core.load_errors().is_empty(), "{:?}", core.load_errors());
    core
}

/// The quotas live on the one call path: an embedder calling
/// `Core::call` (as the stdio and agent front ends do) gets the same
/// refusals as the HTTP door, with no front end in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_hold_on_core_call_without_any_front_end() {
    use toolhost::{CallErrorKind, CallRequest, Scope};
    let dir = tempfile::tempdir().unwrap();
    deploy(
        dir.path(),
        "slow",
        "hostile",
        "[limits]\ntimeout = \"30s\"\n",
    );
    let core = core_of_tenants(
        dir.path(),
        &format!(
            "[[tenant]]\nname = \"lib\"\ntools = [\"slow/\"]\ntoken-sha256 = [\"{}\"]\nmax-concurrent = 1\n\n[[tenant]]\nname = \"rate\"\ntools = [\"slow/\"]\ntoken-sha256 = [\"{}\"]\ncalls-per-minute = 3\n",
            sha("lib-token"),
            sha("rate-token")
        ),
    )
    .await;
    let scope = Scope::new("lib");
    let sleep_in = |scope: &str, ms: u64| {
        let core = core.clone();
        let req = CallRequest::new(
            Scope::new(scope),
            "sleep",
            json!({"ms": ms}).as_object().cloned(),
        );
        async move { core.call(req).await }
    };
    let sleep = |ms: u64| sleep_in("lib", ms);
    // One call holds the only slot; a second is refused while it runs.
    // (If the probe wins the race for the slot, the long call is the one
    // refused: try again.)
    let refused = loop {
        let long = tokio::spawn(sleep(1500));
        tokio::time::sleep(Duration::from_millis(50)).await;
        match sleep(1).await {
            Err(e) if matches!(e.kind(), CallErrorKind::OverQuota { .. }) => {
                long.await.unwrap().unwrap();
                break e;
            }
            Ok(_) => {
                let _ = long.await.unwrap();
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(refused.code(), "over_quota");
    assert!(
        refused
            .to_string()
            .contains("tenant `lib` is over its quota `max-concurrent = 1`"),
        "{refused}"
    );
    // The other tenant's rate: 3 a minute, then refused.
    for _ in 0..3 {
        sleep_in("rate", 1).await.unwrap();
    }
    let refused = sleep_in("rate", 1).await.unwrap_err();
    match refused.kind() {
        CallErrorKind::OverQuota {
            quota, retry_after, ..
        } => {
            assert_eq!(*quota, "calls-per-minute");
            assert!(*retry_after >= Duration::from_secs(1), "{retry_after:?}");
        }
        k => panic!("{k:?}"),
    }
    // Once the long call is over, its slot is free again.
    sleep(1).await.unwrap();
    // The refusals are counted per tenant and quota.
    let metrics = core.metrics().encode();
    assert!(
        metrics.contains("quota=\"max-concurrent\"")
            && metrics.contains("quota=\"calls-per-minute\""),
        "{metrics}"
    );
    // Listing is not a call: the tenant still sees its tools.
    assert!(core.tools(&scope).iter().any(|t| &*t.name == "sleep"));
}

/// The HTTP door takes a tenant's `max-concurrent` slot when it admits a
/// `tools/call`, before the MCP layer has looked at the request: requests
/// that the MCP layer then refuses (a forged session id, an unknown tool)
/// must give the slot back, or a client could lock its tenant out.
#[test]
fn calls_refused_after_the_door_give_their_slot_back() {
    let s = Setup::new("");
    s.configure(
        "",
        &tenant_entry("solo", "echo", "solo-token", "max-concurrent = 1"),
    );
    let server = s.serve();
    let addr = server.addr();
    let forged = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}"#;
    for _ in 0..5 {
        let (st, resp) = http(
            &addr,
            "POST",
            "/mcp",
            &[
                ("Authorization", "Bearer solo-token"),
                ("Mcp-Session-Id", "forged-session-id"),
                ("MCP-Protocol-Version", "2025-11-25"),
            ],
            forged,
        );
        assert_eq!(st, 404, "{resp}");
        let (st, resp) = call(&addr, "solo-token", "no_such_tool", json!({}));
        assert_ne!(st, 429, "{resp}");
    }
    // The one slot is free: a real call runs.
    let (st, resp) = call(&addr, "solo-token", "echo", json!({"text": "still here"}));
    assert_eq!(st, 200, "{resp}");
    assert!(resp.contains("still here"), "{resp}");
}

/// Replace `from` with `to` in the host config, all at once (a rename: the
/// server never reads half a file).
fn edit_config(s: &Setup, edits: &[(&str, &str)]) {
    let cfg = s.dir.path().join("toolhost.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "`{from}` is not in {text}");
        text = text.replace(from, to);
    }
    let tmp = s.dir.path().join("toolhost.toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &cfg).unwrap();
}

/// A server of the tools in `base` under the host config `cfg`,
/// reloading on changes if `watch`, with `extra` flags.
fn serve_config(cfg: &Path, base: &Path, watch: bool, extra: &[&str]) -> HttpServe {
    let (cfg, base) = (cfg.display().to_string(), base.display().to_string());
    let watch = if watch { "true" } else { "false" };
    let mut args = vec!["--watch", watch, "--config", &cfg, "--tools", &base];
    args.extend_from_slice(extra);
    HttpServe::start_env(&args, &[])
}

/// A directory with `base/` holding the example tool `tool`, and the
/// `[engine]` section a test's host config starts with (the shared
/// compile cache).
fn with_tool(tool: &str) -> (ToolDir, std::path::PathBuf, String) {
    let dir = ToolDir::new();
    let base = dir.path().join("base");
    std::fs::create_dir(&base).unwrap();
    copy_tool(&tools_dir(), tool, &base);
    let engine = format!(
        "[engine]\ncache-dir = \"{}\"\n",
        crate::support::root().join("target/test-cache").display()
    );
    (dir, base, engine)
}

/// Wait (up to 30 s) until `server` has said `text` on its stderr.
fn wait_for_stderr(server: &HttpServe, text: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !server.stderr().contains(text) {
        assert!(
            std::time::Instant::now() < deadline,
            "no `{text}` in:\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sighup(server: &HttpServe) {
    let pid = server.pid().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// Wait until `token` lists `tool` (its tenant is served, and its tools
/// have loaded).
fn wait_served(addr: &str, token: &str, tool: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (st, resp) = rpc(addr, Some(token), "tools/list", json!({}), None);
        if st == 200 && resp.contains(&format!("\"{tool}\"")) {
            return;
        }
        assert!(st == 200 || st == 401, "{resp}");
        assert!(
            std::time::Instant::now() < deadline,
            "the reload never served the new tenant"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const TOKEN_C: &str = "gamma-token-5d0e11";

#[test]
fn a_config_reload_under_load_loses_no_call() {
    let s = Setup::new("");
    s.slow_tool("[limits]\ntimeout = \"60s\"\nmax-concurrency = 16\n");
    s.configure(
        "",
        &tenant_entry("slowpoke", "slow/", "slow-token", "max-concurrent = 4"),
    );
    let server = s.serve();
    let addr = server.addr();
    let beta_tools = list(&addr, TOKEN_B);
    assert!(
        beta_tools.contains(&"list_dir".to_string()),
        "{beta_tools:?}"
    );
    // Two long calls, running across the reload and the checks after it
    // (on a loaded machine those can take seconds).
    let sleepers: Vec<_> = (0..2)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || call(&addr, "slow-token", "sleep", json!({"ms": 20_000})))
        })
        .collect();
    // Alpha's steady load, before, during and after the reload.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let callers: Vec<_> = (0..3)
        .map(|t| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let text = format!("{t}-{i}");
                    let (st, resp) = call(&addr, TOKEN_A, "echo", json!({"text": text}));
                    seen.push((std::time::Instant::now(), text, st, resp));
                    i += 1;
                }
                seen
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    // Beta leaves, gamma comes (with beta's tools and root), slowpoke's
    // concurrency is narrowed below what it has running.
    edit_config(
        &s,
        &[
            ("name = \"beta\"", "name = \"gamma\""),
            (&sha(TOKEN_B), &sha(TOKEN_C)),
            ("max-concurrent = 4", "max-concurrent = 1"),
        ],
    );
    let reloaded = std::time::Instant::now();
    sighup(&server);
    wait_served(&addr, TOKEN_C, "list_dir");
    // The new config holds at once: beta's token is refused, gamma sees
    // beta's tools, and its file tool beta's root.
    let (st, resp) = rpc(&addr, Some(TOKEN_B), "tools/list", json!({}), None);
    assert_eq!(st, 401, "{resp}");
    assert_eq!(list(&addr, TOKEN_C), beta_tools);
    let (st, resp) = call(&addr, TOKEN_C, "list_dir", json!({"path": "/data"}));
    assert_eq!(st, 200, "{resp}");
    assert!(resp.contains("secret-b.txt"), "{resp}");
    // Slowpoke's two running calls still hold their slots against its new
    // `max-concurrent = 1`.
    let (st, resp) = call(&addr, "slow-token", "sleep", json!({"ms": 1}));
    assert_eq!(st, 429, "{resp}");
    assert!(resp.contains("max-concurrent = 1"), "{resp}");
    // They finish, under what they started with; then it may call again.
    for t in sleepers {
        let (st, resp) = t.join().unwrap();
        assert_eq!(st, 200, "{resp}");
        assert_eq!(body_json(&resp)["result"]["content"][0]["text"], "slept");
    }
    let (st, resp) = call(&addr, "slow-token", "sleep", json!({"ms": 1}));
    assert_eq!(st, 200, "{resp}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut after = 0;
    let mut total = 0;
    for c in callers {
        for (at, text, st, resp) in c.join().unwrap() {
            assert_eq!(st, 200, "{text}: {resp}");
            assert_eq!(
                body_json(&resp)["result"]["content"][0]["text"],
                text.as_str(),
                "{resp}"
            );
            total += 1;
            after += usize::from(at > reloaded);
        }
    }
    assert!(
        after > 0 && total > after,
        "{after} of {total} after the reload"
    );
    // A broken config is refused whole: the running one stays.
    let cfg = s.dir.path().join("toolhost.toml");
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{good}\n[[tenant]]\nname = 3\n")).unwrap();
    sighup(&server);
    wait_for_stderr(&server, "reload refused");
    assert!(
        server.stderr().contains("toolhost.toml:"),
        "{}",
        server.stderr()
    );
    assert_eq!(list(&addr, TOKEN_C), beta_tools);
    assert_eq!(call(&addr, TOKEN_A, "echo", json!({"text": "x"})).0, 200);
}

#[test]
fn a_watched_config_is_served_when_it_changes() {
    let s = Setup::new("");
    let server = s.serve_watching(true);
    let addr = server.addr();
    let (st, _) = rpc(&addr, Some(TOKEN_C), "tools/list", json!({}), None);
    assert_eq!(st, 401);
    // Alpha's token rotated to gamma's: no signal, only the file.
    edit_config(&s, &[(&sha(TOKEN_A), &sha(TOKEN_C))]);
    wait_served(&addr, TOKEN_C, "echo");
    let (st, _) = rpc(&addr, Some(TOKEN_A), "tools/list", json!({}), None);
    assert_eq!(st, 401);
    assert!(list(&addr, TOKEN_C).contains(&"echo".to_string()));
}

/// A call whose body is still arriving when a reload revokes its
/// credential is refused (401), not run: the credential is checked again
/// once the body is in.
#[test]
fn a_credential_revoked_while_its_body_arrives_reaches_nothing() {
    let s = Setup::new("");
    let server = s.serve();
    let addr = server.addr();
    let body = json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "late"}, "_meta": meta(json!({}))},
    })
    .to_string();
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        c,
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: echo\r\nAuthorization: Bearer {TOKEN_A}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    let (head, tail) = body.split_at(10);
    c.write_all(head.as_bytes()).unwrap();
    // Alpha's token is revoked (beta's replaces it in alpha's entry).
    edit_config(&s, &[(&sha(TOKEN_A), &sha("alpha-rotated"))]);
    sighup(&server);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !server.stderr().contains("configuration reloaded") {
        assert!(std::time::Instant::now() < deadline, "{}", server.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    c.write_all(tail.as_bytes()).unwrap();
    let mut resp = String::new();
    let _ = c.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    // The rotated token is alpha's now.
    let (st, resp) = call(&addr, "alpha-rotated", "echo", json!({"text": "x"}));
    assert_eq!(st, 200, "{resp}");
}

/// The review's case: a server watching its config reloaded at every
/// change in the config's directory, so with the audit log kept there,
/// each call's record made the host reload (and each reload handed every
/// tenant a fresh share of the pool). Calls now cause no reload; an edit
/// of the config still does.
#[test]
fn calls_whose_audit_log_sits_beside_the_config_cause_no_reload() {
    let s = Setup::new("[audit]\npath = \"audit.jsonl\"\nfsync = \"always\"\n");
    let server = s.serve_watching(true);
    let addr = server.addr();
    for i in 0..5 {
        let (st, resp) = call(&addr, TOKEN_A, "echo", json!({"text": format!("hi {i}")}));
        assert_eq!(st, 200, "{resp}");
    }
    assert!(s.dir.path().join("audit.jsonl").metadata().unwrap().len() > 0);
    // Four debounce periods: a reload would have started.
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        !server.stderr().contains("configuration reloaded"),
        "{}",
        server.stderr()
    );
    edit_config(&s, &[("[audit]", "# edited\n[audit]")]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !server.stderr().contains("configuration reloaded") {
        assert!(std::time::Instant::now() < deadline, "{}", server.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A tenant removed by a reload loses its open streams too: a 2025-11-25
/// session's GET stream ends (its token was already refused).
#[test]
fn a_removed_tenants_open_streams_end() {
    let s = Setup::new("");
    let server = s.serve();
    let addr = server.addr();
    let auth = format!("Bearer {TOKEN_B}");
    let init = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "0"}},
    });
    let (st, resp) = http(
        &addr,
        "POST",
        "/mcp",
        &[("Authorization", &auth)],
        &init.to_string(),
    );
    assert_eq!(st, 200, "{resp}");
    let session = header(&resp, "mcp-session-id").unwrap_or_else(|| panic!("{resp}"));
    let headers = [
        ("Authorization", auth.as_str()),
        ("Mcp-Session-Id", session),
        ("MCP-Protocol-Version", "2025-11-25"),
    ];
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let (st, resp) = http(&addr, "POST", "/mcp", &headers, &note.to_string());
    assert!(st == 202 || st == 200, "{resp}");
    // The session's stream, open.
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        c,
        "GET /mcp HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nAuthorization: {auth}\r\nMcp-Session-Id: {session}\r\nMCP-Protocol-Version: 2025-11-25\r\n\r\n"
    )
    .unwrap();
    let mut first = [0u8; 12];
    c.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    // Beta is removed.
    edit_config(
        &s,
        &[
            ("name = \"beta\"", "name = \"gamma\""),
            (&sha(TOKEN_B), &sha(TOKEN_C)),
        ],
    );
    sighup(&server);
    // The stream ends (the read returns, well before its own timeout).
    // (Keep-alive pings arrive meanwhile: read until the end, or give up.)
    let started = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(50),
            "the removed tenant's stream stayed open"
        );
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    wait_served(&addr, TOKEN_C, "list_dir");
}

/// L7: a failure counts against the output quota too: a tool that fails
/// with a long message cannot send it without limit.
#[test]
fn failures_count_against_the_output_quota() {
    let s = Setup::new("");
    s.slow_tool("");
    s.configure(
        "",
        &tenant_entry(
            "loud",
            "slow/",
            "loud-token",
            "output-bytes-per-minute = \"1000 B\"",
        ),
    );
    let server = s.serve();
    let addr = server.addr();
    let message = "x".repeat(5000);
    let (st, resp) = call(&addr, "loud-token", "panic", json!({"message": message}));
    assert_eq!(st, 200, "{resp}");
    assert!(
        resp.contains("xxxxxxxx"),
        "the failure reaches the caller: {resp}"
    );
    let (st, resp) = call(&addr, "loud-token", "sleep", json!({"ms": 1}));
    assert_eq!(st, 429, "{resp}");
    assert!(resp.contains("output-bytes-per-minute = 1000"), "{resp}");
}

/// L9: `[auth.jwt] tenants` limits which tenants a JWT may select: a valid
/// token naming another tenant is refused like one naming no tenant.
#[test]
fn jwts_select_only_the_tenants_listed_for_them() {
    let (key, s) = jwt_setup("tenants = [\"beta\"]", "");
    let server = s.serve();
    let addr = server.addr();
    let token = |tenant: &str| token_with(&key, json!({"tenant": tenant}));
    assert_eq!(list(&addr, &token("beta")), list(&addr, TOKEN_B));
    let (st, alpha) = rpc(&addr, Some(&token("alpha")), "tools/list", json!({}), None);
    let (st_none, nobody) = rpc(&addr, Some(&token("nobody")), "tools/list", json!({}), None);
    assert_eq!((st, st_none), (401, 401), "{alpha}\n{nobody}");
    assert_eq!(
        header(&alpha, "www-authenticate"),
        header(&nobody, "www-authenticate")
    );
    // Alpha's static token still works.
    assert!(!list(&addr, TOKEN_A).is_empty());
}

/// Open a GET stream on `sid` as `token`'s holder and keep it open: the
/// socket, once the response has started.
fn open_stream(addr: &str, token: &str, sid: &str) -> (u16, std::net::TcpStream) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = format!(
        "GET /mcp HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nAuthorization: Bearer {token}\r\nMcp-Session-Id: {sid}\r\nMCP-Protocol-Version: 2025-11-25\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    let status = std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap();
    (status, s)
}

/// A 2025-11-25 session opened as `token`'s holder: the status and the
/// response (with the session id in its headers).
fn initialize(addr: &str, token: &str) -> (u16, String) {
    let bearer = format!("Bearer {token}");
    http(
        addr,
        "POST",
        "/mcp",
        &[("Authorization", &bearer)],
        crate::mcp::INIT,
    )
}

#[test]
fn a_tenant_cannot_hold_more_sessions_or_open_requests_than_its_bounds() {
    let s = Setup::new(&format!(
        "\n[[tenant]]\nname = \"gamma\"\ntools = [\"echo\"]\ntoken-sha256 = [\"{}\"]\nmax-sessions = 2\nmax-open-requests = 3\n",
        sha("gamma-token")
    ));
    let server = s.serve();
    let addr = server.addr();

    // Two sessions, then a refusal naming the bound and answering the
    // `initialize` by its id.
    let mut sids = Vec::new();
    for _ in 0..2 {
        let (st, resp) = initialize(&addr, "gamma-token");
        assert_eq!(st, 200, "{resp}");
        sids.push(header(&resp, "mcp-session-id").unwrap().to_string());
    }
    let (st, resp) = initialize(&addr, "gamma-token");
    assert_eq!(st, 429, "{resp}");
    assert_eq!(header(&resp, "retry-after"), Some("10"), "{resp}");
    let v = body_json(&resp);
    assert_eq!(v["id"], 1, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("tenant `gamma`") && msg.contains("max-sessions = 2"),
        "{msg}"
    );
    // Another tenant is not touched; the held sessions go on.
    assert_eq!(initialize(&addr, TOKEN_A).0, 200);
    let in_session = |sid: &str, body: &str| {
        http(
            &addr,
            "POST",
            "/mcp",
            &[
                ("Authorization", "Bearer gamma-token"),
                ("Mcp-Session-Id", sid),
                ("MCP-Protocol-Version", "2025-11-25"),
            ],
            body,
        )
    };
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    assert_eq!(in_session(&sids[0], initialized).0, 202);
    let listed = in_session(
        &sids[0],
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    );
    assert_eq!(listed.0, 200, "{}", listed.1);
    // A session ended makes room for the next.
    let (st, resp) = http(
        &addr,
        "DELETE",
        "/mcp",
        &[
            ("Authorization", "Bearer gamma-token"),
            ("Mcp-Session-Id", &sids[1]),
            ("MCP-Protocol-Version", "2025-11-25"),
        ],
        "",
    );
    assert!(st == 200 || st == 204, "{resp}");
    // Ended, its id is a session that is no more here: 404, as the spec
    // says, not restored from the id (found by the user review).
    let again = in_session(
        &sids[1],
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#,
    );
    assert_eq!(again.0, 404, "{}", again.1);
    let (st, resp) = initialize(&addr, "gamma-token");
    assert_eq!(st, 200, "{resp}");
    sids[1] = header(&resp, "mcp-session-id").unwrap().to_string();
    assert_eq!(in_session(&sids[1], initialized).0, 202);

    // Streams that never end: three are the most gamma keeps open.
    let mut streams = Vec::new();
    for sid in [&sids[0], &sids[1], &sids[0]] {
        let (st, stream) = open_stream(&addr, "gamma-token", sid);
        assert_eq!(st, 200);
        streams.push(stream);
    }
    let (st, resp) = rpc(&addr, Some("gamma-token"), "tools/list", json!({}), None);
    assert_eq!(st, 429, "{resp}");
    assert_eq!(header(&resp, "retry-after"), Some("1"), "{resp}");
    assert!(resp.contains("max-open-requests = 3"), "{resp}");
    let (st, _) = open_stream(&addr, "gamma-token", &sids[1]);
    assert_eq!(st, 429);
    // Alpha's requests are its own.
    assert!(!list(&addr, TOKEN_A).is_empty());
    // A stream closed gives its place back.
    streams.pop();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (st, resp) = rpc(&addr, Some("gamma-token"), "tools/list", json!({}), None);
        if st == 200 {
            break;
        }
        assert_eq!(st, 429, "{resp}");
        assert!(
            std::time::Instant::now() < deadline,
            "a closed stream still counts"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Request bodies are counted as they arrive, against the tenant's
/// `max-request-bytes`: before, a tenant's 1024 open requests could each
/// hold a 4 MiB body in the host's memory.
#[test]
fn a_tenant_cannot_hold_more_request_body_bytes_than_its_bound() {
    let s = Setup::new(&format!(
        "\n[[tenant]]\nname = \"delta\"\ntools = [\"echo\"]\ntoken-sha256 = [\"{}\"]\nmax-request-bytes = \"64 KiB\"\n",
        sha("delta-token")
    ));
    let server = s.serve();
    let addr = server.addr();
    let text = "x".repeat(20 << 10);
    // Within the bound alone, a 20 KiB call is served.
    let (st, resp) = call(&addr, "delta-token", "echo", json!({"text": text}));
    assert_eq!(st, 200, "{resp}");
    // A body that can never fit is 413, not a 429 to retry for ever: by
    // its size, or by what it parses to (10,000 small values, 20 KiB of
    // text, a `serde_json::Value` of 32 bytes each and more).
    let (st, resp) = call(
        &addr,
        "delta-token",
        "echo",
        json!({"text": "x".repeat(70 << 10)}),
    );
    assert_eq!(st, 413, "{resp}");
    assert!(resp.contains("max-request-bytes = 65536"), "{resp}");
    let (st, resp) = rpc(
        &addr,
        Some("delta-token"),
        "tools/list",
        json!({"pad": vec![0; 10_000]}),
        None,
    );
    assert_eq!(st, 413, "{resp}");

    // A slow upload: 48 KiB of a 60 KiB body sent, the rest never.
    let upload = || {
        let mut slow = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            slow,
            "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/list\r\nAuthorization: Bearer delta-token\r\nContent-Length: {}\r\n\r\n",
            60 << 10
        )
        .unwrap();
        slow.write_all(&vec![b' '; 48 << 10]).unwrap();
        slow.set_nonblocking(true).unwrap();
        slow
    };
    // An answer to the upload: it was refused (a call of ours held its
    // bytes when the upload's arrived), so it is sent again.
    let answered = |s: &mut std::net::TcpStream| {
        let mut b = [0u8; 1];
        !matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    };
    let mut slow = upload();
    // Once the server holds those bytes, the next 20 KiB pass the bound.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let resp = loop {
        let (st, resp) = call(&addr, "delta-token", "echo", json!({"text": text}));
        if st == 429 && !answered(&mut slow) {
            break resp;
        }
        assert!(st == 200 || st == 429, "{resp}");
        assert!(std::time::Instant::now() < deadline, "never refused");
        if answered(&mut slow) {
            slow = upload();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(header(&resp, "retry-after"), Some("1"), "{resp}");
    assert!(
        resp.contains("tenant `delta`") && resp.contains("max-request-bytes = 65536"),
        "the refusal names the tenant and the quota: {resp}"
    );
    // Another tenant's bodies are its own.
    let (st, resp) = call(&addr, TOKEN_A, "echo", json!({"text": text}));
    assert_eq!(st, 200, "{resp}");
    // The upload abandoned gives its bytes back.
    drop(slow);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (st, resp) = call(&addr, "delta-token", "echo", json!({"text": text}));
        if st == 200 {
            break;
        }
        assert_eq!(st, 429, "{resp}");
        assert!(
            std::time::Instant::now() < deadline,
            "an abandoned upload still counts"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_checks_cost_the_tenant_fuel_even_when_they_refuse_the_call() {
    use toolhost::{CallErrorKind, CallRequest, Scope};
    let dir = tempfile::tempdir().unwrap();
    deploy(dir.path(), "sink", "typed-kitchen-sink", "");
    let core = core_of_tenants(
        dir.path(),
        &tenant_entry(
            "checked",
            "sink/",
            "checked-token",
            "fuel-per-minute = 1000",
        ),
    )
    .await;
    let bytes = |data: Vec<Value>| {
        let req = CallRequest::new(
            Scope::new("checked"),
            "compound_echo-bytes",
            json!({ "data": data }).as_object().cloned(),
        );
        core.call(req)
    };
    // A million bytes, the last out of range: the check reads every one
    // before it refuses, and that work (milliseconds of a core, millions
    // of units at a guest's rate) is the caller's, though no guest ran.
    let mut data = vec![json!(1); 1_000_000];
    data.push(json!(256));
    let e = bytes(data).await.unwrap_err();
    assert!(
        matches!(e.kind(), CallErrorKind::InvalidArguments { .. }),
        "{e}"
    );
    match bytes(vec![json!(1)]).await {
        Err(e) if matches!(e.kind(), CallErrorKind::OverQuota { quota, .. } if *quota == "fuel-per-minute") =>
            {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("the refused check cost the tenant nothing"),
    }
}

/// A review's case: `--scope-tools acme=DIR` put tools in tenant `acme`'s
/// scope under the host's caps alone, skipping the tenant's `[tenant.env]`
/// and `[tenant.limits]`. A tenant's caps hold however its scope's tools
/// are named.
#[test]
fn tools_named_into_a_tenants_scope_by_the_command_line_get_its_caps() {
    let dir = tempfile::tempdir().unwrap();
    let tools = ToolDir::new();
    tools.add("hostile", "hostile", "[env]\npass = [\"HOME\"]\n");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let cfg = dir.path().join("toolhost.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[tenant]]\nname = \"acme\"\ntools = [\"empty/\"]\ntoken-sha256 = [\"{}\"]\n[tenant.env]\npass = []\n",
            sha(TOKEN_A)
        ),
    )
    .unwrap();
    let call = |scope_tools: &str, scope: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_toolhost"))
            .args(["call", "getenv", r#"{"name":"HOME"}"#, "--tools"])
            .arg(&empty)
            .arg("--config")
            .arg(&cfg)
            .args(["--scope-tools", scope_tools, "--scope", scope])
            .env("HOME", "/home/secret")
            .output()
            .unwrap()
    };
    let tools_path = tools.path().display().to_string();
    // Another scope of the same host, not a tenant's: the host's caps.
    let out = call(&format!("other={tools_path}"), "other");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/home/secret"), "{out:?}");
    // The tenant's scope: its `[tenant.env]` passes nothing.
    let out = call(&format!("acme={tools_path}"), "acme");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("/home/secret"), "{all}");
    assert!(
        all.contains("HOME"),
        "the refusal names the variable: {all}"
    );
}

/// A review's case: a chunked body's parts were kept as they came and
/// counted by their bytes only. Four million 1-byte chunks, 2 MB counted,
/// held 67 MB (each part's handle, and hyper's read buffer behind it):
/// fifteen such uploads held 2 GB under a 64 MiB bound. A body is copied
/// into one buffer as it comes, and what that buffer reserves is counted.
#[test]
fn a_body_of_tiny_chunks_holds_about_what_it_is_counted() {
    let s = Setup::new(&format!(
        "\n[[tenant]]\nname = \"delta\"\ntools = [\"echo\"]\ntoken-sha256 = [\"{}\"]\n\n[[tenant]]\nname = \"small\"\ntools = [\"echo\"]\ntoken-sha256 = [\"{}\"]\nmax-request-bytes = \"16 KiB\"\n",
        sha("delta-token"),
        sha("small-token")
    ));
    let server = s.serve();
    let addr = server.addr();
    // A chunked body well within a small bound is served: the buffer
    // never reserves past what the request may hold.
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "echo", "arguments": {"text": "c".repeat(4000)}, "_meta": meta(json!({}))}})
    .to_string();
    let (a, b) = body.split_at(body.len() / 2);
    let mut up = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        up,
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: echo\r\nAuthorization: Bearer small-token\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    )
    .unwrap();
    let mut resp = String::new();
    up.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp:.300}");
    let base = rss_kib(server.pid());
    // Four uploads of a million 1-byte chunks each, never finished.
    let chunks = " \r\n1\r\n".repeat(1 << 20);
    let uploads: Vec<std::net::TcpStream> = (0..4)
        .map(|_| {
            let mut up = std::net::TcpStream::connect(&addr).unwrap();
            write!(
                up,
                "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/list\r\nAuthorization: Bearer delta-token\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n"
            )
            .unwrap();
            up.write_all(chunks.as_bytes()).unwrap();
            up
        })
        .collect();
    // Measured once the server has read what was sent: its memory no
    // longer grows (half a second apart), and it still serves.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut last = rss_kib(server.pid());
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = rss_kib(server.pid());
        if now.abs_diff(last) < 1024 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still growing: {now} KiB"
        );
        last = now;
    }
    let (st, resp) = call(&addr, TOKEN_A, "echo", json!({"text": "after"}));
    assert_eq!(st, 200, "{resp}");
    let grown = rss_kib(server.pid()).saturating_sub(base);
    // 4 MB of bodies; 150 MB before.
    assert!(grown < 64 << 10, "the server grew by {grown} KiB");
    drop(uploads);
}

/// A tenant over its quota is refused a stateless `prompts/get` before its
/// round is opened: the client's `requestState` was decrypted under every
/// key of the ring (and its arguments digested) first, and a tenant over
/// its `calls-per-minute` was told its bogus state was bad, the work done
/// for nothing and charged to no one (found by review).
#[test]
fn a_get_over_quota_is_refused_before_its_state_is_opened() {
    let (dir, base, engine) = with_tool("prompts");
    let root = dir.path();
    std::fs::write(
        root.join("toolhost.toml"),
        format!(
            "{engine}{}",
            tenant_entry("alpha", "prompts", TOKEN_A, "calls-per-minute = 1")
        ),
    )
    .unwrap();
    let server = serve_config(&root.join("toolhost.toml"), &base, false, &[]);
    let addr = server.addr();
    let get = |state: Option<&str>| {
        let mut params = json!({"name": "summarize", "arguments": {"text": "a b c"}});
        if let Some(s) = state {
            params["requestState"] = s.into();
        }
        rpc(
            &addr,
            Some(TOKEN_A),
            "prompts/get",
            params,
            Some("summarize"),
        )
    };
    // Its one call a minute.
    let (st, resp) = get(None);
    assert_eq!(st, 200, "{resp}");
    assert!(body_json(&resp)["result"]["messages"].is_array(), "{resp}");
    // Over its quota, with a state this server never issued: the quota
    // answers, not the state's check.
    let (_, resp) = get(Some(&"A".repeat(4096)));
    let v = body_json(&resp);
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("over its quota `calls-per-minute = 1`"),
        "{v}"
    );
}

/// A tenant keeps at most half the connections the server accepts open,
/// idle or busy, whatever its `max-open-requests` says: where the
/// descriptor limit lowered the connections to 768, one tenant's default
/// 1,024 silent requests held every one and locked the other tenants out;
/// and counting requests only, its idle keep-alive connections did the
/// same (found by review and by the review of the fix).
#[test]
fn a_tenant_holds_at_most_half_the_connections() {
    use std::io::Write as _;
    let s = Setup::new("");
    let root = s.dir.path();
    let server = serve_config(
        &root.join("toolhost.toml"),
        &root.join("base"),
        false,
        &["--max-connections", "8"],
    );
    let addr = server.addr();
    // Four connections alpha used once and keeps open, idle: its most.
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta(json!({}))}}).to_string();
    let mut idle = Vec::new();
    for _ in 0..4 {
        use std::io::{BufRead as _, Read as _};
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            c,
            "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN_A}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/list\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut r = std::io::BufReader::new(c.try_clone().unwrap());
        let mut len = 0;
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        r.read_exact(&mut vec![0; len]).unwrap();
        idle.push(c);
    }
    let (st, resp) = rpc(&addr, Some(TOKEN_A), "tools/list", json!({}), None);
    assert_eq!(st, 429, "{resp}");
    assert!(
        resp.contains("tenant `alpha` holds 4 connections")
            && header(&resp, "connection") == Some("close"),
        "{resp}"
    );
    assert!(!list(&addr, TOKEN_B).is_empty());
    drop(idle);
    // Closed, they are alpha's no more.
    let freed = (0..1000).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        rpc(&addr, Some(TOKEN_A), "tools/list", json!({}), None).0 == 200
    });
    assert!(freed, "alpha's closed connections still count");
}

/// The host's reading and parsing of a tenant's requests is charged to its
/// `fuel-per-minute`, calls or not; while the budget is spent, its
/// requests are refused (a large body before it is read) and only small
/// notifications and answers still pass. A `tools/list` with 60,000 keys
/// of junk in its parameters cost 44 ms of parsing, charged to no one, and
/// two connections' worth slowed another tenant's calls 13-fold (found by
/// review).
#[test]
fn parsing_a_tenants_requests_is_charged_to_its_fuel() {
    let (s, _log) = with_audited_tenant("parser", "parser-token", "fuel-per-minute = 1000000");
    let server = s.serve();
    let addr = server.addr();
    let junk: serde_json::Map<String, Value> =
        (0..60_000).map(|i| (format!("k{i}"), json!(0))).collect();
    let list_with = |params: Value| rpc(&addr, Some("parser-token"), "tools/list", params, None);
    // The budget is positive: served, and its parse overdraws it (about
    // 40 ms of a debug build's CPU against 1 ms a minute).
    let (st, resp) = list_with(json!({"junk": junk}));
    assert_eq!(st, 200, "{resp}");
    // Then a small request is refused after its parse, naming the quota...
    let (st, resp) = list_with(json!({}));
    assert_eq!(st, 429, "{resp}");
    let v = body_json(&resp);
    assert_eq!(v["id"], 7, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tenant `parser` is over its quota `fuel-per-minute = 1000000`"),
        "{v}"
    );
    // (the request judged on a positive balance paid its parse in full:
    // 40 ms is 40 minutes of this budget)...
    let retry: u64 = header(&resp, "retry-after").unwrap().parse().unwrap();
    assert!(retry > 60, "{resp}");
    // ...a large one before it is read (of a size the socket takes whole
    // while the answer comes: the server reads none of it), a
    // notification of 8 KB of junk too, and a body that is no message...
    let some: serde_json::Map<String, Value> =
        (0..2_000).map(|i| (format!("k{i}"), json!(0))).collect();
    let (st, resp) = list_with(json!({"junk": some}));
    assert_eq!(st, 429, "{resp}");
    assert!(resp.contains("fuel-per-minute"), "{resp}");
    let notify = |body: &str| {
        http(
            &addr,
            "POST",
            "/mcp",
            &[
                ("Authorization", "Bearer parser-token"),
                ("MCP-Protocol-Version", "2026-07-28"),
                ("Mcp-Method", "notifications/cancelled"),
            ],
            body,
        )
    };
    let heavy = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3, "junk": vec![json!([]); 4000]}});
    let (st, resp) = notify(&heavy.to_string());
    assert_eq!(st, 429, "{resp}");
    let (st, resp) = notify(&"[".repeat(2000));
    assert_eq!(st, 429, "{resp}");
    // ...while a ping, and a small notification, still pass.
    // (2026-07-28 has no `ping`: refused for that, not for the quota.)
    let (st, resp) = rpc(&addr, Some("parser-token"), "ping", json!({}), None);
    assert!(st != 429 && !resp.contains("quota"), "{resp}");
    let (st, resp) = notify(
        &json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3, "_meta": meta(json!({}))}}).to_string(),
    );
    assert_ne!(st, 429, "{resp}");
    // Another tenant is not touched.
    assert!(!list(&addr, TOKEN_A).is_empty());
}

/// A server started without tenants refuses a reload that adds them,
/// whole: it went on serving its one scope to anyone who could reach it
/// while the new tenants' caps and quotas were applied to scopes no one
/// reached, and said so only in a line that read like a plan (found by
/// review).
#[test]
fn a_server_without_tenants_refuses_a_reload_that_adds_them() {
    let (dir, base, engine) = with_tool("echo");
    let cfg = dir.path().join("toolhost.toml");
    std::fs::write(&cfg, &engine).unwrap();
    let server = serve_config(&cfg, &base, false, &[]);
    let addr = server.addr();
    assert_eq!(rpc(&addr, None, "tools/list", json!({}), None).0, 200);
    std::fs::write(
        &cfg,
        format!("{engine}{}", tenant_entry("alpha", "echo", TOKEN_A, "")),
    )
    .unwrap();
    sighup(&server);
    wait_for_stderr(&server, "reload refused");
    wait_for_stderr(&server, "restart it to serve tenants");
}
