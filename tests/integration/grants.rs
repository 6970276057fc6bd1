//! A tool reaches only what its manifest grants: directories (ro/rw),
//! environment variables and outbound hosts. Everything else is refused by
//! the sandbox itself, whatever path tricks the guest tries.

use crate::support::*;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use toolhost::{CallError, CallErrorKind};

/// A granted directory with a file in it, and a secret next to it.
struct Tree {
    _root: tempfile::TempDir,
    granted: std::path::PathBuf,
    secret: std::path::PathBuf,
}

fn tree() -> Tree {
    let root = tempfile::tempdir().unwrap();
    let granted = root.path().join("granted");
    std::fs::create_dir(&granted).unwrap();
    std::fs::write(granted.join("hello.txt"), "hello from inside\n").unwrap();
    let secret = root.path().join("secret.txt");
    std::fs::write(&secret, "TOP SECRET\n").unwrap();
    Tree {
        granted: granted.canonicalize().unwrap(),
        secret: secret.canonicalize().unwrap(),
        _root: root,
    }
}

fn tool_error_text(r: Result<toolhost::ToolOutput, CallError>) -> String {
    match r {
        Err(e) => match e.kind() {
            CallErrorKind::ToolFailed { message } => message.clone(),
            other => panic!("expected the tool to report a failure, got {other:?}"),
        },
        other => panic!("expected the tool to report a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn reads_stay_inside_the_granted_directory() {
    let t = tree();
    let d = ToolDir::new();
    d.add("files", "files", &fs_grant("/data", &t.granted, "ro"));
    // A symlink planted inside the granted dir, pointing at the secret.
    std::os::unix::fs::symlink(&t.secret, t.granted.join("planted")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", t.granted.join("planted_rel")).unwrap();
    let core = core(d.path()).await;

    let ok = call(&core, "read_file", json!({"path": "/data/hello.txt"}))
        .await
        .unwrap();
    assert!(ok.text().contains("hello from inside"));

    for path in [
        "/data/../secret.txt".to_string(),
        "../secret.txt".to_string(),
        t.secret.display().to_string(),
        "/etc/passwd".to_string(),
        "/data/planted".to_string(),
        "/data/planted_rel".to_string(),
    ] {
        let r = call(&core, "read_file", json!({"path": path})).await;
        let msg = tool_error_text(r);
        assert!(!msg.contains("TOP SECRET"), "{path}: {msg}");
        assert!(
            msg.contains("cannot read"),
            "{path}: the tool reports the OS refusal: {msg}"
        );
    }
    // The search tool cannot be walked out through the symlinks either.
    let found = call(&core, "search", json!({"pattern": "SECRET"}))
        .await
        .unwrap();
    assert!(!found.text().contains("TOP SECRET"), "{}", found.text());
}

#[tokio::test]
async fn read_only_grants_refuse_writes_and_read_write_grants_allow_them() {
    let t = tree();
    let out = tempfile::tempdir().unwrap();
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        &format!(
            "{}{}",
            fs_grant("/data", &t.granted, "ro"),
            fs_grant("/out", out.path(), "rw")
        ),
    );
    let core = core(d.path()).await;

    let msg = match call(
        &core,
        "write_path",
        json!({"path": "/data/new.txt", "content": "x"}),
    )
    .await
    {
        Err(e) => match e.kind() {
            CallErrorKind::ToolFailed { message } => message.clone(),
            other => panic!("expected the tool to report a failure, got {other:?}"),
        },
        other => panic!("a write to a read-only grant must fail, got {other:?}"),
    };
    assert!(!t.granted.join("new.txt").exists(), "{msg}");
    let overwrite = call(
        &core,
        "write_path",
        json!({"path": "/data/hello.txt", "content": "pwned"}),
    )
    .await;
    assert!(overwrite.is_err());
    assert_eq!(
        std::fs::read_to_string(t.granted.join("hello.txt")).unwrap(),
        "hello from inside\n"
    );

    call(
        &core,
        "write_path",
        json!({"path": "/out/new.txt", "content": "written"}),
    )
    .await
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(out.path().join("new.txt")).unwrap(),
        "written"
    );
    // Nothing but the grants is visible: not even the root.
    assert!(
        call(
            &core,
            "write_path",
            json!({"path": "/tmp/escape.txt", "content": "x"})
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn only_granted_environment_variables_are_visible() {
    // SAFETY: set before any host thread reads the environment in this test.
    unsafe { std::env::set_var("HOSTILE_TEST_PASSED", "passed-through") };
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        "[env]\nset = { GREETING = \"hello\" }\npass = [\"HOSTILE_TEST_PASSED\"]\n",
    );
    let core = core(d.path()).await;
    assert_eq!(
        call(&core, "getenv", json!({"name": "GREETING"}))
            .await
            .unwrap()
            .text(),
        "hello"
    );
    assert_eq!(
        call(&core, "getenv", json!({"name": "HOSTILE_TEST_PASSED"}))
            .await
            .unwrap()
            .text(),
        "passed-through"
    );
    for name in ["HOME", "PATH", "USER", "CARGO_MANIFEST_DIR"] {
        assert_eq!(
            call(&core, "getenv", json!({"name": name}))
                .await
                .unwrap()
                .text(),
            "unset",
            "{name} leaked into the guest"
        );
    }
}

/// The `hostile` tool granted `127.0.0.1:port` and nothing else, under
/// `limits` (the `[limits]` table's lines, if any).
async fn hostile_granted(port: u16, limits: &str) -> (ToolDir, toolhost::Core) {
    hostile_granted_with(port, limits, test_config()).await
}

/// [`hostile_granted`] under host config `config`.
async fn hostile_granted_with(
    port: u16,
    limits: &str,
    config: toolhost::HostConfig,
) -> (ToolDir, toolhost::Core) {
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        &format!("[network]\nallow = [\"127.0.0.1:{port}\"]\n\n[limits]\n{limits}"),
    );
    let core = core_with(config, d.path()).await;
    (d, core)
}

/// A one-shot HTTP server on 127.0.0.1 that counts the connections it gets.
async fn http_server() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (port, hits)
}

/// An HTTP server on 127.0.0.1 that answers every request with the head of
/// a long body and then keeps the connection open, sending nothing more.
async fn http_server_that_never_finishes() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\nstart")
                    .await;
                let _ = s.read(&mut buf).await; // until the client closes
            });
        }
    });
    port
}

/// SECURITY.md M3: every open connection (hyper's and rustls's buffers, the
/// connection task) is charged to the call's memory while it is open, so a
/// tool holding responses open unread runs out of its own memory limit,
/// with `connection-limit-reached`, not of the host's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_held_open_count_against_the_calls_memory_limit() {
    let port = http_server_that_never_finishes().await;
    let (_d, core) = hostile_granted(port, "memory = \"16 MiB\"\n").await;
    let url = format!("http://127.0.0.1:{port}/");
    // 100 connections would hold 200 handles, within the call's cap of 256
    // (16 MiB / 4 / 16 KiB): only the memory charge stops them.
    let out = call(&core, "hold_connections", json!({"url": url, "n": 100}))
        .await
        .unwrap()
        .text();
    let held: usize = out
        .strip_prefix("held ")
        .and_then(|r| r.split(';').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    eprintln!("{out}");
    assert!(out.contains("ConnectionLimitReached"), "{out}");
    assert!(
        (1..64).contains(&held),
        "16 MiB holds fewer than 64 connections of 256 KiB: {out}"
    );
    // The charges end with the call: the next call holds as many again.
    let again = call(&core, "hold_connections", json!({"url": url, "n": 100}))
        .await
        .unwrap()
        .text();
    assert!(
        again.starts_with(&format!("held {held};")),
        "{again} vs {out}"
    );
}

/// A review's case: sockets counted against nothing but the call's
/// memory, so with `[fs] max-open = 4` one call held 400 connections open,
/// each a descriptor of the host's. A call's connections now count with
/// its open files against `max-open`; the next call holds as many again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_count_against_max_open() {
    let port = http_server_that_never_finishes().await;
    let mut config = test_config();
    config.caps.fs.max_open = Some(8);
    let (_d, core) = hostile_granted_with(port, "memory = \"256 MiB\"\n", config).await;
    let url = format!("http://127.0.0.1:{port}/");
    for _ in 0..2 {
        let out = call(&core, "hold_connections", json!({"url": url, "n": 100}))
            .await
            .unwrap()
            .text();
        assert!(
            out.starts_with("held 8;") && out.contains("ConnectionLimitReached"),
            "{out}"
        );
    }
}

/// A review's case: a request cut off by its call's end was ended as if
/// complete (wasmtime-wasi-http ends a body whose handle the store drops),
/// so hyper sent the last chunk and the server saw a whole upload. Its
/// server now sees the connection end without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_off_by_its_calls_end_never_looks_complete() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // The head, then an answer that starts at once, then the rest.
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the request's head never came");
            got.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n")
            .await
            .unwrap();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut got)).await;
        let _ = tx.send(got);
    });
    let (_d, core) = hostile_granted(port, "").await;
    let url = format!("http://127.0.0.1:{port}/");
    let out = call(&core, "cut_upload", json!({"url": url, "bytes": 1000}))
        .await
        .unwrap()
        .text();
    assert_eq!(out, "cut");
    let got = rx.await.unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("POST / HTTP/1.1"), "{text}");
    assert!(
        text.contains(&"x".repeat(1000)),
        "the body was sent: {text}"
    );
    assert!(
        !text.ends_with("\r\n0\r\n\r\n"),
        "the cut-off upload ended as if complete: {text}"
    );
}

/// Client sockets (of any process in this network namespace) connected to
/// 127.0.0.1:`port` and still established (`/proc/net/tcp`, state 01).
fn established_to(port: u16) -> usize {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!("0100007F:{port:04X}");
    tcp.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[2] == remote && f[3] == "01"
        })
        .count()
}

/// A review's case: a request whose server stops reading kept its
/// connection (its task, socket, descriptor and memory charge) open after
/// the call, for ever: hyper flushes before it closes, and the flush never
/// ends. The call's connections are now closed when its store goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_server_stops_reading_is_closed_with_its_call() {
    // Accepts and never reads; a small receive buffer fills at once.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(64).unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    let (_d, core) = hostile_granted(port, "memory = \"16 MiB\"\ntimeout = \"20s\"\n").await;
    let url = format!("http://127.0.0.1:{port}/");
    let out = call(&core, "stall_uploads", json!({"url": url, "n": 3}))
        .await
        .unwrap()
        .text();
    assert_eq!(out, "stalled 3");
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    let waited = std::time::Instant::now();
    while established_to(port) > 0 {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(10),
            "{} connections outlived the call",
            established_to(port)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The peak resident memory of process `pid` (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// Issue 7 row 1 and M3, measured on a real `toolhost serve --stdio`
/// process: a 64 MiB tool granted one host fills every body it may start
/// and holds every connection it may open. The server's peak RSS grows by
/// less than the call's memory limit (what the tool is allowed) plus slack
/// for the server's own buffers; before M3 the bodies alone took 400 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_rss_stays_within_the_calls_memory_limit_under_a_wasi_http_flood() {
    use std::io::{BufRead, Write};
    let port = http_server_that_never_finishes().await;
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        &format!("[network]\nallow = [\"127.0.0.1:{port}\"]\n\n[limits]\nmemory = \"64 MiB\"\n"),
    );
    let dir = d.path().to_path_buf();
    let url = format!("http://127.0.0.1:{port}/");
    let (base, peak, replies) = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_toolhost"))
            .args(["serve", "--stdio", "--watch", "false", "--tools"])
            .arg(&dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut rpc = |msg: serde_json::Value| -> serde_json::Value {
            writeln!(stdin, "{msg}").unwrap();
            let Some(id) = msg.get("id").cloned() else {
                return serde_json::Value::Null;
            };
            loop {
                let line = lines.next().expect("the server answers").unwrap();
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                if v["id"] == id {
                    return v;
                }
            }
        };
        rpc(json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"rss","version":"0"}}}));
        rpc(json!({"jsonrpc":"2.0","method":"notifications/initialized"}));
        let call = |id: i64, name: &str, args: serde_json::Value| {
            json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":name,"arguments":args}})
        };
        let warm = rpc(call(2, "big_output", json!({"bytes": 3})));
        assert_eq!(warm["result"]["content"][0]["text"], "012", "{warm}");
        let base = peak_rss(child.id());
        let bodies = rpc(call(3, "hoard_bodies", json!({"url": url, "n": 300})));
        let conns = rpc(call(4, "hold_connections", json!({"url": url, "n": 300})));
        let peak = peak_rss(child.id());
        let _ = child.kill();
        let _ = child.wait();
        (base, peak, [bodies, conns])
    })
    .await
    .unwrap();
    let text = |v: &serde_json::Value| {
        v["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let grown = peak.saturating_sub(base);
    eprintln!(
        "peak RSS {} MiB after a plain call, {} MiB after the flood (+{} MiB); {}; {}",
        base >> 20,
        peak >> 20,
        grown >> 20,
        text(&replies[0]),
        text(&replies[1])
    );
    assert!(
        text(&replies[0]).contains("in 300 bodies"),
        "{}",
        replies[0]
    );
    assert!(
        text(&replies[1]).contains("ConnectionLimitReached"),
        "{}",
        replies[1]
    );
    assert!(
        grown < (64 + 32) << 20,
        "the host grew by {} MiB for a 64 MiB call",
        grown >> 20
    );
}

/// SECURITY.md M3: a granted server cannot make the host hold a huge
/// response head for a tool: over 16 KiB of headers is refused (hyper's
/// buffer is 64 KiB a connection, not its ~400 KiB default), and a head
/// within it reaches the tool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_head_over_the_limit_is_refused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                // `/big`: 40 headers of 1 KiB; otherwise one.
                let count = if buf[..n].starts_with(b"GET /big") {
                    40
                } else {
                    1
                };
                let mut head = String::from("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n");
                for i in 0..count {
                    head.push_str(&format!("x-pad-{i}: {}\r\n", "p".repeat(1024)));
                }
                head.push_str("connection: close\r\n\r\nok");
                let _ = s.write_all(head.as_bytes()).await;
            });
        }
    });
    let (_d, core) = hostile_granted(port, "").await;
    let big = call(
        &core,
        "http_get",
        json!({"url": format!("http://127.0.0.1:{port}/big")}),
    )
    .await;
    let msg = tool_error_text(big);
    assert!(msg.to_lowercase().contains("header"), "{msg}");
    let ok = call(
        &core,
        "http_get",
        json!({"url": format!("http://127.0.0.1:{port}/small")}),
    )
    .await
    .unwrap();
    assert_eq!(ok.text(), "200");
}

/// SECURITY.md M3: `set-authority` and `set-method` kept any guest string
/// in host memory (one 60 MiB string set on each of 1,024 request handles
/// was 60 GiB nobody charged): long ones are refused, ordinary ones pass.
#[tokio::test]
async fn a_request_cannot_park_long_strings_in_host_memory() {
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        "[network]\nallow = [\"api.example.com\"]\n",
    );
    let core = core(d.path()).await;
    let long = call(&core, "long_request_parts", json!({"len": 100_000}))
        .await
        .unwrap()
        .text();
    assert_eq!(long, "authority refused, method refused, path refused");
    let short = call(&core, "long_request_parts", json!({"len": 5}))
        .await
        .unwrap()
        .text();
    assert_eq!(short, "authority accepted, method accepted, path accepted");
}

/// SECURITY.md M3: an outgoing body buffers at most one 16 KiB chunk (and
/// the one being written) before its request is sent, where wasmtime-wasi-
/// http's default took 1 MiB a write: 200 bodies never sent held hundreds
/// of MiB of host memory for a 64 MiB tool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_never_sent_hold_little_host_memory() {
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        "[network]\nallow = [\"127.0.0.1:9\"]\n\n[limits]\nmemory = \"64 MiB\"\n",
    );
    let core = core(d.path()).await;
    let out = call(
        &core,
        "hoard_bodies",
        json!({"url": "http://127.0.0.1:9/", "n": 200}),
    )
    .await
    .unwrap()
    .text();
    let bytes: u64 = out
        .strip_prefix("accepted ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    eprintln!("{out}");
    assert!(out.contains("in 200 bodies"), "{out}");
    assert!(
        bytes <= 200 * 32 * 1024,
        "{bytes} bytes buffered by the host: {out}"
    );
    assert!(bytes >= 200 * 1024, "the bodies took nothing at all: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_reaches_only_granted_hosts() {
    let (granted, granted_hits) = http_server().await;
    let (other, other_hits) = http_server().await;
    let (_d, core) = hostile_granted(granted, "").await;

    let ok = call(
        &core,
        "http_get",
        json!({"url": format!("http://127.0.0.1:{granted}/")}),
    )
    .await
    .unwrap();
    assert_eq!(ok.text(), "200");
    assert_eq!(granted_hits.load(Ordering::SeqCst), 1);

    for url in [
        format!("http://127.0.0.1:{other}/"),
        format!("http://localhost:{granted}/"),
        "http://example.com/".to_string(),
    ] {
        let msg = tool_error_text(call(&core, "http_get", json!({"url": url})).await);
        assert!(msg.to_lowercase().contains("denied"), "{url}: {msg}");
    }
    assert_eq!(
        other_hits.load(Ordering::SeqCst),
        0,
        "a denied request must not even connect"
    );
}

/// The guest gets only an error code for a refused request; why (the
/// manifest, or the operator's allow-list) was in the host's debug log
/// alone (found by the user review). The caller is told, once per call,
/// in a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_tells_the_caller_which_list_refused_it() {
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        "[network]\nallow = [\"127.0.0.1:9\"]\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let mut config = toolhost::HostConfig::parse(
        &dir.path().join("host.toml"),
        "[network]\nallow = [\"example.org\"]\n",
    )
    .unwrap();
    config.engine = test_config().engine;
    let core = core_with(config, d.path()).await;
    for (url, why) in [
        (
            "http://127.0.0.1:9/",
            "a request to 127.0.0.1:9 was refused: the manifest grants it, the host config's `[network] allow` does not",
        ),
        (
            "http://127.0.0.1:10/",
            "a request to 127.0.0.1:10 was refused: the tool's manifest does not grant it",
        ),
    ] {
        let (r, warnings) = call_with_events(&core, "http_get", json!({"url": url})).await;
        assert!(tool_error_text(r).to_lowercase().contains("denied"));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with(why), "{warnings:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_name_that_resolves_to_this_machine_reaches_nothing() {
    // The grant names `localhost`, and `localhost` is 127.0.0.1: an allowed
    // name is not an allowed address. The same holds for any name an
    // attacker points at 127.0.0.1, 169.254.169.254 or 10.x (DNS is asked
    // once, the answer checked, and that address connected to).
    let (port, hits) = http_server().await;
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        &format!("[network]\nallow = [\"localhost:{port}\", \"*.0.1:{port}\"]\n"),
    );
    let core = core(d.path()).await;
    let msg = tool_error_text(
        call(
            &core,
            "http_get",
            json!({"url": format!("http://localhost:{port}/")}),
        )
        .await,
    );
    assert!(msg.to_lowercase().contains("prohibited"), "{msg}");
    // A wildcard never matches an IP literal.
    let msg = tool_error_text(
        call(
            &core,
            "http_get",
            json!({"url": format!("http://127.0.0.1:{port}/")}),
        )
        .await,
    );
    assert!(msg.to_lowercase().contains("denied"), "{msg}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing may connect");
    // The host carries on.
    let slept = call(&core, "sleep", json!({"ms": 0})).await.unwrap();
    assert_eq!(slept.text(), "slept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_granted_all_of_loopback_still_cannot_reach_toolhosts_own_endpoints() {
    // The classic pivot: a tool granted `127.0.0.1:*` calls the host's own
    // MCP endpoint (and there, another scope's tools) or its metrics.
    let (port, hits) = http_server().await;
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        // Every literal the kernel routes to loopback, too: the
        // unspecified addresses and loopback written as IPv4-mapped IPv6.
        "[network]\nallow = [\"127.0.0.1:*\", \"[::1]:*\", \"0.0.0.0:*\", \"[::]:*\", \
         \"[::ffff:127.0.0.1]:*\", \"[::ffff:0.0.0.0]:*\"]\n",
    );
    let core = core(d.path()).await;
    let mcp = toolhost::mcp::HttpServer::bind(
        toolhost::mcp::McpServer::new(core.clone(), toolhost::Scope::default()),
        toolhost::mcp::HttpOptions::new("127.0.0.1:0".parse().unwrap()),
    )
    .await
    .unwrap();
    let mcp_port = mcp.local_addr().port();
    let metrics =
        toolhost::MetricsServer::bind("127.0.0.1:0".parse().unwrap(), toolhost::Metrics::new())
            .await
            .unwrap();
    let metrics_port = metrics.local_addr().unwrap().port();
    tokio::spawn(mcp.serve(std::future::pending()));
    tokio::spawn(metrics.serve(std::future::pending()));

    for own in [mcp_port, metrics_port] {
        for url in [
            format!("http://127.0.0.1:{own}/mcp"),
            format!("http://[::1]:{own}/"),
            format!("http://0.0.0.0:{own}/mcp"),
            format!("http://[::]:{own}/mcp"),
            format!("http://[::ffff:127.0.0.1]:{own}/mcp"),
            format!("http://[::ffff:0.0.0.0]:{own}/mcp"),
        ] {
            let msg = tool_error_text(call(&core, "http_get", json!({"url": url})).await);
            assert!(msg.to_lowercase().contains("prohibited"), "{url}: {msg}");
        }
    }
    // The grant itself still works for what it names.
    let ok = call(
        &core,
        "http_get",
        json!({"url": format!("http://127.0.0.1:{port}/")}),
    )
    .await
    .unwrap();
    assert_eq!(ok.text(), "200");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_tool_with_no_network_grant_reaches_nothing() {
    let (port, hits) = http_server().await;
    let d = ToolDir::new();
    d.add("hostile", "hostile", "");
    let core = core(d.path()).await;
    // Without a grant wasi:http is not even linked: the first outgoing
    // request traps, and the call is reported as denied, not as a tool bug.
    let r = call(
        &core,
        "http_get",
        json!({"url": format!("http://127.0.0.1:{port}/")}),
    )
    .await;
    match r {
        Err(e) => match e.kind() {
            CallErrorKind::Denied { reason } => assert!(reason.contains("[network]"), "{reason}"),
            other => panic!("expected a denial, got {other:?}"),
        },
        Ok(o) => panic!("expected a denial, got {o:?}"),
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn scopes_cannot_see_or_call_each_others_tools() {
    let a = ToolDir::new();
    a.add("echo", "echo", "");
    let b = ToolDir::new();
    b.add("text", "text", "");
    let core = toolhost::Core::builder()
        .config(test_config())
        .source(toolhost::Scope::new("tenant-a"), a.path())
        .source(toolhost::Scope::new("tenant-b"), b.path())
        .build()
        .await
        .unwrap();
    let names = |s: &str| {
        core.tools(&toolhost::Scope::new(s))
            .iter()
            .map(|t| t.name.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names("tenant-a"), ["echo"]);
    assert_eq!(names("tenant-b"), ["json_query", "regex_extract"]);
    assert!(names("tenant-c").is_empty());

    let from_b = core
        .call(toolhost::CallRequest::new(
            toolhost::Scope::new("tenant-b"),
            "echo",
            args(json!({"text": "x"})),
        ))
        .await
        .unwrap_err();
    let nowhere = core
        .call(toolhost::CallRequest::new(
            toolhost::Scope::new("tenant-b"),
            "nope",
            args(json!({})),
        ))
        .await
        .unwrap_err();
    // Indistinguishable from a tool that does not exist.
    assert_eq!(
        from_b.to_string().replace("echo", "X"),
        nowhere.to_string().replace("nope", "X")
    );
    assert!(matches!(from_b.kind(), CallErrorKind::UnknownTool));
    core.call(toolhost::CallRequest::new(
        toolhost::Scope::new("tenant-a"),
        "echo",
        args(json!({"text": "x"})),
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn client_requests_need_a_grant_and_a_client() {
    let d = ToolDir::new();
    d.add("ungranted", "conformance", "");
    let ungranted = core(d.path()).await;
    let msg = tool_error_text(call(&ungranted, "test_sampling", json!({"prompt": "hi"})).await);
    assert!(
        msg.contains("not granted") && msg.contains("[client] requests"),
        "{msg}"
    );

    let d = ToolDir::new();
    d.add(
        "granted",
        "conformance",
        "[client]\nrequests = [\"sampling\"]\n",
    );
    let core = core(d.path()).await;
    // Granted, but this call has no client to ask (a library call).
    let msg = tool_error_text(call(&core, "test_sampling", json!({"prompt": "hi"})).await);
    assert!(msg.contains("not available"), "{msg}");
    // Elicitation was not granted.
    let msg = tool_error_text(call(&core, "test_elicitation", json!({"message": "hi"})).await);
    assert!(msg.contains("not granted"), "{msg}");
}

/// SECURITY.md L4: a tool's annotations are what its grants make them, not
/// what it says of itself: `test_simple_text` declares itself read-only,
/// and is listed so only while it may neither write a directory nor reach
/// a host.
#[tokio::test]
async fn a_tool_that_may_write_or_reach_a_host_is_never_listed_read_only_or_closed_world() {
    let annotations = |core: &toolhost::Core| {
        core.tools(&toolhost::Scope::default())
            .into_iter()
            .find(|t| &*t.name == "test_simple_text")
            .expect("listed")
            .annotations
    };
    let d = ToolDir::new();
    d.add("plain", "conformance", "");
    let a = annotations(&core(d.path()).await);
    assert_eq!(a.read_only, Some(true), "as it says, with no grants");
    assert_ne!(a.open_world, Some(true));

    let out = tempfile::tempdir().unwrap();
    let d = ToolDir::new();
    d.add("writer", "conformance", &fs_grant("/out", out.path(), "rw"));
    let a = annotations(&core(d.path()).await);
    assert_eq!(a.read_only, Some(false), "an rw grant can write");

    let d = ToolDir::new();
    d.add(
        "reader",
        "conformance",
        &format!(
            "{}[network]\nallow = [\"api.example.com\"]\n",
            fs_grant("/in", out.path(), "ro")
        ),
    );
    let a = annotations(&core(d.path()).await);
    assert_eq!(a.read_only, Some(true), "a read-only grant stays read-only");
    assert_eq!(a.open_world, Some(true), "a network grant is open-world");
}

/// SECURITY.md L4: a reload tells only the scopes whose tools changed: a
/// tenant never learns (by a `list_changed` it did not cause) that another
/// tenant's tools changed.
#[tokio::test]
async fn a_change_to_one_scopes_tools_is_announced_to_that_scope_only() {
    let a = ToolDir::new();
    a.add("echo", "echo", "");
    let b = ToolDir::new();
    b.add("text", "text", "");
    let (sa, sb) = (
        toolhost::Scope::new("tenant-a"),
        toolhost::Scope::new("tenant-b"),
    );
    let core = toolhost::Core::builder()
        .config(test_config())
        .source(sa.clone(), a.path())
        .source(sb.clone(), b.path())
        .build()
        .await
        .unwrap();
    let (mut wa, mut wb) = (core.watch_tools(&sa), core.watch_tools(&sb));
    let before_b = core.tools(&sb).len();
    a.add("hostile", "hostile", "");
    assert!(core.reload().await.is_empty());
    tokio::time::timeout(std::time::Duration::from_secs(10), wa.changed())
        .await
        .expect("tenant-a's tools changed: it is told")
        .expect("the core lives");
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(500), wb.changed())
            .await
            .is_err(),
        "tenant-b's tools did not change: it must not be told"
    );
    assert_eq!(core.tools(&sb).len(), before_b);
    // And the other way round.
    b.add("echo", "echo", "");
    assert!(core.reload().await.is_empty());
    tokio::time::timeout(std::time::Duration::from_secs(10), wb.changed())
        .await
        .expect("tenant-b is told now")
        .expect("the core lives");
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(500), wa.changed())
            .await
            .is_err(),
        "tenant-a must not be told of tenant-b's change"
    );
    // However many reloads change tenant-a while tenant-b's watcher is not
    // looking, tenant-b is not told: one broadcast of the changed scopes,
    // 64 deep, told a watcher that fell behind that its own had changed
    // (found by review).
    for i in 0..70 {
        if i % 2 == 0 {
            for ext in ["toml", "wasm"] {
                std::fs::remove_file(a.path().join(format!("hostile.{ext}"))).unwrap();
            }
        } else {
            a.add("hostile", "hostile", "");
        }
        assert!(core.reload().await.is_empty());
    }
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(500), wb.changed())
            .await
            .is_err(),
        "tenant-b must not be told of tenant-a's changes, however many"
    );
    tokio::time::timeout(std::time::Duration::from_secs(10), wa.changed())
        .await
        .expect("tenant-a's changes are told")
        .expect("the core lives");
}

/// Issue 7 row 2, end to end. The attack: a tool with `rw` on a directory
/// holding another grant's directory renames it and plants a symlink, and
/// the next call of the other grant follows it. Both halves are closed: a
/// grant overlapping another's `rw` grant is refused at load, and a grant's
/// directory is opened once, so swapping its path for a symlink after load
/// (here done from outside, as the mover no longer can) changes nothing.
#[tokio::test]
async fn a_grant_swapped_for_a_symlink_after_load_still_reaches_only_its_own_directory() {
    let t = tree();
    let root = t.granted.parent().unwrap().to_path_buf();
    let d = ToolDir::new();
    d.add("mover", "hostile", &fs_grant("/all", &root, "rw"));
    d.add("victim", "hostile", &fs_grant("/data", &t.granted, "ro"));
    let both = toolhost::Core::builder()
        .config(test_config())
        .source(toolhost::Scope::default(), d.path())
        .build()
        .await
        .unwrap();
    let errors = both.load_errors();
    assert!(
        errors.iter().any(|e| e.to_string().contains("overlap")),
        "an rw grant over another grant's directory must be refused: {errors:?}"
    );

    let d = ToolDir::new();
    d.add("victim", "hostile", &fs_grant("/data", &t.granted, "ro"));
    let core = core(d.path()).await;
    let moved = root.join("granted.moved");
    std::fs::rename(&t.granted, &moved).unwrap();
    std::os::unix::fs::symlink(&root, &t.granted).unwrap();
    // The grant is the directory opened at load (now `granted.moved`), not
    // whatever the path names today (the root, with the secret).
    let secret = call(&core, "read_path", json!({"path": "/data/secret.txt"})).await;
    assert!(tool_error_text(secret).contains("cannot read"));
    let own = call(&core, "read_path", json!({"path": "/data/hello.txt"}))
        .await
        .unwrap();
    assert!(own.text().contains("hello from inside"));
}

/// A review's case: a call that found its tool before a reload and waited
/// for room across it ran afterwards with what the reload took away: a
/// write queued behind a busy tool ran after its `rw` grant became `ro`.
/// Now it does not run (`Reloaded`), and the next call runs the tool as it
/// is now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_queued_across_a_reload_does_not_run_with_revoked_grants() {
    let work = tempfile::tempdir().unwrap();
    let d = ToolDir::new();
    let manifest = |mode: &str| {
        format!(
            "{}\n[limits]\nmax-concurrency = 1\n",
            fs_grant("/work", work.path(), mode)
        )
    };
    d.add("hostile", "hostile", &manifest("rw"));
    let core = core(d.path()).await;
    // Long enough that the queued call is seen waiting however slowly a
    // loaded machine starts it (at 1.5 s, once, under `make test`, it was
    // not: both had ended before the test looked).
    let busy = tokio::spawn({
        let core = core.clone();
        async move { call(&core, "sleep", json!({"ms": 4000})).await }
    });
    until_in_flight(&core, 1.0).await;
    let queued = tokio::spawn({
        let core = core.clone();
        async move {
            call(
                &core,
                "write_path",
                json!({"path": "/work/queued.txt", "content": "late"}),
            )
            .await
        }
    });
    // Queued behind the sleep (the tool runs one call at a time).
    until_in_flight(&core, 2.0).await;
    d.add("hostile", "hostile", &manifest("ro"));
    assert!(core.reload().await.is_empty());
    busy.await.unwrap().unwrap();
    let e = queued.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), &CallErrorKind::Reloaded, "{e}");
    assert!(!work.path().join("queued.txt").exists());
    // The tool as it is now: read-only.
    let now = call(
        &core,
        "write_path",
        json!({"path": "/work/after.txt", "content": "x"}),
    )
    .await;
    assert!(!work.path().join("after.txt").exists(), "{now:?}");
}

/// SECURITY.md L2, the symlink half. A grant whose path passes through a
/// symlink inside another tool's `rw` grant used to load: the path was
/// resolved (to a directory outside the `rw` grant, so no overlap), and the
/// writer could point the symlink at the secret before the next reload.
#[tokio::test]
async fn a_grant_whose_path_passes_through_a_symlink_another_tool_may_rewrite_is_refused() {
    let t = tree();
    let root = t.granted.parent().unwrap().to_path_buf();
    let shared = tempfile::tempdir().unwrap();
    let shared = shared.path().canonicalize().unwrap();
    // The secret the writer would aim the reader at, in a `granted` of its
    // own.
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::create_dir(elsewhere.path().join("granted")).unwrap();
    std::fs::write(elsewhere.path().join("granted/secret.txt"), "TOP SECRET\n").unwrap();
    std::os::unix::fs::symlink(&root, shared.join("link")).unwrap();
    let (w, r) = (ToolDir::new(), ToolDir::new());
    w.add("writer", "hostile", &fs_grant("/shared", &shared, "rw"));
    r.add(
        "reader",
        "hostile",
        &fs_grant("/data", &shared.join("link/granted"), "ro"),
    );
    let core = toolhost::Core::builder()
        .config(test_config())
        .source(toolhost::Scope::new("writer"), w.path())
        .source(toolhost::Scope::new("reader"), r.path())
        .build()
        .await
        .unwrap();
    let errors: Vec<String> = core.load_errors().iter().map(|e| e.to_string()).collect();
    let refused = errors.len() == 1 && errors[0].contains("passes through a symlink");
    // The link is pointed elsewhere (done from outside here: what matters
    // is what a reload then follows) and the host reloads: nothing reads
    // the secret through it.
    std::fs::remove_file(shared.join("link")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), shared.join("link")).unwrap();
    // An edit of the reader's manifest, so the reload prepares it again.
    let m = r.path().join("reader.toml");
    let text = std::fs::read_to_string(&m).unwrap();
    std::fs::write(&m, format!("{text}\n# edited\n")).unwrap();
    core.reload().await;
    let read = core
        .call(toolhost::CallRequest::new(
            toolhost::Scope::new("reader"),
            "read_path",
            json!({"path": "/data/secret.txt"}).as_object().cloned(),
        ))
        .await;
    assert!(
        !matches!(&read, Ok(out) if out.text().contains("TOP SECRET")),
        "{read:?}"
    );
    assert!(refused, "the reader is refused at load: {errors:?}");
}

/// L2's residual for the operator's caps: `[fs] roots` are resolved at
/// each config read, so a root whose path passes through a symlink inside
/// a tool's `rw` grant could be pointed at `/` by that tool before a
/// reload, widening the root for every manifest. Such a root is now a
/// config error naming the symlink; a root beside it still reads.
#[tokio::test]
async fn a_root_whose_path_passes_through_a_symlink_a_tool_may_rewrite_is_refused() {
    let t = tree();
    let root = t.granted.parent().unwrap().to_path_buf();
    let shared = tempfile::tempdir().unwrap();
    let shared = shared.path().canonicalize().unwrap();
    std::os::unix::fs::symlink(&root, shared.join("link")).unwrap();
    let w = ToolDir::new();
    w.add("writer", "hostile", &fs_grant("/shared", &shared, "rw"));
    let core = toolhost::Core::builder()
        .config(test_config())
        .source(toolhost::Scope::new("writer"), w.path())
        .build()
        .await
        .unwrap();
    assert!(core.load_errors().is_empty(), "{:?}", core.load_errors());
    let config = shared.join("toolhost.toml");
    let parse = |root: &std::path::Path| {
        toolhost::HostConfig::parse(
            &config,
            &format!("[fs]\nroots = [{:?}]\n", root.display().to_string()),
        )
    };
    let through = shared.join("link/granted");
    let err = parse(&through)
        .expect_err("a root through the writer's symlink")
        .to_string();
    assert!(
        err.contains("passes through a symlink") && err.contains(&shared.display().to_string()),
        "{err}"
    );
    assert!(
        parse(&t.granted).is_ok(),
        "the same directory by its own path is a root"
    );
}

/// The review's case: a manifest granting `/proc` (a "system monitor")
/// read the host's environment through `/proc/self/environ`, its bearer
/// token and state key among it, and a `rw` grant would have reached
/// `/proc/self/mem`. A grant on a kernel file system is refused at load,
/// read-only or not, by its path or through a symlink to it; other tools
/// load and serve.
#[tokio::test]
async fn a_grant_on_a_kernel_file_system_is_refused_at_load() {
    let t = tree();
    let links = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/proc/self", links.path().join("me")).unwrap();
    let d = ToolDir::new();
    d.add(
        "procfs",
        "hostile",
        &fs_grant("/p", std::path::Path::new("/proc"), "ro"),
    );
    let own = std::path::PathBuf::from(format!("/proc/{}", std::process::id()));
    d.add("procrw", "hostile", &fs_grant("/p", &own, "rw"));
    d.add(
        "sysfs",
        "hostile",
        &fs_grant("/s", std::path::Path::new("/sys"), "ro"),
    );
    d.add(
        "linked",
        "hostile",
        &fs_grant("/p", &links.path().join("me/task"), "ro"),
    );
    d.add("files", "files", &fs_grant("/data", &t.granted, "ro"));
    // A directory with one mounted inside (`/dev/pts`, where mounted).
    let pts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some("/dev/pts") && l.contains(" - devpts "));
    if pts {
        d.add(
            "devdir",
            "hostile",
            &fs_grant("/d", std::path::Path::new("/dev"), "ro"),
        );
    }
    let core = toolhost::Core::builder()
        .config(test_config())
        .source(toolhost::Scope::default(), d.path())
        .build()
        .await
        .unwrap();
    let errors: Vec<String> = core.load_errors().iter().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 4 + usize::from(pts), "{errors:#?}");
    assert!(
        !pts || errors.iter().any(|e| e.contains("devdir")
            && e.contains("devpts file system mounted inside it, at /dev/pts")),
        "{errors:#?}"
    );
    for (name, fs) in [
        ("procfs", "proc"),
        ("procrw", "proc"),
        ("sysfs", "sysfs"),
        ("linked", "proc"),
    ] {
        assert!(
            errors
                .iter()
                .any(|e| e.contains(name) && e.contains(&format!("kernel's {fs} file system"))),
            "{name}: {errors:#?}"
        );
    }
    // Nothing of the hostile tool is served, so nothing reads the host's
    // environment; the other tool serves.
    let r = call(&core, "read_path", json!({"path": "/p/self/environ"})).await;
    assert!(r.is_err(), "{r:?}");
    let ok = call(&core, "read_file", json!({"path": "/data/hello.txt"}))
        .await
        .unwrap();
    assert!(ok.text().contains("hello from inside"), "{ok:?}");
}

/// The review's case: the writer's tool planted the symlink while it was
/// loaded, then it was unloaded (its tenant removed); the reader's grant
/// through it is still refused.
#[tokio::test]
async fn a_symlink_planted_by_a_tool_no_longer_loaded_is_not_followed_either() {
    let t = tree();
    let root = t.granted.parent().unwrap().to_path_buf();
    let shared = tempfile::tempdir().unwrap();
    let shared = shared.path().canonicalize().unwrap();
    let (w, r) = (ToolDir::new(), ToolDir::new());
    w.add("writer", "hostile", &fs_grant("/shared", &shared, "rw"));
    r.add(
        "reader",
        "hostile",
        &fs_grant("/data", &shared.join("link/granted"), "ro"),
    );
    let core = toolhost::Core::builder()
        .config(test_config())
        .source(toolhost::Scope::new("writer"), w.path())
        .build()
        .await
        .unwrap();
    assert!(core.load_errors().is_empty(), "{:?}", core.load_errors());
    std::os::unix::fs::symlink(&root, shared.join("link")).unwrap();
    let r = core
        .reconfigure(
            test_config(),
            vec![toolhost::Source::new(
                toolhost::Scope::new("reader"),
                r.path(),
            )],
        )
        .await;
    let errors: Vec<String> = r.load_errors.iter().map(|e| e.to_string()).collect();
    assert!(
        errors.len() == 1 && errors[0].contains("was granted read-write"),
        "{errors:?}"
    );
}

/// Two tenants serving the same manifest each get a component of their own
/// (its concurrency, warm sandboxes, share of tasks), and keep it across a
/// reload: the reload used to reuse one component for both, so tenant B
/// holding the tool's only slot made tenant A's calls wait for B's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_serving_one_tool_never_share_its_slots_even_after_a_reload() {
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        "[limits]\nmax-concurrency = 1\ntimeout = \"60s\"\n",
    );
    let (sa, sb) = (
        toolhost::Scope::new("tenant-a"),
        toolhost::Scope::new("tenant-b"),
    );
    let core = toolhost::Core::builder()
        .config(test_config())
        .source(sa.clone(), d.path())
        .source(sb.clone(), d.path())
        .build()
        .await
        .unwrap();
    assert!(core.reload().await.is_empty());
    // B takes the tool's one slot and keeps it.
    let stop = toolhost::CancellationToken::new();
    let b = {
        let core = core.clone();
        let req = toolhost::CallRequest::new(sb.clone(), "sleep", args(json!({"ms": 50_000})))
            .cancel(stop.clone());
        tokio::spawn(async move { core.call(req).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let a = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        core.call(toolhost::CallRequest::new(
            sa.clone(),
            "sleep",
            args(json!({"ms": 1})),
        )),
    )
    .await;
    stop.cancel();
    let _ = b.await;
    assert_eq!(
        a.expect("tenant A waited for tenant B's call")
            .unwrap()
            .text(),
        "slept"
    );
}

/// Warnings the call sent its caller, and its result.
async fn call_with_events(
    core: &toolhost::Core,
    tool: &str,
    a: serde_json::Value,
) -> (Result<toolhost::ToolOutput, CallError>, Vec<String>) {
    let (tx, mut rx) = toolhost::EventSink::channel(1024);
    let r = core
        .call(toolhost::CallRequest::new(toolhost::Scope::default(), tool, args(a)).events(tx))
        .await;
    let mut warnings = Vec::new();
    while let Some(ev) = rx.recv().await {
        if let toolhost::CallEvent::Log {
            level: toolhost::LogLevel::Warning,
            message,
        } = ev
        {
            warnings.push(message);
        }
    }
    (r, warnings)
}

/// A listing holds a batch of its directory in host memory (toolhost's
/// own listing, read as the guest takes it), charged to the call's memory
/// limit while its stream lives: what a listing holds no longer grows with
/// the directory (wasmtime-wasi held it whole: 20,000 entries were 2 MiB a
/// listing), and listings held at once still meet the limit.
#[tokio::test]
async fn directory_listings_held_in_host_memory_count_against_the_calls_memory_limit() {
    let t = tree();
    let big = t.granted.join("big");
    std::fs::create_dir(&big).unwrap();
    for i in 0..20_000 {
        let name = format!("entry-with-a-long-enough-name-{i:08}.txt");
        std::fs::File::create(big.join(name)).unwrap();
    }
    let d = ToolDir::new();
    let grant = fs_grant("/data", &t.granted, "ro");
    d.add(
        "roomy",
        "hostile",
        &format!("{grant}[limits]\nmemory = \"16 MiB\"\n"),
    );
    let tight = format!("{grant}[limits]\nmemory = \"4 MiB\"\n");
    let tight_dir = ToolDir::new();
    tight_dir.add("hostile", "hostile", &tight);
    let held = |text: &str| -> usize {
        text.strip_prefix("held ")
            .and_then(|t| t.split(';').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected answer {text}"))
    };
    // 64 listings of the big directory fit 16 MiB (they were ~130 MiB).
    let core = core_with(test_config(), d.path()).await;
    let (r, _) = call_with_events(
        &core,
        "hold_listings",
        json!({"path": "/data/big", "n": 64}),
    )
    .await;
    assert_eq!(held(&r.unwrap().text()), 64);
    // Under 4 MiB (linear memory included), 250 listings do not.
    let core = core_with(test_config(), tight_dir.path()).await;
    let (r, warnings) = call_with_events(
        &core,
        "hold_listings",
        json!({"path": "/data/big", "n": 250}),
    )
    .await;
    let text = r.unwrap().text();
    assert!((1..100).contains(&held(&text)), "{text}");
    assert!(text.contains("after dropping them: opens"), "{text}");
    assert!(
        warnings.iter().any(|w| w.contains("directory listing")),
        "the caller is told which limit was hit: {warnings:?}"
    );
}

/// A listing is read a batch at a time from where the last batch ended
/// (the directory's cookie), on the guest's thread as it takes entries:
/// every entry comes once, across many batches, with its type.
#[tokio::test]
async fn a_listing_read_in_batches_has_every_entry_once() {
    let t = tree();
    let many = t.granted.join("many");
    std::fs::create_dir(&many).unwrap();
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..1000 {
        let name = format!("f-{i:04}");
        std::fs::write(many.join(&name), "x").unwrap();
        expected.insert(name, "file");
    }
    for i in 0..10 {
        let name = format!("d-{i}");
        std::fs::create_dir(many.join(&name)).unwrap();
        expected.insert(name, "dir");
    }
    for i in 0..5 {
        let name = format!("l-{i}");
        std::os::unix::fs::symlink("f-0000", many.join(&name)).unwrap();
        expected.insert(name, "symlink");
    }
    let d = ToolDir::new();
    d.add("files", "files", &fs_grant("/data", &t.granted, "ro"));
    let core = core(d.path()).await;
    let out = call(
        &core,
        "list_dir",
        json!({"path": "/data/many", "max_entries": 5000}),
    )
    .await
    .unwrap();
    let listed = out.structured.expect("a structured result");
    let got: std::collections::BTreeMap<String, &str> = listed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["kind"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed["entries"].as_array().unwrap().len(), 1015);
    assert_eq!(got, expected);
    // The granted directory itself, whose descriptor is opened for its
    // path only (the fix review's case: a listing of it failed, every
    // time).
    let out = call(&core, "list_dir", json!({"path": "/data"}))
        .await
        .unwrap();
    let names: Vec<&str> = out.structured.as_ref().unwrap()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hello.txt", "many"], "{out:?}");
}

/// The fix review's case: a first bound on a call's file operations held
/// each place until the guest looked at its stream again, so a program
/// writing to nine files it kept open (Rust's std: check-write, write,
/// blocking-flush) waited until its deadline, and so did a blocking read
/// after eight reads started and never looked at. A place is given back
/// as its operation ends: both finish.
#[tokio::test]
async fn more_file_operations_than_places_all_finish() {
    let t = tree();
    std::fs::write(t.granted.join("data.bin"), vec![7u8; 300 << 10]).unwrap();
    let out = tempfile::tempdir().unwrap();
    let out = out.path();
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        &format!(
            "{}{}[limits]\ntimeout = \"20s\"\n",
            fs_grant("/in", &t.granted, "ro"),
            fs_grant("/out", out, "rw")
        ),
    );
    let core = core(d.path()).await;
    let r = call(&core, "write_many", json!({"path": "/out", "n": 40})).await;
    assert_eq!(r.unwrap().text(), "wrote 40");
    assert_eq!(std::fs::read_dir(out).unwrap().count(), 40);
    let r = call(&core, "read_many", json!({"path": "/in/data.bin", "n": 20})).await;
    assert_eq!(r.unwrap().text(), format!("read {}", 300 << 10));
}

/// A review's case: a tools directory holds more than its top-level
/// manifests (a package store keeps the records its upgrades are reviewed
/// against in `sha256/`): no grant may reach inside it. And a manifest
/// linked in from elsewhere is protected where it is: a tool granted that
/// directory could have rewritten its own manifest and been reloaded with
/// what it wrote.
#[tokio::test]
async fn nothing_a_tools_directory_holds_or_links_to_is_granted() {
    let t = tree();
    let d = ToolDir::new();
    let store = d.path().join("sha256");
    std::fs::create_dir(&store).unwrap();
    d.add("inside", "hostile", &fs_grant("/s", &store, "rw"));
    // `notes.toml` links to a manifest in the directory it grants.
    let notes = t.granted.join("notes");
    std::fs::create_dir(&notes).unwrap();
    let real = d.add("notes-real", "hostile", &fs_grant("/n", &notes, "rw"));
    let text = std::fs::read_to_string(&real).unwrap().replace(
        "path = \"notes-real.wasm\"",
        &format!("path = \"{}\"", d.path().join("notes-real.wasm").display()),
    );
    std::fs::remove_file(&real).unwrap();
    std::fs::write(notes.join("tool.toml"), text).unwrap();
    std::os::unix::fs::symlink(notes.join("tool.toml"), d.path().join("notes.toml")).unwrap();
    // Outside the tools directory, granting what links to nothing: fine.
    let free = t.granted.join("free");
    std::fs::create_dir(&free).unwrap();
    d.add("outside", "echo", &fs_grant("/f", &free, "rw"));
    let core = toolhost::Core::builder()
        .config(test_config())
        .source(toolhost::Scope::default(), d.path())
        .build()
        .await
        .unwrap();
    let errors: Vec<String> = core.load_errors().iter().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("inside.toml") && e.contains("inside the host's tools directory")),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("notes.toml") && e.contains("tool manifest")),
        "{errors:#?}"
    );
    assert!(core.tool(&toolhost::Scope::default(), "echo").is_some());
}

/// A review's case: wasmtime-wasi's file stream took a write of any
/// length and held it whole while a blocking thread wrote it, so many
/// streams (each charged 68 KiB) each given 64 MiB held gigabytes. A write
/// past what `check-write` permits traps, as the WASI contract says.
#[tokio::test]
async fn a_file_stream_write_past_its_permit_traps() {
    let out = tempfile::tempdir().unwrap();
    let d = ToolDir::new();
    d.add("hostile", "hostile", &fs_grant("/out", out.path(), "rw"));
    let core = core(d.path()).await;
    let e = call(&core, "big_stream_write", json!({"path": "/out/f"}))
        .await
        .unwrap_err();
    assert!(
        matches!(e.kind(), CallErrorKind::Trap { .. }) && format!("{e:#}").contains("check-write"),
        "{e:#}"
    );
    // Nothing of it was written.
    assert_eq!(std::fs::metadata(out.path().join("f")).unwrap().len(), 0);
}

/// A review's case: the host reached its tools directory (or config, or
/// keys) through a symlink inside a directory a tool was granted
/// read-write. The tool pointed the symlink at a directory of manifests it
/// wrote, and the next start loaded them. Such a grant is refused; a
/// read-only one cannot move the symlink and is served.
#[tokio::test]
async fn a_grant_holding_a_symlink_on_the_path_of_the_hosts_files_is_refused() {
    let t = tree();
    let d = ToolDir::new();
    let sx = t.granted.join("sx");
    std::fs::create_dir(&sx).unwrap();
    std::os::unix::fs::symlink(d.path(), sx.join("link")).unwrap();
    d.add("planter", "hostile", &fs_grant("/sx", &sx, "rw"));
    d.add("looker", "echo", &fs_grant("/sx", &sx, "ro"));
    let core = toolhost::Core::builder()
        .config(test_config())
        .source(toolhost::Scope::default(), sx.join("link"))
        .build()
        .await
        .unwrap();
    let errors: Vec<String> = core.load_errors().iter().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains("planter.toml") && errors[0].contains("holds a symlink"),
        "{errors:#?}"
    );
    assert!(core.tool(&toolhost::Scope::default(), "echo").is_some());
}

/// A review's case: captured stdout and stderr were kept whole in host
/// memory no bound counted, up to `max-stdio` each (64 MiB allowed): a
/// 4 MiB tool writing 60 MiB grew a real server by as much, and five such
/// calls held 320 MB. Output is now counted, not kept (the last 4 KiB of
/// stderr only): the same flood grows the server by a small part of it.
#[test]
fn captured_output_is_counted_not_held() {
    use std::io::Write;
    let d = ToolDir::new();
    d.add("hostile", "hostile", "[limits]\nmemory = \"4 MiB\"\n");
    let config = d.write("host.toml", "[output]\nmax-stdio = \"64 MiB\"\n");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_toolhost"));
    cmd.args(["serve", "--stdio", "--watch", "false", "--config"])
        .arg(&config)
        .arg("--tools")
        .arg(d.path())
        .stderr(std::process::Stdio::null());
    let (mut child, mut stdin, mut lines) = stdio_session(cmd);
    let mut call = |id: u32, name: &str, args: serde_json::Value| -> serde_json::Value {
        let msg = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":name,"arguments":args}});
        writeln!(stdin, "{msg}").unwrap();
        let line = lines.next().expect("the server answers").unwrap();
        serde_json::from_str(&line).unwrap()
    };
    let warm = call(2, "big_output", json!({"bytes": 3}));
    assert_eq!(warm["result"]["content"][0]["text"], "012", "{warm}");
    let base = peak_rss(child.id());
    let flood = call(3, "flood", json!({"bytes": 60 << 20}));
    assert_eq!(flood["result"]["content"][0]["text"], "flooded", "{flood}");
    let grown = peak_rss(child.id()).saturating_sub(base);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        grown < 16 << 20,
        "60 MiB of output grew the server by {} MiB",
        grown >> 20
    );
}

/// A review's cases: the compile cache was protected from grants only if
/// it opened (one its check refused, mode 0750, was the directory the
/// next start opens, and a tool granted its parent wrote the cache's MAC
/// key there); and the host's executable was not protected at all (a
/// tool granted its directory read-write replaced it, and the next start
/// ran the tool's program). Both are refused now; the executable's
/// directory may still be granted read-only.
#[tokio::test]
async fn the_cache_that_failed_to_open_and_the_hosts_executable_are_never_granted() {
    use std::os::unix::fs::PermissionsExt;
    let outer = tempfile::tempdir().unwrap();
    let cache = outer.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o750)).unwrap();
    let exe_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let mut config = test_config();
    config.engine.cache_dir = Some(cache.clone());
    // Each alone: a tool granted only that, on a core of its own.
    let load = |name: &str, component: &str, grant: String| {
        let config = config.clone();
        let d = ToolDir::new();
        d.add(name, component, &grant);
        async move {
            let core = core_loading(config, d.path()).await;
            let errors = load_error_texts(&core);
            (core, errors)
        }
    };
    let (_, errors) = load("cache", "writer", fs_grant("/c", outer.path(), "rw")).await;
    assert!(
        errors.len() == 1 && errors[0].contains("contains the host's compile cache"),
        "{errors:#?}"
    );
    let (_, errors) = load("exe", "hostile", fs_grant("/b", &exe_dir, "rw")).await;
    assert!(
        errors.len() == 1 && errors[0].contains("the host's toolhost executable"),
        "{errors:#?}"
    );
    let (core, errors) = load("echo", "echo", fs_grant("/b", &exe_dir, "ro")).await;
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(core.tool(&toolhost::Scope::default(), "echo").is_some());
}

/// What a stdio server started by `cmd` lists as its tools, and what it
/// wrote to stderr until its input closed.
fn listed(cmd: std::process::Command) -> (String, String) {
    use std::io::Write;
    let (child, mut stdin, mut lines) = stdio_session(cmd);
    writeln!(stdin, r#"{{"jsonrpc":"2.0","id":2,"method":"tools/list"}}"#).unwrap();
    let list = lines.next().unwrap().unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (list, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A review's case: the key ring sealing session ids and request state
/// (`--state-key-file`) is the host's own secret, like its config: a tool
/// granted the directory holding it is refused, the rest served.
#[test]
fn the_state_key_file_is_never_granted() {
    let secrets = tempfile::tempdir().unwrap();
    let keys = secrets.path().join("keys");
    write_private(&keys, format!("{}\n", "ab".repeat(32)));
    let d = ToolDir::new();
    d.add("peek", "hostile", &fs_grant("/k", secrets.path(), "ro"));
    d.add("echo", "echo", "");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_toolhost"));
    cmd.args(["serve", "--stdio", "--watch", "false", "--state-key-file"])
        .arg(&keys)
        .arg("--tools")
        .arg(d.path())
        .stderr(std::process::Stdio::piped());
    let (list, stderr) = listed(cmd);
    assert!(list.contains("\"echo\""), "{list}");
    assert!(!list.contains("read_path"), "{list}");
    assert!(stderr.contains("protected path"), "{stderr}");
}

/// A review's case: the `claude` CLI keeps its credentials and settings
/// in `$CLAUDE_CONFIG_DIR` when that is set (it inherits `CLAUDE_` names):
/// a tool granted the directory around it read the CLI's token. It is
/// refused like `~/.claude`, the rest served.
#[test]
fn the_claude_clis_config_dir_is_never_granted() {
    let elsewhere = tempfile::tempdir().unwrap();
    let config = elsewhere.path().join("claude-config");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(config.join(".credentials.json"), "{}").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let d = ToolDir::new();
    d.add("peek", "hostile", &fs_grant("/c", elsewhere.path(), "ro"));
    d.add("echo", "echo", "");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_toolhost"));
    cmd.args(["serve", "--stdio", "--watch", "false", "--tools"])
        .arg(d.path())
        .env("XDG_CACHE_HOME", cache.path())
        .env("CLAUDE_CONFIG_DIR", &config)
        .stderr(std::process::Stdio::piped());
    let (list, stderr) = listed(cmd);
    assert!(list.contains("\"echo\""), "{list}");
    assert!(!list.contains("read_path"), "{list}");
    assert!(
        stderr.contains("peek.toml") && stderr.contains("claude CLI settings"),
        "{stderr}"
    );
}

/// A review's case: a read (or skip) of an idle file stream starts a host
/// read on a blocking thread and returns at once, so a call skipping on
/// 900 streams over one file kept about a hundred blocking threads busy
/// (the pool's limit is 512, for every tenant). A call's streams have at
/// most 8 operations running at once: the host's threads stay few while
/// such a call runs, and the call still gets through its reads.
#[test]
fn a_calls_file_streams_run_few_operations_at_once() {
    let t = tree();
    std::fs::write(t.granted.join("big.bin"), vec![7u8; 16 << 20]).unwrap();
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        &format!(
            "{}[limits]\nmemory = \"256 MiB\"\ntimeout = \"60s\"\nfuel = 100_000_000_000\n",
            fs_grant("/data", &t.granted, "ro")
        ),
    );
    let cache = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_toolhost"))
        .args(["call", "fan_out_reads"])
        .arg(r#"{"path": "/data/big.bin", "streams": 600, "rounds": 40}"#)
        .arg("--tools")
        .arg(d.path())
        .env("XDG_CACHE_HOME", cache.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let tasks = format!("/proc/{}/task", child.id());
    let mut most = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
        if let Ok(dir) = std::fs::read_dir(&tasks) {
            most = most.max(dir.count());
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("skipped "),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The runtimes' threads (a worker per core), the load's, the epoch
    // ticker and 8 blocking threads for the streams: 14-15 on 2 cores, 40
    // and more before.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    eprintln!("{most} threads at most");
    assert!(most < 20 + 2 * cores, "{most} threads at once");
}

/// A review's case: streams over one open file each hold a 64 KiB read in
/// host memory until the guest takes it. The open-files cap counts the one
/// file; 4,000 primed streams held 250 MiB of host memory under a 16 MiB
/// limit. Each stream is now charged to the call's memory while held, and
/// given back with the call.
#[tokio::test]
async fn read_streams_over_one_file_count_against_the_calls_memory_limit() {
    let t = tree();
    std::fs::write(t.granted.join("large.bin"), vec![7u8; 256 << 10]).unwrap();
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        &format!(
            "{}[limits]\nmemory = \"16 MiB\"\n",
            fs_grant("/data", &t.granted, "ro")
        ),
    );
    // The host's memory holds about eight calls' worth: charges kept past
    // their call would leave the later calls less room.
    let core = core_with(test_config().with_max_memory(128 << 20), d.path()).await;
    let prime = || async {
        let (r, warnings) = call_with_events(
            &core,
            "prime_read_streams",
            json!({"path": "/data/large.bin", "count": 4000}),
        )
        .await;
        let text = r.unwrap().text();
        let primed: usize = text
            .strip_prefix("primed ")
            .and_then(|t| t.split(';').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected answer {text}"));
        (primed, text, warnings)
    };
    let (primed, text, warnings) = prime().await;
    // 16 MiB, the guest's own memory included, holds fewer than 240
    // streams of 68 KiB.
    assert!((16..240).contains(&primed), "{text}");
    assert!(text.contains("insufficient-memory"), "{text}");
    assert!(
        warnings.iter().any(|w| w.contains("file stream")),
        "the caller is told which limit was hit: {warnings:?}"
    );
    // Given back with the call: each next one primes as many.
    for _ in 0..12 {
        let (again, text, _) = prime().await;
        assert_eq!(again, primed, "{text}");
    }
}

/// A review's case: `get-random-bytes` builds its whole answer in host
/// memory before the guest's `realloc` takes it (wasmtime-wasi allows 64
/// MiB). At most 1 MiB now; more traps.
#[tokio::test]
async fn random_bytes_come_at_most_a_mebibyte_at_a_time() {
    let d = ToolDir::new();
    d.add("hostile", "hostile", "[limits]\nmemory = \"32 MiB\"\n");
    let core = core_with(test_config(), d.path()).await;
    let ok = call(&core, "random", json!({"len": 1 << 20}))
        .await
        .unwrap();
    assert_eq!(ok.text(), "1048576 bytes");
    let err = call(&core, "random", json!({"len": 8 << 20}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("exceeds limit"), "{err}");
}

#[tokio::test]
async fn a_call_cannot_hoard_descriptors_and_the_next_call_gets_its_own() {
    hoarding_stops_at_the_cap(false).await;
}

/// A stream over a file keeps the host file open after its descriptor is
/// dropped: the cap counts files held, however they are held (before, all
/// 1,000 streams, and their host files, were held).
#[tokio::test]
async fn streams_kept_after_their_descriptors_are_dropped_still_count_as_open_files() {
    hoarding_stops_at_the_cap(true).await;
}

/// A call opening a file again and again (keeping each descriptor, or only
/// a stream over it) stops at its cap of 16, is told once, and the next
/// call has its whole share.
async fn hoarding_stops_at_the_cap(streams: bool) {
    let t = tree();
    let d = ToolDir::new();
    d.add("hostile", "hostile", &fs_grant("/data", &t.granted, "ro"));
    let mut caps = toolhost::caps::Caps::default();
    caps.fs.max_open = Some(16);
    let core = core_with(test_config().with_caps(caps), d.path()).await;

    let (r, warnings) = call_with_events(
        &core,
        "hoard_files",
        json!({"path": "/data/hello.txt", "count": 1000, "streams": streams}),
    )
    .await;
    let text = r.unwrap().text();
    let opened: usize = text
        .strip_prefix("opened ")
        .and_then(|t| t.split(';').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected answer {text}"));
    assert!(
        (1..=16).contains(&opened) && text.contains("then:"),
        "the call stops at its own cap of 16 open files (streams: {streams}): {text}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("max-open")),
        "the caller is told which limit was hit: {warnings:?}"
    );
    assert_eq!(
        warnings.len(),
        1,
        "told once, not per refusal: {warnings:?}"
    );
    // Files die with the call: the next call has its whole share.
    for _ in 0..3 {
        let again = call(
            &core,
            "hoard_files",
            json!({"path": "/data/hello.txt", "count": 10, "streams": streams}),
        )
        .await
        .unwrap();
        assert_eq!(again.text(), "opened 10");
    }
}

#[tokio::test]
async fn opening_a_fifo_in_a_grant_is_refused_instead_of_blocking_the_host() {
    let t = tree();
    let out = tempfile::tempdir().unwrap();
    for dir in [t.granted.as_path(), out.path()] {
        let st = std::process::Command::new("mkfifo")
            .arg(dir.join("fifo"))
            .status()
            .unwrap();
        assert!(st.success());
    }
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        &format!(
            "{}{}",
            fs_grant("/data", &t.granted, "ro"),
            fs_grant("/out", out.path(), "rw")
        ),
    );
    let core = core(d.path()).await;
    // Without the check each open blocks a host thread until a writer (or
    // reader) appears, which never happens: the call would hang past its
    // deadline with the thread still stuck.
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        call(&core, "read_path", json!({"path": "/data/fifo"})),
    )
    .await
    .expect("the open must not block");
    assert!(tool_error_text(read).contains("cannot read"));
    let write = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        call(
            &core,
            "write_path",
            json!({"path": "/out/fifo", "content": "x"}),
        ),
    )
    .await
    .expect("the open must not block");
    assert!(tool_error_text(write).contains("cannot write"));
    // Setting a FIFO's times with symlinks followed opened it blocking (a
    // review's case), also through a symlink; a file's are set.
    std::os::unix::fs::symlink("fifo", out.path().join("to-fifo")).unwrap();
    std::fs::write(out.path().join("file"), "x").unwrap();
    for (path, want) in [
        ("/out/fifo", "refused: access"),
        ("/out/to-fifo", "refused: access"),
        ("/out/file", "set"),
        ("/data/hello.txt", "refused: not-permitted"),
    ] {
        let touched = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            call(&core, "touch_following", json!({"path": path})),
        )
        .await
        .expect("setting times must not block")
        .unwrap();
        assert_eq!(touched.text(), want, "{path}");
    }
    let ok = call(&core, "read_path", json!({"path": "/data/hello.txt"}))
        .await
        .unwrap();
    assert!(ok.text().contains("hello from inside"));
}

/// A manifest is its author's word: with no host config (the README's
/// first commands), a vendor's `/etc` or a secret variable was granted
/// without a word (found by the user review). Each grant no operator cap
/// bounds is named in a warning at load; with a host config whose caps
/// cover them, nothing is said.
#[test]
fn grants_no_host_config_bounds_are_named_at_load() {
    let t = tree();
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        &format!(
            "{}[env]\npass = [\"VENDOR_TEST_SECRET\"]\n",
            fs_grant("/data", &t.granted, "ro")
        ),
    );
    let run = |config: Option<&std::path::Path>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_toolhost"));
        cmd.args([
            "call",
            "getenv",
            r#"{"name":"VENDOR_TEST_SECRET"}"#,
            "--tools",
        ])
        .arg(d.path());
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let said = run(None);
    assert!(
        said.contains("granted as its manifest asks, with no host config cap")
            && said.contains(&format!("directory /data -> {}", t.granted.display()))
            && said.contains("host variable VENDOR_TEST_SECRET"),
        "{said}"
    );
    let cfg = tempfile::tempdir().unwrap();
    let host = cfg.path().join("host.toml");
    write_private(
        &host,
        format!(
            "[fs]\nroots = [\"{}\"]\n[env]\npass = [\"VENDOR_TEST_*\"]\n[network]\nallow = []\n",
            t.granted.parent().unwrap().display()
        ),
    );
    let said = run(Some(&host));
    assert!(!said.contains("granted as its manifest asks"), "{said}");

    // The manifest's name and grants are its author's: a newline in them
    // forged a line of the operator's log (found by the review of the
    // fix). The name is escaped; a guest path or variable name with a
    // control character is refused.
    let forged = ToolDir::new();
    let m = forged.add("hostile", "hostile", &fs_grant("/data", &t.granted, "ro"));
    std::fs::rename(&m, forged.path().join("x\nFORGED line.toml")).unwrap();
    forged.write(
        "other.toml",
        &std::fs::read_to_string(forged.path().join("x\nFORGED line.toml"))
            .unwrap()
            .replace("guest = \"/data\"", "guest = \"/data\\nFORGED guest\"")
            .replace("[[fs]]", "[env]\npass = [\"HOME\\nFORGED env\"]\n[[fs]]"),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_toolhost"))
        .args(["list", "--tools"])
        .arg(forged.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("granted as its manifest asks"), "{said}");
    assert!(
        said.contains("holds control characters")
            && said.contains("is not a valid environment variable name"),
        "{said}"
    );
    assert!(!said.lines().any(|l| l.starts_with("FORGED")), "{said}");
}

/// SECURITY.md L73: `metadata-hash` was wasmtime-wasi's SipHash of the
/// file's device and inode under a fixed key, which a guest inverted into
/// the host's numbers and compared across calls and tenants. It is equal
/// within a call, different in the next, and not the fixed key's hash.
#[tokio::test]
async fn a_files_identity_says_nothing_of_the_host_nor_across_calls() {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("f"), "x").unwrap();
    let d = ToolDir::new();
    d.add("hostile", "hostile", &fs_grant("/data", data.path(), "ro"));
    let core = core(d.path()).await;
    let hashes = || async {
        let out = call(&core, "identity", json!({"path": "/data/f"}))
            .await
            .unwrap();
        let text = out.text();
        let h: Vec<String> = text.split(' ').map(str::to_string).collect();
        assert_eq!(h.len(), 3, "{text}");
        assert!(!text.contains("refused"), "{text}");
        h
    };
    let first = hashes().await;
    assert_eq!(first[0], first[1], "equal within the call");
    assert_ne!(first[0], first[2], "the file is not its directory");
    let second = hashes().await;
    assert_ne!(first[0], second[0], "unrelated across calls");
    assert_ne!(first[2], second[2], "unrelated across calls");
    for (path, seen) in [
        (data.path().join("f"), &first[0]),
        (data.path().to_path_buf(), &first[2]),
    ] {
        let m = std::fs::metadata(&path).unwrap();
        let mut fixed = std::hash::DefaultHasher::new();
        (m.dev(), m.ino()).hash(&mut fixed);
        let lower = format!(":{:x}", fixed.finish());
        assert!(!seen.ends_with(&lower), "{path:?}: the fixed key's hash");
    }
}

/// SECURITY.md M2: a check before the open and the open itself were two
/// steps, and a second call of the same tool renaming a FIFO over the name
/// in between made the open block a host thread for good. Here one call
/// swaps a FIFO and a regular file as fast as it can while another opens
/// the file's name over and over: every open must return (it sees the file,
/// a FIFO refused, or nothing), both calls end, and the host serves the
/// next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renaming_a_fifo_over_a_checked_name_never_blocks_the_open() {
    let out = tempfile::tempdir().unwrap();
    let fifo = out.path().join("fifo");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(out.path().join("file"), "plain").unwrap();
    let d = ToolDir::new();
    d.add("hostile", "hostile", &fs_grant("/out", out.path(), "rw"));
    let core = core(d.path()).await;
    let swap = call(
        &core,
        "swap_names",
        json!({"a": "/out/file", "b": "/out/fifo", "ms": 1500}),
    );
    let open = call(
        &core,
        "open_often",
        json!({"path": "/out/file", "ms": 1500}),
    );
    let both = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        tokio::join!(swap, open)
    })
    .await;
    let Ok((swapped, opened)) = both else {
        // Release the stuck open (a reader and a writer meet) before failing,
        // so the test process can end.
        for name in ["file", "fifo", "file.swap"] {
            let _ = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(out.path().join(name));
        }
        panic!("an open of a FIFO renamed over a checked name blocked the call past 30 s");
    };
    let ended = |r: Result<toolhost::ToolOutput, CallError>, which: &str| match r {
        Ok(o) => o.text(),
        Err(e) => panic!(
            "the {which} call did not end by itself (an open blocked past its deadline?): {e}"
        ),
    };
    let swapped = ended(swapped, "swapping");
    let opened = ended(opened, "opening");
    assert!(swapped.starts_with("swapped "), "{swapped}");
    assert!(opened.starts_with("opened "), "{opened}");
    eprintln!("{swapped}; {opened}");
    let ok = call(&core, "read_path", json!({"path": "/out/file"})).await;
    assert!(ok.is_ok() || tool_error_text(ok).contains("cannot read"));
    let echo = call(&core, "big_output", json!({"bytes": 3}))
        .await
        .unwrap();
    assert_eq!(echo.text(), "012");
}

/// Bytes the files directly in `dir` take on disk.
fn disk_usage(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().blocks() * 512)
        .sum()
}

#[tokio::test]
async fn a_read_write_grant_cannot_write_past_its_quota_and_deleting_frees_it() {
    let out = tempfile::tempdir().unwrap();
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        &format!(
            "[[fs]]\nguest = \"/out\"\nhost = \"{}\"\nmode = \"rw\"\nquota = \"4 MiB\"\n",
            out.path().display()
        ),
    );
    // b, c and d exist (empty) before the quota is first measured: growing
    // them is what is tried below, not creating them.
    for f in ["b", "c", "d"] {
        std::fs::write(out.path().join(f), "").unwrap();
    }
    let core = core(d.path()).await;
    let (r, warnings) = call_with_events(&core, "fill", json!({"path": "/out/a", "mib": 64})).await;
    let text = r.unwrap().text();
    assert!(text.contains("then:"), "the writes stop: {text}");
    assert!(
        disk_usage(out.path()) <= 4 << 20,
        "at most the quota reaches the disk: {} bytes ({text})",
        disk_usage(out.path())
    );
    assert!(
        warnings.iter().any(|w| w.contains("quota")),
        "the caller is told: {warnings:?}"
    );
    // The quota holds across calls, and for every way of growing a file.
    let more = call(&core, "fill", json!({"path": "/out/b", "mib": 8}))
        .await
        .unwrap();
    assert!(more.text().contains("then:"), "{}", more.text());
    let big = call(
        &core,
        "write_path",
        json!({"path": "/out/c", "content": "x".repeat(5 << 20)}),
    )
    .await;
    assert!(tool_error_text(big).contains("cannot write"));
    let grown = call(
        &core,
        "grow",
        json!({"path": "/out/d", "bytes": 1u64 << 40}),
    )
    .await;
    assert!(tool_error_text(grown).contains("cannot grow"));
    // New entries are charged too: no directories, no empty files.
    for tool in ["mkdirs", "touch_many"] {
        let made = call(&core, tool, json!({"path": "/out", "count": 100_000}))
            .await
            .unwrap();
        // (What the last refused chunk left free holds a few.)
        assert!(
            made_count(&made) < 32 && made.text().contains("then:"),
            "{tool}: {}",
            made.text()
        );
    }
    assert!(disk_usage(out.path()) <= 4 << 20);
    // Deleting through the sandbox frees the quota at once: the host
    // measures again before the next refusal.
    let removed = call(&core, "remove", json!({"path": "/out/a"}))
        .await
        .unwrap();
    assert_eq!(removed.text(), "removed");
    let after = once_measured_again(&core, "fill", json!({"path": "/out/e", "mib": 2})).await;
    assert_eq!(after.text(), format!("wrote {} bytes", 2 << 20));
    // What is left (under 2 MiB) holds a bounded number of empty files,
    // each charged one block: a loop of creates cannot exhaust inodes.
    let made = call(
        &core,
        "touch_many",
        json!({"path": "/out", "count": 100_000}),
    )
    .await
    .unwrap();
    assert!(
        made_count(&made) <= 512 && made.text().contains("then:"),
        "{}",
        made.text()
    );
}

#[tokio::test]
async fn sparse_writes_are_charged_the_blocks_they_allocate_not_the_bytes_they_write() {
    // One byte every 64 KiB allocates a block per byte: charged by bytes,
    // 8,000 such writes took 32 MiB of disk under a 1 MiB quota.
    let out = tempfile::tempdir().unwrap();
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        &format!(
            "[[fs]]\nguest = \"/out\"\nhost = \"{}\"\nmode = \"rw\"\nquota = \"1 MiB\"\n",
            out.path().display()
        ),
    );
    let core = core(d.path()).await;
    for (file, stream) in [("p", false), ("s", true)] {
        let (r, warnings) = call_with_events(
            &core,
            "scatter",
            json!({"path": format!("/out/{file}"), "stride": 65536, "count": 8000, "stream": stream}),
        )
        .await;
        let text = r.unwrap().text();
        assert!(
            text.contains("then:"),
            "the writes stop (stream: {stream}): {text}"
        );
        let used = disk_usage(out.path());
        assert!(
            used <= (1 << 20) + (64 << 10),
            "at most the quota reaches the disk (stream: {stream}): {used} bytes ({text})"
        );
        assert!(warnings.iter().any(|w| w.contains("quota")), "{warnings:?}");
        eprintln!("stream: {stream}: {text}; {used} bytes on disk");
        let removed = call(&core, "remove", json!({"path": format!("/out/{file}")}))
            .await
            .unwrap();
        assert_eq!(removed.text(), "removed");
    }
    // After both attacks, the quota is whole again for honest writes.
    let ok = once_measured_again(
        &core,
        "write_path",
        json!({"path": "/out/ok", "content": "x".repeat(512 << 10)}),
    )
    .await;
    assert!(!ok.text().is_empty());
}

/// `tool` writing to `arguments.path` once the quota has measured its
/// grant again after a delete. A quick measure runs at the next refusal,
/// so the first try succeeds; but one that took over a millisecond (a
/// loaded machine) holds the next back for nine times as long, and a
/// write meanwhile is refused: try again, removing what a refused try
/// left, for half a second only. (A quota measures again on its own once
/// its last measure is a second old, `REMEASURE_AFTER`: a longer window
/// would let a delete that freed nothing pass too.)
async fn once_measured_again(
    core: &toolhost::Core,
    tool: &str,
    arguments: serde_json::Value,
) -> toolhost::ToolOutput {
    let path = arguments["path"].clone();
    let until = std::time::Instant::now() + std::time::Duration::from_millis(500);
    loop {
        let last = match call(core, tool, arguments.clone()).await {
            Ok(out) if !out.text().contains("then:") => return out,
            refused => refused,
        };
        if std::time::Instant::now() >= until {
            panic!("the write was refused for 500 ms after the delete: {last:?}")
        }
        let _ = call(core, "remove", json!({ "path": path })).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Two append streams over one file: the second's writes looked like
/// overwrites of data the first had written (free), but landed at the
/// end. Found by review: 64 MiB went under a 1 MiB quota.
#[tokio::test]
async fn appends_through_a_second_descriptor_are_charged_where_they_land() {
    let out = tempfile::tempdir().unwrap();
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        &format!(
            "[[fs]]\nguest = \"/out\"\nhost = \"{}\"\nmode = \"rw\"\nquota = \"1 MiB\"\n",
            out.path().display()
        ),
    );
    let core = core(d.path()).await;
    let text = call(&core, "append_race", json!({"path": "/out/f", "count": 64}))
        .await
        .unwrap()
        .text();
    assert!(text.contains("then:"), "the appends stop: {text}");
    let used = disk_usage(out.path());
    assert!(
        used <= (1 << 20) + (64 << 10),
        "at most the quota reaches the disk: {used} bytes ({text})"
    );
}

#[tokio::test]
async fn a_file_deleted_while_open_still_counts_against_the_quota() {
    // A measure walks the directory; a deleted file that a call still
    // writes to is not there, but its blocks are.
    let out = tempfile::tempdir().unwrap();
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        &format!(
            "[[fs]]\nguest = \"/out\"\nhost = \"{}\"\nmode = \"rw\"\nquota = \"4 MiB\"\n",
            out.path().display()
        ),
    );
    let core = core(d.path()).await;
    let r = call(
        &core,
        "fill_deleted",
        json!({"path": "/out/gone", "mib": 64}),
    )
    .await
    .unwrap();
    let text = r.text();
    let written: u64 = text
        .strip_prefix("wrote ")
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(text.contains("then:"), "the writes stop: {text}");
    assert!(
        written <= 4 << 20,
        "past the quota through a deleted file: {text}"
    );
    // Closed with the call, its blocks are free: the quota is whole again.
    // A write the call could not stop may hold the file a moment after the
    // call returns (its blocks count until it lets go), so allow that
    // moment, boundedly.
    let mut after = None;
    for _ in 0..40 {
        match call(&core, "fill", json!({"path": "/out/e", "mib": 2})).await {
            Ok(out) => {
                after = Some(out);
                break;
            }
            Err(e) if e.to_string().contains("No space left") => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let after = after.expect("the deleted file's blocks were freed within 2 s of its call");
    assert_eq!(after.text(), format!("wrote {} bytes", 2 << 20));
}

#[tokio::test]
async fn a_read_only_descriptor_never_writes_and_a_hard_link_never_crosses_grants() {
    // A hard link into another grant put a file's blocks under its quota
    // for the price of one entry (review); a descriptor opened to read only
    // writes nothing, whatever the grant allows.
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        &format!(
            "[[fs]]\nguest = \"/a\"\nhost = \"{}\"\nmode = \"rw\"\nquota = \"4 MiB\"\n[[fs]]\nguest = \"/b\"\nhost = \"{}\"\nmode = \"rw\"\nquota = \"4 MiB\"\n",
            a.path().display(),
            b.path().display()
        ),
    );
    let core = core(d.path()).await;
    let r = call(
        &core,
        "sneaky_writes",
        json!({"path": "/a/f", "link": "/b/f"}),
    )
    .await
    .unwrap();
    let text = r.text();
    assert!(
        text.contains("write: ErrorCode { code: 3, name: \"bad-descriptor\""),
        "{text}"
    );
    assert!(
        text.contains("stream: ErrorCode { code: 3, name: \"bad-descriptor\""),
        "{text}"
    );
    assert!(
        text.contains("link: ErrorCode { code: 36, name: \"cross-device\""),
        "{text}"
    );
    // A file renamed into another grant while open would go on being
    // written, charged to the first grant's quota.
    assert!(
        text.contains("rename: ErrorCode { code: 36, name: \"cross-device\""),
        "{text}"
    );
    assert_eq!(std::fs::metadata(a.path().join("f")).unwrap().len(), 0);
    assert!(!b.path().join("f").exists());
}

/// N of a "made N; then: ..." answer.
fn made_count(out: &toolhost::ToolOutput) -> u32 {
    out.text()
        .strip_prefix("made ")
        .and_then(|t| t.split(';').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX)
}
