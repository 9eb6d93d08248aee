//! The session handle a handler works with: lazy loading, field-level change tracking, and
//! the commit that runs before the response head is sent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::Mutex;

use crate::config::{FailurePolicy, SessionConfig};
use crate::guard::Guarded;
use crate::id::{SessionId, SessionKey};
use crate::metrics::bump;
use crate::record::{now_millis, Applied, Changes, Millis, Record, Refresh, UserChange};
use crate::store::StoreError;
use crate::SessionError;

/// Prefix of the fields Cloakroom keeps for itself (flash messages); user keys may not use it.
pub(crate) const RESERVED_PREFIX: &str = "__";
const FLASH_PREFIX: &str = "__flash.";
/// Attempts at drawing an unused ID before giving up (a collision is astronomically unlikely;
/// more than one in a row means something else is wrong).
const CREATE_ATTEMPTS: usize = 3;

/// Everything a layer shares with the sessions it hands out.
pub(crate) struct Shared {
    pub(crate) config: SessionConfig,
    pub(crate) store: Guarded,
}

impl Shared {
    fn millis(d: Duration) -> Millis {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }

    fn refresh(&self, now: Millis) -> Refresh {
        let idle = Self::millis(self.config.idle_timeout);
        // Truncation is fine: this is a throttle, not a deadline.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let interval = (idle as f64 * self.config.refresh_fraction) as u64;
        Refresh {
            if_deadline_before: now.saturating_add(idle).saturating_sub(interval),
            new_deadline: now.saturating_add(idle),
        }
    }

    fn new_record(&self, now: Millis) -> Record {
        Record::new(
            now,
            now.saturating_add(Self::millis(self.config.idle_timeout)),
            now.saturating_add(Self::millis(self.config.absolute_lifetime)),
        )
    }
}

/// Does the store hold the session this request names?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existence {
    /// A validly signed cookie names it; not asked yet.
    Unknown,
    /// A blind write found it, but its data is not loaded.
    Confirmed,
    /// Loaded (or created by this request): `State::record` holds it.
    Loaded,
    /// There is no session: no cookie, or it expired, or it was destroyed.
    Absent,
}

/// What the response must do with the cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CookieOut {
    Keep,
    Set,
    Remove,
}

struct State {
    id: Option<SessionId>,
    key: Option<SessionKey>,
    existence: Existence,
    /// Working copy: the loaded record with this request's changes applied.
    record: Option<Record>,
    pending: Changes,
    cycle: bool,
    /// A session this request ended, to delete in the store at commit.
    destroyed: Option<SessionKey>,
    /// Reached through a cycle's alias: this client must not be handed a cookie.
    via_alias: bool,
    /// The cookie was signed by an older key and should be re-signed.
    stale_signature: bool,
    /// The store failed under [`FailurePolicy::Anonymous`]: write nothing.
    degraded: bool,
    cookie: CookieOut,
}

/// A request's session. Cheap to clone; every clone is the same session.
///
/// Nothing touches the store until a method needs it; data methods load the session once per
/// request, and all changes are written in one conditional store call after the handler.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
    state: Arc<Mutex<State>>,
}

/// One entry of a user's session list (see [`Session::user_sessions`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    /// The store key: a safe handle for this session, usable to revoke it.
    pub key: String,
    /// Creation time (Unix ms).
    pub created: Millis,
    /// Last expiry refresh (Unix ms): when it was last seen, to within the refresh throttle.
    pub last_seen: Millis,
    /// When it expires unless used (Unix ms).
    pub expires: Millis,
    /// Whether this is the session making the request.
    pub current: bool,
    /// Its data, as stored (JSON text per key).
    pub fields: BTreeMap<String, String>,
}

fn check_key(shared: &Shared, key: &str) -> Result<(), SessionError> {
    if key.is_empty() || key.len() > shared.config.max_key_len || key.starts_with(RESERVED_PREFIX) {
        return Err(SessionError::InvalidKey(key.chars().take(64).collect()));
    }
    Ok(())
}

impl Session {
    pub(crate) fn new(shared: Arc<Shared>, cookie: Option<(SessionId, bool)>) -> Self {
        let (id, key, existence, stale) = match cookie {
            Some((id, stale)) => {
                let key = id.key();
                (Some(id), Some(key), Existence::Unknown, stale)
            }
            None => (None, None, Existence::Absent, false),
        };
        Self {
            shared,
            state: Arc::new(Mutex::new(State {
                id,
                key,
                existence,
                record: None,
                pending: Changes::default(),
                cycle: false,
                destroyed: None,
                via_alias: false,
                stale_signature: stale,
                degraded: false,
                cookie: CookieOut::Keep,
            })),
        }
    }

    /// Loads the session if this request has not yet.
    async fn ensure_loaded(&self, state: &mut State) -> Result<(), SessionError> {
        if !matches!(state.existence, Existence::Unknown | Existence::Confirmed) {
            return Ok(());
        }
        let Some(key) = state.key else {
            state.existence = Existence::Absent;
            return Ok(());
        };
        let now = now_millis();
        let refresh = self.shared.refresh(now);
        let store = &self.shared.store;
        bump(&store.metrics.loads);
        match store.call(store.store.load(&key, now, Some(refresh))).await {
            Ok(Some(loaded)) => {
                state.via_alias = loaded.via_alias(&key);
                if loaded.refreshed {
                    bump(&store.metrics.refreshes);
                    if !self.shared.config.browser_session {
                        state.cookie = CookieOut::Set;
                    }
                }
                state.key = Some(loaded.key);
                state.record = Some(loaded.record);
                state.existence = Existence::Loaded;
            }
            Ok(None) => {
                tracing::debug!(session = %key.fingerprint(), "cookie names no live session");
                forget(state);
                state.cookie = CookieOut::Remove;
            }
            Err(e) if self.shared.config.failure_policy == FailurePolicy::Anonymous => {
                tracing::warn!(error = %e, "session store failed; serving as anonymous");
                forget(state);
                state.degraded = true;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Reads the value under `key`, or `None` if there is none.
    ///
    /// # Errors
    /// [`SessionError::Store`] if the session cannot be loaded, [`SessionError::Decode`] if the
    /// stored value is not a `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let mut state = self.state.lock().await;
        self.ensure_loaded(&mut state).await?;
        let Some(text) = state.record.as_ref().and_then(|r| r.fields.get(key)) else {
            return Ok(None);
        };
        serde_json::from_str(text)
            .map(Some)
            .map_err(|source| SessionError::Decode {
                key: key.to_owned(),
                source,
            })
    }

    /// Stores `value` under `key` (written when the request ends).
    ///
    /// # Errors
    /// [`SessionError::InvalidKey`], [`SessionError::Encode`], [`SessionError::TooLarge`]
    /// (nothing is stored then), or a store error from loading the session.
    pub async fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<(), SessionError> {
        check_key(&self.shared, key)?;
        let text = serde_json::to_string(&value).map_err(|source| SessionError::Encode {
            key: key.to_owned(),
            source,
        })?;
        self.set_field(key, text).await
    }

    async fn set_field(&self, key: &str, text: String) -> Result<(), SessionError> {
        let mut state = self.state.lock().await;
        self.ensure_loaded(&mut state).await?;
        let limit = self.shared.config.max_size;
        let current = state.record.as_ref().map_or(0, Record::data_size);
        let replaced = state
            .record
            .as_ref()
            .and_then(|r| r.fields.get(key))
            .map_or(0, |old| key.len() + old.len());
        let size = current - replaced + key.len() + text.len();
        if size > limit {
            return Err(SessionError::TooLarge { size, limit });
        }
        let now = now_millis();
        let shared = &self.shared;
        state
            .record
            .get_or_insert_with(|| shared.new_record(now))
            .fields
            .insert(key.to_owned(), text.clone());
        state.pending.remove.remove(key);
        state.pending.set.insert(key.to_owned(), text);
        Ok(())
    }

    /// Removes `key`, returning the value it held.
    ///
    /// # Errors
    /// As [`Session::get`].
    pub async fn remove<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let old = self.get::<T>(key).await?;
        let mut state = self.state.lock().await;
        remove_field(&mut state, key);
        Ok(old)
    }

    /// Adds `by` to the integer under `key` (missing counts as 0) **atomically in the store**
    /// and returns the new value: concurrent increments are never lost.
    ///
    /// Costs one store call and needs no prior load; any other pending changes go with it.
    ///
    /// # Errors
    /// [`SessionError::InvalidKey`]; [`SessionError::Store`] with
    /// [`StoreError::NotAnInteger`] if the key holds something else; [`SessionError::Gone`] if
    /// the session ended while this request was using it.
    pub async fn increment(&self, key: &str, by: i64) -> Result<i64, SessionError> {
        check_key(&self.shared, key)?;
        let mut state = self.state.lock().await;
        if state.degraded {
            return Err(StoreError::CircuitOpen.into());
        }
        let mut changes = std::mem::take(&mut state.pending);
        changes.increments.insert(key.to_owned(), by);
        let result = self.write_now(&mut state, &changes).await;
        match result {
            Ok(counters) => {
                let value = counters.get(key).copied().unwrap_or(by);
                if let Some(record) = state.record.as_mut() {
                    record.fields.insert(key.to_owned(), value.to_string());
                }
                Ok(value)
            }
            Err(e) => {
                changes.increments.clear();
                state.pending = changes;
                Err(e)
            }
        }
    }

    /// Writes `changes` at once: into the existing session, or a new one if there is none.
    async fn write_now(
        &self,
        state: &mut State,
        changes: &Changes,
    ) -> Result<BTreeMap<String, i64>, SessionError> {
        let now = now_millis();
        if let Some(key) = state.key.filter(|_| state.existence != Existence::Absent) {
            let store = &self.shared.store;
            bump(&store.metrics.applies);
            match store.call(store.store.apply(&key, changes, now)).await? {
                Applied::Done {
                    counters,
                    key: target,
                } => {
                    state.via_alias |= target != key;
                    state.key = Some(target);
                    if state.existence == Existence::Unknown {
                        state.existence = Existence::Confirmed;
                    }
                    return Ok(counters);
                }
                Applied::Gone if state.existence == Existence::Unknown => {
                    // A blind write to a cookie whose session expired: like no cookie at all.
                    forget(state);
                }
                Applied::Gone => {
                    bump(&store.metrics.writes_to_ended_sessions);
                    forget(state);
                    state.cookie = CookieOut::Remove;
                    return Err(SessionError::Gone);
                }
            }
        }
        let mut record = self.shared.new_record(now);
        let counters = record.apply(changes).map_err(SessionError::Store)?;
        self.create(state, record).await?;
        Ok(counters)
    }

    /// Files `record` under a fresh ID and makes it this request's session.
    async fn create(&self, state: &mut State, record: Record) -> Result<(), SessionError> {
        let store = &self.shared.store;
        for _ in 0..CREATE_ATTEMPTS {
            let id = fresh_id()?;
            let key = id.key();
            bump(&store.metrics.creates);
            match store.call(store.store.create(&key, &record)).await {
                Ok(()) => {
                    tracing::debug!(session = %key.fingerprint(), "session created");
                    state.id = Some(id);
                    state.key = Some(key);
                    state.record = Some(record);
                    state.existence = Existence::Loaded;
                    state.via_alias = false;
                    state.cookie = CookieOut::Set;
                    return Ok(());
                }
                Err(StoreError::IdCollision) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::IdCollision.into())
    }

    /// Adds a flash message, shown once by a later [`Session::take_flashes`].
    ///
    /// # Errors
    /// As [`Session::insert`].
    pub async fn flash(&self, message: impl Into<String>) -> Result<(), SessionError> {
        // Time first so flashes from several app instances sort by age; the counter orders
        // flashes of the same millisecond and keeps concurrent ones from sharing a field.
        static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let sequence = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = format!("{FLASH_PREFIX}{:015}.{sequence:020}", now_millis());
        let text =
            serde_json::to_string(&message.into()).map_err(|source| SessionError::Encode {
                key: key.clone(),
                source,
            })?;
        self.set_field(&key, text).await
    }

    /// Takes every flash message, oldest first; they are gone for later requests.
    ///
    /// # Errors
    /// As [`Session::get`].
    pub async fn take_flashes(&self) -> Result<Vec<String>, SessionError> {
        let mut state = self.state.lock().await;
        self.ensure_loaded(&mut state).await?;
        let flashes: Vec<(String, String)> = state
            .record
            .as_ref()
            .map(|r| {
                r.fields
                    .range(FLASH_PREFIX.to_owned()..)
                    .take_while(|(k, _)| k.starts_with(FLASH_PREFIX))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let mut messages = Vec::with_capacity(flashes.len());
        for (key, text) in flashes {
            remove_field(&mut state, &key);
            messages.push(serde_json::from_str(&text).unwrap_or(text));
        }
        Ok(messages)
    }

    /// Removes every key (the user tag stays; use [`Session::destroy`] to log out).
    ///
    /// # Errors
    /// A store error from loading the session.
    pub async fn clear(&self) -> Result<(), SessionError> {
        let mut state = self.state.lock().await;
        self.ensure_loaded(&mut state).await?;
        if let Some(record) = state.record.as_mut() {
            record.fields.clear();
        }
        state.pending.clear = true;
        state.pending.set.clear();
        state.pending.remove.clear();
        Ok(())
    }

    /// Tags the session with a user id, for [`Session::user_sessions`] and
    /// [`Session::revoke_other_sessions`]. Call [`Session::cycle_id`] with it at login.
    ///
    /// # Errors
    /// A store error from loading the session, or [`SessionError::TooLarge`].
    pub async fn set_user(&self, user: &str) -> Result<(), SessionError> {
        let mut state = self.state.lock().await;
        self.ensure_loaded(&mut state).await?;
        let limit = self.shared.config.max_size;
        if user.len() > limit {
            return Err(SessionError::TooLarge {
                size: user.len(),
                limit,
            });
        }
        let now = now_millis();
        let shared = &self.shared;
        state
            .record
            .get_or_insert_with(|| shared.new_record(now))
            .user = Some(user.to_owned());
        state.pending.user = Some(UserChange::Set(user.to_owned()));
        Ok(())
    }

    /// The user this session is tagged with.
    ///
    /// # Errors
    /// A store error from loading the session.
    pub async fn user(&self) -> Result<Option<String>, SessionError> {
        let mut state = self.state.lock().await;
        self.ensure_loaded(&mut state).await?;
        Ok(state.record.as_ref().and_then(|r| r.user.clone()))
    }

    /// Gives the session a new ID, keeping its data: call it at login and at every privilege
    /// change (prevents session fixation). The old ID keeps working for the grace window so
    /// that requests already in flight do not fail, then stops.
    pub async fn cycle_id(&self) {
        self.state.lock().await.cycle = true;
    }

    /// Ends the session: deleted in the store, and the browser told to forget the cookie.
    /// Data stored after this call goes into a new, empty session (e.g. a "logged out" flash).
    pub async fn destroy(&self) {
        let mut state = self.state.lock().await;
        if let Some(key) = state.key {
            state.destroyed = Some(key);
            state.cookie = CookieOut::Remove;
        }
        forget(&mut state);
        state.pending = Changes::default();
        state.cycle = false;
    }

    /// Whether this request has a live session (loads it if needed).
    ///
    /// # Errors
    /// A store error from loading the session.
    pub async fn exists(&self) -> Result<bool, SessionError> {
        let mut state = self.state.lock().await;
        self.ensure_loaded(&mut state).await?;
        Ok(state.record.is_some())
    }

    /// The store key of this session (a safe handle for logs and lists), if it has one yet.
    pub async fn key(&self) -> Option<SessionKey> {
        self.state.lock().await.key
    }

    /// Every live session of this session's user, the current one marked.
    ///
    /// # Errors
    /// A store error.
    pub async fn user_sessions(&self) -> Result<Vec<SessionInfo>, SessionError> {
        let Some(user) = self.user().await? else {
            return Ok(Vec::new());
        };
        let current = self.key().await;
        let store = &self.shared.store;
        let idle = Shared::millis(self.shared.config.idle_timeout);
        let list = store
            .call(store.store.list_user(&user, now_millis()))
            .await?;
        Ok(list
            .into_iter()
            .map(|s| SessionInfo {
                key: s.key.to_string(),
                created: s.record.created,
                last_seen: s
                    .record
                    .idle_deadline
                    .saturating_sub(idle)
                    .max(s.record.created),
                expires: s.record.expires_at(),
                current: Some(s.key) == current,
                fields: s.record.fields,
            })
            .collect())
    }

    /// Logs this session's user out everywhere else; returns how many sessions ended.
    ///
    /// # Errors
    /// A store error.
    pub async fn revoke_other_sessions(&self) -> Result<u64, SessionError> {
        let Some(user) = self.user().await? else {
            return Ok(0);
        };
        let current = self.key().await;
        let store = &self.shared.store;
        let n = store
            .call(
                store
                    .store
                    .destroy_user(&user, current.as_ref(), now_millis()),
            )
            .await?;
        Ok(n)
    }

    /// Writes what the request changed, once, after the handler. Returns what the response
    /// must do with the cookie, and the signed value to set.
    pub(crate) async fn commit(&self) -> Result<(CookieOut, Option<String>), SessionError> {
        let mut state = self.state.lock().await;
        let store = &self.shared.store;
        if let Some(key) = state.destroyed {
            bump(&store.metrics.destroys);
            store.call(store.store.destroy(&key)).await?;
            state.destroyed = None;
            tracing::debug!(session = %key.fingerprint(), "session destroyed");
        }
        if state.degraded {
            return Ok((CookieOut::Keep, None));
        }
        let changes = std::mem::take(&mut state.pending);
        match (state.existence, state.key) {
            (Existence::Absent, _) | (_, None) if !changes.is_empty() => {
                let mut record = self.shared.new_record(now_millis());
                record.apply(&changes)?;
                self.create(&mut state, record).await?;
            }
            (Existence::Absent, _) | (_, None) => {}
            (_, Some(old)) if state.cycle => self.cycle(&mut state, old, &changes).await?,
            (_, Some(key)) if !changes.is_empty() => {
                bump(&store.metrics.applies);
                match store
                    .call(store.store.apply(&key, &changes, now_millis()))
                    .await?
                {
                    Applied::Done { .. } => {}
                    Applied::Gone => {
                        // The session ended (e.g. logged out) while we ran: never recreate it.
                        bump(&store.metrics.writes_to_ended_sessions);
                        tracing::info!(session = %key.fingerprint(), "dropped a write to an ended session");
                        forget(&mut state);
                        state.cookie = CookieOut::Remove;
                    }
                }
            }
            _ => {}
        }
        if state.stale_signature && state.cookie == CookieOut::Keep && state.id.is_some() {
            state.cookie = CookieOut::Set;
        }
        if state.via_alias && state.cookie == CookieOut::Set {
            // The browser may already hold the new cookie; never overwrite it with the old one.
            state.cookie = CookieOut::Keep;
        }
        let value = match (state.cookie, &state.id) {
            (CookieOut::Set, Some(id)) => Some(self.shared.config.keys.sign(id)),
            _ => None,
        };
        Ok((state.cookie, value))
    }

    async fn cycle(
        &self,
        state: &mut State,
        old: SessionKey,
        changes: &Changes,
    ) -> Result<(), SessionError> {
        let store = &self.shared.store;
        let now = now_millis();
        let grace_until = now.saturating_add(Shared::millis(self.shared.config.grace));
        for _ in 0..CREATE_ATTEMPTS {
            let id = fresh_id()?;
            let key = id.key();
            bump(&store.metrics.cycles);
            match store
                .call(store.store.cycle(&old, &key, changes, now, grace_until))
                .await
            {
                Ok(Applied::Done { .. }) => {
                    tracing::debug!(old = %old.fingerprint(), new = %key.fingerprint(), "session ID cycled");
                    state.id = Some(id);
                    state.key = Some(key);
                    state.via_alias = false;
                    state.cookie = CookieOut::Set;
                    return Ok(());
                }
                Ok(Applied::Gone) => {
                    bump(&store.metrics.writes_to_ended_sessions);
                    forget(state);
                    state.cookie = CookieOut::Remove;
                    return Ok(());
                }
                Err(StoreError::IdCollision) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::IdCollision.into())
    }

    /// The `Max-Age` a freshly set cookie gets.
    pub(crate) async fn cookie_max_age(&self) -> Option<Duration> {
        if self.shared.config.browser_session {
            return None;
        }
        let idle = self.shared.config.idle_timeout;
        let state = self.state.lock().await;
        let remaining = state.record.as_ref().map_or(idle, |r| {
            Duration::from_millis(r.absolute_deadline.saturating_sub(now_millis()))
        });
        Some(idle.min(remaining))
    }
}

fn forget(state: &mut State) {
    state.id = None;
    state.key = None;
    state.record = None;
    state.existence = Existence::Absent;
    state.via_alias = false;
    state.stale_signature = false;
}

fn remove_field(state: &mut State, key: &str) {
    if let Some(record) = state.record.as_mut() {
        record.fields.remove(key);
    }
    state.pending.set.remove(key);
    state.pending.remove.insert(key.to_owned());
}

fn fresh_id() -> Result<SessionId, SessionError> {
    SessionId::random().map_err(|e| StoreError::unavailable(std::io::Error::other(e)).into())
}
