//! Where and in what order guests run: one tenant's flood or runaway tools
//! must not starve another's calls, nor the front ends.
//!
//! - **A guest executor of its own.** Guests run on a multi-threaded tokio
//!   runtime separate from the I/O runtime the front ends (HTTP, stdio, the
//!   agent) run on, so however busy the guests are, requests are still read,
//!   refused, authenticated and answered. Its threads run at a lower OS
//!   priority than the rest of the process: the kernel preempts a guest for
//!   the front end, never the reverse. And there is one fewer of them than
//!   cores ([`default_threads`]): priority alone still left a request's
//!   thread waiting for a core while runaways held every one.
//! - **Fair admission.** A call reaches the sandbox pool through a
//!   turnstile: after its tool's own concurrency permit (a tool at its
//!   limit waits there, holding nothing shared), it waits for its turn in
//!   its scope's (tenant's) own queue, takes the pool's permits (waiting
//!   for room if the pool is full, the only call that does), and passes the
//!   turn on. Turns go to the scopes round robin, one call each: a tenant
//!   that queues a thousand calls delays another's next call by one pool
//!   slot's turn, not by a thousand. Each scope's queue is bounded
//!   ([`MAX_QUEUED_PER_SCOPE`]); past it the call is refused (`busy`). The
//!   whole wait counts against the tool's timeout (the sandbox's deadline).
//!   A call's first slice (until its guest first yields: at most one
//!   epoch tick and a grace) runs on the caller's task: most tool calls end within it and
//!   never pay the hop between runtimes ([`Scheduler::run`]).
//! - **Short calls are not stuck behind long ones**: a running guest yields
//!   to the executor at every epoch tick and every few million units of
//!   fuel (see `sandbox`), so a runaway holds a guest thread for a slice at
//!   most, and new calls find a thread.
//! - **CPU by tenant, not by call**: past its first slice a guest runs
//!   only with one of the executor's turns, handed round robin among the
//!   scopes waiting, passed on at every tick and given back whenever it
//!   waits ([`CpuTurn`], [`Turned`]), so a tenant with many runaway calls
//!   gets the guest threads' time no more often than one with a single
//!   call.
//!
//! Owns no policy: *whether* a call may run (quotas, rules) is decided
//! before it gets here.

use crate::catalog::Scope;
use crate::config::GuestPriority;
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Most calls one scope may have waiting for a run slot; more are refused
/// (`busy`) instead of queued without bound.
pub(crate) const MAX_QUEUED_PER_SCOPE: usize = 4096;

/// The guest executor and the fair queue in front of it. Dropping it stops
/// the executor's threads (without waiting for running guests).
pub(crate) struct Scheduler {
    runtime: Option<tokio::runtime::Runtime>,
    fair: Arc<Fair>,
    /// Turns at the guest threads, one per thread (see [`CpuTurn`]).
    cpu: Arc<Fair>,
}

/// Why a call could not be scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ScheduleError {
    /// Its scope's queue is full.
    #[error("{0} calls of this scope are already waiting for a sandbox")]
    Busy(usize),
}

impl Scheduler {
    /// An executor of `threads` threads (0: [`default_threads`]), and a turnstile
    /// at the pool that lets `turns` calls at a time take its permits.
    pub(crate) fn new(
        threads: usize,
        turns: usize,
        priority: GuestPriority,
    ) -> std::io::Result<Scheduler> {
        let threads = match threads {
            0 => default_threads(),
            n => n,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("toolhost-guest")
            .on_thread_start(move || lower_priority(priority))
            .enable_all()
            .build()?;
        Ok(Scheduler {
            runtime: Some(runtime),
            fair: Arc::new(Fair::new(turns)),
            // Unbounded queues: the waiters are running calls, already
            // bounded by the pool (a bound here would let the calls past
            // it run without a turn).
            cpu: Arc::new(Fair::bounded(threads, usize::MAX)),
        })
    }

    /// The turnstile at the pool.
    pub(crate) fn fair(&self) -> Arc<Fair> {
        self.fair.clone()
    }

    /// A call of `scope`'s turns at the guest threads.
    pub(crate) fn cpu_turn(&self, scope: Scope) -> CpuTurn {
        CpuTurn {
            fair: self.cpu.clone(),
            scope,
            held: Default::default(),
            in_next: Default::default(),
        }
    }

    /// Run `fut`: its first slice on the caller's task, the rest (if it
    /// yields) on the guest executor. A short call (most tool calls finish
    /// before their first yield) then never crosses runtimes: two thread
    /// wake-ups fewer, which measured ~50 µs of a ~65 µs echo call
    /// (BENCHMARKS.md, "Sandbox"). A guest's first slice ends at the next
    /// epoch tick, or the one after if the next comes within a grace
    /// (`FIRST_SLICE_GRACE` in `sandbox`), then it yields at every tick, so
    /// the caller's thread gives at most a tick and the grace of guest
    /// execution per call (an instruction the epoch cannot interrupt, such
    /// as a `memory.fill` over the whole memory, and host calls, excepted);
    /// anything longer runs on the guest executor as before. Dropping the returned
    /// future stops the guest wherever it runs.
    ///
    /// Until `admitted()` says the call got its room in the pool, it stays on
    /// the caller's task: a call waiting for its tool's concurrency permit,
    /// its turn or the pool holds nothing and runs nothing, so there is no
    /// reason to move it; moved, it woke on a guest thread when its room
    /// came, and its reply crossed back (with 64 calls of a 16-wide tool in
    /// flight, most calls did). Its first slice then starts where it waited.
    ///
    /// `fut` comes boxed: a call's future is kilobytes (the guest's
    /// instantiation and call), and boxed where it is made it is never
    /// copied again, whoever moves it (measured: moving the unboxed futures
    /// of a call was 7% of a stdio server's CPU).
    pub(crate) async fn run<F>(
        &self,
        mut fut: Pin<Box<F>>,
        admitted: impl Fn() -> bool,
    ) -> Result<F::Output, tokio::task::JoinError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let first = std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
            std::task::Poll::Ready(out) => std::task::Poll::Ready(Some(out)),
            // Waiting for admission: woken here when its room comes.
            std::task::Poll::Pending if !admitted() => std::task::Poll::Pending,
            // The guest yielded: the rest is the executor's.
            std::task::Poll::Pending => std::task::Poll::Ready(None),
        })
        .await;
        if let Some(out) = first {
            return Ok(out);
        }
        // The executor's first poll registers its own wakers; any event
        // since this poll is seen then (a future reports what is ready
        // when polled).
        self.spawn(fut).await
    }

    /// The guest executor, for work of the sandbox's own that runs guest
    /// code off the calls' path (`describe`, prepared sandboxes).
    pub(crate) fn handle(&self) -> tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .expect("present until dropped")
            .handle()
            .clone()
    }

    /// Run `f`, which blocks (a large schema check), on the guest
    /// executor's blocking threads: at the guests' priority, and never on a
    /// thread guests run on (with one guest thread, a long synchronous
    /// check there would stall every guest and every deadline).
    pub(crate) fn spawn_blocking<F, T>(&self, f: F) -> Spawned<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let rt = self.runtime.as_ref().expect("present until dropped");
        Spawned(rt.spawn_blocking(f))
    }

    /// Run `fut` on the guest executor. Dropping the returned future stops
    /// it there (the guest is dropped with its task).
    pub(crate) fn spawn<F>(&self, fut: F) -> Spawned<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let rt = self.runtime.as_ref().expect("present until dropped");
        Spawned(rt.spawn(fut))
    }
}

/// One thread per core but one: the core left over is the front end's.
/// Guests that keep every guest thread busy (runaways of one tenant) then
/// never make the threads that read and answer another tenant's requests
/// wait for a core; measured in BENCHMARKS.md ("Noisy neighbour": the
/// victim's p99 under attack 0.62-0.95x alone with one guest thread on 2
/// cores, 1.47-2.99x with two). The cost is guest throughput for calls
/// that run past their first slice (a short call's first slice runs on
/// the caller's task, on any core).
pub(crate) fn default_threads() -> usize {
    cores().saturating_sub(1).max(1)
}

/// The cores this process may use (`available_parallelism`, 1 if unknown),
/// read once: under cgroup v1 each read opens and parses several files
/// under `/proc` and `/sys` (0.1-0.3 ms), and sizing the default pool asks
/// dozens of times (3.4 ms of a twenty-component start, BENCHMARKS.md). A
/// quota changed after the first read is seen at the next start.
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // The last handle may go inside an async context, where a runtime
        // may not block to shut down.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Lower the calling thread's scheduling priority (Linux: threads have
/// their own nice value and policy), so that the I/O runtime wins the CPU
/// from guests.
pub(crate) fn lower_priority(priority: GuestPriority) {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread (tid 0 and pid 0 name
    // it); the only memory passed is a local `sched_param`.
    unsafe {
        match priority {
            GuestPriority::Idle => {
                let param = libc::sched_param { sched_priority: 0 };
                if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) == 0 {
                    return;
                }
                tracing::warn!(
                    "cannot run guests at SCHED_IDLE ({}): running them at nice 10",
                    std::io::Error::last_os_error()
                );
            }
            GuestPriority::Background => {}
        }
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = priority;
}

/// A call's turns at the guest threads: CPU shared by tenant, not by call.
///
/// The executor alone shares its threads among *tasks*: a tenant running
/// four runaway calls would get four times the CPU of a tenant running
/// one. So a guest past its first slice runs only while holding one of
/// the executor's turns (one per guest thread), handed out round robin
/// among the scopes that wait, like the pool's turns ([`Fair`]). At every
/// epoch tick it queues for its scope's next turn and passes the one it
/// holds on ([`CpuTurn::next`]). When the guest stops running for another
/// reason (it waits in the host: a sleep, I/O, a fuel yield), the call's
/// future returns pending and [`Turned`] gives the turn back: a guest
/// waiting must not keep a turn a running one needs. Calling into the
/// host gives nothing back by itself, so a guest cannot shed its turn
/// faster than it stops running. After such a wait it takes a turn again
/// before it runs on.
#[derive(Clone)]
pub(crate) struct CpuTurn {
    fair: Arc<Fair>,
    scope: Scope,
    held: Arc<Mutex<Option<RunSlot>>>,
    /// Set while [`CpuTurn::next`] runs: a pending call is then waiting
    /// for its turn (or for the executor, holding it), not idle.
    in_next: Arc<std::sync::atomic::AtomicBool>,
}

impl CpuTurn {
    /// Give the turn back, if held.
    pub(crate) fn release(&self) {
        let slot = self.held.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(slot);
    }

    /// The call's future returned pending: unless that is the wait for
    /// (or right after) its turn, the guest is idle: give the turn back.
    /// Whether a turn was given back.
    fn idle(&self) -> bool {
        if self.in_next.load(std::sync::atomic::Ordering::Acquire) {
            return false;
        }
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .is_some()
    }

    /// Wait for this scope's next turn and hold it: a guest that gave its
    /// turn back while it waited takes one again before it runs on.
    fn regain(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let (fair, scope, held) = (self.fair.clone(), self.scope.clone(), self.held.clone());
        Box::pin(async move {
            if let Ok(slot) = Fair::acquire(&fair, &scope).await {
                *held.lock().unwrap_or_else(|e| e.into_inner()) = Some(slot);
            }
        })
    }

    /// At an epoch tick: queue for this scope's next turn, *then* pass the
    /// one held on, so that it goes to the next scope in the ring (or back
    /// to this one if no other waits); once the turn comes, let the
    /// executor run its other tasks, then go on. Releasing before queueing
    /// would hand the turn to nobody (no guest waits while the running one
    /// holds its thread) and leave the executor's per-task order in charge.
    pub(crate) fn next(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let (fair, scope, held) = (self.fair.clone(), self.scope.clone(), self.held.clone());
        let in_next = self.in_next.clone();
        Box::pin(async move {
            /// Clears `in_next` however the future ends (also dropped).
            struct InNext(Arc<std::sync::atomic::AtomicBool>);
            impl Drop for InNext {
                fn drop(&mut self) {
                    self.0.store(false, std::sync::atomic::Ordering::Release);
                }
            }
            in_next.store(true, std::sync::atomic::Ordering::Release);
            let _in_next = InNext(in_next);
            let mut next = std::pin::pin!(Fair::acquire(&fair, &scope));
            // The first poll queues this call (or takes a free turn).
            let polled = futures::poll!(next.as_mut());
            let current = held.lock().unwrap_or_else(|e| e.into_inner()).take();
            drop(current);
            let slot = match polled {
                std::task::Poll::Ready(slot) => slot,
                std::task::Poll::Pending => next.await,
            };
            // The queues for turns are unbounded (`Scheduler::new`), so
            // this is never `busy`.
            if let Ok(slot) = slot {
                *held.lock().unwrap_or_else(|e| e.into_inner()) = Some(slot);
            }
            tokio::task::yield_now().await;
        })
    }
}

/// A deadline's timer, made only when first polled: a call that ends at
/// its first poll (most do) never makes one (a timer takes the runtime's
/// handle and a timer entry, made and dropped for nothing). Polled outside
/// the task's cooperative budget, as `tokio::time::timeout`'s delay is, so
/// a future that spends the budget at every poll cannot hold it off.
pub(crate) struct LazyTimer {
    at: tokio::time::Instant,
    sleep: Option<Pin<Box<tokio::task::Unconstrained<tokio::time::Sleep>>>>,
}

impl LazyTimer {
    pub(crate) fn new(at: tokio::time::Instant) -> LazyTimer {
        LazyTimer { at, sleep: None }
    }

    /// Ready once the deadline has passed; registers the timer's wake-up
    /// otherwise.
    pub(crate) fn poll(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let at = self.at;
        self.sleep
            .get_or_insert_with(|| {
                Box::pin(tokio::task::unconstrained(tokio::time::sleep_until(at)))
            })
            .as_mut()
            .poll(cx)
    }
}

pin_project_lite::pin_project! {
    /// A call's guest future, which gives its turn back whenever it returns
    /// pending for a reason other than waiting for the turn (see
    /// [`CpuTurn`]), and takes one again before the guest runs on.
    pub(crate) struct Turned<F> {
        // Inline, not boxed: it is polled where the call's boxed future
        // holds it.
        #[pin]
        inner: F,
        turn: Option<CpuTurn>,
        // The wait for a turn again, once one was given back.
        regain: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    }
}

impl<F> Turned<F> {
    pub(crate) fn new(inner: F, turn: Option<CpuTurn>) -> Turned<F> {
        Turned {
            inner,
            turn,
            regain: None,
        }
    }
}

impl<F: Future> Future for Turned<F> {
    type Output = F::Output;
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let Some(turn) = this.turn.as_ref() else {
            return this.inner.poll(cx);
        };
        // A guest that gave its turn back while it waited runs on only once
        // it has one again: else it ran without one until its next tick,
        // and a guest waiting briefly in the host at every tick (a `stat`)
        // ran almost all the time on turns it never held, so the guest
        // threads went back to being shared by call, not by tenant (found
        // by review).
        if let Some(regain) = this.regain.as_mut() {
            std::task::ready!(regain.as_mut().poll(cx));
            *this.regain = None;
        }
        // A guest that only yields (wasmtime's fuel yield wakes its task
        // before returning pending) is still running: it keeps its turn.
        // One that waits for something else is idle and gives it back.
        let seen = Arc::new(SeenWake {
            inner: cx.waker().clone(),
            woken: std::sync::atomic::AtomicBool::new(false),
        });
        let waker = std::task::Waker::from(seen.clone());
        let polled = this.inner.poll(&mut std::task::Context::from_waker(&waker));
        if polled.is_pending()
            && !seen.woken.load(std::sync::atomic::Ordering::Acquire)
            && turn.idle()
        {
            *this.regain = Some(turn.regain());
        }
        polled
    }
}

/// A waker that remembers whether it was woken (see [`Turned`]).
struct SeenWake {
    inner: std::task::Waker,
    woken: std::sync::atomic::AtomicBool,
}

impl std::task::Wake for SeenWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, std::sync::atomic::Ordering::Release);
        self.inner.wake_by_ref();
    }
}

/// A call running on the guest executor; aborted when dropped.
pub(crate) struct Spawned<T>(tokio::task::JoinHandle<T>);

impl<T> Future for Spawned<T> {
    type Output = Result<T, tokio::task::JoinError>;
    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for Spawned<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Turns at the pool, handed out round robin among the scopes that wait
/// for one.
pub(crate) struct Fair {
    state: Mutex<FairState>,
}

struct FairState {
    free: usize,
    /// Each waiting scope's callers, oldest first.
    queues: HashMap<Scope, VecDeque<Waiter>>,
    /// Scopes with waiters, in the order they are served.
    ring: VecDeque<Scope>,
    next_id: u64,
    /// Most waiters one scope may queue.
    max_queued: usize,
}

struct Waiter {
    id: u64,
    tx: oneshot::Sender<RunSlot>,
}

/// A turn at the pool, held until the call has its permits; passed on
/// when dropped.
pub(crate) struct RunSlot {
    fair: Option<Arc<Fair>>,
}

impl Drop for RunSlot {
    fn drop(&mut self) {
        if let Some(f) = self.fair.take() {
            f.release();
        }
    }
}

/// Takes a waiter out of its queue if its call goes away before it is
/// served.
struct Queued<'a> {
    fair: &'a Arc<Fair>,
    scope: &'a Scope,
    id: u64,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        let mut s = self.fair.lock();
        if let Some(q) = s.queues.get_mut(self.scope) {
            q.retain(|w| w.id != self.id);
            if q.is_empty() {
                s.queues.remove(self.scope);
                s.ring.retain(|r| r != self.scope);
            }
        }
    }
}

impl Fair {
    /// Turns at the pool: each scope's queue bounded by
    /// [`MAX_QUEUED_PER_SCOPE`].
    fn new(slots: usize) -> Fair {
        Fair::bounded(slots, MAX_QUEUED_PER_SCOPE)
    }

    /// `slots` turns; past `max_queued` waiters a scope's next is refused.
    fn bounded(slots: usize, max_queued: usize) -> Fair {
        Fair {
            state: Mutex::new(FairState {
                free: slots.max(1),
                queues: HashMap::new(),
                ring: VecDeque::new(),
                next_id: 0,
                max_queued,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FairState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) async fn acquire(this: &Arc<Fair>, scope: &Scope) -> Result<RunSlot, ScheduleError> {
        let (rx, id) = {
            let mut s = this.lock();
            // Nobody waits: take a free slot at once. Otherwise queue, even
            // if a slot is free this instant, so that waiters keep their turn.
            if s.free > 0 && s.ring.is_empty() {
                s.free -= 1;
                return Ok(RunSlot {
                    fair: Some(this.clone()),
                });
            }
            let n = s.queues.get(scope).map_or(0, VecDeque::len);
            if n >= s.max_queued {
                return Err(ScheduleError::Busy(n));
            }
            let id = s.next_id;
            s.next_id += 1;
            let (tx, rx) = oneshot::channel();
            s.queues
                .entry(scope.clone())
                .or_default()
                .push_back(Waiter { id, tx });
            if n == 0 {
                s.ring.push_back(scope.clone());
            }
            (rx, id)
        };
        let _queued = Queued {
            fair: this,
            scope,
            id,
        };
        match rx.await {
            Ok(slot) => Ok(slot),
            // The sender is only dropped after a send or by `Queued`.
            Err(_) => unreachable!("a queued waiter is served or removed by its own guard"),
        }
    }

    /// A slot was freed: give it to the next scope in turn, or keep it.
    fn release(self: Arc<Self>) {
        let mut s = self.lock();
        while let Some(scope) = s.ring.pop_front() {
            let Some(q) = s.queues.get_mut(&scope) else {
                continue;
            };
            let Some(w) = q.pop_front() else {
                s.queues.remove(&scope);
                continue;
            };
            if q.is_empty() {
                s.queues.remove(&scope);
            } else {
                s.ring.push_back(scope);
            }
            let slot = RunSlot {
                fair: Some(self.clone()),
            };
            match w.tx.send(slot) {
                Ok(()) => return,
                // Its call went away: disarm (no recursive release) and
                // serve the next.
                Err(mut slot) => slot.fair = None,
            }
        }
        s.free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call waiting for admission (its tool's permit, its turn, the
    /// pool) is left on the caller's task, where it wakes when its room
    /// comes; only once admitted, a yield of its guest moves it to the
    /// guest executor.
    #[tokio::test(flavor = "current_thread")]
    async fn a_call_waits_for_admission_where_it_is_and_moves_when_its_guest_yields() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let s = Scheduler::new(1, 1, GuestPriority::Background).unwrap();
        let admitted = Arc::new(AtomicBool::new(false));
        let (room, wait) = oneshot::channel::<()>();
        let a = admitted.clone();
        let call = async move {
            let waited_on = std::thread::current().id();
            wait.await.unwrap();
            let admitted_on = std::thread::current().id();
            a.store(true, Ordering::Release);
            // The guest's first slice ends: it yields.
            tokio::task::yield_now().await;
            (waited_on, admitted_on, std::thread::current().id())
        };
        let caller = std::thread::current().id();
        let (out, ()) = tokio::join!(
            s.run(Box::pin(call), || admitted.load(Ordering::Acquire)),
            async {
                tokio::task::yield_now().await;
                room.send(()).unwrap();
            }
        );
        let (waited_on, admitted_on, went_on_on) = out.unwrap();
        assert_eq!(waited_on, caller);
        assert_eq!(admitted_on, caller, "woken on the caller's task, not moved");
        assert_ne!(went_on_on, caller, "past its first slice, on the executor");
    }

    /// With one guest thread, a scope's calls take turns with another
    /// scope's, not with each other: at a tick, the turn goes to the next
    /// scope in the ring, however many calls the first scope has waiting.
    #[tokio::test]
    async fn a_turn_passed_at_a_tick_goes_to_the_next_scope_not_the_next_call() {
        use futures::FutureExt as _;
        let s = Scheduler::new(1, 1, GuestPriority::Background).unwrap();
        let (a1, a2) = (s.cpu_turn(Scope::new("a")), s.cpu_turn(Scope::new("a")));
        let v = s.cpu_turn(Scope::new("v"));
        let holds = |t: &CpuTurn| t.held.lock().unwrap().is_some();
        // a1 takes the only turn; a2, then v, wait for it.
        a1.next().await;
        assert!(holds(&a1));
        let mut a2_waits = a2.next();
        assert!((&mut a2_waits).now_or_never().is_none());
        let mut v_waits = v.next();
        assert!((&mut v_waits).now_or_never().is_none());
        // a1's tick: a's first waiter (a2) is next in the ring.
        let mut a1_waits = a1.next();
        assert!((&mut a1_waits).now_or_never().is_none());
        a2_waits.await;
        assert!(holds(&a2) && !holds(&a1));
        // a2's tick: v's turn, not a1's, though a1 queued first.
        let mut a2_again = a2.next();
        assert!((&mut a2_again).now_or_never().is_none());
        v_waits.await;
        assert!(holds(&v) && !holds(&a1) && !holds(&a2));
        // While v waits for its next turn, its call is pending but holds
        // nothing to give back; a guest that waits for anything else (a
        // sleep in the host) gives its turn back: a's next.
        let mut idle = Turned::new(std::future::pending::<()>(), Some(v.clone()));
        assert!(holds(&v));
        assert!((&mut idle).now_or_never().is_none());
        assert!(!holds(&v));
        a1_waits.await;
        assert!(holds(&a1));
        // Pending while waiting for its turn is not idle: the turn it
        // gets stays with it through the executor's yield.
        let mut waiting = Turned::new(a2_again, Some(a2.clone()));
        assert!((&mut waiting).now_or_never().is_none());
        a1.release();
        waiting.await;
        assert!(holds(&a2));
    }

    /// A review's case: a guest that gave its turn back while it waited
    /// in the host ran on without one until its next tick, so a guest
    /// waiting briefly at every tick ran almost all the time on turns it
    /// never held. Woken, it waits for a turn before it runs on.
    #[tokio::test]
    async fn a_guest_that_gave_its_turn_back_waits_for_one_before_it_runs_on() {
        use futures::FutureExt as _;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let s = Scheduler::new(1, 1, GuestPriority::Background).unwrap();
        let (a, v) = (s.cpu_turn(Scope::new("a")), s.cpu_turn(Scope::new("v")));
        let holds = |t: &CpuTurn| t.held.lock().unwrap().is_some();
        a.next().await;
        // The guest: waits once (pending, not woken), then would run.
        let runs = Arc::new(AtomicUsize::new(0));
        let guest = {
            let runs = runs.clone();
            std::future::poll_fn(move |_| {
                if runs.fetch_add(1, Ordering::Relaxed) == 0 {
                    std::task::Poll::Pending
                } else {
                    std::task::Poll::Ready(())
                }
            })
        };
        let mut call = Box::pin(Turned::new(guest, Some(a.clone())));
        assert!((&mut call).now_or_never().is_none());
        assert!(!holds(&a), "waiting, it gave its turn back");
        // Another scope takes the only turn; the guest, woken, waits.
        v.next().await;
        assert!((&mut call).now_or_never().is_none());
        assert_eq!(runs.load(Ordering::Relaxed), 1, "it ran without a turn");
        v.release();
        call.await;
        assert_eq!(runs.load(Ordering::Relaxed), 2);
        assert!(holds(&a));
    }

    /// The scheduling policy and nice value of a guest thread.
    #[cfg(target_os = "linux")]
    fn guest_thread_priority(priority: GuestPriority) -> (i32, i32) {
        let s = Scheduler::new(1, 1, priority).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(s.spawn(async {
            // SAFETY: plain syscalls about the calling thread.
            unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                (
                    libc::sched_getscheduler(0),
                    libc::getpriority(libc::PRIO_PROCESS, tid),
                )
            }
        }))
        .unwrap()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn guests_run_below_the_io_threads_in_the_class_asked_for() {
        let (policy, nice) = guest_thread_priority(GuestPriority::Background);
        assert_eq!(policy, libc::SCHED_OTHER);
        assert!(nice >= 10, "nice {nice}");
        let (policy, _) = guest_thread_priority(GuestPriority::Idle);
        assert_eq!(policy, libc::SCHED_IDLE);
    }

    /// The scopes in the order their waiters were served.
    async fn order(fair: &Arc<Fair>, calls: &[&'static str]) -> Vec<String> {
        let held = Fair::acquire(fair, &Scope::new("x")).await.unwrap();
        let served = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, &c) in calls.iter().enumerate() {
            let fair = fair.clone();
            let served = served.clone();
            let scope = Scope::new(c);
            tasks.push(tokio::spawn(async move {
                let _slot = Fair::acquire(&fair, &scope).await.unwrap();
                served.lock().unwrap().push(format!("{c}{i}"));
            }));
            // Queue them in this order.
            tokio::task::yield_now().await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(served).unwrap().into_inner().unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn freed_slots_go_round_robin_across_scopes() {
        let fair = Arc::new(Fair::new(1));
        let got = order(&fair, &["a", "a", "a", "a", "b", "c", "b"]).await;
        assert_eq!(got, ["a0", "b4", "c5", "a1", "b6", "a2", "a3"]);
        assert_eq!(fair.lock().free, 1);
        assert!(fair.lock().queues.is_empty() && fair.lock().ring.is_empty());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiter_that_goes_away_leaves_the_queue_and_its_turn() {
        let fair = Arc::new(Fair::new(1));
        let held = Fair::acquire(&fair, &Scope::new("a")).await.unwrap();
        let gone = {
            let fair = fair.clone();
            tokio::spawn(async move { Fair::acquire(&fair, &Scope::new("b")).await.map(drop) })
        };
        while !fair.lock().queues.contains_key(&Scope::new("b")) {
            tokio::task::yield_now().await;
        }
        assert_eq!(fair.lock().queues[&Scope::new("b")].len(), 1);
        gone.abort();
        let _ = gone.await;
        assert!(fair.lock().queues.is_empty() && fair.lock().ring.is_empty());
        drop(held);
        assert_eq!(fair.lock().free, 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn each_scopes_queue_is_bounded() {
        let fair = Arc::new(Fair::new(1));
        let _held = Fair::acquire(&fair, &Scope::new("a")).await.unwrap();
        let mut waiting = Vec::new();
        for _ in 0..MAX_QUEUED_PER_SCOPE {
            let fair = fair.clone();
            waiting.push(tokio::spawn(async move {
                Fair::acquire(&fair, &Scope::new("a")).await.map(drop)
            }));
        }
        // Let every waiter reach its queue before probing.
        while fair
            .lock()
            .queues
            .get(&Scope::new("a"))
            .map_or(0, |q| q.len())
            < MAX_QUEUED_PER_SCOPE
        {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            Fair::acquire(&fair, &Scope::new("a")).await.err(),
            Some(ScheduleError::Busy(MAX_QUEUED_PER_SCOPE))
        );
        // Another scope still queues.
        let other = {
            let fair = fair.clone();
            tokio::spawn(async move { Fair::acquire(&fair, &Scope::new("b")).await.map(drop) })
        };
        tokio::task::yield_now().await;
        assert_eq!(fair.lock().queues[&Scope::new("b")].len(), 1);
        other.abort();
        for w in waiting {
            w.abort();
        }
    }
}
