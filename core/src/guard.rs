//! Every store call goes through here: a timeout, a circuit breaker, and the error counters.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::{bump, SessionMetrics};
use crate::record::now_millis;
use crate::store::{SessionStore, StoreError};

/// Opens after `threshold` consecutive outages; while open, calls fail at once instead of
/// each waiting for the timeout. After `cooldown` one probe goes through: success closes it.
#[derive(Debug)]
struct Breaker {
    threshold: u32,
    cooldown: Duration,
    failures: AtomicU32,
    open_until: AtomicU64,
    probing: AtomicBool,
}

impl Breaker {
    fn allow(&self) -> bool {
        if self.threshold == 0 || self.failures.load(Ordering::Acquire) < self.threshold {
            return true;
        }
        if now_millis() < self.open_until.load(Ordering::Acquire) {
            return false;
        }
        // Half-open: exactly one caller probes.
        self.probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn record(&self, outage: bool) {
        if outage {
            let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
            if self.threshold > 0 && failures >= self.threshold {
                let until = now_millis() + u64::try_from(self.cooldown.as_millis()).unwrap_or(1000);
                self.open_until.store(until, Ordering::Release);
            }
        } else if self.failures.load(Ordering::Acquire) != 0 {
            self.failures.store(0, Ordering::Release);
        }
        // Read before writing: a store on every healthy call would bounce this cache line
        // between cores on every request.
        if self.probing.load(Ordering::Acquire) {
            self.probing.store(false, Ordering::Release);
        }
    }
}

/// A store behind a timeout and a breaker.
pub(crate) struct Guarded {
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) metrics: Arc<SessionMetrics>,
    timeout: Duration,
    breaker: Breaker,
}

impl Guarded {
    pub(crate) fn new(
        store: Arc<dyn SessionStore>,
        timeout: Duration,
        threshold: u32,
        cooldown: Duration,
    ) -> Self {
        Self {
            store,
            metrics: Arc::default(),
            timeout,
            breaker: Breaker {
                threshold,
                cooldown,
                failures: AtomicU32::new(0),
                open_until: AtomicU64::new(0),
                probing: AtomicBool::new(false),
            },
        }
    }

    /// Runs one store call under the timeout and the breaker.
    pub(crate) async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if !self.breaker.allow() {
            bump(&self.metrics.circuit_rejections);
            return Err(StoreError::CircuitOpen);
        }
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => {
                bump(&self.metrics.store_timeouts);
                Err(StoreError::Timeout(self.timeout))
            }
        };
        match &result {
            Err(e) if e.is_outage() => {
                bump(&self.metrics.store_errors);
                tracing::warn!(error = %e, "session store call failed");
                self.breaker.record(true);
            }
            _ => self.breaker.record(false),
        }
        result
    }

    /// Whether the breaker currently refuses calls (for readiness probes).
    pub(crate) fn is_open(&self) -> bool {
        self.breaker.threshold > 0
            && self.breaker.failures.load(Ordering::Acquire) >= self.breaker.threshold
            && now_millis() < self.breaker.open_until.load(Ordering::Acquire)
    }
}
