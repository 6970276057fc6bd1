//! Tool manifests: parse and validate the TOML file shipped beside each
//! `.wasm`, resolving every relative path against the manifest's directory.
//!
//! This module owns the manifest *format* and its validation. It never opens
//! the component, never applies the operator's caps (see `config`), and never
//! decides anything at call time.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// A manifest that failed to load: which file, which line, what is wrong and
/// what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ManifestError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.path.display(), line, self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// Per-call limits. Every field has a default; the operator's host config may
/// lower any of them (never raise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock deadline of one call, queueing for a slot included.
    pub timeout: Duration,
    /// Linear memory the guest may grow to, in bytes.
    pub memory: u64,
    /// Deterministic CPU budget (wasm fuel units); `None` means unmetered
    /// (the timeout still applies).
    pub fuel: Option<u64>,
    /// Bytes of result (content + structured) a call may return.
    pub max_output: u64,
    /// Calls of this component that may run at once; later calls wait.
    pub max_concurrency: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(10),
            memory: 64 << 20,
            fuel: None,
            max_output: 1 << 20,
            max_concurrency: 16,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsMode {
    ReadOnly,
    ReadWrite,
}

/// A host directory made visible to the guest at `guest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsGrant {
    pub guest: String,
    pub host: PathBuf,
    pub mode: FsMode,
}

/// An outbound `host[:port]` the guest may reach over wasi:http.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Lower-case host name or IP; a leading `*.` matches any subdomain.
    pub host: String,
    /// `None`: the scheme's default ports (80, 443). `Some(None)` is `:*`.
    pub port: PortPattern,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortPattern {
    Default,
    Any,
    Exactly(u16),
}

impl HostPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty host pattern".into());
        }
        if s.contains("://") || s.contains('/') {
            return Err(format!(
                "`{s}` is not a host[:port] pattern: drop the scheme and path (e.g. `api.example.com` or `api.example.com:8443`)"
            ));
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, "*")) => (h, PortPattern::Any),
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| format!("`{p}` in `{s}` is not a port (use a number or `*`)"))?;
                (h, PortPattern::Exactly(port))
            }
            _ => (s, PortPattern::Default),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let bare = host.strip_prefix("*.").unwrap_or(&host);
        if bare.is_empty()
            || bare.contains('*')
            || !bare
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c))
        {
            return Err(format!(
                "`{s}` is not a host name or IP (a `*.` prefix is the only wildcard)"
            ));
        }
        Ok(HostPattern { host, port })
    }

    /// Whether a request to `host:port` (port as sent, defaulted by scheme) matches.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let host_ok = match self.host.strip_prefix("*.") {
            Some(suffix) => {
                host.len() > suffix.len()
                    && host.ends_with(suffix)
                    && host[..host.len() - suffix.len()].ends_with('.')
            }
            None => host == self.host,
        };
        host_ok
            && match self.port {
                PortPattern::Any => true,
                PortPattern::Default => port == 80 || port == 443,
                PortPattern::Exactly(p) => p == port,
            }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            PortPattern::Default => write!(f, "{}", self.host),
            PortPattern::Any => write!(f, "{}:*", self.host),
            PortPattern::Exactly(p) => write!(f, "{}:{p}", self.host),
        }
    }
}

/// A validated manifest with every path resolved.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The manifest file itself.
    pub path: PathBuf,
    /// The component, resolved against the manifest's directory.
    pub component: PathBuf,
    /// The pinned digest of the component's bytes.
    pub sha256: [u8; 32],
    pub limits: Limits,
    pub fs: Vec<FsGrant>,
    /// Environment the guest sees: explicit values, then pass-through names
    /// (resolved when the tool is loaded; unset host vars are left out).
    pub env: Vec<(String, String)>,
    pub network: Vec<HostPattern>,
    /// MCP client requests the tool may make (`sampling/createMessage`,
    /// `elicitation/create`), from `[client] requests`.
    pub client_requests: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    component: Spanned<RawComponent>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    fs: Vec<Spanned<RawFs>>,
    #[serde(default)]
    env: RawEnv,
    #[serde(default)]
    network: RawNetwork,
    #[serde(default)]
    client: RawClient,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawClient {
    #[serde(default)]
    requests: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    path: Spanned<String>,
    sha256: Spanned<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLimits {
    timeout: Option<Spanned<String>>,
    memory: Option<Spanned<String>>,
    fuel: Option<Spanned<u64>>,
    max_output: Option<Spanned<String>>,
    max_concurrency: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFs {
    guest: Spanned<String>,
    host: Spanned<String>,
    mode: Spanned<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEnv {
    #[serde(default)]
    set: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pass: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
}

/// Parse a size: `4096`, `512 KiB`, `64MiB`, `1 GB` (KB/MB/GB are powers of 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: u64 = num.replace('_', "").parse().map_err(|_| {
        format!("`{s}` is not a size (try `64 MiB`, `512 KiB` or a number of bytes)")
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{s}` (use B, KiB, MiB, GiB, KB, MB or GB)"
            ));
        }
    };
    num.checked_mul(mult)
        .ok_or_else(|| format!("size `{s}` is too large"))
}

/// Parse a duration: `5s`, `250ms`, `1m 30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration ({e}; try `5s` or `250ms`)"))
}

/// A guest path: absolute, normalized, no `.`/`..`, not `/` itself.
fn check_guest_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("guest path `{p}` must be absolute, e.g. `/data`"));
    }
    if p == "/" {
        return Err("guest path `/` would shadow every other grant; mount at a named directory like `/data`".into());
    }
    if p.split('/')
        .skip(1)
        .any(|c| c.is_empty() || c == "." || c == "..")
        || p.ends_with('/')
    {
        return Err(format!(
            "guest path `{p}` must be normalized (no `.`, `..`, empty or trailing components)"
        ));
    }
    Ok(())
}

fn is_prefix_dir(a: &str, b: &str) -> bool {
    b == a || b.strip_prefix(a).is_some_and(|rest| rest.starts_with('/'))
}

fn valid_env_name(n: &str) -> bool {
    !n.is_empty() && !n.contains('=') && !n.contains('\0')
}

impl Manifest {
    /// Read and validate the manifest at `path`.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
            path: path.to_owned(),
            line: None,
            message: format!("cannot read manifest: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Validate manifest `text`, resolving paths against `path`'s directory.
    pub fn parse(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
        let line_of = |offset: usize| {
            text[..offset.min(text.len())]
                .bytes()
                .filter(|&b| b == b'\n')
                .count()
                + 1
        };
        let err = |span: Option<std::ops::Range<usize>>, message: String| ManifestError {
            path: path.to_owned(),
            line: span.map(|s| line_of(s.start)),
            message,
        };
        let raw: Raw = toml::from_str(text).map_err(|e| {
            let msg = e.message().trim().to_string();
            let hint = if msg.contains("unknown field") && !msg.contains("expected") {
                " (allowed: [component] path, sha256; [limits] timeout, memory, fuel, max-output, max-concurrency; [[fs]] guest, host, mode; [env] set, pass; [network] allow; [client] requests)"
            } else {
                ""
            };
            err(e.span(), format!("{msg}{hint}"))
        })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };

        // [component]
        let comp = raw.component.into_inner();
        let component = dir.join(comp.path.get_ref());
        if !component.is_file() {
            return Err(err(
                Some(comp.path.span()),
                format!(
                    "component `{}` not found (resolved to {})",
                    comp.path.get_ref(),
                    component.display()
                ),
            ));
        }
        let digest = comp.sha256.get_ref().trim().to_ascii_lowercase();
        let digest = digest.strip_prefix("sha256:").unwrap_or(&digest);
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(digest, &mut sha256).map_err(|_| {
            err(
                Some(comp.sha256.span()),
                format!(
                    "sha256 `{}` is not 64 hex digits; pin the component with `sha256sum {}`",
                    comp.sha256.get_ref(),
                    comp.path.get_ref()
                ),
            )
        })?;

        // [limits]
        let mut limits = Limits::default();
        let l = raw.limits;
        if let Some(t) = l.timeout {
            limits.timeout = parse_duration(t.get_ref()).map_err(|m| err(Some(t.span()), m))?;
            if limits.timeout.is_zero() {
                return Err(err(
                    Some(t.span()),
                    "timeout must be greater than zero".into(),
                ));
            }
        }
        if let Some(m) = l.memory {
            limits.memory = parse_size(m.get_ref()).map_err(|e| err(Some(m.span()), e))?;
            if limits.memory < (1 << 16) {
                return Err(err(
                    Some(m.span()),
                    format!("memory `{}` is below one wasm page (64 KiB)", m.get_ref()),
                ));
            }
        }
        if let Some(f) = l.fuel {
            if *f.get_ref() == 0 {
                return Err(err(
                    Some(f.span()),
                    "fuel must be greater than zero (omit it for unmetered CPU)".into(),
                ));
            }
            limits.fuel = Some(*f.get_ref());
        }
        if let Some(o) = l.max_output {
            limits.max_output = parse_size(o.get_ref()).map_err(|e| err(Some(o.span()), e))?;
        }
        if let Some(c) = l.max_concurrency {
            if *c.get_ref() == 0 {
                return Err(err(
                    Some(c.span()),
                    "max-concurrency must be at least 1".into(),
                ));
            }
            limits.max_concurrency = *c.get_ref();
        }

        // [[fs]]
        let mut fs: Vec<FsGrant> = Vec::new();
        for g in raw.fs {
            let span = g.span();
            let g = g.into_inner();
            check_guest_path(g.guest.get_ref()).map_err(|m| err(Some(g.guest.span()), m))?;
            let mode = match g.mode.get_ref().as_str() {
                "ro" => FsMode::ReadOnly,
                "rw" => FsMode::ReadWrite,
                other => {
                    return Err(err(
                        Some(g.mode.span()),
                        format!("mode `{other}` must be `ro` or `rw`"),
                    ));
                }
            };
            let host = dir.join(g.host.get_ref());
            let host = host.canonicalize().map_err(|e| {
                err(
                    Some(g.host.span()),
                    format!(
                        "host directory `{}` ({}) cannot be granted: {e}",
                        g.host.get_ref(),
                        host.display()
                    ),
                )
            })?;
            if !host.is_dir() {
                return Err(err(
                    Some(g.host.span()),
                    format!("host path `{}` is not a directory", host.display()),
                ));
            }
            if let Some(other) = fs.iter().find(|o| {
                is_prefix_dir(&o.guest, g.guest.get_ref())
                    || is_prefix_dir(g.guest.get_ref(), &o.guest)
            }) {
                return Err(err(
                    Some(span),
                    format!(
                        "guest path `{}` overlaps the grant at `{}`; give each grant its own directory",
                        g.guest.get_ref(),
                        other.guest
                    ),
                ));
            }
            fs.push(FsGrant {
                guest: g.guest.into_inner(),
                host,
                mode,
            });
        }

        // [env]
        let mut env = Vec::new();
        for (k, v) in raw.env.set {
            if !valid_env_name(&k) {
                return Err(err(
                    Some(v.span()),
                    format!("`{k}` is not a valid environment variable name"),
                ));
            }
            env.push((k, v.into_inner()));
        }
        for name in raw.env.pass {
            if !valid_env_name(name.get_ref()) {
                return Err(err(
                    Some(name.span()),
                    format!(
                        "`{}` is not a valid environment variable name",
                        name.get_ref()
                    ),
                ));
            }
            if env.iter().any(|(k, _)| k == name.get_ref()) {
                return Err(err(
                    Some(name.span()),
                    format!(
                        "`{}` is both set and passed through; keep one",
                        name.get_ref()
                    ),
                ));
            }
            if let Ok(v) = std::env::var(name.get_ref()) {
                env.push((name.into_inner(), v));
            }
        }

        // [network]
        let mut network = Vec::new();
        for a in raw.network.allow {
            network.push(HostPattern::parse(a.get_ref()).map_err(|m| err(Some(a.span()), m))?);
        }

        // [client]
        let mut client_requests = Vec::new();
        for r in raw.client.requests {
            let method = match r.get_ref().as_str() {
                "sampling" => "sampling/createMessage",
                "elicitation" => "elicitation/create",
                other => {
                    return Err(err(
                        Some(r.span()),
                        format!(
                            "`{other}` is not a client request a tool may make (use `sampling` or `elicitation`)"
                        ),
                    ));
                }
            };
            client_requests.push(method.to_string());
        }

        Ok(Manifest {
            path: path.to_owned(),
            component,
            sha256,
            limits,
            fs,
            env,
            network,
            client_requests,
        })
    }
}
