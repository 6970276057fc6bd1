//! Tenants in the host config (`[[tenant]]`) and how HTTP callers prove
//! which tenant they are (`[auth]`).
//!
//! A tenant is a [`Scope`] with its own tool set, caps that only narrow the
//! host's, quotas and credentials. Its tools are loaded into its scope as
//! [`Source`]s carrying its caps, so the catalog intersects them with the
//! host config's like any other operator caps: a tenant's settings can
//! never widen a grant.
//!
//! Read as strictly as the rest of the host config (every problem, with its
//! line). Owns no runtime state: the core turns the quotas into quota
//! state on its call path (`quota`), the HTTP front end (`mcp::auth`) the
//! credentials into credential checks.

use crate::caps::limits::SizeText;
use crate::caps::{AllowList, Caps, HostPattern};
use crate::catalog::{Scope, Source};
use crate::config::{FS_KEYS, LIMITS_KEYS, RawEnv, RawFs, RawLimits, RawNetwork, in_range, size};
use crate::diagnostic::{Collector, section};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// One tenant (`[[tenant]]`): a named set of tools, the caps they run
/// under, quotas and credentials.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Tenant {
    /// Its name; also the name of its scope.
    pub name: String,
    /// Its tools.
    pub tools: Vec<TenantTools>,
    /// The host's caps with the tenant's overrides applied. Intersected with
    /// the host's again at load, so an override can only narrow.
    pub caps: Caps,
    /// How much it may run.
    pub quotas: Quotas,
    /// SHA-256 digests of its static API tokens (the tokens are never
    /// stored).
    pub token_sha256: Vec<[u8; 32]>,
}

/// One agent (`[[agent]]`): a tenant without credentials, for the agent
/// transport (`toolhost agent --agent NAME`, [`AgentOptions::from_config`]):
/// its tools, caps and quotas are read like a tenant's, and its subagents
/// each get their own agent's tools, served to them alone.
///
/// Agents are not served over HTTP: nothing authenticates as one.
///
/// [`AgentOptions::from_config`]: crate::agent::AgentOptions::from_config
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AgentEntry {
    /// Its name, tools, caps and quotas (no credentials); its scope is
    /// named after it.
    pub tenant: Tenant,
    /// When a parent agent should hand work to it (as a subagent).
    pub description: Option<String>,
    /// Its system prompt as a subagent.
    pub prompt: Option<String>,
    /// Its model alias or id.
    pub model: Option<String>,
    /// The `[[agent]]`s it may hand work to, each with its own tools.
    pub subagents: Vec<String>,
}

/// Where a tenant's tools come from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TenantTools {
    /// The tool of this name, or every tool of the manifest of this name
    /// (`text` for `text.toml`), among the server's own tool sources
    /// (`--tools`).
    Named(String),
    /// Every tool of a directory, manifest or `.wasm` (relative to the
    /// config file).
    Path(PathBuf),
}

/// A tenant's quotas; `None`: unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Quotas {
    /// Calls of this tenant running at once.
    pub max_concurrent: Option<u32>,
    /// Calls this tenant may start per minute (a burst of up to this many,
    /// then refilled evenly).
    pub calls_per_minute: Option<u32>,
    /// Bytes of call results per minute (text, data and structured
    /// result, as [`ToolOutput::size`](crate::ToolOutput::size) counts
    /// them; a budget of this many,
    /// refilled evenly; a call that overdraws it completes, and the next
    /// waits until the budget is positive again).
    pub output_bytes_per_minute: Option<u64>,
    /// Units of fuel (wasm CPU work, as `limits.fuel` counts it) this
    /// tenant's calls may burn per minute (a budget of this many, refilled
    /// evenly; the call that overdraws it completes or is stopped by its own
    /// limits, and the next waits until the budget is positive again).
    pub fuel_per_minute: Option<u64>,
    /// 2025-11-25 HTTP sessions this tenant holds open on one server at
    /// once (`initialize`s, and sessions a replica restores from their id);
    /// `None`: the server's default
    /// ([`HttpOptions::max_sessions`](crate::mcp::HttpOptions::max_sessions)).
    pub max_sessions: Option<u32>,
    /// HTTP requests of this tenant in progress on one server at once, from
    /// the moment its credential is checked until its response (a stream
    /// included) ends; `None`: the server's default
    /// ([`HttpOptions::max_open_requests`](crate::mcp::HttpOptions::max_open_requests)).
    pub max_open_requests: Option<u32>,
    /// Bytes of HTTP request bodies this tenant's requests hold on one
    /// server at once, from the first byte read until the response ends;
    /// `None`: the server's default
    /// ([`HttpOptions::max_request_bytes`](crate::mcp::HttpOptions::max_request_bytes)).
    pub max_request_bytes: Option<u64>,
}

/// How HTTP callers authenticate (`[auth]`).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct AuthConfig {
    /// This server's resource identifier (its canonical MCP URL), for the
    /// protected-resource metadata; default `http://ADDR/mcp`.
    pub resource: Option<String>,
    /// Authorization servers that issue tokens for it, as advertised in the
    /// protected-resource metadata.
    pub authorization_servers: Vec<String>,
    /// OAuth bearer JWTs (`[auth.jwt]`).
    pub jwt: Option<JwtConfig>,
}

/// Bearer JWTs accepted as an OAuth 2.1 resource server (`[auth.jwt]`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct JwtConfig {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry (this server's resource).
    pub audience: String,
    /// A JWKS file (JSON) with the issuer's public keys.
    pub jwks_file: PathBuf,
    /// The claim naming the tenant (default `tenant`).
    pub tenant_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// The tenants a JWT may select (`tenants = [...]`); `None`: every
    /// tenant. Name only the tenants whose users the issuer vouches for: a
    /// tenant meant for static tokens should not be reachable by whoever
    /// can get the issuer to put its name in the claim.
    pub tenants: Option<Vec<String>>,
}

impl Tenant {
    /// The scope its tools go into.
    pub fn scope(&self) -> Scope {
        Scope::new(&self.name)
    }

    /// Its tool sources: path entries as they are, named tools from each of
    /// the server's own sources `base` (only those names). Each carries the
    /// tenant's caps.
    pub fn sources(&self, base: &[PathBuf]) -> Vec<Source> {
        let scope = self.scope();
        let names: Vec<String> = self
            .tools
            .iter()
            .filter_map(|t| match t {
                TenantTools::Named(n) => Some(n.clone()),
                TenantTools::Path(_) => None,
            })
            .collect();
        let mut out = Vec::new();
        if !names.is_empty() {
            for b in base {
                out.push(
                    Source::new(scope.clone(), b)
                        .with_caps(self.caps.clone())
                        .only_tools(names.clone()),
                );
            }
        }
        for t in &self.tools {
            if let TenantTools::Path(p) = t {
                out.push(Source::new(scope.clone(), p).with_caps(self.caps.clone()));
            }
        }
        out
    }
}

const TENANT_KEYS: &str = "name, tools, token-sha256, max-concurrent, max-sessions, max-open-requests, max-request-bytes, calls-per-minute, output-bytes-per-minute, fuel-per-minute, [tenant.limits], [tenant.fs], [tenant.network], [tenant.env]";
const AGENT_KEYS: &str = "name, tools, description, prompt, model, subagents, max-concurrent, calls-per-minute, output-bytes-per-minute, fuel-per-minute, [agent.limits], [agent.fs], [agent.network], [agent.env]";
const AUTH_KEYS: &str = "resource, authorization-servers, [auth.jwt]";
const JWT_KEYS: &str = "issuer, audience, jwks-file, tenant-claim, leeway, tenants";

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTenant {
    name: Spanned<String>,
    tools: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    token_sha256: Vec<Spanned<String>>,
    max_concurrent: Option<Spanned<u32>>,
    calls_per_minute: Option<Spanned<u32>>,
    output_bytes_per_minute: Option<Spanned<SizeText>>,
    fuel_per_minute: Option<Spanned<u64>>,
    // `[[tenant]]` only (refused in an `[[agent]]`: agents are not served
    // over HTTP):
    max_sessions: Option<Spanned<u32>>,
    max_open_requests: Option<Spanned<u32>>,
    max_request_bytes: Option<Spanned<SizeText>>,
    // `[[agent]]` only (refused in a `[[tenant]]`):
    description: Option<Spanned<String>>,
    prompt: Option<Spanned<String>>,
    model: Option<Spanned<String>>,
    subagents: Option<Spanned<Vec<Spanned<String>>>>,
}

/// One `[[tenant]]` or `[[agent]]` as read, applied once the host's caps
/// are known.
struct Pending {
    raw: RawTenant,
    /// An `[[agent]]`.
    agent: bool,
    limits: Option<RawLimits>,
    fs: Option<RawFs>,
    network: Option<RawNetwork>,
    env: Option<RawEnv>,
}

/// The `[[tenant]]` and `[[agent]]` entries of a config file while it is
/// read.
#[derive(Default)]
pub(crate) struct RawTenants {
    pending: Vec<Pending>,
}

impl RawTenants {
    /// Read the `tenant` (or, `agent` true, the `agent`) key: an array of
    /// tables.
    pub(crate) fn collect(
        &mut self,
        value: &Spanned<toml::de::DeValue<'_>>,
        agent: bool,
        cx: &mut Collector<'_>,
    ) {
        let what = if agent { "agent" } else { "tenant" };
        let toml::de::DeValue::Array(items) = value.get_ref() else {
            cx.error(
                Some(value.span()),
                format!("`{what}` must be an array of tables"),
                Some(format!("write each {what} as `[[{what}]]`")),
            );
            return;
        };
        for item in items.iter() {
            let toml::de::DeValue::Table(t) = item.get_ref() else {
                cx.error(Some(item.span()), format!("a {what} must be a table"), None);
                continue;
            };
            // The nested sections are read on their own, so an unknown key
            // in them is reported at its line like a top-level one.
            let mut flat = item.clone();
            let mut limits = None;
            let mut fs = None;
            let mut network = None;
            let mut env = None;
            for (k, v) in t.iter() {
                match k.get_ref().as_ref() {
                    "limits" => limits = section::<RawLimits>(cx, v, LIMITS_KEYS),
                    "fs" => fs = section::<RawFs>(cx, v, FS_KEYS),
                    "network" => network = section::<RawNetwork>(cx, v, "allow"),
                    "env" => env = section::<RawEnv>(cx, v, "pass"),
                    _ => continue,
                }
                if let toml::de::DeValue::Table(ft) = flat.get_mut() {
                    ft.remove(k);
                }
            }
            let keys = if agent { AGENT_KEYS } else { TENANT_KEYS };
            let read = section::<RawTenant>(cx, &flat, keys);
            if let Some(raw) = read {
                self.pending.push(Pending {
                    raw,
                    agent,
                    limits,
                    fs,
                    network,
                    env,
                });
            }
        }
    }

    /// Check every tenant and agent against the host's `caps` and `auth`.
    pub(crate) fn finish(
        self,
        caps: &Caps,
        auth: &AuthConfig,
        dir: &Path,
        cx: &mut Collector<'_>,
    ) -> (Vec<Tenant>, Vec<AgentEntry>) {
        let mut out: Vec<Tenant> = Vec::new();
        let mut agents: Vec<AgentEntry> = Vec::new();
        // Every token digest: a token identifies one tenant.
        let mut digests: Vec<[u8; 32]> = Vec::new();
        // Every name, tenant or agent: they share the scopes' namespace.
        let mut names: Vec<String> = Vec::new();
        let mut subagents: Vec<(String, Vec<Spanned<String>>)> = Vec::new();
        for p in self.pending {
            let Pending {
                raw: r,
                agent,
                limits,
                fs,
                network,
                env,
            } = p;
            let name = r.name.get_ref().clone();
            let what = if agent { "agent" } else { "tenant" };
            r.refuse_the_other_kinds_keys(agent, cx);
            check_name(&r.name, what, &names, cx);
            names.push(name.clone());
            let tools = read_tools(&r.tools, what, &name, dir, cx);
            let token_sha256 = read_tokens(&r.token_sha256, &mut digests, cx);
            r.check_credentials(agent, &token_sha256, auth, cx);
            let quotas = r.quotas(cx);
            let mut c = caps.clone();
            if let Some(l) = limits {
                l.apply(&mut c.limits, cx);
            }
            if let Some(f) = fs {
                f.apply(&mut c, dir, cx);
            }
            if let Some(n) = network {
                c.net.allow = AllowList::only(read_hosts(n, cx));
            }
            if let Some(e) = env {
                c.env.pass = AllowList::only(e.pass);
            }
            let tenant = Tenant {
                name,
                tools,
                // The host's caps first, then the tenant's: never wider
                // than either, whatever the tenant's section says.
                caps: caps.intersect(&c),
                quotas,
                token_sha256,
            };
            if agent {
                let subs = r.subagents.map(|s| s.into_inner()).unwrap_or_default();
                subagents.push((tenant.name.clone(), subs.clone()));
                agents.push(AgentEntry {
                    tenant,
                    description: r.description.map(|v| v.into_inner()),
                    prompt: r.prompt.map(|v| v.into_inner()),
                    model: r.model.map(|v| v.into_inner()),
                    subagents: subs.into_iter().map(|s| s.into_inner()).collect(),
                });
            } else {
                out.push(tenant);
            }
        }
        check_subagents(subagents, &agents, cx);
        (out, agents)
    }
}

impl RawTenant {
    /// Report the keys of an `[[agent]]` in a `[[tenant]]` (`agent`
    /// false), or those of a `[[tenant]]` in an `[[agent]]`.
    fn refuse_the_other_kinds_keys(&self, agent: bool, cx: &mut Collector<'_>) {
        type Keys<'a> = Vec<(&'a str, Option<std::ops::Range<usize>>)>;
        let (keys, message, allowed): (Keys<'_>, &str, &str) = if agent {
            (
                vec![
                    ("max-sessions", self.max_sessions.as_ref().map(|v| v.span())),
                    (
                        "max-open-requests",
                        self.max_open_requests.as_ref().map(|v| v.span()),
                    ),
                    (
                        "max-request-bytes",
                        self.max_request_bytes.as_ref().map(|v| v.span()),
                    ),
                ],
                "bounds a `[[tenant]]`'s HTTP clients; an `[[agent]]` is not served over HTTP",
                AGENT_KEYS,
            )
        } else {
            (
                vec![
                    ("description", self.description.as_ref().map(|v| v.span())),
                    ("prompt", self.prompt.as_ref().map(|v| v.span())),
                    ("model", self.model.as_ref().map(|v| v.span())),
                    ("subagents", self.subagents.as_ref().map(|v| v.span())),
                ],
                "is a key of `[[agent]]`, not of `[[tenant]]`",
                TENANT_KEYS,
            )
        };
        for (key, span) in keys {
            if let Some(span) = span {
                cx.error(
                    Some(span),
                    format!("`{key}` {message}"),
                    Some(format!("allowed here: {allowed}")),
                );
            }
        }
    }

    /// A tenant needs a credential (a token, or JWTs); an agent, which is
    /// not served over HTTP, must have none.
    fn check_credentials(
        &self,
        agent: bool,
        tokens: &[[u8; 32]],
        auth: &AuthConfig,
        cx: &mut Collector<'_>,
    ) {
        let name = self.name.get_ref();
        if agent {
            if let Some(h) = self.token_sha256.first() {
                cx.error(
                    Some(h.span()),
                    format!("agent `{name}` has a credential, but agents are not served over HTTP"),
                    Some("make it a `[[tenant]]` to serve its tools over HTTP".into()),
                );
            }
        } else if tokens.is_empty() && auth.jwt.is_none() {
            cx.error(
                Some(self.name.span()),
                format!("tenant `{name}` has no credential: no one could call its tools"),
                Some("add `token-sha256 = [...]`, or configure `[auth.jwt]`".into()),
            );
        }
    }

    /// The quotas, each checked against its range.
    fn quotas(&self, cx: &mut Collector<'_>) -> Quotas {
        let mut quotas = Quotas::default();
        if let Some(n) = &self.max_concurrent {
            quotas.max_concurrent = in_range(n, 1, 100_000, "max-concurrent", cx);
        }
        if let Some(n) = &self.max_sessions {
            quotas.max_sessions = in_range(n, 1, 1_000_000, "max-sessions", cx);
        }
        if let Some(n) = &self.max_open_requests {
            quotas.max_open_requests = in_range(n, 1, 1_000_000, "max-open-requests", cx);
        }
        if let Some(n) = &self.calls_per_minute {
            quotas.calls_per_minute = in_range(n, 1, 1_000_000, "calls-per-minute", cx);
        }
        if let Some(b) = &self.output_bytes_per_minute {
            quotas.output_bytes_per_minute = size(b, 1, 1 << 40, cx);
        }
        if let Some(b) = &self.max_request_bytes {
            quotas.max_request_bytes = size(b, 1 << 10, 1 << 40, cx);
        }
        if let Some(f) = &self.fuel_per_minute {
            let n = *f.get_ref();
            if (1_000..=FUEL_PER_MINUTE_MAX).contains(&n) {
                quotas.fuel_per_minute = Some(n);
            } else {
                cx.error(
                    Some(f.span()),
                    format!("fuel-per-minute must be between 1000 and {FUEL_PER_MINUTE_MAX}"),
                    Some("a second of a busy guest burns about 10^9 units".into()),
                );
            }
        }
        quotas
    }
}

/// A tenant's or agent's name: valid, not `default`, not taken.
fn check_name(name: &Spanned<String>, what: &str, taken: &[String], cx: &mut Collector<'_>) {
    let n = name.get_ref();
    if !valid_name(n) {
        cx.error(
            Some(name.span()),
            format!("{what} name `{n}` must be 1-64 letters, digits, `-`, `_` or `.`"),
            None,
        );
    } else if n == "default" {
        cx.error(
            Some(name.span()),
            "`default` is the scope of the server's own `--tools`",
            Some(format!("give the {what} another name")),
        );
    } else if taken.contains(n) {
        cx.error(
            Some(name.span()),
            format!("`{n}` is defined twice (tenant and agent names share one namespace: each is a scope)"),
            None,
        );
    }
}

/// The `tools` of tenant or agent `name`: tool names, or paths (relative
/// to `dir`) that exist.
fn read_tools(
    tools: &Spanned<Vec<Spanned<String>>>,
    what: &str,
    name: &str,
    dir: &Path,
    cx: &mut Collector<'_>,
) -> Vec<TenantTools> {
    if tools.get_ref().is_empty() {
        cx.error(
            Some(tools.span()),
            format!("{what} `{name}` has no tools"),
            Some("list tool names, or tool directories and manifests".into()),
        );
    }
    let mut out = Vec::new();
    for t in tools.get_ref() {
        let s = t.get_ref();
        let is_path = s.contains('/') || s.ends_with(".toml") || s.ends_with(".wasm");
        if is_path {
            let p = dir.join(s);
            if p.exists() {
                out.push(TenantTools::Path(p));
            } else {
                cx.error(
                    Some(t.span()),
                    format!("tools `{s}` ({}): no such file or directory", p.display()),
                    None,
                );
            }
        } else if valid_tool_name(s) {
            out.push(TenantTools::Named(s.clone()));
        } else {
            cx.error(
                Some(t.span()),
                format!("`{s}` is neither a tool name nor a path"),
                Some("paths contain `/` or end in `.toml` or `.wasm`".into()),
            );
        }
    }
    out
}

/// The token digests of one tenant, each 64 hex digits and not among
/// `seen` (another tenant's, or listed twice); added to `seen`.
fn read_tokens(
    tokens: &[Spanned<String>],
    seen: &mut Vec<[u8; 32]>,
    cx: &mut Collector<'_>,
) -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    for h in tokens {
        let mut d = [0u8; 32];
        match hex::decode_to_slice(h.get_ref(), &mut d) {
            Ok(()) if seen.contains(&d) => cx.error(
                Some(h.span()),
                "this token digest is listed twice",
                Some("a token identifies one tenant: give each its own".into()),
            ),
            Ok(()) => {
                seen.push(d);
                out.push(d);
            }
            Err(_) => cx.error(
                Some(h.span()),
                "`token-sha256` entries must be 64 hex digits (the SHA-256 of the token)",
                Some("e.g. `printf %s \"$TOKEN\" | sha256sum`".into()),
            ),
        }
    }
    out
}

/// The hosts of a `[tenant.network]` allow-list that parse.
fn read_hosts(n: RawNetwork, cx: &mut Collector<'_>) -> Vec<HostPattern> {
    let mut ok = Vec::new();
    for a in n.allow {
        match HostPattern::parse(a.get_ref()) {
            Ok(p) => ok.push(p),
            Err(e) => cx.error(Some(a.span()), e.to_string(), None),
        }
    }
    ok
}

/// Each agent's subagents: other `[[agent]]`s of the file, each named
/// once.
fn check_subagents(
    subagents: Vec<(String, Vec<Spanned<String>>)>,
    agents: &[AgentEntry],
    cx: &mut Collector<'_>,
) {
    for (parent, subs) in subagents {
        let mut seen = Vec::new();
        for s in subs {
            let n = s.get_ref();
            if *n == parent {
                cx.error(
                    Some(s.span()),
                    format!("agent `{parent}` names itself as a subagent"),
                    None,
                );
            } else if !agents.iter().any(|a| a.tenant.name == *n) {
                cx.error(
                    Some(s.span()),
                    format!(
                        "subagent `{n}` of agent `{parent}` is not an `[[agent]]` of this file"
                    ),
                    Some("define it as an `[[agent]]` with its own tools".into()),
                );
            } else if !is_sdk_server_name(n) {
                cx.error(
                    Some(s.span()),
                    format!("subagent `{n}`: a subagent's tools are served under its name, which must use only A-Z a-z 0-9 _ -, not contain `__`, and not start or end with `_`"),
                    Some("rename the agent".into()),
                );
            } else if n == SDK_SERVER {
                cx.error(
                    Some(s.span()),
                    format!("a subagent cannot be named `{SDK_SERVER}`: that is the name its parent's tools are served under"),
                    Some("rename the agent".into()),
                );
            } else if seen.contains(n) {
                cx.error(
                    Some(s.span()),
                    format!("subagent `{n}` is listed twice"),
                    None,
                );
            }
            seen.push(n.clone());
        }
    }
}

/// The SDK server name an agent's own tools are served under (each
/// subagent's under the subagent's name).
pub(crate) const SDK_SERVER: &str = "tools";

/// Whether `name` can name an SDK server (a subagent's is its name). The
/// CLI names tools `mcp__SERVER__TOOL` after rewriting every character
/// outside [A-Za-z0-9_-] to `_`; a name it would rewrite could collide with
/// another server's, and the host's isolation check compares the rewritten
/// name. So only names it keeps as they are, with no `__` in them and no
/// `_` at either end: in `mcp__helper___x` the server could be `helper` or
/// `helper_`.
pub(crate) fn is_sdk_server_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains("__")
        && !name.starts_with('_')
        && !name.ends_with('_')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The largest `fuel-per-minute`: about a day of one busy core.
const FUEL_PER_MINUTE_MAX: u64 = 100_000_000_000_000;

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn valid_tool_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawAuth {
    resource: Option<Spanned<String>>,
    #[serde(default)]
    authorization_servers: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawJwt {
    issuer: Spanned<String>,
    audience: Spanned<String>,
    jwks_file: Spanned<String>,
    tenant_claim: Option<Spanned<String>>,
    leeway: Option<Spanned<String>>,
    tenants: Option<Vec<String>>,
}

/// Read `[auth]` (and `[auth.jwt]` in it).
pub(crate) fn parse_auth(
    value: &Spanned<toml::de::DeValue<'_>>,
    dir: &Path,
    cx: &mut Collector<'_>,
) -> AuthConfig {
    let mut out = AuthConfig::default();
    let toml::de::DeValue::Table(t) = value.get_ref() else {
        cx.error(Some(value.span()), "`auth` must be a table", None);
        return out;
    };
    let mut flat = value.clone();
    for (k, v) in t.iter() {
        if k.get_ref().as_ref() != "jwt" {
            continue;
        }
        if let toml::de::DeValue::Table(ft) = flat.get_mut() {
            ft.remove(k);
        }
        let Some(j) = section::<RawJwt>(cx, v, JWT_KEYS) else {
            continue;
        };
        let jwks_file = dir.join(j.jwks_file.get_ref());
        if let Err(e) = std::fs::metadata(&jwks_file) {
            cx.error(
                Some(j.jwks_file.span()),
                format!("JWKS file {}: {e}", jwks_file.display()),
                None,
            );
        }
        for s in [&j.issuer, &j.audience] {
            if s.get_ref().is_empty() {
                cx.error(Some(s.span()), "must not be empty", None);
            }
        }
        let leeway = match &j.leeway {
            None => Duration::from_secs(30),
            Some(l) => match crate::caps::limits::parse_duration(l.get_ref()) {
                Ok(d) if d <= Duration::from_secs(600) => d,
                Ok(_) => {
                    cx.error(Some(l.span()), "leeway must be at most 10m", None);
                    Duration::ZERO
                }
                Err(e) => {
                    cx.error(Some(l.span()), e, None);
                    Duration::ZERO
                }
            },
        };
        out.jwt = Some(JwtConfig {
            issuer: j.issuer.into_inner(),
            audience: j.audience.into_inner(),
            jwks_file,
            tenant_claim: j
                .tenant_claim
                .map(|c| c.into_inner())
                .unwrap_or_else(|| "tenant".into()),
            leeway,
            tenants: j.tenants,
        });
    }
    if let Some(raw) = section::<RawAuth>(cx, &flat, AUTH_KEYS) {
        out.resource = raw.resource.map(|r| r.into_inner());
        out.authorization_servers = raw
            .authorization_servers
            .into_iter()
            .map(|s| s.into_inner())
            .collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::HostConfig;
    use std::path::Path;

    fn digest(token: &str) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    #[test]
    fn tenants_read_with_narrowed_caps_quotas_and_hashed_tokens() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::create_dir(dir.path().join("tools-b")).unwrap();
        let cfg = dir.path().join("toolhost.toml");
        let text = format!(
            "[limits]\ntimeout = \"20s\"\n\n[[tenant]]\nname = \"alpha\"\ntools = [\"echo\", \"files\"]\ntoken-sha256 = [\"{}\"]\nmax-concurrent = 2\nmax-sessions = 8\nmax-open-requests = 16\nmax-request-bytes = \"8 MiB\"\ncalls-per-minute = 30\noutput-bytes-per-minute = \"1 MiB\"\nfuel-per-minute = 5000000000\n[tenant.limits]\ntimeout = \"5s\"\n[tenant.fs]\nroots = [\"a\"]\n\n[[tenant]]\nname = \"beta\"\ntools = [\"tools-b/\"]\ntoken-sha256 = [\"{}\"]\n[tenant.limits]\ntimeout = \"1h\"\n",
            digest("ta"),
            digest("tb")
        );
        let c = HostConfig::parse(&cfg, &text).unwrap_or_else(|e| panic!("{}", e.render()));
        assert_eq!(c.tenants.len(), 2);
        let a = &c.tenants[0];
        assert_eq!(a.name, "alpha");
        assert_eq!(
            a.tools,
            vec![
                super::TenantTools::Named("echo".into()),
                super::TenantTools::Named("files".into())
            ]
        );
        assert_eq!(a.quotas.max_concurrent, Some(2));
        assert_eq!(a.quotas.max_sessions, Some(8));
        assert_eq!(a.quotas.max_open_requests, Some(16));
        assert_eq!(a.quotas.max_request_bytes, Some(8 << 20));
        assert_eq!(c.tenants[1].quotas.max_sessions, None);
        assert_eq!(a.quotas.calls_per_minute, Some(30));
        assert_eq!(a.quotas.output_bytes_per_minute, Some(1 << 20));
        assert_eq!(a.quotas.fuel_per_minute, Some(5_000_000_000));
        assert_eq!(a.caps.limits.max.timeout.as_secs(), 5);
        let root = dir.path().join("a").canonicalize().unwrap();
        assert!(a.caps.fs.roots.allows(|r| *r == root));
        assert_eq!(hex::encode(a.token_sha256[0]), digest("ta"));
        // A tenant cannot raise what the host allows.
        assert_eq!(c.tenants[1].caps.limits.max.timeout.as_secs(), 20);
        assert!(matches!(
            &c.tenants[1].tools[0],
            super::TenantTools::Path(p) if p.ends_with("tools-b/")
        ));
    }

    #[test]
    fn a_tenants_roots_narrow_the_hosts_and_never_replace_them() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["x", "y"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        let text = format!(
            "[fs]\nroots = [\"x\"]\n[network]\nallow = [\"a.example\"]\n[[tenant]]\nname = \"t\"\ntools = [\"echo\"]\ntoken-sha256 = [\"{}\"]\n[tenant.fs]\nroots = [\"y\"]\n[tenant.network]\nallow = [\"b.example\"]\n",
            digest("t")
        );
        let c = HostConfig::parse(&dir.path().join("h.toml"), &text).unwrap();
        let t = &c.tenants[0];
        let x = dir.path().join("x").canonicalize().unwrap();
        let y = dir.path().join("y").canonicalize().unwrap();
        // Under both the host's roots and the tenant's: here, nowhere.
        assert!(!t.caps.fs.roots.allows(|r| *r == y));
        assert!(!t.caps.fs.roots.allows(|r| *r == x));
        assert_eq!(t.caps.fs.roots.lists()[0], vec![x]);
        assert!(!t.caps.net.allow.allows(|p| p.to_string() == "b.example"));
    }

    #[test]
    fn every_tenant_problem_is_reported_with_its_line() {
        let text = format!(
            "[[tenant]]\nname = \"a b\"\ntools = [\"echo\"]\ntoken-sha256 = [\"zz\"]\nmax-concurent = 3\n[tenant.limits]\ntimeout = \"1s\"\nfuel = 0\n[tenant.fs]\nrootz = []\n\n[[tenant]]\nname = \"c\"\ntools = []\ntoken-sha256 = [\"{d}\", \"{d}\"]\ncalls-per-minute = 0\nfuel-per-minute = 10\n\n[[tenant]]\nname = \"nocred\"\ntools = [\"./missing\"]\n\n[auth]\nresourse = \"x\"\n",
            d = digest("t")
        );
        let e = HostConfig::parse(Path::new("/nonexistent/t.toml"), &text).unwrap_err();
        let lines: Vec<usize> = e.items.iter().map(|d| d.line.unwrap()).collect();
        assert_eq!(
            lines,
            vec![2, 2, 4, 5, 8, 10, 14, 15, 16, 17, 20, 21, 24],
            "{}",
            e.render()
        );
        let all = e.render();
        assert!(all.contains("unknown key `max-concurent`"), "{all}");
        assert!(all.contains("listed twice"), "{all}");
        assert!(all.contains("no credential"), "{all}");
        assert!(all.contains("fuel-per-minute must be between"), "{all}");
    }

    #[test]
    fn agents_read_like_tenants_without_credentials_and_name_real_subagents() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("research")).unwrap();
        let cfg = dir.path().join("toolhost.toml");
        let text = "[[agent]]\nname = \"main\"\ntools = [\"echo\"]\nsubagents = [\"researcher\"]\nmodel = \"sonnet\"\nprompt = \"You lead.\"\nmax-concurrent = 4\n[agent.limits]\ntimeout = \"5s\"\n\n[[agent]]\nname = \"researcher\"\ntools = [\"research/\"]\ndescription = \"Looks things up\"\nprompt = \"You research.\"\n";
        let c = HostConfig::parse(&cfg, text).unwrap_or_else(|e| panic!("{}", e.render()));
        assert!(c.tenants.is_empty());
        assert_eq!(c.agents.len(), 2);
        let main = &c.agents[0];
        assert_eq!(main.tenant.name, "main");
        assert_eq!(main.subagents, ["researcher"]);
        assert_eq!(main.model.as_deref(), Some("sonnet"));
        assert_eq!(main.tenant.quotas.max_concurrent, Some(4));
        assert_eq!(main.tenant.caps.limits.max.timeout.as_secs(), 5);
        assert_eq!(c.agents[1].description.as_deref(), Some("Looks things up"));
        // Each agent's tools go into its own scope.
        let scopes: Vec<String> = c
            .sources(&[dir.path().to_path_buf()])
            .iter()
            .map(|s| s.scope.as_str().to_string())
            .collect();
        assert_eq!(scopes, ["main", "researcher"]);
        // What the agent transport makes of it.
        let o = crate::agent::AgentOptions::from_config(&c, "main").unwrap();
        let servers: Vec<(&str, &str)> = o
            .servers
            .iter()
            .map(|s| (s.name.as_str(), s.scope.as_str()))
            .collect();
        assert_eq!(servers, [("tools", "main"), ("researcher", "researcher")]);
        assert_eq!(o.agents["researcher"].servers, ["researcher"]);
        assert_eq!(o.agents["researcher"].prompt, "You research.");
        assert_eq!(o.system_prompt.as_deref(), Some("You lead."));
        assert_eq!(o.allowed_tools, ["mcp__tools", "mcp__researcher"]);
        let Err(e) = crate::agent::AgentOptions::from_config(&c, "nobody") else {
            panic!("an unknown agent was found");
        };
        assert!(
            e.to_string().contains("its agents: main, researcher"),
            "{e}"
        );
    }

    #[test]
    fn agent_and_tenant_entries_refuse_each_others_keys_and_bad_subagents() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("toolhost.toml");
        let text = format!(
            "[[tenant]]\nname = \"t\"\ntools = [\"echo\"]\ntoken-sha256 = [\"{}\"]\nprompt = \"no\"\n\n[[agent]]\nname = \"a\"\ntools = [\"echo\"]\ntoken-sha256 = [\"{}\"]\nsubagents = [\"a\", \"ghost\", \"t\"]\nmax-sessions = 3\n\n[[agent]]\nname = \"t\"\ntools = [\"echo\"]\n",
            digest("t1"),
            digest("a1")
        );
        let e = HostConfig::parse(&cfg, &text).unwrap_err();
        let msgs: Vec<(Option<usize>, String)> = e
            .items
            .iter()
            .map(|d| (d.line, d.message.clone()))
            .collect();
        let has = |line: usize, what: &str| {
            msgs.iter()
                .any(|(l, m)| *l == Some(line) && m.contains(what))
        };
        assert!(has(5, "`prompt` is a key of `[[agent]]`"), "{msgs:?}");
        assert!(has(10, "agents are not served over HTTP"), "{msgs:?}");
        assert!(has(11, "names itself"), "{msgs:?}");
        assert!(
            has(12, "`max-sessions` bounds a `[[tenant]]`'s HTTP clients"),
            "{msgs:?}"
        );
        assert!(
            has(11, "`ghost` of agent `a` is not an `[[agent]]`"),
            "{msgs:?}"
        );
        // Whichever of the two comes second is the one reported.
        assert!(
            has(2, "`t` is defined twice") || has(15, "`t` is defined twice"),
            "{msgs:?}"
        );
    }

    #[test]
    fn a_subagent_whose_name_cannot_name_its_sdk_server_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("toolhost.toml");
        let text = "[[agent]]\nname = \"main\"\ntools = [\"echo\"]\nsubagents = [\"helper_\", \"a.b\", \"ok-one\"]\n\n[[agent]]\nname = \"helper_\"\ntools = [\"echo\"]\n\n[[agent]]\nname = \"a.b\"\ntools = [\"echo\"]\n\n[[agent]]\nname = \"ok-one\"\ntools = [\"echo\"]\n";
        let e = HostConfig::parse(&cfg, text).unwrap_err();
        let msgs: Vec<String> = e.items.iter().map(|d| d.message.clone()).collect();
        for bad in ["helper_", "a.b"] {
            assert!(
                msgs.iter().any(|m| m.contains(&format!("subagent `{bad}`"))
                    && m.contains("start or end with `_`")),
                "{msgs:?}"
            );
        }
        assert_eq!(msgs.len(), 2, "{msgs:?}");
    }
}
