//! The sandbox: one wasmtime `Engine` per process, components compiled once
//! (and cached on disk, with what each answered to `describe`, so a warm
//! start instantiates nothing), an `InstancePre` per component, and a fresh
//! `Store` per call whose WASI context is built from the component's
//! prepared grants alone (see `caps`).
//!
//! Owns the engine and its pool (sized from the host config, with weighted
//! permits so that a call waits for room rather than failing, and no
//! component holds more than its share), the linkers (wasi:http is linked
//! only for components granted a host; for the others its imports trap
//! without allocating anything), the epoch ticker, deadlines and
//! cancellation, the classification of traps into limits, and the threads
//! loads' blocking work runs on (`lanes`). Sandboxes may be prepared ahead
//! of their calls (`warm`, `[engine] prewarm`), each still used by exactly
//! one call. Each scope's share of the pool, its memory, lookups and
//! descriptors is kept across reloads and resized in place; a call whose
//! component a reload retired while it waited for room does not run
//! (`CallErrorKind::Reloaded`).
//!
//! Must not touch: *whether* a call may happen (that is `core` and
//! `policy`), or any front end. Reachable only through `Core`.

mod cache;
mod lanes;
mod sizing;
mod state;
mod typed;
mod warm;

/// The host's bindings of both versions of toolhost's world: a component
/// built for `toolhost:tool@0.1.0` (tools only) keeps loading next to ones
/// built for `@0.2.0` (tools, resources, prompts, completions). Which one a
/// component is, is read from its exports at load (see `Bound`).
pub(crate) mod bindings {
    /// `toolhost:tool@0.1.0` (wit/0.1.0/tool.wit).
    pub(crate) mod v1 {
        wasmtime::component::bindgen!({
            path: "wit/0.1.0/tool.wit",
            world: "toolhost",
            imports: { "toolhost:tool/host.request-client": async },
            exports: { default: async },
        });
    }
    /// `toolhost:tool@0.2.0` (wit/tool.wit).
    pub(crate) mod v2 {
        wasmtime::component::bindgen!({
            path: "wit/tool.wit",
            world: "toolhost",
            // `describe`'s answers are cached on disk as they came (see
            // `cache::Cache::put_description`).
            additional_derives: [serde::Serialize, serde::Deserialize],
            imports: {
                "toolhost:tool/host.request-client": async,
                "toolhost:tool/host.request-clients": async | trappable,
            },
            exports: { default: async },
        });
    }
}

mod bound;
mod serve;

use crate::caps::limits::{Refusal, SharedMemory};
use crate::caps::{self, Caps, Grants, fs::HostState};
use crate::config::EngineConfig;
use crate::error::{CallError, CallErrorKind, LoadError, LoadErrorKind};
use crate::manifest::Manifest;
use crate::model::{
    Annotations, ClientRequests, Content, EventSink, ResourceContents, TaskSupport, ToolDef,
    ToolOutput,
};
use bindings::v2::exports::toolhost::tool::tool as wit_tool;
use bound::{Bound, Raw};
pub(crate) use bound::{Op, Output};
use sha2::{Digest, Sha256};
#[cfg(test)]
pub(crate) use sizing::resolve_in;
pub(crate) use sizing::{HostRoom, auto_instances};
use sizing::{
    STACK_KEEP_RESIDENT, TABLE_KEEP_RESIDENT, async_stack_size, describe_reserve, load_parallelism,
    memories_for, pool_memories, pool_residue, pool_slots, pool_tables, tables_for,
};
pub(crate) use state::CallState;
use std::sync::Arc;
use std::sync::atomic as at;
use std::time::Instant;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
pub use warm::PrewarmStats;
use wasmtime::component::{Component, HasSelf, Linker, ResourceType, types::ComponentItem};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

/// What one component may create per call: the pool's per-component limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolShape {
    pub(crate) core_instances: usize,
    pub(crate) memories: usize,
    pub(crate) tables: usize,
}

impl Default for PoolShape {
    fn default() -> Self {
        PoolShape {
            core_instances: 32,
            memories: 4,
            tables: 16,
        }
    }
}

/// The pool's totals as permits: a call (or a sandbox prepared for one)
/// takes one slot plus as many memory and table permits as its component
/// has memories and tables, so the pool's sub-limits can never run out
/// under a call (it waits instead).
#[derive(Clone)]
pub(crate) struct Pools {
    slots: Arc<Semaphore>,
    memories: Arc<Semaphore>,
    tables: Arc<Semaphore>,
    /// The permits there are in all: slots, and (memories, tables).
    slots_total: u32,
    totals: (u32, u32),
    /// The memory its sandboxes may hold together, charged as it grows.
    memory: Arc<SharedMemory>,
    /// A scope's share of the process's name lookups (`caps::net`); none
    /// for the whole pool, whose lookups the process's slots bound.
    lookups: Option<Arc<Semaphore>>,
    /// A scope's share of the descriptors calls may hold (`caps::fs`);
    /// none for the whole pool (the process's share bounds it).
    descriptors: Option<Arc<caps::fs::DescriptorShare>>,
}

impl Pools {
    /// A pool of `slots` sandboxes, with the memory and table permits they
    /// may hold (`sizing::memories_for` and `tables_for`: the pooling
    /// allocator's limits), and the bytes of memory they may hold together.
    fn new(slots: u32, memory: Arc<SharedMemory>) -> Pools {
        Pools::with_totals(slots, (memories_for(slots), tables_for(slots)), memory)
    }

    /// `share` of this pool: that part of its slots, of its memory and
    /// table permits (each at least one), and the bytes `memory` allows.
    /// Of the permits, not `Pools::new` of the slots: the pool has fewer
    /// memory permits per slot past 256 slots (`sizing::memories_for`),
    /// and shares that each took two per slot would add up to more than
    /// the pool (found by review).
    fn share(&self, share: f64, memory: Arc<SharedMemory>, lookups: Arc<Semaphore>) -> Pools {
        let (slots, totals) = self.share_sizes(share);
        Pools {
            lookups: Some(lookups),
            ..Pools::with_totals(slots, totals, memory)
        }
    }

    /// The slots and (memory, table) permits of `share` of this pool.
    fn share_sizes(&self, share: f64) -> (u32, (u32, u32)) {
        let part = |n: u32| ((f64::from(n) * share).floor() as u32).max(1);
        (
            part(self.slots_total),
            (part(self.totals.0), part(self.totals.1)),
        )
    }

    /// Resize this share's permits to `slots` and `totals` in place
    /// (`caps::limits::resize_permits`): the calls holding its permits
    /// keep counting against it.
    fn resize(&mut self, slots: u32, totals: (u32, u32)) {
        let to = |sem: &Semaphore, total: &mut u32, n: u32| {
            *total = caps::limits::resize_permits(sem, *total as usize, n as usize) as u32;
        };
        to(&self.slots, &mut self.slots_total, slots);
        to(&self.memories, &mut self.totals.0, totals.0);
        to(&self.tables, &mut self.totals.1, totals.1);
    }

    /// Whether anything but the one holding this handle holds its permits
    /// (a call, a prepared sandbox, a teardown) or a clone of it.
    fn in_use(&self) -> bool {
        Arc::strong_count(&self.slots) > 1
            || Arc::strong_count(&self.memories) > 1
            || Arc::strong_count(&self.tables) > 1
    }

    fn with_totals(slots: u32, totals: (u32, u32), memory: Arc<SharedMemory>) -> Pools {
        Pools {
            memory,
            slots: Arc::new(Semaphore::new(slots as usize)),
            memories: Arc::new(Semaphore::new(totals.0 as usize)),
            tables: Arc::new(Semaphore::new(totals.1 as usize)),
            slots_total: slots,
            totals,
            lookups: None,
            descriptors: None,
        }
    }

    /// Whether a sandbox of `weight` (memories, tables) can be taken and
    /// still leave a quarter of each kind of permit free: the room work
    /// ahead of calls (prepared sandboxes) must leave them (a check of the
    /// quarter alone let a heavy sandbox dip into it: review).
    fn quarter_free(&self, weight: (u32, u32)) -> bool {
        let free = |sem: &Semaphore, total: u32, take: u32| {
            sem.available_permits() >= (total as usize).div_ceil(4) + take.max(1) as usize
        };
        free(&self.slots, self.slots_total, 1)
            && free(&self.memories, self.totals.0, weight.0)
            && free(&self.tables, self.totals.1, weight.1)
    }

    /// `weight` as this pool can grant it: never more than it holds (one
    /// call of a component heavier than a share still runs, alone).
    fn fit(&self, weight: (u32, u32)) -> (u32, u32) {
        (weight.0.min(self.totals.0), weight.1.min(self.totals.1))
    }

    /// Permits for one sandbox of `weight` (memories, tables), if all are
    /// free now.
    fn try_acquire(&self, weight: (u32, u32)) -> Option<PoolPermits> {
        Some(PoolPermits {
            _slot: self.slots.clone().try_acquire_owned().ok()?,
            _mem: self
                .memories
                .clone()
                .try_acquire_many_owned(weight.0)
                .ok()?,
            _tab: self.tables.clone().try_acquire_many_owned(weight.1).ok()?,
            memory: self.memory.clone(),
            lookups: self.lookups.clone(),
            descriptors: self.descriptors.clone(),
        })
    }

    /// Wait for permits for one sandbox of `weight`.
    async fn acquire(&self, weight: (u32, u32)) -> PoolPermits {
        let slot = self.slots.clone().acquire_owned().await;
        let mem = self.memories.clone().acquire_many_owned(weight.0).await;
        let tab = self.tables.clone().acquire_many_owned(weight.1).await;
        PoolPermits {
            _slot: slot.expect("never closed"),
            _mem: mem.expect("never closed"),
            _tab: tab.expect("never closed"),
            memory: self.memory.clone(),
            lookups: self.lookups.clone(),
            descriptors: self.descriptors.clone(),
        }
    }
}

/// Where the sandbox's own work off the calls' path runs (preparing
/// sandboxes ahead, tearing stores down): the guest executor once the core
/// has one, whose threads yield the CPU to the front ends, so that a burst
/// of refills never holds the threads that read and answer requests; else
/// the caller's runtime. (`describe` runs on the loader's task instead:
/// it has a deadline, which low-priority threads could make it miss.)
#[derive(Clone, Default)]
pub(crate) struct Background(Arc<std::sync::OnceLock<tokio::runtime::Handle>>);

impl Background {
    /// The runtime to spawn on; `None` outside any runtime.
    pub(crate) fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.0
            .get()
            .cloned()
            .or_else(|| tokio::runtime::Handle::try_current().ok())
    }
}

/// Owns the engine, the linkers and the epoch ticker.
pub(crate) struct Sandbox {
    engine: Engine,
    /// WASI (no sockets, no DNS) and the toolhost host interface.
    linker: Linker<CallState>,
    /// The same plus wasi:http, for components granted a host.
    linker_http: Linker<CallState>,
    cache: Option<Arc<cache::Cache>>,
    /// Compiles in progress, by component path and digest.
    compiling: std::sync::Mutex<InFlight>,
    /// The threads of the loads in progress (see [`Sandbox::load_lanes`]).
    lanes: std::sync::Mutex<std::sync::Weak<lanes::Lanes>>,
    pool: Pools,
    /// The sandboxes beside the pool that only `describe` takes.
    describe_reserve: Pools,
    /// Sandboxes prepared ahead of their calls.
    warm: Arc<warm::Shared>,
    shape: PoolShape,
    config: EngineConfig,
    _ticker: Ticker,
    /// This pool's part of what the process's pools claimed of the host.
    _claim: sizing::Claim,
    /// Whether memory resets use pagemap scans, and whether swap has
    /// appeared since (then no call runs: see [`SwapWatch`]).
    swap: Arc<SwapWatch>,
    /// Where its background work runs.
    background: Background,
    /// Each scope's share of the pool (see [`Sandbox::scope_share`]).
    /// With each, the share it was sized to, and whether a reload came
    /// since.
    scope_shares:
        std::sync::Mutex<std::collections::HashMap<crate::catalog::Scope, (f64, Pools, bool)>>,
    /// Each scope's share of the host's memory, kept across reloads for
    /// as long as anything holds it: a reload resizes the share, and the
    /// calls running through it keep counting against the same bound
    /// (else each reload would hand a scope a fresh, empty share).
    scope_memory: std::sync::Mutex<
        std::collections::HashMap<crate::catalog::Scope, std::sync::Weak<SharedMemory>>,
    >,
    /// Each scope's share of the process's name lookups, kept as its
    /// memory is.
    scope_lookups: caps::net::LookupShares,
    /// Each scope's share of the descriptors calls may hold, kept across
    /// reloads like its lookups.
    scope_descriptors: caps::fs::DescriptorShares,
}

/// A loaded component: its pre-linked instance, its tools, and the grants
/// every call of it gets.
pub(crate) struct LoadedComponent {
    pub(crate) manifest: Arc<Manifest>,
    pub(crate) grants: Grants,
    pub(crate) tools: Vec<ToolDef>,
    /// Its resources, templates and prompts (`toolhost:tool@0.2.0`).
    pub(crate) served: Arc<crate::served::Served>,
    /// Whether this load compiled the component (false: from the cache).
    pub(crate) compiled: bool,
    /// Whether this load asked it what it offers (`describe`, in a
    /// sandbox); false: a typed component, or the answer of an earlier
    /// load or of the cache.
    pub(crate) asked: bool,
    kind: Kind,
    concurrency: Arc<Semaphore>,
    /// Memory and table permits one call of it takes from the pool.
    weight: (u32, u32),
    /// What it was loaded from (see `catalog`): a reload reuses it while
    /// this and `caps` are unchanged.
    pub(crate) fingerprint: [u8; 32],
    pub(crate) caps: Caps,
    /// Its sandboxes prepared ahead of calls (see `warm`).
    warm: Arc<warm::WarmSet>,
    /// Set when a reload served a catalog without it: a call that found
    /// it before and waited for room then does not run (see
    /// [`Sandbox::call`]'s check).
    retired: std::sync::atomic::AtomicBool,
}

/// How a component is called: through toolhost's world (`describe` and
/// `call`), or one plain exported WIT function per tool (`crate::typed`).
/// Either way each call gets a fresh store with the same grants and limits.
enum Kind {
    Toolhost(Bound),
    Typed(typed::TypedComponent),
}

/// What a toolhost-world component's `describe` answered, kept for a
/// reload of the same component (same digest) under other caps: `describe`
/// runs with no grants, so its answer depends on the component alone, and
/// a reload need not wait for a pool slot to ask again (under a full pool
/// it could time out and drop the tools).
pub(crate) struct Described {
    sha256: [u8; 32],
    tools: Vec<ToolDef>,
    served: Arc<crate::served::Served>,
}

impl LoadedComponent {
    /// What its `describe` answered (`None`: a typed-WIT component, whose
    /// tools come from its type).
    pub(crate) fn described(&self) -> Option<Described> {
        matches!(self.kind, Kind::Toolhost(_)).then(|| Described {
            sha256: self.manifest.sha256,
            tools: self.tools.clone(),
            served: self.served.clone(),
        })
    }

    /// A reload served a catalog without this component: calls that
    /// found it before and still wait for room do not run.
    pub(crate) fn retire(&self) {
        self.retired
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether sandboxes of it may be prepared ahead: toolhost-world
    /// components (a typed tool's call instantiates its function's
    /// component as part of running it) without network grants (a
    /// start-up that opened a request would keep it going while the
    /// sandbox waits, outside any call's deadline and audit) nor a
    /// read-write directory (a start-up in the background, given four
    /// slices, could write before any call exists, and read the host's
    /// time back from what it wrote: found by review).
    fn prewarmable(&self) -> bool {
        matches!(self.kind, Kind::Toolhost(_)) && !self.grants.net.any() && !self.grants.fs.writes()
    }

    /// For a typed-WIT tool, a check of its arguments that converts them
    /// exactly as the call will, naming the JSON pointer of any bad value
    /// (`/items/2/id: expected u16 ≤ 65535`); `None` for other tools (their
    /// input schema is the check). With it, the most one JSON value of
    /// the arguments can become
    /// (`typed::Signature::expansion`), the check's cost per value.
    pub(crate) fn argument_check(&self, tool: &str) -> Option<(crate::schema::Check, u64)> {
        let Kind::Typed(t) = &self.kind else {
            return None;
        };
        let sig = t.signature(tool)?.clone();
        let expansion = sig.expansion();
        let budget = usize::try_from(self.grants.limits.memory).unwrap_or(usize::MAX);
        let check: crate::schema::Check = Arc::new(move |args: &serde_json::Value| {
            let empty = serde_json::Map::new();
            let obj = args.as_object().unwrap_or(&empty);
            crate::typed::arguments(obj, &sig, budget)
                .map(drop)
                .map_err(|e| e.to_string())
        });
        Some((check, expansion))
    }
}

/// What a call carries into the sandbox besides its tool and arguments.
#[derive(Default)]
pub(crate) struct CallContext {
    pub(crate) events: Option<EventSink>,
    /// `None`: nobody can cancel it (a sandbox prepared ahead, `describe`):
    /// no token is made, and none dropped when a call's replaces it.
    pub(crate) cancel: Option<CancellationToken>,
    /// The caller's client, for the requests the manifest grants.
    pub(crate) client: Option<Arc<dyn ClientRequests>>,
    /// The guest executor, where the call's network work runs (its
    /// first slice runs on the caller's task, and what it starts there
    /// would otherwise run on the front end's threads).
    pub(crate) guests: Option<tokio::runtime::Handle>,
    /// Where the call's costs are recorded, however it ends.
    pub(crate) usage: Arc<Usage>,
    /// The caller's turn at the pool (see `scheduler`): the turnstile and
    /// the scope it is taken for, after the tool's own concurrency permit,
    /// and held until the pool's permits are taken, so that tenants reach
    /// the pool in the scheduler's order.
    pub(crate) turn: Option<(Arc<crate::scheduler::Fair>, crate::catalog::Scope)>,
    /// Host time already spent on the call's behalf (from the call's
    /// start: its admission, the policy, checking its arguments against
    /// the tool's schema): taken off its timeout.
    pub(crate) spent: std::time::Duration,
    /// When that host work ended: the call's wait for room counts from
    /// then, and its deadline from `spent` before it (`None`: both from
    /// when the sandbox takes the call).
    pub(crate) checked: Option<Instant>,
    /// The scope (tenant) the call is made in: its calls together hold at
    /// most its share of the pool. `None`: only the component's own bound.
    pub(crate) scope: Option<crate::catalog::Scope>,
    /// The scope's turns at the guest threads, taken past the first slice.
    pub(crate) cpu: Option<crate::scheduler::CpuTurn>,
}

/// Fuel between two write-backs of a running guest's fuel count to its
/// store (and a yield to the executor): the accuracy of `fuel_used` for a
/// call stopped mid-loop.
const FUEL_FLUSH: u64 = 10_000_000;

/// How long a call's first slice must have run before an epoch tick may
/// end it. The first slice runs on the caller's task
/// ([`crate::scheduler::Scheduler::run`]); a call that yields moves to the
/// guest executor, where it queues behind whatever guests run there
/// (another tenant's runaways, say) for a tick or two. With every tick
/// ending the slice, a call that happened to start just before a tick
/// yielded after a few microseconds: about one call in fifty of a short
/// tool (20 µs against a 1 ms tick), which was the victim's p99 under
/// attack (`cargo bench -p toolhost-cli --bench noisy`). A tick that comes
/// sooner than this lets the slice run on to the next tick, once; so a
/// first slice lasts at most one tick plus this on the caller's thread (a
/// review measured the alternative, two whole ticks, as handing a tenant
/// the I/O threads three times as cheaply).
const FIRST_SLICE_GRACE: std::time::Duration = std::time::Duration::from_micros(250);

/// Start the first slice of the call `store` is for, at `now`: its epoch
/// deadline is the next tick, or the one after if the next comes within
/// [`FIRST_SLICE_GRACE`]. `store` must come from [`new_store`], which sets
/// what its ticks do ([`yield_at_ticks`]); without that, wasmtime traps the
/// guest at its first tick.
fn start_first_slice(store: &mut Store<CallState>, now: Instant) {
    store.set_epoch_deadline(1);
    store.data_mut().first_slice = Some(now);
}

/// What `store` does at each epoch tick, set once when it is made: past
/// its first slice (`start_first_slice`), yield to the executor, so a busy
/// guest never starves other calls (the deadline and cancellation are
/// enforced around the call future, see `Sandbox::run`).
fn yield_at_ticks(store: &mut Store<CallState>) {
    store.epoch_deadline_callback(|mut cx| {
        if cx
            .data_mut()
            .first_slice
            .take()
            .is_some_and(|started| started.elapsed() < FIRST_SLICE_GRACE)
        {
            return Ok(wasmtime::UpdateDeadline::Continue(1));
        }
        // A call with a scope takes its scope's turns at the guest threads
        // (`scheduler::CpuTurn`); `describe` and sandboxes being prepared
        // have none and just yield.
        Ok(match &cx.data().cpu {
            Some(turn) => wasmtime::UpdateDeadline::YieldCustom(1, turn.next()),
            None => wasmtime::UpdateDeadline::Yield(1),
        })
    });
}

/// What one call cost, for the audit log and the metrics: filled in as the
/// call goes, so a call that times out or is cancelled still reports what
/// it used up to then.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    /// Microseconds waited for room in the pool, once `queued` says the
    /// call got it.
    queue_wait_us: at::AtomicU64,
    /// Whether the call got its room in the pool (then `queue_wait_us` is
    /// how long it waited for it).
    queued: at::AtomicBool,
    fuel_used: at::AtomicU64,
    peak_memory: at::AtomicU64,
    /// Bytes of events (logs, progress) the caller was sent besides the
    /// result.
    sent: at::AtomicU64,
    /// Whether a store was created (so fuel and memory mean something).
    ran: at::AtomicBool,
}

impl Usage {
    /// Whether the call has its room in the pool (its store is being made
    /// or its guest runs): past every wait for admission.
    pub(crate) fn admitted(&self) -> bool {
        self.queued.load(at::Ordering::Acquire)
    }

    /// Time waited for room in the pool, if the call got that far.
    pub(crate) fn queue_wait(&self) -> Option<std::time::Duration> {
        self.queued.load(at::Ordering::Acquire).then(|| {
            std::time::Duration::from_micros(self.queue_wait_us.load(at::Ordering::Acquire))
        })
    }
    /// Bytes the caller was sent besides the result (see `sent`).
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(at::Ordering::Acquire)
    }

    /// Fuel consumed and the peak memory, if the guest ran.
    pub(crate) fn costs(&self) -> Option<(u64, u64)> {
        self.ran.load(at::Ordering::Acquire).then(|| {
            (
                self.fuel_used.load(at::Ordering::Acquire),
                self.peak_memory.load(at::Ordering::Acquire),
            )
        })
    }
}

/// A call's store, which records the fuel and memory it used when dropped:
/// at the end of the call, or when a deadline or cancellation drops the
/// call's future.
struct Metered {
    /// Dropped before the permits (field order): the pool slot is free
    /// again only once the instance is gone.
    store: Store<CallState>,
    usage: Arc<Usage>,
    fuel: u64,
    /// The component's concurrency, given back as soon as the call ends.
    own: Option<tokio::sync::OwnedSemaphorePermit>,
    _pool: PoolPermits,
    /// The scope's share, given back with the pool's permits.
    _scope_share: Option<PoolPermits>,
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.record();
    }
}

/// Most teardowns one [`reply_first`] holds back; past it a store
/// is torn down at once, as without it.
const MAX_DEFERRED: usize = 2;

tokio::task_local! {
    /// Finished calls' stores, left for their task to tear down once it
    /// has answered (see [`reply_first`]).
    static DEFERRED: std::cell::RefCell<Deferred>;
}

/// What a task's finished calls left for after its reply.
#[derive(Default)]
struct Deferred {
    /// Held inline: most replies hold one sandbox back, and an allocation
    /// for it would be on the reply's path.
    stores: smallvec::SmallVec<[Metered; MAX_DEFERRED]>,
    /// Components whose next call gets a sandbox prepared then (see
    /// `warm::Shared::prepare_after_reply`).
    prepare: smallvec::SmallVec<[Prepare; 1]>,
}

/// One sandbox to prepare after a reply: for `comp`, by the warm sets'
/// owner, charged to `scope` (the memory share of the scope whose call
/// ended).
struct Prepare {
    warm: Arc<warm::Shared>,
    comp: Arc<LoadedComponent>,
    scope: Option<Arc<SharedMemory>>,
    /// The reload generation when the call ended (not when it started): a
    /// sandbox made under an older generation is never handed out after a
    /// reload. One made after a reload for a call that spanned it is kept
    /// in `comp`'s own set: a component the reload kept (same grants) uses
    /// it, and one it replaced takes no calls any more.
    generation: u64,
}

/// What the sandboxes of calls made within [`reply_first`] need once the
/// reply is written: resetting their memory, giving their pool room back
/// and (`[engine] prepare-after-reply`) preparing one sandbox for their
/// components' next calls. Done when this is dropped, on the dropping
/// task: drop it once the reply is on its way.
#[must_use = "dropped at once, it does its work before the reply is sent"]
pub struct AfterReply {
    later: Deferred,
}

impl AfterReply {
    /// Do the work once the current task has finished its turn, not now:
    /// for a reply this task writes later in the same turn. hyper, for
    /// one, drops a response's body before it writes the response, so an
    /// `AfterReply` held by the body must go this way. It runs as a task
    /// of its own, queued to run next on this worker thread (tokio's LIFO
    /// slot): when it is the only one queued so, it wakes no other thread.
    /// Outside a runtime, or with nothing to do, it is done now.
    pub fn after_this_turn(self) {
        if self.later.stores.is_empty() && self.later.prepare.is_empty() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn(async move { drop(self) })),
            Err(_) => drop(self),
        }
    }
}

impl Drop for AfterReply {
    fn drop(&mut self) {
        // The room first: the slot a call just left is the one its
        // component's next sandbox is most likely to take.
        self.later.stores.clear();
        for p in self.later.prepare.drain(..) {
            p.warm
                .prepare_after_reply(&p.comp, p.scope.as_ref(), p.generation);
        }
    }
}

impl std::fmt::Debug for AfterReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfterReply")
            .field("sandboxes", &self.later.stores.len())
            .field("to_prepare", &self.later.prepare.len())
            .finish()
    }
}

/// Run `f`, a handler that makes calls on a [`Core`](crate::Core) and
/// builds a reply, and leave what its calls' sandboxes need afterwards to
/// the returned [`AfterReply`]: resetting each sandbox's memory (a third
/// of a fresh sandbox's cost) and preparing the next call's sandbox (most
/// of the rest) are then off the reply's path, and need no other thread.
/// This crate's stdio and agent front ends and its stateless HTTP lane
/// answer this way.
///
/// ```no_run
/// # async fn f(core: toolhost::Core, send: impl Fn(String)) {
/// use toolhost::{CallRequest, Scope};
/// let args = serde_json::json!({ "text": "hi" }).as_object().cloned();
/// let (reply, after) = toolhost::reply_first(async {
///     let out = core.call(CallRequest::new(Scope::default(), "echo", args)).await;
///     format!("{out:?}")
/// })
/// .await;
/// send(reply);
/// drop(after); // now: the sandbox is reset, the next one prepared
/// # }
/// ```
///
/// Keep the `AfterReply` until the reply is written: `let (reply, _) =`
/// drops it at once, and the work then delays the reply. A reply written
/// by someone else later in this task's turn (a response body handed to
/// hyper) needs [`AfterReply::after_this_turn`].
///
/// Only calls that finish on `f`'s own task (a call that ends within its
/// first slice, see `scheduler`: most short calls) are held back, at most
/// two; each call's usage is recorded and its concurrency given back at
/// its end as always, and nothing runs in a held sandbox any more. A
/// sandbox is held back only while the pool has room beyond its reserve
/// (a quarter) and no call waits for it, and the pool and the call's
/// scope share each have a slot free and at most half their memory held:
/// a call that needs the room gets it at once.
pub async fn reply_first<F: Future>(f: F) -> (F::Output, AfterReply) {
    DEFERRED
        .scope(std::cell::RefCell::new(Deferred::default()), async move {
            let out = f.await;
            let later = DEFERRED.with(|d| std::mem::take(&mut *d.borrow_mut()));
            (out, AfterReply { later })
        })
        .await
}

/// Leave `m` to the enclosing [`reply_first`], if there is one with
/// room, and with it the preparing of `prepare`'s next sandbox; else give
/// `m` back.
fn defer(m: Metered, prepare: Option<Prepare>) -> Option<Metered> {
    let mut m = Some(m);
    let _ = DEFERRED.try_with(|d| {
        if let Ok(mut held) = d.try_borrow_mut()
            && held.stores.len() < MAX_DEFERRED
        {
            held.stores.extend(m.take());
            if let Some(p) = prepare
                && !held.prepare.iter().any(|q| Arc::ptr_eq(&q.comp, &p.comp))
            {
                held.prepare.push(p);
            }
        }
    });
    m
}

impl Metered {
    fn record(&self) {
        let left = self.store.get_fuel().unwrap_or(self.fuel);
        let u = &self.usage;
        u.fuel_used
            .store(self.fuel.saturating_sub(left), at::Ordering::Release);
        u.peak_memory.store(
            self.store.data().limiter.peak() as u64,
            at::Ordering::Release,
        );
        u.sent.store(
            self.store.data().output.sent() as u64,
            at::Ordering::Release,
        );
        u.ran.store(true, at::Ordering::Release);
    }
}

/// Whether a call's token, if it has one, was cancelled.
fn is_cancelled(cancel: &Option<CancellationToken>) -> bool {
    cancel.as_ref().is_some_and(CancellationToken::is_cancelled)
}

/// Advances the engine's epoch every tick: deadlines, cancellation checks and
/// cooperative yields of running guests all hang off it. Its thread holds
/// the engine only weakly, so an engine and its pool's reservations go when
/// the last of their users does, whatever the tick: it ticks for as long as
/// anything holds the engine (a background refill may outlive the sandbox,
/// and its guest still needs its deadline), and ends at once when this is
/// dropped if nothing does (it waits on the channel, not in a sleep of a
/// whole tick).
struct Ticker {
    _stop: std::sync::mpsc::Sender<()>,
}

/// Whether the kernel may swap pages out: then a dirty page can be missed by
/// a pagemap scan, so calls would not start from a clean memory.
fn swap_active(swaps: &std::path::Path) -> bool {
    match std::fs::read_to_string(swaps) {
        Ok(s) => s.lines().skip(1).any(|l| !l.trim().is_empty()),
        // Cannot tell: assume the worst.
        Err(_) => true,
    }
}

/// Swap enabled after start (`swapon`) while memory is reset with pagemap
/// scans: a dirty page that was swapped out is then not reset (wasmtime
/// PR #14357), and a call could read an earlier call's data. The engine's
/// reset cannot change while it runs, so toolhost fails closed: once the
/// epoch thread sees swap (every [`SWAP_CHECK`]), no call or `describe`
/// starts, each refused with what to do, until a restart.
struct SwapWatch {
    /// `/proc/swaps` (a file in tests).
    swaps: std::path::PathBuf,
    /// Resets use pagemap scans (off when swap was active at start).
    pagemap: bool,
    unsafe_now: std::sync::atomic::AtomicBool,
}

/// How often the epoch thread reads `/proc/swaps`.
const SWAP_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

impl SwapWatch {
    fn new(swaps: std::path::PathBuf, pagemap_wanted: bool) -> SwapWatch {
        let pagemap = pagemap_wanted && !swap_active(&swaps);
        if pagemap_wanted && !pagemap {
            tracing::info!("swap is active: resetting memory without pagemap scans");
        }
        SwapWatch {
            swaps,
            pagemap,
            unsafe_now: Default::default(),
        }
    }

    /// Look again; true (and an error logged, once) if swap appeared under
    /// pagemap resets.
    fn check(&self) -> bool {
        use std::sync::atomic::Ordering;
        if self.pagemap && !self.unsafe_now.load(Ordering::Acquire) && swap_active(&self.swaps) {
            self.unsafe_now.store(true, Ordering::Release);
            tracing::error!(
                "swap was enabled after toolhost started: memory is reset with pagemap scans, which miss swapped-out pages, so no call runs until toolhost restarts (it then resets without them) or `[engine] pagemap-scan = false` is set"
            );
        }
        self.unsafe_now.load(Ordering::Acquire)
    }

    /// Refuse a call if swap appeared under pagemap resets.
    fn admit(&self) -> Result<(), CallErrorKind> {
        if self.unsafe_now.load(std::sync::atomic::Ordering::Acquire) {
            return Err(CallErrorKind::Internal {
                message: "the host stopped running calls: swap was enabled after it started, and its memory resets could leave an earlier call's data behind; the operator must restart toolhost".into(),
            });
        }
        Ok(())
    }
}

/// The engine: components, epochs and fuel, no GC types, and a pool of
/// `config.max_instances` sandboxes of `shape` (plus the describe reserve,
/// and the sharding slack: `sizing`), with pagemap resets only if
/// `pagemap` (no swap).
fn engine(config: &EngineConfig, shape: PoolShape, pagemap: bool) -> anyhow::Result<Engine> {
    let mut wc = Config::new();
    wc.wasm_component_model(true)
        .epoch_interruption(true)
        .consume_fuel(true)
        // GHSA-rc4p-x33f-vpr2: in a build without wasmtime's `gc`
        // feature (ours), the GC proposal is still on for validation,
        // and a `call_indirect` through a non-final function type aborts
        // the host process. No tool needs GC types: refuse them at load.
        .wasm_gc(false)
        .max_wasm_stack(config.max_wasm_stack)
        .async_stack_size(async_stack_size(config))
        .cranelift_opt_level(wasmtime::OptLevel::Speed);
    let n = pool_slots(config);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(shape.core_instances as u32))
        .max_core_instances_per_component(shape.core_instances as u32)
        .total_memories(pool_memories(config))
        .max_memories_per_component(shape.memories as u32)
        .total_tables(pool_tables(config))
        .max_tables_per_component(shape.tables as u32)
        .total_stacks(n)
        // Both counted in the pool's bound (`sizing`): set, not defaulted.
        .max_component_instance_size(sizing::INSTANCE_BYTES)
        .table_elements(sizing::TABLE_ELEMENTS)
        .max_memory_size(caps::limits::MAX_MEMORY.min(1 << 32) as usize)
        // Keep the first pages of each slot resident: resetting them in
        // place is far cheaper than unmapping and faulting them back in.
        .linear_memory_keep_resident(config.memory_keep_resident)
        .table_keep_resident(TABLE_KEEP_RESIDENT)
        .async_stack_keep_resident(STACK_KEEP_RESIDENT)
        .pagemap_scan(if pagemap {
            wasmtime::Enabled::Auto
        } else {
            wasmtime::Enabled::No
        });
    wc.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(Engine::new(&wc)?)
}

/// The linker every component gets (WASI with toolhost's filesystem
/// enforcement, toolhost's worlds), and the one for components granted
/// network (the same, plus `wasi:http` behind the network gate).
fn linkers(engine: &Engine) -> anyhow::Result<(Linker<CallState>, Linker<CallState>)> {
    let mut linker: Linker<CallState> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    caps::fs::enforce::add_to_linker(&mut linker)?;
    state::add_clocks_to_linker(&mut linker)?;
    bindings::v1::Toolhost::add_to_linker::<_, HasSelf<CallState>>(&mut linker, |s| s)?;
    bindings::v2::Toolhost::add_to_linker::<_, HasSelf<CallState>>(&mut linker, |s| s)?;
    let mut linker_http = linker.clone();
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker_http)?;
    caps::net::add_to_linker(&mut linker_http)?;
    Ok((linker, linker_http))
}

/// Start the thread that ticks the engine's epoch every `tick` (deadlines)
/// and has `swap` look for swap every `SWAP_CHECK`, until the engine is
/// gone (see [`Ticker`]).
fn start_ticker(
    engine: &Engine,
    tick: std::time::Duration,
    swap: Arc<SwapWatch>,
) -> anyhow::Result<Ticker> {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("toolhost-epoch".into())
        .spawn(move || {
            let mut checked = Instant::now();
            let mut sandbox_gone = false;
            loop {
                if sandbox_gone {
                    std::thread::sleep(tick);
                } else if let Err(std::sync::mpsc::RecvTimeoutError::Disconnected) =
                    stopped.recv_timeout(tick)
                {
                    sandbox_gone = true;
                }
                let Some(engine) = engine.upgrade() else {
                    break;
                };
                engine.increment_epoch();
                if checked.elapsed() >= SWAP_CHECK {
                    checked = Instant::now();
                    swap.check();
                }
            }
        })?;
    Ok(Ticker { _stop: stop })
}

impl Sandbox {
    pub(crate) fn new(config: EngineConfig) -> anyhow::Result<Sandbox> {
        let (config, claim) = sizing::Claim::resolve(&config);
        let n = config.max_instances;
        let shape = PoolShape::default();
        let swap = Arc::new(SwapWatch::new("/proc/swaps".into(), config.pagemap_scan));
        let engine = engine(&config, shape, swap.pagemap)?;
        let (linker, linker_http) = linkers(&engine)?;
        let cache = match &config.cache_dir {
            Some(dir) => match cache::Cache::new(dir, &engine) {
                Ok(c) => Some(Arc::new(c)),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), "compile cache disabled: {e}");
                    None
                }
            },
            None => None,
        };
        let ticker = start_ticker(&engine, config.epoch_tick, swap.clone())?;
        // The whole pool and the describe reserve charge one host memory.
        let residue = pool_residue(&config);
        tracing::debug!(
            max_memory = config.max_memory,
            residue,
            "sandbox memory: calls together hold at most max-memory; the pool keeps at most the residue resident between calls"
        );
        let memory = SharedMemory::with_residue(config.max_memory, residue);
        let pool = Pools::new(n, memory.clone());
        let background = Background::default();
        let warm = warm::Shared::new(
            engine.clone(),
            pool.clone(),
            shape,
            &config,
            background.clone(),
        );
        Ok(Sandbox {
            background,
            engine,
            linker,
            linker_http,
            cache,
            compiling: Default::default(),
            lanes: Default::default(),
            pool,
            describe_reserve: Pools::new(describe_reserve(&config), memory),
            warm,
            shape,
            config,
            _ticker: ticker,
            _claim: claim,
            swap,
            scope_shares: Default::default(),
            scope_memory: Default::default(),
            scope_lookups: Default::default(),
            scope_descriptors: Default::default(),
        })
    }

    /// The part of the pool scope `scope`'s calls may hold together:
    /// `share` of its slots and of its memory and table permits (at least
    /// one call's worth), and `share` of the host's `max-memory`. Each component is bounded by its own share too
    /// (`LimitCaps::concurrency_for`); this bounds a scope (a tenant) that
    /// serves several, so that its calls never fill the pool. One share
    /// per scope: components of one scope with different caps get the
    /// smallest of their shares, never one each. The bound is per scope,
    /// not per principal: a client that drives several scopes (an agent
    /// and its subagents) holds a share in each.
    ///
    /// A share in use is resized in place, never replaced: after a reload
    /// (or for a component with a smaller share) the calls running keep
    /// counting against the same slots and permits. Found by review: a
    /// reload gave every scope a fresh share beside the one its running
    /// calls held, and a tenant that could make the host reload (see
    /// `watch`) held most of the pool.
    fn scope_share(&self, scope: &crate::catalog::Scope, share: f64) -> Pools {
        let mut shares = self.scope_shares.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = (self.config.max_memory as f64 * share) as u64;
        if let Some((had, pools, reloaded)) = shares.get_mut(scope) {
            if !*reloaded && *had <= share {
                // A share made smaller while its permits were held shrinks
                // the rest of the way as they come back (the fix review:
                // it kept the larger share until the next reload).
                let (slots, totals) = self.pool.share_sizes(*had);
                if (pools.slots_total, pools.totals) != (slots, totals) {
                    pools.resize(slots, totals);
                }
                return pools.clone();
            }
            let (slots, totals) = self.pool.share_sizes(share);
            pools.resize(slots, totals);
            pools.memory = self.scope_memory(scope, bytes);
            pools.lookups = Some(self.scope_lookups.of(scope, share));
            pools.descriptors = Some(self.scope_descriptors.of(scope, share));
            (*had, *reloaded) = (share, false);
            return pools.clone();
        }
        let pools = Pools {
            descriptors: Some(self.scope_descriptors.of(scope, share)),
            ..self.pool.share(
                share,
                self.scope_memory(scope, bytes),
                self.scope_lookups.of(scope, share),
            )
        };
        shares.insert(scope.clone(), (share, pools.clone(), false));
        pools
    }

    /// The memory all calls share (`[engine] max-memory`).
    pub(crate) fn memory(&self) -> Arc<SharedMemory> {
        self.pool.memory.clone()
    }

    /// Run background work (prepared sandboxes, teardowns) on
    /// `guest` from now on: the guest executor. Once; later calls change
    /// nothing.
    pub(crate) fn set_background(&self, guest: tokio::runtime::Handle) {
        let _ = self.background.0.set(guest);
    }

    /// `scope`'s share of the host's memory, bounded at `bytes` from now
    /// on: the one its running calls charge, if any do.
    fn scope_memory(&self, scope: &crate::catalog::Scope, bytes: u64) -> Arc<SharedMemory> {
        let mut all = self.scope_memory.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = all.get(scope).and_then(std::sync::Weak::upgrade) {
            m.set_limit(bytes);
            return m;
        }
        all.retain(|_, m| m.strong_count() > 0);
        let m = SharedMemory::new(bytes);
        all.insert(scope.clone(), Arc::downgrade(&m));
        m
    }

    /// A reload: the tenants and their caps may have changed. A scope's
    /// share that nothing holds is forgotten (the next call makes it
    /// anew); one in use is resized at its scope's next call, so that what
    /// its running calls hold still counts.
    pub(crate) fn reset_scope_shares(&self) {
        let mut shares = self.scope_shares.lock().unwrap_or_else(|e| e.into_inner());
        shares.retain(|_, (_, pools, _)| pools.in_use());
        for (_, _, reloaded) in shares.values_mut() {
            *reloaded = true;
        }
    }

    /// How many components the catalog loads at once: never more than
    /// half the pool, so that `describe`s waiting for slots do not run
    /// into their deadlines on a small pool.
    pub(crate) fn load_parallelism(&self) -> usize {
        load_parallelism(&self.config)
    }

    /// The threads loads' blocking work runs on (`lanes`): those of the
    /// loads in progress, or new ones. A catalog holds them while it loads,
    /// so that one thread takes load after load, and they end with it.
    pub(crate) fn load_lanes(&self) -> Arc<lanes::Lanes> {
        let mut held = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lanes) = held.upgrade() {
            return lanes;
        }
        let lanes = Arc::new(lanes::Lanes::new());
        *held = Arc::downgrade(&lanes);
        lanes
    }

    /// Sandboxes calls may hold at once (`max-instances`, resolved).
    pub(crate) fn pool_size(&self) -> u32 {
        self.config.max_instances
    }

    /// The compile cache's directory, if caching: host state no grant may
    /// reach.
    pub(crate) fn cache_dir(&self) -> Option<&std::path::Path> {
        self.cache.as_ref().map(|c| c.dir())
    }

    /// Load `manifest`'s component under `caps`: prepare its grants,
    /// compile it (or fetch it from the cache) and pre-link it, then learn
    /// what it offers: from its type (a typed component), from
    /// `described` (an earlier load's answer, if of the same component),
    /// from the cache's record of its answer, or by asking it (`describe`,
    /// in a sandbox), in that order.
    pub(crate) async fn load(
        &self,
        manifest: Manifest,
        caps: &Caps,
        host: &HostState,
        described: Option<Described>,
    ) -> Result<LoadedComponent, LoadError> {
        let mpath = manifest.path.clone();
        let err = |kind: LoadErrorKind| LoadError::new(&mpath, kind);
        let grants = caps::prepare(&manifest, caps, host, self.config.max_instances)
            .map_err(|e| err(LoadErrorKind::Grants(e)))?;
        let cpath = manifest.component.clone();
        // Reading, hashing, and deserializing or compiling run on a load
        // thread (`lanes`; the catalog loads several components at once,
        // so they use every core); overlapping loads of one component (one
        // manifest in several sources) share one compile, and only the load
        // that ran it reports it as compiled.
        // The compile is shared while a load holds it: this one holds it
        // to its end.
        let described = described.filter(|d| d.sha256 == manifest.sha256);
        let cell = self.compile_cell(&cpath, manifest.sha256);
        let (fetched, compiled) = self
            .compile_once(&cell, &cpath, manifest.sha256)
            .await
            .map_err(err)?;
        let weight = self
            .weight_of(&fetched.component, grants.limits.memory, &cpath)
            .map_err(err)?;
        let (kind, typed_tools) = self.link(&fetched, &grants, &cpath).map_err(err)?;

        // Its calls together hold at most its share of the memory and table
        // permits too, not only of the slots.
        let mut grants = grants;
        grants.limits.max_concurrency =
            caps.limits
                .concurrency_for(&grants.limits, weight, self.pool.totals);
        let mut loaded = LoadedComponent {
            concurrency: Arc::new(Semaphore::new(grants.limits.max_concurrency as usize)),
            manifest: Arc::new(manifest),
            grants,
            tools: Vec::new(),
            served: Default::default(),
            compiled,
            kind,
            weight,
            fingerprint: [0; 32],
            caps: caps.clone(),
            warm: self.warm.new_set(),
            asked: false,
            retired: Default::default(),
        };
        match (typed_tools, described) {
            // Typed tools are known from the component's type alone.
            (Some(defs), _) => loaded.tools = defs,
            (None, Some(d)) => {
                loaded.tools = d.tools;
                loaded.served = d.served;
            }
            (None, None) => {
                let (answer, record) = match fetched.description.clone() {
                    Some(recorded) => (Arc::unwrap_or_clone(recorded), None),
                    None => {
                        let answer = self.describe(&loaded).await.map_err(err)?;
                        loaded.asked = true;
                        // Serialized before the conversion takes it, and
                        // only as far as a record may go: the answer is
                        // not checked yet.
                        let record = self
                            .cache
                            .as_ref()
                            .and_then(|c| Some((c.clone(), cache::description_record(&answer)?)));
                        (answer, record)
                    }
                };
                let (tools, served) = convert_description(answer).map_err(err)?;
                // Recorded once the host accepts it.
                if let Some((cache, record)) = record {
                    let sha256 = loaded.manifest.sha256;
                    let _ = self
                        .load_lanes()
                        .run(move || cache.put_description(&sha256, &record))
                        .await;
                }
                loaded.tools = tools;
                loaded.served = Arc::new(served);
            }
        }
        Ok(loaded)
    }

    /// The compile of the component at `cpath` with digest `sha256`: the
    /// one an overlapping load holds, else a new one.
    fn compile_cell(&self, cpath: &std::path::Path, sha256: [u8; 32]) -> Arc<Compiling> {
        let key = (cpath.to_path_buf(), sha256);
        let mut inflight = self.compiling.lock().unwrap_or_else(|e| e.into_inner());
        inflight.retain(|_, w| w.strong_count() > 0);
        match inflight.get(&key).and_then(std::sync::Weak::upgrade) {
            Some(c) => c,
            None => {
                let c = Arc::new(tokio::sync::OnceCell::new());
                inflight.insert(key, Arc::downgrade(&c));
                c
            }
        }
    }

    /// Run `cell`'s compile, unless a load sharing it has: what `compile`
    /// gives, and whether this load compiled it (false: from the cache, or
    /// run by another load).
    async fn compile_once(
        &self,
        cell: &Compiling,
        cpath: &std::path::Path,
        sha256: [u8; 32],
    ) -> Result<(Fetched, bool), LoadErrorKind> {
        let ran = std::sync::atomic::AtomicBool::new(false);
        let fetched = cell
            .get_or_init(|| async {
                ran.store(true, std::sync::atomic::Ordering::Relaxed);
                let engine = self.engine.clone();
                let cache = self.cache.clone();
                let path = cpath.to_path_buf();
                let expected = sha256;
                self.load_lanes()
                    .run(move || compile(&engine, cache.as_deref(), &path, expected))
                    .await
                    .map_err(|e| LoadErrorKind::InvalidComponent {
                        component: cpath.to_path_buf(),
                        reason: format!("the compiler failed: {e}"),
                    })
                    .and_then(|r| r)
            })
            .await
            .clone()?;
        let compiled = fetched.compiled && ran.into_inner();
        Ok((fetched, compiled))
    }

    /// The memories and tables one call of `component` (at `cpath`) takes
    /// from the pool; refused if a sandbox or the whole pool cannot hold
    /// them, or its initial memory is over `memory_limit`.
    fn weight_of(
        &self,
        component: &Component,
        memory_limit: u64,
        cpath: &std::path::Path,
    ) -> Result<(u32, u32), LoadErrorKind> {
        let weight = match component.resources_required() {
            Some(r) => {
                if r.num_memories as usize > self.shape.memories
                    || r.num_tables as usize > self.shape.tables
                {
                    return Err(LoadErrorKind::TooLarge {
                        component: cpath.to_path_buf(),
                        reason: format!(
                            "it defines {} memories and {} tables; a component may have at most {} and {}",
                            r.num_memories, r.num_tables, self.shape.memories, self.shape.tables
                        ),
                    });
                }
                if let Some(initial) = r.max_initial_memory_size
                    && initial.saturating_mul(1 << 16) > memory_limit
                {
                    return Err(LoadErrorKind::TooLarge {
                        component: cpath.to_path_buf(),
                        reason: format!(
                            "its initial memory of {} MiB is over its memory limit of {} MiB; raise `limits.memory`",
                            initial.saturating_mul(1 << 16) >> 20,
                            memory_limit >> 20
                        ),
                    });
                }
                // Its tables are charged to the same limit from their
                // initial size on (`Limiter::table_growing`): one that
                // starts over it would fail every call (review).
                let tables = r
                    .max_initial_table_size
                    .unwrap_or(0)
                    .saturating_mul(8)
                    .saturating_mul(u64::from(r.num_tables));
                if tables > memory_limit {
                    return Err(LoadErrorKind::TooLarge {
                        component: cpath.to_path_buf(),
                        reason: format!(
                            "its tables' initial {} KiB are over its memory limit of {} KiB; raise `limits.memory`",
                            tables >> 10,
                            memory_limit >> 10
                        ),
                    });
                }
                (r.num_memories.max(1), r.num_tables)
            }
            // Imports a module or component (not produced by our toolchains):
            // charge the per-component maximum.
            None => (self.shape.memories as u32, self.shape.tables as u32),
        };
        // One call must fit the whole pool, or it would wait for permits
        // that never come.
        let totals = self.pool.totals;
        if weight.0 > totals.0 || weight.1 > totals.1 {
            return Err(LoadErrorKind::TooLarge {
                component: cpath.to_path_buf(),
                reason: format!(
                    "a call needs {} memories and {} tables, more than the whole pool holds ({} and {}); raise `max-instances`",
                    weight.0, weight.1, totals.0, totals.1
                ),
            });
        }
        Ok(weight)
    }

    /// Pre-link the component `fetched` (from `cpath`) with the linker its
    /// `grants` call for: a toolhost-world component, or a typed one with
    /// the tools its type declares.
    fn link(
        &self,
        fetched: &Fetched,
        grants: &Grants,
        cpath: &std::path::Path,
    ) -> Result<(Kind, Option<Vec<ToolDef>>), LoadErrorKind> {
        let component = &fetched.component;
        let wrong_world = |e: wasmtime::Error| LoadErrorKind::WrongWorld {
            component: cpath.to_path_buf(),
            reason: format!("{e:#}"),
        };
        let stubbed;
        let linker = if grants.net.any() {
            &self.linker_http
        } else if imports_http(&self.engine, component) {
            let mut l = self.linker.clone();
            stub_http_imports(&mut l, &self.engine, component).map_err(wrong_world)?;
            stubbed = l;
            &stubbed
        } else {
            // Nothing to stub: the linker as it is (a copy of its hundreds
            // of definitions was most of linking a component).
            &self.linker
        };
        // A component exporting toolhost's world is called through it; any
        // other (`compile` kept its binary) is served as typed WIT
        // functions, or refused. Both are linked by the same linker, chosen
        // by the grants.
        match &fetched.typed_binary {
            None => {
                let pre = linker.instantiate_pre(component).map_err(wrong_world)?;
                let bound = Bound::new(pre).map_err(wrong_world)?;
                Ok((Kind::Toolhost(bound), None))
            }
            Some(bytes) => {
                let (t, defs) = typed::TypedComponent::load(linker, component, &self.engine, bytes)
                    .map_err(|e| match e {
                        typed::TypedLoadError::NotATool(reason) => LoadErrorKind::NotATool {
                            component: cpath.to_path_buf(),
                            reason: reason.to_string(),
                        },
                        typed::TypedLoadError::Refused(reason) => LoadErrorKind::TypedRefused {
                            component: cpath.to_path_buf(),
                            reason,
                        },
                    })?;
                Ok((Kind::Typed(t), Some(defs)))
            }
        }
    }

    /// Ask a loaded component what it offers (its tools, and with
    /// `@0.2.0` its resources, templates and prompts): in a fresh sandbox
    /// with no grants, under its limits, holding a pool slot or one of the
    /// describe reserve's ([`Sandbox::acquire_for_describe`]).
    async fn describe(&self, comp: &LoadedComponent) -> Result<Description, LoadErrorKind> {
        let describe_err = |reason: String| LoadErrorKind::Describe { reason };
        if let Err(CallErrorKind::Internal { message }) = self.swap.admit() {
            return Err(describe_err(message));
        }
        let Kind::Toolhost(bound) = &comp.kind else {
            return Err(describe_err("not a toolhost-world component".into()));
        };
        let timeout = comp.grants.limits.timeout.min(self.config.describe_timeout);
        let run = async {
            let _permits = self.acquire_for_describe(comp).await;
            let mut store = self
                .store(comp, CallContext::default(), false)
                .map_err(|e| describe_err(format!("{e:#}")))?;
            // On the loader's own task, at its priority: on the guest
            // executor (nice 10 or SCHED_IDLE) a first start's compiles,
            // or a pool of runaway calls, could starve it past its
            // deadline. It yields at every epoch tick, and the deadline
            // bounds how long it holds the loader's thread in those
            // slices.
            let result = bound.describe(&mut store).await;
            match result {
                Ok(d) => Ok(d),
                Err(e) => Err(describe_err(
                    CallError::new(
                        "describe",
                        self.classify_trap("describe", &comp.grants, store.data(), e),
                    )
                    .to_string(),
                )),
            }
        };
        tokio::time::timeout(timeout, run).await.map_err(|_| {
            describe_err(format!(
                "did not answer within {timeout:?} (the shorter of its `timeout` and `[engine] describe-timeout`, waiting for a sandbox included)"
            ))
        })?
    }

    /// Room for one `describe` of `comp`: its own concurrency, then a pool
    /// slot or, if none is free, one of the describe reserve's, or
    /// whichever comes first (a component heavier than one reserved
    /// sandbox waits for the pool). The reserve is held only as long as a
    /// `describe` runs, within its component's timeout.
    async fn acquire_for_describe(&self, comp: &LoadedComponent) -> Permits {
        let own = comp
            .concurrency
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let reserve = &self.describe_reserve;
        let fits_reserve = reserve.fit(comp.weight) == comp.weight;
        let pool = match self.pool.try_acquire(comp.weight) {
            Some(p) => p,
            None if fits_reserve => match reserve.try_acquire(comp.weight) {
                Some(p) => p,
                // The reserve first: waiting on the pool sheds prepared
                // sandboxes (`acquire_pool`), which is for calls.
                None => tokio::select! {
                    biased;
                    p = reserve.acquire(comp.weight) => p,
                    p = self.acquire_pool(comp.weight) => p,
                },
            },
            None => self.acquire_pool(comp.weight).await,
        };
        Permits {
            _own: own,
            _pool: pool,
        }
    }

    /// Wait for pool permits; a call that cannot have them at once first
    /// gives the pool back every prepared sandbox (calls come first).
    async fn acquire_pool(&self, weight: (u32, u32)) -> PoolPermits {
        if let Some(p) = self.pool.try_acquire(weight) {
            return p;
        }
        let _pressure = self.warm.under_pressure();
        self.pool.acquire(weight).await
    }

    /// Drop every sandbox prepared so far: called on reload, before the new
    /// catalog is served, so none prepared before it is used after it.
    pub(crate) fn invalidate_prepared(&self) {
        self.warm.invalidate();
    }

    /// Counters of the prepared sandboxes.
    pub(crate) fn prewarm_stats(&self) -> PrewarmStats {
        self.warm.stats()
    }

    /// A fresh store for one call of `comp`: with its grants, or (for
    /// `describe`) with none.
    fn store(
        &self,
        comp: &LoadedComponent,
        cx: CallContext,
        with_grants: bool,
    ) -> anyhow::Result<Store<CallState>> {
        new_store(
            &self.engine,
            &comp.grants,
            cx,
            with_grants,
            self.shape,
            &self.pool.memory,
        )
    }

    /// Run tool `tool` of `comp` with `arguments` (JSON text) in a fresh
    /// sandbox: one prepared ahead for this call if one is ready, else one
    /// built now. Waits for room within the tool's timeout.
    #[cfg(feature = "unstable-bench")]
    pub(crate) async fn call(
        &self,
        comp: &Arc<LoadedComponent>,
        tool: &str,
        arguments: &str,
        cx: CallContext,
    ) -> Result<ToolOutput, CallErrorKind> {
        match self.run(comp, Op::Call { tool, arguments }, cx).await? {
            Output::Tool(out) => Ok(out),
            _ => Err(CallErrorKind::Internal {
                message: "a call answered as something else".into(),
            }),
        }
    }

    /// Run one operation of `comp` (a tool call, a resource read, a prompt
    /// get, a completion...) in a fresh sandbox, exactly as a tool call
    /// runs: its grants, limits, deadline, cancellation, pool turn and
    /// `max-output`.
    pub(crate) async fn run(
        &self,
        comp: &Arc<LoadedComponent>,
        op: Op<'_>,
        mut cx: CallContext,
    ) -> Result<Output, CallErrorKind> {
        self.swap.admit()?;
        let limits = &comp.grants.limits;
        // The host's checks count against the timeout: a call they used
        // up takes no turn and no pool slot.
        if cx.spent >= limits.timeout {
            return Err(CallErrorKind::Timeout {
                after: limits.timeout,
            });
        }
        // The call's wait for room counts from the same clock read as its
        // deadline (the end of the host's checks, if the caller made
        // them).
        let waiting = cx.checked.take().unwrap_or_else(Instant::now);
        let deadline = waiting + (limits.timeout - cx.spent);
        let cancel = cx.cancel.clone();
        let turn = cx.turn.take();
        let scope = cx.scope.take();
        let tool = op.subject();
        // Typed tools convert their arguments once the call has its room
        // (their values then take at most the tool's memory limit, for at
        // most as many calls as the pool runs).
        let call = match (&comp.kind, &op) {
            (Kind::Toolhost(b), _) => Call::Toolhost(b),
            (Kind::Typed(t), Op::Call { tool, .. }) if t.has(tool) => Call::Typed(t),
            (Kind::Typed(_), _) => return Err(CallErrorKind::UnknownTool),
        };

        let usage = cx.usage.clone();
        // Whether the call has waited (returned pending) yet: until then,
        // no time passed but the host's own work, and the clock read that
        // started its wait (`waiting`) is when it got its room too.
        let suspended = at::AtomicBool::new(false);
        // Pinned where it is made: a future is copied whole when moved,
        // and this one is most of the call's (kilobytes).
        let mut run = std::pin::pin!(async {
            let (own, scope_share, turn) = self.wait_for_room(comp, scope, turn).await?;
            let share_memory = scope_share.as_ref().map(|s| &s.memory);
            let cpu = cx.cpu.take();
            let cpu_turn = cpu.clone();
            let now = || {
                if suspended.load(at::Ordering::Relaxed) {
                    Instant::now()
                } else {
                    waiting
                }
            };
            let (mut store, pool, instance, room) =
                self.sandbox_for(comp, cx, share_memory, now).await?;
            // Found before a reload that no longer serves it (its grants
            // revoked or narrowed, its component replaced): a call that
            // waited for room across it (its concurrency, its scope's
            // share, the pool) does not run with what the reload took away
            // (found by review: a write queued behind a busy tool ran after
            // its `rw` grant became `ro`). Checked once all the room is
            // held: the store was built from the grants the call found.
            if comp.retired.load(std::sync::atomic::Ordering::Acquire) {
                return Err(CallErrorKind::Reloaded);
            }
            store.data_mut().cpu = cpu;
            if let Some(share) = &scope_share {
                if let Some(lookups) = &share.lookups {
                    store.data_mut().share_lookups(lookups);
                }
                if let Some(descriptors) = &share.descriptors {
                    store.data_mut().share_descriptors(descriptors);
                }
            }
            // Its wait for the turn is part of this one.
            drop(turn);
            usage.queue_wait_us.store(
                room.saturating_duration_since(waiting)
                    .as_micros()
                    .min(u64::MAX as u128) as u64,
                at::Ordering::Release,
            );
            usage.queued.store(true, at::Ordering::Release);
            let mut metered = Metered {
                store,
                usage: usage.clone(),
                fuel: limits.fuel.unwrap_or(u64::MAX),
                own: Some(own),
                _pool: pool,
                _scope_share: scope_share,
            };
            let store = &mut metered.store;
            // Pinned where it is made, and wrapped by reference: moved into
            // its wrappers, it would be copied whole at each (kilobytes).
            let result = {
                let guest = std::pin::pin!(async {
                    match &call {
                        Call::Typed(t) => {
                            let Op::Call { tool, arguments } = &op else {
                                return Ok(Raw::Typed(Err(CallErrorKind::UnknownTool)));
                            };
                            let budget = usize::try_from(limits.memory).unwrap_or(usize::MAX);
                            match t.prepare(tool, arguments, budget).await {
                                Ok(p) => {
                                    p.run(&mut *store, limits.max_output).await.map(Raw::Typed)
                                }
                                Err(e) => Ok(Raw::Typed(Err(e))),
                            }
                        }
                        Call::Toolhost(bound) => {
                            let ready = match instance {
                                Some(ready) => ready,
                                // Boxed: instantiating is most of this
                                // future's size, and a call with a sandbox
                                // prepared ahead never does it.
                                None => Box::pin(bound.instantiate(&mut *store)).await?.into(),
                            };
                            bound.run(&mut *store, &ready, &op).await
                        }
                    }
                });
                // Whenever the guest waits (in the host, or a fuel yield), its
                // turn at the guest threads goes to the next scope.
                crate::scheduler::Turned::new(
                    guest.instrument(tracing::debug_span!("sandbox.run")),
                    cpu_turn,
                )
                .await
            };
            Ok::<_, CallErrorKind>((result, metered))
        });

        // Cancellation first, then the deadline, then the guest, at every
        // poll. The wake-ups for cancellation and the deadline are
        // registered only once the call goes on past a poll: registering
        // a timer wakes the I/O driver (a write to its eventfd, and an
        // extra turn of its poll), and a token's waiter takes its lock,
        // costs most calls, which end in their first poll, need not pay.
        let timeout = || CallErrorKind::Timeout {
            after: limits.timeout,
        };
        let mut cancelled = std::pin::pin!(async {
            match &cancel {
                Some(c) => c.cancelled().await,
                None => std::future::pending().await,
            }
        });
        let mut timer = crate::scheduler::LazyTimer::new(deadline.into());
        // The deadline was set a moment before the first poll (at the end
        // of the caller's checks, or above): checked from the second on (a
        // clock read less for a call that ends in one), unless converting
        // typed arguments came between.
        let mut first = matches!(call, Call::Toolhost(_));
        let (result, mut metered) = std::future::poll_fn(|cx| {
            if is_cancelled(&cancel) {
                return std::task::Poll::Ready(Err(CallErrorKind::Cancelled));
            }
            if !std::mem::take(&mut first) && Instant::now() >= deadline {
                return std::task::Poll::Ready(Err(timeout()));
            }
            if let std::task::Poll::Ready(r) = run.as_mut().poll(cx) {
                return std::task::Poll::Ready(r);
            }
            suspended.store(true, at::Ordering::Relaxed);
            if cancelled.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(Err(CallErrorKind::Cancelled));
            }
            timer.poll(cx).map(|()| Err(timeout()))
        })
        .await?;
        // Cancelled while the guest ran its last slice (a guest that polls
        // `cancelled()` returns in the same poll that saw it): the caller
        // asked for no result, and gets none.
        if is_cancelled(&cancel) {
            self.retire(comp, metered);
            return Err(CallErrorKind::Cancelled);
        }
        let out = self.finish(comp, tool, result, &mut metered.store);
        self.retire(comp, metered);
        out
    }

    /// What a call waits for before any pool room, in this order: its
    /// component's concurrency, its scope's share of the pool (M1: holding
    /// nothing another scope waits for) and its tenant's turn (round robin
    /// across tenants), which the caller passes on once the call has room.
    async fn wait_for_room(
        &self,
        comp: &LoadedComponent,
        scope: Option<crate::catalog::Scope>,
        turn: Option<(Arc<crate::scheduler::Fair>, crate::catalog::Scope)>,
    ) -> Result<
        (
            tokio::sync::OwnedSemaphorePermit,
            Option<PoolPermits>,
            Option<crate::scheduler::RunSlot>,
        ),
        CallErrorKind,
    > {
        let own = comp
            .concurrency
            .clone()
            .acquire_owned()
            .instrument(tracing::debug_span!("sandbox.acquire"))
            .await
            .expect("never closed");
        let scope_share = match &scope {
            Some(scope) => {
                let share = self.scope_share(scope, comp.caps.limits.pool_share);
                let weight = share.fit(comp.weight);
                Some(
                    share
                        .acquire(weight)
                        .instrument(tracing::debug_span!("sandbox.scope_share"))
                        .await,
                )
            }
            None => None,
        };
        let turn = match turn {
            Some((fair, scope)) => Some(
                crate::scheduler::Fair::acquire(&fair, &scope)
                    .instrument(tracing::debug_span!("sandbox.turn"))
                    .await
                    .map_err(|crate::scheduler::ScheduleError::Busy(queued)| {
                        CallErrorKind::Busy { queued }
                    })?,
            ),
            None => None,
        };
        Ok((own, scope_share, turn))
    }

    /// A fresh sandbox for one call of `comp`: one prepared ahead (its
    /// instance too) if there is one, else pool room and a new store.
    /// From then on the sandbox's memory counts against `scope`'s share of
    /// the host's memory too: a sandbox prepared ahead is charged there for
    /// what it holds, and if that does not fit, the call builds a fresh
    /// one instead, whose memory the share bounds as it grows.
    /// `now()` says when a call that takes a prepared sandbox got its
    /// room (the clock, or when its wait began if it has not had to wait).
    async fn sandbox_for(
        &self,
        comp: &Arc<LoadedComponent>,
        cx: CallContext,
        scope: Option<&Arc<SharedMemory>>,
        now: impl Fn() -> Instant,
    ) -> Result<
        (
            Store<CallState>,
            PoolPermits,
            Option<bound::Instantiated>,
            Instant,
        ),
        CallErrorKind,
    > {
        // A sandbox prepared after a reply joined its component's scope
        // then (the same scope as this call's: components are per scope).
        let joins = |store: &Store<CallState>| {
            let budget = store.data().limiter.budget();
            scope.is_none_or(|m| budget.in_scope(m) || budget.join_scope(m))
        };
        let prepared = self.warm.take(comp, joins);
        Ok(match prepared {
            Some(prepared) => {
                // Dropping the rest of `prepared` gives its memory back
                // to the warm budget: from here on it is this call's.
                let warm::Prepared {
                    mut store,
                    instance,
                    permits,
                    made,
                    ..
                } = prepared;
                // Its first slice starts now; instantiating it took the
                // same fuel a sandbox built now would.
                let now = now();
                store
                    .data_mut()
                    .begin(cx, now.saturating_duration_since(made));
                start_first_slice(&mut store, now);
                (store, permits, Some(instance), now)
            }
            None => {
                let pool = self
                    .acquire_pool(comp.weight)
                    .instrument(tracing::debug_span!("sandbox.acquire"))
                    .await;
                let store = self.store(comp, cx, true).map_err(|e| {
                    match e.downcast_ref::<caps::fs::DescriptorsExhausted>() {
                        // Sandboxes prepared ahead hold directories too:
                        // give theirs back for the calls that follow.
                        Some(d) => {
                            self.warm.shed();
                            CallErrorKind::ResourceExhausted {
                                what: "open files of the host's share for tools",
                                limit: d.limit as u64,
                            }
                        }
                        None => CallErrorKind::Internal {
                            message: format!("{e:#}"),
                        },
                    }
                })?;
                // It holds nothing yet: this fails only if a reload shrank
                // the share below what the scope's calls hold now.
                if !joins(&store) {
                    return Err(CallErrorKind::SharedMemoryExhausted {
                        limit: scope.map_or(0, |m| m.limit()),
                        share: true,
                    });
                }
                // Read here: building it (and shedding prepared ones to
                // make room) is not part of the wait's start.
                (store, pool, None, Instant::now())
            }
        })
    }

    /// Turn what the guest returned into the call's output, or the limit
    /// or fault that ended it.
    fn finish(
        &self,
        comp: &LoadedComponent,
        tool: &str,
        result: wasmtime::Result<Raw>,
        store: &mut Store<CallState>,
    ) -> Result<Output, CallErrorKind> {
        let limits = &comp.grants.limits;
        caps::fs::enforce::warn(store.data_mut());
        store.data_mut().warn_refused_request();

        // A call that must wait for its client's answers ends here, whatever
        // the guest made of being told so (it is run again with them).
        let requests = store.data().client.take_waiting();
        if !requests.is_empty() {
            return Err(CallErrorKind::InputRequired { requests });
        }
        let raw = match result {
            Ok(Raw::Typed(output)) => return output.map(Output::Tool),
            Ok(raw) => raw,
            Err(e) => return Err(self.classify_trap(tool, &comp.grants, store.data(), e)),
        };
        let size = raw.size();
        if size > limits.max_output {
            return Err(CallErrorKind::OutputTooLarge {
                size,
                limit: limits.max_output,
            });
        }
        match raw {
            Raw::Toolhost(Ok(r)) => {
                // Its structured part is parsed into a tree up to dozens of
                // times its text (an object is a map node of 632 bytes):
                // charged to the call's memory while it is made, beside the
                // guest's, so that one call cannot make the host hold
                // gigabytes past `max-output` (found by review: 7 MB of
                // `{"":0},` held 400 MiB no bound counted). Once the
                // sandbox is torn down the tree is smaller than what it
                // gives back.
                let weight = r
                    .structured
                    .as_deref()
                    .map_or(0, |s| crate::weight::parsed_weight(s.as_bytes()));
                let _charge = store.data().limiter.budget().hold_or_refuse(weight)?;
                convert_result(r)
                    .map(Output::Tool)
                    .map_err(|details| CallErrorKind::BadResult { details })
            }
            Raw::Toolhost(Err(e)) => Err(match e {
                wit_tool::ToolError::InvalidArguments(m) => {
                    CallErrorKind::InvalidArguments { details: m }
                }
                wit_tool::ToolError::UnknownTool(_) => CallErrorKind::UnknownTool,
                wit_tool::ToolError::Failed(m) => CallErrorKind::ToolFailed { message: m },
            }),
            other => serve::finish(other),
        }
    }

    /// End a finished call's sandbox: its costs are recorded and its
    /// component's concurrency permit returned now; tearing the store down
    /// (resetting its memory) happens off the caller's path, its pool
    /// permits held until that is done (on a background task with
    /// `prewarm`, else after the reply in the enclosing `reply_first`,
    /// which then prepares the component's next sandbox), unless the pool
    /// is short of room: teardowns waiting for their task hold
    /// sandboxes, and a caller that never yields could pile them up until
    /// the pool is nearly full.
    fn retire(&self, comp: &Arc<LoadedComponent>, mut metered: Metered) {
        metered.record();
        drop(metered.own.take());
        // Its turn at the guest threads and its events go with the call,
        // not with the store's teardown: the caller's event stream ends
        // now (a front end waits for that before it answers).
        if let Some(turn) = metered.store.data_mut().cpu.take() {
            turn.release();
        }
        metered.store.data_mut().output.detach();
        if self.warm.refills_in_background()
            && self.warm.has_room()
            && let Some(rt) = self.background.handle()
        {
            rt.spawn(async move { drop(metered) });
        } else if self.warm.has_room()
            && metered._pool.roomy()
            && metered._scope_share.as_ref().is_none_or(PoolPermits::roomy)
        {
            let prepare =
                (self.warm.prepares_after_reply() && comp.prewarmable()).then(|| Prepare {
                    warm: self.warm.clone(),
                    comp: comp.clone(),
                    scope: metered._scope_share.as_ref().map(|s| s.memory.clone()),
                    generation: self.warm.generation(),
                });
            drop(defer(metered, prepare));
        }
        // Else (dropped here) torn down at once: another call may need the
        // room, of the pool or of the scope's share, slots or memory.
    }

    /// Turn a wasmtime error into the limit or fault that caused it.
    fn classify_trap(
        &self,
        _tool: &str,
        grants: &Grants,
        state: &CallState,
        e: wasmtime::Error,
    ) -> CallErrorKind {
        let max = grants.stdio.max_stdio;
        if let Some(stream) = state.output.flooded() {
            return CallErrorKind::StdioFlood { stream, limit: max };
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => {
                return CallErrorKind::FuelExhausted {
                    fuel: grants.limits.fuel.unwrap_or(u64::MAX),
                };
            }
            Some(Trap::StackOverflow) => return CallErrorKind::StackOverflow,
            _ => {}
        }
        match state.limiter.refused_memory() {
            Some((Refusal::Own, limit)) => return CallErrorKind::MemoryExhausted { limit },
            Some((by, limit)) => {
                // Sandboxes prepared ahead hold some of that memory: a
                // retry finds it free.
                self.warm.shed();
                return CallErrorKind::SharedMemoryExhausted {
                    limit,
                    share: by == Refusal::Scope,
                };
            }
            None => {}
        }
        let text = format!("{e:#}");
        if text.contains("unknown import: `wasi:http/") {
            return CallErrorKind::Denied {
                reason: "the tool tried outbound HTTP, but its manifest grants no host (`[network] allow`)".into(),
            };
        }
        // wasmtime's `HostcallFuelExhausted` (private: matched by its text).
        if text.contains("fuel allocated for hostcalls has been exhausted") {
            return CallErrorKind::ResourceExhausted {
                what: "bytes of host memory for one transfer from the guest",
                limit: hostcall_fuel(&grants.limits) as u64,
            };
        }
        if text.contains("resource table has no free keys") || text.contains("table capacity") {
            return CallErrorKind::ResourceExhausted {
                what: "resource handles",
                limit: state.handle_limit as u64,
            };
        }
        // A Rust guest prints its panic message to stderr before aborting:
        // the last lines it wrote.
        let stderr = state.output.stderr.tail();
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("note:"))
            .collect();
        // Each part cut to 2 KiB: a trap's text carries the guest's
        // backtrace, frames named by the component (its name section
        // unbounded: found by review), and the message travels to the
        // caller, the audit log and the task store.
        let detail = crate::audit::bounded(
            &lines[lines.len().saturating_sub(3)..].join(" | "),
            MAX_TRAP_PART,
        );
        let trap = if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            // Said as what it is, not as wasmtime's backtrace of the exit
            // (found by the user review).
            format!(
                "the tool exited with status {} in the middle of its call",
                exit.0
            )
        } else {
            match e.downcast_ref::<Trap>() {
                Some(t) => t.to_string(),
                None => crate::audit::bounded(&text, MAX_TRAP_PART),
            }
        };
        let message = if detail.is_empty() {
            trap
        } else {
            format!("{detail} ({trap})")
        };
        CallErrorKind::Trap { message }
    }

    /// An instance that is reused across calls. **Not a sandbox per call**:
    /// state survives from one call to the next. It exists only to measure
    /// what the fresh sandbox costs (`benches/sandbox.rs`).
    #[cfg(feature = "unstable-bench")]
    pub(crate) async fn warm_instance(
        &self,
        comp: &LoadedComponent,
    ) -> anyhow::Result<WarmInstance> {
        let Kind::Toolhost(bound) = &comp.kind else {
            anyhow::bail!("warm instances exist for toolhost-world components only");
        };
        // It holds its pool permits like any sandbox, so the pool never
        // has more instances than permits.
        let permits = self.acquire_pool(comp.weight).await;
        let mut store = self.store(comp, CallContext::default(), true)?;
        let instance = bound.instantiate(&mut store).await?;
        Ok(WarmInstance {
            store,
            instance,
            bound: bound.clone(),
            _permits: permits,
        })
    }
}

/// A call, ready to run: the component's way in (a typed tool's
/// arguments are converted once the call holds its room).
enum Call<'a> {
    Toolhost(&'a Bound),
    /// Its arguments are converted once the call has its room.
    Typed(&'a typed::TypedComponent),
}

/// Permits held for one call: its component's concurrency and the pool.
struct Permits {
    _own: tokio::sync::OwnedSemaphorePermit,
    _pool: PoolPermits,
}

/// Pool permits held by one sandbox (a call's, or one prepared ahead).
pub(crate) struct PoolPermits {
    _slot: tokio::sync::OwnedSemaphorePermit,
    _mem: tokio::sync::OwnedSemaphorePermit,
    _tab: tokio::sync::OwnedSemaphorePermit,
    /// The bytes of memory the pool's sandboxes share.
    memory: Arc<SharedMemory>,
    /// The name lookups the pool's calls share, if it is a scope's share.
    lookups: Option<Arc<Semaphore>>,
    /// The descriptors the pool's calls share, if it is a scope's share.
    descriptors: Option<Arc<caps::fs::DescriptorShare>>,
}

impl PoolPermits {
    /// Whether the pool these came from could spare them a while longer:
    /// a sandbox slot is free, and at most half its memory is held.
    fn roomy(&self) -> bool {
        self._slot.semaphore().available_permits() > 0
            && (self.memory.used() as u64).saturating_mul(2) <= self.memory.limit()
    }
}

/// A fresh store with `grants` (or, for `describe`, none), its memory
/// limiter, fuel and epoch deadline set.
fn new_store(
    engine: &Engine,
    grants: &Grants,
    cx: CallContext,
    with_grants: bool,
    shape: PoolShape,
    memory: &Arc<SharedMemory>,
) -> anyhow::Result<Store<CallState>> {
    let state = CallState::new(grants, cx, with_grants, shape, memory)?;
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);

    store.set_hostcall_fuel(hostcall_fuel(&grants.limits));
    store.set_max_component_handles(component_handles(grants.handles));
    // Compiled code keeps its fuel count in a register and writes it
    // back only at calls, returns and when it runs out: refilling every
    // `FUEL_FLUSH` units makes a guest stopped mid-loop (deadline,
    // cancellation) report its fuel to within that many units.
    store.fuel_async_yield_interval(Some(FUEL_FLUSH))?;
    // A sandbox prepared ahead keeps what instantiating it left of this
    // fuel: its call is charged for its instantiation exactly as a call
    // that builds its own sandbox is.
    store.set_fuel(grants.limits.fuel.unwrap_or(u64::MAX))?;
    yield_at_ticks(&mut store);
    start_first_slice(&mut store, Instant::now());
    Ok(store)
}

/// The most bytes of each part of a trap's message (the guest's last
/// stderr lines, wasmtime's text of the trap).
const MAX_TRAP_PART: usize = 2 << 10;

/// What one guest-to-host transfer (a host call's arguments, an export's
/// results) may make the host allocate while lifting it. wasmtime counts
/// host bytes: a string or a `list<u8>` into a `Vec<u8>` weighs its length,
/// a typed tool's values 40 bytes an element. Its default, 128 MiB, is kept
/// as the ceiling; below it, a call gets no more than it may hold in
/// memory. (It was at least 40 bytes for each byte of `max-output`, so that
/// any result within it could be lifted as values: a 4 MiB typed tool with
/// a 3 MiB `max-output` made the host lift 120 MiB, found by review. A
/// typed tool returning large lists asks for the memory they take.)
fn hostcall_fuel(limits: &caps::Limits) -> usize {
    const CEILING: u64 = 128 << 20;
    usize::try_from(limits.memory.min(CEILING)).unwrap_or(usize::MAX)
}

/// The most component-model handles a call's store holds at once (its
/// instances' tables: each resource of the host's it holds, each borrow in
/// a call, each resource of its own made with `resource.new`). wasmtime's
/// default, 100,000, let a guest's own resources take 2.5-5 MiB of host
/// memory outside its limits (found by review). Four per handle the call
/// may hold in the host's table (a host resource is in both, and borrows
/// come and go), and never fewer than 4,096.
fn component_handles(handles: usize) -> usize {
    handles.saturating_mul(4).clamp(4096, 100_000)
}

/// The prefix of every `wasi:http` interface's name.
const WASI_HTTP: &str = "wasi:http/";

/// Whether `component` imports anything of `wasi:http` (which
/// [`stub_http_imports`] defines when it has no network grant).
fn imports_http(engine: &Engine, component: &Component) -> bool {
    component
        .component_type()
        .imports(engine)
        .any(|(name, _)| name.starts_with(WASI_HTTP))
}

/// Define every `wasi:http` import of `component` as a function that traps
/// (and its resources as empty host resources): a component without a
/// network grant can still load, but cannot make the host allocate anything
/// on its behalf through wasi:http.
fn stub_http_imports(
    linker: &mut Linker<CallState>,
    engine: &Engine,
    component: &Component,
) -> wasmtime::Result<()> {
    let ty = component.component_type();
    for (name, item) in ty.imports(engine) {
        if !name.starts_with(WASI_HTTP) {
            continue;
        }
        let ComponentItem::ComponentInstance(inst) = item.ty else {
            continue;
        };
        let mut li = linker.instance(name)?;
        for (export, item) in inst.exports(engine) {
            match item.ty {
                ComponentItem::ComponentFunc(_) => {
                    let full = format!("{name}#{export}");
                    li.func_new(export, move |_, _, _, _| {
                        Err(wasmtime::Error::msg(format!(
                            "unknown import: `{full}` has not been defined"
                        )))
                    })?;
                }
                ComponentItem::Resource(_) => {
                    // Types wasi:http borrows from wasi:io are the real
                    // ones (the component imports them from wasi:io too);
                    // wasi:http's own resources become empty stand-ins.
                    let ty = match export {
                        "input-stream" => ResourceType::host::<wasmtime_wasi::p2::DynInputStream>(),
                        "output-stream" => {
                            ResourceType::host::<wasmtime_wasi::p2::DynOutputStream>()
                        }
                        "pollable" => ResourceType::host::<wasmtime_wasi::p2::DynPollable>(),
                        "io-error" | "error" => ResourceType::host::<wasmtime::Error>(),
                        _ => ResourceType::host::<HttpStub>(),
                    };
                    li.resource(export, ty, |_, _| Ok(()))?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The host side of a wasi:http resource of a tool without a network
/// grant: never created (every function that would create one traps).
struct HttpStub;

/// A reused instance, for the benchmarks only.
#[cfg(feature = "unstable-bench")]
pub(crate) struct WarmInstance {
    store: Store<CallState>,
    instance: wasmtime::component::Instance,
    bound: Bound,
    _permits: PoolPermits,
}

#[cfg(feature = "unstable-bench")]
impl WarmInstance {
    pub(crate) async fn call(&mut self, tool: &str, arguments: &str) -> anyhow::Result<ToolOutput> {
        let op = Op::Call { tool, arguments };
        let ready = bound::Instantiated::from(self.instance);
        match self.bound.run(&mut self.store, &ready, &op).await? {
            Raw::Toolhost(r) => {
                let r = r.map_err(|e| anyhow::anyhow!("{e:?}"))?;
                convert_result(r).map_err(|e| anyhow::anyhow!(e))
            }
            _ => anyhow::bail!("not a tool call's result"),
        }
    }
}

/// Compiles in progress, by component path and digest.
type InFlight =
    std::collections::HashMap<(std::path::PathBuf, [u8; 32]), std::sync::Weak<Compiling>>;

/// One compile, shared by the loads that wait for it.
type Compiling = tokio::sync::OnceCell<Result<Fetched, LoadErrorKind>>;

/// What [`compile`] gives.
#[derive(Clone)]
struct Fetched {
    component: Component,
    /// A typed component's binary (its docs are in it); `None` for a
    /// toolhost-world component, which is called through its world.
    typed_binary: Option<Arc<[u8]>>,
    /// Whether it was compiled (false: found in the cache).
    compiled: bool,
    /// Its `describe` answer as the cache recorded it, if the cache has it.
    description: Option<Arc<Description>>,
}

/// A toolhost-world component's answer to `describe`, in `@0.2.0`'s form
/// (an `@0.1.0` answer lifted), before the host checks and converts it.
type Description = (Vec<wit_tool::ToolDef>, bound::Described);

/// Check the component at `path` against its digest, and fetch its
/// compiled form (and the record of its `describe` answer) from `cache`,
/// or compile it (and cache that). Blocking.
///
/// A toolhost-world component found in the cache needs nothing of its file
/// but the digest check, which streams the file through a small buffer:
/// reading whole files into memory to hash them cost a twenty-component
/// start the page faults of a fresh buffer per file and the allocator's
/// returning them (BENCHMARKS.md). What is compiled or kept (a typed
/// component's docs) is read whole and checked, so the bytes used are the
/// bytes pinned. Each file is hashed once. (Looking the artifact up first
/// is safe: it is found by the manifest's digest, under this cache's MAC,
/// whatever the file holds; a file that does not match is refused.)
fn compile(
    engine: &Engine,
    cache: Option<&cache::Cache>,
    path: &std::path::Path,
    expected: [u8; 32],
) -> Result<Fetched, LoadErrorKind> {
    use std::io::Read;
    let read_error = |source| LoadErrorKind::ReadComponent {
        component: path.to_path_buf(),
        source: Arc::new(source),
    };
    // Opened once, without blocking (a FIFO planted in its place would
    // hold the load forever) or becoming a controlling terminal, and read
    // only if it is a regular file (not `/dev/zero`) of a bounded size (a
    // sparse 1.5 GB file was read whole before its digest was checked:
    // found by review), at most as long as it was then.
    let (file, len) =
        crate::files::open_regular(path, crate::files::MAX_COMPONENT_BYTES).map_err(read_error)?;
    let mut file = file.take(len.saturating_add(1));
    let cached = cache.and_then(|c| c.get(engine, &expected));
    let whole = cached
        .as_ref()
        .is_none_or(|c| !crate::typed::exports_toolhost_world(&c.component_type(), engine));
    if let (Some(component), Some(cache), false) = (&cached, cache, whole) {
        check_digest(
            path,
            expected,
            sha256_streamed(&mut file).map_err(read_error)?,
        )?;
        return Ok(Fetched {
            component: component.clone(),
            typed_binary: None,
            compiled: false,
            // A few KiB, read even when an earlier load's answer is at hand
            // (a load sharing this compile may have none).
            description: cache.get_description(&expected).map(Arc::new),
        });
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(read_error)?;
    check_digest(path, expected, Sha256::digest(&bytes).into())?;
    let compiled = cached.is_none();
    let component = match cached {
        Some(c) => c,
        None => {
            let c = Component::from_binary(engine, &bytes).map_err(|e| {
                LoadErrorKind::InvalidComponent {
                    component: path.to_path_buf(),
                    reason: format!("{e:#}"),
                }
            })?;
            if let Some(cache) = cache {
                cache.put(&expected, &c);
            }
            c
        }
    };
    let typed = !crate::typed::exports_toolhost_world(&component.component_type(), engine);
    Ok(Fetched {
        component,
        typed_binary: typed.then(|| bytes.into()),
        compiled,
        description: None,
    })
}

/// `actual`, the digest of the component at `path`, is the `expected` one.
fn check_digest(
    path: &std::path::Path,
    expected: [u8; 32],
    actual: [u8; 32],
) -> Result<(), LoadErrorKind> {
    if actual != expected {
        return Err(LoadErrorKind::DigestMismatch {
            component: path.to_path_buf(),
            expected: hex::encode(expected),
            actual: hex::encode(actual),
        });
    }
    Ok(())
}

/// SHA-256 of what is left of `file`, read through a buffer that stays in
/// a core's cache.
fn sha256_streamed(file: &mut impl std::io::Read) -> std::io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 128 << 10];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(hasher.finalize().into()),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Most tools one component may describe, and the largest schema (bytes of
/// JSON) a tool may declare: `describe` cannot make the host parse or
/// compile without bound.
const MAX_TOOLS: usize = 256;
const MAX_SCHEMA_BYTES: usize = 256 << 10;
/// Most bytes of schemas and descriptions all of one component's tools may
/// take together: each tool within its own bounds, 256 of them made the
/// host parse and compile several hundred MiB of schemas at load (found by
/// review). Sixteen tools at the largest schemas, or 256 of 16 KiB, fit.
const MAX_DESCRIBED_BYTES: usize = 4 << 20;

/// Count one more tool's schemas and description (`bytes`) against its
/// component's [`MAX_DESCRIBED_BYTES`], before they are parsed.
fn describe_more(described: &mut usize, bytes: usize) -> Result<(), String> {
    *described = described.saturating_add(bytes);
    if *described > MAX_DESCRIBED_BYTES {
        return Err(format!(
            "its tools' schemas and descriptions together take more than {} MiB; a component \
             may describe at most that much (split it into several components)",
            MAX_DESCRIBED_BYTES >> 20
        ));
    }
    Ok(())
}

fn valid_tool_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

/// What a `describe` answer offers, checked: its tools, and what it
/// serves besides.
fn convert_description(
    (defs, served): Description,
) -> Result<(Vec<ToolDef>, crate::served::Served), LoadErrorKind> {
    Ok((convert_defs(defs)?, serve::convert(served)?))
}

fn convert_defs(defs: Vec<wit_tool::ToolDef>) -> Result<Vec<ToolDef>, LoadErrorKind> {
    if defs.len() > MAX_TOOLS {
        return Err(LoadErrorKind::Describe {
            reason: format!(
                "it describes {} tools; a component may offer at most {MAX_TOOLS}",
                defs.len()
            ),
        });
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(defs.len());
    let mut described = 0;
    for d in defs {
        let bytes = d.input_schema.len()
            + d.output_schema.as_ref().map_or(0, String::len)
            + d.description.len()
            + d.title.as_ref().map_or(0, String::len)
            + d.annotations.title.as_ref().map_or(0, String::len);
        describe_more(&mut described, bytes)
            .map_err(|reason| LoadErrorKind::Describe { reason })?;
        let name = d.name.clone();
        let tool = convert_def(d).map_err(|reason| LoadErrorKind::BadToolDef {
            tool: name.clone(),
            reason,
        })?;
        if !seen.insert(tool.name.clone()) {
            return Err(LoadErrorKind::BadToolDef {
                tool: name,
                reason: "described twice".into(),
            });
        }
        out.push(tool);
    }
    Ok(out)
}

fn parse_schema(
    what: &str,
    s: &str,
) -> Result<Arc<serde_json::Map<String, serde_json::Value>>, String> {
    if s.len() > MAX_SCHEMA_BYTES {
        return Err(format!(
            "{what} is {} bytes; at most {MAX_SCHEMA_BYTES} are accepted",
            s.len()
        ));
    }
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(serde_json::Value::Object(m)) => Ok(Arc::new(m)),
        Ok(_) => Err(format!("{what} must be a JSON object")),
        Err(e) => Err(format!("{what} is not JSON: {e}")),
    }
}

/// What every tool's name and description must be, however the component
/// says them (its `describe`, or a typed component's exports and docs).
fn check_name_and_description(name: &str, description: &str) -> Result<(), String> {
    if !valid_tool_name(name) {
        return Err("tool names must be 1-64 characters of A-Z a-z 0-9 _ - .".into());
    }
    if description.len() > 64 << 10 {
        return Err("the description is over 64 KiB".into());
    }
    Ok(())
}

fn convert_def(d: wit_tool::ToolDef) -> Result<ToolDef, String> {
    check_name_and_description(&d.name, &d.description)?;
    // Held in the catalog for as long as the tool is served and copied
    // into every `tools/list`: a 60 MiB title held 300 MB of the host and
    // made each listing 125 MB (found by review). Bounded as a resource's
    // or a prompt's title is.
    for title in [&d.title, &d.annotations.title].into_iter().flatten() {
        crate::served::bounded("a tool title", title, crate::served::MAX_NAME)?;
    }
    let input_schema = parse_schema("input schema", &d.input_schema)?;
    if input_schema.get("type").and_then(|t| t.as_str()) != Some("object") {
        return Err("input schema must have \"type\": \"object\"".into());
    }
    let output_schema = d
        .output_schema
        .as_deref()
        .map(|s| parse_schema("output schema", s))
        .transpose()?;
    let a = d.annotations;
    Ok(ToolDef {
        name: d.name.into(),
        title: d.title,
        description: d.description,
        input_schema,
        output_schema,
        annotations: Annotations {
            title: a.title,
            read_only: a.read_only,
            destructive: a.destructive,
            idempotent: a.idempotent,
            open_world: a.open_world,
        },
        task_support: match d.task_support {
            bindings::v2::toolhost::tool::types::TaskSupport::Forbidden => TaskSupport::Forbidden,
            bindings::v2::toolhost::tool::types::TaskSupport::Optional => TaskSupport::Optional,
            bindings::v2::toolhost::tool::types::TaskSupport::Required => TaskSupport::Required,
        },
    })
}

/// Bytes of JSON one content block adds besides its payload: a flood of
/// empty blocks weighs what its JSON would.
const PER_BLOCK: u64 = 48;

/// Base64's length for `n` bytes.
fn b64_len(n: usize) -> u64 {
    (n as u64).div_ceil(3) * 4
}

/// One content block's size as it will be serialized (binary data as
/// base64).
fn content_size(c: &bindings::v2::toolhost::tool::types::Content) -> u64 {
    use bindings::v2::toolhost::tool::types as wit;
    PER_BLOCK
        + match c {
            wit::Content::Text(t) => t.len() as u64,
            wit::Content::Image(m) | wit::Content::Audio(m) => {
                b64_len(m.data.len()) + m.mime_type.len() as u64
            }
            wit::Content::Resource(r) => {
                r.uri.len() as u64
                    + r.mime_type.as_ref().map_or(0, |m| m.len() as u64)
                    + match &r.contents {
                        wit::ResourceContents::Text(t) => t.len() as u64,
                        wit::ResourceContents::Blob(b) => b64_len(b.len()),
                    }
            }
        }
}

/// A result's size as it will be serialized: every block plus the
/// structured result.
fn wit_result_size(r: &wit_tool::CallResult) -> u64 {
    let blocks: u64 = r.content.iter().map(content_size).sum();
    blocks + r.structured.as_ref().map_or(0, |s| s.len() as u64)
}

/// One content block as the core knows it.
/// Whether `m` is a media type as clients and terminals take one:
/// `type/subtype`, parameters after it, printable ASCII, at most 255 bytes.
/// A guest chose it freely, and one holding escape sequences reached the
/// operator's terminal through `toolhost call` (found by review), and every
/// client as it was.
pub(crate) fn check_mime(m: &str) -> Result<(), String> {
    let essence = m.split(';').next().unwrap_or_default().trim();
    let ok = (1..=255).contains(&m.len())
        && m.bytes().all(|b| (0x20..0x7f).contains(&b))
        && essence
            .split_once('/')
            .is_some_and(|(t, s)| !t.is_empty() && !s.is_empty() && !s.contains('/'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "mime type {:?} is not a media type (`type/subtype`, printable ASCII, at most 255 bytes)",
            m.chars().take(64).collect::<String>()
        ))
    }
}

/// An optional mime type a guest gave: kept if it is a media type
/// ([`check_mime`]), else none (an empty one, `"text"`: the content is
/// served all the same, its type unsaid, and nothing unchecked reaches a
/// terminal or client).
pub(crate) fn optional_mime(m: Option<String>) -> Option<String> {
    m.filter(|m| check_mime(m).is_ok())
}

fn convert_content(c: bindings::v2::toolhost::tool::types::Content) -> Result<Content, String> {
    use bindings::v2::toolhost::tool::types as wit;
    Ok(match c {
        wit::Content::Text(t) => Content::Text(t),
        wit::Content::Image(m) => {
            check_mime(&m.mime_type)?;
            Content::Image {
                data: m.data,
                mime_type: m.mime_type,
            }
        }
        wit::Content::Audio(m) => {
            check_mime(&m.mime_type)?;
            Content::Audio {
                data: m.data,
                mime_type: m.mime_type,
            }
        }
        wit::Content::Resource(r) => Content::Resource {
            uri: r.uri,
            mime_type: optional_mime(r.mime_type),
            contents: match r.contents {
                wit::ResourceContents::Text(t) => ResourceContents::Text(t),
                wit::ResourceContents::Blob(b) => ResourceContents::Blob(b),
            },
        },
    })
}

fn convert_result(r: wit_tool::CallResult) -> Result<ToolOutput, String> {
    let content = r
        .content
        .into_iter()
        .map(convert_content)
        .collect::<Result<_, _>>()?;
    let structured = r
        .structured
        .map(|s| {
            serde_json::from_str(&s).map_err(|e| format!("structured result is not JSON: {e}"))
        })
        .transpose()?;
    Ok(ToolOutput {
        content,
        structured,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A review's case: a guest's mime type held escape sequences, which
    /// `toolhost call` printed to the operator's terminal (an OSC 52 wrote
    /// its clipboard) and every client got as they were.
    #[test]
    fn a_mime_type_is_a_media_type() {
        for ok in [
            "image/png",
            "audio/wav",
            "text/plain; charset=utf-8",
            "application/vnd.x+json",
        ] {
            assert!(check_mime(ok).is_ok(), "{ok}");
        }
        let osc = "image/png\u{1b}]52;c;cHduZWQ=\u{7}\u{1b}[2K\r";
        for bad in [
            "",
            "png",
            "image/",
            "/png",
            "image/png/x",
            osc,
            "image/p\u{9d}ng",
        ] {
            let e = check_mime(bad).unwrap_err();
            assert!(!e.contains('\u{1b}'), "{e:?}");
        }
        assert!(check_mime(&format!("image/{}", "x".repeat(300))).is_err());
    }

    #[test]
    fn scope_shares_of_a_large_pool_add_up_to_no_more_than_the_pool() {
        let pool = Pools::new(1000, SharedMemory::new(1 << 30));
        assert_eq!((pool.slots_total, pool.totals), (1000, (1256, 8000)));
        // Four tenants at a quarter each: together at most the pool, of
        // every kind of permit (two memories a slot of a share would be
        // 2,000 memory permits of the pool's 1,256).
        let lookups = || Arc::new(Semaphore::new(1));
        let share = pool.share(0.25, SharedMemory::new(1 << 28), lookups());
        assert_eq!((share.slots_total, share.totals), (250, (314, 2000)));
        assert!(4 * share.totals.0 <= pool.totals.0);
        // A share too small for a permit still gets one of each.
        let tiny = pool.share(0.0001, SharedMemory::new(1 << 20), lookups());
        assert_eq!((tiny.slots_total, tiny.totals), (1, (1, 1)));
    }

    #[test]
    fn work_ahead_of_calls_leaves_a_quarter_of_every_permit_after_its_own() {
        let pool = Pools::new(16, SharedMemory::new(1 << 30));
        // 16 slots, 32 memories, 128 tables: a quarter is 4, 8 and 32.
        assert!(pool.quarter_free((4, 0)));
        let _held = pool.try_acquire((20, 0)).unwrap();
        // 12 memories free: one of 4 would leave 8, the quarter; one of 5
        // would dip into it.
        assert!(pool.quarter_free((4, 0)));
        assert!(!pool.quarter_free((5, 0)));
        assert!(!pool.quarter_free((0, 97)));
    }
    use crate::caps::limits::MemoryBudget;

    #[test]
    fn swap_enabled_after_start_stops_every_call_under_pagemap_resets() {
        let d = tempfile::tempdir().unwrap();
        let swaps = d.path().join("swaps");
        let header = "Filename\tType\tSize\tUsed\tPriority\n";
        std::fs::write(&swaps, header).unwrap();
        let w = SwapWatch::new(swaps.clone(), true);
        assert!(w.pagemap && !w.check() && w.admit().is_ok());
        // `swapon` while serving: the next check stops every call.
        std::fs::write(&swaps, format!("{header}/swapfile\tfile\t1048572\t0\t-2\n")).unwrap();
        assert!(w.check());
        let Err(CallErrorKind::Internal { message }) = w.admit() else {
            panic!("a call ran with swap under pagemap resets");
        };
        assert!(message.contains("restart toolhost"), "{message}");
        // And it stays stopped, even if swap goes away again: pages may
        // already be out.
        std::fs::write(&swaps, header).unwrap();
        assert!(w.check() && w.admit().is_err());
        // Swap at start: no pagemap resets, so swap is harmless.
        std::fs::write(&swaps, format!("{header}/swapfile\tfile\t1048572\t0\t-2\n")).unwrap();
        let w = SwapWatch::new(swaps.clone(), true);
        assert!(!w.pagemap && !w.check() && w.admit().is_ok());
        // Unreadable: assume swap (no pagemap resets).
        let w = SwapWatch::new(d.path().join("missing"), true);
        assert!(!w.pagemap && w.admit().is_ok());
    }

    /// The ticker holds the engine weakly and ends with the sandbox: an
    /// hour's tick (an embedder's, or the tests') no longer keeps a dropped
    /// engine, its pool's reservations and its thread for the hour.
    #[test]
    fn a_dropped_sandbox_lets_its_engine_go_whatever_the_tick() {
        let sandbox = small_sandbox(std::time::Duration::from_secs(3600));
        let engine = sandbox.engine.weak();
        drop(sandbox);
        assert!(
            engine.upgrade().is_none(),
            "something still holds the engine"
        );
    }

    /// What holds the engine past its sandbox (a background refill) still
    /// has its epoch ticked: a guest that loops is still stopped at its
    /// deadline.
    #[test]
    fn the_ticker_ticks_for_whatever_outlives_its_sandbox() {
        let sandbox = small_sandbox(std::time::Duration::from_millis(1));
        let engine = sandbox.engine.clone();
        drop(sandbox);
        let stopped = within_20s(
            "the guest was never stopped: nothing ticks the epoch",
            move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let wasm = wat::parse_str(r#"(module (func (export "spin") (loop br 0)))"#);
                    let module = wasmtime::Module::new(&engine, wasm.unwrap()).unwrap();
                    let mut store = Store::new(&engine, ());
                    store.set_fuel(u64::MAX).unwrap();
                    store.set_epoch_deadline(1);
                    let instance = wasmtime::Instance::new_async(&mut store, &module, &[])
                        .await
                        .unwrap();
                    let spin = instance
                        .get_typed_func::<(), ()>(&mut store, "spin")
                        .unwrap();
                    spin.call_async(&mut store, ()).await.is_err()
                })
            },
        );
        assert!(stopped);
    }

    /// A sandbox of an 8-slot pool, no cache, ticking every `tick`.
    fn small_sandbox(tick: std::time::Duration) -> Sandbox {
        Sandbox::new(EngineConfig {
            max_instances: 8,
            cache_dir: None,
            epoch_tick: tick,
            ..EngineConfig::default()
        })
        .unwrap()
    }

    /// `f`'s answer, run on a thread of its own: one that never answers
    /// fails the test (saying `hung`) instead of hanging it.
    fn within_20s<T: Send + 'static>(hung: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || drop(tx.send(f())));
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{hung}"))
    }

    #[test]
    fn a_reload_resizes_a_scopes_memory_share_but_never_empties_it() {
        let config = EngineConfig {
            max_instances: 8,
            max_memory: 64 << 20,
            cache_dir: None,
            ..EngineConfig::default()
        };
        let sandbox = Sandbox::new(config).unwrap();
        let scope = crate::catalog::Scope::new("t");
        let first = sandbox.scope_share(&scope, 0.5);
        assert_eq!(first.memory.limit(), 32 << 20);
        // A call of the scope holds 20 MiB of it, then a reload.
        let call = MemoryBudget::new(64 << 20, Some(sandbox.pool.memory.clone()));
        assert!(call.join_scope(&first.memory));
        assert!(call.charge(20 << 20));
        sandbox.reset_scope_shares();
        // The new share is the same bound, resized: the running call's 20
        // MiB still count, so 16 more do not fit a share of 32.
        let second = sandbox.scope_share(&scope, 0.5);
        assert!(Arc::ptr_eq(&first.memory, &second.memory));
        let next = MemoryBudget::new(64 << 20, Some(sandbox.pool.memory.clone()));
        assert!(next.join_scope(&second.memory));
        assert!(!next.charge(16 << 20));
        assert!(next.charge(12 << 20));
        // Shrunk below what is held: growth is refused until calls end.
        sandbox.reset_scope_shares();
        let small = sandbox.scope_share(&scope, 0.25);
        assert_eq!(small.memory.limit(), 16 << 20);
        assert!(!call.charge(1));
        drop((call, next, first, second, small));
        // Nothing holds it any more: a fresh share, empty.
        sandbox.reset_scope_shares();
        let fresh = sandbox.scope_share(&scope, 0.5);
        let call = MemoryBudget::new(64 << 20, None);
        assert!(call.join_scope(&fresh.memory));
        assert!(call.charge(32 << 20));
    }

    /// The review's case: a reload gave each scope a fresh share of the
    /// pool's slots beside the one its running calls held, so a tenant
    /// that made the host reload held most of the pool. Now the share is
    /// the same, resized: held slots still count after a reload, a smaller
    /// share takes effect as they come back, and one nothing holds is
    /// made anew.
    #[test]
    fn a_reload_keeps_a_scopes_pool_share_while_its_calls_run() {
        let sandbox = small_sandbox(EngineConfig::default().epoch_tick);
        let scope = crate::catalog::Scope::new("t");
        let first = sandbox.scope_share(&scope, 0.5);
        assert_eq!(first.slots_total, 4);
        // Three calls hold three of its four slots, then a reload.
        let running = first.slots.clone().try_acquire_many_owned(3).unwrap();
        drop(first);
        sandbox.reset_scope_shares();
        let second = sandbox.scope_share(&scope, 0.5);
        assert_eq!(
            second.slots.available_permits(),
            1,
            "a fresh share beside the held one"
        );
        // Shrunk to a quarter (2 slots) while 3 are held: none free now,
        // and the share is 2 once they are back, at its next call (no
        // reload needed: the fix review).
        drop(second);
        sandbox.reset_scope_shares();
        let small = sandbox.scope_share(&scope, 0.25);
        assert_eq!(small.slots.available_permits(), 0);
        drop(running);
        let small = sandbox.scope_share(&scope, 0.25);
        assert_eq!((small.slots.available_permits(), small.slots_total), (2, 2));
        // Another scope has its own.
        let other = sandbox.scope_share(&crate::catalog::Scope::new("u"), 0.5);
        assert_eq!(other.slots.available_permits(), 4);
    }

    #[test]
    fn a_reload_keeps_a_scopes_lookup_share_while_its_lookups_run() {
        let sandbox = small_sandbox(EngineConfig::default().epoch_tick);
        let scope = crate::catalog::Scope::new("t");
        let first = sandbox.scope_share(&scope, 0.5);
        let lookups = first.lookups.clone().unwrap();
        assert_eq!(lookups.available_permits(), 16, "half of the 32");
        // Lookups its calls gave up on hold all 16, then a reload.
        let abandoned = lookups.clone().try_acquire_many_owned(16).unwrap();
        drop(first);
        sandbox.reset_scope_shares();
        let second = sandbox.scope_share(&scope, 0.5);
        let again = second.lookups.clone().unwrap();
        assert!(
            Arc::ptr_eq(&lookups, &again),
            "a fresh share beside the held one"
        );
        assert_eq!(again.available_permits(), 0);
        // Shrunk while all are held: smaller once a resize finds them free.
        sandbox.reset_scope_shares();
        drop(sandbox.scope_share(&scope, 0.25));
        drop(abandoned);
        sandbox.reset_scope_shares();
        drop(sandbox.scope_share(&scope, 0.25));
        assert_eq!(again.available_permits(), 8);
        // Another scope has its own.
        let other = sandbox.scope_share(&crate::catalog::Scope::new("u"), 0.5);
        assert_eq!(other.lookups.unwrap().available_permits(), 16);
    }

    #[test]
    fn a_transfer_from_the_guest_is_bounded_by_the_calls_memory() {
        // The default limits (64 MiB of memory, 1 MiB of output): the
        // memory, half wasmtime's default.
        assert_eq!(hostcall_fuel(&caps::Limits::default()), 64 << 20);
        // Not 40 bytes for each byte of max-output (10 MiB here): what the
        // call may hold.
        let small = caps::Limits::default()
            .with_memory(2 << 20)
            .with_max_output(256 << 10);
        assert_eq!(hostcall_fuel(&small), 2 << 20);
        let big = caps::Limits::default().with_memory(4 << 30);
        assert_eq!(hostcall_fuel(&big), 128 << 20, "never above the ceiling");
    }

    #[test]
    fn empty_blocks_weigh_what_their_json_would() {
        use bindings::v2::toolhost::tool::types as wit;
        let r = wit_tool::CallResult {
            content: (0..300_000)
                .map(|_| wit::Content::Text(String::new()))
                .collect(),
            structured: None,
        };
        assert!(
            wit_result_size(&r) > 1 << 20,
            "300,000 empty blocks are not free"
        );
    }

    /// A component file swapped for a FIFO or a device after its manifest
    /// was checked is refused by the load itself, at once (the open of a
    /// FIFO without a writer would wait forever; `/dev/zero` never ends).
    #[test]
    fn a_load_reads_only_a_regular_file() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo.wasm");
        let path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let zero = d.path().join("zero.wasm");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let engine = Engine::default();
        let cache = Arc::new(cache::Cache::new(&d.path().join("cache"), &engine).unwrap());
        for path in [fifo, zero] {
            for cached in [true, false] {
                let (engine, cache, p) = (engine.clone(), cache.clone(), path.clone());
                let hung = format!("{} held the load", path.display());
                let got = within_20s(&hung, move || {
                    compile(&engine, cached.then_some(&*cache), &p, [0; 32]).err()
                });
                match got {
                    Some(LoadErrorKind::ReadComponent { source, .. }) => {
                        assert!(
                            source.to_string().contains("not a regular file"),
                            "{source}"
                        )
                    }
                    Some(e) => panic!("{}: {e}", path.display()),
                    None => panic!("{} loaded", path.display()),
                }
            }
        }
    }

    /// The streamed digest is the digest of the whole file, across the
    /// buffer's boundaries (a file of several buffers and a remainder),
    /// and of an empty one.
    #[test]
    fn a_streamed_digest_is_the_files_digest() {
        let d = tempfile::tempdir().unwrap();
        for len in [0usize, 1, (128 << 10) * 3 + 17] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let path = d.path().join(format!("f{len}"));
            std::fs::write(&path, &bytes).unwrap();
            let mut file = std::fs::File::open(&path).unwrap();
            let want: [u8; 32] = Sha256::digest(&bytes).into();
            assert_eq!(sha256_streamed(&mut file).unwrap(), want, "{len} bytes");
        }
    }

    #[test]
    fn describe_is_bounded() {
        let def = |name: String| wit_tool::ToolDef {
            name,
            title: None,
            description: String::new(),
            input_schema: r#"{"type":"object"}"#.into(),
            output_schema: None,
            annotations: bindings::v2::toolhost::tool::types::Annotations {
                title: None,
                read_only: None,
                destructive: None,
                idempotent: None,
                open_world: None,
            },
            task_support: bindings::v2::toolhost::tool::types::TaskSupport::Forbidden,
        };
        let many: Vec<_> = (0..MAX_TOOLS + 1).map(|i| def(format!("t{i}"))).collect();
        assert!(matches!(
            convert_defs(many),
            Err(LoadErrorKind::Describe { .. })
        ));
        let mut big = def("big".into());
        big.input_schema = format!(
            r#"{{"type":"object","description":"{}"}}"#,
            "x".repeat(MAX_SCHEMA_BYTES)
        );
        assert!(matches!(
            convert_defs(vec![big]),
            Err(LoadErrorKind::BadToolDef { .. })
        ));
        // A title, the tool's or its annotations', past a resource title's
        // bound (a 60 MiB one was held and copied into every listing).
        let mut titled = def("titled".into());
        titled.title = Some("t".repeat(crate::served::MAX_NAME + 1));
        assert!(matches!(
            convert_defs(vec![titled]),
            Err(LoadErrorKind::BadToolDef { reason, .. }) if reason.contains("tool title")
        ));
        let mut titled = def("titled".into());
        titled.annotations.title = Some("t".repeat(crate::served::MAX_NAME + 1));
        assert!(matches!(
            convert_defs(vec![titled]),
            Err(LoadErrorKind::BadToolDef { reason, .. }) if reason.contains("tool title")
        ));
        let mut titled = def("titled".into());
        titled.title = Some("t".repeat(crate::served::MAX_NAME));
        assert!(convert_defs(vec![titled]).is_ok());
        let twice = vec![def("a".into()), def("a".into())];
        assert!(matches!(
            convert_defs(twice),
            Err(LoadErrorKind::BadToolDef { .. })
        ));
        // Each within its bounds, together past the component's: 256 tools
        // of 17 KiB of schemas and description each (4.25 MiB).
        let wide = |i: usize| {
            let mut d = def(format!("t{i}"));
            d.description = "d".repeat(1 << 10);
            d.input_schema = format!(
                r#"{{"type":"object","description":"{}"}}"#,
                "x".repeat(16 << 10)
            );
            d
        };
        match convert_defs((0..MAX_TOOLS).map(wide).collect()) {
            Err(LoadErrorKind::Describe { reason }) => {
                assert!(reason.contains("together take more than 4 MiB"), "{reason}")
            }
            other => panic!("{:?}", other.map(|d| d.len())),
        }
        assert_eq!(
            convert_defs((0..200).map(wide).collect()).unwrap().len(),
            200
        );
    }
}
