//! The `stdio` unit: everything a tool says besides its result: stdout and
//! stderr (captured, never the host's own streams) and the `log` and
//! `progress` events for its caller.
//!
//! - parse: nothing (a manifest cannot ask for output channels);
//! - narrow: the operator's `[output]` caps: bytes captured per stream, the
//!   event budget per call, the fixed cost of each event, the queue length
//!   towards the client;
//! - apply: fresh bounded pipes and an event budget per call;
//! - enforce: a pipe counts what it is given and keeps none of it but the
//!   last [`KEPT`] bytes of stderr (for a trap's message), so `max-stdio`
//!   bounds bytes, never host memory; a full pipe tells the guest its
//!   stream is closed, and a write past it traps the call (reported as a
//!   flood); every event costs its size plus a fixed overhead, so even
//!   empty messages run the budget out, and is charged to the call's
//!   memory while it waits for its client; events past the budget or the
//!   call's memory, or while the client is not reading, are dropped and
//!   counted (the caller learns how many at the end, see `EventStream`).
//!
//! Must not touch: the host's own stdout/stderr.

use crate::caps::limits::MemoryBudget;
use crate::model::{CallEvent, EventSink};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// The operator's caps on what a call may say (`[output]` in the host
/// config).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StdioCaps {
    /// Bytes of stdout, and of stderr, captured per call; a call that
    /// writes more is stopped.
    pub max_stdio: usize,
    /// Bytes of log and progress events one call may emit, each event
    /// weighed as its text plus `event_overhead`.
    pub event_budget: usize,
    /// The fixed cost of one event.
    pub event_overhead: usize,
}

impl Default for StdioCaps {
    fn default() -> Self {
        StdioCaps {
            max_stdio: 64 << 10,
            event_budget: 256 << 10,
            event_overhead: 64,
        }
    }
}

impl StdioCaps {
    /// Both caps at once.
    pub fn intersect(&self, other: &StdioCaps) -> StdioCaps {
        StdioCaps {
            max_stdio: self.max_stdio.min(other.max_stdio),
            event_budget: self.event_budget.min(other.event_budget),
            event_overhead: self.event_overhead.max(other.event_overhead),
        }
    }
}

/// The bytes of stderr a call keeps, the last ones written: where a Rust
/// guest's panic message is when it traps.
pub(crate) const KEPT: usize = 4 << 10;

/// A captured stdout or stderr: counts the bytes it is given, up to its
/// capacity, and keeps only the last `keep` of them. Written here rather
/// than wasmtime-wasi's `MemoryOutputPipe`, which holds everything it is
/// given: two pipes of up to 64 MiB per call that no memory bound counted
/// (320 MB for five calls of a 3 MiB tool, found by review), for output
/// nothing reads.
#[derive(Clone)]
pub(crate) struct Captured(Arc<Mutex<Pipe>>);

struct Pipe {
    capacity: usize,
    written: usize,
    /// A write was refused for want of room.
    overflowed: bool,
    keep: usize,
    /// The last bytes written, at most `2 * keep` (cut back to `keep` when
    /// it reaches that, so each byte is moved at most once).
    tail: Vec<u8>,
}

impl Captured {
    fn new(capacity: usize, keep: usize) -> Captured {
        Captured(Arc::new(Mutex::new(Pipe {
            capacity,
            written: 0,
            overflowed: false,
            keep,
            tail: Vec::new(),
        })))
    }

    fn pipe(&self) -> std::sync::MutexGuard<'_, Pipe> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether it filled up, or refused a write for want of room.
    fn full(&self) -> bool {
        let p = self.pipe();
        p.overflowed || p.written >= p.capacity
    }

    /// The last bytes written as text, marked `…` at the start when
    /// earlier ones were dropped (a partial first line kept: it may be all
    /// there is of a long panic message).
    pub(crate) fn tail(&self) -> String {
        let p = self.pipe();
        let tail = &p.tail[p.tail.len().saturating_sub(p.keep)..];
        let text = String::from_utf8_lossy(tail);
        if p.written > tail.len() {
            format!("…{text}")
        } else {
            text.into_owned()
        }
    }
}

impl Pipe {
    /// Count `data` (all of it: the caller checked the room) and keep its
    /// end.
    fn take(&mut self, data: &[u8]) {
        self.written += data.len();
        if self.keep == 0 {
            return;
        }
        let data = &data[data.len().saturating_sub(self.keep)..];
        if self.tail.len() + data.len() > 2 * self.keep {
            let cut = (self.tail.len() + data.len()).saturating_sub(self.keep);
            self.tail.drain(..cut.min(self.tail.len()));
        }
        self.tail.extend_from_slice(data);
    }

    fn room(&self) -> usize {
        self.capacity.saturating_sub(self.written)
    }
}

impl OutputStream for Captured {
    fn write(&mut self, data: bytes::Bytes) -> StreamResult<()> {
        let mut p = self.pipe();
        if data.len() > p.room() {
            p.overflowed = true;
            return Err(StreamError::Trap(wasmtime::format_err!(
                "a write of {} bytes past the {} the call may write there",
                data.len(),
                p.capacity
            )));
        }
        p.take(&data);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        match self.pipe().room() {
            // Full: no byte will ever be written again.
            0 => Err(StreamError::Closed),
            n => Ok(n),
        }
    }
}

#[async_trait::async_trait]
impl Pollable for Captured {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Captured {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut p = self.pipe();
        let n = buf.len().min(p.room());
        if n < buf.len() {
            p.overflowed = true;
        }
        p.take(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for Captured {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Captured {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// One call's output channels.
pub(crate) struct CallOutput {
    stdout: Captured,
    pub(crate) stderr: Captured,
    events: Option<EventSink>,
    /// The call's memory, charged for each event until its caller takes
    /// it.
    memory: Arc<MemoryBudget>,
    budget: usize,
    overhead: usize,
    /// The budget the call started with (`budget` is what is left).
    start: usize,
}

impl StdioCaps {
    /// Fresh channels for one call, wired into its WASI context.
    pub(crate) fn apply(
        &self,
        b: &mut wasmtime_wasi::WasiCtxBuilder,
        events: Option<EventSink>,
        memory: Arc<MemoryBudget>,
    ) -> CallOutput {
        let stdout = Captured::new(self.max_stdio, 0);
        let stderr = Captured::new(self.max_stdio, KEPT);
        b.stdout(stdout.clone()).stderr(stderr.clone());
        CallOutput {
            stdout,
            stderr,
            events,
            memory,
            budget: self.event_budget,
            overhead: self.event_overhead,
            start: self.event_budget,
        }
    }
}

impl CallOutput {
    /// Send the events from now on to `events`: a sandbox prepared ahead
    /// of its call gets its call's sink at hand-out. Before that it had
    /// none, so it spent nothing of its budget.
    pub(crate) fn attach(&mut self, events: Option<EventSink>) {
        debug_assert!(self.events.is_none(), "a sandbox serves one call");
        self.events = events;
    }

    /// The call is over: its events end here (its caller's stream ends),
    /// though the store may be torn down later.
    pub(crate) fn detach(&mut self) {
        self.events = None;
    }

    /// Send an event of `size` bytes of text, if the budget and the
    /// call's memory allow (it holds its cost of the call's memory until
    /// its caller takes it); else drop it (counted by the sink).
    pub(crate) fn emit(&mut self, size: usize, event: CallEvent) {
        let Some(sink) = &self.events else { return };
        let cost = size.saturating_add(self.overhead);
        let charge = (cost <= self.budget)
            .then(|| self.memory.hold(cost))
            .flatten();
        match charge {
            Some(charge) => {
                self.budget -= cost;
                sink.queue(event, Some(charge));
            }
            None => sink.count_dropped(),
        }
    }

    /// Bytes of the events sent to the caller so far.
    pub(crate) fn sent(&self) -> usize {
        self.start - self.budget
    }

    /// Which stream filled up (or refused a write for want of room), if
    /// one did.
    pub(crate) fn flooded(&self) -> Option<&'static str> {
        if self.stdout.full() {
            Some("stdout")
        } else if self.stderr.full() {
            Some("stderr")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LogLevel;

    #[tokio::test]
    async fn empty_events_still_cost_and_drops_are_reported() {
        let caps = StdioCaps {
            event_budget: 640,
            event_overhead: 64,
            ..StdioCaps::default()
        };
        let (sink, mut stream) = EventSink::channel(1024);
        let mut b = wasmtime_wasi::WasiCtxBuilder::new();
        let mut out = caps.apply(&mut b, Some(sink), MemoryBudget::new(u64::MAX, None));
        for _ in 0..300_000 {
            out.emit(
                0,
                CallEvent::Log {
                    level: LogLevel::Info,
                    message: String::new(),
                },
            );
        }
        drop(out);
        let mut logs = 0;
        let mut dropped = 0;
        while let Some(e) = stream.recv().await {
            match e {
                CallEvent::Log { .. } => logs += 1,
                CallEvent::Dropped { count } => dropped = count,
                _ => {}
            }
        }
        assert_eq!(logs, 10, "640 bytes at 64 each");
        assert_eq!(dropped, 300_000 - 10);
    }

    /// A pipe counts everything and keeps only the end of stderr; a write
    /// past its capacity traps and is reported as a flood; a full pipe
    /// says closed.
    #[test]
    fn a_pipe_counts_its_bytes_and_keeps_only_the_end() {
        let mut b = wasmtime_wasi::WasiCtxBuilder::new();
        let caps = StdioCaps {
            max_stdio: 1 << 20,
            ..StdioCaps::default()
        };
        let out = caps.apply(&mut b, None, MemoryBudget::new(u64::MAX, None));
        let (mut stdout, mut stderr) = (out.stdout.clone(), out.stderr.clone());
        let line = bytes::Bytes::from_static(b"0123456789 abcdefghijklmnopqrstuvwxyz\n");
        for _ in 0..10_000 {
            stdout.write(line.clone()).unwrap();
            stderr.write(line.clone()).unwrap();
        }
        stderr.write(bytes::Bytes::from_static(b"boom\n")).unwrap();
        assert!(out.stdout.pipe().tail.is_empty(), "stdout keeps nothing");
        assert!(out.stderr.pipe().tail.len() <= 2 * KEPT);
        let tail = out.stderr.tail();
        assert!(
            tail.len() <= KEPT + '…'.len_utf8() && tail.ends_with("xyz\nboom\n"),
            "{tail:?}"
        );
        assert!(tail.starts_with('…'), "marked as cut: {tail:?}");
        // One line longer than what is kept: its end, marked as cut.
        let long = Captured::new(1 << 20, KEPT);
        let mut w = long.clone();
        w.write(bytes::Bytes::from(format!(
            "panicked: {}\n",
            "x".repeat(3 * KEPT)
        )))
        .unwrap();
        let tail = long.tail();
        assert!(tail.starts_with('…') && tail.ends_with("xxx\n"), "{tail:?}");
        assert_eq!(out.flooded(), None);

        let room = stdout.check_write().unwrap();
        assert_eq!(room, (1 << 20) - 10_000 * line.len());
        assert!(matches!(
            stdout.write(bytes::Bytes::from(vec![b'x'; room + 1])),
            Err(StreamError::Trap(_))
        ));
        assert_eq!(out.flooded(), Some("stdout"), "a refused write is a flood");
        let room = stderr.check_write().unwrap();
        stderr.write(bytes::Bytes::from(vec![b'y'; room])).unwrap();
        assert!(matches!(stderr.check_write(), Err(StreamError::Closed)));
        assert!(out.stderr.full());
    }

    /// Events hold their cost of the call's memory until their caller
    /// takes them; past the call's memory they are dropped, as past the
    /// event budget.
    #[tokio::test]
    async fn events_are_charged_to_the_calls_memory_until_taken() {
        let caps = StdioCaps {
            event_budget: 1 << 20,
            event_overhead: 64,
            ..StdioCaps::default()
        };
        let memory = MemoryBudget::new(10 * (100 + 64), None);
        let (sink, mut stream) = EventSink::channel(1024);
        let mut b = wasmtime_wasi::WasiCtxBuilder::new();
        let mut out = caps.apply(&mut b, Some(sink), memory.clone());
        let log = || CallEvent::Log {
            level: LogLevel::Info,
            message: "x".repeat(100),
        };
        for _ in 0..15 {
            out.emit(100, log());
        }
        assert_eq!(memory.used(), 10 * 164, "ten fit, five dropped");
        assert_eq!(stream.recv().await, Some(log()));
        assert_eq!(
            memory.used(),
            9 * 164,
            "a taken event gives its charge back"
        );
        out.emit(100, log());
        drop(out);
        let mut logs = 1;
        while let Some(e) = stream.recv().await {
            match e {
                CallEvent::Log { .. } => logs += 1,
                e => assert_eq!(e, CallEvent::Dropped { count: 5 }),
            }
        }
        assert_eq!(logs, 11);
        assert_eq!(memory.used(), 0);
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_never_grows_the_queue() {
        let (sink, mut stream) = EventSink::channel(4);
        for i in 0..1000 {
            sink.send(CallEvent::Progress {
                progress: i as f64,
                total: None,
                message: None,
            });
        }
        drop(sink);
        let mut seen = Vec::new();
        while let Some(e) = stream.recv().await {
            seen.push(e);
        }
        assert_eq!(seen.len(), 5, "4 queued and the drop count: {seen:?}");
        assert_eq!(seen[4], CallEvent::Dropped { count: 996 });
    }
}
