//! The `net` unit: outbound HTTP a tool may make (wasi:http only; no raw
//! sockets, no DNS of its own).
//!
//! - parse: `[network] allow` of the manifest (`host[:port]` patterns);
//! - narrow: the operator's `[network] allow` lists (host config, tenant).
//!   Nothing is merged at load: every request must match the manifest **and**
//!   every operator list, checked on the actual host and port of the request,
//!   so an operator's `127.0.0.1` never becomes a manifest's `127.0.0.1:*`;
//! - prepare: the patterns, once; wasi:http is linked only for components
//!   that are granted a host at all;
//! - apply: a [`Gate`] per call;
//! - enforce: the gate refuses a request before any DNS lookup or
//!   connection when its host is not granted; a granted one is resolved
//!   once, its address checked (no loopback, private or metadata address
//!   behind a name, never toolhost's own listeners) and exactly that address
//!   connected to ([`connect`]). Name lookups run on the process's slots,
//!   a few per call and a scope's share per scope ([`LookupShares`]).
//!   Each connection's socket is one of the call's descriptors, counted
//!   with its open files (`caps::fs::CallDescriptors`).
//!
//! Must not touch: sockets (wasi:sockets is linked deny-all by `sandbox`).

use super::AllowList;
use super::limits::MemoryBudget;
use crate::diagnostic::Collector;
use crate::manifest::schema;
mod connect;

#[cfg(feature = "http")]
pub(crate) use connect::OwnListener;
use std::fmt;
use std::sync::Arc;

/// An outbound `host[:port]` pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct HostPattern {
    /// Lower-case host name or IP; a leading `*.` matches any subdomain.
    pub host: String,
    /// Which ports.
    pub port: PortPattern,
}

/// The ports a [`HostPattern`] matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortPattern {
    /// The scheme's default ports (80 and 443).
    Default,
    /// `:*`, any port.
    Any,
    /// This port only.
    Exactly(u16),
}

/// Why a host pattern does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatternError(String);

impl HostPattern {
    /// Parse `host`, `host:port`, `host:*`, `*.domain[:port]`, `[v6]:port`.
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        let s = s.trim();
        let err = |m: String| Err(PatternError(m));
        if s.is_empty() {
            return err("empty host pattern".into());
        }
        if s.contains("://") || s.contains('/') {
            return err(format!(
                "`{s}` is not a host[:port] pattern: drop the scheme and path (e.g. `api.example.com` or `api.example.com:8443`)"
            ));
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, "*")) => (h, PortPattern::Any),
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
                let Ok(port) = p.parse::<u16>() else {
                    return err(format!(
                        "`{p}` in `{s}` is not a port (use a number or `*`)"
                    ));
                };
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
            return err(format!(
                "`{s}` is not a host name or IP (a `*.` prefix is the only wildcard)"
            ));
        }
        Ok(HostPattern { host, port })
    }

    /// Whether a request to `host:port` (port as sent, defaulted by scheme)
    /// matches.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host);
        let host_ok = match self.host.strip_prefix("*.") {
            Some(suffix) => under(host, suffix),
            None => host == self.host,
        };
        host_ok
            && match self.port {
                PortPattern::Any => true,
                PortPattern::Default => port == 80 || port == 443,
                PortPattern::Exactly(p) => p == port,
            }
    }

    /// Whether every request `other` allows, this allows too (what an
    /// upgrade's grants review asks of a package's new hosts).
    pub fn covers(&self, other: &HostPattern) -> bool {
        let host = match self.host.strip_prefix("*.") {
            None => self.host == other.host,
            Some(suffix) => match other.host.strip_prefix("*.") {
                Some(theirs) => theirs == suffix || under(theirs, suffix),
                None => under(&other.host, suffix),
            },
        };
        let port = match (self.port, other.port) {
            (PortPattern::Any, _) => true,
            (PortPattern::Default, PortPattern::Default) => true,
            (PortPattern::Default, PortPattern::Exactly(p)) => p == 80 || p == 443,
            (PortPattern::Exactly(x), PortPattern::Exactly(y)) => x == y,
            _ => false,
        };
        host && port
    }
}

/// Whether `host` is a name under the domain `suffix` (what `*.suffix`
/// matches). A wildcard names domains, never an IP literal (`*.0.1` is not
/// a grant of 127.0.0.1).
fn under(host: &str, suffix: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_err()
        && host.len() > suffix.len()
        && host.ends_with(suffix)
        && host[..host.len() - suffix.len()].ends_with('.')
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            PortPattern::Default => write!(f, "{host}"),
            PortPattern::Any => write!(f, "{host}:*"),
            PortPattern::Exactly(p) => write!(f, "{host}:{p}"),
        }
    }
}

/// What a manifest asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct NetRequest {
    /// Hosts the tool may reach.
    pub allow: Vec<HostPattern>,
}

/// The operator's caps (`[network] allow` in the host config).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct NetCaps {
    /// Hosts any tool may reach at most; unrestricted: what manifests say.
    pub allow: AllowList<HostPattern>,
}

impl NetCaps {
    /// Only hosts matching one of `patterns` may be reached.
    pub fn with_allow<I: IntoIterator<Item = HostPattern>>(mut self, patterns: I) -> Self {
        self.allow = AllowList::only(patterns);
        self
    }

    /// Both caps at once: a request must match each.
    pub fn intersect(&self, other: &NetCaps) -> NetCaps {
        NetCaps {
            allow: self.allow.intersect(&other.allow),
        }
    }
}

/// The most `[network] allow` patterns one manifest may list: every
/// request is matched against each.
pub(crate) const MAX_PATTERNS: usize = 256;

/// Read `[network] allow`; every problem is recorded.
pub(crate) fn parse(raw: &schema::Network, cx: &mut Collector<'_>) -> NetRequest {
    let mut req = NetRequest::default();
    if let Some(extra) = raw.allow.get(MAX_PATTERNS) {
        cx.error(
            Some(extra.span()),
            format!(
                "`[network] allow` may list at most {MAX_PATTERNS} hosts ({} here)",
                raw.allow.len()
            ),
            Some("use `*.domain` patterns".into()),
        );
    }
    for a in raw.allow.iter().take(MAX_PATTERNS) {
        match HostPattern::parse(a.get_ref()) {
            Ok(p) => req.allow.push(p),
            Err(e) => cx.error(Some(a.span()), e.0, None),
        }
    }
    req
}

/// The patterns of one component and the operator's lists, kept apart: a
/// request must match both.
#[derive(Debug, Clone, Default)]
pub(crate) struct Prepared {
    manifest: Arc<[HostPattern]>,
    operator: AllowList<HostPattern>,
}

impl Prepared {
    /// Whether this component may make any outbound request at all (if not,
    /// wasi:http is not even linked for it).
    pub(crate) fn any(&self) -> bool {
        !self.manifest.is_empty()
    }

    /// The gate of one call, charging its connections to `budget`.
    pub(crate) fn gate(&self, budget: Option<Arc<MemoryBudget>>) -> Gate {
        Gate {
            manifest: self.manifest.clone(),
            operator: self.operator.clone(),
            budget,
            lookups: None,
            scope_lookups: None,
            closed: None,
            guests: None,
            descriptors: None,
            refused: None,
        }
    }
}

/// Each scope's share of the process's name lookups: `share` of them (its
/// `pool-share`), at least one. One tenant's tools cannot hold every
/// lookup slot (a slow resolver holds each for as long as it takes), and
/// so leave the other tenants' tools without names.
///
/// A scope keeps one share for as long as anything holds it (a running
/// call, a lookup its call gave up on): a reload, or a component of the
/// scope with a smaller `pool-share`, resizes it rather than handing the
/// scope a fresh one beside the slots its abandoned lookups still hold.
#[derive(Default)]
pub(crate) struct LookupShares(
    std::sync::Mutex<
        std::collections::HashMap<
            crate::catalog::Scope,
            (std::sync::Weak<tokio::sync::Semaphore>, usize),
        >,
    >,
);

impl LookupShares {
    /// `scope`'s share, sized to `share` of the lookups from now on. It
    /// shrinks by the slots free now: a share made smaller while its slots
    /// are in use keeps them until a later resize finds them free (never
    /// more than the largest share it was given).
    pub(crate) fn of(
        &self,
        scope: &crate::catalog::Scope,
        share: f64,
    ) -> Arc<tokio::sync::Semaphore> {
        let n = (((connect::LOOKUPS as f64) * share).floor() as usize).clamp(1, connect::LOOKUPS);
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((held, total)) = all.get_mut(scope)
            && let Some(slots) = held.upgrade()
        {
            *total = crate::caps::limits::resize_permits(&slots, *total, n);
            return slots;
        }
        all.retain(|_, (held, _)| held.strong_count() > 0);
        let slots = Arc::new(tokio::sync::Semaphore::new(n));
        all.insert(scope.clone(), (Arc::downgrade(&slots), n));
        slots
    }
}

/// Keep the manifest's patterns and the operator's lists for checks at
/// request time.
pub(crate) fn prepare(req: &NetRequest, caps: &NetCaps) -> Prepared {
    Prepared {
        manifest: req.allow.clone().into(),
        operator: caps.allow.clone(),
    }
}

/// Lets outbound HTTP through only to hosts the manifest grants and every
/// operator list allows. Everything else is `HTTP request denied` before any
/// connection or DNS lookup is made.
pub(crate) struct Gate {
    manifest: Arc<[HostPattern]>,
    operator: AllowList<HostPattern>,
    /// The call's memory, charged [`connect::CONNECTION_BYTES`] for each
    /// connection while it is open (none in unit tests).
    budget: Option<Arc<MemoryBudget>>,
    /// The call's name lookups that may run at once, abandoned ones
    /// included (see `connect::lookup`); made at its first request, so a
    /// call that sends none allocates nothing.
    lookups: Option<Arc<tokio::sync::Semaphore>>,
    /// The call's scope's share of the lookups ([`LookupShares`]), given
    /// when the call starts, with the rest of the scope's share of the
    /// pool; none for a call outside the scopes' shares.
    scope_lookups: Option<Arc<tokio::sync::Semaphore>>,
    /// Cancelled when the gate goes (with its call's store): every
    /// connection the call opened is closed then, made at its first
    /// request. A connection runs on a task of its own, and hyper's close
    /// flushes what it has buffered first, so a peer that stopped reading
    /// kept it, its descriptor and its memory charge, for ever (found by
    /// review).
    closed: Option<tokio_util::sync::CancellationToken>,
    /// Where its requests run: the guest executor. A request made in a
    /// call's first slice (on the caller's task) ran, with its lookups,
    /// TLS and connection, on the front end's threads (found by review).
    guests: Option<tokio::runtime::Handle>,
    /// The call's open files and sockets (`caps::fs::CallDescriptors`):
    /// each connection's socket counts against its `max-open` and its
    /// scope's share. A gate without them (one that grants nothing)
    /// connects nowhere.
    descriptors: Option<Arc<crate::caps::fs::CallDescriptors>>,
    /// Why the first refused request was refused, until the call's caller
    /// is told (a warning event at the call's end): the guest gets only an
    /// error code, and the host's reason (the manifest, or the operator's
    /// allow-list) was in its debug log alone (found by the user review).
    refused: Option<String>,
}

impl Drop for Gate {
    fn drop(&mut self) {
        if let Some(closed) = &self.closed {
            closed.cancel();
        }
    }
}

/// Name lookups one call may have running at once: a call cannot take
/// every one of the process's lookup slots from the others.
const CALL_LOOKUPS: usize = 4;

/// The largest write to an outgoing body's stream, and so (with the
/// default one chunk buffered, plus one being written) half of the host
/// memory a body holds before its request is sent. wasmtime-wasi-http's
/// default is 1 MiB, which let a tool hold hundreds of MiB in bodies it
/// never sent (SECURITY.md M3); at 16 KiB a body's two chunks over its
/// three handles stay within the 16 KiB per handle the handle cap is sized
/// for (`sandbox::state`).
pub(crate) const BODY_CHUNK: usize = 16 << 10;

/// The longest authority (`host:port`) a request may name: a DNS name is
/// at most 253 bytes, a port 6 with its colon; an IPv6 literal fits too.
const MAX_AUTHORITY: usize = 261;
/// The longest method name (the standard ones are at most 7 bytes).
const MAX_METHOD: usize = 32;
/// The longest path and query a request may carry (what common servers
/// accept in a request line).
const MAX_PATH: usize = 8 << 10;

const HTTP_TYPES: &str = "wasi:http/types@0.2.12";

/// Shadow the `outgoing-request` setters that keep a guest string in host
/// memory: wasmtime-wasi-http 48 bounds none of `set-authority` and
/// `set-method` (an extension method), so one long string set on every
/// request handle a call may hold was host memory nobody charged. Each is
/// refused (the WIT's `err`) above a length no real request needs, and
/// otherwise handed to wasmtime-wasi-http's own setter.
pub(crate) fn add_to_linker<T: wasmtime_wasi_http::WasiHttpView + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
) -> anyhow::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi_http::p2::bindings::http::types::{
        HostOutgoingRequest as H, Method, OutgoingRequest,
    };
    linker.allow_shadowing(true);
    let mut i = linker.instance(HTTP_TYPES)?;
    i.func_wrap(
        "[method]outgoing-request.set-authority",
        |mut store, (r, a): (Resource<OutgoingRequest>, Option<String>)| {
            if a.as_ref().is_some_and(|a| a.len() > MAX_AUTHORITY) {
                return Ok((Err(()),));
            }
            Ok((H::set_authority(&mut store.data_mut().http(), r, a)?,))
        },
    )?;
    i.func_wrap(
        "[method]outgoing-request.set-method",
        |mut store, (r, m): (Resource<OutgoingRequest>, Method)| {
            if matches!(&m, Method::Other(s) if s.len() > MAX_METHOD) {
                return Ok((Err(()),));
            }
            Ok((H::set_method(&mut store.data_mut().http(), r, m)?,))
        },
    )?;
    i.func_wrap(
        "[method]outgoing-request.set-path-with-query",
        |mut store, (r, p): (Resource<OutgoingRequest>, Option<String>)| {
            if p.as_ref().is_some_and(|p| p.len() > MAX_PATH) {
                return Ok((Err(()),));
            }
            Ok((H::set_path_with_query(&mut store.data_mut().http(), r, p)?,))
        },
    )?;
    Ok(())
}

/// What one connection holds until it and its response body are gone:
/// its charge to the call's memory and its descriptor.
struct Held {
    _charge: Option<crate::caps::limits::HostCharge>,
    _socket: crate::caps::fs::Slot,
}

impl Gate {
    /// Run this call's requests on `guests` (the core gives it only to a
    /// call whose tool may make requests).
    pub(crate) fn run_on(&mut self, guests: Option<tokio::runtime::Handle>) {
        self.guests = guests;
    }

    /// Count this call's sockets with its open files (`descriptors`).
    pub(crate) fn count_descriptors(&mut self, descriptors: Arc<crate::caps::fs::CallDescriptors>) {
        self.descriptors = Some(descriptors);
    }

    /// Take this call's lookups from `scope`'s share too (kept only by a
    /// call that may make requests at all).
    pub(crate) fn share_lookups(&mut self, scope: &Arc<tokio::sync::Semaphore>) {
        if !self.manifest.is_empty() {
            self.scope_lookups = Some(scope.clone());
        }
    }

    /// Whether a request to `uri` is granted.
    #[cfg(test)]
    fn permits(&self, uri: &http::Uri) -> bool {
        self.refusal(uri).is_none()
    }

    /// Which list refuses a request to `uri`, if one does.
    fn refusal(&self, uri: &http::Uri) -> Option<&'static str> {
        let Some(host) = uri.host() else {
            return Some("it names no host");
        };
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
                443
            } else {
                80
            });
        if !self.manifest.iter().any(|p| p.matches(host, port)) {
            return Some("the tool's manifest does not grant it (`[network] allow`)");
        }
        if !self.operator.allows(|p| p.matches(host, port)) {
            return Some("the manifest grants it, the host config's `[network] allow` does not");
        }
        None
    }

    /// Why the call's first refused request was refused, once.
    pub(crate) fn take_refusal(&mut self) -> Option<String> {
        self.refused.take()
    }
}

impl wasmtime_wasi_http::WasiHttpHooks for Gate {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
                )>,
            > + Send,
    > {
        if let Some(why) = self.refusal(request.uri()) {
            tracing::debug!(uri = %request.uri(), "outbound request denied: {why}");
            // The first only: a guest's loop of refused requests formats
            // nothing more.
            if self.refused.is_none() {
                let uri = request.uri();
                let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
                self.refused = Some(format!(
                    "a request to {}{port} was refused: {why}",
                    crate::audit::shown(uri.host().unwrap_or(""), 256)
                ));
            }
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let charge = match &self.budget {
            Some(budget) => match budget.hold(connect::CONNECTION_BYTES) {
                Some(charge) => Some(charge),
                None => {
                    tracing::debug!(uri = %request.uri(), "outbound request refused: the call's memory holds no room for another connection");
                    return Box::new(async {
                        Err(wasmtime_wasi_http::Error::ConnectionLimitReached)
                    });
                }
            },
            None => None,
        };
        // Its socket is a descriptor of the call's `max-open`, its
        // scope's share and the process's share for tools.
        let socket = match self.descriptors.as_ref().map(|d| d.slot()) {
            Some(Ok(socket)) => socket,
            Some(Err(why)) => {
                tracing::debug!(uri = %request.uri(), "outbound request refused: {why}");
                return Box::new(async { Err(wasmtime_wasi_http::Error::ConnectionLimitReached) });
            }
            None => {
                tracing::debug!(uri = %request.uri(), "outbound request refused: the gate counts no descriptors");
                return Box::new(async { Err(wasmtime_wasi_http::Error::ConnectionLimitReached) });
            }
        };
        let hold = Arc::new(Held {
            _charge: charge,
            _socket: socket,
        });
        let lookups = connect::Lookups {
            call: self
                .lookups
                .get_or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(CALL_LOOKUPS)))
                .clone(),
            scope: self.scope_lookups.clone(),
        };
        let closed = self.closed.get_or_insert_default().clone();
        let ended = closed.clone();
        let send = async move {
            use http_body_util::BodyExt;
            // Resolve, check the address, connect to that address: see
            // `connect` for why not `default_send_request`.
            let (res, io) = connect::send(request, options, hold.clone(), lookups, closed).await?;
            // The body may outlive the connection (its last frames, and the
            // head copied out of hyper's buffer, stay with the guest): the
            // charge ends when both are gone.
            Ok((
                res.map(|b| {
                    // The closure owns the charge, so the body does.
                    b.map_err(move |e| {
                        let _charged = &hold;
                        wasmtime_wasi_http::Error::from(e)
                    })
                    .boxed_unsync()
                }),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        };
        // Nothing of it goes on once the call's store is gone (the abort of
        // the task running it comes later): not a lookup, connect or TLS.
        let send = async move {
            tokio::select! {
                biased;
                () = ended.cancelled() => Err(wasmtime_wasi_http::Error::ConnectionTerminated),
                r = send => r,
            }
        };
        match &self.guests {
            // Aborted if the call drops it (with its store).
            Some(guests) => {
                let task = tokio_util::task::AbortOnDropHandle::new(guests.spawn(send));
                Box::new(async move {
                    task.await
                        .unwrap_or(Err(wasmtime_wasi_http::Error::ConnectionTerminated))
                })
            }
            None => Box::new(send),
        }
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        BODY_CHUNK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostPattern {
        HostPattern::parse(s).unwrap()
    }

    fn gate(manifest: &[&str], operator: &[&[&str]]) -> Gate {
        let mut caps = NetCaps::default();
        for list in operator {
            caps = caps.intersect(&NetCaps::default().with_allow(list.iter().map(|s| p(s))));
        }
        let req = NetRequest {
            allow: manifest.iter().map(|s| p(s)).collect(),
        };
        prepare(&req, &caps).gate(None)
    }

    #[test]
    fn patterns() {
        assert!(p("api.example.com").matches("API.example.com", 443));
        assert!(p("api.example.com").matches("api.example.com.", 80));
        assert!(!p("api.example.com").matches("api.example.com", 8080));
        assert!(p("*.example.org:*").matches("a.b.example.org", 1));
        assert!(!p("*.example.org").matches("example.org", 443));
        assert!(!p("*.example.org").matches("badexample.org", 443));
        assert!(p("[::1]:8080").matches("[::1]", 8080));
        assert_eq!(p("[::1]:8080").to_string(), "[::1]:8080");
        for bad in ["", "http://x", "a/b", "*", "a*.b", "x:port", "a b"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }

    /// Manifest pattern x operator pattern x request: the gate allows a
    /// request only when both allow that very host and port.
    #[test]
    fn the_operator_list_is_an_intersection_checked_per_request() {
        let uri = |s: &str| s.parse::<http::Uri>().unwrap();
        /// Manifest patterns, operator lists, request URI, allowed.
        type Case<'a> = (&'a [&'a str], &'a [&'a [&'a str]], &'a str, bool);
        let cases: &[Case<'_>] = &[
            // Row 5 of issue 7: `127.0.0.1` (default ports) must not widen
            // to every port because the manifest says `:*`.
            (
                &["127.0.0.1:*"],
                &[&["127.0.0.1"]],
                "http://127.0.0.1:8750/mcp",
                false,
            ),
            (
                &["127.0.0.1:*"],
                &[&["127.0.0.1"]],
                "http://127.0.0.1/",
                true,
            ),
            (&["127.0.0.1:*"], &[], "http://127.0.0.1:8750/", true),
            (
                &["api.example.com"],
                &[&["*.example.com"]],
                "https://api.example.com/",
                true,
            ),
            (
                &["*.example.com"],
                &[&["api.example.com"]],
                "https://evil.example.com/",
                false,
            ),
            (
                &["*.example.com"],
                &[&["api.example.com"]],
                "https://api.example.com/",
                true,
            ),
            (
                &["a.test:*"],
                &[&["a.test:*"], &["a.test:443"]],
                "http://a.test:80/",
                false,
            ),
            (
                &["a.test:*"],
                &[&["a.test:*"], &["a.test:443"]],
                "https://a.test/",
                true,
            ),
            (&[], &[], "https://a.test/", false),
            (&["a.test"], &[&[]], "https://a.test/", false),
        ];
        for (m, o, u, want) in cases {
            assert_eq!(
                gate(m, o).permits(&uri(u)),
                *want,
                "manifest {m:?} operator {o:?} {u}"
            );
        }
    }
}
