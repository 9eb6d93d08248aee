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

use std::sync::Arc;

use cloakroom::{HeardEnded, Millis, SessionKey};
use redis::{PushInfo, PushKind, Value};

/// What this store heard about ended sessions.
#[derive(Default)]
pub(crate) struct EndedFeed {
    heard: HeardEnded,
}

impl EndedFeed {
    pub(crate) fn new() -> Arc<Self> {
        Arc::default()
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
        if let Some(key) = std::str::from_utf8(payload)
            .ok()
            .and_then(SessionKey::parse)
        {
            self.heard.heard(key);
        }
    }

    /// Whether `key`'s session was heard ending within the last hour, or a ticket issued at
    /// `issued` predates what a full list evicted (see [`HeardEnded::refuses`]).
    pub(crate) fn ended_recently(&self, key: &SessionKey, issued: Millis) -> bool {
        self.heard.refuses(key, issued)
    }
}
