//! The `limits` unit: how much of the machine one call may use.
//!
//! - parse: `[limits]` of the manifest (timeout, memory, fuel, max-output,
//!   max-concurrency);
//! - narrow: each limit is the minimum of the manifest's and every operator
//!   cap (host config, tenant);
//! - prepare: nothing to open; the narrowed `Limits` is kept on the
//!   component;
//! - apply: a [`Limiter`] per call, fuel, the table's handle cap;
//! - enforce: the limiter refuses growth past the call's memory (all linear
//!   memories of the call together) and table budget, and remembers that it
//!   said no so the error can name the limit. Every charge is also made to
//!   the memory all calls share ([`SharedMemory`], `[engine] max-memory`)
//!   and to the call's scope's share of it, so that calls which each stay
//!   under their own limit cannot together take the host's memory.
//!
//! Deadlines are enforced around the call (see `sandbox`), not here.

use crate::diagnostic::Collector;
use crate::manifest::schema;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

/// Per-call limits. Every field has a default; the operator may lower any
/// of them, never raise.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Wall-clock deadline of one call, queueing for a slot included.
    pub timeout: Duration,
    /// Linear memory the call may use, all of its memories together, in
    /// bytes. Host-side buffers held for the call (wasi:http fields) are
    /// charged against it as well.
    pub memory: u64,
    /// Deterministic CPU budget (wasm fuel units); `None` means unmetered
    /// (the timeout still applies).
    pub fuel: Option<u64>,
    /// Bytes of result a call may return, weighed as serialized.
    pub max_output: u64,
    /// Calls of this component that may run at once; later calls wait.
    pub max_concurrency: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(10),
            memory: 64 << 20,
            fuel: None,
            max_output: 1 << 20,
            max_concurrency: 16,
        }
    }
}

impl Limits {
    /// Set the timeout.
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
    /// Set the memory limit in bytes.
    pub fn with_memory(mut self, bytes: u64) -> Self {
        self.memory = bytes;
        self
    }
    /// Set (or clear) the fuel budget.
    pub fn with_fuel(mut self, fuel: Option<u64>) -> Self {
        self.fuel = fuel;
        self
    }
    /// Set the result size limit in bytes.
    pub fn with_max_output(mut self, bytes: u64) -> Self {
        self.max_output = bytes;
        self
    }
    /// Set how many calls of one component may run at once.
    pub fn with_max_concurrency(mut self, n: u32) -> Self {
        self.max_concurrency = n;
        self
    }

    /// The intersection: each limit the smaller of the two.
    pub fn min(&self, other: &Limits) -> Limits {
        Limits {
            timeout: self.timeout.min(other.timeout),
            memory: self.memory.min(other.memory),
            fuel: match (self.fuel, other.fuel) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            max_output: self.max_output.min(other.max_output),
            max_concurrency: self.max_concurrency.min(other.max_concurrency),
        }
    }
}

/// The operator's caps on limits (host config `[limits]`, a tenant's
/// overrides): the largest value any tool may have, plus per-call host
/// resources no manifest can ask for.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LimitCaps {
    /// The largest limits any tool may have.
    pub max: Limits,
    /// Resource handles (streams, descriptors, HTTP fields, pollables…) one
    /// call may hold at once.
    pub handles: usize,
    /// The fraction of the sandbox pool one component may hold at once
    /// (`0 < share <= 1`): no tool can starve the others of slots. A
    /// scope's calls together hold at most this fraction of the pool, of
    /// `max-memory` and of the process's 32 name lookups.
    pub pool_share: f64,
}

impl Default for LimitCaps {
    fn default() -> Self {
        LimitCaps {
            max: Limits {
                timeout: Duration::from_secs(300),
                memory: 1 << 30,
                fuel: None,
                max_output: 64 << 20,
                max_concurrency: 128,
            },
            handles: 4096,
            pool_share: 0.5,
        }
    }
}

impl LimitCaps {
    /// Both caps at once: the smaller of each.
    pub fn intersect(&self, other: &LimitCaps) -> LimitCaps {
        LimitCaps {
            max: self.max.min(&other.max),
            handles: self.handles.min(other.handles),
            pool_share: self.pool_share.min(other.pool_share),
        }
    }

    /// A manifest's limits narrowed by these caps, with concurrency bounded
    /// by this cap's share of a pool of `pool_slots`.
    pub(crate) fn narrow(&self, requested: &Limits, pool_slots: u32) -> Limits {
        let mut l = requested.min(&self.max);
        let share = ((pool_slots as f64) * self.pool_share).floor() as u32;
        l.max_concurrency = l.max_concurrency.min(share.max(1));
        l
    }

    /// The most calls of one component that may run at once, once its
    /// shape is known: `max_concurrency`, further bounded so that its calls
    /// together hold at most this cap's share of the pool's memory and
    /// table permits (`memories` and `tables` in all, `weight` per call).
    /// Without it a component with several memories (or tables) takes
    /// every permit with a few calls, and every other call waits for its
    /// deadline while holding a slot.
    pub(crate) fn concurrency_for(
        &self,
        limits: &Limits,
        weight: (u32, u32),
        pool: (u32, u32),
    ) -> u32 {
        let by = |per_call: u32, total: u32| -> u32 {
            if per_call == 0 {
                return u32::MAX;
            }
            let share = (f64::from(total) * self.pool_share).floor();
            ((share / f64::from(per_call)).floor() as u32).max(1)
        };
        limits
            .max_concurrency
            .min(by(weight.0, pool.0))
            .min(by(weight.1, pool.1))
            .max(1)
    }
}

/// Read `[limits]`; every problem is recorded, the defaults stand in.
pub(crate) fn parse(raw: &schema::Limits, cx: &mut Collector<'_>) -> Limits {
    let mut limits = Limits::default();
    if let Some(t) = &raw.timeout {
        match parse_duration(t.get_ref()) {
            Ok(d) if d.is_zero() => {
                cx.error(Some(t.span()), "timeout must be greater than zero", None)
            }
            Ok(d) if d > MAX_DURATION => cx.error(
                Some(t.span()),
                format!("timeout `{}` is longer than a day", t.get_ref()),
                Some("use a timeout of at most `24h`".into()),
            ),
            Ok(d) => limits.timeout = d,
            Err(m) => cx.error(Some(t.span()), m, None),
        }
    }
    if let Some(m) = &raw.memory {
        match parse_size(m.get_ref()) {
            Ok(n) if n < (1 << 16) => cx.error(
                Some(m.span()),
                format!("memory `{}` is below one wasm page (64 KiB)", m.get_ref()),
                None,
            ),
            Ok(n) if n > MAX_MEMORY => cx.error(
                Some(m.span()),
                format!(
                    "memory `{}` is over the 4 GiB a 32-bit memory can address",
                    m.get_ref()
                ),
                None,
            ),
            Ok(n) => limits.memory = n,
            Err(e) => cx.error(Some(m.span()), e, None),
        }
    }
    if let Some(f) = &raw.fuel {
        if *f.get_ref() == 0 {
            cx.error(
                Some(f.span()),
                "fuel must be greater than zero",
                Some("omit `fuel` for unmetered CPU (the timeout still applies)".into()),
            );
        } else {
            limits.fuel = Some(*f.get_ref());
        }
    }
    if let Some(o) = &raw.max_output {
        match parse_size(o.get_ref()) {
            Ok(n) => limits.max_output = n,
            Err(e) => cx.error(Some(o.span()), e, None),
        }
    }
    if let Some(c) = &raw.max_concurrency {
        if *c.get_ref() == 0 {
            cx.error(Some(c.span()), "max-concurrency must be at least 1", None);
        } else {
            limits.max_concurrency = *c.get_ref();
        }
    }
    limits
}

/// The longest timeout a file may set: past it, deadline arithmetic could
/// overflow and no call should hold a slot that long anyway.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// The largest memory a 32-bit linear memory can address.
pub(crate) const MAX_MEMORY: u64 = 4 << 30;

/// A size as a manifest or the host config writes it: a text (`"64 MiB"`)
/// or a whole number of bytes (`65536`), read as [`parse_size`] reads text.
/// Anything else is refused where it stands, saying what would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SizeText(String);

impl std::ops::Deref for SizeText {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SizeText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for SizeText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SizeText;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(r#"a size: a number of bytes, or a text such as "64 MiB""#)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SizeText, E> {
                Ok(SizeText(v.to_owned()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SizeText, E> {
                Ok(SizeText(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<SizeText, E> {
                u64::try_from(v)
                    .map(|v| SizeText(v.to_string()))
                    .map_err(|_| E::custom(format!("a size cannot be negative ({v})")))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parse a size: `4096`, `512 KiB`, `64MiB`, `1 GB` (KB/MB/GB are powers of
/// 1000). The error says what was wrong and what would work.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: u64 = num.replace('_', "").parse().map_err(|_| {
        format!("`{s}` is not a size (try `64 MiB`, `512 KiB` or a number of bytes)")
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{s}` (use B, KiB, MiB, GiB, KB, MB or GB)"
            ));
        }
    };
    num.checked_mul(mult)
        .filter(|n| *n <= 1 << 50)
        .ok_or_else(|| format!("size `{s}` is too large"))
}

/// Parse a duration: `5s`, `250ms`, `1m 30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration ({e}; try `5s` or `250ms`)"))
}

/// Resize `sem`, which holds `total` permits in all, to `n`, in place:
/// whoever holds its permits keeps counting against it. It grows at once
/// and shrinks by the permits free now (a later resize takes the rest as
/// they come back). The new total. A scope's shares of the pool and of
/// name lookups are resized so at a reload, never replaced.
pub(crate) fn resize_permits(sem: &tokio::sync::Semaphore, total: usize, n: usize) -> usize {
    if n > total {
        sem.add_permits(n - total);
        n
    } else {
        total - sem.forget_permits(total - n)
    }
}

/// Memory that many calls hold together: the host's (`[engine]
/// max-memory`), or one scope's share of it. Calls charge it as their
/// memory grows (never a reservation up front: a call that stays small
/// leaves the room to others) and give it back when their budget goes.
#[derive(Debug)]
pub(crate) struct SharedMemory {
    /// The bound; a scope's may change on reload (its calls keep charging
    /// the same counter, so a reload never starts a scope from zero).
    limit: AtomicUsize,
    used: AtomicUsize,
    /// What the pool may keep resident between calls beside `limit` (the
    /// host's only; see [`SharedMemory::with_residue`]).
    residue: u64,
}

impl SharedMemory {
    pub(crate) fn new(limit: u64) -> Arc<SharedMemory> {
        SharedMemory::with_residue(limit, 0)
    }

    /// The host's memory: `limit` for what calls hold, and `residue`, the
    /// most the pooling allocator keeps resident in slots no call holds
    /// (pages it resets in place rather than unmaps, for speed). The
    /// residue is bounded by the engine's configuration, not charged:
    /// the host's sandboxes hold at most `limit + residue`, both reported.
    pub(crate) fn with_residue(limit: u64, residue: u64) -> Arc<SharedMemory> {
        Arc::new(SharedMemory {
            limit: AtomicUsize::new(usize::try_from(limit).unwrap_or(usize::MAX)),
            used: AtomicUsize::new(0),
            residue,
        })
    }

    /// See [`SharedMemory::with_residue`].
    pub(crate) fn residue(&self) -> u64 {
        self.residue
    }

    /// The bound, in bytes.
    pub(crate) fn limit(&self) -> u64 {
        self.limit.load(Ordering::Acquire) as u64
    }

    /// Bound it at `limit` from now on (what is held stays held).
    pub(crate) fn set_limit(&self, limit: u64) {
        self.limit.store(
            usize::try_from(limit).unwrap_or(usize::MAX),
            Ordering::Release,
        );
    }

    /// What all its calls hold now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    fn try_charge(&self, bytes: usize) -> bool {
        let limit = self.limit.load(Ordering::Acquire);
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(bytes).filter(|n| *n <= limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(bytes))
            });
    }
}

/// Which bound refused a call memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The call's own limit (`limits.memory`).
    Own,
    /// Its scope's share of the host's memory.
    Scope,
    /// The host's memory, all calls together (`[engine] max-memory`).
    Host,
}

/// The memory one call may hold: all its linear memories and what the host
/// holds for it (directory listings, `wasi:http` connections), one budget.
/// Shared (an `Arc`) between the call's [`Limiter`] and the parts of the
/// host that hold memory for the call outside the store's reach (the
/// network gate's connections run on tasks of their own, so charges and
/// releases may come from two threads). What it holds is held in the
/// host's [`SharedMemory`] too, and in its scope's once the call has one,
/// until the budget goes.
pub(crate) struct MemoryBudget {
    /// Bytes the call may hold.
    limit: usize,
    /// What it holds, and the scope it has joined: one lock, so that a
    /// charge or release racing [`MemoryBudget::join_scope`] is counted in
    /// the scope exactly once. Taken only when memory grows or host memory
    /// is charged, never per instruction.
    held: std::sync::Mutex<Held>,
    /// The most it has held (for the audit log).
    peak: AtomicUsize,
    /// Which bound refused the latest charge it could not take back
    /// quietly, if one did (a trap is then reported as that limit, not a
    /// bare crash): 0 none, else a [`Refusal`] + 1.
    denied: AtomicU8,
    /// The host's memory.
    host: Option<Arc<SharedMemory>>,
}

/// Host memory below which [`MemoryBudget::hold_or_refuse`] charges
/// nothing: part of each call's fixed host state.
pub(crate) const SMALL_HOLD: usize = 64 << 10;

/// Host memory charged to a call's [`MemoryBudget`] until dropped (see
/// [`MemoryBudget::hold`]).
pub(crate) struct HostCharge {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Drop for HostCharge {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

#[derive(Default)]
struct Held {
    used: usize,
    /// The scope's share, set when the sandbox is handed to a scope's
    /// call (a sandbox prepared ahead has none until then).
    scope: Option<Arc<SharedMemory>>,
}

impl MemoryBudget {
    pub(crate) fn new(limit: u64, host: Option<Arc<SharedMemory>>) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            held: Default::default(),
            peak: AtomicUsize::new(0),
            denied: AtomicU8::new(0),
            host,
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes it holds now.
    pub(crate) fn used(&self) -> usize {
        self.held().used
    }

    /// Charge `bytes`; false, and nothing charged, if that passes a bound
    /// (remembered: a trap that follows is reported as that bound).
    pub(crate) fn charge(&self, bytes: usize) -> bool {
        match self.try_charge(bytes) {
            Ok(()) => true,
            Err(refusal) => {
                self.denied.store(refusal as u8 + 1, Ordering::Release);
                false
            }
        }
    }

    /// Charge `bytes` as [`MemoryBudget::charge`] does, but a refusal is
    /// not remembered as the call running out of memory (the caller answers
    /// it with an error the guest can handle, e.g. `connection-limit-reached`,
    /// and a later trap must not be reported as the memory limit).
    pub(crate) fn charge_quietly(&self, bytes: usize) -> bool {
        self.try_charge(bytes).is_ok()
    }

    /// The call's own limit first, then its scope's share, then the host:
    /// all or nothing.
    fn try_charge(&self, bytes: usize) -> Result<(), Refusal> {
        let mut held = self.held();
        let after = held
            .used
            .checked_add(bytes)
            .filter(|n| *n <= self.limit)
            .ok_or(Refusal::Own)?;
        if let Some(scope) = &held.scope
            && !scope.try_charge(bytes)
        {
            return Err(Refusal::Scope);
        }
        if let Some(host) = &self.host
            && !host.try_charge(bytes)
        {
            if let Some(scope) = &held.scope {
                scope.release(bytes);
            }
            return Err(Refusal::Host);
        }
        held.used = after;
        self.peak.fetch_max(after, Ordering::AcqRel);
        Ok(())
    }

    /// Charge `bytes` quietly (as [`MemoryBudget::charge_quietly`]) for
    /// as long as the returned charge lives: host memory held by something
    /// that goes away on its own (a connection's task, a stream the guest
    /// drops) gives itself back when it does.
    pub(crate) fn hold(self: &Arc<Self>, bytes: usize) -> Option<HostCharge> {
        self.charge_quietly(bytes).then(|| HostCharge {
            budget: self.clone(),
            bytes,
        })
    }

    /// Charge `bytes` of host memory the call's own work makes (its result
    /// turned into JSON) for as long as the returned charge lives, or the
    /// error the bound that refused it makes (the call's own limit, or a
    /// shared one: not the tool's fault). Nothing is charged below
    /// [`SMALL_HOLD`], a call's fixed slack: a small result costs no lock.
    pub(crate) fn hold_or_refuse(
        self: &Arc<Self>,
        bytes: usize,
    ) -> Result<Option<HostCharge>, crate::error::CallErrorKind> {
        use crate::error::CallErrorKind;
        if bytes < SMALL_HOLD {
            return Ok(None);
        }
        match self.try_charge(bytes) {
            Ok(()) => Ok(Some(HostCharge {
                budget: self.clone(),
                bytes,
            })),
            Err(Refusal::Own) => Err(CallErrorKind::MemoryExhausted {
                limit: self.limit as u64,
            }),
            Err(by) => {
                let shared = match by {
                    Refusal::Scope => self.held().scope.as_ref().map_or(0, |m| m.limit()),
                    _ => self.host.as_ref().map_or(0, |m| m.limit()),
                };
                Err(CallErrorKind::SharedMemoryExhausted {
                    limit: shared,
                    share: by == Refusal::Scope,
                })
            }
        }
    }

    /// Give back what [`MemoryBudget::charge`] charged.
    pub(crate) fn release(&self, bytes: usize) {
        let mut held = self.held();
        let given = held.used.min(bytes);
        held.used -= given;
        self.release_shared(&held, given);
    }

    fn release_shared(&self, held: &Held, bytes: usize) {
        if let Some(scope) = &held.scope {
            scope.release(bytes);
        }
        if let Some(host) = &self.host {
            host.release(bytes);
        }
    }

    /// Charge, from now on, `scope`'s share of the host's memory too, and
    /// at once what the call holds already (a sandbox prepared ahead holds
    /// its instantiated memory before its call's scope is known). False,
    /// and no scope joined, if that does not fit the share: the caller
    /// must not run the call in this sandbox (it builds a fresh one, whose
    /// memory the share then bounds as it grows). A second scope is
    /// refused the same way.
    #[must_use]
    pub(crate) fn join_scope(&self, scope: &Arc<SharedMemory>) -> bool {
        let mut held = self.held();
        if held.scope.is_some() || !scope.try_charge(held.used) {
            return false;
        }
        held.scope = Some(scope.clone());
        true
    }

    /// Whether it has joined `scope` already.
    pub(crate) fn in_scope(&self, scope: &Arc<SharedMemory>) -> bool {
        self.held()
            .scope
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, scope))
    }

    /// Which bound refused it memory last, if one did, and that bound in
    /// bytes.
    pub(crate) fn refused(&self) -> Option<(Refusal, u64)> {
        let shared = |m: Option<&Arc<SharedMemory>>| m.map_or(0, |m| m.limit());
        match self.denied.load(Ordering::Acquire) {
            0 => None,
            1 => Some((Refusal::Own, self.limit as u64)),
            2 => Some((Refusal::Scope, shared(self.held().scope.as_ref()))),
            _ => Some((Refusal::Host, shared(self.host.as_ref()))),
        }
    }
}

impl Drop for MemoryBudget {
    /// The call's memory is gone with its store (and the host's buffers
    /// for it with the last holder of the budget): the shared bounds get
    /// it back.
    fn drop(&mut self) {
        let held = std::mem::take(self.held.get_mut().unwrap_or_else(|e| e.into_inner()));
        self.release_shared(&held, held.used);
    }
}

/// Caps linear memory and tables of one call, all of its memories and
/// tables together (memory in the call's [`MemoryBudget`], shared with
/// what the host holds for the call), and remembers that it said no so a
/// trap can be reported as "memory limit" rather than a bare crash.
pub(crate) struct Limiter {
    /// The call's memory, linear and host-side.
    budget: Arc<MemoryBudget>,
    /// Elements all tables of the call may reach together.
    table_elements: usize,
    tables_used: usize,
    /// What the last approved `memory_growing` charged: given back if
    /// wasmtime then fails the growth (`memory_grow_failed`), so that a
    /// guest cannot hold charges for memory it never got.
    pending: usize,
    /// Instances, memories and tables one call may create (the pool's
    /// per-component shape): a component that wants more fails at load.
    pub(crate) instances: usize,
    pub(crate) memories: usize,
    pub(crate) tables: usize,
}

impl Limiter {
    pub(crate) fn new(
        memory: u64,
        host: Option<Arc<SharedMemory>>,
        shape: crate::sandbox::PoolShape,
    ) -> Limiter {
        Limiter {
            budget: MemoryBudget::new(memory, host),
            pending: 0,
            table_elements: 1_000_000,
            tables_used: 0,
            instances: shape.core_instances,
            memories: shape.memories,
            tables: shape.tables,
        }
    }

    /// The call's memory budget, for host parts that hold memory for it.
    pub(crate) fn budget(&self) -> Arc<MemoryBudget> {
        self.budget.clone()
    }

    /// The most memory (linear and host-side) the call has held at once.
    pub(crate) fn peak(&self) -> usize {
        self.budget.peak.load(Ordering::Acquire)
    }

    /// The memory (linear and host-side) the call holds now.
    pub(crate) fn used(&self) -> usize {
        self.budget.used()
    }

    /// Which bound refused the call memory, if one did, and its size.
    pub(crate) fn refused_memory(&self) -> Option<(Refusal, u64)> {
        self.budget.refused()
    }

    /// Whether a shared bound (the scope's share, the host's
    /// `max-memory`), not the call's own limit, refused it memory.
    pub(crate) fn refused_shared(&self) -> bool {
        matches!(
            self.refused_memory(),
            Some((Refusal::Scope | Refusal::Host, _))
        )
    }

    /// Charge `bytes` of host-side memory held for the call: it counts
    /// against the same budget as linear memory. False, and nothing
    /// charged, if it does not fit. (The call path holds a
    /// [`HostCharge`] instead; the tests charge this way.)
    #[cfg(test)]
    pub(crate) fn charge_host(&mut self, bytes: usize) -> bool {
        self.budget.charge(bytes)
    }

    /// Give back host-side memory charged with [`Limiter::charge_host`].
    #[cfg(test)]
    pub(crate) fn release_host(&mut self, bytes: usize) {
        self.budget.release(bytes)
    }
}

/// The bytes of the pages `elements` table elements take in wasmtime's
/// pool (a function reference is one pointer; a table's memory is
/// resident by the page).
fn table_pages(elements: usize) -> usize {
    elements
        .saturating_mul(8)
        .div_ceil(4096)
        .saturating_mul(4096)
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // The previous growth, if any, went through.
        self.pending = 0;
        // Past the memory's own maximum wasmtime fails the growth after
        // asking: refuse it here, and charge nothing, rather than charge
        // memory that will never exist.
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        let bytes = desired.saturating_sub(current);
        let ok = self.budget.charge(bytes);
        if ok {
            self.pending = bytes;
        }
        Ok(ok)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.budget.release(std::mem::take(&mut self.pending));
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Past the table's own maximum wasmtime fails the growth after
        // asking: refuse it here and charge nothing (as `memory_growing`),
        // so that an approved growth cannot fail (review).
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        let Some(n) = self
            .tables_used
            .checked_add(desired.saturating_sub(current))
            .filter(|n| *n <= self.table_elements)
        else {
            return Ok(false);
        };
        // A table's elements are memory the call can make resident
        // (`table.fill`), up to 160 KiB a table in the pool: charged like
        // linear memory, by the page, so that they count against
        // `max-memory` too, not only the pool's bound of what idle slots
        // keep (found by review). Called for a table's initial size at
        // instantiation as well as for `table.grow`.
        let bytes = table_pages(desired).saturating_sub(table_pages(current));
        if !self.budget.charge(bytes) {
            return Ok(false);
        }
        self.tables_used = n;
        Ok(true)
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        // Nothing is given back: past the maximum check above, wasmtime
        // fails a growth only without asking first (one that overflows
        // the index type), and a refund then would be of an earlier growth
        // that went through (found by review). A charge never refunded is
        // the call's until it ends.
        Ok(())
    }

    fn instances(&self) -> usize {
        self.instances
    }
    fn memories(&self) -> usize {
        self.memories
    }
    fn tables(&self) -> usize {
        self.tables
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn a_component_with_many_memories_or_tables_gets_fewer_calls_at_once() {
        let caps = LimitCaps {
            max: Limits::default(),
            handles: 10,
            pool_share: 0.5,
        };
        let l = Limits::default().with_max_concurrency(64);
        // A pool of 128 slots: 256 memory and 1024 table permits.
        let pool = (256, 1024);
        // One memory, a few tables: the manifest's number stands.
        assert_eq!(caps.concurrency_for(&l, (1, 2), pool), 64);
        // Four memories a call: half of 256 permits is 32 calls.
        assert_eq!(caps.concurrency_for(&l, (4, 0), pool), 32);
        // Sixteen tables a call: half of 1024 is 32 calls.
        assert_eq!(caps.concurrency_for(&l, (1, 16), pool), 32);
        // Heavier than the whole share: still one call at a time.
        assert_eq!(caps.concurrency_for(&l, (300, 0), pool), 1);
        // Never more than asked.
        let few = Limits::default().with_max_concurrency(2);
        assert_eq!(caps.concurrency_for(&few, (4, 0), pool), 2);
    }

    #[test]
    fn narrowing_takes_the_smaller_of_each_and_a_pool_share() {
        let caps = LimitCaps {
            max: Limits::default()
                .with_timeout(Duration::from_secs(5))
                .with_fuel(Some(1_000)),
            handles: 10,
            pool_share: 0.25,
        };
        let asked = Limits::default()
            .with_timeout(Duration::from_secs(60))
            .with_memory(1 << 20)
            .with_fuel(None)
            .with_max_concurrency(100);
        let l = caps.narrow(&asked, 16);
        assert_eq!(l.timeout, Duration::from_secs(5));
        assert_eq!(l.memory, 1 << 20);
        assert_eq!(
            l.fuel,
            Some(1_000),
            "an unmetered tool is metered by the cap"
        );
        assert_eq!(l.max_concurrency, 4, "a quarter of 16 slots");
        assert_eq!(caps.narrow(&asked, 1).max_concurrency, 1);
    }

    #[test]
    fn memory_is_one_budget_for_every_memory_of_the_call() {
        let shape = crate::sandbox::PoolShape::default();
        let mut l = Limiter::new(4 << 20, None, shape);
        assert!(l.memory_growing(0, 3 << 20, None).unwrap());
        // A second memory of the same call shares the budget.
        assert!(!l.memory_growing(0, 2 << 20, None).unwrap());
        assert_eq!(l.refused_memory(), Some((Refusal::Own, 4 << 20)));
        assert!(l.memory_growing(0, 1 << 20, None).unwrap());
        assert!(!l.charge_host(1));
    }

    #[test]
    fn table_elements_are_charged_by_the_page_and_never_past_the_maximum() {
        let shape = crate::sandbox::PoolShape::default();
        let host = SharedMemory::new(1 << 20);
        let mut l = Limiter::new(1 << 20, Some(host.clone()), shape);
        // One element takes a page; 64 Ki elements 512 KiB, of the call's
        // and the host's memory.
        assert!(l.table_growing(0, 1, Some(1 << 20)).unwrap());
        assert_eq!(l.used(), 4096);
        assert!(l.table_growing(1, 64 << 10, Some(1 << 20)).unwrap());
        assert_eq!((l.used(), host.used()), (512 << 10, 512 << 10));
        // Past the table's maximum: refused, nothing charged, and not
        // reported as running out of memory.
        assert!(!l.table_growing(64 << 10, 70 << 10, Some(66 << 10)).unwrap());
        assert_eq!((l.used(), l.refused_memory()), (512 << 10, None));
        // Another 96 Ki would pass the call's 1 MiB: refused, as memory.
        assert!(!l.table_growing(64 << 10, 160 << 10, None).unwrap());
        assert_eq!(l.refused_memory(), Some((Refusal::Own, 1 << 20)));
        // A growth wasmtime fails without asking (an index overflow) gives
        // back nothing: the earlier growth's charge stays.
        l.table_grow_failed(wasmtime::Error::msg("overflow"))
            .unwrap();
        assert_eq!((l.used(), host.used()), (512 << 10, 512 << 10));
    }

    #[test]
    fn calls_under_their_own_limits_cannot_together_pass_the_hosts() {
        let shape = crate::sandbox::PoolShape::default();
        let host = SharedMemory::new(10 << 20);
        let scope = SharedMemory::new(6 << 20);
        // A call with no scope (a `describe`, say) holds 2 MiB of the 10.
        let mut other = Limiter::new(8 << 20, Some(host.clone()), shape);
        assert!(other.memory_growing(0, 2 << 20, None).unwrap());
        // A sandbox prepared ahead: its initial memory is the host's at
        // once, its scope's once its call joins it.
        let mut a = Limiter::new(8 << 20, Some(host.clone()), shape);
        assert!(a.memory_growing(0, 1 << 20, None).unwrap());
        assert!(a.budget().join_scope(&scope));
        assert_eq!((host.used(), scope.used()), (3 << 20, 1 << 20));
        // Within its own 8 MiB, but past its scope's 6: refused, nothing
        // charged anywhere.
        assert!(!a.memory_growing(1 << 20, 8 << 20, None).unwrap());
        assert_eq!(a.refused_memory(), Some((Refusal::Scope, 6 << 20)));
        assert_eq!(
            (a.used(), host.used(), scope.used()),
            (1 << 20, 3 << 20, 1 << 20)
        );
        // A second call of the scope takes the rest of the share.
        let mut b = Limiter::new(8 << 20, Some(host.clone()), shape);
        assert!(b.budget().join_scope(&scope));
        assert!(b.memory_growing(0, 5 << 20, None).unwrap());
        assert_eq!((host.used(), scope.used()), (8 << 20, 6 << 20));
        // Within its own limit, but the host has 2 MiB left.
        assert!(!other.memory_growing(2 << 20, 5 << 20, None).unwrap());
        assert_eq!(other.refused_memory(), Some((Refusal::Host, 10 << 20)));
        assert_eq!(host.used(), 8 << 20);
        // Host-side charges count the same way.
        assert!(!b.charge_host(1));
        assert!(other.charge_host(1 << 20));
        other.release_host(1 << 20);
        // Calls that end give everything back.
        drop((a, b));
        assert_eq!((host.used(), scope.used()), (2 << 20, 0));
        drop(other);
        assert_eq!(host.used(), 0);
    }

    #[test]
    fn a_sandbox_holding_more_than_its_scope_has_left_is_not_handed_to_it() {
        let host = SharedMemory::new(64 << 20);
        let scope = SharedMemory::new(8 << 20);
        let prepared = MemoryBudget::new(32 << 20, Some(host.clone()));
        assert!(prepared.charge(12 << 20));
        assert!(!prepared.join_scope(&scope), "12 MiB into a share of 8");
        assert_eq!(scope.used(), 0);
        let fresh = MemoryBudget::new(32 << 20, Some(host.clone()));
        assert!(fresh.join_scope(&scope));
        assert!(!fresh.join_scope(&scope), "one scope only");
        assert!(fresh.charge(8 << 20) && !fresh.charge(1));
        drop((prepared, fresh));
        assert_eq!((host.used(), scope.used()), (0, 0));
    }

    #[test]
    fn growth_wasmtime_fails_after_asking_is_not_left_charged() {
        let shape = crate::sandbox::PoolShape::default();
        let host = SharedMemory::new(64 << 20);
        let mut l = Limiter::new(32 << 20, Some(host.clone()), shape);
        // Past the memory's own maximum: refused without a charge.
        assert!(!l.memory_growing(1 << 20, 2 << 20, Some(1 << 20)).unwrap());
        assert_eq!((l.used(), host.used()), (0, 0));
        // Approved, then failed by wasmtime: given back.
        assert!(l.memory_growing(0, 4 << 20, None).unwrap());
        l.memory_grow_failed(wasmtime::Error::msg("mmap failed"))
            .unwrap();
        assert_eq!((l.used(), host.used()), (0, 0));
        // Approved and done: kept, and a later failure gives back only its
        // own growth.
        assert!(l.memory_growing(0, 4 << 20, None).unwrap());
        assert!(l.memory_growing(4 << 20, 6 << 20, None).unwrap());
        l.memory_grow_failed(wasmtime::Error::msg("mmap failed"))
            .unwrap();
        assert_eq!(host.used(), 4 << 20);
        // The latest refusal is the one reported.
        assert!(!l.memory_growing(4 << 20, 40 << 20, None).unwrap());
        assert_eq!(l.refused_memory(), Some((Refusal::Own, 32 << 20)));
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64 MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1_000"), Ok(1000));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert!(parse_size("64 MB/s").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("18446744073709551615 GiB").is_err());
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
    }
}
