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

fn fs_grant(guest: &str, host: &std::path::Path, mode: &str) -> String {
    format!(
        "[[fs]]\nguest = \"{guest}\"\nhost = \"{}\"\nmode = \"{mode}\"\n",
        host.display()
    )
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_reaches_only_granted_hosts() {
    let (granted, granted_hits) = http_server().await;
    let (other, other_hits) = http_server().await;
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        &format!("[network]\nallow = [\"127.0.0.1:{granted}\"]\n"),
    );
    let core = core(d.path()).await;

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
    assert!(matches!(from_b.kind(), CallErrorKind::UnknownTool { .. }));
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
