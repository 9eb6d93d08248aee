//! Test doubles: a [`Hook`] runs before every call of the store it wraps ([`CountingStore`]
//! counts round trips, [`FlakyStore`] fails or hangs on demand), and [`Kept`] keeps a
//! store's server alive as long as the store.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use crate::{
    Applied, Changes, Loaded, Millis, Record, Refresh, SessionKey, SessionStore, StoreError,
    StoreStats, UserSession,
};

use super::DynStore;

/// A store wrapper: `before` runs ahead of every call (to count it, fail it, or stall it),
/// then the call goes to `inner`. Test doubles implement this instead of the whole contract.
#[async_trait]
pub trait Hook: Send + Sync + 'static {
    /// The wrapped store.
    fn inner(&self) -> &DynStore;
    /// Runs before each call; an error is returned instead of calling the store.
    async fn before(&self, op: &'static str) -> Result<(), StoreError>;
}

#[async_trait]
impl<H: Hook> SessionStore for H {
    async fn load(
        &self,
        k: &SessionKey,
        now: Millis,
        r: Option<Refresh>,
    ) -> Result<Option<Loaded>, StoreError> {
        self.before("load").await?;
        self.inner().load(k, now, r).await
    }
    async fn create(&self, k: &SessionKey, r: &Record) -> Result<(), StoreError> {
        self.before("create").await?;
        self.inner().create(k, r).await
    }
    async fn apply(&self, k: &SessionKey, c: &Changes, now: Millis) -> Result<Applied, StoreError> {
        self.before("apply").await?;
        self.inner().apply(k, c, now).await
    }
    async fn cycle(
        &self,
        o: &SessionKey,
        n: &SessionKey,
        c: &Changes,
        now: Millis,
        g: Millis,
    ) -> Result<Applied, StoreError> {
        self.before("cycle").await?;
        self.inner().cycle(o, n, c, now, g).await
    }
    async fn destroy(&self, k: &SessionKey) -> Result<crate::Destroyed, StoreError> {
        self.before("destroy").await?;
        self.inner().destroy(k).await
    }
    async fn list_user(&self, u: &str, now: Millis) -> Result<Vec<UserSession>, StoreError> {
        self.before("list_user").await?;
        self.inner().list_user(u, now).await
    }
    async fn destroy_user(
        &self,
        u: &str,
        keep: Option<&SessionKey>,
        now: Millis,
    ) -> Result<u64, StoreError> {
        self.before("destroy_user").await?;
        self.inner().destroy_user(u, keep, now).await
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.before("stats").await?;
        self.inner().stats().await
    }
    async fn record_end(
        &self,
        key: &SessionKey,
        reason: crate::events::EndReason,
        until: Millis,
    ) -> Result<(), StoreError> {
        self.before("record_end").await?;
        self.inner().record_end(key, reason, until).await
    }
    async fn end(
        &self,
        key: &SessionKey,
        reason: crate::events::EndReason,
        until: Millis,
    ) -> Result<crate::Ended, StoreError> {
        self.before("end").await?;
        self.inner().end(key, reason, until).await
    }
    async fn end_user(
        &self,
        u: &str,
        keep: Option<&SessionKey>,
        reason: crate::events::EndReason,
        until: Millis,
        now: Millis,
    ) -> Result<Vec<SessionKey>, StoreError> {
        self.before("end_user").await?;
        self.inner().end_user(u, keep, reason, until, now).await
    }
    async fn end_reason(
        &self,
        key: &SessionKey,
        now: Millis,
    ) -> Result<Option<crate::events::EndReason>, StoreError> {
        self.before("end_reason").await?;
        self.inner().end_reason(key, now).await
    }
    async fn scan(
        &self,
        cursor: Option<&str>,
        count: usize,
    ) -> Result<crate::store::ScanPage, StoreError> {
        self.before("scan").await?;
        self.inner().scan(cursor, count).await
    }
    fn load_cached(&self, k: &SessionKey, now: Millis, r: Option<Refresh>) -> Option<Loaded> {
        self.inner().load_cached(k, now, r)
    }
    fn cached(&self, k: &SessionKey) -> Option<Record> {
        self.inner().cached(k)
    }
    fn can_cycle_to(&self, old: &SessionKey, new: &SessionKey) -> bool {
        self.inner().can_cycle_to(old, new)
    }
    fn ended_recently(&self, key: &SessionKey, issued: Millis) -> bool {
        self.inner().ended_recently(key, issued)
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.before("ping").await?;
        self.inner().ping().await
    }
}

/// Counts every call into a store.
pub struct CountingStore {
    inner: DynStore,
    calls: AtomicU64,
    log: std::sync::Mutex<Vec<&'static str>>,
}

impl CountingStore {
    /// Wraps `inner`.
    #[must_use]
    pub fn new(inner: DynStore) -> Self {
        Self {
            inner,
            calls: AtomicU64::new(0),
            log: std::sync::Mutex::default(),
        }
    }

    /// Calls since the last `take`, and their names; resets both.
    pub fn take(&self) -> (u64, Vec<&'static str>) {
        let log = std::mem::take(
            &mut *self
                .log
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        (self.calls.swap(0, Ordering::SeqCst), log)
    }

    fn count(&self, name: &'static str) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(name);
    }
}

#[async_trait]
impl Hook for CountingStore {
    fn inner(&self) -> &DynStore {
        &self.inner
    }
    async fn before(&self, op: &'static str) -> Result<(), StoreError> {
        self.count(op);
        Ok(())
    }
}

/// A store that can be switched to fail or to hang, for failure-policy tests.
pub struct FlakyStore {
    inner: DynStore,
    /// Fail every call with [`StoreError::Unavailable`].
    pub down: AtomicBool,
    /// Never answer (exercises the timeout).
    pub hang: AtomicBool,
}

impl FlakyStore {
    /// Wraps `inner`, healthy.
    #[must_use]
    pub fn new(inner: DynStore) -> Self {
        Self {
            inner,
            down: AtomicBool::new(false),
            hang: AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl Hook for FlakyStore {
    fn inner(&self) -> &DynStore {
        &self.inner
    }
    async fn before(&self, _op: &'static str) -> Result<(), StoreError> {
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::unavailable(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "store is down (test)",
            )));
        }
        Ok(())
    }
}

/// A store and whatever must stay alive as long as it (a test server, a cluster): a store
/// test's `make_store` returns one, so that the server dies with the store and not before.
pub struct Kept<S, G> {
    store: Arc<S>,
    shared: DynStore,
    _alive: G,
}

impl<S: SessionStore, G> Kept<S, G> {
    /// Keeps `alive` as long as `store`.
    pub fn new(store: S, alive: G) -> Self {
        let store = Arc::new(store);
        Self {
            shared: store.clone(),
            store,
            _alive: alive,
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }
}

#[async_trait]
impl<S: SessionStore, G: Send + Sync + 'static> Hook for Kept<S, G> {
    fn inner(&self) -> &DynStore {
        &self.shared
    }
    async fn before(&self, _op: &'static str) -> Result<(), StoreError> {
        Ok(())
    }
}
