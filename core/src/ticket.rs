//! The fallback ticket: a short-lived, encrypted cookie that keeps a user logged in (read
//! only) while the store is down ([`crate::FailurePolicy::Fallback`]).
//!
//! While the store answers, the ticket is never read: the store is the authority. The layer
//! re-issues it on responses that already use a session with a user, at most once per
//! refresh interval, and clears it when the session ends. When the store fails, a request
//! whose ticket decrypts under the key ring, has not expired, names the session its cookie
//! names, and was not ended on this instance gets a degraded session that knows its user and
//! a few fields the app chose, and refuses every write.
//!
//! Format: `<issued, Unix ms>.<base64url of a 24-byte random nonce and the XChaCha20-Poly1305
//! ciphertext of a small JSON object>`. The issue time is in clear (and authenticated: it is
//! the AEAD's associated data) so that a healthy request decides whether to re-issue without
//! decrypting anything. The AEAD key is derived from each key of the ring (the first
//! encrypts, all decrypt), so rotating `SESSION_SECRET` rotates tickets with cookies.

use std::collections::BTreeMap;
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::ended::RecentlyEnded;
use crate::id::SessionKey;
use crate::keyring::KeyRing;
use crate::record::Millis;

/// Most bytes the app-chosen fields may take in a ticket (names and JSON values).
pub const FALLBACK_FIELDS_MAX_BYTES: usize = 512;
const NONCE_LEN: usize = 24;
const AAD: &[u8] = b"cloakroom-fallback-ticket-v1";
/// The longest ticket value accepted before any decoding: fields, user, overhead.
pub(crate) const MAX_VALUE_LEN: usize = 2048;

/// What a ticket holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Ticket {
    /// The user.
    #[serde(rename = "u")]
    pub(crate) user: String,
    /// The session's store key (text form): a ticket works only with its own session's cookie.
    #[serde(rename = "k")]
    pub(crate) session: String,
    /// When it was issued and when it stops working (Unix ms).
    #[serde(rename = "i")]
    pub(crate) issued: Millis,
    #[serde(rename = "e")]
    pub(crate) expires: Millis,
    /// The app-chosen fields, as stored (JSON text).
    #[serde(rename = "f", default)]
    pub(crate) fields: BTreeMap<String, String>,
}

/// Why a ticket was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Does not decrypt under any key of the ring (tampered, forged, or a retired key).
    Forged,
    /// Past its lifetime.
    Expired,
}

/// The AEAD keys of a ring, the encrypting one first.
#[derive(Clone)]
pub(crate) struct TicketKeys {
    ciphers: Vec<XChaCha20Poly1305>,
}

impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TicketKeys({} keys)", self.ciphers.len())
    }
}

impl TicketKeys {
    pub(crate) fn new(ring: &KeyRing) -> Self {
        Self {
            ciphers: ring
                .derive(b"cloakroom-fallback-ticket-key-v1")
                .iter()
                .map(|k| XChaCha20Poly1305::new(k.into()))
                .collect(),
        }
    }

    /// The cookie value for `ticket`, encrypted with the first key.
    pub(crate) fn seal(&self, ticket: &Ticket) -> Option<String> {
        let plain = serde_json::to_vec(ticket).ok()?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).ok()?;
        let issued = ticket.issued.to_string();
        let sealed = self.ciphers.first()?.encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: &aad(&issued),
            },
        );
        let mut out = nonce.to_vec();
        out.extend(sealed.ok()?);
        let value = format!("{issued}.{}", URL_SAFE_NO_PAD.encode(out));
        // One `open` would refuse (a very long user name) is not issued at all.
        (value.len() <= MAX_VALUE_LEN).then_some(value)
    }

    /// The ticket in `value`, if a key of the ring sealed it and it is still valid at `now`.
    pub(crate) fn open(&self, value: &str, now: Millis) -> Result<Ticket, Refused> {
        if value.len() > MAX_VALUE_LEN {
            return Err(Refused::Forged);
        }
        let (issued, value) = value.split_once('.').ok_or(Refused::Forged)?;
        let raw = URL_SAFE_NO_PAD.decode(value).map_err(|_| Refused::Forged)?;
        if raw.len() <= NONCE_LEN {
            return Err(Refused::Forged);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let plain = self
            .ciphers
            .iter()
            .find_map(|c| {
                c.decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: &aad(issued),
                    },
                )
                .ok()
            })
            .ok_or(Refused::Forged)?;
        let ticket: Ticket = serde_json::from_slice(&plain).map_err(|_| Refused::Forged)?;
        if issued != ticket.issued.to_string() {
            return Err(Refused::Forged);
        }
        if now >= ticket.expires {
            return Err(Refused::Expired);
        }
        Ok(ticket)
    }
}

/// The AEAD's associated data: the format's label and the issue time in clear.
fn aad(issued: &str) -> Vec<u8> {
    [AAD, b".", issued.as_bytes()].concat()
}

/// When the ticket in `value` says it was issued, read from its clear part without any
/// cryptography: only to decide whether to re-issue (a forged time cheats only its sender).
pub(crate) fn issued_of(value: &str) -> Option<Millis> {
    value.split_once('.')?.0.parse().ok()
}

/// Sessions this instance saw end (destroyed, revoked, cycled away, found gone) and users
/// it logged out everywhere, remembered for as long as a ticket can live, so that a ticket
/// copied before a logout cannot bring the session back during an outage. Hard-bounded with
/// O(1) eviction ([`RecentlyEnded`]): what a flood evicts raises a floor below which tickets
/// are refused, so nothing ended is forgotten and later tickets keep working.
pub(crate) struct Ended {
    lists: Mutex<Lists>,
}

struct Lists {
    /// Session key → when it ended: its tickets are refused.
    keys: RecentlyEnded<SessionKey>,
    /// User → when they were logged out everywhere: tickets issued until then are refused.
    users: RecentlyEnded<String>,
}

impl Ended {
    /// At most `capacity` sessions and as many users, each for `lifetime` (a ticket's).
    pub(crate) fn new(capacity: usize, lifetime: Millis) -> Self {
        Self {
            lists: Mutex::new(Lists {
                keys: RecentlyEnded::new(capacity, lifetime),
                users: RecentlyEnded::new(capacity, lifetime),
            }),
        }
    }

    fn lists(&self) -> std::sync::MutexGuard<'_, Lists> {
        self.lists
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers that the session `key` ended at `now`.
    pub(crate) fn session(&self, key: SessionKey, now: Millis) {
        self.lists().keys.insert(key, now);
    }

    /// Remembers that every session of `user` issued until `now` ended.
    pub(crate) fn user(&self, user: &str, now: Millis) {
        self.lists().users.insert(user.to_owned(), now);
    }

    /// Whether `ticket`, presented with the session `key`, must be refused: its session
    /// ended, its user was logged out everywhere after it was issued, or it predates what a
    /// full list had to evict.
    pub(crate) fn refuses(&self, ticket: &Ticket, key: &SessionKey, now: Millis) -> bool {
        let lists = self.lists();
        // A user logged out everywhere keeps the tickets issued after that (new logins).
        lists.keys.refuses(key, ticket.issued, now)
            || lists.users.below_floor(ticket.issued, now)
            || lists
                .users
                .get(&ticket.user, now)
                .is_some_and(|at| ticket.issued <= at)
    }

    /// The issue time for a new ticket of `user` at `now`: after the user's last revocation
    /// and after every floor, even within the same millisecond, so that it is not refused
    /// with the old ones.
    pub(crate) fn issue_time(&self, user: &str, now: Millis) -> Millis {
        let lists = self.lists();
        let revoked = lists.users.get(&user.to_owned(), now).unwrap_or(0);
        let floor = lists.users.floor(now).max(lists.keys.floor(now));
        let last = revoked.max(floor);
        if last >= now {
            last.saturating_add(1)
        } else {
            now
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SessionId;

    fn ticket(now: Millis) -> Ticket {
        Ticket {
            user: "ada".into(),
            session: SessionId::random().unwrap().key().to_string(),
            issued: now,
            expires: now + 600_000,
            fields: BTreeMap::from([("name".into(), "\"Ada\"".into())]),
        }
    }

    fn ring(secrets: &[&str]) -> TicketKeys {
        TicketKeys::new(&KeyRing::new(secrets).unwrap())
    }

    const OLD: &str = "an-old-secret-of-at-least-32-bytes!!";
    const NEW: &str = "a-new-secret-of-at-least-32-bytes!!!";

    #[test]
    fn a_ticket_opens_under_its_ring_and_an_older_key_still_in_it() {
        let t = ticket(1_000);
        let value = ring(&[OLD]).seal(&t).unwrap();
        assert_eq!(ring(&[OLD]).open(&value, 2_000), Ok(t.clone()));
        // Rotated: the old key is second, and still opens it.
        assert_eq!(ring(&[NEW, OLD]).open(&value, 2_000), Ok(t));
        // Retired: refused.
        assert_eq!(ring(&[NEW]).open(&value, 2_000), Err(Refused::Forged));
    }

    #[test]
    fn expired_tampered_and_garbage_tickets_are_refused() {
        let keys = ring(&[OLD]);
        let t = ticket(1_000);
        let value = keys.seal(&t).unwrap();
        assert_eq!(keys.open(&value, t.expires), Err(Refused::Expired));
        let (issued, sealed) = value.split_once('.').unwrap();
        assert_eq!(issued_of(&value), Some(1_000));
        let mut raw = URL_SAFE_NO_PAD.decode(sealed).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let flipped = format!("{issued}.{}", URL_SAFE_NO_PAD.encode(raw));
        assert_eq!(keys.open(&flipped, 2_000), Err(Refused::Forged));
        // The clear issue time is authenticated: changing it breaks the seal.
        let moved = format!("1001.{sealed}");
        assert_eq!(keys.open(&moved, 2_000), Err(Refused::Forged));
        for garbage in ["", "!!", "AAAA", &"A".repeat(5_000)] {
            assert_eq!(keys.open(garbage, 2_000), Err(Refused::Forged));
        }
        // Two seals of one ticket differ (random nonce): nothing to correlate on the wire.
        assert_ne!(keys.seal(&t), keys.seal(&t));
        // One too long to open is not issued at all.
        let mut long = t;
        long.user = "u".repeat(MAX_VALUE_LEN);
        assert_eq!(keys.seal(&long), None);
    }

    #[test]
    fn ended_sessions_and_users_are_refused_for_a_ticket_lifetime() {
        let ended = Ended::new(3, 500);
        let t = ticket(1_000);
        let key = SessionKey::parse(&t.session).unwrap();
        let other = SessionId::random().unwrap().key();
        ended.session(key, 1_000);
        assert!(ended.refuses(&t, &key, 1_200));
        assert!(
            !ended.refuses(&t, &key, 1_500),
            "remembered for the lifetime only"
        );
        assert!(!ended.refuses(&t, &other, 1_200));
        // Logged out everywhere at 1_100: tickets issued until then are refused, later ones not.
        ended.user("ada", 1_100);
        assert!(ended.refuses(&t, &other, 1_200));
        assert!(ended.refuses(
            &Ticket {
                issued: 1_100,
                ..t.clone()
            },
            &other,
            1_200
        ));
        assert_eq!(ended.issue_time("ada", 1_100), 1_101);
        assert_eq!(ended.issue_time("ada", 1_150), 1_150);
        let fresh = Ticket {
            issued: 1_150,
            ..t.clone()
        };
        assert!(!ended.refuses(&fresh, &other, 1_200));
        // Full: the oldest is evicted, and tickets older than it are refused, not all.
        for _ in 0..3 {
            ended.session(SessionId::random().unwrap().key(), 1_200);
        }
        assert!(ended.refuses(&t, &SessionId::random().unwrap().key(), 1_300));
        let later = Ticket {
            issued: 1_200 + crate::FLOOR_MARGIN_MS + 1,
            ..t.clone()
        };
        assert!(!ended.refuses(&later, &SessionId::random().unwrap().key(), 1_300));
    }
}
