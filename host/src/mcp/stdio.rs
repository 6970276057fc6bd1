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
//!   serves, the peer's end of the pair is a description of its own, and
//!   each socket's flags are put back when its half is dropped (for
//!   whatever else holds the description, such as a wrapper shell). Not
//!   when stderr is one of the sockets (inetd style): a log line would
//!   then meet a non-blocking socket;
//! - anything else (a terminal, a file, a mix): tokio's stdio.
//!
//! Must not: touch any descriptor but 0 and 1, or change how a pipe's
//! other holders see it.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The reading half of [`stdio`].
pub type StdioReader = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of [`stdio`].
pub type StdioWriter = Box<dyn AsyncWrite + Send + Unpin>;

enum Kind {
    Fifo,
    Socket,
    Other,
}

fn metadata(fd: &impl AsFd) -> Option<std::fs::Metadata> {
    let fd = fd.as_fd().try_clone_to_owned().ok()?;
    std::fs::File::from(fd).metadata().ok()
}

fn kind(fd: &OwnedFd) -> Kind {
    let Some(meta) = metadata(fd) else {
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

/// Whether `a` and `b` are the same file (for sockets: the same socket).
fn same(a: &impl AsFd, b: &impl AsFd) -> bool {
    match (metadata(a), metadata(b)) {
        (Some(a), Some(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// A socket half polled non-blocking.
struct Polled {
    stream: tokio::net::UnixStream,
    _restore: std::sync::Arc<Restore>,
}

/// Puts the sockets' `O_NONBLOCK` back as it was, once both halves are
/// dropped (stdin and stdout may be one socket): duplicates, which share
/// the sockets' open file descriptions, and whether each was blocking.
struct Restore(Vec<(OwnedFd, bool)>);

impl Drop for Restore {
    fn drop(&mut self) {
        for (fd, was_nonblocking) in &self.0 {
            if !was_nonblocking {
                // SAFETY: fcntl on a descriptor this value owns.
                unsafe {
                    let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
                    if flags >= 0 {
                        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
                    }
                }
            }
        }
    }
}

impl AsyncRead for Polled {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Polled {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    /// Passed on, so that replies written together (`lines::Output::hold`)
    /// take one `writev` on a socket too.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

fn nonblocking(fd: &impl AsRawFd) -> bool {
    // SAFETY: F_GETFL on a descriptor the caller holds.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    flags >= 0 && flags & libc::O_NONBLOCK != 0
}

/// Both sockets non-blocking on the I/O driver, or (on any failure) both
/// as they were (`Restore`, dropped).
fn sockets(input: OwnedFd, output: OwnedFd) -> Option<(Polled, Polled)> {
    let restore = std::sync::Arc::new(Restore(vec![
        (input.try_clone().ok()?, nonblocking(&input)),
        (output.try_clone().ok()?, nonblocking(&output)),
    ]));
    let polled = |fd: OwnedFd| {
        let s = std::os::unix::net::UnixStream::from(fd);
        s.set_nonblocking(true)?;
        tokio::net::UnixStream::from_std(s)
    };
    match (polled(input), polled(output)) {
        (Ok(r), Ok(w)) => Some((
            Polled {
                stream: r,
                _restore: restore.clone(),
            },
            Polled {
                stream: w,
                _restore: restore,
            },
        )),
        (Err(e), _) | (_, Err(e)) => {
            tracing::debug!("stdio sockets not polled ({e}): tokio's stdio serves");
            None
        }
    }
}

/// stdin and stdout as an MCP transport, for
/// [`McpServer::serve_stdio`](super::McpServer::serve_stdio) (or rmcp's
/// `serve`): polled on the I/O driver when they are pipes or sockets, else
/// tokio's stdio. Call it inside a tokio runtime with I/O enabled.
///
/// ```no_run
/// # async fn run(server: toolhost::mcp::McpServer) -> anyhow::Result<()> {
/// let service = server.serve_stdio(toolhost::mcp::stdio()).await?;
/// service.waiting().await?;
/// # Ok(())
/// # }
/// ```
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
            (Kind::Socket, Kind::Socket)
                if !same(&std::io::stderr(), &input) && !same(&std::io::stderr(), &output) =>
            {
                if let Some((r, w)) = sockets(input, output) {
                    return (Box::new(r), Box::new(w));
                }
            }
            _ => {}
        }
    }
    (Box::new(tokio::io::stdin()), Box::new(tokio::io::stdout()))
}
