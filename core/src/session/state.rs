//! The state machine of a request's session: whether the store holds it ([`Existence`]), how
//! the request reached it ([`Access`]), what the request did to its identity ([`Lifecycle`]),
//! and the one place the response's cookie is decided ([`State::cookie`]).

use std::net::IpAddr;

use crate::cookie::Candidates;
use crate::id::{SessionId, SessionKey};
use crate::names::EXPIRY_FIELD;
use crate::record::{Changes, Millis, Record};
use crate::SessionError;

/// Does the store hold the session this request names?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Existence {
    /// A validly signed cookie names it; not asked yet.
    Unknown,
    /// A blind write found it, but its data is not loaded.
    Confirmed,
    /// Loaded (or created by this request): `State::record` holds it.
    Loaded,
    /// There is no session: no cookie, or it expired, or it was destroyed.
    Absent,
}

/// How the request reached its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// No session yet.
    None,
    /// Through the current ID; `stale_signature` if an older key signed the cookie.
    Direct { stale_signature: bool },
    /// Through an ID a renewal replaced (within its grace window): read-only, and never
    /// handed a cookie, because the browser may already hold the new one.
    Alias,
}

/// What this request did to the session's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    /// Same ID, same expiry on the client: no cookie needed.
    Kept,
    /// Created, cycled, renewed, or its expiry refreshed: send the cookie.
    Issued,
    /// Destroyed, expired or gone: tell the browser to forget the cookie.
    Purged,
}

/// Why the ID changes at commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cycle {
    /// Login, logout to another user, or any privilege change: the old ID dies at once.
    Privilege,
    /// Periodic renewal: the old ID may still read for the grace window.
    Renewal,
}

/// What the response must do with the cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CookieOut {
    Keep,
    Set,
    Remove,
}

/// What the response must do with the fallback ticket ([`crate::FailurePolicy::Fallback`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TicketOut {
    Keep,
    Set(String),
    Remove,
}

/// The result of a commit: everything the layer needs to write the response's cookies.
pub(crate) struct Committed {
    pub(crate) ticket: TicketOut,
    pub(crate) cookie: CookieOut,
    /// The signed cookie value, when `cookie` is [`CookieOut::Set`].
    pub(crate) value: Option<String>,
    /// The `Max-Age` of a cookie set: `None` for a browser-session cookie.
    pub(crate) max_age: Option<std::time::Duration>,
    /// Whether the handler used the session at all (its response then depends on the cookie).
    pub(crate) touched: bool,
}

pub(crate) struct State {
    pub(crate) id: Option<SessionId>,
    pub(crate) key: Option<SessionKey>,
    pub(crate) existence: Existence,
    pub(crate) access: Access,
    pub(crate) lifecycle: Lifecycle,
    /// Working copy: the loaded record with this request's changes applied.
    pub(crate) record: Option<Record>,
    pub(crate) pending: Changes,
    pub(crate) cycle: Option<Cycle>,
    /// A session this request ended, to delete in the store at commit.
    pub(crate) destroyed: Option<SessionKey>,
    /// The store failed under [`crate::FailurePolicy::Anonymous`]: reads see no session, writes fail.
    pub(crate) degraded: bool,
    pub(crate) touched: bool,
    /// This request's client fingerprint, when sessions are bound to their client.
    pub(crate) bound: Option<String>,
    /// Cookies not verified yet (until the handler first uses the session).
    pub(crate) unverified: Option<(Candidates, Option<IpAddr>)>,
    /// The request's fallback ticket, looked at only when the store fails or the response
    /// may re-issue it.
    pub(crate) ticket_cookie: crate::cookie::TicketCookie,
    /// This request changed what the fallback ticket says (user, ID, its fields) or revoked
    /// the user's other sessions: the ticket is re-issued whatever its age.
    pub(crate) ticket_dirty: bool,
    /// The commit ran: later changes cannot be written and are refused.
    pub(crate) committed: bool,
    /// This request filed the session (a write before the commit, or the commit itself).
    pub(crate) created: bool,
    /// A foreign session's cookie this request carried (the source's index and the values),
    /// imported if the request has no session of its own (`crate::import`).
    pub(crate) foreign: Option<(usize, Vec<String>)>,
    /// The foreign session a logout in this request ends too (the `__import` marker).
    pub(crate) end_foreign: Option<String>,
    /// The user of the session this request ends, and why (for its event; a logout when
    /// not said).
    pub(crate) end_user: Option<String>,
    pub(crate) end_reason: Option<crate::events::EndReason>,
    /// The key a correctly signed cookie named that found no session, and why it ended (read
    /// from its tombstone when asked: [`crate::Session::ended`]).
    pub(crate) dead: Option<SessionKey>,
    pub(crate) ended: Option<crate::events::EndReason>,
}

impl State {
    /// The one place the response's cookie is decided.
    pub(crate) fn cookie(&self) -> CookieOut {
        match (self.lifecycle, self.access) {
            (Lifecycle::Purged, _) => CookieOut::Remove,
            // The browser may already hold the new cookie; never overwrite it with the old one.
            (_, Access::Alias) | (Lifecycle::Kept, Access::None) => CookieOut::Keep,
            (Lifecycle::Issued, _) => CookieOut::Set,
            (Lifecycle::Kept, Access::Direct { stale_signature }) => {
                if stale_signature && self.id.is_some() {
                    CookieOut::Set
                } else {
                    CookieOut::Keep
                }
            }
        }
    }

    /// Whether this request may change the session.
    pub(crate) fn writable(&self) -> Result<(), SessionError> {
        if self.committed {
            return Err(SessionError::AlreadyCommitted);
        }
        if self.degraded {
            return Err(SessionError::Unavailable);
        }
        if self.access == Access::Alias {
            return Err(SessionError::Superseded);
        }
        Ok(())
    }

    /// Takes the verified cookie's ID as this request's session.
    pub(crate) fn adopt(&mut self, cookie: Option<(SessionId, bool)>) {
        if let Some((id, stale_signature)) = cookie {
            let key = id.key();
            // The layer's request span carries the fingerprint from here on (computed only
            // when someone listens: it costs a hash).
            let span = tracing::Span::current();
            if !span.is_disabled() {
                span.record("session", tracing::field::display(key.fingerprint()));
            }
            self.key = Some(key);
            self.id = Some(id);
            self.existence = Existence::Unknown;
            self.access = Access::Direct { stale_signature };
        }
    }

    /// The session is gone for this request: no ID, no data.
    pub(crate) fn forget(&mut self) {
        self.id = None;
        self.key = None;
        self.record = None;
        self.existence = Existence::Absent;
        self.access = Access::None;
        // A request whose session ended (logout, expiry, revocation) never takes over a
        // foreign one: that would log the user straight back in.
        self.foreign = None;
    }

    /// A string the session keeps for itself under a reserved field (its CSRF token, its
    /// binding), if it has one.
    pub(crate) fn own_string(&self, field: &str) -> Option<String> {
        self.record
            .as_ref()
            .and_then(|r| r.fields.get(field))
            .and_then(|t| serde_json::from_str::<String>(t).ok())
    }

    /// A change of user ends the previous owner's own expiry ("remember me" was theirs): the
    /// session returns to the configured idle timeout and cookie, and keeps no more than a
    /// configured lifetime from `now`.
    pub(crate) fn drop_own_expiry(&mut self, now: Millis, lifetime: Millis) {
        let Some(record) = self.record.as_mut() else {
            return;
        };
        if !record.fields.contains_key(EXPIRY_FIELD) {
            return;
        }
        let absolute = record.absolute_deadline.min(now.saturating_add(lifetime));
        record.absolute_deadline = absolute;
        record.idle_deadline = record.idle_deadline.min(absolute);
        self.pending.absolute_deadline = Some(absolute);
        self.remove_field(EXPIRY_FIELD);
    }

    pub(crate) fn remove_field(&mut self, key: &str) {
        if let Some(record) = self.record.as_mut() {
            record.fields.remove(key);
        }
        self.pending.set.remove(key);
        self.pending.remove.insert(key.to_owned());
    }
}
