//! The HTTP front end's connections: accepting them, bounding them, and
//! closing them on shutdown.
//!
//! - At most `max_connections` at once (fewer if the process's descriptor
//!   limit leaves no room for them beside what calls may hold): past it
//!   the accept loop waits, and new connections queue in the kernel's
//!   backlog (as nginx's `worker_connections`), so no client can exhaust
//!   the process's descriptors. The cap is global, not per client: one
//!   client can hold every slot (a proxy's per-address `limit_conn` is the
//!   answer; SECURITY.md, M7).
//! - A client must send a request's headers within `header_read_timeout`
//!   (also the longest an idle keep-alive connection is kept): a connection
//!   that opens and sends nothing, or trickles its headers (slowloris),
//!   is closed.
//! - On shutdown: stop accepting, then let open connections finish their
//!   responses, within the grace period.
//!
//! Written here rather than `axum::serve` because that sets neither bound
//! (M7 in SECURITY.md); hyper's own connection builder and hyper-util's
//! graceful shutdown do the work. Owns no request handling: the router is
//! `http`'s.

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How connections are bounded.
pub(super) struct Bounds {
    pub(super) max_connections: usize,
    pub(super) header_read_timeout: Duration,
    /// How long shutdown waits for open connections to finish.
    pub(super) grace: Duration,
}

/// At most `wanted` connections, and never more than the descriptors the
/// host keeps for itself allow (less room for its own files: the audit
/// log, the compile cache, reloads).
pub(super) fn connection_cap(wanted: usize) -> usize {
    let room = crate::caps::fs::enforce::host_descriptors().saturating_sub(256);
    if wanted > room {
        tracing::warn!(
            "max connections lowered from {wanted} to {room}: the process's descriptor limit leaves no more (raise `ulimit -n`)"
        );
    }
    wanted.min(room).max(1)
}

/// Serve `app` on `listener` until `stop` resolves, then close.
pub(super) async fn serve(
    listener: TcpListener,
    app: axum::Router,
    bounds: Bounds,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let graceful = GracefulShutdown::new();
    // Ends the connections still open when the grace period is over.
    let closing = CancellationToken::new();
    let slots = Arc::new(Semaphore::new(connection_cap(bounds.max_connections)));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Zero would close every connection at once.
        .header_read_timeout(bounds.header_read_timeout.max(Duration::from_millis(100)))
        .keep_alive(true);
    let mut stop = std::pin::pin!(stop);
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            () = &mut stop => break,
        };
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
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
        let service = TowerToHyperService::new(app.clone());
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(tcp), service));
        let closing = closing.clone();
        tokio::spawn(async move {
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!("connection: {e}");
                },
                () = closing.cancelled() => {}
            }
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

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
