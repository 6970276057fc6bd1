//! `toolhost audit`: who ran what. Reads the audit log (and its rotated
//! files, oldest first) and prints the records that match the filters.
//! Reading only; the log is written by the library's `Audit`.

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

#[derive(Args)]
pub struct AuditArgs {
    /// The audit log (default: `--audit`, or `[audit] path` of `--config`).
    file: Option<PathBuf>,
    /// The audit log, as `toolhost serve` was given it.
    #[arg(long, env = "TOOLHOST_AUDIT")]
    audit: Option<PathBuf>,
    /// Host config whose `[audit] path` names the log.
    #[arg(long, env = "TOOLHOST_CONFIG")]
    config: Option<PathBuf>,
    /// Only this tenant's records.
    #[arg(long)]
    tenant: Option<String>,
    /// Only calls of this tool.
    #[arg(long)]
    tool: Option<String>,
    /// Only this outcome: `ok`, `error` (any failure) or an error kind
    /// (`denied`, `timeout`, `cancelled`, …).
    #[arg(long)]
    outcome: Option<String>,
    /// Only this caller (`mcp-http`, `cli`, `agent:NAME`, …); a name
    /// without `:` also matches its `NAME:…` callers (`mcp-http` matches
    /// every tenant's `mcp-http:TENANT`).
    #[arg(long)]
    caller: Option<String>,
    /// Only calls made for this principal (an HTTP tenant's JWT `sub`).
    #[arg(long)]
    principal: Option<String>,
    /// Only records since this time: RFC 3339 (`2026-12-03T04:00:00Z`) or
    /// a duration ago (`15m`, `2h`, `1day`).
    #[arg(long)]
    since: Option<String>,
    /// Print the matching records as JSON lines rather than a table.
    #[arg(long)]
    json: bool,
}

fn since(s: &str) -> Result<SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    match humantime::parse_duration(s) {
        Ok(d) => SystemTime::now()
            .checked_sub(d)
            .context("--since is too far back"),
        Err(_) => bail!("--since `{s}`: expected an RFC 3339 time or a duration like `2h`"),
    }
}

/// The log's files, oldest first: `path.N` … `path.1`, then `path`.
fn files(path: &Path) -> Vec<PathBuf> {
    let mut rotated = Vec::new();
    for i in 1.. {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{i}"));
        let p = PathBuf::from(p);
        if !p.exists() {
            break;
        }
        rotated.push(p);
    }
    rotated.reverse();
    rotated.push(path.to_owned());
    rotated
}

pub fn run(a: AuditArgs) -> Result<ExitCode> {
    let path = match a.file.clone().or(a.audit.clone()) {
        Some(p) => p,
        None => match &a.config {
            Some(c) => crate::cli::host_config(&Some(c.clone()))?
                .audit
                .path
                .with_context(|| format!("{} has no `[audit] path`", c.display()))?,
            None => bail!("which audit log? give its path, --audit or --config"),
        },
    };
    let since = a.since.as_deref().map(since).transpose()?;
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_string();
    let mut shown = 0usize;
    let mut bad = 0usize;
    if !path.exists() {
        bail!("no audit log at {}", path.display());
    }
    for f in files(&path) {
        let file = std::fs::File::open(&f).with_context(|| format!("{}", f.display()))?;
        for line in std::io::BufReader::new(file).lines() {
            let line = line.with_context(|| format!("{}", f.display()))?;
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                bad += 1;
                continue;
            };
            let outcome = s(&v, "outcome");
            let keep = a.tenant.as_ref().is_none_or(|t| *t == s(&v, "tenant"))
                && a.tool.as_ref().is_none_or(|t| *t == s(&v, "tool"))
                && a.principal
                    .as_ref()
                    .is_none_or(|t| *t == s(&v, "principal"))
                && a.caller.as_ref().is_none_or(|c| {
                    let caller = s(&v, "caller");
                    caller == *c
                        || (!c.contains(':')
                            && caller
                                .strip_prefix(c.as_str())
                                .is_some_and(|r| r.starts_with(':')))
                })
                && a.outcome.as_deref().is_none_or(|o| match o {
                    "error" => outcome != "ok",
                    o => o == outcome,
                })
                && since.is_none_or(|t0| {
                    humantime::parse_rfc3339_weak(&s(&v, "time")).is_ok_and(|t| t >= t0)
                });
            if !keep {
                continue;
            }
            shown += 1;
            if a.json {
                println!("{}", crate::cli::json_safe(&line));
            } else {
                let ms = v["duration_us"].as_u64().unwrap_or(0) as f64 / 1000.0;
                let reason = v["reason"]
                    .as_str()
                    .map(|r| format!("  ({r})"))
                    .unwrap_or_default();
                println!(
                    "{}  {}  {}  {}  {}  {ms:.1} ms{}",
                    toolhost::Audit::printable(&s(&v, "time")),
                    toolhost::Audit::printable(&s(&v, "tenant")),
                    toolhost::Audit::printable(&s(&v, "caller")),
                    toolhost::Audit::printable(&s(&v, "tool")),
                    toolhost::Audit::printable(&outcome),
                    toolhost::Audit::printable(&reason),
                );
            }
        }
    }
    if bad > 0 {
        eprintln!("warning: {bad} line(s) are not JSON records");
    }
    if shown == 0 && !a.json {
        eprintln!("no matching records");
    }
    Ok(ExitCode::SUCCESS)
}
