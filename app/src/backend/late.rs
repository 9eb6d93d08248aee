//! A backend that is not there yet. On Cloud Run and Kubernetes start order is not guaranteed
//! and instances start during outages too (scaling out), so an app whose Redis or PostgreSQL
//! is unreachable at boot starts anyway: `/healthz` answers, `/readyz` says `503` and what is
//! pending, session routes follow the failure policy (a `503` at once, or the fallback
//! ticket), and a background task connects (the store's whole set-up: cluster detection,
//! scripts, schema, todo tables) with waits of 250 ms doubling to 5 s, until it succeeds.
//! Only what is wrong at boot whatever the network does (a malformed URL, a missing CA file)
//! stops the start.

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use cloakroom::{
    Applied, Changes, Destroyed, Loaded, Millis, Record, Refresh, SessionKey, SessionStore,
    StoreError, StoreStats, UserSession,
};

use crate::backend::{Backend, BackendError};
use crate::todos::{Todo, TodoError, TodoStore};

/// One try at opening the backend.
pub type Opening =
    std::pin::Pin<Box<dyn Future<Output = Result<Backend, BackendError>> + Send + 'static>>;

/// What the background task has connected, once it has.
struct Connected {
    sessions: Arc<dyn SessionStore>,
    todos: Arc<dyn TodoStore>,
    redis: Option<cloakroom_redis::RedisStore>,
}

/// The backend being connected: empty until the task succeeds.
pub struct Late {
    connected: OnceLock<Connected>,
    /// What is pending, and the last error, for `/readyz` and the logs.
    pending: Mutex<String>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Late {
    fn drop(&mut self) {
        if let Some(task) = self.lock_task().take() {
            task.abort();
        }
    }
}

impl Late {
    fn lock_task(&self) -> std::sync::MutexGuard<'_, Option<tokio::task::AbortHandle>> {
        self.task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts connecting with `open` in the background; `first` is why the first try failed.
    pub fn start<F>(what: String, first: &BackendError, open: F) -> Arc<Self>
    where
        F: Fn() -> Opening + Send + 'static,
    {
        let late = Arc::new(Self {
            connected: OnceLock::new(),
            pending: Mutex::new(format!("connecting to {what}: {first}")),
            task: Mutex::new(None),
        });
        let weak = Arc::downgrade(&late);
        let task = tokio::spawn(async move {
            let mut wait = Duration::from_millis(250);
            loop {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
                let outcome = open().await;
                // The app has gone: stop.
                let Some(late) = weak.upgrade() else { return };
                match outcome {
                    Ok(backend) => {
                        tracing::info!(store = %backend.description, "connected to the session store");
                        let _ = late.connected.set(Connected {
                            sessions: backend.sessions.clone(),
                            todos: backend.todos.clone(),
                            redis: backend.redis.clone(),
                        });
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the session store is still unreachable; retrying");
                        *late
                            .pending
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) =
                            format!("connecting to {what}: {e}");
                    }
                }
            }
        });
        *late.lock_task() = Some(task.abort_handle());
        late
    }

    /// What is still pending (`None` once connected).
    #[must_use]
    pub fn pending(&self) -> Option<String> {
        if self.connected.get().is_some() {
            return None;
        }
        Some(
            self.pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }

    /// The Redis store, once connected to one.
    #[must_use]
    pub fn redis(&self) -> Option<cloakroom_redis::RedisStore> {
        self.connected.get().and_then(|c| c.redis.clone())
    }

    fn sessions(&self) -> Result<&Arc<dyn SessionStore>, StoreError> {
        self.connected
            .get()
            .map(|c| &c.sessions)
            .ok_or_else(not_yet)
    }

    fn todos(&self) -> Result<&Arc<dyn TodoStore>, StoreError> {
        self.connected.get().map(|c| &c.todos).ok_or_else(not_yet)
    }
}

fn not_yet() -> StoreError {
    StoreError::unavailable(std::io::Error::other(
        "the session store is not connected yet",
    ))
}

/// The session store a [`Late`] backend will have.
pub struct LateSessions(pub Arc<Late>);

#[async_trait]
impl SessionStore for LateSessions {
    async fn load(
        &self,
        key: &SessionKey,
        now: Millis,
        refresh: Option<Refresh>,
    ) -> Result<Option<Loaded>, StoreError> {
        self.0.sessions()?.load(key, now, refresh).await
    }
    async fn create(&self, key: &SessionKey, record: &Record) -> Result<(), StoreError> {
        self.0.sessions()?.create(key, record).await
    }
    async fn apply(
        &self,
        key: &SessionKey,
        changes: &Changes,
        now: Millis,
    ) -> Result<Applied, StoreError> {
        self.0.sessions()?.apply(key, changes, now).await
    }
    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        changes: &Changes,
        now: Millis,
        grace_until: Millis,
    ) -> Result<Applied, StoreError> {
        let store = self.0.sessions()?;
        store.cycle(old, new, changes, now, grace_until).await
    }
    async fn destroy(&self, key: &SessionKey) -> Result<Destroyed, StoreError> {
        self.0.sessions()?.destroy(key).await
    }
    async fn list_user(&self, user: &str, now: Millis) -> Result<Vec<UserSession>, StoreError> {
        self.0.sessions()?.list_user(user, now).await
    }
    async fn destroy_user(
        &self,
        user: &str,
        keep: Option<&SessionKey>,
        now: Millis,
    ) -> Result<u64, StoreError> {
        self.0.sessions()?.destroy_user(user, keep, now).await
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.0.sessions()?.stats().await
    }
    async fn record_end(
        &self,
        key: &SessionKey,
        reason: cloakroom::events::EndReason,
        until: Millis,
    ) -> Result<(), StoreError> {
        self.0.sessions()?.record_end(key, reason, until).await
    }
    async fn end_reason(
        &self,
        key: &SessionKey,
        now: Millis,
    ) -> Result<Option<cloakroom::events::EndReason>, StoreError> {
        self.0.sessions()?.end_reason(key, now).await
    }
    async fn end(
        &self,
        key: &SessionKey,
        reason: cloakroom::events::EndReason,
        until: Millis,
    ) -> Result<cloakroom::Ended, StoreError> {
        self.0.sessions()?.end(key, reason, until).await
    }
    async fn end_user(
        &self,
        user: &str,
        keep: Option<&SessionKey>,
        reason: cloakroom::events::EndReason,
        until: Millis,
        now: Millis,
    ) -> Result<Vec<SessionKey>, StoreError> {
        let store = self.0.sessions()?;
        store.end_user(user, keep, reason, until, now).await
    }
    async fn scan(
        &self,
        cursor: Option<&str>,
        count: usize,
    ) -> Result<cloakroom::ScanPage, StoreError> {
        self.0.sessions()?.scan(cursor, count).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.0.sessions()?.ping().await
    }
    fn load_cached(
        &self,
        key: &SessionKey,
        now: Millis,
        refresh: Option<Refresh>,
    ) -> Option<Loaded> {
        self.0.sessions().ok()?.load_cached(key, now, refresh)
    }
    fn cached(&self, key: &SessionKey) -> Option<Record> {
        self.0.sessions().ok()?.cached(key)
    }
    fn can_cycle_to(&self, old: &SessionKey, new: &SessionKey) -> bool {
        self.0.sessions().map_or(true, |s| s.can_cycle_to(old, new))
    }
    fn ended_recently(&self, key: &SessionKey, issued: Millis) -> bool {
        self.0
            .sessions()
            .is_ok_and(|s| s.ended_recently(key, issued))
    }
}

/// The todo store a [`Late`] backend will have.
pub struct LateTodos(pub Arc<Late>);

#[async_trait]
impl TodoStore for LateTodos {
    async fn list(&self, user: &str) -> Result<Vec<Todo>, TodoError> {
        self.0.todos()?.list(user).await
    }
    async fn add(&self, user: &str, title: &str) -> Result<Todo, TodoError> {
        self.0.todos()?.add(user, title).await
    }
    async fn complete(&self, user: &str, id: u64) -> Result<bool, TodoError> {
        self.0.todos()?.complete(user, id).await
    }
    async fn delete(&self, user: &str, id: u64) -> Result<bool, TodoError> {
        self.0.todos()?.delete(user, id).await
    }
}
