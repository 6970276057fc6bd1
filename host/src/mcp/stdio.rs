//! The process's stdin and stdout as an MCP stdio transport, on the
//! runtime's I/O driver whenever they allow it.
//!
//! tokio's own stdio hands every read and write to the blocking thread
//! pool: two thread hand-offs per message, a third of a `tools/call`'s
//! round trip (BENCHMARKS.md, "MCP round trip"). MCP clients start stdio
//! servers with pipes (Python's asyncio, rmcp) or with socket pairs (every
//! Node client: libuv makes child stdio from `socketpair`), and both can be
//! polled instead:
//! - pipes: `rmcp::transport::stdio_pipes`, which reopens them through
//!   `/proc/self/fd` so `O_NONBLOCK` stays on descriptions of its own;
//! - sockets: a socket cannot be reopened, so a duplicate of each
//!   descriptor is made non-blocking, which the process's own fd 0 and 1
//!   share. Nothing else of this process reads or writes them while it
//!   serves (logs go to stderr), and the peer's end of the pair is a
//!   description of its own, unaffected;
//! - anything else (a terminal, a file, a mix): tokio's stdio.
//!
//! Must not: touch any descriptor but 0 and 1, or change how a pipe's
//! other holders see it.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use tokio::io::{AsyncRead, AsyncWrite};

/// The reading half of [`stdio`].
pub type StdioReader = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of [`stdio`].
pub type StdioWriter = Box<dyn AsyncWrite + Send + Unpin>;

#[derive(PartialEq)]
enum Kind {
    Fifo,
    Socket,
    Other,
}

fn kind(fd: &OwnedFd) -> Kind {
    let Ok(meta) = fd
        .try_clone()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata())
    else {
        return Kind::Other;
    };
    let t = meta.file_type();
    if t.is_fifo() {
        Kind::Fifo
    } else if t.is_socket() {
        Kind::Socket
    } else {
        Kind::Other
    }
}

/// Both sockets non-blocking on the I/O driver, or (on any failure) both
/// as they were.
fn sockets(
    input: OwnedFd,
    output: OwnedFd,
) -> Option<(tokio::net::UnixStream, tokio::net::UnixStream)> {
    use std::os::unix::net::UnixStream;
    let (r, w) = (UnixStream::from(input), UnixStream::from(output));
    let polled = (|| {
        r.set_nonblocking(true)?;
        w.set_nonblocking(true)?;
        Ok::<_, std::io::Error>((
            tokio::net::UnixStream::from_std(r.try_clone()?)?,
            tokio::net::UnixStream::from_std(w.try_clone()?)?,
        ))
    })();
    match polled {
        Ok(pair) => Some(pair),
        Err(e) => {
            let _ = r.set_nonblocking(false);
            let _ = w.set_nonblocking(false);
            tracing::debug!("stdio sockets not polled ({e}): tokio's stdio serves");
            None
        }
    }
}

/// stdin and stdout as an MCP transport (`McpServer::serve(stdio())`):
/// polled on the I/O driver when they are pipes or sockets, else tokio's
/// stdio. Call it inside a tokio runtime with I/O enabled.
pub fn stdio() -> (StdioReader, StdioWriter) {
    let dup = |fd: std::os::fd::BorrowedFd<'_>| fd.try_clone_to_owned().ok();
    let (input, output) = (
        dup(std::io::stdin().as_fd()),
        dup(std::io::stdout().as_fd()),
    );
    if let (Some(input), Some(output)) = (input, output) {
        match (kind(&input), kind(&output)) {
            (Kind::Fifo, Kind::Fifo) => {
                let (r, w) = rmcp::transport::stdio_pipes();
                return (Box::new(r), Box::new(w));
            }
            (Kind::Socket, Kind::Socket) => {
                if let Some((r, w)) = sockets(input, output) {
                    return (Box::new(r), Box::new(w));
                }
            }
            _ => {}
        }
    }
    (Box::new(tokio::io::stdin()), Box::new(tokio::io::stdout()))
}
