//! Which sessions ended lately, as every app instance hears it: the scripts publish the key
//! of each session they end on `<prefix>ended` (logout, revocation, a cycle away from it),
//! and each store keeps what it heard for a while. The layer asks it before it accepts a
//! fallback ticket during an outage ([`cloakroom::SessionStore::ended_recently`]), so a
//! logout or revocation made on *another* instance just before Redis went down is honoured
//! here too.
//!
//! A RESP3 connection to one node subscribes (Redis relays a `PUBLISH` to every replica,
//! and a cluster to every node), and resubscribes after a reconnect. Messages published while
//! that connection was down are missed; Redis was not reachable from here then either.

use std::sync::{Arc, Mutex};

use cloakroom::{now_millis, Millis, RecentlyEnded, SessionKey};
use redis::{PushInfo, PushKind, Value};

/// How long an ended session is remembered: longer than any fallback ticket should live.
const REMEMBER_MS: Millis = 60 * 60 * 1000;
/// At most this many are remembered (about 100 bytes each); past it the oldest are evicted
/// and tickets issued before them refused ([`RecentlyEnded`]).
const CAPACITY: usize = 200_000;

/// What this store heard about ended sessions.
pub(crate) struct EndedFeed {
    heard: Mutex<RecentlyEnded<SessionKey>>,
}

impl EndedFeed {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            heard: Mutex::new(RecentlyEnded::new(CAPACITY, REMEMBER_MS)),
        })
    }

    fn heard(&self) -> std::sync::MutexGuard<'_, RecentlyEnded<SessionKey>> {
        self.heard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The push handler: a message on the channel names one ended session.
    pub(crate) fn on_push(&self, push: &PushInfo) {
        if push.kind != PushKind::Message {
            return;
        }
        // [channel, payload]
        let Some(Value::BulkString(payload)) = push.data.get(1) else {
            return;
        };
        let Some(key) = std::str::from_utf8(payload)
            .ok()
            .and_then(SessionKey::parse)
        else {
            return;
        };
        let now = now_millis();
        self.heard().insert(key, now);
    }

    /// Whether `key`'s session was heard ending within the last hour, or a ticket issued at
    /// `issued` predates what a full list evicted (see [`RecentlyEnded::refuses`]).
    pub(crate) fn ended_recently(&self, key: &SessionKey, issued: Millis) -> bool {
        self.heard().refuses(key, issued, now_millis())
    }
}
