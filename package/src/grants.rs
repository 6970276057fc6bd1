//! Grants review: what a package's manifest asks for, set against what the
//! operator's host config allows, and what an upgrade asks for beyond the
//! installed version.
//!
//! The manifest is read by the host's own parser (`toolhost::Manifest`) and
//! judged by the host's own capability units (`HostConfig::admit`, the same
//! narrowing and preparation a load does), so the review cannot disagree
//! with what loading would do. This module only lays the answer out, one
//! line per grant, and compares two versions. A review can only refuse, or
//! report where the host narrows anyway; it never widens.

use crate::error::{Error, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toolhost::caps::{FsMode, HostPattern, Limits};
use toolhost::{HostConfig, Manifest};

/// A directory the package asks for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dir {
    /// Where the guest sees it.
    pub guest: String,
    /// The host directory.
    pub host: PathBuf,
    /// Read-write (else read-only).
    pub rw: bool,
    /// Bytes it may add (rw only); `None`: the operator's default.
    pub quota: Option<u64>,
}

impl std::fmt::Display for Dir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} -> {} ({})",
            self.guest,
            self.host.display(),
            if self.rw { "rw" } else { "ro" }
        )?;
        if let Some(q) = self.quota {
            write!(f, " quota {}", size(q))?;
        }
        Ok(())
    }
}

/// Everything a manifest asks for, as written (before the host's caps).
#[derive(Debug, Clone, PartialEq)]
pub struct Grants {
    /// `[[fs]]`, sorted.
    pub dirs: Vec<Dir>,
    /// `[env] set`.
    pub env_set: BTreeMap<String, String>,
    /// `[env] pass`.
    pub env_pass: BTreeSet<String>,
    /// `[network] allow`.
    pub hosts: Vec<HostPattern>,
    /// `[client] requests`: `sampling`, `elicitation`.
    pub client: BTreeSet<String>,
    /// The limits asked for (manifest values, defaults elsewhere).
    pub limits: Limits,
}

impl Grants {
    /// The grants of a manifest checked by the host's parser.
    pub fn of(m: &Manifest) -> Grants {
        let mut dirs: Vec<Dir> =
            m.fs.iter()
                .map(|f| Dir {
                    guest: f.guest.clone(),
                    host: f.host.clone(),
                    rw: f.mode == FsMode::ReadWrite,
                    quota: f.quota,
                })
                .collect();
        dirs.sort();
        Grants {
            dirs,
            env_set: m.env.set.iter().cloned().collect(),
            env_pass: m.env.pass.iter().cloned().collect(),
            hosts: m.network.allow.clone(),
            client: m.client.iter().map(|k| k.name().to_string()).collect(),
            limits: m.limits.clone(),
        }
    }

    /// Parse manifest `text` as the host would at `path` (its component
    /// must be beside it); `origin` names it in errors.
    pub fn load(path: &Path, text: &str, origin: &str) -> Result<(Manifest, Grants)> {
        let m = Manifest::parse(path, text).map_err(|d| {
            Error::format(format!(
                "{origin}: the package's manifest does not load on this host:\n{}",
                d.render()
            ))
        })?;
        let g = Grants::of(&m);
        Ok((m, g))
    }
}

/// Package manifests name directories of the machine that installs them: a
/// relative `host` would resolve inside the store. Refused, from the text as
/// written (the host's parser has already resolved it).
pub fn check_portable(text: &str, origin: &str) -> Result<()> {
    let v: toml::Table = toml::from_str(text)
        .map_err(|e| Error::format(format!("{origin}: {}", e.message().trim())))?;
    let fs = v.get("fs").and_then(|f| f.as_array()).cloned();
    for f in fs.unwrap_or_default() {
        let host = f.get("host").and_then(|h| h.as_str()).unwrap_or("");
        if !Path::new(host).is_absolute() {
            let guest = f.get("guest").and_then(|g| g.as_str()).unwrap_or("?");
            return Err(Error::format(format!(
                "{origin}: [[fs]] {guest}: host directory `{host}` is relative; a package's directories must be absolute paths on the machine that installs it (e.g. `/srv/data`)"
            )));
        }
    }
    Ok(())
}

/// How the host treats one requested grant.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Granted as asked.
    Granted,
    /// Granted as asked, with a note (e.g. the current value passed).
    Note(String),
    /// The host narrows it at load (caps, network allow-list).
    Narrowed(String),
    /// The host refuses the tool because of it.
    Refused(String),
}

/// A grants review: one line per grant (kind, grant, verdict).
#[derive(Debug, Clone)]
pub struct Review {
    /// `(kind, grant, verdict)`, grouped by kind.
    pub lines: Vec<(String, String, Verdict)>,
}

impl Review {
    /// The lines the host refuses.
    pub fn refused(&self) -> Vec<&(String, String, Verdict)> {
        self.lines
            .iter()
            .filter(|l| matches!(l.2, Verdict::Refused(_)))
            .collect()
    }

    /// The review as a table: kind, grant, and what this host does with it.
    pub fn render(&self) -> String {
        let w = self
            .lines
            .iter()
            .map(|l| l.1.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        let mut last = "";
        for (kind, what, v) in &self.lines {
            if kind != last {
                let _ = writeln!(out, "  {kind}:");
                last = kind;
            }
            let verdict = match v {
                Verdict::Granted => "ok".to_string(),
                Verdict::Note(n) => format!("ok ({n})"),
                Verdict::Narrowed(n) => format!("narrowed: {n}"),
                Verdict::Refused(r) => format!("REFUSED: {r}"),
            };
            let pad = w - what.chars().count();
            let _ = writeln!(out, "    {what}{:pad$}  {verdict}", "");
        }
        out
    }
}

/// Review manifest `m` against `host`, with `protect` (the store, …) never
/// granted. The verdicts are the host's own: `HostConfig::admit` runs the
/// load-time narrowing and preparation; its refusals are attached to the
/// grant they concern.
pub fn review(m: &Manifest, host: &HostConfig, protect: &[PathBuf]) -> Review {
    let g = Grants::of(m);
    let (capped, refusals) = match host.admit(m, protect) {
        Ok(l) => (l, Vec::new()),
        Err(errs) => (m.limits.min(&host.caps.limits.max), errs),
    };
    let mut used = vec![false; refusals.len()];
    let mut refusal_for = |unit: &str, key: &str| -> Option<String> {
        let i = refusals
            .iter()
            .enumerate()
            .position(|(i, e)| !used[i] && e.unit == unit && e.message.contains(key))?;
        used[i] = true;
        let e = &refusals[i];
        Some(match &e.hint {
            Some(h) => format!("{} ({h})", e.message),
            None => e.message.clone(),
        })
    };
    let mut lines = Vec::new();
    for d in &g.dirs {
        let v = match refusal_for("fs", &format!("`{}`", d.guest)) {
            Some(r) => Verdict::Refused(r),
            None => Verdict::Granted,
        };
        lines.push(("directories".to_string(), d.to_string(), v));
    }
    for (k, v) in &g.env_set {
        lines.push((
            "environment".into(),
            format!("set {k}={v}"),
            Verdict::Granted,
        ));
    }
    for k in &g.env_pass {
        let v = match refusal_for("env", &format!("`{k}`")) {
            Some(r) => Verdict::Refused(r),
            None => Verdict::Note(match std::env::var_os(k) {
                Some(_) => "the host's value, set now".to_string(),
                None => "the host's value, unset now".to_string(),
            }),
        };
        lines.push(("environment".into(), format!("pass {k}"), v));
    }
    for h in &g.hosts {
        let v = if host.caps.net.allow.allows(|a| pattern_covers(a, h)) {
            Verdict::Granted
        } else {
            Verdict::Narrowed(format!(
                "outside this host's network allow-list ({}): requests to it will be refused",
                host.caps.net.allow
            ))
        };
        lines.push(("network".into(), h.to_string(), v));
    }
    for c in &g.client {
        let v = match refusal_for("client", &format!("`{c}`")) {
            Some(r) => Verdict::Refused(r),
            None => Verdict::Granted,
        };
        lines.push(("client requests".into(), c.clone(), v));
    }
    let l = &g.limits;
    let max = &host.caps.limits.max;
    let lim = |name: &str, want: String, got: String, cap: String| {
        let v = if want == got {
            Verdict::Note(format!("host max {cap}"))
        } else {
            Verdict::Narrowed(format!("capped to {got} by this host"))
        };
        ("limits".to_string(), format!("{name} {want}"), v)
    };
    let fuel = |f: Option<u64>| f.map_or("unmetered".to_string(), |f| f.to_string());
    lines.push(lim(
        "timeout",
        dur(l.timeout),
        dur(capped.timeout),
        dur(max.timeout),
    ));
    lines.push(lim(
        "memory",
        size(l.memory),
        size(capped.memory),
        size(max.memory),
    ));
    lines.push(lim("fuel", fuel(l.fuel), fuel(capped.fuel), fuel(max.fuel)));
    lines.push(lim(
        "max-output",
        size(l.max_output),
        size(capped.max_output),
        size(max.max_output),
    ));
    lines.push(lim(
        "max-concurrency",
        l.max_concurrency.to_string(),
        capped.max_concurrency.to_string(),
        max.max_concurrency.to_string(),
    ));
    // Anything the host refused that no line above names (an overlap of
    // two grants, …): shown, never dropped.
    for (i, e) in refusals.iter().enumerate() {
        if !used[i] {
            lines.push((
                "other".into(),
                e.unit.to_string(),
                Verdict::Refused(e.to_string()),
            ));
        }
    }
    Review { lines }
}

/// Every grant `new` asks for beyond `old`, one line each, naming exactly
/// the grant. Empty: the upgrade asks for nothing more.
pub fn new_grants(old: &Grants, new: &Grants) -> Vec<String> {
    let mut out = Vec::new();
    for d in &new.dirs {
        match old
            .dirs
            .iter()
            .find(|o| o.guest == d.guest && o.host == d.host)
        {
            Some(o) if !o.rw && d.rw => out.push(format!(
                "directory {} -> {} (ro -> rw)",
                d.guest,
                d.host.display()
            )),
            Some(o) if d.rw && quota_above(d.quota, o.quota) => out.push(format!(
                "directory {} -> {} quota {} -> {}",
                d.guest,
                d.host.display(),
                o.quota.map_or("host default".into(), size),
                d.quota.map_or("host default".into(), size)
            )),
            Some(_) => {}
            None => out.push(format!("directory {d}")),
        }
    }
    for (k, v) in &new.env_set {
        match old.env_set.get(k) {
            Some(o) if o == v => {}
            Some(o) => out.push(format!("env set {k}={v} (was {k}={o})")),
            None => out.push(format!("env set {k}={v}")),
        }
    }
    for k in &new.env_pass {
        if !old.env_pass.contains(k) {
            out.push(format!("env pass {k}"));
        }
    }
    for h in &new.hosts {
        if !old.hosts.iter().any(|o| pattern_covers(o, h)) {
            out.push(format!("network host {h}"));
        }
    }
    for c in &new.client {
        if !old.client.contains(c) {
            out.push(format!("client request {c}"));
        }
    }
    let (o, n) = (&old.limits, &new.limits);
    if n.timeout > o.timeout {
        out.push(format!(
            "limits.timeout {} -> {}",
            dur(o.timeout),
            dur(n.timeout)
        ));
    }
    if n.memory > o.memory {
        out.push(format!(
            "limits.memory {} -> {}",
            size(o.memory),
            size(n.memory)
        ));
    }
    match (o.fuel, n.fuel) {
        (Some(a), Some(b)) if b > a => out.push(format!("limits.fuel {a} -> {b}")),
        (Some(a), None) => out.push(format!("limits.fuel {a} -> unmetered")),
        _ => {}
    }
    if n.max_output > o.max_output {
        out.push(format!(
            "limits.max-output {} -> {}",
            size(o.max_output),
            size(n.max_output)
        ));
    }
    if n.max_concurrency > o.max_concurrency {
        out.push(format!(
            "limits.max-concurrency {} -> {}",
            o.max_concurrency, n.max_concurrency
        ));
    }
    out
}

/// Whether quota `new` allows more than `old` (`None`: the operator's
/// default, which may be anything: a change from or to it counts).
fn quota_above(new: Option<u64>, old: Option<u64>) -> bool {
    match (new, old) {
        (Some(n), Some(o)) => n > o,
        (None, None) => false,
        _ => true,
    }
}

/// Whether every request `b` allows is also allowed by `a`, as the
/// network gate matches ([`HostPattern::covers`]).
pub fn pattern_covers(a: &HostPattern, b: &HostPattern) -> bool {
    a.covers(b)
}

/// `64 MiB`, `1 GiB`, or bytes.
pub fn size(n: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} B")
}

fn dur(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[component]
path = "t.wasm"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
[limits]
memory = "16 MiB"
fuel = 1000
[[fs]]
guest = "/data"
host = "/srv/data"
mode = "ro"
[env]
set = { A = "1" }
pass = ["LANG"]
[network]
allow = ["*.example.com"]
"#;

    fn parse(text: &str) -> (tempfile::TempDir, Manifest) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.wasm"), b"").unwrap();
        let (m, _) = Grants::load(&dir.path().join("t.toml"), text, "t.toml").unwrap();
        (dir, m)
    }

    fn g(text: &str) -> Grants {
        Grants::of(&parse(text).1)
    }

    #[test]
    fn an_identical_manifest_asks_for_nothing_new() {
        assert!(new_grants(&g(BASE), &g(BASE)).is_empty());
    }

    #[test]
    fn each_kind_of_new_grant_is_named_exactly() {
        let old = g(BASE);
        let text = BASE
            .replace("memory = \"16 MiB\"", "memory = \"64 MiB\"")
            .replace("fuel = 1000", "")
            .replace("mode = \"ro\"", "mode = \"rw\"")
            .replace("A = \"1\"", "A = \"2\", B = \"x\"")
            .replace("pass = [\"LANG\"]", "pass = [\"LANG\", \"HOME\"]")
            .replace("[\"*.example.com\"]", "[\"api.example.com\", \"evil.org\"]")
            + "[client]\nrequests = [\"sampling\"]\n[[fs]]\nguest = \"/secrets\"\nhost = \"/srv/secrets\"\nmode = \"ro\"\n";
        let d = new_grants(&old, &g(&text));
        assert_eq!(
            d,
            vec![
                "directory /data -> /srv/data (ro -> rw)",
                "directory /secrets -> /srv/secrets (ro)",
                "env set A=2 (was A=1)",
                "env set B=x",
                "env pass HOME",
                "network host evil.org",
                "client request sampling",
                "limits.memory 16 MiB -> 64 MiB",
                "limits.fuel 1000 -> unmetered",
            ]
        );
    }

    #[test]
    fn narrower_grants_are_not_new() {
        let text = BASE
            .replace("memory = \"16 MiB\"", "memory = \"8 MiB\"")
            .replace("[\"*.example.com\"]", "[\"api.example.com\"]");
        assert!(new_grants(&g(BASE), &g(&text)).is_empty());
    }

    #[test]
    fn host_patterns_cover_by_suffix_and_port() {
        let p = |s| HostPattern::parse(s).unwrap();
        assert!(pattern_covers(&p("*.a.com"), &p("x.a.com")));
        assert!(pattern_covers(&p("*.a.com"), &p("*.x.a.com")));
        assert!(!pattern_covers(&p("*.a.com"), &p("a.com")));
        assert!(!pattern_covers(&p("*.a.com"), &p("xa.com")));
        assert!(!pattern_covers(&p("x.a.com"), &p("*.a.com")));
        assert!(pattern_covers(&p("a.com:*"), &p("a.com:8080")));
        assert!(pattern_covers(&p("a.com"), &p("a.com:443")));
        assert!(!pattern_covers(&p("a.com"), &p("a.com:8080")));
        assert!(!pattern_covers(&p("a.com:8080"), &p("a.com:*")));
        // The gate never lets a wildcard match an IP literal.
        assert!(!pattern_covers(&p("*.0.1"), &p("10.0.0.1")));
        assert!(!pattern_covers(&p("*.1"), &p("192.168.1.1:8080")));
    }

    #[test]
    fn the_review_refuses_what_the_host_would_refuse_and_shows_narrowing() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let store = tmp.path().join("store");
        std::fs::create_dir(&store).unwrap();
        let cfg = tmp.path().join("host.toml");
        let cfg_text = "[fs]\ndeny-rw = true\n[limits]\nmemory = \"1 GiB\"\n[network]\nallow = [\"127.0.0.1:*\"]\n[env]\npass = [\"LANG\"]\n";
        std::fs::write(&cfg, cfg_text).unwrap();
        let host = HostConfig::parse(&cfg, cfg_text).unwrap();
        let text = format!(
            "[component]\npath = \"t.wasm\"\nsha256 = \"{z}\"\n[limits]\nmemory = \"2 GiB\"\n\
             [[fs]]\nguest = \"/a\"\nhost = \"{d}\"\nmode = \"rw\"\n\
             [[fs]]\nguest = \"/b\"\nhost = \"{s}\"\nmode = \"ro\"\n\
             [[fs]]\nguest = \"/c\"\nhost = \"/nonexistent/dir\"\nmode = \"ro\"\n\
             [env]\npass = [\"LANG\", \"HOME\"]\n\
             [network]\nallow = [\"evil.org\", \"127.0.0.1:8080\"]\n",
            z = "0".repeat(64),
            d = data.display(),
            s = store.join("sub").display(),
        );
        std::fs::create_dir(store.join("sub")).unwrap();
        let (_d, m) = parse(&text);
        let r = review(&m, &host, &[store]);
        let text = r.render();
        assert_eq!(r.refused().len(), 4, "{text}");
        assert!(
            text.contains("pass HOME")
                && text.contains("passing host variable `HOME` is not allowed"),
            "{text}"
        );
        assert!(!text.contains("`LANG` is not allowed"), "{text}");
        assert!(text.contains("read-only grants only"), "{text}");
        assert!(text.contains("protected path"), "{text}");
        assert!(
            text.contains("/nonexistent/dir cannot be granted"),
            "{text}"
        );
        assert!(
            text.contains("evil.org") && text.contains("outside this host's network allow-list"),
            "{text}"
        );
        assert!(!text.contains("127.0.0.1:8080  narrowed"), "{text}");
        assert!(
            text.contains("memory 2 GiB") && text.contains("capped to 1 GiB"),
            "{text}"
        );
    }
}
