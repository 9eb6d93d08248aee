//! Every store call goes through here: a timeout, a circuit breaker, and the error counters.
//! [`Guarded`] is itself a [`SessionStore`] wrapping the app's (timed) store, so the session
//! calls `store.load(…)` and gets the guard with it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::id::SessionKey;
use crate::metrics::{bump, SessionMetrics};
use crate::record::{
    now_millis, Applied, Changes, Destroyed, Loaded, Millis, Record, Refresh, UserSession,
};
use crate::store::{SessionStore, StoreError, StoreStats};

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

/// Leave to make one store call. A probe's permit gives the probe back when dropped, so a
/// probe whose future is cancelled (a client hung up, an outer timeout) cannot leave the
/// breaker waiting forever for an answer that will never come.
struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe {
            self.breaker.probing.store(false, Ordering::Release);
        }
    }
}

impl Breaker {
    fn allow(&self) -> Option<Permit<'_>> {
        if self.threshold == 0 || self.failures.load(Ordering::Acquire) < self.threshold {
            return Some(Permit {
                breaker: self,
                probe: false,
            });
        }
        if now_millis() < self.open_until.load(Ordering::Acquire) {
            return None;
        }
        // Half-open: exactly one caller probes.
        self.probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            .then_some(Permit {
                breaker: self,
                probe: true,
            })
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
    }
}

/// A store behind a timeout and a breaker.
pub(crate) struct Guarded {
    store: Arc<dyn SessionStore>,
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
        let metrics = Arc::<SessionMetrics>::default();
        Self {
            store: Arc::new(crate::timed::Timed {
                inner: store,
                metrics: metrics.clone(),
            }),
            metrics,
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
        let Some(_permit) = self.breaker.allow() else {
            bump(&self.metrics.circuit_rejections);
            return Err(StoreError::CircuitOpen);
        };
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

    /// The store inside, timed but not guarded (for operator tools).
    pub(crate) fn inner(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// Whether the breaker currently refuses calls (for readiness probes).
    pub(crate) fn is_open(&self) -> bool {
        self.breaker.threshold > 0
            && self.breaker.failures.load(Ordering::Acquire) >= self.breaker.threshold
            && now_millis() < self.breaker.open_until.load(Ordering::Acquire)
    }
}

#[async_trait]
impl SessionStore for Guarded {
    async fn load(
        &self,
        key: &SessionKey,
        now: Millis,
        refresh: Option<Refresh>,
    ) -> Result<Option<Loaded>, StoreError> {
        self.call(self.store.load(key, now, refresh)).await
    }
    async fn create(&self, key: &SessionKey, record: &Record) -> Result<(), StoreError> {
        self.call(self.store.create(key, record)).await
    }
    async fn apply(
        &self,
        key: &SessionKey,
        changes: &Changes,
        now: Millis,
    ) -> Result<Applied, StoreError> {
        self.call(self.store.apply(key, changes, now)).await
    }
    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        changes: &Changes,
        now: Millis,
        grace_until: Millis,
    ) -> Result<Applied, StoreError> {
        self.call(self.store.cycle(old, new, changes, now, grace_until))
            .await
    }
    async fn destroy(&self, key: &SessionKey) -> Result<Destroyed, StoreError> {
        self.call(self.store.destroy(key)).await
    }
    async fn list_user(&self, user: &str, now: Millis) -> Result<Vec<UserSession>, StoreError> {
        self.call(self.store.list_user(user, now)).await
    }
    async fn destroy_user(
        &self,
        user: &str,
        keep: Option<&SessionKey>,
        now: Millis,
    ) -> Result<u64, StoreError> {
        self.call(self.store.destroy_user(user, keep, now)).await
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.call(self.store.stats()).await
    }
    async fn record_end(
        &self,
        key: &SessionKey,
        reason: crate::events::EndReason,
        until: Millis,
    ) -> Result<(), StoreError> {
        self.call(self.store.record_end(key, reason, until)).await
    }
    async fn end(
        &self,
        key: &SessionKey,
        reason: crate::events::EndReason,
        until: Millis,
    ) -> Result<crate::Ended, StoreError> {
        self.call(self.store.end(key, reason, until)).await
    }
    async fn end_user(
        &self,
        user: &str,
        keep: Option<&SessionKey>,
        reason: crate::events::EndReason,
        until: Millis,
        now: Millis,
    ) -> Result<Vec<SessionKey>, StoreError> {
        self.call(self.store.end_user(user, keep, reason, until, now))
            .await
    }
    async fn end_reason(
        &self,
        key: &SessionKey,
        now: Millis,
    ) -> Result<Option<crate::events::EndReason>, StoreError> {
        self.call(self.store.end_reason(key, now)).await
    }
    async fn scan(
        &self,
        cursor: Option<&str>,
        count: usize,
    ) -> Result<crate::store::ScanPage, StoreError> {
        self.call(self.store.scan(cursor, count)).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.call(self.store.ping()).await
    }
    /// Only while the store is healthy (no failure since its last success): otherwise the
    /// load goes through the breaker and the timeout like any other call.
    fn load_cached(
        &self,
        key: &SessionKey,
        now: Millis,
        refresh: Option<crate::Refresh>,
    ) -> Option<crate::Loaded> {
        if self.breaker.failures.load(Ordering::Acquire) != 0 {
            return None;
        }
        self.store.load_cached(key, now, refresh)
    }
    fn cached(&self, key: &SessionKey) -> Option<Record> {
        self.store.cached(key)
    }
    fn can_cycle_to(&self, old: &SessionKey, new: &SessionKey) -> bool {
        self.store.can_cycle_to(old, new)
    }
    fn ended_recently(&self, key: &SessionKey, issued: Millis) -> bool {
        self.store.ended_recently(key, issued)
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::task::Poll;

    use super::*;
    use crate::MemoryStore;

    fn guarded() -> Guarded {
        Guarded::new(
            Arc::new(MemoryStore::default()),
            Duration::from_secs(5),
            1,
            Duration::from_millis(20),
        )
    }

    async fn outage() -> Result<(), StoreError> {
        Err(StoreError::unavailable(std::io::Error::other("down")))
    }

    /// A probe whose future is dropped after any number of polls gives the probe back: the
    /// breaker never stays open for good (hole 4 of the security review).
    #[tokio::test]
    async fn a_cancelled_probe_never_wedges_the_breaker() {
        for polls in 0..3 {
            let g = guarded();
            assert!(g.call(outage()).await.is_err());
            assert!(matches!(
                g.call(async { Ok(()) }).await,
                Err(StoreError::CircuitOpen)
            ));
            tokio::time::sleep(Duration::from_millis(30)).await;
            // The probe: a store call that never answers, dropped after `polls` polls.
            let mut probe = Box::pin(g.call(std::future::pending::<Result<(), StoreError>>()));
            let mut seen = 0;
            poll_fn(|cx| {
                while seen < polls {
                    seen += 1;
                    let _ = probe.as_mut().poll(cx);
                }
                Poll::Ready(())
            })
            .await;
            drop(probe);
            assert!(
                g.call(async { Ok(()) }).await.is_ok(),
                "after a probe cancelled at poll {polls}, the next call probes and closes the breaker"
            );
            assert!(!g.is_open());
        }
    }

    /// A store whose in-process copy answers every load (as a read cache's hit would).
    struct AlwaysCached(MemoryStore);

    #[async_trait]
    impl SessionStore for AlwaysCached {
        async fn load(
            &self,
            k: &SessionKey,
            now: Millis,
            r: Option<crate::Refresh>,
        ) -> Result<Option<crate::Loaded>, StoreError> {
            self.0.load(k, now, r).await
        }
        async fn create(&self, k: &SessionKey, r: &Record) -> Result<(), StoreError> {
            self.0.create(k, r).await
        }
        async fn apply(
            &self,
            k: &SessionKey,
            c: &crate::Changes,
            now: Millis,
        ) -> Result<crate::Applied, StoreError> {
            self.0.apply(k, c, now).await
        }
        async fn cycle(
            &self,
            o: &SessionKey,
            n: &SessionKey,
            c: &crate::Changes,
            now: Millis,
            g: Millis,
        ) -> Result<crate::Applied, StoreError> {
            self.0.cycle(o, n, c, now, g).await
        }
        async fn destroy(&self, k: &SessionKey) -> Result<crate::Destroyed, StoreError> {
            self.0.destroy(k).await
        }
        fn load_cached(
            &self,
            k: &SessionKey,
            now: Millis,
            _: Option<crate::Refresh>,
        ) -> Option<crate::Loaded> {
            Some(crate::Loaded {
                record: Record::new(now, now + 1000, now + 2000),
                key: *k,
                refreshed: false,
            })
        }
    }

    /// A cache hit skips the breaker's call only while the store is healthy: after a failure
    /// every load goes through the breaker (and is refused while it is open), until a call
    /// succeeds again.
    #[tokio::test]
    async fn cache_hits_bypass_the_breaker_only_while_healthy() {
        let g = Guarded::new(
            Arc::new(AlwaysCached(MemoryStore::default())),
            Duration::from_secs(5),
            1,
            Duration::from_millis(20),
        );
        let k = crate::SessionId::random().unwrap().key();
        let now = crate::now_millis();
        assert!(g.load_cached(&k, now, None).is_some(), "healthy: served");
        assert!(g.call(outage()).await.is_err());
        assert!(
            g.load_cached(&k, now, None).is_none(),
            "after a failure: not"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(g.call(async { Ok(()) }).await.is_ok());
        assert!(
            g.load_cached(&k, now, None).is_some(),
            "healthy again: served"
        );
    }
}
