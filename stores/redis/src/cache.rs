//! The optional read cache: session records kept in process, invalidated by Redis itself.
//!
//! A second connection speaks RESP3 with `CLIENT TRACKING ON` (default mode): Redis remembers
//! which keys that connection read and pushes an `invalidate` message when any client changes
//! one of them. A read served from the cache costs no round trip; every write still goes to
//! Redis, conditional as always, so a stale read can never write.
//!
//! What keeps the cache honest:
//! - Every invalidation (and every write this process makes) stamps the key's slot with a new
//!   sequence number; a read inserts its reply only if its slot was not stamped after the read
//!   was sent. So a reply that raced an invalidation is never cached.
//! - Losing the tracking link (the connection's `Disconnection`) empties the cache at once, and
//!   reads go to Redis until tracking is switched on again on the new connection.
//! - A server that refuses `CLIENT TRACKING` leaves the cache off: strict reads.
//! - What remains: an invalidation still on its way (Redis to this process) when a request
//!   arrives. That window is one push delivery: the network's one-way latency plus the time
//!   until the connection reads its socket. `docs/redis-data-model.md` states the bound and
//!   `app/tests/redis.rs` checks it with three instances.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cloakroom::{Record, SessionKey};
use redis::{PushInfo, PushKind, Value};

/// Invalidation stamps are kept per slot of this many (a hash of the key picks the slot); a
/// collision only costs a cache miss.
const SLOTS: usize = 4096;

/// The shared state of the cache; the push handler and the store both hold it.
pub(crate) struct CacheState {
    entries: Mutex<HashMap<SessionKey, Record>>,
    max_entries: usize,
    /// Bumped by every invalidation and every local patch; `foreign[slot]` is its value at the
    /// slot's last invalidation (Redis said so, or this process wrote through a script),
    /// `local[slot]` at its last patch (a script-free write of this process, applied here).
    sequence: AtomicU64,
    foreign: Vec<AtomicU64>,
    local: Vec<AtomicU64>,
    /// Whether `CLIENT TRACKING` is on for the current connection.
    tracking: AtomicBool,
    prefix: String,
    hits: AtomicU64,
    misses: AtomicU64,
}

fn slot(key: &SessionKey) -> usize {
    let b = key.as_bytes();
    usize::from(u16::from_le_bytes([b[0], b[1]])) % SLOTS
}

impl CacheState {
    pub(crate) fn new(prefix: &str, max_entries: usize) -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::new(HashMap::new()),
            max_entries,
            sequence: AtomicU64::new(0),
            foreign: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            local: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            tracking: AtomicBool::new(false),
            prefix: prefix.to_owned(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, Record>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A cached record, only while tracking is on.
    pub(crate) fn get(&self, key: &SessionKey) -> Option<Record> {
        if !self.tracking.load(Ordering::Acquire) {
            return None;
        }
        let found = self.entries().get(key).cloned();
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// The sequence number to hand back to [`CacheState::insert`] for a read sent now.
    pub(crate) fn ticket(&self) -> u64 {
        self.sequence.load(Ordering::Acquire)
    }

    /// Caches what a read sent at `ticket` returned, unless the key was invalidated since.
    pub(crate) fn insert(&self, key: SessionKey, record: Record, ticket: u64) {
        if !self.tracking.load(Ordering::Acquire) {
            return;
        }
        let mut entries = self.entries();
        // Checked under the lock the invalidation also takes: no stamp can slip in between.
        let slot = slot(&key);
        if self.foreign[slot].load(Ordering::Acquire) > ticket
            || self.local[slot].load(Ordering::Acquire) > ticket
        {
            return;
        }
        if entries.len() >= self.max_entries {
            entries.clear();
        }
        entries.insert(key, record);
    }

    /// After a script-free write this process sent on the tracking connection at `ticket`
    /// (which, with `NOLOOP`, brings no invalidation back): brings the cached record up to
    /// date, or forgets it when that cannot be done exactly.
    ///
    /// An increment is applied as a step (`by`), so that concurrent increments from this
    /// process, whose replies come back in any order, add up to what Redis holds. Sets and
    /// removes are applied only if nothing else touched the key since `ticket` (two of them
    /// racing could land in either order). A change from elsewhere since `ticket` always
    /// means forgetting.
    pub(crate) fn patch(&self, key: &SessionKey, ticket: u64, change: Patch<'_>) {
        let mut entries = self.entries();
        let slot = slot(key);
        let foreign = self.foreign[slot].load(Ordering::Acquire) > ticket;
        let local = self.local[slot].load(Ordering::Acquire) > ticket;
        let stamp = self.sequence.fetch_add(1, Ordering::AcqRel) + 1;
        self.local[slot].store(stamp, Ordering::Release);
        let tracking = self.tracking.load(Ordering::Acquire);
        let applied = match (entries.get_mut(key), change) {
            (Some(record), Patch::Step(field, by)) if tracking && !foreign => {
                let current = record
                    .fields
                    .get(field)
                    .map_or(Some(0), |t| t.parse::<i64>().ok());
                current
                    .and_then(|n| n.checked_add(by))
                    .map(|n| record.fields.insert(field.to_owned(), n.to_string()))
                    .is_some()
            }
            (Some(record), Patch::Fields(apply)) if tracking && !foreign && !local => {
                apply(record);
                true
            }
            _ => false,
        };
        if !applied {
            entries.remove(key);
        }
    }

    /// Forgets `key` (a write from this process, or Redis said it changed).
    pub(crate) fn invalidate(&self, key: &SessionKey) {
        let mut entries = self.entries();
        let stamp = self.sequence.fetch_add(1, Ordering::AcqRel) + 1;
        self.foreign[slot(key)].store(stamp, Ordering::Release);
        entries.remove(key);
    }

    /// Forgets everything (the tracking link was lost, or Redis flushed its table).
    fn invalidate_all(&self) {
        let mut entries = self.entries();
        let stamp = self.sequence.fetch_add(1, Ordering::AcqRel) + 1;
        for s in &self.foreign {
            s.store(stamp, Ordering::Release);
        }
        entries.clear();
    }

    fn forget_key_name(&self, name: &[u8]) {
        let key = std::str::from_utf8(name)
            .ok()
            .and_then(|n| n.strip_prefix(self.prefix.as_str()))
            .and_then(SessionKey::parse);
        if let Some(key) = key {
            self.invalidate(&key);
        }
    }

    /// The push handler: runs on the connection's task, in the order messages arrive.
    pub(crate) fn on_push(&self, push: &PushInfo) {
        match push.kind {
            PushKind::Invalidate => match push.data.first() {
                Some(Value::Array(names)) => {
                    for name in names {
                        if let Value::BulkString(bytes) = name {
                            self.forget_key_name(bytes);
                        }
                    }
                }
                // A null list: Redis flushed its tracking table (FLUSHALL, memory pressure).
                _ => self.invalidate_all(),
            },
            PushKind::Disconnection => self.lost(),
            _ => {}
        }
    }

    /// The tracking link was lost (the connection dropped, or was replaced after a
    /// failover): nothing cached may be served until tracking is on again.
    pub(crate) fn lost(&self) {
        self.tracking.store(false, Ordering::Release);
        self.invalidate_all();
        tracing::warn!(
            "session read cache: tracking link lost; reading from Redis until it is back"
        );
    }

    /// Whether tracking is on for the current connection.
    pub(crate) fn is_tracking(&self) -> bool {
        self.tracking.load(Ordering::Acquire)
    }

    /// Hits and misses so far (for metrics and tests).
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

/// What a script-free write did, for [`CacheState::patch`].
pub(crate) enum Patch<'a> {
    /// Added `by` to one counter.
    Step(&'a str, i64),
    /// Set and removed fields (applied by the function).
    Fields(&'a dyn Fn(&mut Record)),
}

/// The tracking connection and the state its pushes keep.
#[derive(Clone)]
pub(crate) struct ReadCache {
    pub(crate) conn: crate::RedisConnection,
    pub(crate) state: Arc<CacheState>,
}

impl ReadCache {
    /// Switches tracking on for the current connection if it is off. After a reconnect the
    /// server has forgotten it; until it answers OK nothing is served from the cache.
    pub(crate) async fn ensure_tracking(&self) -> Result<(), redis::RedisError> {
        if self.state.is_tracking() {
            return Ok(());
        }
        // NOLOOP: the script-free writes this process sends on this connection bring back no
        // invalidation; the store applies their effect to the cache itself (`patch`).
        redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("NOLOOP")
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        self.state.tracking.store(true, Ordering::Release);
        // A read sent before tracking was on is not tracked: its reply must not be cached.
        self.state.invalidate_all();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SessionKey {
        cloakroom::SessionId::random().unwrap().key()
    }

    #[test]
    fn a_reply_that_raced_an_invalidation_is_not_cached() {
        let state = CacheState::new("session:", 10);
        state.tracking.store(true, Ordering::Release);
        let (k, record) = (key(), Record::new(0, 10, 20));
        let ticket = state.ticket();
        state.invalidate(&k);
        state.insert(k, record.clone(), ticket);
        assert!(
            state.get(&k).is_none(),
            "invalidated after the read was sent"
        );
        let ticket = state.ticket();
        state.insert(k, record.clone(), ticket);
        assert_eq!(state.get(&k), Some(record));
        state.on_push(&PushInfo {
            kind: PushKind::Invalidate,
            data: vec![Value::Array(vec![Value::BulkString(
                format!("session:{k}").into_bytes(),
            )])],
        });
        assert!(state.get(&k).is_none(), "Redis said it changed");
    }

    #[test]
    fn losing_the_link_empties_the_cache_and_stops_serving() {
        let state = CacheState::new("session:", 10);
        state.tracking.store(true, Ordering::Release);
        let (k, record) = (key(), Record::new(0, 10, 20));
        state.insert(k, record, state.ticket());
        state.on_push(&PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        });
        assert!(!state.is_tracking());
        assert!(state.get(&k).is_none());
        state.tracking.store(true, Ordering::Release);
        assert!(state.get(&k).is_none(), "emptied, not just hidden");
    }
}
