//! The store contract: what every session store does, at field granularity.
//!
//! See `docs/store-contract.md` for the full semantics. In short: every write is conditional on
//! the session still existing, so a request that finishes after a logout can never bring the
//! session back, and writes name fields, so concurrent requests never overwrite each other.

use crate::events::EndReason;
use std::time::Duration;

use async_trait::async_trait;

use crate::id::SessionKey;
use crate::record::{
    Applied, Changes, Destroyed, Ended, Loaded, Millis, Record, Refresh, UserSession,
};

/// Why a store operation failed. Never a string: callers match on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// `create` or `cycle` found a session already filed under the new key.
    #[error("a session with this ID already exists")]
    IdCollision,
    /// An increment targeted a field that does not hold an integer (or would overflow).
    #[error("field {0:?} does not hold an integer")]
    NotAnInteger(String),
    /// The store did not answer within the configured timeout.
    #[error("the session store did not answer within {0:?}")]
    Timeout(Duration),
    /// The circuit breaker is open after repeated failures; the call was not attempted.
    #[error("the session store is unavailable (circuit open after repeated failures)")]
    CircuitOpen,
    /// The store could not be reached or answered with an error.
    #[error("the session store is unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Stored data could not be decoded. The text names what is damaged, never its content.
    #[error("stored session data is corrupt: {0}")]
    Corrupt(String),
    /// The store is healthy but has more work queued than it accepts: the call was refused at
    /// once instead of waiting (a flood of writes must not make every caller time out). Not
    /// an outage: it does not open the circuit breaker.
    #[error("the session store is overloaded; try again shortly")]
    Overloaded,
    /// A compare-and-set found the field changed since it was read ([`crate::Changes::expect`]);
    /// nothing was written.
    #[error("field {0:?} changed concurrently; nothing was written")]
    Conflict(String),
    /// The write would take the session over one of its [`crate::Limits`]; nothing was written.
    #[error("the session would exceed its {0} limit")]
    LimitExceeded(Limit),
    /// This store does not offer an optional capability (the per-user index, size figures):
    /// the default of [`SessionStore::list_user`], [`SessionStore::destroy_user`] and
    /// [`SessionStore::stats`]. Not an outage.
    #[error("this session store does not support {0}")]
    Unsupported(&'static str),
}

/// Which of the session's [`crate::Limits`] a write would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The byte size of the data.
    Bytes,
    /// The number of fields.
    Fields,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Bytes => "size",
            Self::Fields => "field-count",
        })
    }
}

impl StoreError {
    /// Wraps any backend error as [`StoreError::Unavailable`].
    pub fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Unavailable(Box::new(error))
    }

    /// Whether the error says the backend is unhealthy (as opposed to a problem with one
    /// request's data); the circuit breaker counts only these.
    #[must_use]
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            Self::Timeout(_) | Self::CircuitOpen | Self::Unavailable(_)
        )
    }
}

/// What [`StoreError::Unsupported`] names for the per-user index.
const USER_INDEX: &str = "the per-user index";

/// What [`StoreError::Unsupported`] names for [`SessionStore::scan`].
pub const SCAN: &str = "listing every session";

/// One page of [`SessionStore::scan`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// Session keys (in no promised order).
    pub keys: Vec<SessionKey>,
    /// Where the next page starts; `None` after the last.
    pub next: Option<String>,
}

impl ScanPage {
    /// A page of keys taken in key order from a store that keeps them sorted: the cursor is
    /// the last key given, and a short page is the last.
    #[must_use]
    pub fn ordered(keys: Vec<SessionKey>, count: usize) -> Self {
        let next = (keys.len() >= count.max(1))
            .then(|| keys.last().map(ToString::to_string))
            .flatten();
        Self { keys, next }
    }

    /// The key an ordered cursor names (see [`ScanPage::ordered`]).
    ///
    /// # Errors
    /// [`StoreError::Unsupported`] for a cursor no ordered store gave.
    pub fn after(cursor: Option<&str>) -> Result<Option<SessionKey>, StoreError> {
        cursor
            .map(|c| SessionKey::parse(c).ok_or(StoreError::Unsupported("that cursor")))
            .transpose()
    }
}

/// Size figures for operators (`cloakroom stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Live sessions (a cheap count; may include a few expired ones not yet purged).
    pub sessions: u64,
    /// Bytes the store uses for sessions, if it can tell.
    pub bytes: Option<u64>,
}

/// The sessions a [`SessionStore::destroy_user`] built on [`SessionStore::list_user`] ends:
/// every listed one but `keep` and `spared`, the session `keep` reaches when a renewal made
/// it an alias. List first and resolve `keep` second: a renewal of `keep` that the listing saw
/// is the caller's own session; one after it is not in the listing.
#[must_use]
pub fn sessions_to_end(
    listed: Vec<UserSession>,
    keep: Option<&SessionKey>,
    spared: Option<SessionKey>,
) -> Vec<SessionKey> {
    listed
        .into_iter()
        .map(|s| s.key)
        .filter(|k| Some(k) != keep && Some(*k) != spared)
        .collect()
}

/// A session store. Every method is one logical, atomic operation.
///
/// `now` is always passed in, so that deadlines are judged by one clock (the app's) and the
/// behavioural suite can test expiry without sleeping.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Loads a live session. Follows a cycle's alias within its grace window. If `refresh` is
    /// given and due, slides the idle deadline in the same operation.
    async fn load(
        &self,
        key: &SessionKey,
        now: Millis,
        refresh: Option<Refresh>,
    ) -> Result<Option<Loaded>, StoreError>;

    /// Files a new session. Fails with [`StoreError::IdCollision`] if `key` is taken.
    async fn create(&self, key: &SessionKey, record: &Record) -> Result<(), StoreError>;

    /// Applies `changes` atomically, only if the session exists and is alive at `now`;
    /// otherwise writes nothing and returns [`Applied::Gone`]. A key that is a cycle's alias
    /// is never written through: nothing is written and the answer is [`Applied::Aliased`]
    /// (an old ID must not be able to change the session it once named).
    async fn apply(
        &self,
        key: &SessionKey,
        changes: &Changes,
        now: Millis,
    ) -> Result<Applied, StoreError>;

    /// Moves a live session from `old` to `new`, applying `changes`; `old` stays an alias
    /// of `new` until `grace_until` (no alias at all when `grace_until <= now`), then is gone.
    /// [`Applied::Gone`] if `old` is not live; [`Applied::Aliased`] (nothing written) if `old`
    /// is itself an alias: only the current ID may cycle.
    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        changes: &Changes,
        now: Millis,
        grace_until: Millis,
    ) -> Result<Applied, StoreError>;

    /// Deletes the session filed under `key` and every alias that reaches it. Given an alias,
    /// deletes only the alias ([`Destroyed::Alias`]): an old ID cannot end the session.
    /// Idempotent.
    async fn destroy(&self, key: &SessionKey) -> Result<Destroyed, StoreError>;

    /// The live sessions of a user. Optional, with [`SessionStore::destroy_user`]: the
    /// per-user index behind "log out everywhere", "your sessions" and the per-user session
    /// limit. A store without it keeps the default, [`StoreError::Unsupported`], and those
    /// features answer `501`.
    async fn list_user(&self, _user: &str, _now: Millis) -> Result<Vec<UserSession>, StoreError> {
        Err(StoreError::Unsupported(USER_INDEX))
    }

    /// Destroys every session of a user except `keep` (and the session `keep` reaches when a
    /// renewal made it an alias: the caller's own), and every alias that reaches one of
    /// them; returns how many sessions went. Optional, with [`SessionStore::list_user`].
    async fn destroy_user(
        &self,
        _user: &str,
        _keep: Option<&SessionKey>,
        _now: Millis,
    ) -> Result<u64, StoreError> {
        Err(StoreError::Unsupported(USER_INDEX))
    }

    /// Keeps why the session `key` ended until `until`: a tombstone of a few dozen bytes,
    /// keyed like the session (a hash of its ID), bounded in time (the layer keeps one for a
    /// day) and in count (only signed-in sessions get one). The next request with that
    /// session's cookie learns the reason ([`crate::Session::ended`]). Optional: by default
    /// nothing is kept, and an ended session reads as expired.
    async fn record_end(
        &self,
        _key: &SessionKey,
        _reason: EndReason,
        _until: Millis,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Destroys the session `key` as [`SessionStore::destroy`] does and, in the same atomic
    /// step, keeps `reason` until `until` if it was a signed-in session (see
    /// [`SessionStore::record_end`]); says whose session it was. One call for a logout that
    /// explains itself, even one that never read the session. Optional: by default a plain
    /// destroy that learns no user and keeps nothing ([`Ended::plain`]); the layer then keeps
    /// the reason with a second call when the request had read the session.
    async fn end(
        &self,
        key: &SessionKey,
        _reason: EndReason,
        _until: Millis,
    ) -> Result<Ended, StoreError> {
        Ok(Ended::plain(self.destroy(key).await?))
    }

    /// Ends every session of `user` but `keep` as [`SessionStore::destroy_user`] does,
    /// keeping `reason` until `until` for each; returns the keys of the sessions that ended.
    /// Optional, with the per-user index: by default the sessions are listed first, then
    /// destroyed, then given their tombstones one by one (best effort).
    async fn end_user(
        &self,
        user: &str,
        keep: Option<&SessionKey>,
        reason: EndReason,
        until: Millis,
        now: Millis,
    ) -> Result<Vec<SessionKey>, StoreError> {
        let listed = self.list_user(user, now).await?;
        let spared = match keep {
            Some(k) => self.load(k, now, None).await?.map(|l| l.key),
            None => None,
        };
        let doomed = sessions_to_end(listed, keep, spared);
        if doomed.is_empty() {
            return Ok(doomed);
        }
        self.destroy_user(user, keep, now).await?;
        for key in &doomed {
            // A failure here must not undo the revocation: the session reads as expired.
            let _ = self.record_end(key, reason, until).await;
        }
        Ok(doomed)
    }

    /// Why the session `key` ended, if a tombstone kept at `now` says so (see
    /// [`SessionStore::record_end`]), or the store still holds the expired session and can
    /// tell which deadline passed ([`EndReason::ExpiredIdle`],
    /// [`EndReason::ExpiredAbsolute`]); `None` by default.
    async fn end_reason(
        &self,
        _key: &SessionKey,
        _now: Millis,
    ) -> Result<Option<EndReason>, StoreError> {
        Ok(None)
    }

    /// A page of at most about `count` keys of the sessions this store holds (aliases may be
    /// among them), from `cursor` (`None`: the start); the page's `next` is where the
    /// following page starts, `None` after the last. Resumable: a cursor stays valid across
    /// processes, and a key present for the whole walk is listed at least once. Optional, for
    /// moving sessions to another store (`cloakroom migrate`): the default is
    /// [`StoreError::Unsupported`].
    async fn scan(&self, _cursor: Option<&str>, _count: usize) -> Result<ScanPage, StoreError> {
        Err(StoreError::Unsupported(SCAN))
    }

    /// Cheap size figures (no full scan), for operators. Optional: the default is
    /// [`StoreError::Unsupported`].
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        Err(StoreError::Unsupported("size figures"))
    }

    /// The record filed under `key` if this store keeps a coherent copy in process (a read
    /// cache), without a round trip; `None` otherwise (the default). The layer uses it to
    /// know a session's fields before a blind write. It must never return a record that a
    /// write through this process has changed since.
    fn cached(&self, _key: &SessionKey) -> Option<Record> {
        None
    }

    /// What [`SessionStore::load`] would answer, when the store can say it without I/O: a
    /// live session in a coherent in-process copy (the Redis read cache), not through an
    /// alias, and no refresh due. `None` means "ask `load`" (the default). The layer tries it
    /// first, so a cache hit costs no future, no timer and no boxed call through the
    /// decorators. It must never answer what `load` would not.
    fn load_cached(
        &self,
        _key: &SessionKey,
        _now: Millis,
        _refresh: Option<Refresh>,
    ) -> Option<Loaded> {
        None
    }

    /// Whether a session may move from `old` to `new` in [`SessionStore::cycle`]. A store
    /// that shards by key (Redis Cluster) answers `false` when the two keys would live in
    /// different shards, and the layer draws another ID: a cycle stays one atomic step on
    /// one shard. Every key is fine by default.
    fn can_cycle_to(&self, _old: &SessionKey, _new: &SessionKey) -> bool {
        true
    }

    /// Whether this store heard, without asking anyone, that the session `key` ended lately
    /// on another app instance (the Redis store listens for the ends its scripts announce),
    /// at or after `issued`; or that it had to forget ends that happened at or after it (a
    /// bounded memory, see [`crate::RecentlyEnded`]). The layer refuses a session's fallback
    /// ticket issued at `issued` when this says so ([`crate::FailurePolicy::Fallback`]);
    /// `false` by default.
    fn ended_recently(&self, _key: &SessionKey, _issued: Millis) -> bool {
        false
    }

    /// Whether the store answers at all (for `/readyz`); by default, whether
    /// [`SessionStore::stats`] does (a store without figures is taken to be up).
    async fn ping(&self) -> Result<(), StoreError> {
        match self.stats().await {
            Ok(_) | Err(StoreError::Unsupported(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl<T: SessionStore + ?Sized> SessionStore for std::sync::Arc<T> {
    async fn load(
        &self,
        key: &SessionKey,
        now: Millis,
        refresh: Option<Refresh>,
    ) -> Result<Option<Loaded>, StoreError> {
        (**self).load(key, now, refresh).await
    }
    async fn create(&self, key: &SessionKey, record: &Record) -> Result<(), StoreError> {
        (**self).create(key, record).await
    }
    async fn apply(
        &self,
        key: &SessionKey,
        changes: &Changes,
        now: Millis,
    ) -> Result<Applied, StoreError> {
        (**self).apply(key, changes, now).await
    }
    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        changes: &Changes,
        now: Millis,
        grace_until: Millis,
    ) -> Result<Applied, StoreError> {
        (**self).cycle(old, new, changes, now, grace_until).await
    }
    async fn destroy(&self, key: &SessionKey) -> Result<Destroyed, StoreError> {
        (**self).destroy(key).await
    }
    async fn list_user(&self, user: &str, now: Millis) -> Result<Vec<UserSession>, StoreError> {
        (**self).list_user(user, now).await
    }
    async fn destroy_user(
        &self,
        user: &str,
        keep: Option<&SessionKey>,
        now: Millis,
    ) -> Result<u64, StoreError> {
        (**self).destroy_user(user, keep, now).await
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        (**self).stats().await
    }
    async fn scan(&self, cursor: Option<&str>, count: usize) -> Result<ScanPage, StoreError> {
        (**self).scan(cursor, count).await
    }
    async fn record_end(
        &self,
        key: &SessionKey,
        reason: EndReason,
        until: Millis,
    ) -> Result<(), StoreError> {
        (**self).record_end(key, reason, until).await
    }
    async fn end_reason(
        &self,
        key: &SessionKey,
        now: Millis,
    ) -> Result<Option<EndReason>, StoreError> {
        (**self).end_reason(key, now).await
    }
    async fn end(
        &self,
        key: &SessionKey,
        reason: EndReason,
        until: Millis,
    ) -> Result<Ended, StoreError> {
        (**self).end(key, reason, until).await
    }
    async fn end_user(
        &self,
        user: &str,
        keep: Option<&SessionKey>,
        reason: EndReason,
        until: Millis,
        now: Millis,
    ) -> Result<Vec<SessionKey>, StoreError> {
        (**self).end_user(user, keep, reason, until, now).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        (**self).ping().await
    }
    fn cached(&self, key: &SessionKey) -> Option<Record> {
        (**self).cached(key)
    }
    fn load_cached(
        &self,
        key: &SessionKey,
        now: Millis,
        refresh: Option<Refresh>,
    ) -> Option<Loaded> {
        (**self).load_cached(key, now, refresh)
    }
    fn can_cycle_to(&self, old: &SessionKey, new: &SessionKey) -> bool {
        (**self).can_cycle_to(old, new)
    }
    fn ended_recently(&self, key: &SessionKey, issued: Millis) -> bool {
        (**self).ended_recently(key, issued)
    }
}
