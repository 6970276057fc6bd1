//! Pre-instantiated single-use sandboxes: per component, sandboxes
//! (store, WASI context from its grants, instance) built ahead of demand,
//! off the caller's critical path, so that a call finds its sandbox ready.
//! Two ways fill the sets: after a reply, the answering task prepares one
//! for the component it just ran (`prepare-after-reply`, the default:
//! `prepare_after_reply`), or background tasks keep up to `prewarm` per
//! component, sized by its call rate (`refill`).
//!
//! The freshness guarantee does not weaken:
//! - a prepared sandbox is built before any call's data exists, from the
//!   component's grants alone (with no client, no event sink and no
//!   cancellation token);
//! - it is handed to exactly one call and dropped with it, never put back;
//! - what depends on the call is set at hand-out (`CallState::begin` and
//!   the store's fuel and epoch deadline), so nothing charged to one call
//!   is seen by another; the guest's monotonic clock skips the time the
//!   sandbox sat prepared (the wall clock is the real one), and until hand-out
//!   its file streams start no operation (they would count against no
//!   scope);
//! - a reload bumps the generation before the new catalog is served: a
//!   sandbox prepared before it is dropped, never used.
//!
//! Bounded: each prepared sandbox holds its pool permits (so the pool can
//! never run out under a call because of it), at most `prewarm` (or one,
//! after a reply) per component, all of them within `prewarm-memory` of
//! linear memory, and never the last quarter of the pool; a call that has
//! to wait for the pool, or is refused shared memory, sheds every prepared
//! sandbox, and none is prepared while a call waits for the pool; one no
//! call takes within `prepared-idle` is dropped (`keep`, `expire`).
//! Preparing runs under the component's own fuel and memory limits (and,
//! after a reply, its scope's memory share), within one slice after a
//! reply and four in the background: it is no call's, so it has no
//! deadline or CPU turn of its own to run past.
//!
//! Owns: the warm sets, their sizing (by each component's recent call
//! rate), the background refill, the preparation after a reply, the
//! hand-out and the expiry of idle ones. Must not touch: whether a call
//! may happen, or any front end.

use super::{
    CallContext, LoadedComponent, PoolPermits, PoolShape, Pools, new_store, state::CallState,
};
use crate::caps::limits::SharedMemory;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use wasmtime::{Engine, Store};

/// One sandbox, instantiated and waiting for its one call.
pub(crate) struct Prepared {
    /// Dropped before the permits (field order): the pool slot is free
    /// again only once the instance is gone.
    pub(crate) store: Store<CallState>,
    pub(crate) instance: super::bound::Instantiated,
    pub(crate) permits: PoolPermits,
    /// Linear memory this sandbox holds against `prewarm-memory`.
    _memory: MemoryCharge,
    generation: u64,
    /// When it was prepared: unused for `prepared-idle`, it is dropped; and
    /// the guest's clock skips the time since then (`CallState::begin`).
    pub(crate) made: Instant,
}

/// Linear memory charged to the warm budget, given back on drop (when a
/// call takes the sandbox, `Sandbox::sandbox_for`, or when it is shed).
/// It also counts the sandbox in `Shared::ready` until then.
struct MemoryCharge {
    shared: Arc<Shared>,
    bytes: usize,
}

impl Drop for MemoryCharge {
    fn drop(&mut self) {
        self.shared
            .memory_used
            .fetch_sub(self.bytes, Ordering::AcqRel);
        self.shared.ready.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A component whose warm set is being refilled: its `refilling` flag is
/// cleared on drop.
struct Refilling(Arc<LoadedComponent>);

impl Drop for Refilling {
    fn drop(&mut self) {
        self.0.warm.refilling.store(false, Ordering::Release);
    }
}

/// How many prepared sandboxes were used, missed and dropped unused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PrewarmStats {
    /// Calls that ran in a prepared sandbox.
    pub hits: u64,
    /// Calls of components that may be prepared ahead that found none
    /// ready, and built their sandbox themselves.
    pub misses: u64,
    /// Prepared sandboxes dropped unused: stale after a reload, shed
    /// because a call waited for the pool or was refused shared memory,
    /// over the `prewarm-memory` budget once built, or unused for
    /// `prepared-idle`.
    pub discarded: u64,
    /// Prepared sandboxes ready now, over all components.
    pub ready: u64,
    /// Preparations that failed: the component trapped, ran out of a
    /// limit, or did not finish its start-up within a slice. A component
    /// that fails more than a few, and more than one in 16, is no longer
    /// prepared (until a reload); in the background, after one.
    pub failed: u64,
}

/// One component's prepared sandboxes and its recent call rate.
#[derive(Default)]
pub(crate) struct WarmSet {
    ready: Mutex<VecDeque<Prepared>>,
    /// A refill (background) or a preparation after a reply runs: one at
    /// a time per component.
    refilling: AtomicBool,
    /// Preparing failed (in the background: once; after a reply: too
    /// often, see [`MAX_FAILURES`]): the component traps, runs out of a
    /// limit or does not finish its start-up within a slice while
    /// instantiating. Calls build their own sandbox and report whatever
    /// stops it. Cleared by a reload.
    broken: AtomicBool,
    /// Preparations after a reply that failed, and that worked, since the
    /// last reload.
    failures: AtomicU64,
    successes: AtomicU64,
    /// Linear memory the last sandbox prepared for it held: one that would
    /// not fit the warm budget is not built.
    last_bytes: AtomicUsize,
    rate: Mutex<Rate>,
}

/// Failed preparations (after a reply or in the background, each within
/// its slices) before a component's calls build
/// their own sandboxes until the next reload, unless they are fewer than
/// one in [`FAILURE_RATIO`] of all. One may fail by timing alone (after a
/// reply, an epoch tick within its instantiation, about one in a hundred;
/// in the background, a cold instantiation past its four slices), but a
/// start-up that fails on purpose now and then (it can read the clock)
/// stops being prepared as soon as it fails often enough to cost much.
const MAX_FAILURES: u64 = 4;

/// The most slices (polls) a background preparation's instantiation may
/// take: a start-up past them is not prepared ahead. After a reply it is
/// one (the replying task does not wait).
const BACKGROUND_SLICES: u32 = 4;
const FAILURE_RATIO: u64 = 16;

/// Exponentially weighted gaps between calls and cost of one preparation.
#[derive(Default)]
struct Rate {
    last: Option<Instant>,
    gap_ns: f64,
    prep_ns: f64,
}

/// Weight of the newest sample in the moving averages.
const ALPHA: f64 = 0.2;

impl Rate {
    fn note_call(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let gap = now.duration_since(last).as_nanos() as f64;
            self.gap_ns = if self.gap_ns == 0.0 {
                gap
            } else {
                self.gap_ns + ALPHA * (gap - self.gap_ns)
            };
        }
        self.last = Some(now);
    }

    fn note_prep(&mut self, took: Duration) {
        let t = took.as_nanos() as f64;
        self.prep_ns = if self.prep_ns == 0.0 {
            t
        } else {
            self.prep_ns + ALPHA * (t - self.prep_ns)
        };
    }

    /// Sandboxes to keep ready: as many as calls arrive while one is being
    /// prepared, within `1..=max`.
    fn target(&self, max: usize) -> usize {
        if max == 0 {
            return 0;
        }
        if self.gap_ns <= 0.0 {
            return 1;
        }
        let during = (self.prep_ns / self.gap_ns).ceil();
        (during as usize).clamp(1, max)
    }
}

impl WarmSet {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Prepared>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn rate(&self) -> std::sync::MutexGuard<'_, Rate> {
        self.rate.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Prepared sandboxes ready now.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// What the warm sets of all components share: the engine, the pool, the
/// budgets, the reload generation and the counters.
pub(crate) struct Shared {
    engine: Engine,
    pools: Pools,
    shape: PoolShape,
    /// Most sandboxes prepared per component (`[engine] prewarm`); 0: off.
    max_per_component: usize,
    /// Prepare one sandbox for a component's next call on the task of the
    /// call before, once its reply is written.
    after_reply: bool,
    /// Most linear memory all prepared sandboxes may hold together.
    memory_budget: usize,
    memory_used: AtomicUsize,
    /// Calls waiting for the pool now: nothing is prepared meanwhile.
    waiting: AtomicUsize,
    generation: AtomicU64,
    sets: Mutex<Vec<Weak<WarmSet>>>,
    hits: AtomicU64,
    misses: AtomicU64,
    discarded: AtomicU64,
    ready: AtomicU64,
    failed: AtomicU64,
    /// How long a prepared sandbox may wait for its call (`[engine]
    /// prepared-idle`).
    idle: Duration,
    /// A task drops the sandboxes that waited too long: one at a time,
    /// while any is prepared.
    sweeping: AtomicBool,
    /// Where refills run.
    background: super::Background,
}

impl Shared {
    /// The warm sets of a sandbox configured by `config` (`prewarm`,
    /// `prewarm-memory`, `prepare-after-reply`, `max-instances`).
    pub(crate) fn new(
        engine: Engine,
        pools: Pools,
        shape: PoolShape,
        config: &crate::config::EngineConfig,
        background: super::Background,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            engine,
            pools,
            shape,
            max_per_component: config.prewarm as usize,
            after_reply: config.prepare_after_reply,
            memory_budget: usize::try_from(config.prewarm_memory).unwrap_or(usize::MAX),
            memory_used: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            sets: Mutex::new(Vec::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
            ready: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            idle: config.prepared_idle,
            sweeping: AtomicBool::new(false),
            background,
        })
    }

    /// Whether components get prepared sandboxes at all.
    pub(crate) fn enabled(&self) -> bool {
        self.max_per_component > 0 || self.after_reply
    }

    /// Whether sandboxes are prepared (and torn down) by background tasks.
    pub(crate) fn refills_in_background(&self) -> bool {
        self.max_per_component > 0
    }

    /// Whether a call's task prepares its component's next sandbox once it
    /// has answered.
    pub(crate) fn prepares_after_reply(&self) -> bool {
        self.after_reply && self.max_per_component == 0
    }

    /// A new, empty warm set for a component being loaded.
    pub(crate) fn new_set(&self) -> Arc<WarmSet> {
        let set = Arc::new(WarmSet::default());
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        sets.retain(|w| w.strong_count() > 0);
        sets.push(Arc::downgrade(&set));
        set
    }

    pub(crate) fn stats(&self) -> PrewarmStats {
        // `ready` first: a sandbox it no longer counts is already counted
        // where it went (hits, discarded).
        let ready = self.ready.load(Ordering::Acquire);
        PrewarmStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            discarded: self.discarded.load(Ordering::Relaxed),
            ready,
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    fn each_set(&self, mut f: impl FnMut(&WarmSet)) {
        for s in &self.live_sets() {
            f(s);
        }
    }

    /// The warm sets of the components loaded now.
    fn live_sets(&self) -> Vec<Arc<WarmSet>> {
        let sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        sets.iter().filter_map(Weak::upgrade).collect()
    }

    /// Drop every prepared sandbox (their permits and memory go back):
    /// when a call waits for the pool, and when one is refused shared
    /// memory.
    pub(crate) fn shed(&self) {
        self.each_set(|s| {
            let gone = std::mem::take(&mut *s.lock());
            self.discarded
                .fetch_add(gone.len() as u64, Ordering::Relaxed);
            drop(gone);
        });
    }

    /// A reload: no sandbox prepared before now is used after it. Call
    /// before the new catalog is served.
    pub(crate) fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.shed();
        // A component the reload kept gets another chance.
        self.each_set(|s| {
            s.broken.store(false, Ordering::Relaxed);
            s.failures.store(0, Ordering::Relaxed);
            s.successes.store(0, Ordering::Relaxed);
        });
    }

    /// The reload generation now.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Called by a call that could not get pool permits at once: shed every
    /// prepared sandbox and prepare none until the returned guard drops.
    pub(crate) fn under_pressure(self: &Arc<Self>) -> Pressure {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        self.shed();
        Pressure(self.clone())
    }

    /// Hand a prepared sandbox of `comp` to the calling call, if one is
    /// ready and was prepared since the last reload; then, with `prewarm`,
    /// prepare more in the background for the calls to come (after a
    /// reply, the call's own task prepares the next one).
    /// `accept` may still refuse it (the scope's memory share has no room
    /// for what it holds): it is dropped then, and the call builds its own.
    pub(crate) fn take(
        self: &Arc<Self>,
        comp: &Arc<LoadedComponent>,
        accept: impl FnOnce(&Store<CallState>) -> bool,
    ) -> Option<Prepared> {
        if !self.enabled() || !comp.prewarmable() {
            return None;
        }
        let set = &comp.warm;
        if self.refills_in_background() {
            set.rate().note_call(Instant::now());
        }
        let generation = self.generation.load(Ordering::Acquire);
        let mut got = None;
        {
            let mut ready = set.lock();
            while let Some(p) = ready.pop_front() {
                if p.generation == generation {
                    got = Some(p);
                    break;
                }
                self.discarded.fetch_add(1, Ordering::Relaxed);
            }
        }
        if got.as_ref().is_some_and(|p| !accept(&p.store)) {
            self.discarded.fetch_add(1, Ordering::Relaxed);
            got = None;
        }
        if got.is_some() {
            tracing::debug!("a call takes a sandbox prepared before it");
            self.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        self.refill_later(comp);
        got
    }

    /// Prepare one sandbox for `comp`'s next call, here and now, unless
    /// one is ready or being prepared, preparing it has failed too often,
    /// it would not fit the warm memory budget, or the pool is short of
    /// room. Called by a call's task after its reply is written, so it
    /// wakes no other task or thread (but for starting the task that
    /// drops idle ones, when none runs: [`Shared::keep`]). The sandbox
    /// joins `scope` (the memory share of the scope whose call ended,
    /// which is the component's own) before it is instantiated: what it
    /// holds counts against that scope from the start, as a call's sandbox
    /// does.
    /// Instantiating must finish in one poll (a start-up past its first
    /// slice is unwound), and nothing is prepared while the thread
    /// unwinds a panic or outside a runtime.
    pub(crate) fn prepare_after_reply(
        self: &Arc<Self>,
        comp: &Arc<LoadedComponent>,
        scope: Option<&Arc<SharedMemory>>,
        generation: u64,
    ) {
        let set = &comp.warm;
        if !comp.prewarmable()
            || set.broken.load(Ordering::Relaxed)
            || set.len() > 0
            || std::thread::panicking()
            || tokio::runtime::Handle::try_current().is_err()
            || self
                .memory_used
                .load(Ordering::Acquire)
                .saturating_add(set.last_bytes.load(Ordering::Relaxed))
                > self.memory_budget
            || set.refilling.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let Some(permits) = self.try_permits(comp.weight) else {
                return Ok(None);
            };
            self.prepare_now(comp, permits, generation, scope)
        }));
        match prepared {
            Ok(Ok(Some(p))) => {
                set.successes.fetch_add(1, Ordering::Relaxed);
                if self.generation() != generation || self.waiting.load(Ordering::Acquire) > 0 {
                    self.discarded.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.keep(set, p);
                }
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => self.failed(comp, &format!("{e:#}")),
            Err(_) => self.failed(comp, "it panicked"),
        }
        // Only now: a reply's task that looked before the push would
        // prepare a second one.
        set.refilling.store(false, Ordering::Release);
    }

    /// A preparation failed: past [`MAX_FAILURES`], and
    /// more than one in [`FAILURE_RATIO`], none is tried for `comp` again.
    fn failed(&self, comp: &LoadedComponent, why: &str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let n = comp.warm.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let ok = comp.warm.successes.load(Ordering::Relaxed);
        // `why` may quote the component (its function names in a trap's
        // backtrace).
        tracing::debug!(
            component = %comp.manifest.path.display(),
            failures = n,
            "preparing a sandbox failed: {}",
            crate::audit::shown(why, 1024)
        );
        if n >= MAX_FAILURES && n.saturating_mul(FAILURE_RATIO) > ok {
            comp.warm.broken.store(true, Ordering::Relaxed);
        }
    }

    /// Start a background refill of `comp`'s warm set unless one runs.
    fn refill_later(self: &Arc<Self>, comp: &Arc<LoadedComponent>) {
        if !self.refills_in_background() {
            return;
        }
        let set = &comp.warm;
        if set.broken.load(Ordering::Relaxed)
            || set.len() >= set.rate().target(self.max_per_component)
            || set.refilling.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Some(rt) = self.background.handle() else {
            set.refilling.store(false, Ordering::Release);
            return;
        };
        let shared = self.clone();
        // Cleared however the refill ends, made before the task: a panic
        // in it (its task unwinds), or a task dropped unpolled (a runtime
        // shutting down), had left the flag set, and nothing was prepared
        // for the component again until a reload.
        let done = Refilling(comp.clone());
        rt.spawn(async move {
            shared.refill(&done.0).await;
        });
    }

    /// Prepare sandboxes for `comp` until its target is met or a bound
    /// says stop.
    async fn refill(self: &Arc<Self>, comp: &Arc<LoadedComponent>) {
        let set = &comp.warm;
        let mut failed_here = 0;
        loop {
            let target = set.rate().target(self.max_per_component);
            if set.broken.load(Ordering::Relaxed)
                || set.len() >= target
                || self.waiting.load(Ordering::Acquire) > 0
            {
                return;
            }
            let generation = self.generation.load(Ordering::Acquire);
            let Some(permits) = self.try_permits(comp.weight) else {
                return;
            };
            let started = Instant::now();
            // Within a few slices (after a reply: one): a start-up run
            // here is no call's, so it has no deadline and no CPU turn of
            // its scope to run under. One that ran up to its timeout gave
            // each call a second timeout of CPU, and its tenant a guest
            // thread outside the turns (found by review). More than one,
            // as a process's first instantiations, cold, can take longer
            // than a tick (two failed in a row in a full test run).
            // A failure is tried once more (an epoch tick can end a slice
            // by timing alone), then the refill stops: the next call starts
            // another, until the component has failed often enough to be
            // given up. Not more here: each failure costs its slices of
            // guest CPU outside any turn, and a component that banked
            // successes could spend them as one long run of failures
            // (found by review). The call path builds its own sandbox and
            // reports whatever stops this one.
            let prepared = match self
                .prepare_within(comp, permits, generation, None, BACKGROUND_SLICES)
                .await
            {
                Ok(Some(p)) => {
                    failed_here = 0;
                    p
                }
                Ok(None) => return,
                Err(e) => {
                    self.failed(comp, &format!("{e:#}"));
                    failed_here += 1;
                    if failed_here >= 2 {
                        return;
                    }
                    tokio::task::yield_now().await;
                    continue;
                }
            };
            set.successes.fetch_add(1, Ordering::Relaxed);
            set.rate().note_prep(started.elapsed());
            if self.generation.load(Ordering::Acquire) != generation
                || self.waiting.load(Ordering::Acquire) > 0
            {
                self.discarded.fetch_add(1, Ordering::Relaxed);
                return;
            }
            self.keep(set, prepared);
            // Each preparation is one poll: let the other tasks of the
            // background threads run between them.
            tokio::task::yield_now().await;
        }
    }

    /// Keep `p` ready in `set` for a call, until it has waited
    /// `prepared-idle`: a host whose calls stopped gives back the slots,
    /// memory and descriptors its prepared sandboxes hold.
    fn keep(self: &Arc<Self>, set: &WarmSet, p: Prepared) {
        set.lock().push_back(p);
        // Pairs with the sweeper's fence: either it sees this sandbox
        // (`ready` went up in `charge`) and sweeps on, or this sees it
        // gone and starts another (a store-buffering pattern: without
        // both fences, each could miss the other's write).
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.sweeping.load(Ordering::Relaxed) || self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(rt) = self.background.handle() else {
            self.sweeping.store(false, Ordering::Release);
            return;
        };
        let period = (self.idle / 4).max(Duration::from_millis(10));
        // Weak: a dropped core's sandboxes go with it, not with this task.
        let mut sweeper = Sweeper {
            shared: Arc::downgrade(self),
            owns: true,
        };
        rt.spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(s) = sweeper.shared.upgrade() else {
                    return;
                };
                s.expire().await;
                if s.ready.load(Ordering::Acquire) > 0 {
                    continue;
                }
                s.sweeping.store(false, Ordering::Release);
                sweeper.owns = false;
                std::sync::atomic::fence(Ordering::SeqCst);
                // One kept meanwhile whose `keep` saw this task running.
                if s.ready.load(Ordering::Relaxed) == 0 || s.sweeping.swap(true, Ordering::AcqRel) {
                    return;
                }
                sweeper.owns = true;
            }
        });
    }

    /// Drop the prepared sandboxes that waited `prepared-idle` unused
    /// (counted as discarded), one at a time: each drop resets a sandbox's
    /// memory, on a thread guests run on.
    async fn expire(&self) {
        let Some(cutoff) = Instant::now().checked_sub(self.idle) else {
            return;
        };
        // Weak between yields: a component unloaded meanwhile takes its
        // set (and what it holds) with it at once.
        let sets: Vec<Weak<WarmSet>> = self.sets.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for set in sets {
            loop {
                let Some(stale) = set.upgrade().and_then(|set| {
                    let mut ready = set.lock();
                    match ready.front() {
                        Some(p) if p.made <= cutoff => ready.pop_front(),
                        _ => None,
                    }
                }) else {
                    break;
                };
                self.discarded.fetch_add(1, Ordering::Relaxed);
                // A teardown that panics must not end the sweeping: the
                // rest would be held for good on an idle host.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(stale)));
                tokio::task::yield_now().await;
            }
        }
    }

    /// Whether the pool has room beyond the reserve kept for calls (a
    /// quarter of its slots, and of its memory and table permits: past 256
    /// slots it has fewer memory permits than two per slot, found by
    /// review), no call waits for it, and a quarter of the process's
    /// descriptor share is free (a sandbox holds its directories open):
    /// only then is work that holds sandboxes ahead of calls (preparing,
    /// deferred teardown) done.
    pub(crate) fn has_room(&self) -> bool {
        self.has_room_for((0, 0))
    }

    /// [`Shared::has_room`], and room for a sandbox of `weight` beside
    /// the reserve.
    fn has_room_for(&self, weight: (u32, u32)) -> bool {
        self.pools.quarter_free(weight)
            && self.waiting.load(Ordering::Acquire) == 0
            && crate::caps::fs::descriptors_quarter_free()
    }

    /// Pool permits for one prepared sandbox, only if they are free now and
    /// leave the reserve untouched.
    fn try_permits(&self, weight: (u32, u32)) -> Option<PoolPermits> {
        if !self.has_room_for(weight) {
            return None;
        }
        let p = self.pools.try_acquire(weight)?;
        if self.waiting.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(p)
    }

    /// [`Shared::prepare_within`] one slice, here and now (one poll).
    fn prepare_now(
        self: &Arc<Self>,
        comp: &LoadedComponent,
        permits: PoolPermits,
        generation: u64,
        scope: Option<&Arc<SharedMemory>>,
    ) -> anyhow::Result<Option<Prepared>> {
        use futures::FutureExt;
        self.prepare_within(comp, permits, generation, scope, 1)
            .now_or_never()
            .expect("one slice is one poll")
    }

    /// Build and instantiate one sandbox of `comp` under its limits, within
    /// `slices` polls of its instantiation (each at most one slice of guest
    /// work: to the next epoch tick or `FUEL_FLUSH` units of fuel): one
    /// that would go on (a start-up past them, or one waiting for the host)
    /// is dropped, the guest unwound, and reported as an error. No call's,
    /// so no call's deadline or CPU turn bounds it: this does. `None` if a
    /// budget has no room for it.
    async fn prepare_within(
        self: &Arc<Self>,
        comp: &LoadedComponent,
        permits: PoolPermits,
        generation: u64,
        scope: Option<&Arc<SharedMemory>>,
        slices: u32,
    ) -> anyhow::Result<Option<Prepared>> {
        use futures::FutureExt;
        let Some((mut store, bound)) = self.new_sandbox_if_room(comp, &permits)? else {
            return Ok(None);
        };
        if let Some(scope) = scope
            && !store.data().limiter.budget().join_scope(scope)
        {
            return Ok(None);
        }
        let instantiated = {
            let mut instantiating = std::pin::pin!(bound.instantiate_ready(&mut store));
            let mut polls = 1;
            loop {
                if let Some(r) = instantiating.as_mut().now_or_never() {
                    break Some(r);
                }
                if polls >= slices {
                    break None;
                }
                polls += 1;
                tokio::task::yield_now().await;
            }
        };
        let instance = match instantiated {
            Some(Ok(instance)) => instance,
            // Refused by a shared bound (the scope's share, the host's):
            // room another call holds now, not the component's fault.
            Some(Err(_)) if store.data().limiter.refused_shared() => return Ok(None),
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!("instantiating did not finish in {slices} slice(s)"),
        };
        Ok(self.charge(&comp.warm, store, instance, permits, generation))
    }

    /// A store for a sandbox of `comp` prepared ahead: its grants, but no
    /// call's context. `None` if the process's descriptor share has no room
    /// for its directories now: room calls hold, not the component's fault
    /// (so not a failure that stops preparing for it).
    fn new_sandbox_if_room<'c>(
        &self,
        comp: &'c LoadedComponent,
        permits: &PoolPermits,
    ) -> anyhow::Result<Option<(Store<CallState>, &'c super::Bound)>> {
        let super::Kind::Toolhost(bound) = &comp.kind else {
            anyhow::bail!("only toolhost-world components are prepared ahead");
        };
        match new_store(
            &self.engine,
            &comp.grants,
            CallContext::default(),
            true,
            self.shape,
            &permits.memory,
        ) {
            Ok(mut store) => {
                store.data_mut().prepared_ahead();
                Ok(Some((store, bound)))
            }
            Err(e)
                if e.downcast_ref::<crate::caps::fs::DescriptorsExhausted>()
                    .is_some() =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Charge an instantiated sandbox to the warm memory budget; `None` (it
    /// is dropped) if the budget has no room for it.
    fn charge(
        self: &Arc<Self>,
        set: &WarmSet,
        store: Store<CallState>,
        instance: super::bound::Instantiated,
        permits: PoolPermits,
        generation: u64,
    ) -> Option<Prepared> {
        let bytes = store.data().limiter.used();
        set.last_bytes.store(bytes, Ordering::Relaxed);
        let used = self.memory_used.fetch_add(bytes, Ordering::AcqRel);
        let charge = MemoryCharge {
            shared: self.clone(),
            bytes,
        };
        self.ready.fetch_add(1, Ordering::AcqRel);
        if used.saturating_add(bytes) > self.memory_budget {
            self.discarded.fetch_add(1, Ordering::Relaxed);
            drop((store, charge, permits));
            return None;
        }
        Some(Prepared {
            store,
            instance,
            permits,
            _memory: charge,
            generation,
            made: Instant::now(),
        })
    }
}

/// The task that drops idle prepared sandboxes (`Shared::keep`): if it
/// ends while it owns the `sweeping` flag (its runtime shut down, a drop
/// panicked), the flag is cleared, so the next sandbox kept starts another.
struct Sweeper {
    shared: Weak<Shared>,
    owns: bool,
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        if self.owns
            && let Some(s) = self.shared.upgrade()
        {
            s.sweeping.store(false, Ordering::Release);
        }
    }
}

/// A call waiting for the pool (see [`Shared::under_pressure`]).
pub(crate) struct Pressure(Arc<Shared>);

impl Drop for Pressure {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_follows_the_call_rate_within_bounds() {
        let mut r = Rate::default();
        assert_eq!(r.target(0), 0, "off is off");
        assert_eq!(r.target(4), 1, "before any call: one");
        let t0 = Instant::now();
        r.note_prep(Duration::from_micros(100));
        // One call a second: one ready is plenty.
        r.note_call(t0);
        r.note_call(t0 + Duration::from_secs(1));
        assert_eq!(r.target(4), 1);
        // Calls every 10 µs, 100 µs to prepare: as many as allowed.
        let mut r = Rate::default();
        r.note_prep(Duration::from_micros(100));
        for i in 0..50 {
            r.note_call(t0 + Duration::from_micros(10 * i));
        }
        assert_eq!(r.target(4), 4);
        assert_eq!(r.target(64), 10);
    }
}
