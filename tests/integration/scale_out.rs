//! Scale-out on existing infrastructure: three `toolhost serve --http`
//! replicas sharing a state-key file behind a real nginx (the Debian package,
//! `scripts/install-nginx.sh`), run as an ordinary process with a generated
//! config on 127.0.0.1 ports; the official Python MCP SDK drives 2025-11-25
//! sessions and stateless 2026-07-28 calls through it
//! (tests/clients/scale_out.py) while one replica is SIGKILLed mid-load.
//!
//! Checked: every call the client saw acknowledged has exactly one line
//! across the replicas' audit logs (`fsync = "always"`: a line is on disk
//! before its response leaves), the client's retries succeed, and each
//! 2025-11-25 session keeps its id and goes on being served by the
//! surviving replicas.

use crate::mcp::{HttpServe, deps_dir, tools};
use crate::support::{listens_on, root};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NGINX: &str = "/usr/sbin/nginx";
/// Acknowledged calls before the SIGKILL.
const KILL_AFTER: usize = 40;

/// nginx in the foreground with `conf`, stopped (SIGKILL, then reaped) on drop.
struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    fn start(dir: &Path, port: u16, upstreams: &[String]) -> Nginx {
        assert!(
            Path::new(NGINX).is_file(),
            "nginx is not installed: run `scripts/install-nginx.sh` (or `make test-deps`)"
        );
        // nginx's workers drop to `nobody` when it is started as root (CI):
        // they must be able to reach their temp directories.
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let user = if running_as_root() {
            "user nobody nogroup;\n"
        } else {
            ""
        };
        let servers: String = upstreams
            .iter()
            .map(|a| format!("        server {a} max_fails=1 fail_timeout=60s;\n"))
            .collect();
        let example = std::fs::read_to_string(root().join("deploy/nginx/toolhost.conf"))
            .expect("deploy/nginx/toolhost.conf");
        // The shipped example's `location /mcp` block, as operators get it.
        let location = example
            .split("# --- location")
            .nth(1)
            .and_then(|s| s.split("# --- end location").next())
            .expect("deploy/nginx/toolhost.conf marks its location block")
            .to_string();
        let d = dir.display();
        let conf = format!(
            r#"{user}worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log notice;
events {{ worker_connections 1024; }}
http {{
    log_format upstreams '$request_method|$status|$upstream_addr|$upstream_status';
    access_log {d}/access.log upstreams;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream toolhost {{
{servers}        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
{location}
    }}
}}
"#
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let test = Command::new(NGINX)
            .args(["-t", "-q", "-p"])
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            test.status.success(),
            "nginx -t: {}",
            String::from_utf8_lossy(&test.stderr)
        );
        let mut child = Command::new(NGINX)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Ready when nginx itself listens (its master process, `daemon
        // off`), not whatever took the port between our look and its bind.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !listens_on(child.id(), port) {
            assert!(
                matches!(child.try_wait(), Ok(None)),
                "nginx exited: {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
            assert!(
                Instant::now() < deadline,
                "nginx did not listen: {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx {
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// Requests per upstream (address -> count), from the access log.
    fn upstream_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        let log = std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        for line in log.lines() {
            // METHOD|STATUS|ADDR[, ADDR...]|UPSTREAM_STATUS[, ...]: one
            // address per upstream tried.
            let Some(addrs) = line.split('|').nth(2) else {
                continue;
            };
            for a in addrs
                .split(", ")
                .map(str::trim)
                .filter(|a| a.starts_with("127."))
            {
                *counts.entry(a.to_string()).or_default() += 1;
            }
        }
        counts
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // Our own child, by its id: the master, whose workers exit with it.
        let _ = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether this process runs as root (`id -u`).
fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `call` lines of an audit log.
fn audit_calls(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|r| r["event"] == "call")
        .collect()
}

#[test]
fn three_replicas_behind_nginx_survive_a_sigkill_with_every_acknowledged_call_audited_once() {
    let tools = tools(true);
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    // The shared key ring (two keys, as mid-rotation): a file, never an argument.
    let keys = dir.join("state-keys");
    crate::support::write_private(&keys, format!("{}\n{}\n", "6b".repeat(32), "b6".repeat(32)));
    let mut replicas = Vec::new();
    let mut audits = Vec::new();
    for i in 0..3 {
        let audit = dir.join(format!("audit-{i}.jsonl"));
        let config = dir.join(format!("toolhost-{i}.toml"));
        std::fs::write(
            &config,
            format!(
                "[engine]\ncache-dir = \"{}\"\n\n[audit]\npath = \"{}\"\nfsync = \"always\"\nraw-arguments = true\n",
                root().join("target/test-cache").display(),
                audit.display()
            ),
        )
        .unwrap();
        replicas.push(HttpServe::start(&[
            "--watch",
            "false",
            "--tools",
            &tools.path().display().to_string(),
            "--config",
            &config.display().to_string(),
            "--state-key-file",
            &keys.display().to_string(),
        ]));
        audits.push(audit);
    }
    let upstreams: Vec<String> = replicas.iter().map(HttpServe::addr).collect();
    let nginx_dir = dir.join("nginx");
    std::fs::create_dir(&nginx_dir).unwrap();
    let port = free_port();
    let nginx = Nginx::start(&nginx_dir, port, &upstreams);

    let mut client = Command::new(deps_dir().join("venv/bin/python"))
        .arg(root().join("tests/clients/scale_out.py"))
        .args(["--http", &format!("http://127.0.0.1:{port}/mcp")])
        .args([
            "--legacy", "3", "--modern", "3", "--calls", "25", "--after", "10",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    let mut stderr = client.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    let victim = 1;
    let mut killed = false;
    let mut out = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if !killed
            && line
                .strip_prefix("ACK ")
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n >= KILL_AFTER)
        {
            // Mid-load: six clients have calls in flight.
            replicas[victim].sigkill();
            killed = true;
            writeln!(stdin, "killed").unwrap();
            stdin.flush().unwrap();
        }
        out.push(line);
    }
    let status = client.wait().unwrap();
    let stderr = err.join().unwrap();
    assert!(
        killed && status.success() && out.last().map(String::as_str) == Some("ok scale_out"),
        "the client failed ({status}, killed: {killed}):\n--- stdout tail\n{}\n--- stderr\n{stderr}",
        out[out.len().saturating_sub(5)..].join("\n")
    );
    let summary: Value = serde_json::from_str(&out[out.len() - 2]).unwrap();

    // Every acknowledged call: exactly one audit line, across the replicas.
    let mut lines_by_text: BTreeMap<String, Vec<(usize, Value)>> = BTreeMap::new();
    for (i, a) in audits.iter().enumerate() {
        for r in audit_calls(a) {
            if let Some(t) = r["arguments"]["text"].as_str() {
                lines_by_text
                    .entry(t.to_string())
                    .or_default()
                    .push((i, r.clone()));
            }
        }
    }
    let acks = summary["acks"].as_array().unwrap();
    let failures = summary["failures"].as_array().unwrap();
    for ack in acks {
        let text = ack["text"].as_str().unwrap();
        let found = lines_by_text.get(text).map(Vec::as_slice).unwrap_or(&[]);
        assert_eq!(
            found.len(),
            1,
            "acknowledged call {text} has {} audit lines: {found:?}",
            found.len()
        );
        assert_eq!(found[0].1["outcome"], "ok", "{}", found[0].1);
    }
    // No line for a call nobody made.
    let made: BTreeSet<&str> = acks
        .iter()
        .chain(failures)
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    for t in lines_by_text.keys() {
        assert!(
            made.contains(t.as_str()),
            "an audit line for {t}, never called"
        );
    }

    // Each 2025-11-25 session kept its id, was served before the kill by the
    // replica that died, and after it by the others.
    let sessions = summary["sessions"].as_object().unwrap();
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    let mut moved = 0;
    for (worker, id) in sessions {
        let id = id
            .as_str()
            .unwrap_or_else(|| panic!("{worker}: no session id"));
        let sid = id.split('.').next().unwrap();
        let mine: Vec<&Value> = acks.iter().filter(|a| a["worker"] == *worker).collect();
        assert!(
            mine.iter().all(|a| a["session"] == id),
            "{worker}: acknowledged outside its session"
        );
        let after: Vec<&&Value> = mine.iter().filter(|a| a["after_kill"] == true).collect();
        assert!(!after.is_empty(), "{worker}: no call after the kill");
        let served_by = |texts: &mut dyn Iterator<Item = &&Value>| -> BTreeSet<usize> {
            texts
                .filter_map(|a| lines_by_text.get(a["text"].as_str().unwrap()))
                .flat_map(|v| v.iter().map(|(i, r)| (*i, r["session"].clone())))
                .inspect(|(_, s)| assert_eq!(s, sid, "{worker}: audited under another session"))
                .map(|(i, _)| i)
                .collect()
        };
        let before_kill = served_by(&mut mine.iter().filter(|a| a["after_kill"] == false));
        let after_kill = served_by(&mut after.iter().copied());
        assert!(
            !after_kill.contains(&victim),
            "{worker}: served by the dead replica after the kill?"
        );
        if before_kill.contains(&victim) && after_kill.iter().any(|i| *i != victim) {
            moved += 1;
        }
    }
    assert!(moved >= 1, "no session continued on another replica");

    let per_replica: Vec<usize> = audits.iter().map(|a| audit_calls(a).len()).collect();
    let modern = acks
        .iter()
        .filter(|a| a["worker"].as_str().unwrap().starts_with("modern"))
        .count();
    eprintln!(
        "scale-out: {} calls acknowledged ({} stateless 2026-07-28, {} in 3 sessions), {} attempts failed and were retried; \
         audit lines per replica {per_replica:?} (replica {victim} SIGKILLed after {KILL_AFTER} acks); \
         sessions that moved off the dead replica: {moved}/3; nginx requests per upstream {:?}",
        acks.len(),
        modern,
        acks.len() - modern,
        failures.len(),
        nginx.upstream_counts()
    );
}

#[test]
fn a_bad_state_key_file_stops_the_server_naming_the_file() {
    let scratch = tempfile::tempdir().unwrap();
    let keys = scratch.path().join("state-keys");
    // The Secret's placeholder (deploy/kubernetes/secret.yaml): not a key.
    crate::support::write_private(&keys, "REPLACE-WITH-64-HEX-DIGITS\n");
    let serve = |keys: &Path| {
        let mut c = Command::new(crate::mcp::BIN);
        c.args(["serve", "--http", "127.0.0.1:0", "--watch", "false"])
            .arg("--tools")
            .arg(scratch.path())
            .arg("--state-key-file")
            .arg(keys)
            .stdin(Stdio::null());
        c
    };
    let out = serve(&keys).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--state-key-file") && stderr.contains("not hex"),
        "{stderr}"
    );
    // A review's case: a key file every user may read was taken as it was
    // (whoever reads it can seal session ids). Refused, naming its mode;
    // group-readable (a Kubernetes secret's 0440) is fine.
    let open_keys = scratch.path().join("open-keys");
    std::fs::write(&open_keys, format!("{}\n", "ab".repeat(32))).unwrap();
    for (mode, refused) in [(0o644, true), (0o620, true), (0o440, false)] {
        std::fs::set_permissions(
            &open_keys,
            std::os::unix::fs::PermissionsExt::from_mode(mode),
        )
        .unwrap();
        let mut server = serve(&open_keys)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while server.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = server.kill();
        let out = server.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said = stderr.contains(&format!("(mode {mode:o}): anyone who reads it can seal"));
        assert_eq!(said, refused, "mode {mode:o}: {stderr}");
        assert!(
            !(refused && out.status.success()),
            "mode {mode:o}: refused, yet exited cleanly: {stderr}"
        );
    }
}
