//! Budgets per minute that a call may overdraw: output bytes and fuel are
//! known only once a call has run, so the call that crosses the budget
//! completes, and the tenant's next calls wait until the balance is
//! positive again (refilled evenly, at most one minute's worth).
//!
//! Owns only the arithmetic; who is charged and when is the front end's
//! (`mcp::auth`) and the core's business.

use std::sync::Mutex;
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

/// Why a request is refused for quota.
pub(crate) struct OverQuota {
    /// The quota's key in the host config (`calls-per-minute`, …).
    pub(crate) quota: &'static str,
    pub(crate) message: String,
    pub(crate) retry_after: Duration,
}

/// Tenant `name` has burnt its `fuel-per-minute` budget `b`: retry after
/// `wait`.
pub(crate) fn fuel_over_quota(name: &str, b: &Budget, wait: Duration) -> OverQuota {
    let secs = retry_secs(wait);
    OverQuota {
        quota: "fuel-per-minute",
        message: format!(
            "tenant `{name}` is over its quota `fuel-per-minute = {}`; retry in {secs} s",
            b.per_minute()
        ),
        retry_after: Duration::from_secs(secs),
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
