//! The HTTP listeners' connections (the MCP front end's, and the metrics
//! listener's): accepting them, bounding them, and closing them on
//! shutdown.
//!
//! - At most `max_connections` at once (fewer if the process's descriptor
//!   limit leaves no room for them beside what calls may hold): past it
//!   the accept loop waits, and new connections queue in the kernel's
//!   backlog (as nginx's `worker_connections`), so no client can exhaust
//!   the process's descriptors.
//! - At most `per_address` of them from one client address (IPv6: one
//!   /64, what one client is usually given), when set: past it a new
//!   connection is answered `429` and closed at once, so one client cannot
//!   hold every slot. Off by default: behind a proxy every connection has
//!   the proxy's address (its `limit_conn` bounds clients there).
//! - A client must send a request's headers within `header_read_timeout`
//!   (also the longest an idle keep-alive connection is kept): a connection
//!   that opens and sends nothing, or trickles its headers (slowloris),
//!   is closed.
//! - On shutdown: stop accepting, then let open connections finish their
//!   responses, within the grace period.
//! - Each request carries its [`Connection`]: the peer's address, for the
//!   audit log, and (`claims`) whose share of the connections it counts
//!   against (a tenant's, claimed by the routes).
//!
//! Written here rather than `axum::serve` because that sets neither bound
//! (M7 in SECURITY.md); hyper's own connection builder and hyper-util's
//! graceful shutdown do the work. Owns no request handling: the routers
//! are `http`'s and the metrics listener's (`metrics`).

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How connections are bounded.
pub(crate) struct Bounds {
    /// At most this many at once (see [`connection_cap`]).
    pub(crate) max_connections: usize,
    /// Whether connections count in the shares routes claim them for
    /// ([`Connection::claim`]).
    pub(crate) claims: bool,
    /// Connections per client address; 0: no limit.
    pub(crate) per_address: usize,
    pub(crate) header_read_timeout: Duration,
    /// How long shutdown waits for open connections to finish.
    pub(crate) grace: Duration,
}

/// At most `wanted` connections, and never more than the descriptors the
/// host keeps for itself allow (less room for its own files: the audit
/// log, the compile cache, reloads).
pub(crate) fn connection_cap(wanted: usize) -> usize {
    let room = crate::caps::fs::enforce::host_descriptors().saturating_sub(256);
    if wanted > room {
        tracing::warn!(
            "max connections lowered from {wanted} to {room}: the process's descriptor limit leaves no more (raise `ulimit -n`)"
        );
    }
    wanted.min(room).max(1)
}

/// The host a `Host` header names (an authority: `name`, `name:port`,
/// `[v6]:port`), without its port or brackets; `None` if it is not one.
/// Both listeners judge `Host` by it.
pub(crate) fn host_name(value: &str) -> Option<String> {
    let authority = http::uri::Authority::try_from(value).ok()?;
    Some(authority.host().trim_matches(['[', ']']).to_string())
}

/// The most a connection's read buffer holds: a request's head must fit.
const MAX_READ_BUFFER: usize = 64 << 10;

/// Serve `app` on `listener` until `stop` resolves, then close.
pub(crate) async fn serve(
    listener: TcpListener,
    app: axum::Router,
    bounds: Bounds,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let graceful = GracefulShutdown::new();
    // Ends the connections still open when the grace period is over.
    let closing = CancellationToken::new();
    let slots = Arc::new(Semaphore::new(bounds.max_connections.max(1)));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Zero would close every connection at once.
        .header_read_timeout(bounds.header_read_timeout.max(Duration::from_millis(100)))
        // hyper buffers a request's head up to about 408 KiB by default:
        // 4,096 connections each sending an unfinished 400 KB header held
        // 1.6 GB for the header timeout, with no credential (found by
        // review). A head past this is refused (431).
        .max_buf_size(MAX_READ_BUFFER)
        .keep_alive(true);
    let per_address = Arc::new(PerAddress::new(bounds.per_address));
    let mut stop = std::pin::pin!(stop);
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            () = &mut stop => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                // A connection reset before it was accepted: the next.
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of descriptors or memory: wait, as axum's loop
                    // does, instead of spinning.
                    tracing::error!("accepting connections: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // No Nagle: a streamed response is several small writes, and Nagle
        // plus the client's delayed ACK would add ~40 ms to each.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
        let Some(held) = per_address.enter(peer.ip()) else {
            refuse(tcp, bounds.per_address);
            continue;
        };
        // The client's address, for the audit lines of refused credentials
        // (`ConnectInfo`, as `axum::serve` would give it): the router
        // wrapped once, not rebuilt (`Router::layer` wraps every route).
        let connection = Connection {
            peer,
            owner: bounds.claims.then(Default::default),
        };
        let app = tower_layer::Layer::layer(&axum::Extension(connection), app.clone());
        let service = TowerToHyperService::new(app);
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(tcp), service));
        let closing = closing.clone();
        tokio::spawn(async move {
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!("connection: {e}");
                },
                () = closing.cancelled() => {}
            }
            drop(held);
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(bounds.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open after {:?}: closing them",
            bounds.grace
        );
        closing.cancel();
    }
}

/// What a request knows of its connection: the client's address (for
/// the audit lines of refused credentials) and, on a server with tenants,
/// whose share of the connections it counts against: the last one to
/// claim it (a tenant, by a request it carried), until the connection
/// closes or carries another's request. An idle keep-alive connection is
/// its last tenant's: counting only requests in progress, one tenant's
/// keep-alive connections, each busy now and then, held every connection
/// the server accepts (found by review).
#[derive(Clone)]
pub(crate) struct Connection {
    pub(crate) peer: std::net::SocketAddr,
    owner: Option<Arc<Mutex<Option<Claimed>>>>,
}

/// One connection counted in a share; uncounted when dropped.
struct Claimed(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Claimed {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Connection {
    /// Count this connection in `share` (at most `max` connections), if it
    /// is not counted there already, and no longer in the one it was;
    /// `false`, and nothing changed, if `share` holds `max`. Always `true`
    /// on a server that counts no shares.
    pub(crate) fn claim(&self, share: &Arc<std::sync::atomic::AtomicUsize>, max: usize) -> bool {
        use std::sync::atomic::Ordering;
        let Some(owner) = &self.owner else {
            return true;
        };
        let mut owner = owner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if owner.as_ref().is_some_and(|o| Arc::ptr_eq(&o.0, share)) {
            return true;
        }
        if share
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_err()
        {
            return false;
        }
        *owner = Some(Claimed(share.clone()));
        true
    }
}

/// Connections open per client (an address; for IPv6 its /64).
struct PerAddress {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its client; uncounted when dropped.
struct Held(Option<(Arc<PerAddress>, IpAddr)>);

impl PerAddress {
    fn new(limit: usize) -> PerAddress {
        PerAddress {
            limit,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The key `ip` is counted under: one IPv4 address, or the /64 an IPv6
    /// address is in (an IPv4-mapped one as IPv4).
    fn client(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
            },
            v4 => v4,
        }
    }

    /// Count a connection from `ip`, or `None` if its client holds the
    /// limit already.
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<Held> {
        if self.limit == 0 {
            return Some(Held(None));
        }
        let key = Self::client(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(Held(Some((self.clone(), key))))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some((p, key)) = self.0.take() {
            let mut open = p.open.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = open.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&key);
                }
            }
        }
    }
}

/// Answer a connection over its client's limit and close it, without
/// waiting for it: a 429 if the socket takes it at once, else nothing.
fn refuse(tcp: tokio::net::TcpStream, limit: usize) {
    let body = format!(
        "this client holds {limit} connections to this server, the most one address may; close one or reuse it\n"
    );
    let answer = format!(
        "HTTP/1.1 429 Too Many Requests\r\nconnection: close\r\ncontent-type: text/plain\r\nretry-after: 1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.try_write(answer.as_bytes());
    tracing::debug!("a connection over the per-address limit ({limit}) was refused");
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_its_ipv4_address_or_its_ipv6_64() {
        let c = |s: &str| PerAddress::client(s.parse().unwrap()).to_string();
        assert_eq!(c("192.0.2.7"), "192.0.2.7");
        assert_eq!(c("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(c("::ffff:192.0.2.7"), "192.0.2.7");
        let p = Arc::new(PerAddress::new(2));
        let a = p.enter("2001:db8::1".parse().unwrap()).unwrap();
        let _b = p.enter("2001:db8::2".parse().unwrap()).unwrap();
        assert!(
            p.enter("2001:db8::3".parse().unwrap()).is_none(),
            "same /64"
        );
        assert!(p.enter("2001:db8:0:1::1".parse().unwrap()).is_some());
        drop(a);
        assert!(p.enter("2001:db8::3".parse().unwrap()).is_some());
        let off = Arc::new(PerAddress::new(0));
        let held: Vec<_> = (0..100)
            .map(|_| off.enter("192.0.2.1".parse().unwrap()))
            .collect();
        assert!(held.iter().all(Option::is_some));
    }
}
