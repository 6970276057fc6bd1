//! The HTTP reads the installer makes itself (a package's `https://` URL,
//! a registry's manifests and blobs): a client whose redirects stay on
//! HTTPS (or on loopback, if the request started there), a deadline from a
//! request's start to its last byte, and bodies read to a limit and no
//! further. A hostile server can make a read fail, never make it hold more
//! memory or time than that.
//!
//! Moves bytes only: what to fetch, and whether to trust it, is the
//! callers'.

use bytes::Bytes;
use futures::StreamExt as _;
use std::time::Duration;

/// Whether `u` is on a loopback host.
pub(crate) fn is_loopback_url(u: &reqwest::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A client for requests that start on a loopback host if `loopback`, else
/// on HTTPS: redirects are followed (at most five) only to HTTPS, or to
/// loopback from loopback. (A redirect to another host drops the
/// `Authorization` header: reqwest's own rule.)
pub(crate) fn client(loopback: bool) -> reqwest::Result<reqwest::Client> {
    let policy = reqwest::redirect::Policy::custom(move |a| {
        let ok = a.url().scheme() == "https" || (loopback && is_loopback_url(a.url()));
        if a.previous().len() > 5 {
            a.error("too many redirects")
        } else if ok {
            a.follow()
        } else {
            let to = a.url().to_string();
            a.error(format!("redirect to {to} leaves https"))
        }
    });
    reqwest::Client::builder()
        .redirect(policy)
        .user_agent(concat!("toolhost/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .build()
}

/// `response`'s body, or `None` if it is (or says it is) longer than
/// `limit` bytes: read no further than that.
pub(crate) async fn read_bounded(
    response: reqwest::Response,
    limit: u64,
) -> reqwest::Result<Option<Bytes>> {
    let declared = response.content_length();
    if declared.is_some_and(|n| n > limit) {
        return Ok(None);
    }
    // The declared length sizes the first allocation only up to 1 MiB: a
    // server gets no more memory than it has sent.
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(limit).min(1 << 20) as usize);
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if (buf.len() + chunk.len()) as u64 > limit {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(Bytes::from(buf)))
}

/// What went wrong with a request that started at `started` and had
/// `deadline` to finish. reqwest's own text leaves out its causes (a
/// redirect the policy refused, a read timeout), so they are added,
/// printable; its timeouts are the deadline only once that much time has
/// passed (the connect and read timeouts are timeouts too).
pub(crate) fn failure(
    e: &reqwest::Error,
    started: std::time::Instant,
    deadline: Duration,
) -> String {
    if e.is_timeout() && started.elapsed() >= deadline {
        return format!(
            "no complete answer within {}",
            humantime::format_duration(deadline)
        );
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&crate::error::printable(&c.to_string()));
        cause = c.source();
    }
    text
}
