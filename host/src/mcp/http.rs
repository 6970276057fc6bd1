//! Streamable HTTP: the MCP endpoint at `/mcp`, hardened for a server that
//! runs untrusted tools on someone's machine.
//!
//! - Host and Origin validation against DNS rebinding (rmcp checks both;
//!   this module decides the allow-lists: loopback names, the bound address,
//!   and what the operator adds);
//! - an optional bearer token, required to bind a non-loopback address;
//!   or, with tenants, each request's credential selects the tenant whose
//!   tools it sees, within that tenant's quotas (see `auth`);
//! - a request body limit, a body that sends nothing for the header
//!   timeout refused (408), and a timeout until the response starts;
//! - with tenants: each connection counted in the share of the tenant
//!   whose request it last carried (at most half the connections), and
//!   the host's reading and parsing of a tenant's requests charged to its
//!   `fuel-per-minute` (`quota::RequestMeter`; while it is spent, only
//!   small answers and notifications pass);
//! - stateless (2026-07-28) requests answered as plain `application/json`
//!   when they have nothing to stream; a tool call among them is answered
//!   past rmcp's per-request service, when it can be exactly as rmcp would
//!   (`stateless_call`);
//! - 2025-11-25 sessions sealed into their ids (see `session`), so any
//!   replica sharing the key serves any request of any session;
//! - connections accepted and bounded by `accept` (a cap, a header-read
//!   timeout);
//! - tenants replaceable while serving ([`TenantsHandle`]): a reload keeps
//!   each remaining tenant's sessions, ends a removed one's, and checks a
//!   request's credential again if a reload came while its body arrived;
//! - graceful shutdown: stop taking calls, let running ones finish (within a
//!   grace period), then close sessions and streams.

use super::McpServer;
use super::auth::Tenancy;
use super::session::{self, SealedSessions, SealedStore, SessionSeal};
use super::stateless_call::{self, Lane};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Where and how to serve.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpOptions {
    /// Where to listen (port 0: any free port).
    pub addr: SocketAddr,
    /// Clients must send `Authorization: Bearer TOKEN`.
    pub bearer_token: Option<String>,
    /// More `Host` values to accept (`name` or `name:port`), e.g. the DNS
    /// name clients use for a non-loopback address.
    pub allowed_hosts: Vec<String>,
    /// More browser origins to accept (`scheme://host[:port|:*]`).
    pub allowed_origins: Vec<String>,
    /// The largest request body accepted.
    pub max_body_bytes: usize,
    /// How long a request may take until its response starts (streamed
    /// responses then run as long as their call).
    pub request_timeout: Duration,
    /// How long shutdown waits for running calls before it cancels them.
    pub shutdown_grace: Duration,
    /// How long a 2025-11-25 session id stays valid after `initialize`
    /// (then the client gets 404 and starts a new session).
    pub session_ttl: Duration,
    /// Connections open at once; past it, new ones wait in the kernel's
    /// accept queue.
    pub max_connections: usize,
    /// Connections one client address (an IPv6 client: its /64) may hold
    /// open at once; past it, a new one is answered 429 and closed. 0, the
    /// default, is no limit: behind a proxy or load balancer every
    /// connection comes from its address (bound clients there, as its
    /// `limit_conn` does). Set it when clients connect directly.
    pub max_connections_per_address: usize,
    /// How long a client may take to send a request's headers, the longest
    /// a request's body may send nothing, and the longest an idle
    /// keep-alive connection stays open.
    pub header_read_timeout: Duration,
    /// 2025-11-25 sessions held at once per tenant (or by a tenantless
    /// server), unless the tenant's `max-sessions` says otherwise: past
    /// it, an `initialize` (or a request that would restore a session from
    /// its id) gets 429.
    pub max_sessions: usize,
    /// Requests in progress at once per tenant (or for a tenantless
    /// server), streamed responses included, unless the tenant's
    /// `max-open-requests` says otherwise: past it, 429. However many it
    /// says, a tenant holds at most half the `max_connections`, idle or
    /// busy (a connection is the last tenant's whose request it carried).
    pub max_open_requests: usize,
    /// Bytes of request bodies one tenant's (or a tenantless server's)
    /// requests may hold at once, unless the tenant's `max-request-bytes`
    /// says otherwise: counted as each body arrives and until its response
    /// ends (a call's arguments live that long); a body that would pass it
    /// gets 429. Without it a tenant's `max_open_requests` bodies of
    /// `max_body_bytes` each (4 GiB by default) could all be in memory at
    /// once.
    pub max_request_bytes: usize,
}

impl HttpOptions {
    /// Serve at `addr` with the defaults: no token (loopback only), 4 MiB
    /// bodies, 120 s until a response starts, 10 s shutdown grace, sessions
    /// valid for 24 hours, 4096 connections at once, 10 s to send a
    /// request's headers, 1024 sessions, 1024 requests in progress and
    /// 64 MiB of request bodies per tenant.
    pub fn new(addr: SocketAddr) -> HttpOptions {
        HttpOptions {
            addr,
            bearer_token: None,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            max_body_bytes: 4 << 20,
            request_timeout: Duration::from_secs(120),
            shutdown_grace: Duration::from_secs(10),
            session_ttl: Duration::from_secs(24 * 3600),
            max_connections: 4096,
            max_connections_per_address: 0,
            header_read_timeout: Duration::from_secs(10),
            max_sessions: 1024,
            max_open_requests: 1024,
            max_request_bytes: super::DEFAULT_REQUEST_BYTES,
        }
    }
}

/// The shortest bearer token [`HttpServer::bind`] takes: a short one is
/// found by guessing (found by review: `--bearer-token x` was taken, on
/// any address).
pub const MIN_TOKEN_BYTES: usize = 16;

/// Why the HTTP server cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// A non-loopback address needs credentials.
    #[error(
        "refusing to serve on non-loopback address {0} without a bearer token: anyone who can reach it could run your tools"
    )]
    PublicWithoutToken(SocketAddr),
    /// An empty token would let anyone in.
    #[error("the bearer token is empty")]
    EmptyToken,
    /// A token shorter than [`MIN_TOKEN_BYTES`] could be guessed.
    #[error(
        "the bearer token is {0} bytes; at least {MIN_TOKEN_BYTES} are needed (a short one is easily guessed; make a random one with `head -c 32 /dev/urandom | base64`)"
    )]
    ShortToken(usize),
    /// The address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// One static token for everyone, and tenants with their own: the
    /// token would bypass the tenants.
    #[error(
        "--bearer-token cannot be combined with `[[tenant]]`s: give the token's holders a tenant (`token-sha256`) instead"
    )]
    TokenWithTenants,
}

/// A bound, not yet serving, MCP HTTP endpoint.
pub struct HttpServer {
    listener: tokio::net::TcpListener,
    /// Keeps this address out of every tool's reach while the server lives.
    _own: crate::caps::net::OwnListener,
    front: Front,
    /// Cancels every session's streams when the server stops.
    sessions: CancellationToken,
    opts: HttpOptions,
}

/// Whom the server serves.
enum Front {
    /// One server, behind the optional bearer token.
    Single(Arc<TenantServer>),
    /// Tenants, each behind its credentials; replaceable while serving.
    Tenants(Arc<TenantFront>),
}

/// The MCP service of one server (tenant).
type McpService = StreamableHttpService<McpServer, SealedSessions>;

/// Makes the MCP service of a server: its session ids sealed for its
/// owner, under the endpoint's config.
struct Services {
    key: crate::StateKey,
    ttl: Duration,
    config: StreamableHttpServerConfig,
    /// What a server may hold open when its tenant does not say.
    defaults: Holds,
    /// Connections the endpoint accepts at once: `--max-connections`, or
    /// fewer if the process's descriptors allow no more.
    max_connections: usize,
}

impl Services {
    /// The most connections one tenant holds: half those the endpoint
    /// accepts (see `accept::Connection`), whatever its
    /// `max-open-requests` says. Where descriptors lowered the connections
    /// to 768, one tenant's default of 1,024 silent requests held every
    /// one of them (found by review).
    fn most_connections(&self) -> usize {
        (self.max_connections / 2).max(1)
    }
}

/// What one tenant (or a tenantless server) may hold open on this server.
#[derive(Clone, Copy, Debug)]
struct Holds {
    sessions: usize,
    open_requests: usize,
    request_bytes: usize,
}

impl Holds {
    fn of(opts: &HttpOptions) -> Holds {
        Holds {
            sessions: opts.max_sessions.max(1),
            open_requests: opts.max_open_requests.max(1),
            request_bytes: opts.max_request_bytes.max(1),
        }
    }

    /// `self` as `quotas` override it.
    fn with(self, quotas: &crate::tenant::Quotas) -> Holds {
        Holds {
            sessions: quotas.max_sessions.map_or(self.sessions, |n| n as usize),
            open_requests: quotas
                .max_open_requests
                .map_or(self.open_requests, |n| n as usize),
            request_bytes: quotas.max_request_bytes.map_or(self.request_bytes, |n| {
                usize::try_from(n).unwrap_or(usize::MAX)
            }),
        }
    }
}

impl Services {
    /// `owner`: what the server's session ids are bound to (`scope:NAME`,
    /// `tenant:NAME`): a session restored on any replica, never on another
    /// tenant's service.
    fn make(&self, root: McpServer, owner: String, holds: Holds) -> TenantServer {
        let seal = SessionSeal::new(self.key.clone(), owner, self.ttl);
        let sessions = Arc::new(SealedSessions::new(seal.clone(), holds.sessions));
        let mut config = self.config.clone();
        config.session_store = Some(Arc::new(SealedStore(seal.clone())));
        // This server's own: ends its streams alone (its tenant removed),
        // or with every other's (shutdown).
        let streams = config.cancellation_token.child_token();
        config.cancellation_token = streams.clone();
        let service = StreamableHttpService::new(
            // One handler per session (per request when stateless): each
            // has its own log level and shares the server's client list.
            {
                let root = root.clone();
                move || Ok(root.new_session())
            },
            sessions.clone(),
            config,
        );
        TenantServer {
            lane: Arc::new(Lane::new(&self.config.allowed_hosts)),
            server: root,
            service,
            streams,
            sessions,
            open: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            connections: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            body_bytes: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        }
    }
}

/// One server (a tenant's) and its MCP service.
#[derive(Clone)]
struct TenantServer {
    server: McpServer,
    /// Which stateless calls skip rmcp's service (see `stateless_call`).
    lane: Arc<Lane>,
    /// Its sessions live here.
    service: McpService,
    /// Ends its sessions' streams.
    streams: CancellationToken,
    /// Its sessions (shared with `service`), counted against `max-sessions`.
    sessions: Arc<SealedSessions>,
    /// Its requests in progress, counted against `max-open-requests`.
    open: Arc<std::sync::atomic::AtomicUsize>,
    /// The connections whose last request was its tenant's (see
    /// `accept::Connection`), counted against half the server's.
    connections: Arc<std::sync::atomic::AtomicUsize>,
    /// Bytes of its requests' bodies held, counted against
    /// `max-request-bytes`.
    body_bytes: Arc<std::sync::atomic::AtomicUsize>,
}

/// A request counted against its server's `max-open-requests`, and its
/// body's bytes against `max-request-bytes`, until its response body ends
/// or is dropped, and (a `tools/call`) the call has ended.
struct OpenRequest {
    open: Arc<std::sync::atomic::AtomicUsize>,
    bytes: Arc<std::sync::atomic::AtomicUsize>,
    /// What this request holds of `bytes`.
    holds: usize,
}

impl OpenRequest {
    /// Count `n` more bytes of the body, if the server's requests then hold
    /// at most `max`; nothing is counted if not.
    fn take(&mut self, n: usize, max: usize) -> bool {
        use std::sync::atomic::Ordering;
        let taken = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                b.checked_add(n).filter(|t| *t <= max)
            })
            .is_ok();
        if taken {
            self.holds += n;
        }
        taken
    }

    /// Give back `n` of the bytes counted (a buffer shrunk to its body).
    fn give_back(&mut self, n: usize) {
        use std::sync::atomic::Ordering;
        let n = n.min(self.holds);
        self.bytes.fetch_sub(n, Ordering::AcqRel);
        self.holds -= n;
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(self.holds, Ordering::AcqRel);
    }
}

/// The bounds a front end enforces before any call, as refusals name them.
#[derive(Clone, Copy)]
enum Bound {
    Sessions,
    OpenRequests,
    RequestBytes,
    /// Half the connections the server accepts (not a tenant's setting).
    Connections,
}

impl Bound {
    fn quota(self) -> &'static str {
        match self {
            Bound::Sessions => "max-sessions",
            Bound::OpenRequests => "max-open-requests",
            Bound::RequestBytes => "max-request-bytes",
            Bound::Connections => "max-connections",
        }
    }
}

impl TenantServer {
    /// Admit `post`'s `tools/call`, if it is one, under the scope's quotas
    /// (as `caller`): here, to answer 429 before the call runs (in the
    /// stateless lane, or rmcp's service, which parses it again). The
    /// admission travels with the request, and the core holds it (and the
    /// tenant's slot) for the whole call, with `held`: the request stays
    /// counted (its count and its body's bytes) until the call ends, as a
    /// 2025-11-25 session's call runs on when its client goes away, its
    /// arguments with it (found by review: they were given back with the
    /// response).
    #[allow(clippy::result_large_err, reason = "the error is the response")]
    fn admit_call(
        &self,
        caller: &str,
        post: &Post,
        held: &Arc<OpenRequest>,
        parts: &mut http::request::Parts,
    ) -> Result<(), Response> {
        let Some((id, tool)) = post.call() else {
            return Ok(());
        };
        let core = self.server.core();
        match core.admit(self.server.scope(), caller, tool, true) {
            Ok(a) => {
                let a = a.keeping(held.clone());
                parts.extensions.insert(crate::quota::AdmittedCall::new(a));
                Ok(())
            }
            Err(q) => Err(over_quota(&q, Some(id))),
        }
    }

    /// Count a request as open if fewer than `max` are.
    fn open(&self, max: usize) -> Option<OpenRequest> {
        let n = self.open.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let held = OpenRequest {
            open: self.open.clone(),
            bytes: self.body_bytes.clone(),
            holds: 0,
        };
        (n < max).then_some(held)
    }

    /// Whether `other` counts its requests with this server's counter (the
    /// same tenant's server, kept by a reload).
    fn same_count(&self, other: &TenantServer) -> bool {
        Arc::ptr_eq(&self.open, &other.open)
    }

    /// Count the refusal of `what` at `bound` (its audit lines thinned
    /// out by the core, like every quota refusal's).
    fn refused(&self, bound: Bound, what: &str, message: &str) {
        let scope = self.server.scope();
        let caller = format!("mcp-http:{}", scope.as_str());
        self.server
            .core()
            .refused(scope, bound.quota(), &caller, what, message);
    }

    /// 429 for a request past `max-open-requests = n`. The connection is
    /// closed with it: kept, it would be a connection the tenant holds
    /// with no request counted.
    fn too_many_open(&self, who: &str, n: usize) -> Response {
        let message = format!(
            "{who} is over its quota `max-open-requests = {n}`: {n} of its requests are in progress on this server; retry when one has finished"
        );
        self.refused(Bound::OpenRequests, "request", &message);
        closing(too_many(&message, 1, None))
    }

    /// 429, closing the connection, for a request on a connection `who`
    /// would hold past `n`, half the server's.
    fn too_many_connections(&self, who: &str, n: usize) -> Response {
        let message = format!(
            "{who} holds {n} connections to this server, half of those it accepts (`--max-connections`, or fewer where descriptors lower it); retry on one of them, or once one has closed"
        );
        self.refused(Bound::Connections, "connection", &message);
        closing(too_many(&message, 1, None))
    }

    /// 429 for a request whose body would pass `max-request-bytes = max`.
    fn too_much_body(&self, who: &str, max: usize) -> Response {
        let message = format!(
            "{who} is over its quota `max-request-bytes = {max}`: its requests in progress on this server hold that many bytes of request bodies; retry when one has finished"
        );
        self.refused(Bound::RequestBytes, "request", &message);
        too_many(&message, 1, None)
    }

    /// Read a POST body whole (413 past `bounds.max`; 408 if no byte comes
    /// for `bounds.idle`), each part counted in
    /// `held` against `holds.request_bytes` as it arrives (429 past it;
    /// 413 if this body alone passes it). Counted as it arrives, not
    /// after: a slow upload holds its bytes too. Once whole, what parsing
    /// it will take is counted too (see `weight::parsed_weight`): a body of
    /// small values parses to many times its size, twice (here and in
    /// rmcp), and the call keeps one.
    async fn read_body(
        &self,
        who: &str,
        body: Body,
        bounds: BodyBounds,
        holds: Holds,
        held: &mut OpenRequest,
        meter: Option<&mut crate::quota::RequestMeter>,
    ) -> Result<bytes::Bytes, Response> {
        use http_body::Body as _;
        let max = holds.request_bytes;
        let max_body = bounds.max;
        let mut body = http_body_util::Limited::new(body, max_body);
        // Each part is copied into one buffer as it comes, and what the
        // buffer reserves is counted: keeping the parts counted their bytes
        // only, and a body of 1-byte chunks held 36 times that (each part's
        // handle, and hyper's read buffer behind it; found by review). A
        // body of known length is reserved whole; else the buffer grows by
        // a quarter, at least 64 KiB a step.
        let mut joined: Vec<u8> = Vec::new();
        if let Some(n) = body.size_hint().exact() {
            let n = usize::try_from(n).unwrap_or(usize::MAX).min(max_body);
            self.take_body(who, held, n, max)?;
            joined.reserve_exact(n);
        }
        // A body that sends nothing for `idle` is refused: it held its
        // connection and its tenant's count until the request's timeout
        // (120 s), and one tenant's 1,024 silent bodies held every
        // connection a host of 4,096 descriptors allows (found by review).
        // One timer a body, made only if a part is not there at once, and
        // moved on when it fires after progress.
        let mut since = tokio::time::Instant::now();
        let mut timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        loop {
            let next = std::future::poll_fn(|cx| {
                use std::task::Poll;
                if let Poll::Ready(f) = std::pin::Pin::new(&mut body).poll_frame(cx) {
                    return Poll::Ready(Some(f));
                }
                let t = timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(since + bounds.idle)));
                while t.as_mut().poll(cx).is_ready() {
                    if since + bounds.idle <= tokio::time::Instant::now() {
                        return Poll::Ready(None);
                    }
                    t.as_mut().reset(since + bounds.idle);
                }
                Poll::Pending
            })
            .await;
            since = tokio::time::Instant::now();
            let Some(frame) = next else {
                return Err(body_stalled(bounds.idle));
            };
            let Some(frame) = frame else { break };
            let Ok(frame) = frame else {
                return Err(body_too_large(None));
            };
            if let Ok(data) = frame.into_data() {
                let need = joined.len() + data.len();
                if need > joined.capacity() {
                    let cap = joined.capacity();
                    // Never past what this request may still hold: a step
                    // of 64 KiB refused a small body under a small bound.
                    let room = cap + max.saturating_sub(held.holds);
                    let grown = (cap + cap / 4)
                        .max(64 << 10)
                        .min(max_body)
                        .min(room)
                        .max(need);
                    self.take_body(who, held, grown - cap, max)?;
                    joined.reserve_exact(grown - joined.len());
                }
                joined.extend_from_slice(&data);
            }
        }
        // Whole: the buffer shrinks to the body, and gives back the rest.
        let reserved = joined.capacity();
        joined.shrink_to_fit();
        held.give_back(reserved.saturating_sub(joined.capacity()));
        let body = bytes::Bytes::from(joined);
        let weigh = || crate::weight::parsed_weight(&body);
        let weight = match meter {
            Some(m) => m.measure(weigh),
            None => weigh(),
        };
        self.take_body(who, held, weight, max)?;
        Ok(body)
    }

    /// Count `n` more bytes of a body in `held`: 413 if this request alone
    /// would pass `max` (it never fits), 429 if the tenant's requests
    /// together would.
    #[allow(clippy::result_large_err, reason = "the error is the response")]
    fn take_body(
        &self,
        who: &str,
        held: &mut OpenRequest,
        n: usize,
        max: usize,
    ) -> Result<(), Response> {
        if held.holds.saturating_add(n) > max {
            return Err(body_too_large(Some((who, max))));
        }
        if held.take(n, max) {
            Ok(())
        } else {
            Err(self.too_much_body(who, max))
        }
    }

    /// Serve `req` (its body read; `initialize`: the parameters of the
    /// session it opens) within `holds`; `who` names the tenant in a
    /// refusal.
    #[allow(
        clippy::too_many_arguments,
        reason = "one request's parts, in one place"
    )]
    async fn serve(
        &self,
        who: &str,
        holds: Holds,
        held: Arc<OpenRequest>,
        initialize: Option<rmcp::model::InitializeRequestParams>,
        id: Option<serde_json::Value>,
        req: Request,
    ) -> Response {
        let session = req
            .headers()
            .get(HEADER_SESSION_ID)
            .and_then(|v| v.to_str().ok());
        let opens = initialize.is_some();
        if req.method() != Method::DELETE && !self.sessions.admits(session, opens).await {
            let n = holds.sessions;
            let message = format!(
                "{who} is over its quota `max-sessions = {n}`: {n} sessions are open on this server; end one (DELETE) or retry once an idle one has expired"
            );
            let what = if opens {
                "initialize"
            } else {
                "session restore"
            };
            self.refused(Bound::Sessions, what, &message);
            return too_many(&message, SESSIONS_RETRY, id);
        }
        session::initializing(initialize, self.service.handle(req))
            .await
            .map(|body| {
                Body::new(Holding {
                    inner: body,
                    _held: held,
                })
            })
    }

    /// Answer a call the stateless lane took (see `stateless_call`) within
    /// the server's bounds. Its sandbox is reset, and the next one
    /// prepared, once the connection's task has ended this turn
    /// (`AfterReply::after_this_turn`), in which hyper writes the answer
    /// it is handed: after the reply, as stdio and the agent do.
    ///
    /// Not when the response's body is dropped: a client that reads
    /// nothing can stall the connection's writes for good, hyper then
    /// never takes the body, and the finished sandbox (its pool slot, its
    /// memory, its tenant's shares) was held for as long as the client
    /// kept the connection: pipelined head-only requests filled the
    /// write buffer (found by review).
    async fn answer_stateless(
        &self,
        held: Arc<OpenRequest>,
        call: stateless_call::Call,
        parts: http::request::Parts,
    ) -> Response {
        let answer = call.answer(self.server.new_session(), self.streams.child_token(), parts);
        let ((status, body), after) = crate::reply_first(answer).await;
        after.after_this_turn();
        let body = http_body_util::Full::new(bytes::Bytes::from(body));
        let mut response = Response::new(Body::new(Holding {
            inner: body,
            _held: held,
        }));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// The header that carries a 2025-11-25 session's id.
pub(super) const HEADER_SESSION_ID: &str = "mcp-session-id";
/// When a client refused a session may try again: an idle one ends after
/// rmcp's keep-alive (5 minutes), a closed one at once.
const SESSIONS_RETRY: u64 = 10;

/// A response body that keeps `_held` alive until it is dropped, and
/// passes on what it knows of its size: a whole JSON reply keeps its
/// `Content-Length` and goes out in one write with its head (a body mapped
/// by `map_frame` has no size hint, so every reply went out chunked, its
/// end a frame of its own).
struct Holding<B, H> {
    inner: B,
    _held: H,
}

impl<B: http_body::Body + Unpin, H: Unpin> http_body::Body for Holding<B, H> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// 429 with `Retry-After`: a JSON-RPC error answering `id` when there is
/// one, else the message as text.
fn too_many(message: &str, retry_after: u64, id: Option<serde_json::Value>) -> Response {
    let (kind, body) = match id {
        Some(id) => (
            "application/json",
            serde_json::json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": {"code": -32000, "message": message},
            })
            .to_string(),
        ),
        None => ("text/plain; charset=utf-8", format!("{message}\n")),
    };
    (
        StatusCode::TOO_MANY_REQUESTS,
        [
            (header::RETRY_AFTER, retry_after.max(1).to_string()),
            (header::CONTENT_TYPE, kind.to_string()),
        ],
        body,
    )
        .into_response()
}

/// `response`, after which hyper closes its connection.
fn closing(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

/// The tenants a server serves now, and how to serve a new one.
struct TenantFront {
    core: crate::Core,
    services: Services,
    /// The resource identifier when `[auth] resource` is not set.
    default_resource: String,
    table: arc_swap::ArcSwap<TenantTable>,
    /// Where a removed tenant's server drains.
    runtime: tokio::runtime::Handle,
    /// One replacement at a time (each builds on the table before it).
    replacing: std::sync::Mutex<()>,
}

/// One version of the tenants: their credentials, and each one's server.
struct TenantTable {
    tenancy: Tenancy,
    /// Each tenant's server and service, in the tenancy's order: a tenant's
    /// sessions live in its service.
    servers: Vec<TenantServer>,
    /// Where the protected-resource metadata is, for `WWW-Authenticate`.
    metadata_url: Arc<str>,
    /// The protected-resource metadata document (RFC 9728).
    metadata: Arc<str>,
}

impl TenantFront {
    /// The table for `tenancy`, keeping each tenant's server (and so its
    /// sessions) that the current one already has.
    fn next_table(&self, tenancy: Tenancy) -> TenantTable {
        let old = self.table.load_full();
        TenantTable::new(
            &self.core,
            &self.services,
            &self.default_resource,
            tenancy,
            Some(&old),
        )
    }
}

impl TenantTable {
    /// The table for `tenancy`, keeping each tenant's server (and so its
    /// sessions) that `old` has.
    fn new(
        core: &crate::Core,
        services: &Services,
        default_resource: &str,
        tenancy: Tenancy,
        old: Option<&TenantTable>,
    ) -> TenantTable {
        let key = services.key.clone();
        let servers = tenancy
            .tenants
            .iter()
            .map(|g| {
                let name = &g.tenant.name;
                let kept = old.and_then(|o| {
                    o.tenancy
                        .tenants
                        .iter()
                        .position(|x| x.tenant.name == *name)
                        .map(|i| o.servers[i].clone())
                });
                let holds = services.defaults.with(&g.tenant.quotas);
                match kept {
                    Some(kept) => {
                        kept.sessions.set_max(holds.sessions);
                        kept
                    }
                    None => {
                        let server = McpServer::with_state_key(
                            core.clone(),
                            g.tenant.scope(),
                            &format!("mcp-http:{name}"),
                            key.clone(),
                        );
                        services.make(server, format!("tenant:{name}"), holds)
                    }
                }
            })
            .collect();
        let resource = tenancy
            .resource
            .clone()
            .unwrap_or_else(|| default_resource.to_string());
        let metadata = serde_json::json!({
            "resource": resource,
            "authorization_servers": tenancy.authorization_servers,
            "bearer_methods_supported": ["header"],
            "resource_name": "toolhost",
        })
        .to_string();
        TenantTable {
            metadata_url: metadata_url(&resource).into(),
            metadata: metadata.into(),
            tenancy,
            servers,
        }
    }
}

/// Replaces the tenants of a running [`HttpServer`] (their credentials and
/// `[auth]`), for a host config reload: see [`HttpServer::tenants`].
#[derive(Clone)]
pub struct TenantsHandle(Arc<TenantFront>);

impl TenantsHandle {
    /// Serve `tenancy` from the next request on. A tenant that stays (by
    /// name) keeps its sessions and its running calls; a tenant that is
    /// gone, or a credential that was removed, is refused (401) from then
    /// on, while calls it has running finish (its tasks are cancelled); a
    /// new tenant is served at once. What each tenant's tools are is the
    /// core's: [`Core::reconfigure`](crate::Core::reconfigure) the core
    /// after this, so that a revoked credential reaches nothing new.
    pub fn replace(&self, tenancy: Tenancy) {
        let _one = self.0.replacing.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.0.table.load_full();
        let table = self.0.next_table(tenancy);
        // A tenant that is gone: its server takes no more calls, its tasks
        // stop (no client of it could read them), its calls answering
        // their requests finish, then its sessions' streams end.
        for gone in &old.servers {
            let scope = gone.server.scope();
            if !table.servers.iter().any(|t| t.server.scope() == scope) {
                let gone = gone.clone();
                self.0.runtime.spawn(async move {
                    gone.server.drain().await;
                    gone.streams.cancel();
                });
            }
        }
        self.0.table.store(Arc::new(table));
    }
}

/// Connections the kernel holds for the accept loop (it caps this at
/// `net.core.somaxconn`).
const BACKLOG: u32 = 4096;

/// The listening socket, with a backlog of [`BACKLOG`] (tokio's default is
/// 1024): a burst of connections (a load balancer's, or a thousand agents'
/// at once) waits to be accepted instead of having its handshakes dropped
/// while the accept loop is busy.
fn listen(addr: SocketAddr) -> Result<tokio::net::TcpListener, HttpError> {
    let bind = || -> std::io::Result<tokio::net::TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(BACKLOG)
    };
    bind().map_err(|source| HttpError::Bind { addr, source })
}

/// The MCP services' config for an endpoint bound at `addr`.
fn service_config(
    addr: SocketAddr,
    opts: &HttpOptions,
    sessions: &CancellationToken,
) -> StreamableHttpServerConfig {
    StreamableHttpServerConfig::default()
        .with_allowed_hosts(allowed_hosts(addr, &opts.allowed_hosts))
        .with_allowed_origins(allowed_origins(&opts.allowed_origins))
        .enforce_origin_validation()
        .with_max_request_body_bytes(opts.max_body_bytes)
        // A stateless (2026-07-28) request whose handler emits nothing
        // before its response is answered as plain JSON: no SSE framing,
        // no session. One that streams (progress, logs) still gets SSE.
        .with_json_response(true)
        .with_cancellation_token(sessions.child_token())
}

/// The address a bound listener listens on.
fn bound_addr(l: &tokio::net::TcpListener) -> SocketAddr {
    l.local_addr().expect("a bound listener has an address")
}

impl HttpServer {
    /// Check the options and bind the address (port 0 picks a free port:
    /// see [`HttpServer::local_addr`]).
    pub async fn bind(server: McpServer, mut opts: HttpOptions) -> Result<HttpServer, HttpError> {
        match opts.bearer_token.as_deref() {
            Some("") => return Err(HttpError::EmptyToken),
            Some(t) if t.len() < MIN_TOKEN_BYTES => return Err(HttpError::ShortToken(t.len())),
            None if !opts.addr.ip().is_loopback() => {
                return Err(HttpError::PublicWithoutToken(opts.addr));
            }
            _ => {}
        }
        let listener = listen(opts.addr)?;
        opts.max_connections = super::accept::connection_cap(opts.max_connections);
        let sessions = CancellationToken::new();
        let services = Services {
            key: server.state_key().clone(),
            ttl: opts.session_ttl,
            config: service_config(bound_addr(&listener), &opts, &sessions),
            defaults: Holds::of(&opts),
            max_connections: opts.max_connections,
        };
        let owner = format!("scope:{}", server.scope().as_str());
        let served = services.make(server, owner, services.defaults);
        Ok(HttpServer {
            _own: own_listener(&listener),
            listener,
            front: Front::Single(Arc::new(served)),
            sessions,
            opts,
        })
    }

    /// Like [`HttpServer::bind`], serving each tenant of `tenancy` its own
    /// scope of `core`: a request's bearer credential selects the tenant,
    /// and its `tools/call`s are held to the tenant's quotas. Stateless
    /// request state is sealed with `key`. The tenants can be replaced
    /// while serving ([`HttpServer::tenants`]).
    pub async fn bind_tenants(
        core: crate::Core,
        tenancy: Tenancy,
        key: crate::StateKey,
        mut opts: HttpOptions,
    ) -> Result<HttpServer, HttpError> {
        if opts.bearer_token.is_some() {
            return Err(HttpError::TokenWithTenants);
        }
        let listener = listen(opts.addr)?;
        opts.max_connections = super::accept::connection_cap(opts.max_connections);
        let addr = bound_addr(&listener);
        let sessions = CancellationToken::new();
        let services = Services {
            key,
            ttl: opts.session_ttl,
            config: service_config(addr, &opts, &sessions),
            defaults: Holds::of(&opts),
            max_connections: opts.max_connections,
        };
        let default_resource = format!("http://{addr}/mcp");
        let table = TenantTable::new(&core, &services, &default_resource, tenancy, None);
        let front = TenantFront {
            core,
            services,
            default_resource,
            table: arc_swap::ArcSwap::from_pointee(table),
            runtime: tokio::runtime::Handle::current(),
            replacing: std::sync::Mutex::new(()),
        };
        Ok(HttpServer {
            _own: own_listener(&listener),
            listener,
            front: Front::Tenants(Arc::new(front)),
            sessions,
            opts,
        })
    }

    /// The bound address (with the port picked, if it was 0).
    pub fn local_addr(&self) -> SocketAddr {
        bound_addr(&self.listener)
    }

    /// A handle that replaces the tenants while the server serves (`None`
    /// for a server bound without tenants).
    pub fn tenants(&self) -> Option<TenantsHandle> {
        match &self.front {
            Front::Tenants(f) => Some(TenantsHandle(f.clone())),
            Front::Single(..) => None,
        }
    }

    /// Serve until `shutdown` resolves, then drain running calls and close.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), HttpError> {
        let addr = self.local_addr();
        let sessions = self.sessions;
        // POST responses still streaming: a finished call's result must reach
        // its client before shutdown closes the sessions.
        let responses = TaskTracker::new();
        let timeout = self.opts.request_timeout;
        let mut app = match &self.front {
            Front::Single(served) => axum::Router::new()
                .route("/mcp", axum::routing::any(single_mcp))
                .with_state(SingleRoute {
                    served: served.clone(),
                    body: BodyBounds::of(&self.opts),
                    holds: Holds::of(&self.opts),
                }),
            Front::Tenants(front) => {
                let routes = TenantRoutes {
                    front: front.clone(),
                    body: BodyBounds::of(&self.opts),
                };
                axum::Router::new()
                    .route("/mcp", axum::routing::any(tenant_mcp))
                    .route(
                        "/.well-known/oauth-protected-resource",
                        axum::routing::get(resource_metadata),
                    )
                    .route(
                        "/.well-known/oauth-protected-resource/mcp",
                        axum::routing::get(resource_metadata),
                    )
                    .with_state(routes)
            }
        };
        app = app
            .layer(middleware::from_fn(move |req: Request, next: Next| {
                respond_within(timeout, req, next)
            }))
            .layer(middleware::from_fn(session_closed_no_content))
            .layer(middleware::from_fn(rmcp_refusals_say_how))
            .layer(middleware::from_fn_with_state(
                responses.clone(),
                track_responses,
            ));
        if let Some(token) = self.opts.bearer_token.clone() {
            let core = match &self.front {
                Front::Single(served) => served.server.core().clone(),
                Front::Tenants(front) => front.core.clone(),
            };
            app = app.layer(middleware::from_fn_with_state(
                (Arc::<str>::from(token), core),
                require_bearer,
            ));
        }
        let claims = matches!(self.front, Front::Tenants(_));
        let front = self.front;
        let grace = self.opts.shutdown_grace;
        let stop = async move {
            shutdown.await;
            tracing::info!("shutting down: waiting for running calls");
            // The servers serving now (a tenant removed by a reload has its
            // running responses in `responses`).
            let servers: Vec<McpServer> = match &front {
                Front::Single(s) => vec![s.server.clone()],
                Front::Tenants(f) => f
                    .table
                    .load()
                    .servers
                    .iter()
                    .map(|t| t.server.clone())
                    .collect(),
            };
            let drained = async {
                // Every server stops taking calls at once, then all drain.
                let each: Vec<_> = servers
                    .into_iter()
                    .map(|s| tokio::spawn(async move { s.drain().await }))
                    .collect();
                for d in each {
                    let _ = d.await;
                }
                responses.close();
                responses.wait().await;
            };
            if tokio::time::timeout(grace, drained).await.is_err() {
                tracing::warn!("calls still running after {grace:?}: cancelling them");
            }
            sessions.cancel();
        };
        tracing::info!("MCP over HTTP at http://{addr}/mcp");
        let bounds = super::accept::Bounds {
            max_connections: self.opts.max_connections,
            claims,
            per_address: self.opts.max_connections_per_address,
            header_read_timeout: self.opts.header_read_timeout,
            grace,
        };
        super::accept::serve(self.listener, app, bounds, stop).await;
        Ok(())
    }
}

/// `Host` values to accept: loopback names and the bound address, with
/// or without its port, plus the operator's.
fn allowed_hosts(addr: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .into_iter()
        .map(String::from)
        .collect();
    if !addr.ip().is_unspecified() {
        hosts.push(addr.ip().to_string());
    }
    hosts.extend(extra.iter().cloned());
    hosts
}

/// Browser origins to accept: pages served from this machine, plus the
/// operator's. Clients that send no `Origin` (every non-browser one) pass.
fn allowed_origins(extra: &[String]) -> Vec<String> {
    let mut origins: Vec<String> = ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"]
        .into_iter()
        .map(String::from)
        .collect();
    origins.extend(extra.iter().cloned());
    origins
}

/// An answer if the response has not started within `timeout`: 408 when
/// the client had not sent its whole body by then (a slow or lying upload:
/// the client's fault), 504 when it had and the handler is what is slow.
async fn respond_within(timeout: Duration, req: Request, next: Next) -> Response {
    // A request without a body (a GET) has nothing left to send.
    let empty = http_body::Body::is_end_stream(req.body());
    let received = Arc::new(std::sync::atomic::AtomicBool::new(empty));
    let req = req.map(|b| {
        Body::new(Received {
            inner: b,
            done: received.clone(),
        })
    });
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) if !received.load(std::sync::atomic::Ordering::Acquire) => (
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time\n",
        )
            .into_response(),
        Err(_) => (StatusCode::GATEWAY_TIMEOUT, "request timed out\n").into_response(),
    }
}

/// A request body that notes when it has been read to its end.
struct Received {
    inner: Body,
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl http_body::Body for Received {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let p = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(p, std::task::Poll::Ready(None)) || self.inner.is_end_stream() {
            self.done.store(true, std::sync::atomic::Ordering::Release);
        }
        p
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Count a POST as in flight until its response body is done (or dropped).
async fn track_responses(State(t): State<TaskTracker>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let in_flight = t.token();
    next.run(req).await.map(|body| {
        Body::new(Holding {
            inner: body,
            _held: in_flight,
        })
    })
}

/// rmcp answers a session `DELETE` with 202 Accepted, but the session is
/// already closed and clients (the Python SDK) expect 200 or 204.
async fn session_closed_no_content(req: Request, next: Next) -> Response {
    let delete = req.method() == Method::DELETE;
    let mut resp = next.run(req).await;
    if delete && resp.status() == StatusCode::ACCEPTED {
        *resp.status_mut() = StatusCode::NO_CONTENT;
    }
    resp
}

/// rmcp's refusals of a request's headers, said so a user can act on them.
/// A `Host` not allowed was "Forbidden: Host header is not allowed", which
/// named neither the check nor the fix: the first request through a load
/// balancer under a public name met it; an unknown `MCP-Protocol-Version`
/// did not say which this server speaks (found by the user review). The
/// client's header is not echoed further than rmcp does.
async fn rmcp_refusals_say_how(req: Request, next: Next) -> Response {
    use http_body::Body as _;
    let resp = next.run(req).await;
    // rmcp's refusals are a line of text; a longer body is not one.
    if !matches!(
        resp.status(),
        StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST
    ) || resp.body().size_hint().upper().is_none_or(|n| n > 4096)
    {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = http_body_util::BodyExt::collect(body)
        .await
        .map(|c| c.to_bytes())
    else {
        return Response::from_parts(parts, Body::empty());
    };
    let text = if bytes.starts_with(b"Forbidden: Host header is not allowed") {
        bytes::Bytes::from_static(
            b"Forbidden: the request's Host header is not a name this server answers to (it guards against DNS rebinding); start it with `--allow-host NAME` for each name clients use (`HttpConfig::allowed_hosts`)",
        )
    } else if bytes.starts_with(b"Bad Request: Unsupported MCP-Protocol-Version") {
        let known: Vec<&str> = rmcp::model::ProtocolVersion::KNOWN_VERSIONS
            .iter()
            .map(|v| v.as_str())
            .collect();
        let mut text = bytes.to_vec();
        text.extend_from_slice(format!(" (this server speaks {})", known.join(", ")).as_bytes());
        bytes::Bytes::from(text)
    } else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    // Its length is the new text's (set by hyper).
    let mut resp = Response::from_parts(parts, Body::from(text));
    resp.headers_mut().remove(header::CONTENT_LENGTH);
    resp
}

/// The client's address (see `accept`), for the audit log.
fn peer(extensions: &http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<super::accept::Connection>()
        .map(|c| c.peer)
}

/// 401 unless `Authorization: Bearer <token>` matches (in constant time).
async fn require_bearer(
    State((token, core)): State<(Arc<str>, crate::Core)>,
    req: Request,
    next: Next,
) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
        return next.run(req).await;
    }
    let why = match presented {
        Some(_) => "the bearer token is not this server's",
        None => "no bearer token was presented",
    };
    core.unauthenticated("mcp-http", why, peer(req.extensions()));
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a valid bearer token is required\n",
    )
        .into_response()
}

/// What the tenant routes share.
#[derive(Clone)]
struct TenantRoutes {
    front: Arc<TenantFront>,
    body: BodyBounds,
}

/// How a POST body is read: at most `max` bytes, and never `idle` without
/// one.
#[derive(Clone, Copy)]
struct BodyBounds {
    max: usize,
    idle: Duration,
}

impl BodyBounds {
    fn of(opts: &HttpOptions) -> BodyBounds {
        BodyBounds {
            max: opts.max_body_bytes,
            // As long as the headers may take.
            idle: opts.header_read_timeout.max(Duration::from_millis(100)),
        }
    }
}

/// Register a bound listener as toolhost's own: no tool may connect to it.
fn own_listener(l: &tokio::net::TcpListener) -> crate::caps::net::OwnListener {
    // A bound TCP socket always has an address; were it ever unknown, the
    // unspecified address on port 0 protects nothing but breaks nothing.
    let addr = l
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    crate::caps::net::OwnListener::register(addr)
}

/// The well-known URL of `resource`'s metadata (RFC 9728, section 3.1):
/// `/.well-known/oauth-protected-resource` inserted before its path.
fn metadata_url(resource: &str) -> String {
    let (scheme, rest) = resource.split_once("://").unwrap_or(("http", resource));
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = path.trim_end_matches('/');
    format!("{scheme}://{host}/.well-known/oauth-protected-resource{path}")
}

async fn resource_metadata(State(r): State<TenantRoutes>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r.front.table.load().metadata.to_string(),
    )
        .into_response()
}

/// 401 with the challenge the MCP authorization spec asks for.
fn unauthorized(r: &TenantTable, why: Option<&str>) -> Response {
    let challenge = match why {
        None => format!("Bearer resource_metadata=\"{}\"", r.metadata_url),
        Some(why) => format!(
            "Bearer resource_metadata=\"{}\", error=\"invalid_token\", error_description=\"{why}\"",
            r.metadata_url
        ),
    };
    // And the connection closes: a client without a valid credential
    // cannot keep one of the server's connection slots by retrying on it.
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, challenge),
            (header::CONNECTION, "close".to_string()),
        ],
        format!("{}\n", why.unwrap_or("a bearer token is required")),
    )
        .into_response()
}

/// The tenant of `table` whose credential `headers` carry, and the
/// principal its JWT names, or the 401.
#[allow(clippy::result_large_err, reason = "the error is the response")]
fn authenticate(
    front: &TenantFront,
    table: &TenantTable,
    headers: &header::HeaderMap,
    extensions: &http::Extensions,
) -> Result<(usize, Option<super::auth::Principal>), Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let why = match token.map(|t| table.tenancy.authenticate(t)) {
        Some(Ok(i)) => return Ok(i),
        None => None,
        Some(Err(why)) => Some(why),
    };
    front.core.unauthenticated(
        "mcp-http",
        why.unwrap_or("no bearer token was presented"),
        peer(extensions),
    );
    Err(unauthorized(table, why))
}

/// Authenticate, hold the request to the tenant's bounds and its
/// `tools/call`s to its quotas, and hand it to the tenant's own MCP service.
async fn tenant_mcp(State(r): State<TenantRoutes>, req: Request) -> Response {
    // The tenants as they are now.
    let mut table = r.front.table.load_full();
    let (mut i, principal) = match authenticate(&r.front, &table, req.headers(), req.extensions()) {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    let mut req = req;
    // Whom the token names, for the audit log of the request's calls;
    // never one the client set (extensions are the server's own).
    match principal {
        Some(s) => {
            req.extensions_mut().insert(s);
        }
        None => {
            req.extensions_mut().remove::<super::auth::Principal>();
        }
    }
    // The connection counts in its tenant's share from now on.
    if let Some(connection) = req.extensions().get::<super::accept::Connection>() {
        let most = r.front.services.most_connections();
        if !connection.claim(&table.servers[i].connections, most) {
            let who = format!("tenant `{}`", table.tenancy.tenants[i].tenant.name);
            return table.servers[i].too_many_connections(&who, most);
        }
    }
    // Counted from here (a slow upload holds a connection too) until the
    // response ends. Kept across a reload: a tenant that stays keeps its
    // server, and so its count.
    let (mut holds, mut held) = {
        let tenant = &table.tenancy.tenants[i].tenant;
        let holds = r.front.services.defaults.with(&tenant.quotas);
        let server = &table.servers[i];
        match server.open(holds.open_requests) {
            Some(held) => (holds, held),
            None => {
                let who = format!("tenant `{}`", tenant.name);
                return server.too_many_open(&who, holds.open_requests);
            }
        }
    };
    let (mut parts, body) = req.into_parts();
    if parts.method != Method::POST {
        let who = format!("tenant `{}`", table.tenancy.tenants[i].tenant.name);
        let req = Request::from_parts(parts, body);
        return table.servers[i]
            .serve(&who, holds, Arc::new(held), None, None, req)
            .await;
    }
    // A tenant with a fuel budget pays for the host's reading and parsing
    // of its requests (`quota::RequestMeter`); while the budget is spent,
    // a body that is not small (or of no stated length) is refused before
    // it is read. Small ones are read, and refused after their parse
    // unless they are light (`Parsed::light`; calls are admitted at their
    // own door, `admit_call`).
    let mut meter = {
        let scope = table.servers[i].server.scope();
        let meter = r.front.core.meter_request(scope);
        if let Some(m) = &meter {
            let len = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
            if m.refuses_unread(len) {
                let caller = format!("mcp-http:{}", table.tenancy.tenants[i].tenant.name);
                let q = r.front.core.refuse_metered(m, scope, &caller, "request");
                return over_quota(&q, None);
            }
        }
        meter
    };
    let bytes = {
        let who = format!("tenant `{}`", table.tenancy.tenants[i].tenant.name);
        match table.servers[i]
            .read_body(&who, body, r.body, holds, &mut held, meter.as_mut())
            .await
        {
            Ok(b) => b,
            Err(refused) => return refused,
        }
    };
    // The body arrives at the client's pace: a reload meanwhile may have
    // revoked the credential or given it to another tenant. The call is
    // made as the tenant the credential names now, and only if it is the
    // one it named when the request began.
    let now = r.front.table.load_full();
    if !Arc::ptr_eq(&now, &table) {
        let was = &table.tenancy.tenants[i].tenant.name;
        match authenticate(&r.front, &now, &parts.headers, &parts.extensions) {
            Ok((j, _)) if now.tenancy.tenants[j].tenant.name == *was => {
                // Counted by the server that serves it: one that replaced
                // the tenant's (removed, then added again) has a count of
                // its own.
                let tenant = &now.tenancy.tenants[j].tenant;
                holds = r.front.services.defaults.with(&tenant.quotas);
                if !now.servers[j].same_count(&table.servers[i]) {
                    let who = format!("tenant `{}`", tenant.name);
                    // The body as the old server counted it (its bytes and
                    // what parsing them takes), counted again here.
                    let body = held.holds;
                    held = match now.servers[j].open(holds.open_requests) {
                        Some(h) => h,
                        None => return now.servers[j].too_many_open(&who, holds.open_requests),
                    };
                    if let Err(refused) =
                        now.servers[j].take_body(&who, &mut held, body, holds.request_bytes)
                    {
                        return refused;
                    }
                }
                (table, i) = (now, j);
            }
            Ok(_) => {
                let why = "the token's tenant changed";
                r.front
                    .core
                    .unauthenticated("mcp-http", why, peer(&parts.extensions));
                return unauthorized(&now, Some(why));
            }
            Err(refused) => return refused,
        }
    }
    let held = Arc::new(held);
    let server = &table.servers[i];
    #[expect(clippy::result_large_err, reason = "the error is the response")]
    let read = || Post::read(server, &parts, &bytes);
    let post = match meter.as_mut() {
        Some(m) => m.measure(read),
        None => read(),
    };
    let tenant = &table.tenancy.tenants[i].tenant;
    let caller = format!("mcp-http:{}", tenant.name);
    if let Some(m) = meter.as_mut()
        && let Ok(Post::Rmcp(p)) = &post
    {
        // rmcp's service parses the body once more.
        m.again();
        if p.call.is_none() && m.refuses_parsed(p.light) {
            let q = r
                .front
                .core
                .refuse_metered(m, server.server.scope(), &caller, "request");
            return over_quota(&q, p.id.clone());
        }
    }
    let post = match post {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let admitted = server.admit_call(&caller, &post, &held, &mut parts);
    // Charged now (the call, if it is one, judged on the balance before).
    drop(meter);
    if let Err(refused) = admitted {
        return refused;
    }
    let parsed = match post {
        Post::Lane(call) => return server.answer_stateless(held, call, parts).await,
        Post::Rmcp(parsed) => parsed,
    };
    let who = format!("tenant `{}`", tenant.name);
    let req = Request::from_parts(parts, Body::from(bytes));
    server
        .serve(
            &who,
            holds,
            held,
            parsed.initialize.map(|i| *i),
            parsed.id,
            req,
        )
        .await
}

/// 429 for a refusal under a tenant's quota, answering `id` if given.
fn over_quota(q: &crate::quota::OverQuota, id: Option<serde_json::Value>) -> Response {
    too_many(&q.message, q.retry_after.as_secs(), id)
}

/// 408 for a body that sent nothing for `idle`.
fn body_stalled(idle: Duration) -> Response {
    (
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "request body stalled: no byte of it for {} ms\n",
            idle.as_millis()
        ),
    )
        .into_response()
}

/// 413, naming the tenant's `max-request-bytes` when that is what a body
/// passed.
fn body_too_large(quota: Option<(&str, usize)>) -> Response {
    let message = match quota {
        None => "request body too large\n".to_string(),
        Some((who, max)) => format!(
            "request body too large for {who}: with what parsing it takes, it passes `max-request-bytes = {max}` on its own\n"
        ),
    };
    (StatusCode::PAYLOAD_TOO_LARGE, message).into_response()
}

/// A POST, read: a stateless call the lane answers, or a request for
/// rmcp's service.
enum Post {
    Lane(stateless_call::Call),
    Rmcp(Parsed),
}

impl Post {
    #[allow(clippy::result_large_err, reason = "the error is the response")]
    fn read(
        server: &TenantServer,
        parts: &http::request::Parts,
        bytes: &[u8],
    ) -> Result<Post, Response> {
        match server.lane.take(parts, bytes, &server.server) {
            Some(call) => Ok(Post::Lane(call)),
            None => Parsed::from(bytes).map(Post::Rmcp),
        }
    }

    /// A `tools/call`'s id and tool.
    fn call(&self) -> Option<(serde_json::Value, &str)> {
        match self {
            Post::Lane(c) => Some((c.id(), c.tool())),
            Post::Rmcp(p) => p.call.as_ref().map(|(id, t)| (id.clone(), t.as_str())),
        }
    }
}

/// What the front end needs to know of a POST body before rmcp serves it.
struct Parsed {
    /// The JSON-RPC id of a request (a refusal answers it).
    id: Option<serde_json::Value>,
    /// A `tools/call`'s id and tool.
    call: Option<(serde_json::Value, String)>,
    /// An `initialize`'s parameters, to seal into the session's id.
    /// (Boxed: it is large and rare, and a `Post` holds it.)
    initialize: Option<Box<rmcp::model::InitializeRequestParams>>,
    /// A message that passes while its tenant's fuel is spent: a
    /// notification, an answer, a ping or a task's poll (what a client
    /// owes the host, or a call paid for already). Not a body that does
    /// not parse.
    light: bool,
}

impl Parsed {
    /// Parsed exactly as rmcp will parse it, so what is counted as a call
    /// is what runs as one (a duplicated `method` key cannot slip by). A
    /// body that does not parse is rmcp's to refuse.
    #[allow(clippy::result_large_err, reason = "the error is the response")]
    fn from(bytes: &[u8]) -> Result<Parsed, Response> {
        use rmcp::model::{ClientJsonRpcMessage, ClientRequest};
        let message = serde_json::from_slice::<ClientJsonRpcMessage>(bytes).ok();
        let mut parsed = Parsed {
            id: None,
            call: None,
            initialize: None,
            light: false,
        };
        let Some(message) = message else {
            return Ok(parsed);
        };
        parsed.light = match &message {
            ClientJsonRpcMessage::Request(r) => matches!(
                r.request.method(),
                "ping" | "tasks/get" | "tasks/result" | "tasks/cancel"
            ),
            _ => true,
        };
        if let ClientJsonRpcMessage::Request(r) = &message {
            let id = serde_json::to_value(&r.id).unwrap_or_default();
            if let ClientRequest::CallToolRequest(c) = &r.request {
                parsed.call = Some((id.clone(), c.params.name.to_string()));
            }
            parsed.id = Some(id);
        }
        parsed.initialize = session::initialize_params(&message)
            .map_err(|why| too_large_to_seal(&why))?
            .map(Box::new);
        Ok(parsed)
    }
}

/// The route of a tenantless server.
#[derive(Clone)]
struct SingleRoute {
    /// Shared: axum clones the state for every request, and a server's
    /// clone copies its service's config (host and origin lists).
    served: Arc<TenantServer>,
    body: BodyBounds,
    holds: Holds,
}

/// Hand the request to the server's MCP service, within the server's
/// bounds; an `initialize` has its parameters sealed into the new
/// session's id.
async fn single_mcp(State(r): State<SingleRoute>, req: Request) -> Response {
    const WHO: &str = "the server";
    let Some(mut held) = r.served.open(r.holds.open_requests) else {
        return r.served.too_many_open(WHO, r.holds.open_requests);
    };
    if req.method() != Method::POST {
        return r
            .served
            .serve(WHO, r.holds, Arc::new(held), None, None, req)
            .await;
    }
    let (mut parts, body) = req.into_parts();
    let bytes = match r
        .served
        .read_body(WHO, body, r.body, r.holds, &mut held, None)
        .await
    {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let held = Arc::new(held);
    let post = match Post::read(&r.served, &parts, &bytes) {
        Ok(post) => post,
        Err(refused) => return refused,
    };
    if let Err(refused) = r.served.admit_call("mcp-http", &post, &held, &mut parts) {
        return refused;
    }
    let parsed = match post {
        Post::Lane(call) => return r.served.answer_stateless(held, call, parts).await,
        Post::Rmcp(parsed) => parsed,
    };
    let req = Request::from_parts(parts, Body::from(bytes));
    r.served
        .serve(
            WHO,
            r.holds,
            held,
            parsed.initialize.map(|i| *i),
            parsed.id,
            req,
        )
        .await
}

/// 400 for an `initialize` too large to seal into a session id.
fn too_large_to_seal(why: &str) -> Response {
    (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_tokens_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn metadata_urls_insert_the_well_known_path() {
        assert_eq!(
            metadata_url("https://mcp.example.com/mcp"),
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            metadata_url("http://127.0.0.1:8750"),
            "http://127.0.0.1:8750/.well-known/oauth-protected-resource"
        );
    }

    #[test]
    fn allows_the_bound_address_but_not_the_unspecified_one() {
        let h = allowed_hosts("10.0.0.5:80".parse().unwrap(), &["mcp.example".into()]);
        assert!(h.contains(&"10.0.0.5".to_string()));
        assert!(h.contains(&"mcp.example".to_string()));
        let h = allowed_hosts("0.0.0.0:80".parse().unwrap(), &[]);
        assert!(!h.contains(&"0.0.0.0".to_string()));
    }
}
