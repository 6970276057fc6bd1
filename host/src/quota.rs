//! Tenant quotas, enforced on the one call path ([`Core::call`]).
//!
//! Each tenant's scope gets a [`ScopeQuota`] from its `[[tenant]]` entry:
//! calls at once (a semaphore slot held for the whole call), calls per
//! minute (GCRA, `governor`), and two budgets per minute that a call may
//! overdraw: output bytes and fuel are known only once a call has run, so
//! the call that crosses the budget completes, and the tenant's next calls
//! wait until the balance is positive again (refilled evenly, at most one
//! minute's worth).
//!
//! A call is admitted once: by the core when it starts, or earlier by a
//! front end that wants to answer `429 Retry-After` before it parses the
//! call (HTTP); the [`Admission`] then travels with the [`CallRequest`] and
//! the core does not admit it again. Either way the core holds the slot
//! and charges the budgets, so every front end and every embedder gets the
//! same quotas.
//!
//! A stateless read or get is admitted early too, before its round opens
//! (`Core::admit_early`). And the host's own work on a tenant's HTTP
//! requests before they are calls (reading and parsing them) is charged
//! to its fuel budget ([`RequestMeter`]): a request judged on a positive
//! balance pays in full, as a call does; while the balance is spent, only
//! small answers and notifications pass, leaving at most a minute's debt.
//!
//! Owns the quota state and arithmetic; who the tenants are is `tenant`'s,
//! turning a refusal into a status code is the front end's.
//!
//! [`Core::call`]: crate::Core::call
//! [`CallRequest`]: crate::CallRequest

use crate::catalog::Scope;
use crate::tenant::{Quotas, Tenant};
use arc_swap::ArcSwap;
use governor::{DefaultDirectRateLimiter, Quota};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// So much per minute, refilled evenly; may go negative.
#[derive(Debug)]
pub(crate) struct Budget {
    per_minute: u64,
    /// The balance and when it was last refilled.
    state: Mutex<(f64, Instant)>,
}

impl Budget {
    pub(crate) fn new(per_minute: u64) -> Budget {
        Budget {
            per_minute,
            state: Mutex::new((per_minute as f64, Instant::now())),
        }
    }

    /// A budget of `per_minute` that starts from `old`'s balance (at most
    /// one minute's worth of the new size): a reconfigured quota neither
    /// forgives an overdraft nor grants a fresh minute.
    fn carried(old: &Budget, per_minute: u64) -> Budget {
        let mut s = old.state.lock().unwrap_or_else(|e| e.into_inner());
        old.refill(&mut s);
        Budget {
            per_minute,
            state: Mutex::new((s.0.min(per_minute as f64), s.1)),
        }
    }

    /// The budget per minute.
    pub(crate) fn per_minute(&self) -> u64 {
        self.per_minute
    }

    /// The balance now, refilled evenly up to one minute's worth.
    fn refill(&self, s: &mut (f64, Instant)) {
        let now = Instant::now();
        let rate = self.per_minute as f64 / 60.0;
        s.0 = (s.0 + rate * now.duration_since(s.1).as_secs_f64()).min(self.per_minute as f64);
        s.1 = now;
    }

    /// How long until the balance is positive again, if it is not now.
    pub(crate) fn wait(&self) -> Option<Duration> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.refill(&mut s);
        (s.0 <= 0.0).then(|| {
            let rate = self.per_minute as f64 / 60.0;
            Duration::from_secs_f64((-s.0 + 1.0) / rate)
        })
    }

    /// Take `n` off the balance.
    pub(crate) fn charge(&self, n: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.refill(&mut s);
        s.0 -= n as f64;
    }

    /// Take `n` off the balance, but never below a minute's worth of debt
    /// (or below where it is): the light requests a spent tenant may still
    /// send keep it waiting a minute at most.
    #[cfg(feature = "http")]
    fn charge_to_a_minute(&self, n: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.refill(&mut s);
        let floor = (-(self.per_minute as f64)).min(s.0);
        s.0 = (s.0 - n as f64).max(floor);
    }
}

/// Whole seconds to wait (rounded up, at least 1): what `Retry-After` and
/// the error messages say.
pub(crate) fn retry_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// Why a call is refused for quota.
#[derive(Debug, Clone)]
pub(crate) struct OverQuota {
    /// The quota's key in the host config (`calls-per-minute`, …).
    pub(crate) quota: &'static str,
    pub(crate) message: String,
    pub(crate) retry_after: Duration,
}

impl OverQuota {
    fn new(quota: &'static str, message: String, retry_after: Duration) -> OverQuota {
        OverQuota {
            quota,
            message,
            retry_after,
        }
    }
}

/// One tenant's limits as configured now: swapped whole when the host
/// config is reloaded, while the tenant's count of running calls carries
/// on (see [`ScopeQuota`]).
struct Limits {
    quotas: Quotas,
    rate: Option<(u32, Arc<DefaultDirectRateLimiter>)>,
    concurrent: Option<u32>,
    output: Option<Arc<Budget>>,
    fuel: Option<Arc<Budget>>,
}

impl Limits {
    /// The limits of `q`; what is unchanged from `old` keeps its state (a
    /// rate limiter's cell, a budget's balance), a changed budget starts
    /// from the old balance, and a changed rate starts with its burst used
    /// up (governor cannot carry a limiter's state to another quota, and a
    /// fresh burst would reward the tenant whose rate was just narrowed).
    fn new(q: &Quotas, old: Option<&Limits>) -> Limits {
        let budget = |n: Option<u64>, old: Option<&Arc<Budget>>| {
            n.map(|n| match old {
                Some(b) if b.per_minute == n => b.clone(),
                Some(b) => Arc::new(Budget::carried(b, n)),
                None => Arc::new(Budget::new(n)),
            })
        };
        Limits {
            quotas: q.clone(),
            rate: q.calls_per_minute.and_then(NonZeroU32::new).map(|n| {
                let fresh = || Arc::new(DefaultDirectRateLimiter::direct(Quota::per_minute(n)));
                match old.and_then(|o| o.rate.as_ref()) {
                    Some((m, l)) if *m == n.get() => (*m, l.clone()),
                    // A tenant that is new, or had no rate (it was
                    // unlimited): a full burst.
                    None => (n.get(), fresh()),
                    Some(_) => {
                        let l = fresh();
                        let _ = l.check_n(n);
                        (n.get(), l)
                    }
                }
            }),
            concurrent: q.max_concurrent,
            output: budget(
                q.output_bytes_per_minute,
                old.and_then(|o| o.output.as_ref()),
            ),
            fuel: budget(q.fuel_per_minute, old.and_then(|o| o.fuel.as_ref())),
        }
    }
}

/// One tenant's quota state. It lives as long as the tenant does, across
/// reloads of the host config: its running calls stay counted (with or
/// without a `max-concurrent`, so that one set later counts them), its
/// budgets keep their balance.
pub(crate) struct ScopeQuota {
    tenant: String,
    limits: ArcSwap<Limits>,
    /// Calls of this tenant holding a slot now.
    running: Arc<AtomicU32>,
}

/// A `max-concurrent` slot: given back when the call's admission drops.
struct Slot(Arc<AtomicU32>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ScopeQuota {
    fn new(t: &Tenant) -> ScopeQuota {
        ScopeQuota {
            tenant: t.name.clone(),
            limits: ArcSwap::from_pointee(Limits::new(&t.quotas, None)),
            running: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Take a `max-concurrent` slot if fewer than `n` are taken.
    fn take_slot(&self, n: u32) -> Option<Slot> {
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |k| {
                (k < n).then_some(k + 1)
            })
            .ok()
            .map(|_| Slot(self.running.clone()))
    }

    /// The refusal of a budget (`key`) that is used up now, if it is.
    fn over(&self, b: &Budget, key: &'static str) -> Option<OverQuota> {
        let wait = b.wait()?;
        let secs = retry_secs(wait);
        Some(OverQuota::new(
            key,
            format!(
                "tenant `{}` is over its quota `{key} = {}`; retry in {secs} s",
                self.tenant,
                b.per_minute()
            ),
            Duration::from_secs(secs),
        ))
    }

    /// Charge `bytes` sent again (a task's kept result, polled once more)
    /// to the output budget, or refuse if it is used up.
    #[cfg(feature = "mcp")]
    fn resend(&self, bytes: u64) -> Result<(), OverQuota> {
        if let Some(b) = &self.limits.load().output {
            if let Some(over) = self.over(b, "output-bytes-per-minute") {
                return Err(over);
            }
            b.charge(bytes);
        }
        Ok(())
    }

    /// Admit one call now, or say which quota it is over and when to retry.
    /// `rate`: count it against `calls-per-minute` (a listing is not a
    /// call, but still takes a slot and burns fuel).
    fn admit(self: &Arc<Self>, scope: &Scope, rate: bool) -> Result<Admission, OverQuota> {
        let name = &self.tenant;
        let limits = self.limits.load();
        for (b, key) in [
            (&limits.output, "output-bytes-per-minute"),
            (&limits.fuel, "fuel-per-minute"),
        ] {
            if let Some(over) = b.as_ref().and_then(|b| self.over(b, key)) {
                return Err(over);
            }
        }
        // The slot before the rate: a refused call must not use the rate up.
        let slot = match limits.concurrent {
            Some(n) => Some(self.take_slot(n).ok_or_else(|| {
                OverQuota::new(
                    "max-concurrent",
                    format!(
                        "tenant `{name}` is over its quota `max-concurrent = {n}`: {n} calls are running; retry when one has finished"
                    ),
                    Duration::from_secs(1),
                )
            })?),
            // Counted all the same.
            None => self.take_slot(u32::MAX),
        };
        if let Some((n, limiter)) = limits.rate.as_ref().filter(|_| rate)
            && let Err(not_until) = limiter.check()
        {
            use governor::clock::Clock as _;
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            let secs = retry_secs(wait);
            return Err(OverQuota::new(
                "calls-per-minute",
                format!(
                    "tenant `{name}` is over its quota `calls-per-minute = {n}`; retry in {secs} s"
                ),
                Duration::from_secs(secs),
            ));
        }
        Ok(Admission {
            scope: scope.clone(),
            quota: Some(self.clone()),
            _slot: slot,
            _kept: None,
        })
    }
}

/// Every tenant's quota state, by scope. Scopes that are no tenant's are
/// not in it, and their calls are admitted at no cost.
#[derive(Default)]
pub(crate) struct QuotaBook {
    scopes: HashMap<Scope, Arc<ScopeQuota>>,
}

impl QuotaBook {
    /// The quotas of `tenants`.
    pub(crate) fn new<'a>(tenants: impl Iterator<Item = &'a Tenant>) -> QuotaBook {
        QuotaBook::reconfigured(tenants, None)
    }

    /// The quotas of `tenants`, keeping `old`'s state for each tenant that
    /// stays: calls it has running still hold their slots against its new
    /// `max-concurrent`, its budgets keep their balance, and an unchanged
    /// rate keeps its limiter. (A tenant removed and added back starts
    /// afresh.)
    pub(crate) fn reconfigured<'a>(
        tenants: impl Iterator<Item = &'a Tenant>,
        old: Option<&QuotaBook>,
    ) -> QuotaBook {
        let mut scopes = HashMap::new();
        for t in tenants {
            let scope = t.scope();
            let kept = old.and_then(|o| o.scopes.get(&scope));
            let q = match kept {
                Some(q) => {
                    let now = q.limits.load();
                    if now.quotas != t.quotas {
                        q.limits.store(Arc::new(Limits::new(&t.quotas, Some(&now))));
                    }
                    q.clone()
                }
                None => Arc::new(ScopeQuota::new(t)),
            };
            scopes.insert(scope, q);
        }
        QuotaBook { scopes }
    }

    /// Charge `bytes` sent to `scope` again to its output budget (see
    /// [`ScopeQuota::resend`]).
    #[cfg(feature = "mcp")]
    pub(crate) fn resend(&self, scope: &Scope, bytes: u64) -> Result<(), OverQuota> {
        self.scopes.get(scope).map_or(Ok(()), |q| q.resend(bytes))
    }

    /// The meter of one of `scope`'s requests, if its tenant has a fuel
    /// budget (see [`RequestMeter`]).
    #[cfg(feature = "http")]
    pub(crate) fn meter_request(&self, scope: &Scope) -> Option<RequestMeter> {
        let quota = self.scopes.get(scope)?;
        let limits = quota.limits.load_full();
        let budget = limits.fuel.as_ref()?;
        let spent = quota.over(budget, "fuel-per-minute");
        Some(RequestMeter {
            limits,
            spent,
            cpu: Duration::ZERO,
            last: Duration::ZERO,
        })
    }

    /// Admit a call of `scope` now, or say which quota it is over (`rate`:
    /// see [`ScopeQuota::admit`]).
    pub(crate) fn admit(&self, scope: &Scope, rate: bool) -> Result<Admission, OverQuota> {
        match self.scopes.get(scope) {
            Some(q) => q.admit(scope, rate),
            None => Ok(Admission {
                scope: scope.clone(),
                quota: None,
                _slot: None,
                _kept: None,
            }),
        }
    }
}

/// The largest body a tenant whose fuel budget is spent may still send
/// (a cancellation, an answer to the host's question, a task's poll: about
/// 150 bytes). 64 KiB of nested arrays took 50 ms to parse, twice, in a
/// debug build (found by the review of the fix).
#[cfg(feature = "http")]
const SPENT_BODY: usize = 4 << 10;

/// The host's work on one request of a tenant with a fuel budget before it
/// is a call (reading, weighing and parsing it), measured on the thread's
/// clock around synchronous work only ([`RequestMeter::measure`]) and
/// charged to its `fuel-per-minute` at a guest's rate when the meter is
/// dropped, whichever way the request ends. A request judged on a positive
/// balance pays in full, as a call that overdraws the budget does; while
/// the budget is spent only small, light messages pass, and what they cost
/// leaves at most a minute's debt (capped for every request, a burst of
/// large ones cost a minute's wait whatever it cost: the review of the
/// fix).
#[cfg(feature = "http")]
pub(crate) struct RequestMeter {
    limits: Arc<Limits>,
    /// The refusal, if the budget was spent when the request began.
    spent: Option<OverQuota>,
    cpu: Duration,
    /// The last span measured.
    last: Duration,
}

#[cfg(feature = "http")]
impl RequestMeter {
    /// Whether a body of `len` bytes (`None`: not stated) is refused
    /// before it is read: the budget is spent and it is not small.
    pub(crate) fn refuses_unread(&self, len: Option<usize>) -> bool {
        self.spent.is_some() && len.is_none_or(|n| n > SPENT_BODY)
    }

    /// Whether a parsed message is refused: the budget is spent and it is
    /// not `light` (what the front end lets through while it is: an
    /// answer, a notification, a task's poll).
    pub(crate) fn refuses_parsed(&self, light: bool) -> bool {
        self.spent.is_some() && !light
    }

    /// The refusal to give (see [`crate::Core::refuse_metered`]).
    pub(crate) fn refusal(&self) -> OverQuota {
        let mut q = self.spent.clone().expect("refused only when spent");
        q.message.push_str(
            " (the host's reading and parsing of the tenant's requests counts against it)",
        );
        q
    }

    /// `f()`, its thread's CPU time counted.
    pub(crate) fn measure<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let before = crate::core::thread_cpu_time();
        let out = f();
        if let Some((a, b)) = before.zip(crate::core::thread_cpu_time()) {
            self.last = b.saturating_sub(a);
            self.cpu += self.last;
        }
        out
    }

    /// The last span measured, done once more elsewhere (a body rmcp's
    /// service parses again, as the front end did).
    pub(crate) fn again(&mut self) {
        self.cpu += self.last;
    }
}

#[cfg(feature = "http")]
impl Drop for RequestMeter {
    fn drop(&mut self) {
        if let Some(b) = &self.limits.fuel {
            let fuel = crate::core::fuel_for(self.cpu);
            if self.spent.is_some() {
                b.charge_to_a_minute(fuel);
            } else {
                b.charge(fuel);
            }
        }
    }
}

/// An admitted call: holds its tenant's `max-concurrent` slot until it is
/// dropped, and charges the tenant's budgets with what the call used.
///
/// Made only by the core; a front end that admits a call early hands it
/// back with the call ([`CallRequest`](crate::CallRequest)).
pub(crate) struct Admission {
    scope: Scope,
    quota: Option<Arc<ScopeQuota>>,
    _slot: Option<Slot>,
    /// Whatever the front end holds for the call until it ends.
    _kept: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

/// Charge `fuel` to `quota`'s fuel budget, if it has one.
fn charge_fuel(quota: Option<&ScopeQuota>, fuel: u64) {
    if let Some(q) = quota
        && let Some(b) = &q.limits.load().fuel
    {
        b.charge(fuel);
    }
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// An admission on its way from the HTTP door to the call, in the
/// request's extensions (which must be `Clone`): taken once.
#[cfg(feature = "http")]
#[derive(Clone)]
pub(crate) struct AdmittedCall(Arc<Mutex<Option<Admission>>>);

#[cfg(feature = "http")]
impl AdmittedCall {
    pub(crate) fn new(a: Admission) -> AdmittedCall {
        AdmittedCall(Arc::new(Mutex::new(Some(a))))
    }
    /// The admission, the first time.
    pub(crate) fn take(&self) -> Option<Admission> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Admission {
    /// This admission, holding `kept` until the call ends.
    #[cfg(feature = "http")]
    pub(crate) fn keeping(mut self, kept: Arc<dyn std::any::Any + Send + Sync>) -> Admission {
        self._kept = Some(kept);
        self
    }

    /// The scope it admits a call of.
    pub(crate) fn scope(&self) -> &Scope {
        &self.scope
    }

    /// Charge the fuel the call's guest burnt.
    pub(crate) fn charge_fuel(&self, fuel: u64) {
        charge_fuel(self.quota.as_deref(), fuel);
    }

    /// Charge the bytes of the call's result.
    pub(crate) fn charge_output(&self, bytes: u64) {
        if let Some(q) = &self.quota
            && let Some(b) = &q.limits.load().output
        {
            b.charge(bytes);
        }
    }

    /// Whether the call's output is charged (the core only weighs it then).
    pub(crate) fn meters_output(&self) -> bool {
        self.quota
            .as_ref()
            .is_some_and(|q| q.limits.load().output.is_some())
    }

    /// Whether the fuel the guest burns is charged (the core only meters
    /// it then).
    pub(crate) fn meters_fuel(&self) -> bool {
        self.quota
            .as_ref()
            .is_some_and(|q| q.limits.load().fuel.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(q: Quotas) -> Tenant {
        let mut t: Tenant = crate::HostConfig::parse(
            std::path::Path::new("t.toml"),
            &format!(
                "[[tenant]]\nname = \"t\"\ntools = [\"echo\"]\ntoken-sha256 = [\"{}\"]\n",
                "0".repeat(64)
            ),
        )
        .expect("a valid config")
        .tenants
        .remove(0);
        t.quotas = q;
        t
    }

    #[test]
    fn a_reconfigured_quota_keeps_running_calls_and_overdrafts() {
        let q = |max, fuel| Quotas {
            max_concurrent: Some(max),
            fuel_per_minute: Some(fuel),
            ..Quotas::default()
        };
        let scope = Scope::new("t");
        let book = QuotaBook::new([tenant(q(3, 600))].iter());
        let running: Vec<_> = (0..2)
            .map(|_| book.admit(&scope, true).expect("under the cap"))
            .collect();
        running[0].charge_fuel(1200);
        // Narrowed to 1 while 2 run: nothing more is admitted until both
        // have ended, and the overdraft is not forgiven by the change.
        let book = QuotaBook::reconfigured([tenant(q(1, 6000))].iter(), Some(&book));
        let refused = book.admit(&scope, true).expect_err("overdrawn");
        assert_eq!(refused.quota, "fuel-per-minute", "{}", refused.message);
        running[1].charge_fuel(0);
        // Widened again, with the balance positive: the two running calls
        // still count against the cap.
        let book = QuotaBook::reconfigured([tenant(q(2, 6_000_000))].iter(), Some(&book));
        // (600 units short, refilled at 100,000 a second.)
        std::thread::sleep(Duration::from_millis(20));
        let refused = book.admit(&scope, true).expect_err("at the cap");
        assert_eq!(refused.quota, "max-concurrent", "{}", refused.message);
        drop(running);
        let a = book.admit(&scope, true).expect("slots given back");
        let b = book.admit(&scope, true).expect("two slots");
        assert!(book.admit(&scope, true).is_err());
        drop((a, b));
        // Calls made while the tenant has no cap are counted against the
        // cap it gets later.
        let book = QuotaBook::reconfigured([tenant(Quotas::default())].iter(), Some(&book));
        let many: Vec<_> = (0..10).map(|_| book.admit(&scope, true).unwrap()).collect();
        let book = QuotaBook::reconfigured([tenant(q(10, 6_000_000))].iter(), Some(&book));
        assert_eq!(
            book.admit(&scope, true).unwrap_err().quota,
            "max-concurrent"
        );
        drop(many);
        assert!(book.admit(&scope, true).is_ok());
    }

    #[test]
    fn a_changed_rate_starts_with_its_burst_used_up() {
        let rate = |n| Quotas {
            calls_per_minute: Some(n),
            ..Quotas::default()
        };
        let scope = Scope::new("t");
        let book = QuotaBook::new([tenant(rate(5))].iter());
        for _ in 0..5 {
            book.admit(&scope, true).expect("the burst");
        }
        assert_eq!(
            book.admit(&scope, true).unwrap_err().quota,
            "calls-per-minute"
        );
        // Narrowed: no fresh burst. Unchanged: the same limiter.
        let book = QuotaBook::reconfigured([tenant(rate(3))].iter(), Some(&book));
        assert!(book.admit(&scope, true).is_err());
        let book = QuotaBook::reconfigured([tenant(rate(3))].iter(), Some(&book));
        assert!(book.admit(&scope, true).is_err());
        // A new tenant gets its whole burst.
        let other = Scope::new("t");
        let fresh = QuotaBook::new([tenant(rate(3))].iter());
        assert!(fresh.admit(&other, true).is_ok());
    }

    #[test]
    fn an_overdrawn_budget_waits_in_proportion_to_the_overdraft() {
        let b = Budget::new(600);
        assert_eq!(b.wait(), None);
        b.charge(600);
        // Empty: at 10 a second it is positive again within about 0.1 s
        // (or already, if the clock moved since the charge).
        assert!(b.wait().is_none_or(|w| w <= Duration::from_millis(200)));
        b.charge(600);
        let w = b.wait().expect("overdrawn");
        assert!(
            w >= Duration::from_secs(59) && w <= Duration::from_secs(61),
            "{w:?}"
        );
        assert_eq!(retry_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_secs(Duration::from_millis(1500)), 2);
    }
}
