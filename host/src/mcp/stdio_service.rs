//! One MCP connection over a line stream (stdio), with its hot path,
//! `tools/call`, answered past rmcp's service loop.
//!
//! rmcp's loop hands every request to a spawned handler task and every
//! response back through the loop to a send task: three task hand-offs a
//! call, each a thread wake-up when the runtime has more than one worker,
//! which profiles of `toolhost serve --stdio` showed as most of a call's
//! cost beyond the call itself (BENCHMARKS.md, "MCP round trip"). Here the
//! connection's lines are read by a task of its own:
//! - once the session is initialized, a line that reads exactly as a
//!   `tools/call` request goes straight to the same [`McpServer`]'s
//!   [`Service::handle_request`], with a context made as the loop makes it
//!   (the connection's peer, the request's `_meta`, a cancellation token of
//!   its own). Its first slice runs on the reading task when no other line
//!   waits (most calls end within it: no task is spawned or woken); else
//!   it is parked on the reading task and polled between reads, and a
//!   guest that yields past its first slice goes on on the guest executor
//!   (`Scheduler::run`); its reply is written by whichever task has it
//!   (`lines::Output`), and only then is its sandbox torn down
//!   (`toolhost::reply_first`). Another request under the id of a
//!   call running here is refused, as the loop cannot know of it;
//! - every other line, and a `tools/call` naming its own protocol version
//!   in `_meta` (which the loop scopes for the handler), goes to rmcp's loop
//!   as it was read, through an in-memory pipe and rmcp's own line
//!   transport, so rmcp still parses, refuses and answers it in its own
//!   words. What the loop sends (responses, progress and log
//!   notifications, list changes, requests to the client) is written to the
//!   same output, whole lines in order. A call's notifications pass through
//!   the loop's transport before its handler returns, so they reach the
//!   client before its reply, as through the loop;
//! - `notifications/cancelled` for a direct call cancels its token, which
//!   stops the guest; the call then ends unanswered (MCP: no response to a
//!   cancelled request), and is audited as `cancelled`.
//!
//! What a connection holds is bounded, as an HTTP tenant's is: each line
//! is weighed as parsed and holds that much of the connection's
//! [`MAX_HELD`] until its request ends (a direct call's end, or its
//! response passing out of the loop, or its cancellation); a request the
//! loop answers also holds one of [`MAX_LOOPED`] slots, and its id, like a
//! direct call's, cannot be used again until then. The reader waits for
//! room (the client's input backs up); a small line that is no request
//! passes without it. To hold and free what rmcp holds, the reader reads
//! what rmcp's loop makes of a line (a request, a cancellation) as rmcp
//! reads it.
//!
//! When input ends, the loop drains its handlers and the direct calls get
//! the same time ([`DRAIN`]) to answer; then they are cancelled, and the
//! output is flushed and closed.
//!
//! Must not: interpret MCP beyond routing and holding (the handler
//! answers everything), write a line but whole and in order, or answer a
//! request the client cancelled.

use super::McpServer;
use super::lines::{self, Line, Output};
use super::server::call_past_loop;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use rmcp::model::{
    CallToolRequestParams, ClientJsonRpcMessage, JsonRpcMessage, JsonRpcVersion2_0, RequestId,
    ServerJsonRpcMessage,
};
use rmcp::service::{Peer, QuitReason, RunningService, ServerInitializeError};
use rmcp::{RoleServer, ServiceExt};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

/// The longest line read, without its newline: rmcp's own limit for its
/// line transports (which counts the newline). A longer one is dropped
/// (and logged) as rmcp drops it.
const MAX_LINE: usize = rmcp::transport::async_rw::DEFAULT_MAX_LINE_LENGTH - 1;
/// Bytes of replies a client may leave unread; past it, the host's output
/// (the client's input) is closed and the client is served no more.
const REPLY_BACKLOG: usize = 64 << 20;
/// How long the calls still running when input ends have to answer:
/// what rmcp's loop gives its own handlers.
const DRAIN: Duration = Duration::from_secs(5);
/// The in-memory pipe to rmcp's loop: lines wait here while the loop is
/// busy (the reader then waits too, so the client's input backs up).
const TO_LOOP: usize = 256 << 10;

/// Most direct calls one connection may have parked on its reader; past
/// it the reader stops reading until one ends (the client's input backs
/// up), so a client cannot make it hold calls without bound.
const MAX_PARKED: usize = 256;

/// Bytes of requests one connection may hold while they are served, each
/// weighed as parsed ([`request_weight`](super::request_weight)): HTTP's
/// default `max-request-bytes`, which bounds a tenant's request bodies the
/// same way. Past it the reader waits for a request to end (the client's
/// input backs up); a request that alone weighs more is refused. Without
/// it a client could make the host hold its requests' parsed arguments
/// without bound (16 MiB lines of `[0,0,…]` at 256 MiB each, found by
/// review).
const MAX_HELD: usize = super::DEFAULT_REQUEST_BYTES;

/// Most requests rmcp's loop may be answering for one connection at once,
/// as for a 2025-11-25 session over HTTP; past it the reader waits. (rmcp
/// runs each on a task of its own, and bounds none.)
const MAX_LOOPED: usize = 1024;

/// The longest line that is no request and passes without room when the
/// connection has none (see `read`).
const PASSES_WITHOUT_ROOM: usize = 64 << 10;

/// Most parked calls served (each woken one polled to its next wait) before
/// the reader looks at its input again, so a burst of calls cannot hold
/// back the next line (a `notifications/cancelled`, say) for long.
const PARKED_PER_TURN: usize = 8;

/// The longest a reply of a turn waits for the others to be written with
/// it (a guest's first slice can take a tick; most take microseconds).
const HOLD_AT_MOST: Duration = Duration::from_micros(250);

/// Direct calls that did not end inline, polled by the reader.
type Parked = FuturesUnordered<Pin<Box<dyn Future<Output = ()> + Send>>>;

/// A served stdio connection, from [`McpServer::serve_stdio`]. Dropping
/// it stops the connection: its loop, its reader and its running calls.
pub struct StdioService {
    running: Option<RunningService<RoleServer, McpServer>>,
    reader: Option<AbortOnDropHandle<()>>,
    calls: Arc<Calls>,
    out: Arc<Output>,
    writer: Option<AbortOnDropHandle<()>>,
}

/// A connection being started: dropped before it is served (its future
/// dropped, or initialization failed), its reader stops and its output is
/// closed, so neither task outlives it.
struct Starting {
    out: Arc<Output>,
    tasks: Option<(AbortOnDropHandle<()>, AbortOnDropHandle<()>)>,
}

impl Drop for Starting {
    fn drop(&mut self) {
        if self.tasks.is_some() {
            self.out.close();
        }
    }
}

/// The requests of a connection: its direct calls, and what it holds.
struct Calls {
    /// Those running, by request id: each one's turn and token.
    running: Mutex<HashMap<RequestId, (u64, CancellationToken)>>,
    turns: AtomicU64,
    /// Every direct call's token descends from this one.
    stop: CancellationToken,
    /// The bytes of requests held ([`MAX_HELD`]): a direct call's until it
    /// ends, one the loop answers until its response passes (or the client
    /// cancels it: rmcp then sends none), any other line until the loop
    /// has it.
    bytes: Arc<Semaphore>,
    /// Requests the loop is answering ([`MAX_LOOPED`]).
    slots: Arc<Semaphore>,
    /// Those requests by id, and what each holds.
    looped: Mutex<HashMap<RequestId, (OwnedSemaphorePermit, OwnedSemaphorePermit)>>,
}

impl Calls {
    fn new() -> Calls {
        Calls {
            running: Mutex::default(),
            turns: AtomicU64::new(0),
            stop: CancellationToken::new(),
            bytes: Arc::new(Semaphore::new(MAX_HELD)),
            slots: Arc::new(Semaphore::new(MAX_LOOPED)),
            looped: Mutex::default(),
        }
    }

    /// Whether a request under `id` is in flight here (a direct call's or
    /// one the loop answers): another under it could not be told from it.
    fn in_flight(&self, id: &RequestId) -> bool {
        lock(&self.running).contains_key(id) || lock(&self.looped).contains_key(id)
    }

    /// `n` of `room`'s permits, once they are free; none once the
    /// connection stops.
    async fn room(&self, room: &Arc<Semaphore>, n: u32) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = room.clone().try_acquire_many_owned(n) {
            return Some(p);
        }
        tokio::select! {
            biased;
            () = self.stop.cancelled() => None,
            p = room.clone().acquire_many_owned(n) => p.ok(),
        }
    }

    /// What rmcp does with a cancellation of `id`, done here too: a direct
    /// call under it is stopped (and answers no more), and a request the
    /// loop answers gives its room back (rmcp sends it no response).
    fn cancel(&self, id: &RequestId) {
        if let Some((_, stop)) = lock(&self.running).remove(id) {
            stop.cancel();
        }
        lock(&self.looped).remove(id);
    }

    /// Stop every direct call; none of them answers any more.
    fn cancel_all(&self) {
        lock(&self.running).clear();
        self.stop.cancel();
    }
}

/// What a direct call needs of the connection, once it is initialized.
struct Ready {
    server: McpServer,
    peer: Peer<RoleServer>,
}

impl McpServer {
    /// Serve one MCP connection over a line stream: usually
    /// [`stdio()`](super::stdio), the process's stdin and stdout. Returns
    /// once the client has initialized the session, as rmcp's `serve`
    /// does; [`StdioService::waiting`] then runs it to its end.
    ///
    /// The same handler as `rmcp::ServiceExt::serve` over the same stream,
    /// with `tools/call` answered without the hops through rmcp's service
    /// loop (see the module's source for how).
    pub async fn serve_stdio<R, W>(
        self,
        (input, output): (R, W),
    ) -> Result<StdioService, ServerInitializeError>
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + 'static,
    {
        let (out, writer) = Output::new(output, REPLY_BACKLOG);
        let writer = AbortOnDropHandle::new(tokio::spawn(writer));
        let calls = Arc::new(Calls::new());
        // Set once rmcp's handshake is done (and awaited by the reader
        // after the handshake's lines).
        let ready = Arc::new(tokio::sync::SetOnce::new());
        let (to_loop, loop_input) = tokio::io::duplex(TO_LOOP);
        let reader = AbortOnDropHandle::new(tokio::spawn(read(
            BufReader::new(input),
            to_loop,
            ready.clone(),
            calls.clone(),
            out.clone(),
        )));
        let mut starting = Starting {
            out: out.clone(),
            tasks: Some((reader, writer)),
        };
        let server = self.clone();
        let started = self
            .serve((
                loop_input,
                ToOutput {
                    out: out.clone(),
                    calls: calls.clone(),
                    partial: Vec::new(),
                },
            ))
            .await;
        let running = started?;
        let (reader, writer) = starting.tasks.take().expect("taken once");
        let _ = ready.set(Ready {
            server,
            peer: running.peer().clone(),
        });
        Ok(StdioService {
            running: Some(running),
            reader: Some(reader),
            calls,
            out,
            writer: Some(writer),
        })
    }
}

impl StdioService {
    /// The connection's peer (the client), for notifications and requests
    /// to it.
    pub fn peer(&self) -> &Peer<RoleServer> {
        self.running
            .as_ref()
            .expect("a running service until dropped")
            .peer()
    }

    /// Serve until the client closes its end (or the connection fails),
    /// then let running calls answer (within 5 s; then they are
    /// cancelled), and flush what is left to write.
    pub async fn waiting(mut self) -> Result<QuitReason, tokio::task::JoinError> {
        let running = self.running.take().expect("waited once");
        // The loop ends once the reader has seen input end and the direct
        // calls have answered (or it failed: then the calls still parked
        // on the reader are cancelled, and it lets them end, audited as
        // cancelled, within `DRAIN`).
        let quit = running.waiting().await;
        self.calls.cancel_all();
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(DRAIN, reader).await;
        }
        self.out.close();
        // What is queued is written, unless the client does not read it.
        if let Some(writer) = self.writer.take() {
            let _ = tokio::time::timeout(DRAIN, writer).await;
        }
        quit
    }
}

impl Drop for StdioService {
    fn drop(&mut self) {
        // The reader ends its parked calls, cancelled (below), and stops,
        // within `DRAIN`; without a runtime to wait on, it is aborted.
        if let Some(reader) = self.reader.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(tokio::time::timeout(DRAIN, reader));
        }
        // What is queued is still written (the output is closed below),
        // for as long as `waiting` would give it.
        if let Some(writer) = self.writer.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(tokio::time::timeout(DRAIN, writer));
        }
        self.calls.cancel_all();
        self.out.close();
        // `running`, dropped with it, cancels the loop.
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads the client's lines: direct calls run from here, the rest go to
/// the loop in the order read.
async fn read<R: AsyncRead + Unpin>(
    mut input: BufReader<R>,
    mut to_loop: tokio::io::DuplexStream,
    ready: Arc<tokio::sync::SetOnce<Ready>>,
    calls: Arc<Calls>,
    out: Arc<Output>,
) {
    let mut line = Vec::with_capacity(4096);
    let mut lines = lines::Lines::new(MAX_LINE);
    // What the reader read on while it waited (see `reading_on`).
    let mut ahead = Ahead::default();
    // Direct calls that did not end inline: polled here, between reads
    // (see `serving`).
    let mut parked = Parked::new();
    // Whether the reader has waited for the handshake (see below).
    let mut waited = false;
    // Wait for `$wanted` (room, a slot), serving the parked calls and
    // reading on meanwhile (`serving`, `reading_on`).
    macro_rules! waiting {
        ($wanted:expr) => {
            serving(
                &mut parked,
                &out,
                reading_on(
                    $wanted,
                    &mut input,
                    &mut lines,
                    &mut ahead,
                    &mut to_loop,
                    &calls,
                ),
            )
            .await
        };
    }
    loop {
        // At most `MAX_PARKED`: past it, input waits for a call to end.
        while parked.len() >= MAX_PARKED && !calls.stop.is_cancelled() {
            let one_ends = async {
                tokio::select! {
                    biased;
                    () = calls.stop.cancelled() => {}
                    _ = parked.next() => {}
                }
            };
            reading_on(
                one_ends,
                &mut input,
                &mut lines,
                &mut ahead,
                &mut to_loop,
                &calls,
            )
            .await;
        }
        let read = if let Some(kept) = ahead.kept.take() {
            line = kept;
            Some(Ok(Line::Read))
        } else if ahead.ended {
            Some(Ok(Line::End))
        } else {
            let read = serving(&mut parked, &out, async {
                tokio::select! {
                    biased;
                    // The service stops (`waiting` after the loop failed, or
                    // dropped): the calls are cancelled, and drained below.
                    () = calls.stop.cancelled() => None,
                    r = lines.next(&mut input) => Some(r),
                }
            })
            .await;
            if let Some(Ok(Line::Read)) = read {
                lines.take_into(&mut line);
            }
            read
        };
        let Some(read) = read else { break };
        match read {
            Ok(Line::Read) => {}
            Ok(Line::TooLong) => {
                tracing::error!(
                    max_line_length = MAX_LINE,
                    "an incoming MCP message exceeded the maximum line length; it is dropped"
                );
                continue;
            }
            Ok(Line::End) => break,
            Err(e) => {
                tracing::error!("reading the MCP client's input failed: {e}");
                break;
            }
        }
        // Replies can no longer reach the client (it left 64 MiB unread,
        // or its input broke): run nothing more for it.
        if out.is_broken() {
            break;
        }
        // Each line is weighed as parsed, and holds that much of the
        // connection's room while it is served.
        let weight = super::request_weight(&line);
        let Some(bytes) = u32::try_from(weight).ok().filter(|_| weight <= MAX_HELD) else {
            too_large(&line, weight, &out);
            continue;
        };
        let held = match calls.bytes.clone().try_acquire_many_owned(bytes) {
            Ok(held) => Some(held),
            // A small line that is no request (a notification, a response)
            // holds nothing once the loop has read it: it passes without
            // room when there is none, or a connection whose room its long
            // calls hold could not cancel them (found by review).
            Err(_) if line.len() <= PASSES_WITHOUT_ROOM && !envelope(&line).is_request() => None,
            Err(_) => {
                let Some(held) = waiting!(calls.room(&calls.bytes, bytes)) else {
                    break;
                };
                Some(held)
            }
        };
        // Once the session is up, a `tools/call` may run here; before, every
        // line goes to the loop (which answers the handshake).
        let route = match (ready.get(), held) {
            (Some(ready), Some(held)) => route(&line, ready, &calls, &out, held),
            (_, held) => Route::Loop(held),
        };
        if let Route::Direct(mut call) = route {
            // A call's first slice runs here when no other line is waiting
            // to be read: most calls end within it (a guest's first slice
            // is at most an epoch tick and a grace, see `scheduler`), with
            // no task spawned or woken. One that goes on, or that arrived
            // with more lines behind it, is parked on this task and polled
            // between reads: what it does here is wait for room in the
            // pool and run its first slice; a guest that yields past it
            // goes on on the guest executor (`Scheduler::run`). So a burst
            // of calls costs no task spawns and no wake-ups of another
            // worker thread (measured: 1.5 futex calls per call with 64 in
            // flight, spawned). A burst's calls run their first slices
            // one after another here, `PARKED_PER_TURN` between reads.
            if lines::more_waiting(&mut input) || call.as_mut().now_or_never().is_none() {
                parked.push(call);
            }
            continue;
        }
        let (held, looped) = match route {
            Route::Loop(held) => (held, looped(&line)),
            Route::Looped(held, id) => (Some(held), Looped::Request(id)),
            Route::Direct(_) | Route::Answered => continue,
        };
        // What the loop makes of the line, read as rmcp reads it: a request
        // it answers holds its room until its response passes (`ToOutput`),
        // and a slot among `MAX_LOOPED`; a cancellation it acts on cancels a
        // direct call, or gives a request's room back (rmcp sends no
        // response to a request cancelled). Read any other way, a client
        // could free what the loop still holds, or hold what it freed
        // (found by review: an `"id": null` cancellation rmcp refuses, one
        // with a member more that it takes).
        // (What else it holds, it holds until the loop has the line.)
        let _until_the_loop_has_it = match looped {
            Looped::Request(id) => {
                if calls.in_flight(&id) {
                    in_flight(id, &out);
                    continue;
                }
                let held = match held {
                    Some(held) => held,
                    None => {
                        let Some(held) = waiting!(calls.room(&calls.bytes, bytes)) else {
                            break;
                        };
                        held
                    }
                };
                let Some(slot) = waiting!(calls.room(&calls.slots, 1)) else {
                    break;
                };
                lock(&calls.looped).insert(id, (held, slot));
                None
            }
            Looped::Cancel(id) => {
                calls.cancel(&id);
                held
            }
            Looped::Other => held,
        };
        line.push(b'\n');
        // The parked calls go on while the loop takes the line.
        if serving(&mut parked, &out, to_loop.write_all(&line))
            .await
            .is_err()
        {
            break;
        }
        // rmcp's handshake ends once it has answered `initialize` (the
        // client's `initialized` is then an ordinary message); the task
        // that records the served connection runs after that. The lines
        // after the first of `initialize` and `initialized` are read once
        // the service is up (or `HANDSHAKE_SETTLES` has passed), so each is
        // routed as the service means to: else the first calls would go to
        // the loop, their ids untracked here, beside direct calls under the
        // same ids. Once per connection: a client that repeats them is not
        // delayed again.
        if !waited && ready.get().is_none() && ends_handshake(&line) {
            waited = true;
            let up = tokio::time::timeout(HANDSHAKE_SETTLES, ready.wait());
            let _ = serving(&mut parked, &out, up).await;
        }
    }
    // Input ended. The calls still running keep the loop, through which
    // their notifications go, until they have answered; then dropping
    // `to_loop` ends its input, and it drains and ends.
    drain(&calls, parked).await;
    drop(to_loop);
}

/// Lines the reader read on while it waited ([`reading_on`]).
#[derive(Default)]
struct Ahead {
    /// The first line that could not go ahead: read next.
    kept: Option<Vec<u8>>,
    /// Input ended (or failed) meanwhile.
    ended: bool,
}

/// Wait for `wanted` while reading on: the calls that hold what the reader
/// waits for (room, a slot, a place among the parked calls) may be waiting
/// for the client's answers to their questions, or be what it cancels,
/// and those lines come after the one that waits. So a small answer (a
/// response) or cancellation goes to the loop at once (a cancellation
/// acted on here as well); the first other line is kept, and reading
/// stops there until the wait is over (found by review: answers queued
/// behind a line waiting for room, and the calls holding it timed out).
async fn reading_on<T, R: AsyncRead + Unpin>(
    wanted: impl Future<Output = T>,
    input: &mut BufReader<R>,
    lines: &mut lines::Lines,
    ahead: &mut Ahead,
    to_loop: &mut tokio::io::DuplexStream,
    calls: &Calls,
) -> T {
    let mut wanted = std::pin::pin!(wanted);
    let mut read = Vec::new();
    loop {
        if ahead.kept.is_some() || ahead.ended {
            return wanted.await;
        }
        let next = tokio::select! {
            biased;
            t = &mut wanted => return t,
            // (Safe to drop: a line read in part is kept by `lines`.)
            r = lines.next(input) => r,
        };
        match next {
            Ok(Line::Read) => {
                lines.take_into(&mut read);
                let goes_ahead = read.len() <= PASSES_WITHOUT_ROOM
                    && match envelope(&read) {
                        Envelope {
                            method: None,
                            id: Some(_),
                        } => true,
                        _ => match looped(&read) {
                            Looped::Cancel(id) => {
                                calls.cancel(&id);
                                true
                            }
                            _ => false,
                        },
                    };
                if !goes_ahead {
                    ahead.kept = Some(std::mem::take(&mut read));
                    continue;
                }
                read.push(b'\n');
                if to_loop.write_all(&read).await.is_err() {
                    ahead.ended = true;
                }
            }
            Ok(Line::TooLong) => tracing::error!(
                max_line_length = MAX_LINE,
                "an incoming MCP message exceeded the maximum line length; it is dropped"
            ),
            Ok(Line::End) => ahead.ended = true,
            Err(e) => {
                tracing::error!("reading the MCP client's input failed: {e}");
                ahead.ended = true;
            }
        }
    }
}

/// Run `other` to its end, serving the parked calls meanwhile: the woken
/// ones first (one whose room came or whose guest finished goes on before
/// more input is read, so a client that keeps sending cannot starve the
/// calls it already made), but at most [`PARKED_PER_TURN`] of them before
/// `other` is polled again. (`FuturesUnordered` polls only the woken.)
///
/// The replies of the calls served in one turn are written together when
/// the turn ends (`Output::hold`): one `writev` and one wake-up of the
/// client for up to [`PARKED_PER_TURN`] replies.
async fn serving<T>(parked: &mut Parked, out: &Output, other: impl Future<Output = T>) -> T {
    let mut other = std::pin::pin!(other);
    std::future::poll_fn(|cx| {
        loop {
            let mut served = 0;
            let mut hold = (!parked.is_empty()).then(|| (out.hold(), Instant::now()));
            while served < PARKED_PER_TURN {
                match parked.poll_next_unpin(cx) {
                    Poll::Ready(Some(())) => served += 1,
                    // None woken (their wakers are set), or none parked.
                    Poll::Ready(None) | Poll::Pending => break,
                }
                // Replies wait at most `HOLD_AT_MOST` for the next ones.
                if hold
                    .as_ref()
                    .is_some_and(|(_, t)| t.elapsed() > HOLD_AT_MOST)
                {
                    drop(hold.take());
                    hold = Some((out.hold(), Instant::now()));
                }
            }
            drop(hold);
            if let Poll::Ready(t) = other.as_mut().poll(cx) {
                return Poll::Ready(t);
            }
            if served < PARKED_PER_TURN {
                return Poll::Pending;
            }
        }
    })
    .await
}

/// Let the direct calls still running answer, for at most [`DRAIN`]; then
/// cancel them, unanswered (a cancelled call ends at its next yield, and
/// is audited as cancelled).
async fn drain(calls: &Calls, mut parked: Parked) {
    let all = async { while parked.next().await.is_some() {} };
    tokio::pin!(all);
    if tokio::time::timeout(DRAIN, &mut all).await.is_err() {
        calls.cancel_all();
        all.await;
    }
}

/// A line's message, read once to route it: its members as JSON-RPC
/// names them, the params left unparsed. A line with anything more (a
/// member JSON-RPC does not define, one repeated) is not read here: it
/// goes to the loop as it is. (`ClientJsonRpcMessage` would cost ~9 µs
/// for a `tools/call`: its `_meta` is flattened through serde's buffered
/// content.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Probe<'a> {
    #[serde(rename = "jsonrpc")]
    _jsonrpc: JsonRpcVersion2_0,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(default)]
    id: Option<RequestId>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

/// Whether `line` is an `initialize` request or the client's
/// `notifications/initialized` (read leniently: a wrong guess costs one
/// bounded wait, once).
fn ends_handshake(line: &[u8]) -> bool {
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    serde_json::from_slice::<Value>(line).is_ok_and(|v| {
        matches!(
            v.get("method").and_then(Value::as_str),
            Some("initialize" | "notifications/initialized")
        )
    })
}

/// How long the reader waits, after the handshake's lines, for the
/// service to be recorded (rmcp is done with the handshake once it has
/// answered `initialize`; this bounds a slow or failed one).
const HANDSHAKE_SETTLES: Duration = Duration::from_secs(1);

/// Where a line goes.
enum Route {
    /// A `tools/call` to run here (holding its room until it ends).
    Direct(Pin<Box<dyn Future<Output = ()> + Send>>),
    /// Answered here already (a request under an id in flight here).
    Answered,
    /// To rmcp's loop, as it was read, with the room it holds (none: a
    /// small line that is no request, passed without room).
    Loop(Option<OwnedSemaphorePermit>),
    /// To rmcp's loop, a `tools/call` it answers under this id (read here
    /// as rmcp reads it: no need to read it again).
    Looped(OwnedSemaphorePermit, RequestId),
}

/// Where `line` goes.
fn route(
    line: &[u8],
    ready: &Ready,
    calls: &Arc<Calls>,
    out: &Arc<Output>,
    held: OwnedSemaphorePermit,
) -> Route {
    let line = message(line);
    let probe = match serde_json::from_slice::<Probe<'_>>(line) {
        Ok(probe) if is_object(line) => probe,
        _ => return refuse_in_flight(line, calls, out, held),
    };
    match (probe.method.as_deref(), probe.id, probe.params) {
        // Another request under the id of a request in flight here: its
        // reply could not be told from the other's.
        (Some(_), Some(id), _) if calls.in_flight(&id) => {
            in_flight(id, out);
            Route::Answered
        }
        // (rmcp reads params only as an object; serde would take an array.)
        (Some("tools/call"), Some(id), Some(params)) if params.get().starts_with('{') => {
            match serde_json::from_str::<CallToolRequestParams>(params.get()) {
                Ok(params) => direct(id, params, ready, calls, out, held),
                Err(_) => Route::Loop(Some(held)),
            }
        }
        _ => Route::Loop(Some(held)),
    }
}

/// A line as rmcp reads it: a UTF-8 BOM and a CR before the newline are
/// not part of the message.
fn message(line: &[u8]) -> &[u8] {
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Whether `message` is a JSON object: the structs that read a line here
/// would read an array as one too, its members in order (found by review:
/// `["2.0","tools/call",5,{…}]` ran a tool), where rmcp answers it as no
/// message.
fn is_object(message: &[u8]) -> bool {
    message.trim_ascii_start().first() == Some(&b'{')
}

/// What rmcp's loop makes of a line.
enum Looped {
    /// A request it answers, under this id.
    Request(RequestId),
    /// A cancellation of the request under this id, which it acts on.
    Cancel(RequestId),
    /// Anything else: a notification or a response, or a line it answers
    /// without an id (one it cannot read as a message), or not at all.
    Other,
}

/// What rmcp's loop makes of `line`: read as it reads it
/// (`ClientJsonRpcMessage`), once the envelope shows a method (a response
/// is not read again).
fn looped(line: &[u8]) -> Looped {
    use rmcp::model::ClientNotification;
    let line = message(line);
    if envelope(line).method.is_none() {
        return Looped::Other;
    }
    match serde_json::from_slice::<ClientJsonRpcMessage>(line) {
        Ok(JsonRpcMessage::Request(r)) => Looped::Request(r.id),
        Ok(JsonRpcMessage::Notification(n)) => match n.notification {
            ClientNotification::CancelledNotification(c) => {
                c.params.request_id.map_or(Looped::Other, Looped::Cancel)
            }
            _ => Looped::Other,
        },
        _ => Looped::Other,
    }
}

/// A line's method and id, read leniently (a member more, params of any
/// shape), as rmcp reads a line's id.
#[derive(Deserialize, Default)]
struct Envelope {
    method: Option<serde::de::IgnoredAny>,
    id: Option<RequestId>,
}

impl Envelope {
    /// Whether it reads as a request (a method and an id).
    fn is_request(&self) -> bool {
        self.method.is_some() && self.id.is_some()
    }

    /// Its id, if it reads as a request.
    fn request_id(self) -> Option<RequestId> {
        self.method.and(self.id)
    }
}

/// `line`'s envelope (empty if it is not a JSON object).
fn envelope(line: &[u8]) -> Envelope {
    let line = message(line);
    if !is_object(line) {
        return Envelope::default();
    }
    serde_json::from_slice(line).unwrap_or_default()
}

/// Refuse a request that alone weighs more than a connection may hold
/// (a line that is not a request is dropped, as rmcp drops a line too
/// long).
fn too_large(line: &[u8], weight: usize, out: &Output) {
    let Some(id) = envelope(line).request_id() else {
        tracing::error!(
            weight,
            max = MAX_HELD,
            "an incoming MCP message weighs more than a connection may hold; it is dropped"
        );
        return;
    };
    let message: ServerJsonRpcMessage = JsonRpcMessage::error(
        rmcp::ErrorData::invalid_request(
            format!(
                "the request is too large: parsed, it weighs {weight} bytes (each JSON value counts 64), and a connection holds at most {MAX_HELD} bytes of requests at once; send less per request"
            ),
            None,
        ),
        Some(id),
    );
    write(out, &message);
}

/// A request for the loop under the id of a request in flight here is
/// refused too, however it is written (a member more, its own protocol
/// version, params the direct path does not read): its reply could not be
/// told from the other's. Read leniently, as rmcp reads it.
fn refuse_in_flight(line: &[u8], calls: &Calls, out: &Output, held: OwnedSemaphorePermit) -> Route {
    match envelope(line).request_id() {
        Some(id) if calls.in_flight(&id) => {
            in_flight(id, out);
            Route::Answered
        }
        _ => Route::Loop(Some(held)),
    }
}

/// Refuse a request whose id is in flight here already.
fn in_flight(id: RequestId, out: &Output) {
    let message: ServerJsonRpcMessage = JsonRpcMessage::error(
        rmcp::ErrorData::invalid_request(
            format!(
                "request id {} is already in flight",
                crate::error::shown_name(&id.to_string())
            ),
            None,
        ),
        Some(id),
    );
    write(out, &message);
}

/// Write one message to the client.
fn write(out: &Output, message: &ServerJsonRpcMessage) {
    match serde_json::to_vec(message) {
        Ok(mut line) => {
            line.push(b'\n');
            let _ = out.send(line);
        }
        Err(e) => tracing::error!("a response did not serialize: {e}"),
    }
}

/// The call, run as the loop would run it (`server::call_past_loop`); the
/// loop's way for a request naming its own protocol version. Its id is not
/// in flight here (`route` refused it), and only this task adds ids.
fn direct(
    id: RequestId,
    params: CallToolRequestParams,
    ready: &Ready,
    calls: &Arc<Calls>,
    out: &Arc<Output>,
    held: OwnedSemaphorePermit,
) -> Route {
    let stop = calls.stop.child_token();
    let Some(call) = call_past_loop(
        ready.server.clone(),
        ready.peer.clone(),
        id.clone(),
        params,
        stop.clone(),
    ) else {
        // (Its params read as `CallToolRequestParams`, as rmcp reads them.)
        return Route::Looped(held, id);
    };
    let turn = calls.turns.fetch_add(1, Ordering::Relaxed);
    lock(&calls.running).insert(id.clone(), (turn, stop));
    let (calls, out) = (calls.clone(), out.clone());
    Route::Direct(Box::pin(async move {
        // The request's room, until the call has ended.
        let _held = held;
        let (message, after) = crate::reply_first(call).await;
        // Cancelled by the client (or too late at the end): no reply.
        {
            let mut running = lock(&calls.running);
            if running.get(&id).is_none_or(|(t, _)| *t != turn) {
                return;
            }
            running.remove(&id);
        }
        write(&out, &message);
        // The sandbox's memory is reset (and the next one prepared) after
        // the reply is out: now, or when a turn's held replies have been
        // written together (`serving`).
        if out.is_held() {
            after.after_this_turn();
        } else {
            drop(after);
        }
    }))
}

/// The loop's output: each whole line it writes goes to the connection's
/// output at once, in order with the direct calls' replies.
struct ToOutput {
    out: Arc<Output>,
    /// A response passing frees its request's room.
    calls: Arc<Calls>,
    /// A line written in parts, until its newline.
    partial: Vec<u8>,
}

impl ToOutput {
    /// Free the room of the request `line` answers, if the loop holds one.
    fn answered(&self, line: &[u8]) {
        if lock(&self.calls.looped).is_empty() {
            return;
        }
        if let Envelope {
            method: None,
            id: Some(id),
        } = envelope(line)
        {
            lock(&self.calls.looped).remove(&id);
        }
    }
}

impl AsyncWrite for ToOutput {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut rest = buf;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&rest[..=i]);
            rest = &rest[i + 1..];
            self.answered(&line);
            if self.out.send(line).is_err() {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
        }
        self.partial.extend_from_slice(rest);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The connection closes the output once the direct calls have
    /// answered too (`StdioService::waiting`).
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
