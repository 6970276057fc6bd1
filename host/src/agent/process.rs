//! The CLI process: find the `claude` executable, start it with the
//! stream-json flags, read its stdout as bounded lines, keep the tail of its
//! stderr for error messages, and shut it down cleanly.
//!
//! Knows nothing of the control protocol: `session` speaks that over the
//! pipes this module hands out.

use super::error::AgentError;
use crate::mcp::lines::Line;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufRead;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The environment variable naming the CLI executable.
pub const CLI_ENV: &str = "TOOLHOST_CLAUDE_CLI";
/// The CLI version this transport is tested against.
pub const PINNED_CLI_VERSION: &str = "2.1.332";
/// How much of the CLI's stderr is kept for error messages, and the
/// longest line of it read.
const STDERR_TAIL: usize = 16 << 10;
const STDERR_LINE: usize = 8 << 10;

/// Find the CLI: `explicit` ([`AgentOptions::cli`](super::AgentOptions::cli)), else `$TOOLHOST_CLAUDE_CLI`,
/// else `claude` on `PATH`. A path given explicitly (flag or variable) is
/// used or refused, never silently replaced by another; the error names
/// everything that was tried.
pub(crate) fn find_cli(explicit: Option<&Path>) -> Result<PathBuf, AgentError> {
    let given = match explicit {
        Some(p) => Some(("the given path", p.to_path_buf())),
        None => std::env::var_os(CLI_ENV).map(|p| (CLI_ENV, PathBuf::from(p))),
    };
    if let Some((what, p)) = given {
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(AgentError::CliNotFound {
                tried: vec![format!("{what} {} (not an executable file)", p.display())],
            })
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    for dir in &dirs {
        let p = dir.join("claude");
        if is_executable(&p) {
            return Ok(p);
        }
    }
    Err(AgentError::CliNotFound {
        tried: vec![
            "a given path (none)".into(),
            format!("${CLI_ENV} (not set)"),
            format!("`claude` in PATH ({} directories)", dirs.len()),
        ],
    })
}

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}

/// The last bytes the CLI wrote to stderr, and whether it has ended.
#[derive(Clone, Default)]
pub(crate) struct StderrTail(Arc<Tail>);

#[derive(Default)]
struct Tail {
    bytes: Mutex<VecDeque<u8>>,
    ended: tokio::sync::watch::Sender<bool>,
}

impl StderrTail {
    fn push(&self, line: &str) {
        let mut b = self.0.bytes.lock().unwrap_or_else(|e| e.into_inner());
        b.extend(line.as_bytes());
        b.push_back(b'\n');
        let excess = b.len().saturating_sub(STDERR_TAIL);
        b.drain(..excess);
    }
    pub fn text(&self) -> String {
        let b = self.0.bytes.lock().unwrap_or_else(|e| e.into_inner());
        let (a, c) = b.as_slices();
        String::from_utf8_lossy(&[a, c].concat())
            .trim_end()
            .to_string()
    }
    /// The text once the CLI's stderr has ended, or `within` has passed
    /// (for the message of a CLI that exited: its last lines, which say
    /// why, can still be in the pipe when its exit is seen).
    pub async fn ended_text(&self, within: Duration) -> String {
        let mut ended = self.0.ended.subscribe();
        let _ = tokio::time::timeout(within, ended.wait_for(|e| *e)).await;
        self.text()
    }
}

/// A running CLI. Dropping it kills the process and its process group.
pub(crate) struct CliProcess {
    child: Child,
    /// The CLI's process group (its own, made at spawn): what a kill
    /// reaches, so that children it started in its group go with it.
    group: Option<i32>,
    pub stderr: StderrTail,
}

impl Drop for CliProcess {
    fn drop(&mut self) {
        // `kill_on_drop` kills the CLI; its group goes too, before the
        // CLI is reaped (while it is unreaped its id cannot name another
        // group).
        self.kill_group();
    }
}

/// The pipes of a started CLI, for the session.
pub(crate) struct Pipes {
    pub stdin: ChildStdin,
    pub stdout: tokio::io::BufReader<ChildStdout>,
}

impl CliProcess {
    /// Start `cli` with `args`, in `cwd`, with only `inherited` of the
    /// host's environment and then `env`.
    pub fn spawn(
        cli: &Path,
        args: &[String],
        cwd: Option<&Path>,
        inherited: Vec<(std::ffi::OsString, std::ffi::OsString)>,
        env: &[(String, String)],
    ) -> Result<(CliProcess, Pipes), AgentError> {
        let mut cmd = Command::new(cli);
        cmd.env_clear()
            .envs(inherited)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so that a kill reaches the processes it
            // starts in it too (a review found a child of a hung CLI
            // outliving the session). One that leaves the group (`setsid`)
            // is not followed: that takes a cgroup (SECURITY.md).
            .process_group(0)
            .env("CLAUDE_CODE_ENTRYPOINT", "sdk-rust")
            .env("CLAUDE_AGENT_SDK_VERSION", env!("CARGO_PKG_VERSION"));
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|source| AgentError::Spawn {
            path: cli.to_path_buf(),
            source,
        })?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let tail = StderrTail::default();
        let t = tail.clone();
        // Line by line, each at most `STDERR_LINE` bytes: a CLI's line was
        // read whole, and 1.5 GB without a newline held 1.5 GB (found by
        // review).
        tokio::spawn(async move {
            let mut r = tokio::io::BufReader::new(stderr);
            let mut buf = Vec::new();
            loop {
                match crate::mcp::lines::read_line(&mut r, &mut buf, STDERR_LINE).await {
                    Ok(Line::Read) => {
                        let line = String::from_utf8_lossy(&buf);
                        tracing::debug!(
                            target: "toolhost::agent::cli",
                            "{}",
                            crate::audit::escape_controls(&line)
                        );
                        t.push(&line);
                    }
                    Ok(Line::TooLong) => t.push("(a line of more than 8 KiB, not kept)"),
                    Ok(Line::End) | Err(_) => break,
                }
            }
            t.0.ended.send_replace(true);
        });
        let group = child.id().and_then(|id| i32::try_from(id).ok());
        Ok((
            CliProcess {
                child,
                group,
                stderr: tail,
            },
            Pipes {
                stdin,
                stdout: tokio::io::BufReader::with_capacity(64 << 10, stdout),
            },
        ))
    }

    /// Wait for the process to exit (after its stdin was closed), killing it
    /// after `grace`. Returns the exit code (`None`: killed by a signal).
    pub async fn shutdown(&mut self, grace: Duration) -> Option<i32> {
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => {
                // What it started in its group and left running goes too.
                // Reaped, its id stays taken while any of its group lives
                // (the kernel keeps it for the group); with none left the
                // signal finds nothing, short of the id being reused by a
                // new group leader within these microseconds.
                if let Some(group) = self.group.take() {
                    // SAFETY: as in `kill_group`.
                    unsafe { libc::kill(-group, libc::SIGKILL) };
                }
                status.code()
            }
            _ => {
                self.kill_group();
                let _ = self.child.kill().await;
                self.child.wait().await.ok().and_then(|s| s.code())
            }
        }
    }

    /// Kill the CLI and every process of its group now (it is reaped by
    /// `shutdown`, or by the runtime once this is dropped).
    pub fn kill(&mut self) {
        self.kill_group();
        let _ = self.child.start_kill();
    }

    /// SIGKILL to the CLI's process group, unless the CLI was reaped (its
    /// group id could then be another's).
    fn kill_group(&mut self) {
        // `id()` is `None` once the child is reaped (`try_wait` would reap it).
        if let Some(group) = self.group
            && self.child.id().is_some()
        {
            // SAFETY: kill(2) with a negative pid signals that process
            // group; it touches no memory of ours.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
    }
}

/// Read one `\n`-terminated line of at most `max` bytes into `buf` (without
/// the newline). `Ok(false)` at end of input. A longer line is consumed up to
/// its newline and reported as `LineTooLong`; the reader stays usable.
pub(crate) async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<bool, AgentError> {
    match crate::mcp::lines::read_line(r, buf, max).await? {
        Line::Read => Ok(true),
        Line::End => Ok(false),
        Line::TooLong => Err(AgentError::LineTooLong { limit: max }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `mcp::lines::read_line` reads the lines (tested there); here only
    /// what each outcome becomes.
    #[tokio::test]
    async fn bounded_lines_are_agent_errors() {
        let data = b"{\"a\":1}\nxxxxxxxxxxxx\n".to_vec();
        let mut r = &data[..];
        let mut buf = Vec::new();
        assert!(read_line_bounded(&mut r, &mut buf, 10).await.unwrap());
        assert!(matches!(
            read_line_bounded(&mut r, &mut buf, 10).await,
            Err(AgentError::LineTooLong { limit: 10 })
        ));
        assert!(!read_line_bounded(&mut r, &mut buf, 10).await.unwrap());
    }

    /// A review's case: the CLI's stderr was read a line at a time with
    /// no bound (1.5 GB without a newline held 1.5 GB). Each line is read
    /// up to 8 KiB; a longer one is dropped, and the tail says so.
    #[tokio::test]
    async fn a_huge_stderr_line_is_not_kept() {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let (mut p, _pipes) = CliProcess::spawn(
            Path::new("/bin/sh"),
            &[
                "-c".into(),
                "head -c 4000000 /dev/zero | tr '\\0' x >&2; echo >&2; echo 'the end' >&2".into(),
            ],
            None,
            vec![("PATH".into(), path)],
            &[],
        )
        .unwrap();
        p.shutdown(Duration::from_secs(20)).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !p.stderr.text().contains("the end") {
            assert!(
                std::time::Instant::now() < deadline,
                "{:.300}",
                p.stderr.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let tail = p.stderr.text();
        assert!(
            tail.contains("(a line of more than 8 KiB, not kept)"),
            "{tail:.300}"
        );
        assert!(tail.len() < 1024, "{}", tail.len());
    }

    #[test]
    fn not_found_names_what_was_tried() {
        let e = find_cli(Some(Path::new("/nonexistent/claude"))).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("the given path /nonexistent/claude"), "{msg}");
        assert!(msg.contains("@anthropic-ai/claude-code@"), "{msg}");
    }
}
