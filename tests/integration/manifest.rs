//! Bad input at load time: each broken tool gets one clear error naming its
//! file (and line, where there is one), and every other tool still loads.

use crate::support::*;
use serde_json::json;
use toolhost::{Core, Scope};

async fn load(dir: &ToolDir) -> Core {
    Core::builder()
        .config(test_config())
        .source(Scope::default(), dir.path())
        .build()
        .await
        .unwrap()
}

/// `tool` is not served: a call of it is a call of an unknown tool.
async fn assert_not_served(core: &Core, tool: &str) {
    let err = call(core, tool, json!({})).await.unwrap_err();
    assert!(
        matches!(err.kind(), toolhost::CallErrorKind::UnknownTool),
        "{err:?}"
    );
}

/// The single load error of `core`, after checking echo still loaded.
async fn only_error(core: &Core) -> String {
    assert_eq!(
        call(core, "echo", json!({"text": "ok"}))
            .await
            .unwrap()
            .text(),
        "ok",
        "the good tool must still load"
    );
    let errors = core.load_errors();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.into_iter().next().unwrap().to_string()
}

#[tokio::test]
async fn unknown_key_names_the_file_the_line_and_the_allowed_keys() {
    let d = ToolDir::new();
    d.add("echo", "echo", "");
    let m = d.add(
        "bad",
        "text",
        "[limits]\ntimeout = \"1s\"\nmemroy = \"1 MiB\"\n",
    );
    let e = only_error(&load(&d).await).await;
    assert!(e.starts_with(&format!("{}:7:", m.display())), "{e}");
    assert!(e.contains("memroy"), "{e}");
    assert!(e.contains("max-output"), "lists the allowed keys: {e}");
}

/// A component whose compiled form (and `describe` record) the cache holds
/// is still refused once its file no longer matches the manifest's pin:
/// the cache is found by the pinned digest, and the file is checked
/// against it all the same, whether the component is a toolhost-world one
/// (whose file a warm start only streams through its digest) or a typed
/// one (whose file is read whole for its docs).
#[tokio::test]
async fn a_cached_component_whose_file_changed_is_refused() {
    for name in ["echo", "typed-kitchen-sink"] {
        let d = ToolDir::new();
        d.add("echo", "echo", "");
        if name != "echo" {
            d.add(name, name, "");
        }
        // Loaded once: compiled and recorded in the shared test cache.
        let core = load(&d).await;
        assert!(core.load_errors().is_empty(), "{:?}", core.load_errors());
        let before = core.tools(&Scope::default()).len();
        drop(core);
        // The file changes; the manifest (and its pin) do not.
        let wasm = d.path().join(format!("{name}.wasm"));
        let pinned = sha256_hex(&wasm);
        std::fs::copy(component("text"), &wasm).unwrap();
        let core = load(&d).await;
        let errors = load_errors(&core);
        assert_eq!(errors.len(), 1, "{name}: {errors:?}");
        assert!(
            errors[0].contains("does not match its pinned sha256")
                && errors[0].contains(&pinned)
                && errors[0].contains(&sha256_hex(&wasm)),
            "{name}: {}",
            errors[0]
        );
        // Only the changed component's tools are gone.
        let after = core.tools(&Scope::default()).len();
        assert!(after < before, "{name}: {after} of {before} tools");
        assert_eq!(after == 0, name == "echo", "{name}: {after} of {before}");
    }
}

#[tokio::test]
async fn wrong_sha256_is_refused() {
    let d = ToolDir::new();
    d.add("echo", "echo", "");
    std::fs::copy(component("text"), d.path().join("text.wasm")).unwrap();
    let m = d.write(
        "text.toml",
        &format!(
            "[component]\npath = \"text.wasm\"\nsha256 = \"{}\"\n",
            "ab".repeat(32)
        ),
    );
    let e = only_error(&load(&d).await).await;
    assert!(e.starts_with(&m.display().to_string()), "{e}");
    assert!(e.contains("does not match its pinned sha256"), "{e}");
    assert!(
        e.contains(&sha256_hex(&d.path().join("text.wasm"))),
        "says the actual digest: {e}"
    );
}

#[tokio::test]
async fn malformed_sha256_points_at_its_line() {
    let d = ToolDir::new();
    d.add("echo", "echo", "");
    std::fs::copy(component("text"), d.path().join("text.wasm")).unwrap();
    let m = d.write(
        "text.toml",
        "[component]\npath = \"text.wasm\"\nsha256 = \"not-hex\"\n",
    );
    let e = only_error(&load(&d).await).await;
    assert!(e.starts_with(&format!("{}:3:", m.display())), "{e}");
    assert!(e.contains("64 hex digits"), "{e}");
}

#[tokio::test]
async fn missing_component_is_named() {
    let d = ToolDir::new();
    d.add("echo", "echo", "");
    d.write(
        "ghost.toml",
        &format!(
            "[component]\npath = \"ghost.wasm\"\nsha256 = \"{}\"\n",
            "00".repeat(32)
        ),
    );
    let e = only_error(&load(&d).await).await;
    assert!(
        e.contains("ghost.toml:2:") && e.contains("component `ghost.wasm` not found"),
        "{e}"
    );
}

/// A component path that names no regular file is refused at once, named
/// for what it is: a FIFO (whose open would wait for a writer forever) and
/// `/dev/zero` (whose read never ends), each in its own manifest. (The load
/// checks the descriptor it reads again, for a file swapped after the
/// manifest's check: unit `sandbox::tests::a_load_reads_only_a_regular_file`.)
#[tokio::test]
async fn a_component_that_is_not_a_regular_file_is_refused_at_once() {
    let d = ToolDir::new();
    d.add("echo", "echo", "");
    let fifo = d.path().join("fifo.wasm");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::os::unix::fs::symlink("/dev/zero", d.path().join("zero.wasm")).unwrap();
    for name in ["fifo", "zero"] {
        unchecked_manifest(&d, name, "00");
    }
    let core = tokio::time::timeout(std::time::Duration::from_secs(30), load(&d))
        .await
        .expect("the start never waits on such a file");
    let errors = load_errors(&core);
    assert_eq!(errors.len(), 2, "{errors:?}");
    for e in &errors {
        assert!(e.contains("is not a regular file"), "{e}");
    }
    assert_eq!(
        call(&core, "echo", json!({"text": "ok"}))
            .await
            .unwrap()
            .text(),
        "ok"
    );
}

#[tokio::test]
async fn corrupt_wasm_is_refused() {
    let d = ToolDir::new();
    d.add("echo", "echo", "");
    let wasm = d.path().join("corrupt.wasm");
    let mut bytes = std::fs::read(component("text")).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&wasm, &bytes).unwrap();
    d.write(
        "corrupt.toml",
        &format!(
            "[component]\npath = \"corrupt.wasm\"\nsha256 = \"{}\"\n",
            sha256_hex(&wasm)
        ),
    );
    let e = only_error(&load(&d).await).await;
    assert!(
        e.contains("corrupt.toml") && e.contains("is not a valid WebAssembly component"),
        "{e}"
    );
}

#[tokio::test]
async fn component_of_another_world_is_refused() {
    let d = ToolDir::new();
    d.add("echo", "echo", "");
    // The smallest valid component: it exports nothing.
    let wasm = d.path().join("empty.wasm");
    std::fs::write(&wasm, b"\0asm\x0d\x00\x01\x00").unwrap();
    d.write(
        "empty.toml",
        &format!(
            "[component]\npath = \"empty.wasm\"\nsha256 = \"{}\"\n",
            sha256_hex(&wasm)
        ),
    );
    let e = only_error(&load(&d).await).await;
    assert!(
        e.contains("empty.toml") && e.contains("empty.wasm is not a tool component"),
        "{e}"
    );
}

#[tokio::test]
async fn bad_sizes_durations_and_grants_are_explained() {
    let cases = [
        ("[limits]\nmemory = \"lots\"\n", ":6:", "is not a size"),
        (
            "[limits]\nmemory = \"12 parsecs\"\n",
            ":6:",
            "unknown size unit",
        ),
        ("[limits]\ntimeout = \"soon\"\n", ":6:", "is not a duration"),
        ("[limits]\nmax-concurrency = 0\n", ":6:", "at least 1"),
        (
            "[[fs]]\nguest = \"data\"\nhost = \".\"\nmode = \"ro\"\n",
            ":6:",
            "must be absolute",
        ),
        (
            "[[fs]]\nguest = \"/data/../etc\"\nhost = \".\"\nmode = \"ro\"\n",
            ":6:",
            "normalized",
        ),
        (
            "[[fs]]\nguest = \"/data\"\nhost = \"./no-such-dir\"\nmode = \"ro\"\n",
            ":7:",
            "cannot be granted",
        ),
        (
            "[[fs]]\nguest = \"/data\"\nhost = \".\"\nmode = \"rwx\"\n",
            ":8:",
            "must be `ro` or `rw`",
        ),
        (
            "[[fs]]\nguest = \"/data\"\nhost = \".\"\nmode = \"ro\"\n[[fs]]\nguest = \"/data/sub\"\nhost = \".\"\nmode = \"ro\"\n",
            ":9:",
            "overlaps",
        ),
        (
            "[network]\nallow = [\"https://example.com/path\"]\n",
            ":6:",
            "drop the scheme",
        ),
        (
            "[env]\npass = [\"A=B\"]\n",
            ":6:",
            "not a valid environment variable",
        ),
        (
            "[client]\nrequests = [\"telepathy\"]\n",
            ":6:",
            "not a client request",
        ),
    ];
    for (extra, line, needle) in cases {
        let d = ToolDir::new();
        d.add("echo", "echo", "");
        d.add("bad", "text", extra);
        let e = only_error(&load(&d).await).await;
        assert!(
            e.contains(&format!("bad.toml{line}")) && e.contains(needle),
            "for\n{extra}\ngot: {e}"
        );
    }
}

/// Neither of two tools of one name is served, each manifest's error
/// naming the other: keeping the first let a package named to sort first
/// take the other's calls (a review's case). The rest still serves.
#[tokio::test]
async fn a_name_clash_serves_neither_and_names_both_files() {
    let d = ToolDir::new();
    d.add("echo", "echo", "");
    d.add("zecho", "echo", "");
    // A third of the name: refused too, the first holder reported once.
    d.add("yecho", "echo", "");
    d.add("text", "text", "");
    let core = load(&d).await;
    assert_not_served(&core, "echo").await;
    assert!(
        !core
            .tools(&Scope::default())
            .iter()
            .any(|t| t.name.as_ref() == "echo")
    );
    let mut errors = load_errors(&core);
    errors.sort();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    for e in &errors {
        assert!(e.contains("neither is served"), "{e}");
    }
    for m in ["/echo.toml", "/yecho.toml", "/zecho.toml"] {
        assert_eq!(
            errors
                .iter()
                .filter(|e| e.split(':').next().unwrap().ends_with(m))
                .count(),
            1,
            "{m}: {errors:#?}"
        );
    }
    let ok = call(
        &core,
        "regex_extract",
        json!({"pattern": "s+", "text": "still served"}),
    )
    .await;
    assert!(ok.is_ok(), "{ok:?}");
}

/// A review's case: a manifest swapped for a FIFO hung the load (and a
/// reload, and every reload after it) in a blocking read; a dangling link
/// or a FIFO named `*.toml` was skipped without a word; and a sparse 1.5 GB
/// "component" was read whole (2 GB of memory) before its digest was
/// checked. Each is a load error naming it now, at once, and the rest
/// loads.
#[tokio::test]
async fn a_fifo_a_dangling_link_or_a_huge_file_is_a_clear_load_error() {
    let d = ToolDir::new();
    d.add("echo", "echo", "");
    let fifo = d.path().join("fifo.toml");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::symlink(d.path().join("gone.toml"), d.path().join("dangling.toml")).unwrap();
    let huge = d.path().join("huge.wasm");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(1500 << 20)
        .unwrap();
    unchecked_manifest(&d, "huge", "ab");
    let core = tokio::time::timeout(std::time::Duration::from_secs(60), load(&d))
        .await
        .expect("the load hung");
    let errors = load_errors(&core);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    let about = |file: &str| {
        errors
            .iter()
            .find(|e| e.contains(file))
            .unwrap_or_else(|| panic!("no error names {file}: {errors:#?}"))
            .clone()
    };
    assert!(about("fifo.toml").contains("not a regular file (a FIFO)"));
    assert!(about("dangling.toml").contains("cannot read manifest"));
    assert!(about("huge.wasm").contains("more than the 256 MiB"));
    assert!(call(&core, "echo", json!({"text": "x"})).await.is_ok());
}

/// A tenant's or agent's `tools` naming what no source offers (a typo)
/// left its scope without the tool and said nothing (found by the user
/// review): it is a load error naming the scope and the name; the names
/// that are offered are served.
#[tokio::test]
async fn a_named_selection_of_a_name_nothing_offers_is_a_load_error() {
    let d = ToolDir::new();
    d.add("echo", "echo", "");
    let alpha = Scope::new("alpha");
    let core = Core::builder()
        .config(test_config())
        .add_source(
            toolhost::Source::new(alpha.clone(), d.path())
                .only_tools(["echo".to_string(), "ecoh".to_string()]),
        )
        .build()
        .await
        .unwrap();
    let names: Vec<String> = core
        .tools(&alpha)
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(names, ["echo"]);
    let errors = load_errors(&core);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0]
            .contains("scope `alpha` names `ecoh`, which no manifest of its tool sources offers"),
        "{errors:#?}"
    );
}

/// What failed to load is a number an operator can alert on: each load
/// and reload counts in `toolhost_loads_total` and sets
/// `toolhost_load_errors` (a reload that left tools out said so only on
/// stderr; found by the user review).
#[tokio::test]
async fn load_errors_are_a_metric() {
    let d = ToolDir::new();
    d.add("echo", "echo", "");
    let core = core(d.path()).await;
    let text = core.metrics().encode();
    assert_eq!(sample(&text, "toolhost_loads_total"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "toolhost_load_errors"), Some(0.0), "{text}");
    d.write("broken.toml", "[component]\npath = \"nothing.wasm\"\n");
    assert_eq!(core.reload().await.len(), 1);
    let text = core.metrics().encode();
    assert_eq!(sample(&text, "toolhost_loads_total"), Some(2.0), "{text}");
    assert_eq!(sample(&text, "toolhost_load_errors"), Some(1.0), "{text}");
}

/// A review's case: a tenant's named tools (`tools = ["echo"]`) are taken
/// from every `--tools` source, by tool name or by manifest name, so a
/// writer of a second directory who added an `echo.toml` (here the files
/// component) added its tools to the tenant's scope. A name found in more
/// than one source takes nothing of any, with an error saying so; one
/// found in one source is taken as before.
#[tokio::test]
async fn a_named_selection_found_in_two_sources_takes_neither() {
    let trusted = ToolDir::new();
    trusted.add("basics", "echo", "");
    trusted.add("text", "text", "");
    let shared = ToolDir::new();
    shared.add("echo", "files", "");
    let alpha = Scope::new("alpha");
    let only = |d: &ToolDir| {
        toolhost::Source::new(alpha.clone(), d.path())
            .only_tools(["echo".to_string(), "text".to_string()])
    };
    let core = Core::builder()
        .config(test_config())
        .add_source(only(&trusted))
        .add_source(only(&shared))
        .build()
        .await
        .unwrap();
    let tools = core.tools(&alpha);
    let names: Vec<&str> = tools.iter().map(|t| &*t.name).collect();
    // `echo` (a tool of trusted, a manifest of shared) is taken from
    // neither; `text` (a manifest of trusted only) is taken: its tools.
    assert!(!names.contains(&"echo"), "{names:?}");
    assert!(!names.contains(&"list_dir"), "{names:?}");
    assert!(names.contains(&"json_query"), "{names:?}");
    let errors = load_errors(&core);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains("names `echo`, which more than one tool source offers")
            && errors[0].contains(&trusted.path().display().to_string())
            && errors[0].contains(&shared.path().display().to_string()),
        "{errors:#?}"
    );

    // The fix review's case: the trusted `echo.toml` fails to load (its
    // digest mid-upgrade); it still offers `echo`, so the lookalike is not
    // taken alone.
    let broken = ToolDir::new();
    let m = broken.add("echo", "echo", "");
    let text = std::fs::read_to_string(&m).unwrap();
    let pinned = text.lines().find(|l| l.starts_with("sha256")).unwrap();
    std::fs::write(
        &m,
        text.replace(pinned, &format!("sha256 = \"{}\"", "ab".repeat(32))),
    )
    .unwrap();
    let core = Core::builder()
        .config(test_config())
        .add_source(only(&broken))
        .add_source(only(&shared))
        .build()
        .await
        .unwrap();
    let tools = core.tools(&alpha);
    let names: Vec<&str> = tools.iter().map(|t| &*t.name).collect();
    assert!(
        !names.contains(&"list_dir"),
        "the lookalike was taken: {names:?}"
    );
}

/// A review's case: `toolhost check` (what an operator runs on a
/// third-party directory) printed each manifest's file name as it was, so a
/// name holding escape sequences (an OSC 52 writes the terminal's
/// clipboard, `\r` and an erase forge a line) reached the terminal. File
/// names are escaped like every other untrusted text.
#[test]
fn manifest_file_names_reach_the_terminal_escaped() {
    let d = ToolDir::new();
    let m = d.add("echo", "echo", "");
    let hostile = d
        .path()
        .join("x\u{1b}]52;c;cHduZWQ=\u{7}\u{1b}[2K\rforged.toml");
    std::fs::rename(&m, &hostile).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_toolhost"))
        .arg("check")
        .arg(d.path())
        .env("XDG_CACHE_HOME", d.path().join("cache"))
        .output()
        .unwrap();
    let all = [out.stdout, out.stderr].concat();
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("forged.toml"), "{text}");
    assert!(
        !all.contains(&0x1b) && !all.contains(&0x07) && !all.contains(&b'\r'),
        "{text:?}"
    );
}

/// `toolhost check --config` said "ok" of a tool whose network grant the
/// host config narrows, which `install` showed and a call would meet
/// (found by the user review): each narrowed grant is named; without the
/// cap, that grant is not.
#[test]
fn check_names_what_the_host_config_narrows() {
    let d = ToolDir::new();
    d.add(
        "hostile",
        "hostile",
        "[network]\nallow = [\"127.0.0.1:9\"]\n",
    );
    let cfg = tempfile::tempdir().unwrap();
    let host = cfg.path().join("host.toml");
    write_private(&host, "[network]\nallow = [\"example.org\"]\n");
    let check = |config: Option<&std::path::Path>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_toolhost"));
        cmd.arg("check").arg(d.path());
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let out = cmd
            .env("XDG_CACHE_HOME", d.path().join("cache"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let said = check(Some(&host));
    assert!(
        said.contains("this host narrows")
            && said
                .contains("network: 127.0.0.1:9: narrowed: outside this host's network allow-list"),
        "{said}"
    );
    let said = check(None);
    assert!(!said.contains("network:"), "{said}");
}

/// A review's case: a "tool directory" that also held another package's
/// packed layout (`index.json`) was pushed as that layout, so the manifest
/// the operator reviewed was not what went out. Such a directory is
/// refused, before anything is sent.
#[test]
fn a_directory_with_a_manifest_and_a_layout_is_not_pushed() {
    let d = ToolDir::new();
    d.add("echo", "echo", "");
    std::fs::write(d.path().join("index.json"), "{}").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_toolhost"))
        .arg("push")
        .arg(d.path())
        .arg("127.0.0.1:9/tools/echo:1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("holds both a packed layout (index.json) and a tool manifest"),
        "{stderr}"
    );
}

/// A review's case: names that differ only in `.` against `_` are one
/// name to the `claude` CLI (it writes `.` as `_`), which kept one of the
/// two, so a component describing `json.query` took the calls (and the
/// arguments) meant for `json_query`. They clash as clients see them:
/// neither is served.
#[tokio::test]
async fn names_that_clients_read_as_one_clash() {
    let d = ToolDir::new();
    d.add("text", "text", "");
    d.add("echo", "echo", "");
    // The text component, its tools renamed `json.query` and
    // `regex.extract` (the same length: every occurrence patched).
    let mut lookalike = std::fs::read(component("text")).unwrap();
    for (from, to) in [
        (&b"json_query"[..], &b"json.query"[..]),
        (b"regex_extract", b"regex.extract"),
    ] {
        let mut n = 0;
        while let Some(i) = lookalike.windows(from.len()).position(|w| w == from) {
            lookalike[i..i + from.len()].copy_from_slice(to);
            n += 1;
        }
        assert!(n > 0, "no {from:?} in the text component");
    }
    d.add_bytes("lookalike", &lookalike, "");
    let core = load(&d).await;
    let tools = core.tools(&Scope::default());
    let names: Vec<&str> = tools.iter().map(|t| &*t.name).collect();
    for name in ["json_query", "json.query", "regex_extract", "regex.extract"] {
        assert!(!names.contains(&name), "{name} is served: {names:?}");
        assert_not_served(&core, name).await;
    }
    let errors = load_errors(&core);
    for (file, tool) in [
        ("lookalike.toml", "json.query"),
        ("text.toml", "json_query"),
    ] {
        assert!(
            errors.iter().any(|e| e.contains(file)
                && e.contains(&format!("tool `{tool}`"))
                && e.contains("differs only in `.` against `_`")),
            "{file}: {errors:#?}"
        );
    }
    // The rest still serves.
    assert!(call(&core, "echo", json!({"text": "x"})).await.is_ok());
}

/// The diff review's case: the first tool of a name got the second one
/// refused for another reason (a `rw` grant overlapping the second's, so
/// the second never reached the name check) and kept the name. A manifest
/// refused for its grants still takes its tools' names.
#[tokio::test]
async fn a_tool_refused_for_its_grants_still_takes_its_name() {
    let d = ToolDir::new();
    let shared = tempfile::tempdir().unwrap();
    let grant = format!(
        "[[fs]]\nguest = \"/out\"\nhost = \"{}\"\nmode = \"rw\"\n",
        shared.path().display()
    );
    d.add("echo", "echo", &grant);
    d.add("zecho", "echo", &grant);
    let core = load(&d).await;
    assert_not_served(&core, "echo").await;
    let errors = load_errors(&core);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("zecho.toml") && e.contains("overlap")),
        "{errors:#?}"
    );
    assert!(
        errors.iter().any(
            |e| e.starts_with(&d.path().join("echo.toml").display().to_string())
                && e.contains("neither is served")
        ),
        "{errors:#?}"
    );
}

#[tokio::test]
async fn a_second_start_loads_from_the_cache_without_compiling() {
    let d = ToolDir::new();
    d.add("echo", "echo", "");
    init_logging();
    let scratch = tempfile::tempdir().unwrap();
    // The host creates the cache directory itself, private (0700).
    let cache = scratch.path().join("cache");
    let config = || toolhost::HostConfig::default().with_cache_dir(Some(cache.clone()));
    let compiled = |core_events: &std::sync::Mutex<Vec<bool>>| core_events.lock().unwrap().clone();
    for expect in [true, false] {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let core = Core::builder()
            .config(config())
            .source(Scope::default(), d.path())
            .on_load({
                let seen = seen.clone();
                move |ev| {
                    if let toolhost::LoadEvent::Loaded { compiled, .. } = ev {
                        seen.lock().unwrap().push(compiled)
                    }
                }
            })
            .build()
            .await
            .unwrap();
        assert_eq!(compiled(&seen), vec![expect]);
        assert_eq!(
            call(&core, "echo", json!({"text": "c"}))
                .await
                .unwrap()
                .text(),
            "c"
        );
    }
    // A corrupted cache entry is discarded and recompiled, never trusted.
    for f in std::fs::read_dir(&cache).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "cwasm") {
            std::fs::write(f, b"garbage").unwrap();
        }
    }
    let core = Core::builder()
        .config(config())
        .source(Scope::default(), d.path())
        .build()
        .await
        .unwrap();
    assert_eq!(
        call(&core, "echo", json!({"text": "again"}))
            .await
            .unwrap()
            .text(),
        "again"
    );
}

/// A warm start asks no component what it offers: the cache recorded each
/// `describe` answer beside the compiled component, and the record serves
/// exactly what asking did (tools, resources, templates, prompts). A record
/// changed by anything but this host is never trusted: it is discarded,
/// the component asked again, and its answer recorded again.
#[tokio::test]
async fn a_warm_start_asks_no_component_what_it_offers() {
    let d = ToolDir::new();
    d.add("echo", "echo", "");
    d.add("prompts", "prompts", "");
    let scratch = tempfile::tempdir().unwrap();
    let cache = scratch.path().join("cache");
    let scope = Scope::default();
    // Each manifest's (name, compiled, described), and what the scope offers.
    let start = || async {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let core = Core::builder()
            .config(toolhost::HostConfig::default().with_cache_dir(Some(cache.clone())))
            .source(scope.clone(), d.path())
            .on_load({
                let seen = seen.clone();
                move |ev| {
                    if let toolhost::LoadEvent::Loaded {
                        manifest,
                        compiled,
                        described,
                        ..
                    } = ev
                    {
                        let name = manifest.file_name().unwrap().to_string_lossy().to_string();
                        seen.lock().unwrap().push((name, compiled, described));
                    }
                }
            })
            .build()
            .await
            .unwrap();
        assert!(core.load_errors().is_empty(), "{:?}", core.load_errors());
        let mut seen = seen.lock().unwrap().clone();
        seen.sort();
        let offered = format!(
            "{:?}",
            (
                core.tools(&scope),
                core.resources(&scope),
                core.resource_templates(&scope),
                core.prompts(&scope)
            )
        );
        (core, seen, offered)
    };
    let each = |compiled: bool, described: bool| {
        ["echo.toml", "prompts.toml"].map(|m| (m.to_string(), compiled, described))
    };
    let (_, cold, offered) = start().await;
    assert_eq!(cold, each(true, true));
    let (core, warm, again) = start().await;
    assert_eq!(warm, each(false, false), "a warm start asked again");
    assert_eq!(again, offered);
    assert!(!core.prompts(&scope).is_empty(), "{offered}");
    assert_eq!(
        call(&core, "echo", json!({"text": "w"}))
            .await
            .unwrap()
            .text(),
        "w"
    );

    // Records planted with a tool of their own, the tags kept.
    let mut planted = 0;
    for f in std::fs::read_dir(&cache).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "describe") {
            let bytes = std::fs::read(&f).unwrap();
            let answer = String::from_utf8(bytes[32..].to_vec()).unwrap();
            let forged = answer.replacen(r#""name":""#, r#""name":"planted-"#, 1);
            assert_ne!(forged, answer);
            std::fs::write(&f, [&bytes[..32], forged.as_bytes()].concat()).unwrap();
            planted += 1;
        }
    }
    assert_eq!(planted, 2);
    let (_, tampered, offered_then) = start().await;
    assert_eq!(tampered, each(false, true), "a changed record was trusted");
    assert_eq!(offered_then, offered);
    assert!(!offered_then.contains("planted-"));
    // Asked again, and recorded again.
    let (_, rewarmed, _) = start().await;
    assert_eq!(rewarmed, each(false, false));
}

#[tokio::test]
async fn a_cache_directory_open_to_other_users_is_never_used() {
    use std::os::unix::fs::PermissionsExt;
    let d = ToolDir::new();
    d.add("echo", "echo", "");
    let scratch = tempfile::tempdir().unwrap();
    let cache = scratch.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    for _ in 0..2 {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let core = Core::builder()
            .config(toolhost::HostConfig::default().with_cache_dir(Some(cache.clone())))
            .source(Scope::default(), d.path())
            .on_load({
                let seen = seen.clone();
                move |ev| {
                    if let toolhost::LoadEvent::Loaded { compiled, .. } = ev {
                        seen.lock().unwrap().push(compiled)
                    }
                }
            })
            .build()
            .await
            .unwrap();
        // Another user could plant native code there: compile every time.
        assert_eq!(*seen.lock().unwrap(), vec![true]);
        assert_eq!(
            call(&core, "echo", json!({"text": "x"}))
                .await
                .unwrap()
                .text(),
            "x"
        );
    }
    // The host left the directory as it found it: no chmod behind the operator's back,
    // and nothing written into it.
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o777);
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0);
}

/// What the load of `core` refused, as the operator reads it.
fn load_errors(core: &Core) -> Vec<String> {
    core.load_errors().iter().map(|e| e.to_string()).collect()
}

/// `NAME.toml` in `d` for `NAME.wasm`, pinned to the digest of 32 `byte`s
/// (never the file's: the load must refuse the file before its digest).
fn unchecked_manifest(d: &ToolDir, name: &str, byte: &str) {
    d.write(
        &format!("{name}.toml"),
        &format!(
            "[component]\npath = \"{name}.wasm\"\nsha256 = \"{}\"\n",
            byte.repeat(32)
        ),
    );
}

/// A review's case: a tools directory any local user could write (mode
/// 0777) was loaded as it was, and `--watch` took another user's manifest
/// granting `/etc`. What others may write is not loaded (a sticky
/// directory excepted: others cannot rename what is in it), nor what
/// another user owns, nor a host config others may write.
#[tokio::test]
async fn tools_and_configs_others_may_write_are_not_loaded() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    let d = ToolDir::new();
    d.add("echo", "echo", "");
    let load = || async {
        let core = load(&d).await;
        (
            core.tool(&Scope::default(), "echo").is_some(),
            load_error_texts(&core),
        )
    };
    mode(d.path(), 0o777);
    let (served, errors) = load().await;
    assert!(!served);
    assert!(
        errors.len() == 1 && errors[0].contains("may be written by every user (mode 777)"),
        "{errors:#?}"
    );
    mode(d.path(), 0o1777);
    let (served, errors) = load().await;
    assert!(
        served && errors.is_empty(),
        "a sticky directory: {errors:#?}"
    );
    mode(d.path(), 0o700);
    let manifest = d.path().join("echo.toml");
    mode(&manifest, 0o666);
    let (served, errors) = load().await;
    assert!(
        !served
            && errors.len() == 1
            && errors[0].contains("echo.toml may be written by every user"),
        "{errors:#?}"
    );
    mode(&manifest, 0o644);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(&manifest, Some(12345), None).unwrap();
        let (served, errors) = load().await;
        assert!(
            !served
                && errors.len() == 1
                && errors[0].contains("belongs to another user (uid 12345)"),
            "{errors:#?}"
        );
        std::os::unix::fs::chown(&manifest, Some(0), None).unwrap();
        // A link another user made, to a manifest of root's (in a sticky
        // directory, where others may add links: the review of the fix).
        let link = d.path().join("evil.toml");
        std::os::unix::fs::symlink(&manifest, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(12345), None).unwrap();
        let (_, errors) = load().await;
        assert!(
            errors.len() == 1 && errors[0].contains("is a link another user (uid 12345) made"),
            "{errors:#?}"
        );
        std::fs::remove_file(&link).unwrap();
        // The review of the fix's cases, through the host config: a link
        // another user made in the middle of a chain of links; and a
        // directory on the way that another user owns (who could swap the
        // file between the check and the read), even at mode 0755.
        let t = tempfile::tempdir().unwrap();
        let (real, other) = (t.path().join("real"), t.path().join("other"));
        std::fs::create_dir(&real).unwrap();
        std::fs::create_dir(&other).unwrap();
        std::fs::write(real.join("host.toml"), "").unwrap();
        std::os::unix::fs::symlink(real.join("host.toml"), other.join("mid.toml")).unwrap();
        std::os::unix::fs::lchown(other.join("mid.toml"), Some(12345), None).unwrap();
        std::os::unix::fs::symlink(other.join("mid.toml"), t.path().join("host.toml")).unwrap();
        let e = toolhost::HostConfig::load(&t.path().join("host.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mid.toml is a link another user (uid 12345) made"),
            "{e}"
        );
        assert!(toolhost::HostConfig::load(&real.join("host.toml")).is_ok());
        std::os::unix::fs::chown(&real, Some(12345), None).unwrap();
        let e = toolhost::HostConfig::load(&real.join("host.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("directory") && e.contains("belongs to another user (uid 12345)"),
            "{e}"
        );
    }
    let (served, errors) = load().await;
    assert!(served && errors.is_empty(), "{errors:#?}");
    let config = d.path().join("host.toml");
    std::fs::write(&config, "").unwrap();
    mode(&config, 0o646);
    let e = toolhost::HostConfig::load(&config).unwrap_err().to_string();
    assert!(
        e.contains("cannot read host config") && e.contains("mode 646"),
        "{e}"
    );
}
