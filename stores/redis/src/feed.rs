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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cloakroom::{now_millis, Millis, SessionKey};
use redis::{PushInfo, PushKind, Value};

/// How long an ended session is remembered: longer than any fallback ticket should live.
const REMEMBER_MS: Millis = 60 * 60 * 1000;
/// At most this many are remembered; past it, every ticket is refused until entries age out.
const CAPACITY: usize = 200_000;

/// What this store heard about ended sessions.
#[derive(Default)]
pub(crate) struct EndedFeed {
    heard: Mutex<HashMap<SessionKey, Millis>>,
}

impl EndedFeed {
    pub(crate) fn new() -> Arc<Self> {
        Arc::default()
    }

    fn heard(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, Millis>> {
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
        let mut heard = self.heard();
        if heard.len() >= CAPACITY {
            heard.retain(|_, at| now.saturating_sub(*at) < REMEMBER_MS);
        }
        heard.insert(key, now);
    }

    /// Whether `key`'s session was heard ending within the last hour (or the list is full).
    pub(crate) fn ended_recently(&self, key: &SessionKey) -> bool {
        let heard = self.heard();
        heard.len() >= CAPACITY
            || heard
                .get(key)
                .is_some_and(|at| now_millis().saturating_sub(*at) < REMEMBER_MS)
    }
}
