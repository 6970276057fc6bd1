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
//! Owns the quota state and arithmetic; who the tenants are is `tenant`'s,
//! turning a refusal into a status code is the front end's.
//!
//! [`Core::call`]: crate::Core::call
//! [`CallRequest`]: crate::CallRequest

use crate::catalog::Scope;
use crate::tenant::Tenant;
use governor::{DefaultDirectRateLimiter, Quota};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

/// One tenant's quota state.
pub(crate) struct ScopeQuota {
    tenant: String,
    rate: Option<(u32, DefaultDirectRateLimiter)>,
    concurrent: Option<(u32, Arc<Semaphore>)>,
    output: Option<Budget>,
    fuel: Option<Budget>,
}

impl ScopeQuota {
    /// `None` when the tenant has no quota at all.
    fn new(t: &Tenant) -> Option<ScopeQuota> {
        let q = &t.quotas;
        let s = ScopeQuota {
            tenant: t.name.clone(),
            rate: q.calls_per_minute.and_then(NonZeroU32::new).map(|n| {
                (
                    n.get(),
                    DefaultDirectRateLimiter::direct(Quota::per_minute(n)),
                )
            }),
            concurrent: q
                .max_concurrent
                .map(|n| (n, Arc::new(Semaphore::new(n as usize)))),
            output: q.output_bytes_per_minute.map(Budget::new),
            fuel: q.fuel_per_minute.map(Budget::new),
        };
        (s.rate.is_some() || s.concurrent.is_some() || s.output.is_some() || s.fuel.is_some())
            .then_some(s)
    }

    /// Admit one call now, or say which quota it is over and when to retry.
    /// `rate`: count it against `calls-per-minute` (a listing is not a
    /// call, but still takes a slot and burns fuel).
    fn admit(self: &Arc<Self>, scope: &Scope, rate: bool) -> Result<Admission, OverQuota> {
        let name = &self.tenant;
        for (b, key) in [
            (&self.output, "output-bytes-per-minute"),
            (&self.fuel, "fuel-per-minute"),
        ] {
            if let Some(b) = b
                && let Some(wait) = b.wait()
            {
                let secs = retry_secs(wait);
                return Err(OverQuota::new(
                    key,
                    format!(
                        "tenant `{name}` is over its quota `{key} = {}`; retry in {secs} s",
                        b.per_minute()
                    ),
                    Duration::from_secs(secs),
                ));
            }
        }
        // The slot before the rate: a refused call must not use the rate up.
        let slot = match &self.concurrent {
            Some((n, sem)) => Some(sem.clone().try_acquire_owned().map_err(|_| {
                OverQuota::new(
                    "max-concurrent",
                    format!(
                        "tenant `{name}` is over its quota `max-concurrent = {n}`: {n} calls are running; retry when one has finished"
                    ),
                    Duration::from_secs(1),
                )
            })?),
            None => None,
        };
        if let Some((n, limiter)) = self.rate.as_ref().filter(|_| rate)
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
        })
    }
}

/// Every tenant's quota state, by scope. Scopes without quotas are not in
/// it, and their calls are admitted at no cost.
#[derive(Default)]
pub(crate) struct QuotaBook {
    scopes: HashMap<Scope, Arc<ScopeQuota>>,
}

impl QuotaBook {
    /// The quotas of `tenants`.
    pub(crate) fn new<'a>(tenants: impl Iterator<Item = &'a Tenant>) -> QuotaBook {
        QuotaBook {
            scopes: tenants
                .filter_map(|t| Some((t.scope(), Arc::new(ScopeQuota::new(t)?))))
                .collect(),
        }
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
            }),
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
    _slot: Option<OwnedSemaphorePermit>,
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
    /// The scope it admits a call of.
    pub(crate) fn scope(&self) -> &Scope {
        &self.scope
    }

    /// Charge the fuel the call's guest burnt.
    pub(crate) fn charge_fuel(&self, fuel: u64) {
        if let Some(b) = self.quota.as_ref().and_then(|q| q.fuel.as_ref()) {
            b.charge(fuel);
        }
    }

    /// Charge the bytes of the call's result.
    pub(crate) fn charge_output(&self, bytes: u64) {
        if let Some(b) = self.quota.as_ref().and_then(|q| q.output.as_ref()) {
            b.charge(bytes);
        }
    }

    /// Whether the call's output is charged (the core only weighs it then).
    pub(crate) fn meters_output(&self) -> bool {
        self.quota.as_ref().is_some_and(|q| q.output.is_some())
    }

    /// Whether the fuel the guest burns is charged (the core only meters
    /// it then).
    pub(crate) fn meters_fuel(&self) -> bool {
        self.quota.as_ref().is_some_and(|q| q.fuel.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
