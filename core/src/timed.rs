//! The store as the layer calls it, with each operation's duration recorded in
//! [`crate::SessionMetrics::store_latency`].

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use crate::id::SessionKey;
use crate::metrics::SessionMetrics;
use crate::record::{Applied, Changes, Destroyed, Loaded, Millis, Record, Refresh, UserSession};
use crate::store::{SessionStore, StoreError, StoreStats};

/// Times every call of `inner`.
pub(crate) struct Timed {
    pub(crate) inner: Arc<dyn SessionStore>,
    pub(crate) metrics: Arc<SessionMetrics>,
}

impl Timed {
    /// Runs `call` in a `store` span naming the operation and the session's fingerprint (never
    /// the key), and records how long it took.
    async fn time<T>(
        &self,
        op: usize,
        key: Option<&SessionKey>,
        call: impl std::future::Future<Output = T>,
    ) -> T {
        use tracing::Instrument as _;
        let span = tracing::debug_span!(
            "store",
            op = crate::metrics::STORE_OPERATIONS[op],
            session = %key.map(SessionKey::fingerprint).unwrap_or_default(),
        );
        let started = Instant::now();
        let out = call.instrument(span).await;
        self.metrics.store_latency.record(op, started.elapsed());
        out
    }
}

#[async_trait]
impl SessionStore for Timed {
    async fn load(
        &self,
        key: &SessionKey,
        now: Millis,
        refresh: Option<Refresh>,
    ) -> Result<Option<Loaded>, StoreError> {
        self.time(0, Some(key), self.inner.load(key, now, refresh))
            .await
    }
    async fn create(&self, key: &SessionKey, record: &Record) -> Result<(), StoreError> {
        self.time(1, Some(key), self.inner.create(key, record))
            .await
    }
    async fn apply(
        &self,
        key: &SessionKey,
        changes: &Changes,
        now: Millis,
    ) -> Result<Applied, StoreError> {
        self.time(2, Some(key), self.inner.apply(key, changes, now))
            .await
    }
    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        changes: &Changes,
        now: Millis,
        grace_until: Millis,
    ) -> Result<Applied, StoreError> {
        self.time(
            3,
            Some(old),
            self.inner.cycle(old, new, changes, now, grace_until),
        )
        .await
    }
    async fn destroy(&self, key: &SessionKey) -> Result<Destroyed, StoreError> {
        self.time(4, Some(key), self.inner.destroy(key)).await
    }
    async fn list_user(&self, user: &str, now: Millis) -> Result<Vec<UserSession>, StoreError> {
        self.time(5, None, self.inner.list_user(user, now)).await
    }
    async fn destroy_user(
        &self,
        user: &str,
        keep: Option<&SessionKey>,
        now: Millis,
    ) -> Result<u64, StoreError> {
        self.time(6, keep, self.inner.destroy_user(user, keep, now))
            .await
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.time(7, None, self.inner.stats()).await
    }
    async fn record_end(
        &self,
        key: &SessionKey,
        reason: crate::events::EndReason,
        until: Millis,
    ) -> Result<(), StoreError> {
        self.inner.record_end(key, reason, until).await
    }
    async fn end(
        &self,
        key: &SessionKey,
        reason: crate::events::EndReason,
        until: Millis,
    ) -> Result<crate::Ended, StoreError> {
        self.time(4, Some(key), self.inner.end(key, reason, until))
            .await
    }
    async fn end_user(
        &self,
        user: &str,
        keep: Option<&SessionKey>,
        reason: crate::events::EndReason,
        until: Millis,
        now: Millis,
    ) -> Result<Vec<SessionKey>, StoreError> {
        self.time(6, keep, self.inner.end_user(user, keep, reason, until, now))
            .await
    }
    async fn end_reason(
        &self,
        key: &SessionKey,
        now: Millis,
    ) -> Result<Option<crate::events::EndReason>, StoreError> {
        self.inner.end_reason(key, now).await
    }
    async fn scan(
        &self,
        cursor: Option<&str>,
        count: usize,
    ) -> Result<crate::store::ScanPage, StoreError> {
        self.inner.scan(cursor, count).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.time(8, None, self.inner.ping()).await
    }
    fn load_cached(
        &self,
        key: &SessionKey,
        now: Millis,
        refresh: Option<crate::Refresh>,
    ) -> Option<crate::Loaded> {
        self.inner.load_cached(key, now, refresh)
    }
    fn cached(&self, key: &SessionKey) -> Option<Record> {
        self.inner.cached(key)
    }
    fn can_cycle_to(&self, old: &SessionKey, new: &SessionKey) -> bool {
        self.inner.can_cycle_to(old, new)
    }
    fn ended_recently(&self, key: &SessionKey, issued: Millis) -> bool {
        self.inner.ended_recently(key, issued)
    }
}
