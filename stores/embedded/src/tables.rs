//! The file layout: four tables, and the operations of the store contract on them.
//!
//! - `sessions`: store key → JSON record.
//! - `aliases`: old key → new key + grace deadline, left behind by `cycle`.
//! - `user_sessions`: (user, key) → (): the per-user index, scanned by prefix.
//! - `expiry`: (deadline, key) → (): what the purge walks, oldest first.

use std::collections::BTreeMap;

use cloakroom::{Applied, Changes, Destroyed, Millis, Record, SessionKey, StoreError, UserSession};
use redb::{
    Database, ReadTransaction, ReadableTable, ReadableTableMetadata, Table, TableDefinition,
    WriteTransaction,
};

type Bytes = &'static [u8];
const SESSIONS: TableDefinition<Bytes, Bytes> = TableDefinition::new("sessions");
const ALIASES: TableDefinition<Bytes, Bytes> = TableDefinition::new("aliases");
const USERS: TableDefinition<Bytes, ()> = TableDefinition::new("user_sessions");
const EXPIRY: TableDefinition<Bytes, ()> = TableDefinition::new("expiry");
/// Why sessions ended: key → `reason|until` (tombstones, purged with the sessions).
const ENDED: TableDefinition<Bytes, Bytes> = TableDefinition::new("ended");
use cloakroom::KEY_LEN;

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::unavailable(e)
}

/// Creates the tables if the file is new, so read transactions always find them.
pub(crate) fn create_all(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    {
        txn.open_table(SESSIONS).map_err(backend)?;
        txn.open_table(ALIASES).map_err(backend)?;
        txn.open_table(USERS).map_err(backend)?;
        txn.open_table(EXPIRY).map_err(backend)?;
        txn.open_table(ENDED).map_err(backend)?;
    }
    txn.commit().map_err(backend)
}

/// A tombstone's value: the reason and until when it is kept.
fn parse_end(bytes: &[u8]) -> Option<(cloakroom::events::EndReason, Millis)> {
    let (reason, until) = std::str::from_utf8(bytes).ok()?.split_once('|')?;
    Some((
        cloakroom::events::EndReason::parse(reason)?,
        until.parse().ok()?,
    ))
}

/// Why the session `key` ended, if a tombstone is kept at `now` (a file from before
/// tombstones has no table: none), or its expired row is still there.
pub(crate) fn end_reason(
    txn: &ReadTransaction,
    key: &SessionKey,
    now: Millis,
) -> Result<Option<cloakroom::events::EndReason>, StoreError> {
    let table = match txn.open_table(ENDED) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(backend(e)),
    };
    let kept = table
        .get(key.as_bytes().as_slice())
        .map_err(backend)?
        .and_then(|v| parse_end(v.value()))
        .filter(|(_, until)| now < *until)
        .map(|(reason, _)| reason);
    if kept.is_some() {
        return Ok(kept);
    }
    // No tombstone: an expired session stays until the purge, and says which deadline passed.
    let sessions = txn.open_table(SESSIONS).map_err(backend)?;
    let Some(bytes) = sessions.get(key.as_bytes().as_slice()).map_err(backend)? else {
        return Ok(None);
    };
    Ok(decode(bytes.value())?.expiry_reason(now))
}

/// Keeps why the session `key` ended, until `until`.
pub(crate) fn record_end(
    txn: &WriteTransaction,
    key: &SessionKey,
    reason: cloakroom::events::EndReason,
    until: Millis,
) -> Result<(), StoreError> {
    let mut table = txn.open_table(ENDED).map_err(backend)?;
    let value = format!("{}|{until}", reason.as_str());
    table
        .insert(key.as_bytes().as_slice(), value.as_bytes())
        .map_err(backend)?;
    Ok(())
}

/// Deletes the tombstones past their time.
pub(crate) fn purge_ended(txn: &WriteTransaction, now: Millis) -> Result<(), StoreError> {
    let mut table = txn.open_table(ENDED).map_err(backend)?;
    table
        .retain(|_, v| parse_end(v).is_some_and(|(_, until)| now < until))
        .map_err(backend)
}

fn decode(bytes: &[u8]) -> Result<Record, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn encode(record: &Record) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn key_from(bytes: &[u8]) -> Result<SessionKey, StoreError> {
    let raw: [u8; KEY_LEN] = bytes
        .get(..KEY_LEN)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt("short key".into()))?;
    Ok(SessionKey::from_bytes(raw))
}

/// Per-user index key: user length (u16), user, session key. Length-prefixed so that one
/// user's prefix can never be another user's.
fn user_prefix(user: &str) -> Vec<u8> {
    let len = u16::try_from(user.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(2 + user.len() + KEY_LEN);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(user.as_bytes());
    out
}

fn user_entry(user: &str, key: &SessionKey) -> Vec<u8> {
    let mut out = user_prefix(user);
    out.extend_from_slice(key.as_bytes());
    out
}

fn expiry_entry(deadline: Millis, key: &SessionKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + KEY_LEN);
    out.extend_from_slice(&deadline.to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out
}

fn alias_value(target: &SessionKey, until: Millis) -> Vec<u8> {
    let mut out = target.as_bytes().to_vec();
    out.extend_from_slice(&until.to_be_bytes());
    out
}

fn parse_alias(bytes: &[u8]) -> Result<(SessionKey, Millis), StoreError> {
    let target = key_from(bytes)?;
    let until: [u8; 8] = bytes
        .get(KEY_LEN..KEY_LEN + 8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt("short alias".into()))?;
    Ok((target, Millis::from_be_bytes(until)))
}

/// The live record `key` names at `now`, following an alias within its grace window.
fn resolve_in(
    sessions: &impl ReadableTable<Bytes, Bytes>,
    aliases: &impl ReadableTable<Bytes, Bytes>,
    key: &SessionKey,
    now: Millis,
) -> Result<Option<(SessionKey, Record)>, StoreError> {
    let target = match aliases.get(key.as_bytes().as_slice()).map_err(backend)? {
        Some(v) => match parse_alias(v.value())? {
            (target, until) if now < until => target,
            _ => *key,
        },
        None => *key,
    };
    let Some(bytes) = sessions
        .get(target.as_bytes().as_slice())
        .map_err(backend)?
    else {
        return Ok(None);
    };
    let record = decode(bytes.value())?;
    Ok(record.is_alive(now).then_some((target, record)))
}

fn users_of(
    users: &impl ReadableTable<Bytes, ()>,
    user: &str,
) -> Result<Vec<SessionKey>, StoreError> {
    let prefix = user_prefix(user);
    let mut end = prefix.clone();
    end.extend_from_slice(&[0xff; KEY_LEN + 1]);
    let mut keys = Vec::new();
    for entry in users
        .range(prefix.as_slice()..end.as_slice())
        .map_err(backend)?
    {
        let (k, ()) = entry.map_err(backend).map(|(k, v)| (k, v.value()))?;
        keys.push(key_from(&k.value()[prefix.len()..])?);
    }
    Ok(keys)
}

/// Read-only access (runs concurrently with the writer).
pub(crate) struct Reader {
    sessions: redb::ReadOnlyTable<Bytes, Bytes>,
    aliases: redb::ReadOnlyTable<Bytes, Bytes>,
    users: redb::ReadOnlyTable<Bytes, ()>,
}

impl Reader {
    pub(crate) fn open(txn: &ReadTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            sessions: txn.open_table(SESSIONS).map_err(backend)?,
            aliases: txn.open_table(ALIASES).map_err(backend)?,
            users: txn.open_table(USERS).map_err(backend)?,
        })
    }

    pub(crate) fn load(
        &self,
        key: &SessionKey,
        now: Millis,
    ) -> Result<Option<(SessionKey, Record)>, StoreError> {
        resolve_in(&self.sessions, &self.aliases, key, now)
    }

    pub(crate) fn list_user(
        &self,
        user: &str,
        now: Millis,
    ) -> Result<Vec<UserSession>, StoreError> {
        let mut out = Vec::new();
        for key in users_of(&self.users, user)? {
            if let Some(bytes) = self
                .sessions
                .get(key.as_bytes().as_slice())
                .map_err(backend)?
            {
                let record = decode(bytes.value())?;
                if record.is_alive(now) {
                    out.push(UserSession { key, record });
                }
            }
        }
        Ok(out)
    }

    /// At most `count` session and alias keys after `after`, in key order.
    pub(crate) fn scan(
        &self,
        after: Option<SessionKey>,
        count: usize,
    ) -> Result<Vec<SessionKey>, StoreError> {
        let mut keys = Vec::new();
        for table in [&self.sessions, &self.aliases] {
            let start = after.map(|k| *k.as_bytes()).unwrap_or_default();
            let range = table.range(start.as_slice()..).map_err(backend)?;
            // The range starts at `after` itself: skip it.
            for entry in range.take(count + 1) {
                let (key, _) = entry.map_err(backend)?;
                let key = key_from(key.value())?;
                if Some(key) != after {
                    keys.push(key);
                }
            }
        }
        keys.sort_unstable();
        keys.dedup();
        keys.truncate(count.max(1));
        Ok(keys)
    }

    pub(crate) fn count(&self) -> Result<u64, StoreError> {
        self.sessions.len().map_err(backend)
    }
}

/// What `apply` wrote: the key it landed on, the new record, and the incremented counters.
pub(crate) type AppliedRecord = (SessionKey, Record, BTreeMap<String, i64>);

/// Read-write access inside one transaction of the writer.
pub(crate) struct Tables<'t> {
    sessions: Table<'t, Bytes, Bytes>,
    aliases: Table<'t, Bytes, Bytes>,
    users: Table<'t, Bytes, ()>,
    expiry: Table<'t, Bytes, ()>,
}

impl<'t> Tables<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            sessions: txn.open_table(SESSIONS).map_err(backend)?,
            aliases: txn.open_table(ALIASES).map_err(backend)?,
            users: txn.open_table(USERS).map_err(backend)?,
            expiry: txn.open_table(EXPIRY).map_err(backend)?,
        })
    }

    fn exists(&self, key: &SessionKey) -> Result<bool, StoreError> {
        let k = key.as_bytes().as_slice();
        Ok(self.sessions.get(k).map_err(backend)?.is_some()
            || self.aliases.get(k).map_err(backend)?.is_some())
    }

    /// Whether `key` is a cycle's alias still within its grace window: readable, never
    /// writable.
    pub(crate) fn is_alias(&self, key: &SessionKey, now: Millis) -> Result<bool, StoreError> {
        match self
            .aliases
            .get(key.as_bytes().as_slice())
            .map_err(backend)?
        {
            Some(v) => Ok(now < parse_alias(v.value())?.1),
            None => Ok(false),
        }
    }

    /// Writes `record` under `key`, keeping both indexes in step with `before`.
    fn put(
        &mut self,
        key: &SessionKey,
        record: &Record,
        before: Option<&Record>,
    ) -> Result<(), StoreError> {
        let bytes = encode(record)?;
        self.sessions
            .insert(key.as_bytes().as_slice(), bytes.as_slice())
            .map_err(backend)?;
        let (old_user, old_expiry) = (
            before.and_then(|r| r.user.as_deref()),
            before.map(Record::expires_at),
        );
        if old_user != record.user.as_deref() {
            if let Some(user) = old_user {
                self.users
                    .remove(user_entry(user, key).as_slice())
                    .map_err(backend)?;
            }
            if let Some(user) = &record.user {
                self.users
                    .insert(user_entry(user, key).as_slice(), ())
                    .map_err(backend)?;
            }
        }
        if old_expiry != Some(record.expires_at()) {
            if let Some(deadline) = old_expiry {
                self.expiry
                    .remove(expiry_entry(deadline, key).as_slice())
                    .map_err(backend)?;
            }
            self.expiry
                .insert(expiry_entry(record.expires_at(), key).as_slice(), ())
                .map_err(backend)?;
        }
        Ok(())
    }

    /// Deletes the record under `key` and its index entries.
    /// Deletes the session `key` and its index entries; returns its record if it was there.
    fn delete(&mut self, key: &SessionKey) -> Result<Option<Record>, StoreError> {
        let Some(bytes) = self
            .sessions
            .remove(key.as_bytes().as_slice())
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let record = decode(bytes.value())?;
        drop(bytes);
        if let Some(user) = &record.user {
            self.users
                .remove(user_entry(user, key).as_slice())
                .map_err(backend)?;
        }
        self.expiry
            .remove(expiry_entry(record.expires_at(), key).as_slice())
            .map_err(backend)?;
        Ok(Some(record))
    }

    pub(crate) fn create(&mut self, key: &SessionKey, record: &Record) -> Result<(), StoreError> {
        if self.exists(key)? {
            return Err(StoreError::IdCollision);
        }
        self.put(key, record, None)
    }

    /// Applies `changes` to the live session `key` names; `None` if there is none.
    pub(crate) fn apply(
        &mut self,
        key: &SessionKey,
        changes: &Changes,
        now: Millis,
    ) -> Result<Option<AppliedRecord>, StoreError> {
        let Some((target, before)) = resolve_in(&self.sessions, &self.aliases, key, now)? else {
            return Ok(None);
        };
        let mut record = before.clone();
        // Computed on a copy first: a failed change leaves the shared transaction untouched.
        let counters = record.apply(changes)?;
        self.put(&target, &record, Some(&before))?;
        Ok(Some((target, record, counters)))
    }

    pub(crate) fn cycle(
        &mut self,
        old: &SessionKey,
        new: &SessionKey,
        changes: &Changes,
        now: Millis,
        grace_until: Millis,
    ) -> Result<Applied, StoreError> {
        if self.exists(new)? {
            return Err(StoreError::IdCollision);
        }
        if self.is_alias(old, now)? {
            return Ok(Applied::Aliased);
        }
        let Some((source, mut record)) = resolve_in(&self.sessions, &self.aliases, old, now)?
        else {
            return Ok(Applied::Gone);
        };
        let counters = record.apply(changes)?;
        self.delete(&source)?;
        self.put(new, &record, None)?;
        if now < grace_until {
            self.aliases
                .insert(
                    source.as_bytes().as_slice(),
                    alias_value(new, grace_until).as_slice(),
                )
                .map_err(backend)?;
        }
        Ok(Applied::Done {
            counters,
            key: *new,
        })
    }

    /// Destroys `key` (see [`cloakroom::SessionStore::destroy`]); returns what it found, and
    /// the record if a session went.
    pub(crate) fn destroy(
        &mut self,
        key: &SessionKey,
    ) -> Result<(Destroyed, Option<Record>), StoreError> {
        let was_alias = self
            .aliases
            .remove(key.as_bytes().as_slice())
            .map_err(backend)?
            .is_some();
        if was_alias {
            return Ok((Destroyed::Alias, None));
        }
        let deleted = self.delete(key)?;
        let wanted = *key.as_bytes();
        self.aliases
            .retain(|_, v| v.get(..KEY_LEN) != Some(wanted.as_slice()))
            .map_err(backend)?;
        Ok(match deleted {
            Some(record) => (Destroyed::Session, Some(record)),
            None => (Destroyed::Nothing, None),
        })
    }

    /// Destroys every session of `user` but `keep` (and the session a renewal of `keep`
    /// reaches); returns the keys of those that were live.
    pub(crate) fn destroy_user(
        &mut self,
        user: &str,
        keep: Option<&SessionKey>,
        now: Millis,
    ) -> Result<Vec<SessionKey>, StoreError> {
        let mut ended = Vec::new();
        // A renewal moved `keep` on: the session it reaches now is the caller's too.
        let spared = match keep {
            Some(k) => resolve_in(&self.sessions, &self.aliases, k, now)?.map(|(t, _)| t),
            None => None,
        };
        for key in users_of(&self.users, user)? {
            if Some(&key) == keep || Some(key) == spared {
                continue;
            }
            let alive = resolve_in(&self.sessions, &self.aliases, &key, now)?
                .is_some_and(|(t, _)| t == key);
            let _ = self.destroy(&key)?;
            if alive {
                ended.push(key);
            }
        }
        Ok(ended)
    }

    /// Deletes every session and alias whose deadline has passed; returns the session count.
    pub(crate) fn purge_expired(&mut self, now: Millis) -> Result<u64, StoreError> {
        let end = expiry_entry(now, &SessionKey::from_bytes([0xff; KEY_LEN]));
        let mut due = Vec::new();
        for entry in self.expiry.range(..end.as_slice()).map_err(backend)? {
            let (k, _) = entry.map_err(backend)?;
            due.push(key_from(&k.value()[8..])?);
        }
        let mut purged = 0;
        for key in due {
            let expired = match self
                .sessions
                .get(key.as_bytes().as_slice())
                .map_err(backend)?
            {
                Some(bytes) => !decode(bytes.value())?.is_alive(now),
                None => true,
            };
            if expired {
                purged += u64::from(self.delete(&key)?.is_some());
            }
        }
        self.aliases
            .retain(|_, v| parse_alias(v).is_ok_and(|(_, until)| now < until))
            .map_err(backend)?;
        Ok(purged)
    }
}
