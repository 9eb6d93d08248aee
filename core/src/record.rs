//! What a store keeps for one session, and the changes a request asks it to make.
//!
//! Values are kept per field as JSON text, so a store can write one field without reading
//! the others (one Redis hash field per session key, one row per session elsewhere).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch: the one clock every store and the layer agree on.
pub type Millis = u64;

/// The current wall-clock time in [`Millis`].
#[must_use]
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One stored session: its metadata and its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When the session was created.
    pub created: Millis,
    /// The sliding (idle) deadline: the session expires here unless it is refreshed.
    pub idle_deadline: Millis,
    /// The absolute deadline: the session expires here whatever happens.
    pub absolute_deadline: Millis,
    /// The user this session belongs to, if any (see the per-user index).
    pub user: Option<String>,
    /// Bumped by every write; lets a store notice concurrent changes cheaply.
    pub version: u64,
    /// Session data: key → JSON text of the value.
    pub fields: BTreeMap<String, String>,
}

impl Record {
    /// An empty record created at `now` with the given deadlines.
    #[must_use]
    pub fn new(now: Millis, idle_deadline: Millis, absolute_deadline: Millis) -> Self {
        Self {
            created: now,
            idle_deadline: idle_deadline.min(absolute_deadline),
            absolute_deadline,
            user: None,
            version: 0,
            fields: BTreeMap::new(),
        }
    }

    /// Whether the session is still valid at `now`: both deadlines lie in the future.
    #[must_use]
    pub fn is_alive(&self, now: Millis) -> bool {
        now < self.idle_deadline && now < self.absolute_deadline
    }

    /// Which deadline had passed at `now`, if one had: the absolute one when both had (the
    /// idle deadline never lies beyond it).
    #[must_use]
    pub fn expiry_reason(&self, now: Millis) -> Option<crate::events::EndReason> {
        use crate::events::EndReason;
        if self.is_alive(now) {
            None
        } else if self.absolute_deadline <= self.idle_deadline {
            Some(EndReason::ExpiredAbsolute)
        } else {
            Some(EndReason::ExpiredIdle)
        }
    }

    /// When the record stops being valid: the nearer of its two deadlines.
    #[must_use]
    pub fn expires_at(&self) -> Millis {
        self.idle_deadline.min(self.absolute_deadline)
    }

    /// Encoded size of the data, as counted against the session size limit.
    #[must_use]
    pub fn data_size(&self) -> usize {
        self.fields
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
            + self.user.as_ref().map_or(0, String::len)
    }

    /// Applies `changes` in place; in-process stores share this so they agree with each other.
    ///
    /// # Errors
    /// [`crate::StoreError::NotAnInteger`] if an increment targets a field holding something
    /// else, [`crate::StoreError::LimitExceeded`] if the result would break `changes.limits`;
    /// in both cases `self` is left untouched.
    pub fn apply(&mut self, changes: &Changes) -> Result<BTreeMap<String, i64>, crate::StoreError> {
        for (field, expected) in &changes.expect {
            if self.fields.get(field) != expected.as_ref() {
                return Err(crate::StoreError::Conflict(field.clone()));
            }
        }
        let Some(limits) = changes.limits else {
            return self.apply_unchecked(changes);
        };
        // Checked on a copy: a change over the limits leaves the record as it was.
        let mut next = self.clone();
        let counters = next.apply_unchecked(changes)?;
        limits.check(&next)?;
        *self = next;
        Ok(counters)
    }

    fn apply_unchecked(
        &mut self,
        changes: &Changes,
    ) -> Result<BTreeMap<String, i64>, crate::StoreError> {
        let mut counters = BTreeMap::new();
        for (key, by) in &changes.increments {
            let base = if changes.clear || changes.remove.contains(key) {
                None
            } else {
                changes.set.get(key).or_else(|| self.fields.get(key))
            };
            let not_an_integer = || crate::StoreError::NotAnInteger(key.clone());
            let current = match base {
                None => 0,
                Some(text) => counter_value(text).ok_or_else(not_an_integer)?,
            };
            let next = current
                .checked_add(*by)
                .filter(|n| in_counter_range(*n) && in_counter_range(*by))
                .ok_or_else(not_an_integer)?;
            counters.insert(key.clone(), next);
        }
        if changes.clear {
            self.fields.clear();
        }
        for key in &changes.remove {
            self.fields.remove(key);
        }
        for (key, value) in &changes.set {
            self.fields.insert(key.clone(), value.clone());
        }
        for (key, value) in &counters {
            self.fields.insert(key.clone(), value.to_string());
        }
        match &changes.user {
            Some(UserChange::Set(user)) => self.user = Some(user.clone()),
            Some(UserChange::Clear) => self.user = None,
            None => {}
        }
        if let Some(deadline) = changes.absolute_deadline {
            self.absolute_deadline = deadline.max(self.created);
            self.idle_deadline = self.idle_deadline.min(self.absolute_deadline);
        }
        if let Some(deadline) = changes.idle_deadline {
            self.idle_deadline = deadline.min(self.absolute_deadline);
        }
        self.version += 1;
        Ok(counters)
    }
}

/// The size bounds a write must keep a session within. The layer checks them before it
/// writes, and sends them with every write so that a store can check what the layer could
/// not see (a blind increment that creates a field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest [`Record::data_size`], in bytes.
    pub max_bytes: usize,
    /// Most data fields (flash messages included).
    pub max_fields: usize,
}

impl Limits {
    /// Whether `record` is within the limits.
    ///
    /// # Errors
    /// [`crate::StoreError::LimitExceeded`] naming the limit it breaks.
    pub fn check(&self, record: &Record) -> Result<(), crate::StoreError> {
        if record.fields.len() > self.max_fields {
            return Err(crate::StoreError::LimitExceeded(crate::Limit::Fields));
        }
        if record.data_size() > self.max_bytes {
            return Err(crate::StoreError::LimitExceeded(crate::Limit::Bytes));
        }
        Ok(())
    }
}

/// Counters hold fewer than 15 digits in every store: Redis keeps them as Lua numbers
/// (doubles), exact only that far, and the stores must agree on what is an integer.
pub const COUNTER_LIMIT: i64 = 1_000_000_000_000_000;

fn in_counter_range(n: i64) -> bool {
    -COUNTER_LIMIT < n && n < COUNTER_LIMIT
}

/// A stored counter: a plain JSON integer (no `+`, no leading zeros, no `-0`) in range.
fn counter_value(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let plain = text == "0"
        || (!digits.is_empty()
            && digits.len() <= 16
            && !digits.starts_with('0')
            && digits.bytes().all(|b| b.is_ascii_digit()));
    text.parse().ok().filter(|n| plain && in_counter_range(*n))
}

/// A change of the session's owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserChange {
    /// Tag the session with this user id.
    Set(String),
    /// Remove the user tag.
    Clear,
}

/// The field-level changes one request makes to a session.
///
/// Order of application: `clear`, then `remove`, then `set`, then `increments`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// Drop every field first.
    pub clear: bool,
    /// Fields to delete.
    pub remove: BTreeSet<String>,
    /// Fields to write, as JSON text.
    pub set: BTreeMap<String, String>,
    /// Integer fields to add to (missing fields count as 0); the store returns the results.
    pub increments: BTreeMap<String, i64>,
    /// A change of owner, if any.
    pub user: Option<UserChange>,
    /// A new sliding deadline (expiry refresh), if any; capped by the absolute deadline.
    pub idle_deadline: Option<Millis>,
    /// A new absolute deadline (a session given its own lifetime, [`crate::Expiry`]), if any;
    /// never before the record's creation. Applied before `idle_deadline`, and the idle
    /// deadline is pulled in to it when it lies beyond.
    pub absolute_deadline: Option<Millis>,
    /// Bounds the result must stay within; the store refuses the whole change otherwise.
    pub limits: Option<Limits>,
    /// Compare-and-set: each field must hold exactly this JSON text (`None`: be absent)
    /// when the change is applied, or the store refuses the whole change with
    /// [`crate::StoreError::Conflict`] and writes nothing.
    pub expect: BTreeMap<String, Option<String>>,
}

impl Changes {
    /// True if applying these changes would change nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        !self.clear
            && self.remove.is_empty()
            && self.set.is_empty()
            && self.increments.is_empty()
            && self.user.is_none()
            && self.idle_deadline.is_none()
            && self.absolute_deadline.is_none()
    }

    /// The user these changes leave a record with, given its previous owner.
    #[must_use]
    pub fn user_after<'a>(&'a self, before: Option<&'a str>) -> Option<&'a str> {
        match &self.user {
            Some(UserChange::Set(user)) => Some(user),
            Some(UserChange::Clear) => None,
            None => before,
        }
    }
}

/// When a load should also slide the idle deadline forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refresh {
    /// Refresh only if the stored idle deadline is earlier than this (the throttle).
    pub if_deadline_before: Millis,
    /// The new idle deadline (capped by the absolute deadline).
    pub new_deadline: Millis,
    /// The same pair for sessions without a user, when anonymous sessions have their own
    /// (shorter) idle timeout; `None` when they share the signed-in one.
    pub anonymous: Option<(Millis, Millis)>,
    /// The time of the load, for sessions with their own idle timeout ([`crate::Expiry`],
    /// kept in the record's [`EXPIRY_FIELD`]): their pair is computed from it.
    pub now: Millis,
}

impl Refresh {
    /// The new idle deadline for `record` if its refresh is due, else `None`. Stores call this
    /// so that every store applies the same throttle and the same anonymous window.
    #[must_use]
    pub fn due(&self, record: &Record) -> Option<Millis> {
        let (before, new) = self.window(record);
        (record.idle_deadline < before).then_some(new)
    }

    /// The throttle and the new deadline that apply to `record`: `(refresh only if the
    /// deadline is before this, new deadline)`. A store that re-checks the throttle in its
    /// own conditional write uses this pair.
    #[must_use]
    pub fn window(&self, record: &Record) -> (Millis, Millis) {
        if let Some(own) = OwnExpiry::of(record) {
            let new = self.now.saturating_add(own.idle);
            return (new.saturating_sub(own.every), new);
        }
        match (self.anonymous, &record.user) {
            (Some(window), None) => window,
            _ => (self.if_deadline_before, self.new_deadline),
        }
    }
}

pub use crate::names::EXPIRY_FIELD;

/// A session's own expiry, as [`EXPIRY_FIELD`] holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OwnExpiry {
    /// The idle timeout.
    pub(crate) idle: Millis,
    /// Refresh at most this often.
    pub(crate) every: Millis,
    /// Whether the cookie outlives the browser session.
    pub(crate) persistent: bool,
}

impl OwnExpiry {
    /// The record's own expiry; `None` without one, or when the field is damaged (the
    /// configured expiry applies then, which is never longer than the bounds allow).
    pub(crate) fn of(record: &Record) -> Option<Self> {
        let text = record.fields.get(EXPIRY_FIELD)?;
        let (idle, every, persistent) =
            serde_json::from_str::<(Millis, Millis, bool)>(text).ok()?;
        (idle > 0).then_some(Self {
            idle,
            every: every.min(idle),
            persistent,
        })
    }

    /// The field's JSON text.
    pub(crate) fn text(&self) -> String {
        format!("[{},{},{}]", self.idle, self.every, self.persistent)
    }
}

/// A session found by [`crate::SessionStore::load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The record, after any refresh.
    pub record: Record,
    /// The key the record lives under (differs from the one asked for within a cycle's grace window).
    pub key: crate::SessionKey,
    /// Whether the load refreshed the idle deadline.
    pub refreshed: bool,
}

impl Loaded {
    /// Whether the session was found through the alias a cycle leaves behind.
    #[must_use]
    pub fn via_alias(&self, asked: &crate::SessionKey) -> bool {
        &self.key != asked
    }
}

/// The result of a conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The session existed and was changed.
    Done {
        /// The new values of the incremented fields.
        counters: BTreeMap<String, i64>,
        /// The key written (the alias target within a cycle's grace window).
        key: crate::SessionKey,
    },
    /// The session does not exist (never did, expired, or was destroyed): nothing was written.
    Gone,
    /// The key is the alias a renewal left behind: it may still be read within its grace
    /// window, but never written through. Nothing was written.
    Aliased,
}

/// What [`crate::SessionStore::destroy`] found under the key it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destroyed {
    /// A session: it is gone now, with every alias that reached it.
    Session,
    /// A renewal's alias: the alias is gone, the session it reached is untouched (an old ID
    /// may not end the session it once named).
    Alias,
    /// Nothing (already gone, expired, never there).
    Nothing,
}

/// What [`crate::SessionStore::end`] did: what a destroy found, whose session it was, and
/// whether the reason was kept in the same step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// What the destroy found under the key.
    pub destroyed: Destroyed,
    /// The user of the session that ended, when the store can tell (`None` for an anonymous
    /// session, and from a store that only destroys).
    pub user: Option<String>,
    /// Whether the store kept the reason (the session was signed in, and the store keeps
    /// reasons as part of ending): the layer need not keep it itself.
    pub kept: bool,
}

impl Ended {
    /// A destroy that learned no user and kept no reason.
    #[must_use]
    pub fn plain(destroyed: Destroyed) -> Self {
        Self {
            destroyed,
            user: None,
            kept: false,
        }
    }

    /// What ending a session for `reason` at `now` comes to, for a store that keeps reasons
    /// beside its records: given what its destroy found and the record it deleted, the answer
    /// and the reason to keep, if any. A signed-in session keeps `reason`; one already past a
    /// deadline (not yet dropped) is no logout and keeps which deadline passed; an anonymous
    /// one keeps nothing.
    #[must_use]
    pub fn of(
        destroyed: Destroyed,
        record: Option<Record>,
        reason: crate::events::EndReason,
        now: Millis,
    ) -> (Self, Option<crate::events::EndReason>) {
        let Some(record) = record else {
            return (Self::plain(destroyed), None);
        };
        let signed_in = record.user.is_some();
        if let Some(expired) = record.expiry_reason(now) {
            return (
                Self::plain(Destroyed::Nothing),
                signed_in.then_some(expired),
            );
        }
        let ended = Self {
            destroyed,
            kept: signed_in,
            user: record.user,
        };
        (ended, signed_in.then_some(reason))
    }
}

/// One session of a user, as listed by the per-user index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSession {
    /// Its store key (safe to show; usable to revoke it).
    pub key: crate::SessionKey,
    /// Its record.
    pub record: Record,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_see_sets_and_removes_of_the_same_change() {
        let mut record = Record::new(0, 10, 20);
        record.fields.insert("n".into(), "5".into());
        let mut changes = Changes::default();
        changes.increments.insert("n".into(), 2);
        assert_eq!(record.apply(&changes).unwrap()["n"], 7);
        changes.remove.insert("n".into());
        assert_eq!(record.apply(&changes).unwrap()["n"], 2);
        assert_eq!(record.version, 2);
    }

    /// The same counter rules as the Redis script (`apply_fn.lua`): plain JSON integers with
    /// fewer than 16 digits, results and steps under 10^15 in size.
    #[test]
    fn counters_have_the_same_range_in_every_store() {
        for (stored, by, ok) in [
            ("0", 1, true),
            ("-5", 2, true),
            ("999999999999999", 0, true),
            ("999999999999999", 1, false),
            ("+5", 1, false),
            ("007", 1, false),
            ("-0", 1, false),
            ("1.5", 1, false),
            ("1e3", 1, false),
            ("\"3\"", 1, false),
            ("5", COUNTER_LIMIT, false),
        ] {
            let mut record = Record::new(0, 10, 20);
            record.fields.insert("n".into(), stored.into());
            let mut changes = Changes::default();
            changes.increments.insert("n".into(), by);
            assert_eq!(record.apply(&changes).is_ok(), ok, "{stored} + {by}");
        }
    }

    #[test]
    fn a_bad_increment_changes_nothing() {
        let mut record = Record::new(0, 10, 20);
        record.fields.insert("name".into(), "\"bob\"".into());
        let before = record.clone();
        let mut changes = Changes::default();
        changes.set.insert("other".into(), "1".into());
        changes.increments.insert("name".into(), 1);
        assert!(record.apply(&changes).is_err());
        assert_eq!(record, before);
    }

    #[test]
    fn idle_deadline_never_passes_the_absolute_one() {
        let mut record = Record::new(0, 10, 20);
        let changes = Changes {
            idle_deadline: Some(50),
            ..Changes::default()
        };
        record.apply(&changes).unwrap();
        assert_eq!(record.idle_deadline, 20);
        assert!(!record.is_alive(20));
        assert!(record.is_alive(19));
    }
}
