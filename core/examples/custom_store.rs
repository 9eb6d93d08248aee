//! A custom store: any type that implements `SessionStore` can hold the sessions. This one
//! wraps another store and counts what the layer asks of it (a decorator, the shape of a
//! caching, logging or metrics store); `docs/store-contract.md` says what each method must
//! guarantee, and `cloakroom::store_suite!` checks a store against it.
//!
//! `cargo run -p cloakroom --example custom_store`, then open http://127.0.0.1:3000.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use axum::{routing::get, Router};
use cloakroom::{
    Applied, Changes, Destroyed, KeyRing, Loaded, MemoryStore, Millis, Record, Refresh, Session,
    SessionConfig, SessionError, SessionKey, SessionLayer, SessionStore, StoreError, StoreStats,
    UserSession,
};

/// Counts reads and writes, and passes every call to `inner`.
#[derive(Default)]
pub struct Counting<S> {
    inner: S,
    reads: AtomicU64,
    writes: AtomicU64,
}

impl<S> Counting<S> {
    fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }
    fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl<S: SessionStore> SessionStore for Counting<S> {
    async fn load(
        &self,
        key: &SessionKey,
        now: Millis,
        refresh: Option<Refresh>,
    ) -> Result<Option<Loaded>, StoreError> {
        self.read();
        self.inner.load(key, now, refresh).await
    }
    async fn create(&self, key: &SessionKey, record: &Record) -> Result<(), StoreError> {
        self.wrote();
        self.inner.create(key, record).await
    }
    async fn apply(
        &self,
        key: &SessionKey,
        changes: &Changes,
        now: Millis,
    ) -> Result<Applied, StoreError> {
        self.wrote();
        self.inner.apply(key, changes, now).await
    }
    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        changes: &Changes,
        now: Millis,
        grace_until: Millis,
    ) -> Result<Applied, StoreError> {
        self.wrote();
        self.inner.cycle(old, new, changes, now, grace_until).await
    }
    async fn destroy(&self, key: &SessionKey) -> Result<Destroyed, StoreError> {
        self.wrote();
        self.inner.destroy(key).await
    }
    async fn list_user(&self, user: &str, now: Millis) -> Result<Vec<UserSession>, StoreError> {
        self.read();
        self.inner.list_user(user, now).await
    }
    async fn destroy_user(
        &self,
        user: &str,
        keep: Option<&SessionKey>,
        now: Millis,
    ) -> Result<u64, StoreError> {
        self.wrote();
        self.inner.destroy_user(user, keep, now).await
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.inner.stats().await
    }
}

/// The app and its store (a function, so the example's test drives the same router).
pub fn app() -> (Router, Arc<Counting<MemoryStore>>) {
    let store = Arc::new(Counting::<MemoryStore>::default());
    let counted = store.clone();
    let page = move |session: Session| {
        let store = counted.clone();
        async move {
            let n = session.increment("visits", 1).await?;
            Ok::<_, SessionError>(format!(
                "visit {n}; the store served {} reads and {} writes",
                store.reads.load(Ordering::Relaxed),
                store.writes.load(Ordering::Relaxed)
            ))
        }
    };
    let keys = KeyRing::generate().expect("OS randomness");
    let config = SessionConfig::builder(keys).build().expect("valid config");
    let router = Router::new()
        .route("/", get(page))
        .layer(SessionLayer::from_arc(store.clone(), config));
    (router, store)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app().0).await
}
