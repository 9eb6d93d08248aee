//! Moving sessions from one store to another under traffic, logging nobody out
//! (`docs/migration.md`).
//!
//! [`MigratingStore`] is itself a store. Reads look in the new store first and fall through to
//! the old one; a session found there is moved on that first touch (created in the new store,
//! then deleted from the old). Writes go to the new store (moving the session first if it is
//! still in the old one). The per-user operations cover both stores.
//!
//! What keeps an ended session ended while another instance may be moving it:
//! - A logout deletes the session in the new store and leaves an *ended marker* under its key
//!   there (a record that lives an hour, with the reserved field [`crate::names::ENDED_FIELD`]) before it deletes
//!   the old copy. A move is a create, which never overwrites: a move that read the old copy
//!   before the logout finds the marker and gives up. A move that landed first is deleted by the
//!   logout, which then tries its marker again.
//! - A read treats a marker as no session, and a write into one is refused as a write to an
//!   ended session ([`Applied::Gone`]).
//! - A read that misses in both stores looks in the new one once more: a move may have
//!   created the session there and deleted the old copy between the two looks.

use std::sync::Arc;

use async_trait::async_trait;

use crate::id::SessionKey;
use crate::record::{Applied, Changes, Destroyed, Loaded, Millis, Record, Refresh, UserSession};
use crate::store::{SessionStore, StoreError, StoreStats};

use crate::names::ENDED_FIELD;

/// How long an ended marker stays: far longer than any move in flight (two store calls, each
/// bounded by the layer's store timeout; the background copy bounds each move too).
pub const MARKER_LIFETIME_MS: Millis = 3_600_000;

/// Logouts retried when a move keeps landing between the delete and the marker.
const MARKER_ATTEMPTS: usize = 5;

/// A store that moves sessions from `old` to `new` as they are used.
///
/// ```
/// use cloakroom::{MemoryStore, MigratingStore, SessionConfig, SessionLayer, KeyRing};
/// let store = MigratingStore::new(MemoryStore::default(), MemoryStore::default());
/// let layer = SessionLayer::new(store, SessionConfig::builder(KeyRing::generate().unwrap()).build().unwrap());
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct MigratingStore {
    old: Arc<dyn SessionStore>,
    new: Arc<dyn SessionStore>,
}

impl std::fmt::Debug for MigratingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MigratingStore").finish_non_exhaustive()
    }
}

/// What [`MigratingStore::move_one`] did with a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    /// Moved from the old store to the new one.
    Moved,
    /// Already in the new store (or ended there): nothing to do.
    AlreadyThere,
    /// Not in the old store (never was, expired, or ended).
    Absent,
}

fn is_marker(record: &Record) -> bool {
    record.fields.contains_key(ENDED_FIELD)
}

fn marker(now: Millis) -> Record {
    let until = now.saturating_add(MARKER_LIFETIME_MS);
    let mut record = Record::new(now, until, until);
    record
        .fields
        .insert(ENDED_FIELD.to_owned(), "true".to_owned());
    record
}

/// `changes`, refused when the session is an ended marker.
fn unless_ended(changes: &Changes) -> Changes {
    let mut guarded = changes.clone();
    guarded.expect.insert(ENDED_FIELD.to_owned(), None);
    guarded
}

/// A write refused because it met an ended marker is a write to an ended session.
fn ended_is_gone(result: Result<Applied, StoreError>) -> Result<Applied, StoreError> {
    match result {
        Err(StoreError::Conflict(field)) if field == ENDED_FIELD => Ok(Applied::Gone),
        other => other,
    }
}

impl MigratingStore {
    /// Sessions move from `old` to `new` as they are used.
    pub fn new(old: impl SessionStore, new: impl SessionStore) -> Self {
        Self::from_arcs(Arc::new(old), Arc::new(new))
    }

    /// As [`MigratingStore::new`], over stores already shared.
    #[must_use]
    pub fn from_arcs(old: Arc<dyn SessionStore>, new: Arc<dyn SessionStore>) -> Self {
        Self { old, new }
    }

    /// Moves the session `key` from the old store to the new one, unless it is already there:
    /// what the background copy (`cloakroom migrate`) does for each session it lists.
    ///
    /// # Errors
    /// A store error; nothing was moved then, or the move is complete but the old copy stays
    /// (it is deleted at the next move of the same key, and harmless meanwhile).
    pub async fn move_one(&self, key: &SessionKey, now: Millis) -> Result<Moved, StoreError> {
        let Some(loaded) = self.old.load(key, now, None).await? else {
            return Ok(Moved::Absent);
        };
        // Through an alias (a renewal's grace window) the session itself moves.
        let target = loaded.key;
        match self.new.create(&target, &loaded.record).await {
            Ok(()) => {
                self.old.destroy(&target).await?;
                Ok(Moved::Moved)
            }
            // Moved by someone else meanwhile, or ended there: the new store decides.
            Err(StoreError::IdCollision) => Ok(Moved::AlreadyThere),
            Err(e) => Err(e),
        }
    }

    /// The new store's answer for `key`, a marker read as nothing.
    async fn load_new(
        &self,
        key: &SessionKey,
        now: Millis,
        refresh: Option<Refresh>,
    ) -> Result<Option<Loaded>, StoreError> {
        Ok(self
            .new
            .load(key, now, refresh)
            .await?
            .filter(|l| !is_marker(&l.record)))
    }

    /// Destroys `key` in both stores, leaving an ended marker in the new one so that a move
    /// in flight cannot bring it back; says what it found, and whose session it was.
    async fn destroy_learning_user(
        &self,
        key: &SessionKey,
    ) -> Result<(Destroyed, Option<String>), StoreError> {
        let now = crate::record::now_millis();
        // What the new store holds now: a session, or only an earlier logout's marker.
        let (mut found, mut user) = match self.new.load(key, now, None).await? {
            Some(l) if l.key == *key && !is_marker(&l.record) => {
                (Destroyed::Session, l.record.user)
            }
            _ => (Destroyed::Nothing, None),
        };
        if found == Destroyed::Nothing {
            // Not moved yet: whose it is, from the old store (for the reason's tombstone).
            if let Ok(Some(l)) = self.old.load(key, now, None).await {
                user = l.record.user.filter(|_| l.key == *key);
            }
        }
        let mut marked = false;
        for _ in 0..MARKER_ATTEMPTS {
            // An old ID ends only itself, as in any store.
            if self.new.destroy(key).await? == Destroyed::Alias {
                return Ok((Destroyed::Alias, None));
            }
            match self.new.create(key, &marker(now)).await {
                Ok(()) => {
                    marked = true;
                    break;
                }
                // A move landed in between: it is deleted by the next round, and marked.
                Err(StoreError::IdCollision) => found = Destroyed::Session,
                Err(e) => return Err(e),
            }
        }
        if !marked {
            return Err(StoreError::unavailable(std::io::Error::other(
                "a logout kept meeting moves of its session; try again",
            )));
        }
        let destroyed = match self.old.destroy(key).await? {
            Destroyed::Nothing => found,
            Destroyed::Alias if found == Destroyed::Nothing => Destroyed::Alias,
            _ => Destroyed::Session,
        };
        Ok((destroyed, user))
    }

    /// Whether the new store has anything under `key` (a session or a marker).
    async fn in_new(&self, key: &SessionKey, now: Millis) -> Result<bool, StoreError> {
        Ok(self.new.load(key, now, None).await?.is_some())
    }
}

#[async_trait]
impl SessionStore for MigratingStore {
    async fn load(
        &self,
        key: &SessionKey,
        now: Millis,
        refresh: Option<Refresh>,
    ) -> Result<Option<Loaded>, StoreError> {
        if let Some(found) = self.new.load(key, now, refresh).await? {
            return Ok((!is_marker(&found.record)).then_some(found));
        }
        self.move_one(key, now).await?;
        // Moved now or by someone else between the looks: the new store has it.
        self.load_new(key, now, refresh).await
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<(), StoreError> {
        // A new ID must be new in both stores.
        if self.old.load(key, record.created, None).await?.is_some() {
            return Err(StoreError::IdCollision);
        }
        self.new.create(key, record).await
    }

    async fn apply(
        &self,
        key: &SessionKey,
        changes: &Changes,
        now: Millis,
    ) -> Result<Applied, StoreError> {
        let guarded = unless_ended(changes);
        match ended_is_gone(self.new.apply(key, &guarded, now).await)? {
            Applied::Gone if !self.in_new(key, now).await? => {
                if self.move_one(key, now).await? == Moved::Absent {
                    return Ok(Applied::Gone);
                }
                ended_is_gone(self.new.apply(key, &guarded, now).await)
            }
            applied => Ok(applied),
        }
    }

    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        changes: &Changes,
        now: Millis,
        grace_until: Millis,
    ) -> Result<Applied, StoreError> {
        if !self.in_new(old, now).await? {
            self.move_one(old, now).await?;
        }
        if self.old.load(new, now, None).await?.is_some() {
            return Err(StoreError::IdCollision);
        }
        let guarded = unless_ended(changes);
        let applied = ended_is_gone(self.new.cycle(old, new, &guarded, now, grace_until).await)?;
        if matches!(applied, Applied::Done { .. }) {
            // A copy of the old ID left in the old store by an interrupted move must not
            // bring that ID back once its grace window (if any) is over.
            self.old.destroy(old).await?;
        }
        Ok(applied)
    }

    async fn destroy(&self, key: &SessionKey) -> Result<Destroyed, StoreError> {
        Ok(self.destroy_learning_user(key).await?.0)
    }

    /// The destroy, then the tombstone in the new store (two steps: a session that may be in
    /// either store has no one place to do both at once).
    async fn end(
        &self,
        key: &SessionKey,
        reason: crate::events::EndReason,
        until: Millis,
    ) -> Result<crate::Ended, StoreError> {
        let (destroyed, user) = self.destroy_learning_user(key).await?;
        let kept = destroyed == Destroyed::Session
            && user.is_some()
            && self.new.record_end(key, reason, until).await.is_ok();
        Ok(crate::Ended {
            destroyed,
            user: user.filter(|_| destroyed == Destroyed::Session),
            kept,
        })
    }

    async fn list_user(&self, user: &str, now: Millis) -> Result<Vec<UserSession>, StoreError> {
        let mut sessions = self.new.list_user(user, now).await?;
        let seen: std::collections::BTreeSet<SessionKey> = sessions.iter().map(|s| s.key).collect();
        match self.old.list_user(user, now).await {
            Ok(old) => sessions.extend(old.into_iter().filter(|s| !seen.contains(&s.key))),
            Err(StoreError::Unsupported(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(sessions)
    }

    async fn destroy_user(
        &self,
        user: &str,
        keep: Option<&SessionKey>,
        now: Millis,
    ) -> Result<u64, StoreError> {
        // Each of the old store's sessions ends with a marker, so that a move in flight cannot
        // bring it back; then the new store's.
        let mut ended = 0;
        match self.old.list_user(user, now).await {
            Ok(old) => {
                for session in old.into_iter().filter(|s| Some(&s.key) != keep) {
                    if self.destroy(&session.key).await? == Destroyed::Session {
                        ended += 1;
                    }
                }
            }
            Err(StoreError::Unsupported(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(ended + self.new.destroy_user(user, keep, now).await?)
    }

    /// Not offered while sessions move: the new store's count would include the ended
    /// markers, and the old store's the sessions not yet moved.
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        Err(StoreError::Unsupported("size figures during a migration"))
    }

    async fn record_end(
        &self,
        key: &SessionKey,
        reason: crate::events::EndReason,
        until: Millis,
    ) -> Result<(), StoreError> {
        self.new.record_end(key, reason, until).await
    }

    async fn end_reason(
        &self,
        key: &SessionKey,
        now: Millis,
    ) -> Result<Option<crate::events::EndReason>, StoreError> {
        match self.new.end_reason(key, now).await? {
            Some(reason) => Ok(Some(reason)),
            None => self.old.end_reason(key, now).await,
        }
    }

    /// The old store's sessions, then the new store's (the cursor says which: `old:…`,
    /// `new:…`).
    async fn scan(
        &self,
        cursor: Option<&str>,
        count: usize,
    ) -> Result<crate::store::ScanPage, StoreError> {
        let (in_old, inner) = match cursor {
            None => (true, None),
            Some(c) => match (c.strip_prefix("old:"), c.strip_prefix("new:")) {
                (Some(rest), _) => (true, Some(rest)),
                (_, Some(rest)) => (false, Some(rest)),
                _ => return Err(StoreError::Unsupported("that cursor")),
            },
        };
        if in_old {
            let page = match self.old.scan(inner, count).await {
                Ok(page) => page,
                Err(StoreError::Unsupported(_)) if inner.is_none() => Default::default(),
                Err(e) => return Err(e),
            };
            let next = Some(
                page.next
                    .map_or_else(|| "new:".to_owned(), |n| format!("old:{n}")),
            );
            return Ok(crate::store::ScanPage {
                keys: page.keys,
                next,
            });
        }
        let page = self
            .new
            .scan(inner.filter(|c| !c.is_empty()), count)
            .await?;
        Ok(crate::store::ScanPage {
            keys: page.keys,
            next: page.next.map(|n| format!("new:{n}")),
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.old.ping().await?;
        self.new.ping().await
    }

    fn cached(&self, key: &SessionKey) -> Option<Record> {
        self.new.cached(key).filter(|r| !is_marker(r))
    }

    fn can_cycle_to(&self, old: &SessionKey, new: &SessionKey) -> bool {
        self.new.can_cycle_to(old, new)
    }

    fn ended_recently(&self, key: &SessionKey, issued: Millis) -> bool {
        self.new.ended_recently(key, issued) || self.old.ended_recently(key, issued)
    }
}
