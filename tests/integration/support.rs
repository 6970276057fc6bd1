//! Shared fixtures: where the built components are, and scratch tool
//! directories with manifests written for one test.

#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use toolhost::{CallRequest, Core, HostConfig, Scope, ToolOutput};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A guest component: a Rust one built by the `toolhost-artifacts` crate, or
/// a Python (`py-*`) or JavaScript (`js-*`) one built by `make tools`
/// (scripts/languages.mk) into `target/lang-tools/`.
pub fn component(name: &str) -> PathBuf {
    if name.starts_with("py-") || name.starts_with("js-") {
        let p = root().join(format!("target/lang-tools/{name}.wasm"));
        assert!(
            p.is_file(),
            "{} is missing: `make tools` builds the Python and JavaScript tools \
             (it installs their pinned toolchains under .toolchains/)",
            p.display()
        );
        return p;
    }
    PathBuf::from(match name {
        "echo" => toolhost_artifacts::ECHO,
        "text" => toolhost_artifacts::TEXT,
        "files" => toolhost_artifacts::FILES,
        "writer" => toolhost_artifacts::WRITER,
        "fetch" => toolhost_artifacts::FETCH,
        "prompts" => toolhost_artifacts::PROMPTS,
        "conformance" => toolhost_artifacts::CONFORMANCE,
        "hostile" => toolhost_artifacts::HOSTILE,
        "hostile-describe" => toolhost_artifacts::HOSTILE_DESCRIBE,
        "typed-kitchen-sink" => toolhost_artifacts::TYPED_KITCHEN_SINK,
        other => panic!("no component `{other}` among the artifacts"),
    })
}

/// A directory of example tools with their shipped manifests, as `make
/// tools` deploys them under `build/` (here `target/test-tools/NAME`, with
/// the writer's `../out` beside it).
/// Built once per test run.
fn deployed(dir: &str, tools: &[&str]) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let d = root().join("target/test-tools").join(dir);
    std::fs::create_dir_all(&d).unwrap();
    // The writer's read-write grant, `../out` from its manifest.
    std::fs::create_dir_all(d.parent().unwrap().join("out")).unwrap();
    for t in tools {
        let wasm = d.join(format!("{t}.wasm"));
        let src = component(t);
        if std::fs::read(&wasm).ok() != std::fs::read(&src).ok() {
            std::fs::copy(&src, &wasm).unwrap();
        }
        let template =
            std::fs::read_to_string(root().join(format!("example-tools/{t}/{t}.toml"))).unwrap();
        let text = template.replace("@SHA256@", &sha256_hex(&wasm));
        let manifest = d.join(format!("{t}.toml"));
        if std::fs::read_to_string(&manifest).ok().as_deref() != Some(&text) {
            std::fs::write(&manifest, text).unwrap();
        }
    }
    d
}

/// The example tools with their manifests (what `build/tools` holds).
pub fn tools_dir() -> PathBuf {
    deployed(
        "tools",
        &["echo", "text", "files", "writer", "fetch", "prompts"],
    )
}

/// The Python or JavaScript (`lang` = `py` or `js`) example tools with their
/// shipped manifests.
pub fn lang_tools_dir(lang: &str) -> PathBuf {
    deployed(
        &format!("{lang}-tools"),
        &[&format!("{lang}-echo"), &format!("{lang}-text")],
    )
}

/// The conformance suite's tools with their manifest.
pub fn conformance_dir() -> PathBuf {
    deployed("conformance", &["conformance"])
}

pub fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// A scratch directory holding one or more tools with hand-written manifests.
pub struct ToolDir {
    pub dir: tempfile::TempDir,
}

impl ToolDir {
    pub fn new() -> ToolDir {
        ToolDir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copy component `name` in as `file.wasm` and write `file.toml` whose
    /// `[component]` pins it, followed by `extra` (more manifest TOML).
    pub fn add(&self, file: &str, name: &str, extra: &str) -> PathBuf {
        self.add_bytes(file, &std::fs::read(component(name)).unwrap(), extra)
    }

    /// [`ToolDir::add`] for a component given as its bytes.
    pub fn add_bytes(&self, file: &str, component: &[u8], extra: &str) -> PathBuf {
        let wasm = self.path().join(format!("{file}.wasm"));
        std::fs::write(&wasm, component).unwrap();
        let manifest = self.path().join(format!("{file}.toml"));
        std::fs::write(
            &manifest,
            format!(
                "[component]\npath = \"{file}.wasm\"\nsha256 = \"{}\"\n\n{extra}\n",
                sha256_hex(&wasm)
            ),
        )
        .unwrap();
        manifest
    }

    /// Write a raw manifest file.
    pub fn write(&self, file: &str, text: &str) -> PathBuf {
        let p = self.path().join(file);
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// Log to stderr when `TOOLHOST_LOG` is set (e.g. `TOOLHOST_LOG=toolhost=debug`).
pub fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("TOOLHOST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .try_init();
        }
    });
}

/// Host config for tests: a shared compile cache under target/.
pub fn test_config() -> HostConfig {
    init_logging();
    HostConfig::default().with_cache_dir(Some(root().join("target/test-cache")))
}

/// A core over `path` in the default scope; panics on per-tool load errors.
pub async fn core(path: &Path) -> Core {
    core_with(test_config(), path).await
}

/// [`core`] with `config`.
pub async fn core_with(config: HostConfig, path: &Path) -> Core {
    let core = core_loading(config, path).await;
    assert!(
        core.load_errors().is_empty(),
        "load errors: {:?}",
        core.load_errors()
    );
    core
}

/// A core over `path` in the default scope with `config`, whatever failed
/// to load (see [`load_error_texts`]).
pub async fn core_loading(config: HostConfig, path: &Path) -> Core {
    Core::builder()
        .config(config)
        .source(Scope::default(), path)
        .build()
        .await
        .unwrap()
}

/// A manifest's `[[fs]]` grant of `host` at `guest`, `mode` `ro` or `rw`.
pub fn fs_grant(guest: &str, host: &Path, mode: &str) -> String {
    format!(
        "[[fs]]\nguest = \"{guest}\"\nhost = \"{}\"\nmode = \"{mode}\"\n",
        host.display()
    )
}

/// What failed to load in `core`, as its errors say it.
pub fn load_error_texts(core: &Core) -> Vec<String> {
    core.load_errors().iter().map(|e| e.to_string()).collect()
}

pub fn args(v: serde_json::Value) -> Option<serde_json::Map<String, serde_json::Value>> {
    match v {
        serde_json::Value::Object(m) => Some(m),
        _ => panic!("arguments must be an object"),
    }
}

pub async fn call(
    core: &Core,
    tool: &str,
    a: serde_json::Value,
) -> Result<ToolOutput, toolhost::CallError> {
    core.call(CallRequest::new(Scope::default(), tool, args(a)))
        .await
}

/// Every tool of the `hostile` fixture is driven by some test here: each
/// exists to prove a limit, and one no test calls proves nothing. The list
/// comes from the fixture's source (`toolhost_artifacts::foreach_hostile!`);
/// a test names the tool it calls as a JSON string (`"spin"`).
#[test]
fn every_hostile_tool_is_called_by_a_test() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/integration");
    let mut sources = String::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "rs") && !p.ends_with("support.rs") {
            sources.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
    let mut untested = Vec::new();
    macro_rules! check {
        ($tool:ident) => {
            let name = stringify!($tool);
            if !sources.contains(&format!("\"{name}\"")) {
                untested.push(name);
            }
        };
    }
    toolhost_artifacts::foreach_hostile!(check);
    assert!(
        untested.is_empty(),
        "hostile tools no test calls (add the test, or remove the tool): {untested:?}"
    );
}

/// A `toolhost serve --stdio` started from `cmd` (its arguments and stderr
/// set by the caller), its 2025-11-25 handshake done: the child, its stdin
/// and its stdout's lines.
pub fn stdio_session(
    mut cmd: std::process::Command,
) -> (
    std::process::Child,
    std::process::ChildStdin,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    use std::io::{BufRead, Write};
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    writeln!(stdin, "{}", crate::mcp::INIT).unwrap();
    lines.next().expect("the server answers").unwrap();
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
    )
    .unwrap();
    (child, stdin, lines)
}

/// Write `text` to a new file at `path` that only its owner may read (a
/// state-key file, which the server refuses if others may).
pub fn write_private(path: &Path, text: impl AsRef<[u8]>) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap()
        .write_all(text.as_ref())
        .unwrap();
}

/// The value of the sample whose line starts with `series` (exactly).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Wait (up to 20 s) until `core`'s default scope has `n` calls running
/// or queued.
pub async fn until_in_flight(core: &Core, n: f64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let now = sample(
            &core.metrics().encode(),
            r#"toolhost_calls_in_flight{scope="default"}"#,
        )
        .unwrap_or(0.0);
        if now >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{now} calls in flight, never {n}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Whether process `pid` itself holds the socket listening on
/// 127.0.0.1:`port`. A test peer started on a port found free a moment
/// before may fail to bind it (another process took it first): then
/// whatever answers there is not the peer, and must not decide the test.
pub fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(tcp) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    // `sl local_address rem_address st ... inode`: 0100007F:PORT, state 0A.
    let local = format!("0100007F:{port:04X}");
    let Some(inode) = tcp.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 9 && f[1] == local && f[3] == "0A").then(|| f[9].to_string())
    }) else {
        return false;
    };
    let socket = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == socket.as_str()))
    })
}
