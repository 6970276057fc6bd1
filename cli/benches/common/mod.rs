//! What the HTTP benches share: finding the address a `toolhost serve
//! --http 127.0.0.1:0` printed, a keep-alive connection to it, the
//! 2025-11-25 handshake lines, and the JSON-RPC reply in a response that is
//! either an SSE stream or plain JSON.
//! Each bench includes it with `#[path = "common/mod.rs"] mod common;`.

#![allow(dead_code)] // each bench uses part of it

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

pub const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"0"}}}"#;
pub const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// The `host:port` the server printed on stderr; the rest of its stderr
/// is drained in the background so that it never blocks on a full pipe.
pub async fn http_addr(child: &mut Child) -> String {
    let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
    loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("server printed its address");
        if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return url
                .trim_start_matches("http://")
                .trim_end_matches("/mcp")
                .to_string();
        }
    }
}

/// One keep-alive HTTP/1.1 connection to `addr` (no Nagle delay), its
/// driver running in the background.
pub async fn connect(
    addr: &str,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Full<hyper::body::Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// The JSON-RPC response in `body`: an SSE stream's `data:` event with an
/// `id`, or the body itself.
pub fn reply_of(body: &str) -> Value {
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .chain(std::iter::once(body))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("id").is_some())
        .unwrap_or_else(|| panic!("no reply in {body:?}"))
}
