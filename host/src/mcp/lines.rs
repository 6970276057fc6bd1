//! Line-delimited JSON streams (stdio MCP, the Claude CLI's control
//! protocol): reading one bounded line at a time, and writing whole lines,
//! in the order they are sent, from any task.
//!
//! A line is written at once by the task that sends it when nothing is
//! queued before it and the pipe takes it (the usual case: a reply of a
//! few hundred bytes); otherwise it is queued for the writer task, which
//! writes the queue out as the pipe drains. A reply thus costs no hand-off
//! to another task, and a peer that stops reading holds up only the queue,
//! never a sender. (A channel to a writer task, what this replaced, costs a
//! task wake-up per line: a tenth of a tool call's round trip in
//! `benches/agent_control.rs`.)
//!
//! A sender about to answer several requests at once can hold the output
//! ([`Output::hold`]): what is sent meanwhile goes out in one `writev` when
//! the hold ends, one system call and one wake-up of the peer for all.
//!
//! A peer that stops reading while it goes on sending requests cannot make
//! the host hold their replies without bound: past `cap` bytes queued (a
//! line alone is always taken), the pipe is closed (the peer sees its input
//! end) and every later line is refused.
//!
//! Must not: block a sender (writes are tried, never awaited, under the
//! lock), reorder lines, or split one line around another.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite};

type Writer = Pin<Box<dyn AsyncWrite + Send>>;

/// The sending side; cheap to share.
pub(crate) struct Output {
    state: Mutex<State>,
}

struct State {
    /// `None` once the pipe failed or was shut down.
    writer: Option<Writer>,
    /// Lines not yet (wholly) written, oldest first.
    queue: VecDeque<Vec<u8>>,
    /// Bytes in `queue`, and the most it may hold.
    queued: usize,
    cap: usize,
    /// How much of the queue's first line is written.
    written: usize,
    /// A write went through that the writer has not flushed yet.
    unflushed: bool,
    /// Input is closed: write what is queued, then shut the pipe.
    closing: bool,
    /// The writer task's waker while it waits (on the pipe, or for lines):
    /// woken when lines are left for it, input is closed, or the pipe is
    /// closed under it.
    task: Option<Waker>,
    /// The pipe failed, or was closed for the CLI's unread backlog.
    broken: bool,
    /// Holds taken ([`Output::hold`]): while any is, lines sent while the
    /// writer task is idle wait in the queue, to go out together when the
    /// last is released.
    holds: usize,
    /// The queue holds only such held lines (the writer task is idle).
    held: bool,
}

/// Why a line was not sent.
#[derive(Debug)]
pub(crate) struct Closed;

impl Output {
    /// The output over `writer`, and the task that writes what cannot be
    /// written at once (spawn it).
    pub(crate) fn new<W: AsyncWrite + Send + 'static>(
        writer: W,
        cap: usize,
    ) -> (Arc<Output>, impl Future<Output = ()> + Send + 'static) {
        let out = Arc::new(Output {
            state: Mutex::new(State {
                writer: Some(Box::pin(writer)),
                queue: VecDeque::new(),
                queued: 0,
                cap,
                written: 0,
                unflushed: false,
                closing: false,
                task: None,
                broken: false,
                holds: 0,
                held: false,
            }),
        });
        let task = out.clone().run();
        (out, task)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Send one line (with its newline).
    pub(crate) fn send(&self, line: Vec<u8>) -> Result<(), Closed> {
        let mut st = self.lock();
        if st.closing || st.writer.is_none() {
            return Err(Closed);
        }
        if !st.queue.is_empty() && st.queued + line.len() > st.cap {
            // Dropping the writer closes the pipe; the writer task, if it
            // waits on it, is told.
            st.writer = None;
            st.broken = true;
            st.queue.clear();
            if let Some(task) = st.task.take() {
                task.wake();
            }
            tracing::warn!(
                "the peer did not read {} bytes of replies: its input is closed",
                st.queued
            );
            return Err(Closed);
        }
        // The writer task is idle (nothing queued, nothing to flush), so
        // polling the pipe here takes no waker of its.
        let idle = st.queue.is_empty() && !st.unflushed;
        st.queued += line.len();
        st.queue.push_back(line);
        if st.holds > 0 && (idle || st.held) {
            // Written with the others when the hold ends.
            st.held = true;
            return Ok(());
        }
        if idle {
            // Nothing ahead of it: try the pipe now. A waker that does
            // nothing is enough, since whatever is left is the writer
            // task's, which polls with its own.
            let mut cx = Context::from_waker(Waker::noop());
            if let Poll::Ready(Err(_)) = st.drive(&mut cx) {
                st.writer = None;
                st.broken = true;
                return Err(Closed);
            }
            if st.queue.is_empty() && !st.unflushed {
                return Ok(());
            }
        }
        if let Some(task) = st.task.take() {
            drop(st);
            task.wake();
        }
        Ok(())
    }

    /// Whether lines sent now wait for a hold to end.
    pub(crate) fn is_held(&self) -> bool {
        self.lock().holds > 0
    }

    /// Hold the lines sent from now until the returned guard is dropped,
    /// then write them together (one `writev` where the pipe takes them
    /// all): for a sender about to answer several requests at once, one
    /// system call and one wake-up of the peer instead of one a line.
    /// Lines already queued for the writer task stay its to write.
    pub(crate) fn hold(&self) -> Hold<'_> {
        self.lock().holds += 1;
        Hold(self)
    }

    /// The last hold ended: write what it held, as `send` would have.
    fn release(&self) {
        let mut st = self.lock();
        st.holds -= 1;
        if st.holds > 0 || !std::mem::take(&mut st.held) {
            return;
        }
        // Only held lines are queued, so the writer task has nothing of
        // its own to write (as in `send`): the pipe is tried here. Should
        // the writer task have been polled meanwhile (a stale wake-up) and
        // left its waker on the pipe, the no-op one here replaces it, so it
        // is woken below unless everything went out. Closing meanwhile
        // woke the writer task, which writes them.
        if !st.closing && st.writer.is_some() {
            let mut cx = Context::from_waker(Waker::noop());
            match st.drive(&mut cx) {
                Poll::Ready(Err(_)) => {
                    st.writer = None;
                    st.broken = true;
                    st.queue.clear();
                }
                Poll::Ready(Ok(())) => return,
                Poll::Pending => {}
            }
        }
        if let Some(task) = st.task.take() {
            drop(st);
            task.wake();
        }
    }

    /// Whether lines can no longer reach the CLI although nobody closed its
    /// input: the pipe broke, or the CLI left too much unread.
    pub(crate) fn is_broken(&self) -> bool {
        self.lock().broken
    }

    /// Close input once what is queued is written.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closing = true;
        if let Some(task) = st.task.take() {
            drop(st);
            task.wake();
        }
    }

    /// The writer task: writes what senders left, then (input closed)
    /// shuts the pipe. Between lines it waits with its waker in `State`,
    /// so a sender and it never miss each other (both under the lock).
    async fn run(self: Arc<Self>) {
        std::future::poll_fn(|cx| {
            let mut st = self.lock();
            match st.drive(cx) {
                Poll::Ready(Ok(())) if st.closing => match st.writer.as_mut() {
                    Some(w) => w.as_mut().poll_shutdown(cx).map(drop),
                    None => Poll::Ready(()),
                },
                Poll::Ready(Ok(())) | Poll::Pending => {
                    st.task = Some(cx.waker().clone());
                    Poll::Pending
                }
                Poll::Ready(Err(_)) => {
                    st.broken = true;
                    st.queue.clear();
                    Poll::Ready(())
                }
            }
        })
        .await;
        self.lock().writer = None;
    }
}

/// Held lines go out when this is dropped (see [`Output::hold`]).
pub(crate) struct Hold<'a>(&'a Output);

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Most lines one `writev` takes (Linux's `UIO_MAXIOV` is 1024).
const MAX_IOV: usize = 64;

impl State {
    /// Write the queue out and flush, as far as the pipe takes it now:
    /// `Ready(Ok)` when all is written and flushed.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(w) = self.writer.as_mut() else {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        };
        while let Some(line) = self.queue.front() {
            let wrote = if self.queue.len() > 1 && w.is_write_vectored() {
                let bufs: Vec<io::IoSlice<'_>> = std::iter::once(&line[self.written..])
                    .chain(self.queue.iter().skip(1).map(Vec::as_slice))
                    .take(MAX_IOV)
                    .map(io::IoSlice::new)
                    .collect();
                w.as_mut().poll_write_vectored(cx, &bufs)
            } else {
                w.as_mut().poll_write(cx, &line[self.written..])
            };
            match wrote {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(mut n)) => {
                    self.unflushed = true;
                    // Whole lines off the queue; the rest of a partial one
                    // stays first.
                    while let Some(line) = self.queue.front() {
                        let rest = line.len() - self.written;
                        if n < rest {
                            self.written += n;
                            break;
                        }
                        n -= rest;
                        self.queued -= line.len();
                        self.queue.pop_front();
                        self.written = 0;
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.unflushed {
            match w.as_mut().poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                other => return other,
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// What [`read_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A line is in the buffer (without its newline).
    Read,
    /// A line longer than the limit: consumed up to its newline and dropped.
    TooLong,
    /// The end of input.
    End,
}

/// Read one `\n`-terminated line of at most `max` bytes into `buf` (without
/// the newline; a last line without one counts). A longer line is never
/// held: it is consumed up to its newline and reported as
/// [`Line::TooLong`], and the reader stays usable.
pub(crate) async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(match (too_long, buf.is_empty()) {
                (true, _) => Line::TooLong,
                (false, true) => Line::End,
                (false, false) => Line::Read,
            });
        }
        let (part, done) = match chunk.iter().position(|&c| c == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        if !too_long {
            if buf.len() + part.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(part);
            }
        }
        let used = done.unwrap_or(chunk.len());
        r.consume(used);
        if done.is_some() {
            return Ok(if too_long { Line::TooLong } else { Line::Read });
        }
    }
}

/// Lines read one by one, as [`read_line`] reads them, but safe to cancel:
/// a line read in part when [`Lines::next`] is dropped is kept, and the
/// next call goes on with it (the reader of a stdio connection reads on
/// while it waits for room, and stops reading when the room comes).
pub(crate) struct Lines {
    buf: Vec<u8>,
    too_long: bool,
    max: usize,
}

impl Lines {
    /// Lines of at most `max` bytes.
    pub(crate) fn new(max: usize) -> Lines {
        Lines {
            buf: Vec::with_capacity(4096),
            too_long: false,
            max,
        }
    }

    /// The next line (see [`read_line`]); after [`Line::Read`] it is
    /// [`Lines::take`]n.
    pub(crate) async fn next<R: AsyncBufRead + Unpin>(&mut self, r: &mut R) -> io::Result<Line> {
        loop {
            // The only wait: nothing is consumed before it returns.
            let chunk = r.fill_buf().await?;
            if chunk.is_empty() {
                let found = match (self.too_long, self.buf.is_empty()) {
                    (true, _) => Line::TooLong,
                    (false, true) => Line::End,
                    (false, false) => Line::Read,
                };
                self.too_long = false;
                return Ok(found);
            }
            let (part, done) = match chunk.iter().position(|&c| c == b'\n') {
                Some(i) => (&chunk[..i], Some(i + 1)),
                None => (chunk, None),
            };
            if !self.too_long {
                if self.buf.len() + part.len() > self.max {
                    self.too_long = true;
                    self.buf.clear();
                } else {
                    self.buf.extend_from_slice(part);
                }
            }
            let used = done.unwrap_or(chunk.len());
            r.consume(used);
            if done.is_some() {
                let too_long = std::mem::take(&mut self.too_long);
                return Ok(if too_long { Line::TooLong } else { Line::Read });
            }
        }
    }

    /// Move the line [`Lines::next`] read into `line` (its old buffer is
    /// reused for the next).
    pub(crate) fn take_into(&mut self, line: &mut Vec<u8>) {
        std::mem::swap(&mut self.buf, line);
        self.buf.clear();
    }
}

/// Whether more input is waiting to be read right now (without waiting
/// for it, nor taking the reader's waker).
pub(crate) fn more_waiting<R: AsyncBufRead + Unpin>(r: &mut R) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    matches!(
        Pin::new(r).poll_fill_buf(&mut cx),
        Poll::Ready(Ok(b)) if !b.is_empty()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn bounded_lines() {
        let data = b"{\"a\":1}\nxxxxxxxxxxxxxxxxxxxxxxxx\n{\"b\":2}\nlast".to_vec();
        let mut r = tokio::io::BufReader::with_capacity(4, &data[..]);
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut r, &mut buf, 10).await.unwrap(), Line::Read);
        assert_eq!(buf, b"{\"a\":1}");
        assert_eq!(
            read_line(&mut r, &mut buf, 10).await.unwrap(),
            Line::TooLong
        );
        assert_eq!(read_line(&mut r, &mut buf, 10).await.unwrap(), Line::Read);
        assert_eq!(buf, b"{\"b\":2}");
        assert!(more_waiting(&mut r));
        assert_eq!(read_line(&mut r, &mut buf, 10).await.unwrap(), Line::Read);
        assert_eq!(buf, b"last");
        assert!(!more_waiting(&mut r));
        assert_eq!(read_line(&mut r, &mut buf, 10).await.unwrap(), Line::End);
    }

    /// A reader that stops reading holds up the queue, not the senders;
    /// lines come out whole and in order once it reads again; closing
    /// writes what is queued first.
    #[tokio::test]
    async fn a_full_pipe_queues_in_order_and_close_writes_the_queue_first() {
        let (w, mut r) = tokio::io::duplex(64);
        let (out, task) = Output::new(w, 1 << 20);
        let writer = tokio::spawn(task);
        let lines: Vec<Vec<u8>> = (0..50)
            .map(|i| format!("{{\"line\":{i},\"pad\":\"{}\"}}\n", "x".repeat(i)).into_bytes())
            .collect();
        for l in &lines {
            out.send(l.clone()).expect("open");
        }
        out.close();
        assert!(out.send(b"late\n".to_vec()).is_err());
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, lines.concat());
        writer.await.unwrap();
    }

    /// Close `out`, and what `reading` got once the writer task has written
    /// everything (within 10 s).
    async fn closed_and_read(
        out: &Output,
        reading: tokio::task::JoinHandle<Vec<u8>>,
        writer: tokio::task::JoinHandle<()>,
    ) -> Vec<u8> {
        out.close();
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), reading)
            .await
            .expect("every line arrives")
            .unwrap();
        writer.await.unwrap();
        got
    }

    /// A writer that records each write call's bytes.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.lock().unwrap().push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = all.len();
            self.0.lock().unwrap().push(all);
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Lines sent under a hold wait, and go out together, in order, in one
    /// write, when the last hold ends; without a hold each goes at once.
    #[tokio::test]
    async fn held_lines_go_out_together_when_the_hold_ends() {
        let rec = Recorder::default();
        let (out, task) = Output::new(rec.clone(), 1 << 20);
        let writer = tokio::spawn(task);
        let lines: Vec<Vec<u8>> = (0..5).map(|i| format!("line {i}\n").into_bytes()).collect();
        {
            let _outer = out.hold();
            let inner = out.hold();
            for l in &lines {
                out.send(l.clone()).expect("open");
            }
            drop(inner);
            assert!(rec.0.lock().unwrap().is_empty(), "written under a hold");
        }
        assert_eq!(*rec.0.lock().unwrap(), vec![lines.concat()]);
        out.send(b"alone\n".to_vec()).expect("open");
        assert_eq!(
            rec.0.lock().unwrap().len(),
            2,
            "a line without a hold goes at once"
        );
        out.close();
        writer.await.unwrap();
    }

    /// A hold never strands a line: lines held over a pipe that takes only
    /// part of them, or sent while the writer task has a backlog of its own,
    /// all arrive whole and in order.
    #[tokio::test]
    async fn a_hold_over_a_full_pipe_loses_no_line() {
        let (w, mut r) = tokio::io::duplex(64);
        let (out, task) = Output::new(w, 1 << 20);
        let writer = tokio::spawn(task);
        let lines: Vec<Vec<u8>> = (0..60)
            .map(|i| format!("{{\"line\":{i}}}\n").into_bytes())
            .collect();
        let reading = tokio::spawn(async move {
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            got
        });
        for chunk in lines.chunks(7) {
            let _hold = out.hold();
            for l in chunk {
                out.send(l.clone()).expect("open");
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(closed_and_read(&out, reading, writer).await, lines.concat());
    }

    /// A pipe whose reader is gone refuses the next line.
    #[tokio::test]
    async fn a_broken_pipe_refuses_lines() {
        let (w, r) = tokio::io::duplex(64);
        let (out, task) = Output::new(w, 1 << 20);
        let writer = tokio::spawn(task);
        drop(r);
        let mut refused = false;
        for _ in 0..10 {
            if out.send(b"{}\n".to_vec()).is_err() {
                refused = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(refused);
        out.close();
        writer.await.unwrap();
    }

    /// A writer whose flush can wait (buffered) still gets every line out:
    /// a sender never takes the writer task's waker.
    #[tokio::test]
    async fn a_buffered_writer_whose_flush_waits_loses_no_line() {
        let (w, mut r) = tokio::io::duplex(16);
        let (out, task) = Output::new(tokio::io::BufWriter::with_capacity(8, w), 1 << 20);
        let writer = tokio::spawn(task);
        let lines: Vec<Vec<u8>> = (0..200)
            .map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let reading = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 5];
            loop {
                match r.read(&mut buf).await.unwrap() {
                    0 => return got,
                    n => got.extend_from_slice(&buf[..n]),
                }
                tokio::task::yield_now().await;
            }
        });
        for l in &lines {
            out.send(l.clone()).expect("open");
            tokio::task::yield_now().await;
        }
        assert_eq!(closed_and_read(&out, reading, writer).await, lines.concat());
    }

    /// A reader that never reads: past the cap the pipe is closed and
    /// lines are refused, so what is held stays bounded.
    #[tokio::test]
    async fn a_reader_that_never_reads_gets_its_input_closed_at_the_cap() {
        let (w, mut r) = tokio::io::duplex(64);
        let (out, task) = Output::new(w, 4096);
        let writer = tokio::spawn(task);
        let line = vec![b'x'; 100];
        let sent = (0..1000)
            .take_while(|_| out.send(line.clone()).is_ok())
            .count();
        assert!(
            (40..=42).contains(&sent),
            "{sent} lines of 100 bytes went under a 4 KiB cap"
        );
        assert!(out.send(b"{}\n".to_vec()).is_err());
        // The pipe is closed: the reader sees what was written, then its end.
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert!(got.len() <= 64, "{}", got.len());
        writer.await.unwrap();
    }
}
