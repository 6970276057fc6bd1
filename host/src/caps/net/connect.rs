//! Sending a granted request: resolve the name once, check the address,
//! connect to exactly that address.
//!
//! Owns DNS resolution and the address policy of outbound `wasi:http`, and
//! the registry of toolhost's own listening addresses. Must not touch which
//! hosts a tool is granted (that is [`super::Gate::permits`], decided on the
//! name before anything here runs).
//!
//! Why not `wasmtime_wasi_http::default_send_request`: it hands the
//! authority to `TcpStream::connect`, which resolves it itself, so the
//! address actually reached is never seen, and a name may resolve to one
//! address when checked and another when connected (DNS rebinding). Here the
//! address that passed the check is the one connected to; the request, TLS
//! (server name = the granted name) and HTTP/1.1 are otherwise the same as
//! upstream's, on the same crates (hyper, tokio-rustls with webpki roots).
//!
//! The policy:
//! - a request to an **IP literal** reaches it only if the grant names that
//!   literal (host patterns never match a literal with a `*.` wildcard), so
//!   an operator who grants `127.0.0.1:8080` gets exactly that;
//! - a request to a **name** reaches only public addresses: loopback,
//!   private, link-local (cloud metadata at 169.254.169.254), carrier-grade
//!   NAT, unique-local, multicast, documentation and reserved ranges, and
//!   IPv6 forms that embed such an IPv4 address, are refused with
//!   `destination-ip-prohibited`, whatever the name;
//! - toolhost's **own listeners** (`serve --http`, `--metrics`) are never
//!   reachable, even when granted by literal address.

use bytes::Bytes;
use http::uri::Scheme;
use http_body::Body;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use wasmtime_wasi_http::{Error, RequestOptions};

/// The largest buffer hyper keeps for one connection's reads (and its
/// queued writes): response heads larger than this are refused
/// (`HTTP_RESPONSE_HEADER_SIZE`-class errors), bodies stream through it.
/// hyper's default is ~400 KiB.
const READ_BUFFER: usize = 64 << 10;

/// The largest response head handed to a guest (names and values): the
/// same 16 KiB as one `fields` resource (`sandbox::state`).
const HEAD_LIMIT: usize = 16 << 10;

/// What one open connection (and its response body, which may outlive it)
/// is charged to the call's memory: hyper's read buffer ([`READ_BUFFER`],
/// up to twice that while it grows) and write buffer, frames in flight,
/// the head, rustls's record buffers and plaintext limit (64 KiB), the
/// connection task and the socket's own state, rounded up. A call holding
/// many connections open runs out of its memory limit, not the host's.
pub(crate) const CONNECTION_BYTES: usize = 512 << 10;

/// How long a connect (DNS, TCP, TLS, HTTP handshake) may take when the
/// guest sets no timeout: the call's own deadline usually ends it sooner.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Whether `ip` is an ordinary address on the public internet, the only
/// kind a granted *name* may lead to.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0                                   // "this network", 0.0.0.0
        || a == 10                             // private
        || a == 127                            // loopback
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 169 && b == 254)              // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 0 && c == 0)      // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)      // documentation
        || (a == 192 && b == 88 && c == 99)    // 6to4 relay anycast
        || (a == 192 && b == 168)              // private
        || (a == 198 && (b == 18 || b == 19))  // benchmarking
        || (a == 198 && b == 51 && c == 100)   // documentation
        || (a == 203 && b == 0 && c == 113)    // documentation
        || a >= 224) // multicast, reserved, broadcast
}

/// The IPv4 address in segments `i` and `i + 1` of an IPv6 address.
fn v4_at(s: &[u16; 8], i: usize) -> Ipv4Addr {
    let [a, b] = s[i].to_be_bytes();
    let [c, d] = s[i + 1].to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // Forms that carry an IPv4 address are judged by that address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        // IPv4-translated (SIIT, ::ffff:0:0/96): a translator on the path
        // carries it to the IPv4 address (found by review: judged as an
        // IPv6 address, `::ffff:0:a9fe:a9fe` passed as public).
        return is_public_v4(v4_at(&s, 6));
    }
    if s[0] == 0x64 && s[1] == 0xff9b {
        // NAT64 (64:ff9b::/96 and the local-use 64:ff9b:1::/48).
        return s[2] == 0 && s[3..6] == [0, 0, 0] && is_public_v4(v4_at(&s, 6));
    }
    if s[0] == 0x2002 {
        // 6to4: the IPv4 address is in the next 32 bits.
        return is_public_v4(v4_at(&s, 1));
    }
    !(s[..6] == [0, 0, 0, 0, 0, 0]            // ::, ::1, IPv4-compatible
        || s[..4] == [0x100, 0, 0, 0]         // discard-only
        || (s[0] == 0x2001 && s[1] == 0)      // Teredo (tunnels to anything)
        || (s[0] == 0x2001 && s[1] == 0xdb8)  // documentation
        || (s[0] & 0xfe00) == 0xfc00          // unique-local (incl. fd00:ec2::254)
        || (s[0] & 0xffc0) == 0xfe80          // link-local
        || (s[0] & 0xffc0) == 0xfec0          // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00) // multicast
}

/// Addresses toolhost itself listens on.
fn own_listeners() -> &'static Mutex<Vec<(u64, SocketAddr)>> {
    static OWN: OnceLock<Mutex<Vec<(u64, SocketAddr)>>> = OnceLock::new();
    OWN.get_or_init(Default::default)
}

/// Keeps a listening address unreachable from tools while it lives.
#[derive(Debug)]
#[cfg_attr(
    not(feature = "http"),
    allow(dead_code, reason = "only the HTTP listeners register")
)]
pub(crate) struct OwnListener(u64);

#[cfg_attr(
    not(feature = "http"),
    allow(dead_code, reason = "only the HTTP listeners register")
)]
impl OwnListener {
    /// Register `addr` (as bound: an unspecified IP stands for every local
    /// address) until the returned guard drops.
    pub(crate) fn register(addr: SocketAddr) -> OwnListener {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        own_listeners()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, addr));
        OwnListener(id)
    }
}

impl Drop for OwnListener {
    fn drop(&mut self) {
        own_listeners()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(id, _)| *id != self.0);
    }
}

/// Whether `to` would reach one of toolhost's own listeners. A listener on
/// an unspecified address (`0.0.0.0`, `::`) is reachable on every local
/// address; those cannot all be known, so every non-public address on its
/// port counts as it (a public address of this machine is a residual risk
/// SECURITY.md names). Addresses are compared in their canonical form (an
/// IPv4-mapped `::ffff:127.0.0.1` is `127.0.0.1`), and every address the
/// kernel delivers to this host itself (loopback, and the unspecified
/// `0.0.0.0` and `::`, which a connect sends to loopback) is one: a
/// listener on any of them is reached through all of them.
fn is_own(to: SocketAddr) -> bool {
    let target = to.ip().to_canonical();
    let own = own_listeners().lock().unwrap_or_else(|e| e.into_inner());
    own.iter().any(|(_, l)| {
        let listener = l.ip().to_canonical();
        l.port() == to.port()
            && (listener == target
                || (listener.is_unspecified() && !is_public(target))
                || (is_this_host(listener) && is_this_host(target)))
    })
}

/// Whether a connection from `local` to `peer` reached one of toolhost's
/// own listeners on this host by an address [`is_own`] cannot know is this
/// host's: its public one, which a name may resolve to (found by review: a
/// listener on `0.0.0.0` was reached that way). A connection to this host
/// leaves from the address it goes to.
fn is_own_connection(local: SocketAddr, peer: SocketAddr) -> bool {
    let here = peer.ip().to_canonical();
    local.ip().to_canonical() == here && {
        let own = own_listeners().lock().unwrap_or_else(|e| e.into_inner());
        own.iter().any(|(_, l)| {
            l.port() == peer.port() && (l.ip().is_unspecified() || l.ip().to_canonical() == here)
        })
    }
}

/// Whether a connect to `ip` stays on this host: loopback, or an address
/// of "this network" (`0.0.0.0/8`, `::`), which Linux connects to loopback.
fn is_this_host(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.is_loopback() || v4.octets()[0] == 0,
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified(),
    }
}

/// Name lookups that may run at once in the process, for every call
/// together.
pub(super) const LOOKUPS: usize = 32;

/// The lookup slots a request takes besides one of the process's, without
/// waiting: one of its call's, and one of its scope's share if it has one
/// (see `LookupShares`).
pub(crate) struct Lookups {
    pub(crate) call: Arc<tokio::sync::Semaphore>,
    pub(crate) scope: Option<Arc<tokio::sync::Semaphore>>,
}

impl Lookups {
    /// The slots, or why there is none free.
    fn take(&self) -> Result<impl Send + 'static, Error> {
        let refused = |whose: &str| Error::DnsError {
            rcode: Some(format!(
                "{whose} as many name lookups running as it may (abandoned ones count until they end)"
            )),
            info_code: None,
        };
        let call = self
            .call
            .clone()
            .try_acquire_owned()
            .map_err(|_| refused("this call has"))?;
        let scope = match &self.scope {
            Some(s) => Some(
                s.clone()
                    .try_acquire_owned()
                    .map_err(|_| refused("this tool's scope (its tenant) has"))?,
            ),
            None => None,
        };
        Ok((call, scope))
    }
}

/// The slots of [`LOOKUPS`].
fn lookup_slots() -> &'static Arc<tokio::sync::Semaphore> {
    static SLOTS: OnceLock<Arc<tokio::sync::Semaphore>> = OnceLock::new();
    SLOTS.get_or_init(|| Arc::new(tokio::sync::Semaphore::new(LOOKUPS)))
}

/// The addresses `host:port` resolves to, from the system resolver.
///
/// Why not `tokio::net::lookup_host`: a lookup is a `getaddrinfo` on the
/// runtime's blocking pool, which also serves every call's file I/O, and
/// nothing stops it once started. A guest that gives up on its requests
/// (a zero connect timeout, a dropped request) while a slow resolver keeps
/// their lookups running could fill the pool. Here at most [`LOOKUPS`] run
/// at once, and each holds its slot and `held` (the connection's charge to
/// the call's memory) until `getaddrinfo` returns, whatever became of the
/// request: a call's abandoned lookups count against its memory limit, and
/// all calls' against the slots.
async fn lookup(
    host: &str,
    port: u16,
    timeout: Duration,
    held: impl Send + 'static,
) -> Result<Vec<SocketAddr>, Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    let slot = tokio::time::timeout_at(deadline, lookup_slots().clone().acquire_owned())
        .await
        .map_err(|_| Error::DnsTimeout)?
        .expect("the lookup slots are never closed");
    let name = host.to_string();
    let found = tokio::task::spawn_blocking(move || {
        let _held = (slot, held);
        std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), port)).map(Vec::from_iter)
    });
    let dns_error = |e: String| Error::DnsError {
        rcode: Some(e),
        info_code: None,
    };
    match tokio::time::timeout_at(deadline, found).await {
        Err(_) => Err(Error::DnsTimeout),
        Ok(Err(e)) => Err(dns_error(e.to_string())),
        Ok(Ok(r)) => r.map_err(|e| dns_error(e.to_string())),
    }
}

/// The one address a request to `host:port` may connect to; `held` is kept
/// until the name's lookup ends (see [`lookup`]), and so are the slots of
/// `lookups`, taken without waiting.
pub(crate) async fn resolve(
    host: &str,
    port: u16,
    timeout: Duration,
    held: impl Send + 'static,
    lookups: &Lookups,
) -> Result<SocketAddr, Error> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        // The grant named this literal (wildcards never match literals).
        // An unspecified address is no destination: a connect to it lands
        // on loopback, whatever the grant meant.
        let to = SocketAddr::new(ip, port);
        if ip.to_canonical().is_unspecified() {
            tracing::debug!(%to, "outbound request denied: an unspecified address");
            return Err(Error::DestinationIpProhibited);
        }
        if is_own(to) {
            tracing::debug!(%to, "outbound request denied: toolhost's own listener");
            return Err(Error::DestinationIpProhibited);
        }
        return Ok(to);
    }
    let mine = lookups.take()?;
    let found = lookup(bare, port, timeout, (held, mine)).await?;
    let mut refused = None;
    for to in found {
        if is_public(to.ip()) && !is_own(to) {
            return Ok(to);
        }
        refused = Some(to);
    }
    match refused {
        Some(to) => {
            tracing::debug!(host = bare, %to, "outbound request denied: the name resolves to a non-public address");
            Err(Error::DestinationIpProhibited)
        }
        None => Err(Error::DestinationNotFound),
    }
}

pin_project_lite::pin_project! {
    /// A request body that is cut off, not ended, once its call's
    /// connections are closed: wasmtime-wasi-http ends a body whose table
    /// entry is dropped as if complete, and hyper would then send its last
    /// chunk, so an upload cut off by a trap, deadline or cancel reached its
    /// server looking whole (found by review). The gate closes first (see
    /// `Gate`'s `Drop`), so its end, seen after that, is an error.
    struct CutOff<B> {
        #[pin]
        inner: B,
        closed: tokio_util::sync::CancellationToken,
    }
}

impl<B: Body<Data = Bytes, Error = Error>> Body for CutOff<B> {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            std::task::Poll::Ready(None) if this.closed.is_cancelled() => {
                std::task::Poll::Ready(Some(Err(Error::ConnectionTerminated)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        // Polled to its end once closed, to be cut off there.
        !self.closed.is_cancelled() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

type Stream = Box<dyn TokioStream>;
trait TokioStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> TokioStream for T {}

/// Send `req` (already granted by name) to the address [`resolve`] checks,
/// over TLS for `https`. Returns the response and a future that drives the
/// connection to its end, as `WasiHttpHooks::send_request` wants.
pub(crate) async fn send(
    mut req: http::Request<impl Body<Data = Bytes, Error = Error> + Send + 'static>,
    options: Option<RequestOptions>,
    hold: impl Clone + Send + 'static,
    lookups: Lookups,
    closed: tokio_util::sync::CancellationToken,
) -> Result<
    (
        http::Response<hyper::body::Incoming>,
        impl Future<Output = Result<(), Error>> + Send + 'static,
    ),
    Error,
> {
    let uri = req.uri();
    let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?.to_string();
    let tls = uri.scheme() == Some(&Scheme::HTTPS);
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let connect_timeout = options
        .and_then(|o| o.connect_timeout)
        .unwrap_or(DEFAULT_TIMEOUT);
    let first_byte_timeout = options
        .and_then(|o| o.first_byte_timeout)
        .unwrap_or(DEFAULT_TIMEOUT);

    let to = resolve(&host, port, connect_timeout, hold.clone(), &lookups).await?;
    let tcp = tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(to))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => Error::ConnectionRefused,
            _ => Error::Connect(e),
        })?;
    if let (Ok(local), Ok(peer)) = (tcp.local_addr(), tcp.peer_addr())
        && is_own_connection(local, peer)
    {
        tracing::debug!(%peer, "outbound request denied: toolhost's own listener, by this host's address");
        return Err(Error::DestinationIpProhibited);
    }
    let stream: Stream = if tls {
        let name = match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => rustls::pki_types::ServerName::from(ip),
            Err(_) => rustls::pki_types::ServerName::try_from(host.clone())?,
        };
        let tls = tokio::time::timeout(connect_timeout, tls_connector().connect(name, tcp))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(Error::Tls)?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::Builder::new()
            .max_buf_size(READ_BUFFER)
            .handshake::<_, _>(hyper_util::rt::TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;
    // Origin-form on the wire: scheme and authority go only to proxies.
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    *req.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;

    // The connection is driven on its own task (it ends with the response
    // body, when the sender drops, or when the call's gate closes its
    // connections: dropped then, unflushed, whatever the peer does); its
    // result is the returned future's. `hold` (the connection's charge to
    // the call's memory) lives as long as the connection does.
    let closed_too = closed.clone();
    let conn = tokio::spawn(async move {
        let _hold = hold;
        tokio::select! {
            biased;
            () = closed.cancelled() => None,
            r = conn => Some(r),
        }
    });
    let req = req.map(|inner| CutOff {
        inner,
        closed: closed_too,
    });
    let mut res = tokio::time::timeout(first_byte_timeout, sender.send_request(req))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)??;
    // The head goes to the guest: at most HEAD_LIMIT, and copied out of
    // hyper's read buffer, which its values would otherwise keep alive
    // (up to READ_BUFFER a response) after the connection is gone.
    let size: usize = res
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if size > HEAD_LIMIT {
        return Err(Error::HttpResponseHeaderSectionSize(
            u32::try_from(size).ok(),
        ));
    }
    for v in res.headers_mut().values_mut() {
        let mut copy =
            http::HeaderValue::from_bytes(v.as_bytes()).expect("a valid value stays valid");
        copy.set_sensitive(v.is_sensitive());
        *v = copy;
    }
    Ok((res, async move {
        match conn.await {
            Ok(Some(Ok(()))) => Ok(()),
            Ok(Some(Err(e))) if e.is_timeout() => Err(Error::HttpResponseTimeout),
            Ok(Some(Err(e))) => Err(e.into()),
            Ok(None) | Err(_) => Err(Error::ConnectionTerminated),
        }
    }))
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    });
    tokio_rustls::TlsConnector::from(config.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ordinary_internet_addresses_are_public() {
        for ip in [
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "192.0.0.170",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:0:a9fe:a9fe",
            "::ffff:0:7f00:1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "2001::1",
            "2001:db8::1",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "ff02::1",
        ] {
            assert!(
                !is_public(ip.parse().unwrap()),
                "{ip} must not count as public"
            );
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "169.253.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "::ffff:0:808:808",
            "64:ff9b::808:808",
            "2002:808:808::",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip} is public");
        }
    }

    /// A call's own lookup slots and no scope's, for tests.
    fn calls() -> Lookups {
        Lookups {
            call: Arc::new(tokio::sync::Semaphore::new(4)),
            scope: None,
        }
    }

    /// A call with every one of its lookups running takes no other.
    #[tokio::test]
    async fn a_call_has_a_few_lookups_running_at_most() {
        let mine = Lookups {
            call: Arc::new(tokio::sync::Semaphore::new(1)),
            scope: None,
        };
        let held = mine.call.clone().try_acquire_owned().unwrap();
        let e = resolve("localhost", 80, Duration::from_secs(5), (), &mine)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::DnsError { rcode: Some(m), .. } if m.contains("as many name lookups")),
            "{e:?}"
        );
        // Literals need no lookup.
        assert!(
            resolve("127.0.0.1", 80, Duration::from_secs(5), (), &mine)
                .await
                .is_ok()
        );
        drop(held);
        let e = resolve("localhost", 80, Duration::from_secs(5), (), &mine)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::DestinationIpProhibited), "{e:?}");
        assert_eq!(mine.call.available_permits(), 1, "given back once it ended");
    }

    /// A scope whose calls hold its share of the lookups takes no other,
    /// whichever of its calls asks; another scope's calls still look up.
    #[tokio::test]
    async fn a_scope_has_its_share_of_the_lookups_running_at_most() {
        let shares = super::super::LookupShares::default();
        let scope = crate::catalog::Scope::new("t");
        let share = shares.of(&scope, 1.0 / 16.0);
        assert_eq!(share.available_permits(), LOOKUPS / 16);
        let busy: Vec<_> = (0..LOOKUPS / 16)
            .map(|_| share.clone().try_acquire_owned().unwrap())
            .collect();
        let fresh_call = Lookups {
            scope: Some(share.clone()),
            ..calls()
        };
        let e = resolve("localhost", 80, Duration::from_secs(5), (), &fresh_call)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::DnsError { rcode: Some(m), .. } if m.contains("scope (its tenant) has as many")),
            "{e:?}"
        );
        assert_eq!(
            fresh_call.call.available_permits(),
            4,
            "a refused lookup holds none of its call's slots"
        );
        let other = Lookups {
            scope: Some(shares.of(&crate::catalog::Scope::new("u"), 1.0 / 16.0)),
            ..calls()
        };
        let e = resolve("localhost", 80, Duration::from_secs(5), (), &other)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::DestinationIpProhibited), "{e:?}");
        drop(busy);
        let e = resolve("localhost", 80, Duration::from_secs(5), (), &fresh_call)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::DestinationIpProhibited), "{e:?}");
        assert_eq!(share.available_permits(), LOOKUPS / 16, "given back");
        // Every share has a slot, and none more than the process has.
        let (a, b) = (
            crate::catalog::Scope::new("a"),
            crate::catalog::Scope::new("b"),
        );
        assert_eq!(shares.of(&a, 0.0).available_permits(), 1);
        assert_eq!(shares.of(&b, 4.0).available_permits(), LOOKUPS);
    }

    /// Lookups wait for one of the process's slots, within their timeout;
    /// what a lookup holds is kept until it ends, then given back.
    #[tokio::test]
    async fn lookups_take_a_slot_and_hold_their_charge_until_they_end() {
        let all = lookup_slots()
            .clone()
            .acquire_many_owned(LOOKUPS as u32)
            .await
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let e = resolve(
            "localhost",
            80,
            Duration::from_millis(50),
            tx.clone(),
            &calls(),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, Error::DnsTimeout), "{e:?}");
        drop(all);
        // With a slot free, the lookup runs; its charge (here, a sender)
        // lives until it has ended.
        let e = resolve("localhost", 80, Duration::from_secs(5), tx, &calls())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::DestinationIpProhibited), "{e:?}");
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected),
            "every sender is dropped once its lookup has ended"
        );
    }

    #[tokio::test]
    async fn names_that_resolve_to_this_machine_are_refused() {
        let e = resolve("localhost", 8080, Duration::from_secs(5), (), &calls())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::DestinationIpProhibited), "{e:?}");
    }

    /// A listener on every address is reached through this host's public
    /// one too: a connection that leaves from the address it goes to, to
    /// its port, is refused once made.
    #[test]
    fn a_connection_to_this_hosts_own_address_and_listener_is_refused() {
        let own = OwnListener::register("0.0.0.0:45690".parse().unwrap());
        let at = |l: &str, p: &str| is_own_connection(l.parse().unwrap(), p.parse().unwrap());
        assert!(at("203.0.114.7:40000", "203.0.114.7:45690"));
        assert!(at("[2001:db9::7]:40000", "[2001:db9::7]:45690"));
        // Another machine, or another port of this one: the grant's.
        assert!(!at("203.0.114.7:40000", "203.0.114.8:45690"));
        assert!(!at("203.0.114.7:40000", "203.0.114.7:45691"));
        drop(own);
        assert!(!at("203.0.114.7:40000", "203.0.114.7:45690"));
        let own = OwnListener::register("203.0.114.7:45692".parse().unwrap());
        assert!(at("203.0.114.7:40000", "203.0.114.7:45692"));
        drop(own);
    }

    #[tokio::test]
    async fn literals_are_reached_but_never_toolhosts_own_listeners() {
        async fn prohibited(hosts: &[&str], port: u16) {
            for host in hosts {
                let e = resolve(host, port, Duration::from_secs(1), (), &calls())
                    .await
                    .unwrap_err();
                assert!(matches!(e, Error::DestinationIpProhibited), "{host}: {e:?}");
            }
        }
        let l: SocketAddr = "127.0.0.1:45679".parse().unwrap();
        assert_eq!(
            resolve("127.0.0.1", 45679, Duration::from_secs(1), (), &calls())
                .await
                .unwrap(),
            l
        );
        let own = OwnListener::register("0.0.0.0:45679".parse().unwrap());
        prohibited(&["127.0.0.1", "[::1]", "10.0.0.5"], 45679).await;
        // Nor through the other forms the kernel delivers to loopback.
        let own_lo = OwnListener::register("127.0.0.1:45681".parse().unwrap());
        prohibited(
            &[
                "0.0.0.0",
                "0.1.2.3",
                "[::]",
                "[::ffff:127.0.0.1]",
                "[::ffff:0.0.0.0]",
                "127.0.0.2",
            ],
            45681,
        )
        .await;
        drop(own_lo);
        let own_v6 = OwnListener::register("[::1]:45682".parse().unwrap());
        prohibited(&["[::]", "0.0.0.0", "127.0.0.1"], 45682).await;
        drop(own_v6);
        // An unspecified address is never a destination, listener or not.
        prohibited(&["0.0.0.0", "[::]", "[::ffff:0.0.0.0]"], 45683).await;
        // Another port of the same machine is the grant's business.
        assert!(
            resolve("127.0.0.1", 45680, Duration::from_secs(1), (), &calls())
                .await
                .is_ok()
        );
        drop(own);
        assert!(
            resolve("127.0.0.1", 45679, Duration::from_secs(1), (), &calls())
                .await
                .is_ok()
        );
    }
}
