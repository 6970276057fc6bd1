//! The HTTP front end's connections: accepting them, bounding them, and
//! closing them on shutdown.
//!
//! - At most `max_connections` at once: past it the accept loop waits, and
//!   new connections queue in the kernel's backlog (as nginx's
//!   `worker_connections`), so no client can exhaust the process's
//!   descriptors.
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

/// How connections are bounded.
pub(super) struct Bounds {
    pub(super) max_connections: usize,
    pub(super) header_read_timeout: Duration,
    /// How long shutdown waits for open connections to finish.
    pub(super) grace: Duration,
}

/// Serve `app` on `listener` until `stop` resolves, then close.
pub(super) async fn serve(
    listener: TcpListener,
    app: axum::Router,
    bounds: Bounds,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(bounds.max_connections.max(1)));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.header_read_timeout)
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
                Err(e) => {
                    // Out of descriptors or memory, or a connection reset
                    // before it was accepted: wait a little, as hyper's
                    // and axum's loops do, instead of spinning.
                    tracing::debug!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
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
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection: {e}");
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
    }
}
