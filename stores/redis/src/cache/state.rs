//! What the read cache holds and the bookkeeping that keeps it honest (see `mod.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cloakroom::{Record, SessionKey};
use redis::{PushInfo, PushKind, Value};

/// Invalidation stamps are kept per slot of this many (a hash of the key picks the slot); a
/// collision only costs a cache miss.
const SLOTS: usize = 4096;

/// Bytes counted for an entry besides its fields: the key, the record's numbers, and the
/// map's and the allocator's share.
const ENTRY_OVERHEAD: usize = 160;
/// Bytes counted per field besides its name and value.
const FIELD_OVERHEAD: usize = 48;

/// What a record is counted at against the memory limit.
fn cost(record: &Record) -> usize {
    ENTRY_OVERHEAD
        + record.user.as_ref().map_or(0, String::len)
        + record
            .fields
            .iter()
            .map(|(k, v)| k.len() + v.len() + FIELD_OVERHEAD)
            .sum::<usize>()
}

/// The cached records and the bytes they are counted at.
#[derive(Default)]
struct Entries {
    map: HashMap<SessionKey, (Record, usize)>,
    bytes: usize,
}

impl Entries {
    fn get(&self, key: &SessionKey) -> Option<&Record> {
        self.map.get(key).map(|(record, _)| record)
    }

    /// Caches `record` within `max` bytes: past it, entries are dropped (whichever the map
    /// yields first) until a quarter of the room is free. Dropping never serves stale data;
    /// it only costs misses.
    fn insert(&mut self, key: SessionKey, record: Record, max: usize) {
        self.remove(&key);
        let size = cost(&record);
        if size > max {
            return;
        }
        if self.bytes + size > max {
            let target = (max / 4) * 3;
            let doomed: Vec<SessionKey> = self
                .map
                .iter()
                .scan(self.bytes, |left, (k, (_, n))| {
                    (*left + size > target).then(|| {
                        *left -= n;
                        *k
                    })
                })
                .collect();
            for k in doomed {
                self.remove(&k);
            }
        }
        self.bytes += size;
        self.map.insert(key, (record, size));
    }

    fn remove(&mut self, key: &SessionKey) {
        if let Some((_, n)) = self.map.remove(key) {
            self.bytes -= n;
        }
    }

    fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }

    /// Changes a cached record in place with `change`, which answers whether it could; a
    /// record it could not change, or that no longer fits within `max`, is dropped.
    fn change(&mut self, key: &SessionKey, max: usize, change: impl FnOnce(&mut Record) -> bool) {
        let Some((record, n)) = self.map.get_mut(key) else {
            return;
        };
        if change(record) {
            let size = cost(record);
            self.bytes = self.bytes - *n + size;
            *n = size;
            if size > max || self.bytes > max {
                self.remove(key);
            }
        } else {
            self.remove(key);
        }
    }
}

/// The shared state of the cache; the push handler and the store both hold it.
pub(crate) struct CacheState {
    entries: Mutex<Entries>,
    max_bytes: usize,
    /// Bumped by every invalidation and every local patch; `foreign[slot]` is its value at the
    /// slot's last invalidation (Redis said so, or this process wrote through a script),
    /// `local[slot]` at its last patch (a script-free write of this process, applied here).
    sequence: AtomicU64,
    foreign: Vec<AtomicU64>,
    local: Vec<AtomicU64>,
    /// `sets[slot]`: the sequence at the slot's last set/remove patch. A step patch is not
    /// applied over one it may have raced (their replies can be handled in either order).
    sets: Vec<AtomicU64>,
    /// `writing[slot]`: script-free writes of this process in flight on the tracking
    /// connection. A read sent after such a write already holds its effect, which the
    /// write's patch would then apply again: no reply is cached while one is in flight.
    writing: Vec<AtomicU64>,
    /// Whether `CLIENT TRACKING` is on for the current connection.
    tracking: AtomicBool,
    /// Bumped at every loss of the tracking link.
    epoch: AtomicU64,
    prefix: String,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// A cluster session key's name after the prefix is `{a7}` and the key (`keys.rs`).
fn without_hash_tag(rest: &str) -> &str {
    match rest.as_bytes() {
        [b'{', _, _, b'}', ..] => rest.get(4..).unwrap_or(rest),
        _ => rest,
    }
}

fn slot(key: &SessionKey) -> usize {
    let b = key.as_bytes();
    usize::from(u16::from_le_bytes([b[0], b[1]])) % SLOTS
}

impl CacheState {
    pub(crate) fn new(prefix: &str, max_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::new(Entries::default()),
            max_bytes,
            sequence: AtomicU64::new(0),
            foreign: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            local: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            sets: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            writing: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            tracking: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            prefix: prefix.to_owned(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
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

    /// The cached record of `key`, counted as nothing yet (see [`CacheState::count_hit`]).
    pub(crate) fn peek(&self, key: &SessionKey) -> Option<Record> {
        if !self.tracking.load(Ordering::Acquire) {
            return None;
        }
        self.entries().get(key).cloned()
    }

    /// Counts a read served from a [`CacheState::peek`].
    pub(crate) fn count_hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
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
            || self.writing[slot].load(Ordering::Acquire) > 0
        {
            return;
        }
        entries.insert(key, record, self.max_bytes);
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
        let set = self.sets[slot].load(Ordering::Acquire) > ticket;
        let stamp = self.sequence.fetch_add(1, Ordering::AcqRel) + 1;
        self.local[slot].store(stamp, Ordering::Release);
        if matches!(change, Patch::Fields(_)) {
            self.sets[slot].store(stamp, Ordering::Release);
        }
        let tracking = self.tracking.load(Ordering::Acquire);
        match change {
            Patch::Step(field, by) if tracking && !foreign && !set => {
                entries.change(key, self.max_bytes, |record| {
                    let current = record
                        .fields
                        .get(field)
                        .map_or(Some(0), |t| t.parse::<i64>().ok());
                    current
                        .and_then(|n| n.checked_add(by))
                        .map(|n| record.fields.insert(field.to_owned(), n.to_string()))
                        .is_some()
                });
            }
            Patch::Fields(apply) if tracking && !foreign && !local => {
                entries.change(key, self.max_bytes, |record| {
                    apply(record);
                    true
                });
            }
            _ => entries.remove(key),
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
            .map(without_hash_tag)
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
        {
            // Under the entries lock, which `confirm` also takes: a confirmation either
            // happened before this loss (and is undone here) or sees the new epoch.
            let _entries = self.entries();
            self.epoch.fetch_add(1, Ordering::AcqRel);
            self.tracking.store(false, Ordering::Release);
        }
        self.invalidate_all();
        tracing::warn!(
            "session read cache: tracking link lost; reading from Redis until it is back"
        );
    }

    /// The loss epoch, read before asking for tracking.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Tracking was switched on by a command sent at `epoch`: it counts only if the link was
    /// not lost since. Answers whether it counted.
    pub(crate) fn confirm(&self, epoch: u64) -> bool {
        let mut entries = self.entries();
        if self.epoch.load(Ordering::Acquire) != epoch {
            return false;
        }
        // A read sent before tracking was on is not tracked: its reply must not be cached.
        // Stamped under the same lock, before tracking counts as on, so that no such reply
        // slips in between.
        let stamp = self.sequence.fetch_add(1, Ordering::AcqRel) + 1;
        for s in &self.foreign {
            s.store(stamp, Ordering::Release);
        }
        entries.clear();
        self.tracking.store(true, Ordering::Release);
        true
    }

    /// Whether tracking is on for the current connection.
    pub(crate) fn is_tracking(&self) -> bool {
        self.tracking.load(Ordering::Acquire)
    }

    /// The records cached now and the bytes they are counted at (for metrics).
    pub(crate) fn size(&self) -> (usize, usize) {
        let entries = self.entries();
        (entries.map.len(), entries.bytes)
    }

    /// The bound on the bytes cached.
    pub(crate) fn limit(&self) -> usize {
        self.max_bytes
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

/// Forgets a key when dropped unless disarmed: held across a script-free write on the
/// tracking connection, so a write cancelled after it was sent (Redis sends no invalidation
/// for it, `NOLOOP`) cannot leave this process' copy stale.
pub(crate) struct ForgetUnlessDone<'a> {
    state: &'a CacheState,
    key: SessionKey,
    armed: bool,
}

impl<'a> ForgetUnlessDone<'a> {
    pub(crate) fn new(state: &'a CacheState, key: SessionKey) -> Self {
        state.writing[slot(&key)].fetch_add(1, Ordering::AcqRel);
        Self {
            state,
            key,
            armed: true,
        }
    }

    /// The write's outcome was handled (patched or forgotten) by the caller.
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for ForgetUnlessDone<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.state.invalidate(&self.key);
        }
        self.state.writing[slot(&self.key)].fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SessionKey {
        cloakroom::SessionId::random().unwrap().key()
    }

    #[test]
    fn invalidations_name_keys_with_or_without_a_cluster_hash_tag() {
        let state = CacheState::new("sid:", 1 << 20);
        state.tracking.store(true, Ordering::Release);
        let (k, record) = (key(), Record::new(0, 10, 20));
        for name in [
            format!("sid:{k}"),
            format!("sid:{{{:02x}}}{k}", k.as_bytes()[0]),
        ] {
            state.insert(k, record.clone(), state.ticket());
            assert!(state.get(&k).is_some());
            state.forget_key_name(name.as_bytes());
            assert!(state.get(&k).is_none(), "{name} forgets the record");
        }
    }

    #[test]
    fn a_reply_that_raced_an_invalidation_is_not_cached() {
        let state = CacheState::new("session:", 1 << 20);
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
    fn tracking_confirmed_across_a_loss_does_not_count() {
        let state = CacheState::new("session:", 1 << 20);
        let epoch = state.epoch();
        // CLIENT TRACKING ON is out; the link drops and is replaced before the OK is handled.
        state.lost();
        assert!(!state.confirm(epoch), "the OK came from the lost link");
        assert!(!state.is_tracking());
        let (k, record) = (key(), Record::new(0, 10, 20));
        state.insert(k, record.clone(), state.ticket());
        assert!(state.get(&k).is_none());
        assert!(state.confirm(state.epoch()));
        state.insert(k, record.clone(), state.ticket());
        assert_eq!(state.get(&k), Some(record));
    }

    #[test]
    fn a_step_is_not_applied_over_a_set_it_raced() {
        let state = CacheState::new("session:", 1 << 20);
        assert!(state.confirm(state.epoch()));
        let k = key();
        let mut record = Record::new(0, 10, 20);
        record.fields.insert("n".into(), "3".into());
        state.insert(k, record, state.ticket());
        // Both sent at one ticket; Redis ran the step, then the set (n = 5), but the set's
        // reply is handled first.
        let ticket = state.ticket();
        let set = |r: &mut Record| {
            r.fields.insert("n".into(), "5".into());
        };
        state.patch(&k, ticket, Patch::Fields(&set));
        state.patch(&k, ticket, Patch::Step("n", 1));
        assert!(
            state.get(&k).is_none(),
            "6 would be stale: forgotten instead"
        );
    }

    #[test]
    fn a_cancelled_write_forgets_its_key() {
        let state = CacheState::new("session:", 1 << 20);
        assert!(state.confirm(state.epoch()));
        let (k, record) = (key(), Record::new(0, 10, 20));
        state.insert(k, record, state.ticket());
        drop(ForgetUnlessDone::new(&state, k));
        assert!(state.get(&k).is_none());
    }

    #[test]
    fn losing_the_link_empties_the_cache_and_stops_serving() {
        let state = CacheState::new("session:", 1 << 20);
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

    /// The memory limit holds whatever comes in: the counted bytes never pass it, a flood of
    /// new sessions drops older entries (misses, never stale data), growing a cached record
    /// by patches is counted, and an invalidated key is gone whatever was dropped.
    #[test]
    fn the_cache_stays_within_its_bytes_and_never_serves_what_it_dropped() {
        let max = 64 * 1024;
        let state = CacheState::new("session:", max);
        state.tracking.store(true, Ordering::Release);
        let mut record = Record::new(0, 10, 20);
        record.fields.insert("cart".into(), "x".repeat(200));
        let keys: Vec<SessionKey> = (0..2_000).map(|_| key()).collect();
        for k in &keys {
            state.insert(*k, record.clone(), state.ticket());
            let (_, bytes) = state.size();
            assert!(bytes <= max, "{bytes} > {max}");
        }
        let (entries, bytes) = state.size();
        assert!(
            entries > 50 && entries < 2_000,
            "{entries} entries, {bytes} bytes"
        );
        let kept = keys.iter().filter(|k| state.get(k).is_some()).count();
        assert_eq!(kept, entries, "every counted entry is servable");
        // Patches grow a record; the growth is counted.
        let k = *keys.iter().rev().find(|k| state.get(k).is_some()).unwrap();
        let before = state.size().1;
        let grow = |r: &mut Record| {
            r.fields.insert("more".into(), "y".repeat(100));
        };
        state.patch(&k, state.ticket(), Patch::Fields(&grow));
        assert_eq!(state.size().1, before + 100 + 4 + FIELD_OVERHEAD);
        state.invalidate(&k);
        assert!(state.get(&k).is_none());
        // A record larger than the whole limit is never cached.
        let mut huge = Record::new(0, 10, 20);
        huge.fields.insert("blob".into(), "z".repeat(max));
        let h = key();
        state.insert(h, huge, state.ticket());
        assert!(state.get(&h).is_none());
        assert!(state.size().1 <= max);
    }

    /// A read sent while a script-free write of this process is in flight already holds the
    /// write's effect, which the write's patch applies again: such a reply is not cached.
    #[test]
    fn a_reply_read_while_a_write_is_in_flight_is_not_cached() {
        let state = CacheState::new("session:", 1 << 20);
        state.tracking.store(true, Ordering::Release);
        let (k, record) = (key(), Record::new(0, 10, 20));
        let write = ForgetUnlessDone::new(&state, k);
        state.insert(k, record.clone(), state.ticket());
        assert!(
            state.get(&k).is_none(),
            "cached while a write was in flight"
        );
        write.disarm();
        state.insert(k, record, state.ticket());
        assert!(state.get(&k).is_some());
    }
}
