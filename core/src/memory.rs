//! An in-process store for tests and development. Nothing survives a restart.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::id::SessionKey;
use crate::record::{Applied, Changes, Destroyed, Loaded, Millis, Record, Refresh, UserSession};
use crate::store::{SessionStore, StoreError, StoreStats};

#[derive(Default)]
struct State {
    sessions: HashMap<SessionKey, Record>,
    /// old key → (new key, valid until), left behind by `cycle`.
    aliases: HashMap<SessionKey, (SessionKey, Millis)>,
    users: HashMap<String, BTreeSet<SessionKey>>,
    /// Why sessions ended, until when (bounded: see [`TOMBSTONES`]).
    tombstones: HashMap<SessionKey, (crate::events::EndReason, Millis)>,
}

/// Tombstones kept at most; past it the expired go first, then any.
const TOMBSTONES: usize = 100_000;

impl State {
    /// The key holding the live record that `key` names at `now`, dropping what has expired.
    fn resolve(&mut self, key: &SessionKey, now: Millis) -> Option<SessionKey> {
        let target = match self.aliases.get(key) {
            Some(&(target, until)) if now < until => target,
            Some(_) => {
                self.aliases.remove(key);
                *key
            }
            None => *key,
        };
        match self.sessions.get(&target) {
            Some(record) if record.is_alive(now) => Some(target),
            Some(_) => {
                self.expire(&target, now);
                None
            }
            None => None,
        }
    }

    /// Whether `key` is a live alias at `now`: readable, never writable.
    fn is_alias(&self, key: &SessionKey, now: Millis) -> bool {
        self.aliases.get(key).is_some_and(|&(_, until)| now < until)
    }

    fn remove(&mut self, key: &SessionKey) -> Option<Record> {
        let record = self.sessions.remove(key)?;
        if let Some(user) = &record.user {
            self.unindex(user, key);
        }
        Some(record)
    }

    fn unindex(&mut self, user: &str, key: &SessionKey) {
        if let Some(keys) = self.users.get_mut(user) {
            keys.remove(key);
            if keys.is_empty() {
                self.users.remove(user);
            }
        }
    }

    fn reindex(&mut self, key: &SessionKey, before: Option<&str>, after: Option<&str>) {
        if before == after {
            return;
        }
        if let Some(user) = before {
            self.unindex(user, key);
        }
        if let Some(user) = after {
            self.users.entry(user.to_owned()).or_default().insert(*key);
        }
    }

    /// Drops the expired session `key`, keeping which deadline passed if it was signed in
    /// (as a store that keeps rows until a purge could still tell).
    fn expire(&mut self, key: &SessionKey, now: Millis) {
        if let Some(record) = self.remove(key) {
            if let (Some(_), Some(reason)) = (&record.user, record.expiry_reason(now)) {
                let until = now.saturating_add(crate::TOMBSTONE_LIFETIME_MS);
                self.keep_end(*key, reason, until);
            }
        }
    }

    /// Keeps why `key` ended until `until`; past [`TOMBSTONES`] the expired go first, then
    /// any.
    fn keep_end(&mut self, key: SessionKey, reason: crate::events::EndReason, until: Millis) {
        if self.tombstones.len() >= TOMBSTONES {
            let now = crate::record::now_millis();
            self.tombstones.retain(|_, (_, until)| *until > now);
            if self.tombstones.len() >= TOMBSTONES {
                let doomed: Vec<SessionKey> = self
                    .tombstones
                    .keys()
                    .take(TOMBSTONES / 4)
                    .copied()
                    .collect();
                for k in doomed {
                    self.tombstones.remove(&k);
                }
            }
        }
        self.tombstones.insert(key, (reason, until));
    }

    /// Destroys `key` (see [`SessionStore::destroy`]), returning the record if a session went.
    fn destroy(&mut self, key: &SessionKey) -> (Destroyed, Option<Record>) {
        if self.aliases.remove(key).is_some() {
            return (Destroyed::Alias, None);
        }
        self.aliases.retain(|_, (target, _)| target != key);
        match self.remove(key) {
            Some(record) => (Destroyed::Session, Some(record)),
            None => (Destroyed::Nothing, None),
        }
    }

    fn insert(&mut self, key: SessionKey, record: Record) {
        self.reindex(&key, None, record.user.as_deref());
        self.sessions.insert(key, record);
    }
}

/// Sessions in a `HashMap` behind a mutex: for tests and development only.
///
/// ```
/// use cloakroom::{MemoryStore, SessionConfig, SessionLayer, KeyRing};
/// let config = SessionConfig::builder(KeyRing::generate().unwrap()).build().unwrap();
/// let layer = SessionLayer::new(MemoryStore::default(), config);
/// # let _ = layer;
/// ```
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied change (every mutation
        // is computed before it is stored), so a poisoned lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drops every expired session and alias; returns how many sessions went.
    pub fn purge_expired(&self, now: Millis) -> usize {
        let mut state = self.state();
        state.aliases.retain(|_, (_, until)| now < *until);
        let dead: Vec<SessionKey> = state
            .sessions
            .iter()
            .filter(|(_, r)| !r.is_alive(now))
            .map(|(k, _)| *k)
            .collect();
        for key in &dead {
            state.expire(key, now);
        }
        dead.len()
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn load(
        &self,
        key: &SessionKey,
        now: Millis,
        refresh: Option<Refresh>,
    ) -> Result<Option<Loaded>, StoreError> {
        let mut state = self.state();
        let Some(target) = state.resolve(key, now) else {
            return Ok(None);
        };
        let record = state
            .sessions
            .get_mut(&target)
            .ok_or_else(|| StoreError::Corrupt("resolved key vanished".into()))?;
        let refreshed = match refresh.and_then(|r| r.due(record)) {
            Some(deadline) => {
                record.apply(&Changes {
                    idle_deadline: Some(deadline),
                    ..Changes::default()
                })?;
                true
            }
            None => false,
        };
        Ok(Some(Loaded {
            record: record.clone(),
            key: target,
            refreshed,
        }))
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.sessions.contains_key(key) || state.aliases.contains_key(key) {
            return Err(StoreError::IdCollision);
        }
        state.insert(*key, record.clone());
        Ok(())
    }

    async fn apply(
        &self,
        key: &SessionKey,
        changes: &Changes,
        now: Millis,
    ) -> Result<Applied, StoreError> {
        let mut state = self.state();
        if state.is_alias(key, now) {
            return Ok(Applied::Aliased);
        }
        let Some(target) = state.resolve(key, now) else {
            return Ok(Applied::Gone);
        };
        let record = state
            .sessions
            .get_mut(&target)
            .ok_or_else(|| StoreError::Corrupt("resolved key vanished".into()))?;
        let before = record.user.clone();
        let counters = record.apply(changes)?;
        let after = record.user.clone();
        state.reindex(&target, before.as_deref(), after.as_deref());
        Ok(Applied::Done {
            counters,
            key: target,
        })
    }

    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        changes: &Changes,
        now: Millis,
        grace_until: Millis,
    ) -> Result<Applied, StoreError> {
        let mut state = self.state();
        if state.sessions.contains_key(new) || state.aliases.contains_key(new) {
            return Err(StoreError::IdCollision);
        }
        if state.is_alias(old, now) {
            return Ok(Applied::Aliased);
        }
        let Some(source) = state.resolve(old, now) else {
            return Ok(Applied::Gone);
        };
        let mut record = state
            .sessions
            .get(&source)
            .cloned()
            .ok_or_else(|| StoreError::Corrupt("resolved key vanished".into()))?;
        let counters = record.apply(changes)?;
        state.remove(&source);
        state.insert(*new, record);
        if now < grace_until {
            state.aliases.insert(source, (*new, grace_until));
        }
        Ok(Applied::Done {
            counters,
            key: *new,
        })
    }

    async fn destroy(&self, key: &SessionKey) -> Result<Destroyed, StoreError> {
        Ok(self.state().destroy(key).0)
    }

    async fn end(
        &self,
        key: &SessionKey,
        reason: crate::events::EndReason,
        until: Millis,
    ) -> Result<crate::Ended, StoreError> {
        let mut state = self.state();
        let (destroyed, record) = state.destroy(key);
        let now = crate::record::now_millis();
        let (ended, keep) = crate::Ended::of(destroyed, record, reason, now);
        if let Some(why) = keep {
            state.keep_end(*key, why, until);
        }
        Ok(ended)
    }

    async fn list_user(&self, user: &str, now: Millis) -> Result<Vec<UserSession>, StoreError> {
        let mut state = self.state();
        let keys: Vec<SessionKey> = state
            .users
            .get(user)
            .map(|k| k.iter().copied().collect())
            .unwrap_or_default();
        let mut out = Vec::new();
        for key in keys {
            if state.resolve(&key, now) == Some(key) {
                if let Some(record) = state.sessions.get(&key) {
                    out.push(UserSession {
                        key,
                        record: record.clone(),
                    });
                }
            }
        }
        Ok(out)
    }

    async fn destroy_user(
        &self,
        user: &str,
        keep: Option<&SessionKey>,
        now: Millis,
    ) -> Result<u64, StoreError> {
        let listed = self.list_user(user, now).await?;
        let spared = keep.and_then(|k| self.state().resolve(k, now));
        let keys = crate::store::sessions_to_end(listed, keep, spared);
        for key in &keys {
            let _ = self.destroy(key).await?;
        }
        Ok(keys.len() as u64)
    }

    async fn end_user(
        &self,
        user: &str,
        keep: Option<&SessionKey>,
        reason: crate::events::EndReason,
        until: Millis,
        now: Millis,
    ) -> Result<Vec<SessionKey>, StoreError> {
        let listed = self.list_user(user, now).await?;
        let mut state = self.state();
        let spared = keep.and_then(|k| state.resolve(k, now));
        let keys = crate::store::sessions_to_end(listed, keep, spared);
        for key in &keys {
            if let (Destroyed::Session, Some(_)) = state.destroy(key) {
                state.keep_end(*key, reason, until);
            }
        }
        Ok(keys)
    }

    async fn record_end(
        &self,
        key: &SessionKey,
        reason: crate::events::EndReason,
        until: Millis,
    ) -> Result<(), StoreError> {
        self.state().keep_end(*key, reason, until);
        Ok(())
    }

    async fn end_reason(
        &self,
        key: &SessionKey,
        now: Millis,
    ) -> Result<Option<crate::events::EndReason>, StoreError> {
        Ok(self
            .state()
            .tombstones
            .get(key)
            .filter(|(_, until)| *until > now)
            .map(|(reason, _)| *reason))
    }

    async fn scan(
        &self,
        cursor: Option<&str>,
        count: usize,
    ) -> Result<crate::store::ScanPage, StoreError> {
        let after = crate::store::ScanPage::after(cursor)?;
        let state = self.state();
        let mut keys: Vec<SessionKey> = state
            .sessions
            .keys()
            .chain(state.aliases.keys())
            .filter(|k| after.is_none_or(|a| **k > a))
            .copied()
            .collect();
        keys.sort_unstable();
        keys.truncate(count.max(1));
        Ok(crate::store::ScanPage::ordered(keys, count))
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let state = self.state();
        Ok(StoreStats {
            sessions: state.sessions.len() as u64,
            bytes: Some(
                state
                    .sessions
                    .values()
                    .map(|r| r.data_size() as u64 + 64)
                    .sum(),
            ),
        })
    }
}
