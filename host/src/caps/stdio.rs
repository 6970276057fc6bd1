//! The `stdio` unit: everything a tool says besides its result: stdout and
//! stderr (captured, never the host's own streams) and the `log` and
//! `progress` events for its caller.
//!
//! - parse: nothing (a manifest cannot ask for output channels);
//! - narrow: the operator's `[output]` caps: bytes captured per stream, the
//!   event budget per call, the fixed cost of each event, the queue length
//!   towards the client;
//! - apply: fresh bounded pipes and an event budget per call;
//! - enforce: a pipe that fills ends the call (a flood is reported as
//!   such); every event costs its size plus a fixed overhead, so even empty
//!   messages run the budget out; events past the budget, or while the
//!   client is not reading, are dropped and counted (the caller learns how
//!   many at the end, see `EventStream`).
//!
//! Must not touch: the host's own stdout/stderr.

use crate::model::{CallEvent, EventSink};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

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

/// One call's output channels.
pub(crate) struct CallOutput {
    pub(crate) stdout: MemoryOutputPipe,
    pub(crate) stderr: MemoryOutputPipe,
    events: Option<EventSink>,
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
    ) -> CallOutput {
        let stdout = MemoryOutputPipe::new(self.max_stdio);
        let stderr = MemoryOutputPipe::new(self.max_stdio);
        b.stdout(stdout.clone()).stderr(stderr.clone());
        CallOutput {
            stdout,
            stderr,
            events,
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

    /// Send an event of `size` bytes of text, if the budget allows; else
    /// drop it (counted by the sink).
    pub(crate) fn emit(&mut self, size: usize, event: CallEvent) {
        let Some(sink) = &self.events else { return };
        let cost = size.saturating_add(self.overhead);
        if cost <= self.budget {
            self.budget -= cost;
            sink.send(event);
        } else {
            sink.count_dropped();
        }
    }

    /// Bytes of the events sent to the caller so far.
    pub(crate) fn sent(&self) -> usize {
        self.start - self.budget
    }

    /// Which stream filled up, if one did: `(name, limit)`.
    pub(crate) fn flooded(&self, limit: usize) -> Option<&'static str> {
        if self.stdout.contents().len() >= limit {
            Some("stdout")
        } else if self.stderr.contents().len() >= limit {
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
        let mut out = caps.apply(&mut b, Some(sink));
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
