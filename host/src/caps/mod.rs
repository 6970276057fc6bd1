//! Capability units. Everything a tool can be granted is one module here
//! that owns the whole life of that grant (the idea of Spin's "factors"):
//!
//! 1. **parse** the manifest's section for it, strictly (`parse`);
//! 2. **narrow** by the operator: the host config's caps, and a tenant's,
//!    intersected; the result is never wider than any input, and this is
//!    the one place that decides it;
//! 3. **prepare** once at load: open directories, resolve variables, build
//!    allow-lists (`prepare`);
//! 4. **apply** per call: hand the prepared capability to the new store,
//!    cheaply;
//! 5. **enforce** at run time: the host-side checks (the network gate,
//!    budgets, the memory limiter).
//!
//! | unit | manifest | operator (host config) |
//! |---|---|---|
//! | [`limits`](Limits) | `[limits]` | `[limits]` maxima, handles, pool share |
//! | `fs` | `[[fs]]` | `[fs]` roots, `deny-rw`, quotas |
//! | `env` | `[env]` | `[env] pass` |
//! | `net` | `[network]` | `[network] allow` |
//! | `client` | `[client]` | `[client]` requests, `max-tokens`, `max-requests` |
//! | `stdio` | — | `[output]` |
//!
//! Unit tests for each run without a compiled guest; the hostile components
//! in `example-tools/hostile` test them end to end.
//!
//! Must not touch: the call path (`core`) or any front end.

pub(crate) mod client;
pub(crate) mod env;
pub(crate) mod fs;
pub(crate) mod limits;
pub(crate) mod net;
pub(crate) mod stdio;

pub use client::{ClientCaps, ClientRequestKind};
pub use env::{EnvCaps, EnvRequest};
pub use fs::{FsCaps, FsMode, FsRequest};
pub use limits::{LimitCaps, Limits, parse_size};
pub use net::{HostPattern, NetCaps, NetRequest, PatternError, PortPattern};
pub use stdio::StdioCaps;

use crate::manifest::Manifest;
use std::fmt;

/// An operator allow-list, possibly the intersection of several (host
/// config, tenant): a thing is allowed when **every** list allows it. With
/// no list, everything is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList<T> {
    lists: Vec<Vec<T>>,
}

impl<T> Default for AllowList<T> {
    fn default() -> Self {
        AllowList { lists: Vec::new() }
    }
}

impl<T: Clone> AllowList<T> {
    /// No restriction.
    pub fn any() -> Self {
        AllowList { lists: Vec::new() }
    }

    /// Whether it allows anything (no list: the operator set no cap).
    pub(crate) fn is_any(&self) -> bool {
        self.lists.is_empty()
    }

    /// Only these (an empty list allows nothing).
    pub fn only(items: impl IntoIterator<Item = T>) -> Self {
        AllowList {
            lists: vec![items.into_iter().collect()],
        }
    }

    /// Allowed by both.
    pub fn intersect(&self, other: &AllowList<T>) -> Self {
        AllowList {
            lists: self.lists.iter().chain(&other.lists).cloned().collect(),
        }
    }

    /// Whether every list has an item for which `f` holds.
    pub fn allows(&self, f: impl Fn(&T) -> bool) -> bool {
        self.lists.iter().all(|l| l.iter().any(&f))
    }

    /// Whether any list restricts anything.
    pub fn is_restricted(&self) -> bool {
        !self.lists.is_empty()
    }

    /// The lists, outermost (host config) first.
    pub fn lists(&self) -> &[Vec<T>] {
        &self.lists
    }
}

impl<T> AllowList<T> {
    /// `any`, `a, b`, or `a, b (and, of those, c)` for an intersection,
    /// each item shown by `show`.
    pub fn describe(&self, show: impl Fn(&T) -> String) -> String {
        if self.lists.is_empty() {
            return "any".into();
        }
        let mut out = String::new();
        for (i, l) in self.lists.iter().enumerate() {
            if i > 0 {
                out.push_str(" (and, of those, ");
            }
            if l.is_empty() {
                out.push_str("nothing");
            }
            let items: Vec<String> = l.iter().map(&show).collect();
            out.push_str(&items.join(", "));
        }
        for _ in 1..self.lists.len() {
            out.push(')');
        }
        out
    }
}

impl<T: fmt::Display> fmt::Display for AllowList<T> {
    /// `any`, `a, b`, or `a, b (and, of those, c)` for an intersection.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(|x| x.to_string()))
    }
}

/// The operator's caps on every unit: what any tool may be granted at most.
/// The host config holds one; a tenant's overrides are intersected with it
/// ([`Caps::intersect`]), never the other way round.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct Caps {
    /// Largest limits and per-call host resources.
    pub limits: LimitCaps,
    /// Directory grants.
    pub fs: FsCaps,
    /// Passed environment variables.
    pub env: EnvCaps,
    /// Outbound hosts.
    pub net: NetCaps,
    /// Requests to the calling client.
    pub client: ClientCaps,
    /// Captured output and events.
    pub stdio: StdioCaps,
}

impl Caps {
    /// What manifest `m` asks for that no cap of the operator's bounds (a
    /// unit whose allow-list allows anything), shown as a manifest writes
    /// it: a manifest is its author's word, and a vendor's `/etc` or an
    /// `AWS_SECRET_ACCESS_KEY` granted without a word (no host config, as
    /// in the README's first commands) was found by the user review.
    pub(crate) fn uncapped(&self, m: &Manifest) -> Vec<String> {
        let mut out = Vec::new();
        if self.fs.roots.is_any() {
            out.extend(
                m.fs.iter()
                    .map(|d| format!("directory {} -> {} ({})", d.guest, d.host.display(), d.mode)),
            );
        }
        if self.env.pass.is_any() {
            out.extend(m.env.pass.iter().map(|v| format!("host variable {v}")));
        }
        if self.net.allow.is_any() {
            out.extend(m.network.allow.iter().map(|h| format!("host {h}")));
        }
        out
    }

    /// Both at once: each unit's caps intersected.
    pub fn intersect(&self, other: &Caps) -> Caps {
        Caps {
            limits: self.limits.intersect(&other.limits),
            fs: self.fs.intersect(&other.fs),
            env: self.env.intersect(&other.env),
            net: self.net.intersect(&other.net),
            client: self.client.intersect(&other.client),
            stdio: self.stdio.intersect(&other.stdio),
        }
    }
}

/// A grant the operator refuses, or that cannot be prepared: which unit,
/// what, and which setting decides.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{unit}: {message}{}", line.map(|l| format!("line {l}: ")).unwrap_or_default(), hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
#[non_exhaustive]
pub struct CapError {
    /// `fs`, `env`, `net`, `client`, `limits`.
    pub unit: &'static str,
    /// What is refused.
    pub message: String,
    /// What decides it, or what to do.
    pub hint: Option<String>,
    /// The manifest line of the grant, when known.
    pub line: Option<usize>,
    pub(crate) span: Option<std::ops::Range<usize>>,
}

/// Everything one component is granted, narrowed and prepared at load.
#[derive(Debug)]
pub(crate) struct Grants {
    pub(crate) limits: Limits,
    pub(crate) fs: fs::Prepared,
    pub(crate) env: env::Prepared,
    pub(crate) net: net::Prepared,
    pub(crate) client: client::Prepared,
    pub(crate) stdio: StdioCaps,
    /// Resource handles one call may hold.
    pub(crate) handles: usize,
}

/// Narrow every unit of `m` by `caps` and prepare it. Every refusal is
/// returned, not only the first.
pub(crate) fn prepare(
    m: &Manifest,
    caps: &Caps,
    host: &fs::HostState,
    pool_slots: u32,
) -> Result<Grants, Vec<CapError>> {
    let mut errors = Vec::new();
    let limits = caps.limits.narrow(&m.limits, pool_slots);
    let fs = fs::prepare(&m.fs, &caps.fs, host).unwrap_or_else(|refused| {
        errors.extend(refused.into_iter().map(|r| {
            CapError {
                unit: "fs",
                message: format!("grant at `{}`: {}", r.guest, r.message),
                hint: r.hint,
                line: None,
                span: m
                    .fs
                    .iter()
                    .find(|f| f.guest == r.guest)
                    .and_then(|f| f.span.clone()),
            }
        }));
        fs::Prepared::default()
    });
    let env = env::prepare(&m.env, &caps.env).unwrap_or_else(|refused| {
        errors.extend(refused.into_iter().map(|r| {
            CapError {
                unit: "env",
                span: m
                    .env
                    .pass
                    .iter()
                    .position(|n| *n == r.name)
                    .and_then(|i| m.env.pass_spans[i].clone()),
                message: r.message,
                hint: Some(r.hint),
                line: None,
            }
        }));
        env::Prepared::default()
    });
    let net = net::prepare(&m.network, &caps.net);
    let client = client::prepare(&m.client, &caps.client).unwrap_or_else(|refused| {
        errors.extend(refused.into_iter().map(|r| CapError {
            unit: "client",
            message: format!("`{}` requests are not allowed on this host", r.kind),
            hint: Some(r.hint),
            line: None,
            span: None,
        }));
        client::Prepared::default()
    });
    if !errors.is_empty() {
        // Point at the manifest's lines where the request came from.
        if let Ok(text) = crate::files::read_text(&m.path, crate::files::MAX_MANIFEST_BYTES) {
            for e in &mut errors {
                if let Some(s) = &e.span {
                    let at = s.start.min(text.len());
                    e.line = Some(text[..at].bytes().filter(|&b| b == b'\n').count() + 1);
                }
            }
        }
        return Err(errors);
    }
    Ok(Grants {
        limits,
        fs,
        env,
        net,
        client,
        stdio: caps.stdio.clone(),
        handles: caps.limits.handles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_intersect_and_say_so() {
        let a = AllowList::only(["x", "y"]);
        let b = AllowList::only(["y", "z"]);
        let both = a.intersect(&b);
        assert!(both.allows(|s| *s == "y"));
        assert!(!both.allows(|s| *s == "x"));
        assert!(AllowList::<&str>::any().allows(|_| false));
        assert!(!AllowList::<&str>::only([]).allows(|_| true));
        assert_eq!(both.to_string(), "x, y (and, of those, y, z)");
        assert_eq!(AllowList::<&str>::any().to_string(), "any");
    }
}
