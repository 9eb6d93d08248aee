//! A bounded memory of things that ended lately (sessions, users logged out everywhere), for
//! refusing fallback tickets that predate the end.
//!
//! Hard-bounded and O(1) per insert: entries leave in the order they came (oldest first), by
//! age or, when full, by eviction. An evicted entry is not simply forgotten: it raises a
//! *floor*, and every ticket issued before the floor plus [`FLOOR_MARGIN_MS`] is refused. A
//! ticket is issued while its session lives (or by a request that loaded it just before it
//! ended, hence the margin), so the floor refuses every ticket of an evicted session. A flood
//! of logouts thus costs tickets older than the flood, never every ticket.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use crate::id::SessionKey;
use crate::record::{now_millis, Millis};

/// How far after a forgotten end a ticket may still have been issued: a request that loaded
/// the session before the logout and answered after it, or another instance's clock running
/// ahead. The floor refuses tickets up to this long after the evicted end.
pub const FLOOR_MARGIN_MS: Millis = 60_000;

/// Keys remembered with the time they ended, for `remember` milliseconds, at most
/// `capacity` of them.
///
/// ```
/// use cloakroom::RecentlyEnded;
/// let mut ended = RecentlyEnded::new(2, 1_000);
/// ended.insert("a", 10);
/// ended.insert("b", 20);
/// ended.insert("c", 30); // full: "a" is evicted, and the floor rises to 10 (+ margin)
/// assert!(ended.refuses(&"a", 5, 30), "a ticket issued before a's end is still refused");
/// assert!(ended.refuses(&"c", 99, 30), "a remembered key refuses every ticket");
/// let later = 10 + cloakroom::FLOOR_MARGIN_MS + 1;
/// assert!(!ended.refuses(&"x", later, 30), "one issued well after the floor is not");
/// ```
#[derive(Debug)]
pub struct RecentlyEnded<K> {
    at: HashMap<K, Millis>,
    order: VecDeque<(K, Millis)>,
    capacity: usize,
    remember: Millis,
    floor: Millis,
}

impl<K: Hash + Eq + Clone> RecentlyEnded<K> {
    /// At most `capacity` entries (at least one), each kept for `remember` milliseconds.
    #[must_use]
    pub fn new(capacity: usize, remember: Millis) -> Self {
        Self {
            at: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            remember,
            floor: 0,
        }
    }

    /// Remembers that `key` ended at `at` (now, by the caller's clock).
    pub fn insert(&mut self, key: K, at: Millis) {
        self.age(at);
        while self.order.len() >= self.capacity {
            self.evict(at);
        }
        self.at
            .entry(key.clone())
            .and_modify(|t| *t = (*t).max(at))
            .or_insert(at);
        self.order.push_back((key, at));
    }

    /// When `key` ended, if it is still remembered at `now`.
    pub fn get(&self, key: &K, now: Millis) -> Option<Millis> {
        self.at
            .get(key)
            .copied()
            .filter(|at| at.saturating_add(self.remember) > now)
    }

    /// Whether a ticket of `key` issued at `issued` must be refused at `now`: `key` is
    /// remembered as ended (whenever the ticket was issued: a request that began before the
    /// end may issue one after it), or `issued` is not after what eviction forgot.
    pub fn refuses(&self, key: &K, issued: Millis, now: Millis) -> bool {
        self.below_floor(issued, now) || self.get(key, now).is_some()
    }

    /// Whether `issued` is at or below the [`RecentlyEnded::floor`] in force at `now`.
    pub fn below_floor(&self, issued: Millis, now: Millis) -> bool {
        let floor = self.floor(now);
        floor > 0 && issued <= floor
    }

    /// The floor in force at `now` (0 for none): what eviction forgot ended at or before
    /// it, less [`FLOOR_MARGIN_MS`].
    #[must_use]
    pub fn floor(&self, now: Millis) -> Millis {
        if self.floor > 0 && self.floor.saturating_add(self.remember) > now {
            self.floor.saturating_add(FLOOR_MARGIN_MS)
        } else {
            0
        }
    }

    /// Entries remembered now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.at.len()
    }

    /// Whether nothing is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// Drops entries older than the memory's span, oldest first.
    fn age(&mut self, now: Millis) {
        while let Some((_, at)) = self.order.front() {
            if at.saturating_add(self.remember) > now {
                break;
            }
            self.pop();
        }
    }

    fn evict(&mut self, now: Millis) {
        if let Some(at) = self.pop() {
            if at.saturating_add(self.remember) > now {
                self.floor = self.floor.max(at);
            }
        }
    }

    /// Removes the oldest entry; answers its time if it was the key's latest.
    fn pop(&mut self) -> Option<Millis> {
        let (key, at) = self.order.pop_front()?;
        if self.at.get(&key) == Some(&at) {
            self.at.remove(&key);
            return Some(at);
        }
        None
    }
}

/// The sessions a store heard ending on other app instances (a Redis channel, PostgreSQL's
/// `NOTIFY`), remembered for an hour, at most 200,000 of them (about 100 bytes each): what
/// a store answers [`crate::SessionStore::ended_recently`] from. Shared by the push handler
/// that hears and the requests that ask.
#[derive(Debug)]
pub struct HeardEnded {
    heard: std::sync::Mutex<RecentlyEnded<SessionKey>>,
}

impl Default for HeardEnded {
    fn default() -> Self {
        Self {
            heard: std::sync::Mutex::new(RecentlyEnded::new(200_000, 60 * 60 * 1000)),
        }
    }
}

impl HeardEnded {
    fn lock(&self) -> std::sync::MutexGuard<'_, RecentlyEnded<SessionKey>> {
        self.heard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes that `key`'s session ended now.
    pub fn heard(&self, key: SessionKey) {
        self.lock().insert(key, now_millis());
    }

    /// Whether a fallback ticket for `key` issued at `issued` must be refused: its session
    /// was heard ending, or the memory had to forget ends after `issued`
    /// ([`RecentlyEnded::refuses`]).
    #[must_use]
    pub fn refuses(&self, key: &SessionKey, issued: Millis) -> bool {
        self.lock().refuses(key, issued, now_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_raises_the_floor_but_never_refuses_later_tickets() {
        let mut ended = RecentlyEnded::new(100, 60_000);
        for i in 0..100_000u64 {
            ended.insert(i, 1_000 + i / 10);
            assert!(ended.len() <= 100);
        }
        let now = 1_000 + 100_000 / 10;
        // Tickets issued after the flood's forgotten part (and its margin) still work.
        let later = ended.floor(now) + 1;
        assert!(!ended.refuses(&u64::MAX, later, now));
        // Every evicted key's old tickets are still refused.
        assert!(ended.refuses(&5, 1_000, now));
        // The remembered ones are refused by their own entry.
        assert!(ended.refuses(&99_999, now - 1, now));
    }

    #[test]
    fn entries_and_the_floor_age_out() {
        let mut ended = RecentlyEnded::new(1, 100);
        ended.insert("a", 10);
        ended.insert("b", 20);
        assert!(ended.refuses(&"x", 10, 50), "floor from a");
        assert!(!ended.refuses(&"x", 10, 200), "aged out");
        assert!(!ended.refuses(&"b", 20, 200));
        assert!(
            ended.refuses(&"b", 1_000, 110),
            "a remembered key, any issue time"
        );
        ended.insert("c", 300);
        assert_eq!(ended.len(), 1);
    }

    #[test]
    fn ending_a_key_again_keeps_the_latest_time() {
        let mut ended = RecentlyEnded::new(10, 1_000);
        ended.insert("a", 50);
        ended.insert("a", 40);
        assert_eq!(ended.get(&"a", 60), Some(50));
        assert_eq!(ended.len(), 1);
    }
}
