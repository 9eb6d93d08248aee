//! The session handle a handler works with: lazy loading, field-level change tracking, and
//! the commit that runs before the response head is sent.
//!
//! A request's session moves through one [`Lifecycle`]: it stays *kept* (nothing about its
//! identity changed: maybe data was written), becomes *issued* (created, cycled, renewed or
//! refreshed: the browser gets a fresh cookie), or *purged* (destroyed, expired or gone: the
//! browser is told to forget the cookie). The cookie the response carries is derived from that
//! and from how the request reached the session ([`Access`]), in one place: [`State::cookie`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::{Mutex, MutexGuard};

use std::net::IpAddr;

use crate::config::Fallback;
use crate::config::{FailurePolicy, SessionConfig};
use crate::cookie;
use crate::cookie::Candidates;
use crate::expiry::Expiry;
use crate::guard::Guarded;
use crate::guessing::{Detector, Verdict};
use crate::id::{SessionId, SessionKey};
use crate::keyring::Verified;
use crate::metrics::bump;
use crate::record::{
    now_millis, Applied, Changes, Destroyed, Limits, Millis, OwnExpiry, Record, Refresh,
    UserChange, EXPIRY_FIELD,
};
use crate::store::StoreError;
use crate::ticket::{Ended, Refused, Ticket};
use crate::SessionError;

/// Prefix of the fields Cloakroom keeps for itself (flash messages); user keys may not use it.
pub(crate) const RESERVED_PREFIX: &str = "__";
const FLASH_PREFIX: &str = "__flash.";
/// The synchronizer token of HTML forms.
const CSRF_FIELD: &str = "__csrf";
/// The hash of the client properties the session is bound to (see [`crate::Binding`]).
const BINDING_FIELD: &str = "__bind";
/// When the current ID was issued, kept only when periodic renewal is on.
const ISSUED_FIELD: &str = "__issued";
/// Attempts at drawing an unused ID before giving up (a collision is astronomically unlikely;
/// more than one in a row means something else is wrong).
const CREATE_ATTEMPTS: usize = 3;
/// Room an integer counter takes, counted against the size limit before the store answers.
const COUNTER_BYTES: usize = 20;

/// Everything a layer shares with the sessions it hands out.
pub(crate) struct Shared {
    pub(crate) config: SessionConfig,
    pub(crate) store: Guarded,
    /// Admission for new sessions: a flood of anonymous clients gets `503` at once when these
    /// run out, instead of queueing in front of the writes of sessions that exist.
    pub(crate) creates: tokio::sync::Semaphore,
    /// Invalid cookies counted per client.
    pub(crate) guesses: Detector,
    /// Sessions and users that ended here lately: their fallback tickets are refused.
    pub(crate) ended: Ended,
    /// The store answered that it keeps no per-user index: the per-user limit stops asking.
    pub(crate) no_user_index: std::sync::atomic::AtomicBool,
}

/// What a request's cookies name, as the layer hands it to the session.
pub(crate) enum Presented {
    /// No cookie of our name.
    Nothing,
    /// Already verified (the layer had to decide on a `429` before the handler).
    Verified(Option<(SessionId, bool)>),
    /// Candidates to verify when the handler first uses the session: a request that never
    /// does pays for no HMAC.
    Unverified(Candidates, Option<IpAddr>),
}

impl Shared {
    /// Takes the first candidate whose signature verifies; counts, logs and (per client)
    /// tallies the others. Returns the chosen ID, and whether the client is to be throttled.
    pub(crate) fn verify(
        &self,
        found: &Candidates,
        client: Option<IpAddr>,
    ) -> (Option<(SessionId, bool)>, bool) {
        let mut rejected = found.malformed;
        let mut chosen = None;
        for value in &found.values {
            match self.config.keys.verify(value) {
                Some(Verified::Current(id)) if chosen.is_none() => chosen = Some((id, false)),
                Some(Verified::Stale(id)) if chosen.is_none() => chosen = Some((id, true)),
                Some(_) => {}
                None => rejected += 1,
            }
        }
        if rejected == 0 {
            return (chosen, false);
        }
        bump(&self.store.metrics.rejected_cookies);
        tracing::debug!(
            count = rejected,
            "session cookie refused: bad signature or malformed"
        );
        let throttle = chosen.is_none() && client.is_some_and(|c| self.guessed(c));
        (chosen, throttle)
    }

    /// Counts an invalid cookie against its client; true if the client is to be throttled.
    fn guessed(&self, client: IpAddr) -> bool {
        match self.guesses.invalid(&self.config.guessing, client) {
            Verdict::Counted => false,
            Verdict::Flagged => {
                tracing::warn!(%client, "possible session-ID guessing: many invalid cookies from one client");
                false
            }
            Verdict::Throttled => {
                bump(&self.store.metrics.guessing_throttled);
                true
            }
        }
    }
}

impl Shared {
    pub(crate) fn millis(d: Duration) -> Millis {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }

    /// The idle timeout of a session with (`true`) or without a user.
    fn idle(&self, signed_in: bool) -> Millis {
        let config = &self.config;
        match config.anonymous_idle_timeout {
            Some(anonymous) if !signed_in => Self::millis(anonymous.min(config.idle_timeout)),
            _ => Self::millis(config.idle_timeout),
        }
    }

    /// The idle timeout of `record`: its own ([`Session::set_expiry`]) or the configured one.
    fn idle_for(&self, record: &Record) -> Millis {
        OwnExpiry::of(record).map_or_else(|| self.idle(record.user.is_some()), |own| own.idle)
    }

    /// Whether `record`'s cookie ends with the browser: its own choice or the configured one.
    fn browser_session_for(&self, record: Option<&Record>) -> bool {
        record
            .and_then(OwnExpiry::of)
            .map_or(self.config.browser_session, |own| !own.persistent)
    }

    /// The refresh interval for an idle timeout of `idle`.
    // Truncation is fine: this is a throttle, not a deadline.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    fn refresh_every(&self, idle: Millis) -> Millis {
        (idle as f64 * self.config.refresh_fraction) as u64
    }

    fn window(&self, now: Millis, idle: Millis) -> (Millis, Millis) {
        let interval = self.refresh_every(idle);
        (
            now.saturating_add(idle).saturating_sub(interval),
            now.saturating_add(idle),
        )
    }

    fn refresh(&self, now: Millis) -> Refresh {
        let (if_deadline_before, new_deadline) = self.window(now, self.idle(true));
        let anonymous = self
            .config
            .anonymous_idle_timeout
            .map(|_| self.window(now, self.idle(false)));
        Refresh {
            if_deadline_before,
            new_deadline,
            anonymous,
            now,
        }
    }

    fn new_record(&self, now: Millis) -> Record {
        Record::new(
            now,
            now.saturating_add(self.idle(false)),
            now.saturating_add(Self::millis(self.config.absolute_lifetime)),
        )
    }

    fn limits(&self) -> Limits {
        Limits {
            max_bytes: self.config.max_size,
            max_fields: self.config.max_fields,
        }
    }
}

/// Does the store hold the session this request names?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existence {
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
enum Access {
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
enum Lifecycle {
    /// Same ID, same expiry on the client: no cookie needed.
    Kept,
    /// Created, cycled, renewed, or its expiry refreshed: send the cookie.
    Issued,
    /// Destroyed, expired or gone: tell the browser to forget the cookie.
    Purged,
}

/// Why the ID changes at commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cycle {
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

/// What the response must do with the fallback ticket ([`FailurePolicy::Fallback`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TicketOut {
    Keep,
    Set(String),
    Remove,
}

/// The result of a commit, for the layer to turn into headers.
pub(crate) struct Committed {
    pub(crate) ticket: TicketOut,
    pub(crate) cookie: CookieOut,
    /// The signed cookie value, when `cookie` is [`CookieOut::Set`].
    pub(crate) value: Option<String>,
    /// Whether the handler used the session at all (its response then depends on the cookie).
    pub(crate) touched: bool,
}

struct State {
    id: Option<SessionId>,
    key: Option<SessionKey>,
    existence: Existence,
    access: Access,
    lifecycle: Lifecycle,
    /// Working copy: the loaded record with this request's changes applied.
    record: Option<Record>,
    pending: Changes,
    cycle: Option<Cycle>,
    /// A session this request ended, to delete in the store at commit.
    destroyed: Option<SessionKey>,
    /// The store failed under [`FailurePolicy::Anonymous`]: reads see no session, writes fail.
    degraded: bool,
    touched: bool,
    /// This request's client fingerprint, when sessions are bound to their client.
    bound: Option<String>,
    /// Cookies not verified yet (until the handler first uses the session).
    unverified: Option<(Candidates, Option<IpAddr>)>,
    /// The request's `Cookie` headers, kept (not parsed) under [`FailurePolicy::Fallback`]:
    /// the ticket is looked at only when the store fails or the response may re-issue it.
    ticket_cookies: Vec<http::HeaderValue>,
    /// This request changed what the fallback ticket says (user, ID, its fields) or revoked
    /// the user's other sessions: the ticket is re-issued whatever its age.
    ticket_dirty: bool,
    /// The commit ran: later changes cannot be written and are refused.
    committed: bool,
}

impl State {
    /// The one place the response's cookie is decided.
    fn cookie(&self) -> CookieOut {
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
    fn writable(&self) -> Result<(), SessionError> {
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
    fn adopt(&mut self, cookie: Option<(SessionId, bool)>) {
        if let Some((id, stale_signature)) = cookie {
            let key = id.key();
            // The layer's request span carries the fingerprint from here on.
            tracing::Span::current().record("session", tracing::field::display(key.fingerprint()));
            self.key = Some(key);
            self.id = Some(id);
            self.existence = Existence::Unknown;
            self.access = Access::Direct { stale_signature };
        }
    }

    /// The session is gone for this request: no ID, no data.
    fn forget(&mut self) {
        self.id = None;
        self.key = None;
        self.record = None;
        self.existence = Existence::Absent;
        self.access = Access::None;
    }

    /// A string the session keeps for itself under a reserved field (its CSRF token, its
    /// binding), if it has one.
    fn own_string(&self, field: &str) -> Option<String> {
        self.record
            .as_ref()
            .and_then(|r| r.fields.get(field))
            .and_then(|t| serde_json::from_str::<String>(t).ok())
    }

    /// A change of user ends the previous owner's own expiry ("remember me" was theirs): the
    /// session returns to the configured idle timeout and cookie, and keeps no more than a
    /// configured lifetime from `now`.
    fn drop_own_expiry(&mut self, now: Millis, lifetime: Millis) {
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

    fn remove_field(&mut self, key: &str) {
        if let Some(record) = self.record.as_mut() {
            record.fields.remove(key);
        }
        self.pending.set.remove(key);
        self.pending.remove.insert(key.to_owned());
    }
}

/// A request's session. Cheap to clone; every clone is the same session.
///
/// Nothing touches the store until a method needs it; data methods load the session once per
/// request, and all changes are written in one conditional store call after the handler.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Session {
    // Never the ID or the data: the key's fingerprint, and what the request did.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("Session");
        match self.state.try_lock() {
            Ok(state) => out
                .field(
                    "session",
                    &state.key.map(|k| k.fingerprint()).unwrap_or_default(),
                )
                .field("lifecycle", &state.lifecycle)
                .field("degraded", &state.degraded)
                .finish(),
            Err(_) => out.finish_non_exhaustive(),
        }
    }
}

/// One entry of a user's session list (see [`Session::user_sessions`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    /// The store key: a safe handle for this session, usable to revoke it.
    pub key: String,
    /// Creation time (Unix ms).
    pub created: Millis,
    /// Last expiry refresh (Unix ms): when it was last seen, to within the refresh throttle.
    pub last_seen: Millis,
    /// When it expires unless used (Unix ms).
    pub expires: Millis,
    /// Whether this is the session making the request.
    pub current: bool,
    /// Its data, as stored (JSON text per key).
    pub fields: BTreeMap<String, String>,
}

fn check_key(shared: &Shared, key: &str) -> Result<(), SessionError> {
    if key.is_empty() || key.len() > shared.config.max_key_len || key.starts_with(RESERVED_PREFIX) {
        return Err(SessionError::InvalidKey(key.chars().take(64).collect()));
    }
    Ok(())
}

impl Session {
    pub(crate) fn new(
        shared: Arc<Shared>,
        presented: Presented,
        bound: Option<String>,
        ticket_cookies: Vec<http::HeaderValue>,
    ) -> Self {
        let mut state = State {
            id: None,
            key: None,
            existence: Existence::Absent,
            access: Access::None,
            lifecycle: Lifecycle::Kept,
            record: None,
            pending: Changes::default(),
            cycle: None,
            destroyed: None,
            degraded: false,
            touched: false,
            bound,
            unverified: None,
            ticket_cookies,
            ticket_dirty: false,
            committed: false,
        };
        match presented {
            Presented::Nothing => {}
            Presented::Verified(cookie) => state.adopt(cookie),
            Presented::Unverified(found, client) => state.unverified = Some((found, client)),
        }
        Self {
            shared,
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// The state with the request's cookies verified (done once, at first use).
    async fn verified(&self) -> MutexGuard<'_, State> {
        let mut state = self.state.lock().await;
        if let Some((found, client)) = state.unverified.take() {
            let (cookie, _) = self.shared.verify(&found, client);
            state.adopt(cookie);
        }
        state
    }

    /// The state, marked as used by the handler (its response now depends on the session).
    async fn touch(&self) -> MutexGuard<'_, State> {
        let mut state = self.verified().await;
        state.touched = true;
        state
    }

    /// The state, loaded from the store if this request has not yet.
    async fn loaded(&self) -> Result<MutexGuard<'_, State>, SessionError> {
        let mut state = self.touch().await;
        self.ensure_loaded(&mut state).await?;
        Ok(state)
    }

    /// Loads the session if this request has not yet.
    async fn ensure_loaded(&self, state: &mut State) -> Result<(), SessionError> {
        if !matches!(state.existence, Existence::Unknown | Existence::Confirmed) {
            return Ok(());
        }
        let Some(key) = state.key else {
            state.existence = Existence::Absent;
            return Ok(());
        };
        let now = now_millis();
        let refresh = self.shared.refresh(now);
        let store = &self.shared.store;
        bump(&store.metrics.loads);
        match store.call(store.store.load(&key, now, Some(refresh))).await {
            Ok(Some(loaded)) => {
                if loaded.via_alias(&key) {
                    state.access = Access::Alias;
                }
                if loaded.refreshed {
                    bump(&store.metrics.refreshes);
                    if !self.shared.browser_session_for(Some(&loaded.record)) {
                        state.lifecycle = Lifecycle::Issued;
                    }
                }
                if state.access != Access::Alias && self.renewal_due(&loaded.record, now) {
                    state.cycle.get_or_insert(Cycle::Renewal);
                }
                state.key = Some(loaded.key);
                state.record = Some(loaded.record);
                state.existence = Existence::Loaded;
                self.check_binding(state, loaded.key);
            }
            Ok(None) => {
                tracing::debug!(session = %key.fingerprint(), "session expired or unknown: cookie cleared");
                bump(&store.metrics.expired_seen);
                self.ended_here(key, now);
                state.forget();
                state.lifecycle = Lifecycle::Purged;
            }
            Err(e) => {
                let config = &self.shared.config;
                if config.failure_policy == FailurePolicy::Fallback {
                    if let Some(record) = self.ticket_record(state, key, now) {
                        tracing::warn!(error = %e, session = %key.fingerprint(), "session store failed; serving the session read-only from its fallback ticket");
                        bump(&store.metrics.degraded_requests);
                        state.record = Some(record);
                        state.existence = Existence::Loaded;
                        state.degraded = true;
                        return Ok(());
                    }
                }
                let base = match config.failure_policy {
                    FailurePolicy::Fallback => config.fallback.base,
                    policy => policy,
                };
                if base != FailurePolicy::Anonymous {
                    return Err(e.into());
                }
                tracing::warn!(error = %e, "session store failed; serving as anonymous, refusing writes");
                state.forget();
                state.degraded = true;
            }
        }
        Ok(())
    }

    /// Notes that the session `key` ended here: its fallback tickets stop working.
    fn ended_here(&self, key: SessionKey, now: Millis) {
        if self.shared.config.failure_policy == FailurePolicy::Fallback {
            self.shared.ended.session(key, now);
        }
    }

    /// The fallback tickets the request carries, opened: each valid one, or why it is not.
    fn tickets(&self, state: &State, now: Millis) -> Vec<Result<Ticket, Refused>> {
        if state.ticket_cookies.is_empty() {
            return Vec::new();
        }
        let config = &self.shared.config;
        let name = Fallback::cookie_name(&config.cookie_name);
        cookie::find_in(&state.ticket_cookies, &name, crate::ticket::MAX_VALUE_LEN)
            .values
            .iter()
            .map(|value| config.fallback.keys.open(value, now))
            .collect()
    }

    /// The read-only record a valid ticket for the session `key` stands for, if the request
    /// carries one. Counts the tickets refused.
    fn ticket_record(&self, state: &State, key: SessionKey, now: Millis) -> Option<Record> {
        let metrics = &self.shared.store.metrics;
        let text = key.to_string();
        for opened in self.tickets(state, now) {
            match opened {
                Ok(t)
                    if t.session == text
                        && !self.shared.ended.refuses(&t, &key, now)
                        && !self.shared.store.store.ended_recently(&key, t.issued) =>
                {
                    if !Self::ticket_fits_client(state, &t) {
                        bump(&metrics.binding_mismatches);
                        let terminates = self.shared.config.binding.terminates();
                        tracing::warn!(session = %key.fingerprint(), refused = terminates, "fallback ticket used from a different client than its session is bound to");
                        if terminates {
                            return None;
                        }
                    }
                    let mut record = Record::new(t.issued, t.expires, t.expires);
                    record.user = Some(t.user);
                    record.fields = t.fields;
                    return Some(record);
                }
                Ok(_) => bump(&metrics.tickets_refused_stale),
                Err(Refused::Expired) => bump(&metrics.tickets_refused_expired),
                Err(Refused::Forged) => bump(&metrics.tickets_refused_forged),
            }
        }
        None
    }

    /// Whether a ticket may serve this client: it carries the session's binding (a ticket
    /// issued while binding was off, or forged around it, carries none and serves no bound
    /// client).
    fn ticket_fits_client(state: &State, ticket: &Ticket) -> bool {
        state.bound.as_ref().is_none_or(|current| {
            ticket.fields.get(BINDING_FIELD)
                == Some(&serde_json::Value::String(current.clone()).to_string())
        })
    }

    /// What the response does with the fallback ticket: issued while a session with a user
    /// is in use, again once the one presented is older than the refresh interval (read from
    /// its clear issue time: no cryptography on the common path) or this request changed
    /// what it says; removed once the session is known to be gone or without a user.
    fn ticket_out(&self, state: &State) -> TicketOut {
        let config = &self.shared.config;
        if config.failure_policy != FailurePolicy::Fallback || !state.touched || state.degraded {
            return TicketOut::Keep;
        }
        let now = now_millis();
        let name = Fallback::cookie_name(&config.cookie_name);
        let presented =
            cookie::find_in(&state.ticket_cookies, &name, crate::ticket::MAX_VALUE_LEN).values;
        let live = match (state.lifecycle, state.existence, state.key, &state.record) {
            (Lifecycle::Purged, ..) | (_, Existence::Absent, ..) => None,
            (_, Existence::Loaded, Some(key), Some(record)) => {
                record.user.as_ref().map(|user| (key, user, record))
            }
            // Not loaded (a blind write): nothing known to put in a ticket, nothing to clear.
            _ => return TicketOut::Keep,
        };
        let Some((key, user, record)) = live else {
            return if presented.is_empty() {
                TicketOut::Keep
            } else {
                TicketOut::Remove
            };
        };
        let refresh = Shared::millis(config.fallback.refresh_interval());
        let fresh = presented
            .first()
            .and_then(|v| crate::ticket::issued_of(v))
            .is_some_and(|issued| now < issued.saturating_add(refresh) && issued <= now);
        if fresh && !state.ticket_dirty {
            return TicketOut::Keep;
        }
        let fallback = &config.fallback;
        let mut fields = fallback_fields(&fallback.fields, record);
        if let Some(bound) = record.fields.get(BINDING_FIELD) {
            // The binding travels with the ticket: an outage must not unbind a session.
            fields.insert(BINDING_FIELD.to_owned(), bound.clone());
        }
        let ticket = Ticket {
            user: user.clone(),
            session: key.to_string(),
            issued: self.shared.ended.issue_time(user, now),
            expires: now
                .saturating_add(Shared::millis(fallback.lifetime))
                .min(record.idle_deadline)
                .min(record.absolute_deadline),
            fields,
        };
        match fallback.keys.seal(&ticket) {
            Some(value) => {
                bump(&self.shared.store.metrics.tickets_issued);
                TicketOut::Set(value)
            }
            None => TicketOut::Keep,
        }
    }

    /// Compares the client with the one the session is bound to: a change is logged and
    /// counted, and ends the session when the binding says so.
    fn check_binding(&self, state: &mut State, key: SessionKey) {
        let Some(current) = state.bound.clone() else {
            return;
        };
        match state.own_string(BINDING_FIELD) {
            Some(stored) if stored == current => {}
            Some(_) => {
                bump(&self.shared.store.metrics.binding_mismatches);
                let binding = self.shared.config.binding;
                tracing::warn!(
                    session = %key.fingerprint(),
                    terminated = binding.terminates(),
                    "session used from a different client than it is bound to"
                );
                if binding.terminates() && state.access != Access::Alias {
                    state.destroyed = Some(key);
                    state.forget();
                    state.lifecycle = Lifecycle::Purged;
                }
            }
            // Bound after it was created (binding turned on since): bind it now.
            None if state.access != Access::Alias => {
                let text = serde_json::Value::String(current).to_string();
                if let Some(record) = state.record.as_mut() {
                    record.fields.insert(BINDING_FIELD.to_owned(), text.clone());
                }
                state.pending.set.insert(BINDING_FIELD.to_owned(), text);
            }
            None => {}
        }
    }

    fn renewal_due(&self, record: &Record, now: Millis) -> bool {
        let Some(every) = self.shared.config.renewal else {
            return false;
        };
        let issued = record
            .fields
            .get(ISSUED_FIELD)
            .and_then(|t| t.parse::<Millis>().ok())
            .unwrap_or(record.created);
        now >= issued.saturating_add(Shared::millis(every))
    }

    /// Reads the value under `key`, or `None` if there is none.
    ///
    /// # Errors
    /// [`SessionError::Store`] if the session cannot be loaded, [`SessionError::Decode`] if the
    /// stored value is not a `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let state = self.loaded().await?;
        let Some(text) = state.record.as_ref().and_then(|r| r.fields.get(key)) else {
            return Ok(None);
        };
        serde_json::from_str(text)
            .map(Some)
            .map_err(|source| SessionError::Decode {
                key: key.to_owned(),
                source,
            })
    }

    /// Stores `value` under `key` (written when the request ends).
    ///
    /// # Errors
    /// [`SessionError::InvalidKey`], [`SessionError::Encode`], [`SessionError::TooLarge`],
    /// [`SessionError::TooManyFields`] (nothing is stored then), [`SessionError::Superseded`]
    /// through a replaced ID, or a store error from loading the session.
    pub async fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<(), SessionError> {
        check_key(&self.shared, key)?;
        let text = serde_json::to_string(&value).map_err(|source| SessionError::Encode {
            key: key.to_owned(),
            source,
        })?;
        self.set_field(key, text).await
    }

    /// Whether `state` may grow by one field `key` holding `len` bytes.
    fn check_growth(&self, state: &State, key: &str, len: usize) -> Result<(), SessionError> {
        let record = state.record.as_ref();
        let replaced = record.and_then(|r| r.fields.get(key));
        let count = record.map_or(0, |r| r.fields.len()) + usize::from(replaced.is_none());
        let limit = self.shared.config.max_fields;
        if count > limit {
            return Err(SessionError::TooManyFields { count, limit });
        }
        let current = record.map_or(0, Record::data_size);
        let size = current - replaced.map_or(0, |old| key.len() + old.len()) + key.len() + len;
        let limit = self.shared.config.max_size;
        if size > limit {
            return Err(SessionError::TooLarge { size, limit });
        }
        Ok(())
    }

    async fn set_field(&self, key: &str, text: String) -> Result<(), SessionError> {
        let mut state = self.loaded().await?;
        state.writable()?;
        self.check_growth(&state, key, text.len())?;
        let now = now_millis();
        let shared = &self.shared;
        state
            .record
            .get_or_insert_with(|| shared.new_record(now))
            .fields
            .insert(key.to_owned(), text.clone());
        state.pending.remove.remove(key);
        state.pending.set.insert(key.to_owned(), text);
        Ok(())
    }

    /// Removes `key`, returning the value it held.
    ///
    /// # Errors
    /// As [`Session::get`]; [`SessionError::Superseded`] through a replaced ID.
    pub async fn remove<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let old = self.get::<T>(key).await?;
        let mut state = self.touch().await;
        if old.is_some() {
            state.writable()?;
            state.remove_field(key);
        }
        Ok(old)
    }

    /// Read-modify-write of the value under `key` that never loses a concurrent change: `f`
    /// gets the value as the store holds it now (`None` if absent) and returns the new one,
    /// which is written only if the field still holds what `f` saw (compare-and-set in the
    /// store); otherwise `f` runs again on the newer value, up to 32 times, after a growing
    /// random pause. Applied at once,
    /// like [`Session::increment`], and returns what was written. In a request without a
    /// session yet, the value is staged for the session created at commit.
    ///
    /// # Errors
    /// [`SessionError::InvalidKey`]; [`SessionError::Decode`] if the stored value is not a
    /// `T`; [`SessionError::Store`] with [`StoreError::Conflict`] after 32 lost races, or
    /// [`StoreError::LimitExceeded`]; [`SessionError::Gone`] if the session ended;
    /// [`SessionError::Superseded`] through a replaced ID.
    ///
    /// ```
    /// # async fn demo(session: cloakroom::Session) -> Result<(), cloakroom::SessionError> {
    /// let cart: Vec<String> = session
    ///     .update("cart", |cart: Option<Vec<String>>| {
    ///         let mut cart = cart.unwrap_or_default();
    ///         cart.push("milk".into());
    ///         cart
    ///     })
    ///     .await?;
    /// # let _ = cart; Ok(()) }
    /// ```
    pub async fn update<T, F>(&self, key: &str, mut f: F) -> Result<T, SessionError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> T,
    {
        const ATTEMPTS: u32 = 32;
        check_key(&self.shared, key)?;
        let decode = |text: &str| {
            serde_json::from_str::<T>(text).map_err(|source| SessionError::Decode {
                key: key.to_owned(),
                source,
            })
        };
        let encode = |value: &T| {
            serde_json::to_string(value).map_err(|source| SessionError::Encode {
                key: key.to_owned(),
                source,
            })
        };
        let store = &self.shared.store;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                // Lost a race: back off a random while, longer each time, so that many
                // writers of one field take turns instead of colliding again.
                let mut jitter = [0u8; 2];
                let _ = getrandom::fill(&mut jitter);
                let micros = u64::from(u16::from_le_bytes(jitter)) % (250 * u64::from(attempt));
                tokio::time::sleep(Duration::from_micros(micros)).await;
            }
            let target = {
                let state = self.loaded().await?;
                state.writable()?;
                state.key.filter(|_| state.existence == Existence::Loaded)
            };
            let Some(target) = target else {
                // No session in the store yet: stage it for the one the commit creates.
                let current = self.get::<T>(key).await?;
                let next = f(current);
                self.insert(key, &next).await?;
                return Ok(next);
            };
            // The value as the store holds it now, not as this request first read it.
            let now = now_millis();
            let stored = store
                .call(store.store.load(&target, now, None))
                .await?
                .and_then(|loaded| loaded.record.fields.get(key).cloned());
            let current = stored.as_deref().map(decode).transpose()?;
            let next = f(current);
            let text = encode(&next)?;
            let mut changes = Changes::default();
            changes.set.insert(key.to_owned(), text.clone());
            changes.expect.insert(key.to_owned(), stored);
            changes.limits = Some(self.shared.limits());
            bump(&store.metrics.applies);
            match store.call(store.store.apply(&target, &changes, now)).await {
                Ok(Applied::Done { .. }) => {
                    let mut state = self.state.lock().await;
                    if let Some(record) = state.record.as_mut() {
                        record.fields.insert(key.to_owned(), text);
                    }
                    // Written already: the commit must not write an older staged value.
                    state.pending.set.remove(key);
                    state.pending.remove.remove(key);
                    return Ok(next);
                }
                Ok(Applied::Gone) => return Err(SessionError::Gone),
                Ok(Applied::Aliased) => return Err(SessionError::Superseded),
                Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict(key.to_owned()).into())
    }

    /// Removes `key` without decoding what it holds, so that a value that no longer
    /// deserialises (an old shape after a deploy) can still be removed. Returns whether
    /// there was one.
    ///
    /// # Errors
    /// [`SessionError::InvalidKey`]; a store error from loading the session;
    /// [`SessionError::Superseded`] through a replaced ID.
    ///
    /// ```
    /// # async fn demo(session: cloakroom::Session) -> Result<(), cloakroom::SessionError> {
    /// if session.remove_value("cart").await? {
    ///     session.flash("Your cart was emptied.").await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn remove_value(&self, key: &str) -> Result<bool, SessionError> {
        check_key(&self.shared, key)?;
        let mut state = self.loaded().await?;
        let present = state
            .record
            .as_ref()
            .is_some_and(|r| r.fields.contains_key(key));
        if present {
            state.writable()?;
            state.remove_field(key);
        }
        Ok(present)
    }

    /// Whether `key` holds a value (loads the session if needed).
    ///
    /// # Errors
    /// A store error from loading the session.
    pub async fn contains_key(&self, key: &str) -> Result<bool, SessionError> {
        let state = self.loaded().await?;
        Ok(!key.starts_with(RESERVED_PREFIX)
            && state
                .record
                .as_ref()
                .is_some_and(|r| r.fields.contains_key(key)))
    }

    /// The keys the app has stored, in order (Cloakroom's own fields, such as flashes and the
    /// CSRF token, are left out).
    ///
    /// # Errors
    /// A store error from loading the session.
    pub async fn keys(&self) -> Result<Vec<String>, SessionError> {
        let state = self.loaded().await?;
        Ok(state.record.as_ref().map_or_else(Vec::new, |r| {
            r.fields
                .keys()
                .filter(|k| !k.starts_with(RESERVED_PREFIX))
                .cloned()
                .collect()
        }))
    }

    /// Adds `by` to the integer under `key` (missing counts as 0) **atomically in the store**
    /// and returns the new value: concurrent increments are never lost.
    ///
    /// Costs one store call and needs no prior load; any other pending changes go with it.
    /// The store checks the session's size and field limits before it writes.
    ///
    /// # Errors
    /// [`SessionError::InvalidKey`]; [`SessionError::Store`] with
    /// [`StoreError::NotAnInteger`] if the key holds something else, or
    /// [`StoreError::LimitExceeded`]; [`SessionError::Gone`] if the session ended while this
    /// request was using it; [`SessionError::Superseded`] through a replaced ID.
    pub async fn increment(&self, key: &str, by: i64) -> Result<i64, SessionError> {
        check_key(&self.shared, key)?;
        let mut state = self.touch().await;
        if state.bound.is_some() {
            // A bound session is checked on load: a blind write must not skip the check.
            self.ensure_loaded(&mut state).await?;
        } else if state.existence == Existence::Unknown {
            self.peek_cached(&mut state);
        }
        state.writable()?;
        if state.existence == Existence::Loaded {
            self.check_growth(&state, key, COUNTER_BYTES)?;
        }
        let mut changes = std::mem::take(&mut state.pending);
        changes.increments.insert(key.to_owned(), by);
        let result = self.write_now(&mut state, &changes).await;
        match result {
            Ok(counters) => {
                let value = counters.get(key).copied().unwrap_or(by);
                if let Some(record) = state.record.as_mut() {
                    record.fields.insert(key.to_owned(), value.to_string());
                }
                Ok(value)
            }
            Err(e) => {
                changes.increments.clear();
                state.pending = changes;
                Err(e)
            }
        }
    }

    /// Takes the session from the store's in-process copy, if it keeps one (a read cache):
    /// then a blind write knows the session's fields without a round trip.
    fn peek_cached(&self, state: &mut State) {
        let Some(key) = state.key else {
            return;
        };
        let now = now_millis();
        if let Some(record) = self
            .shared
            .store
            .store
            .cached(&key)
            .filter(|r| r.is_alive(now))
        {
            state.record = Some(record);
            state.existence = Existence::Loaded;
        }
    }

    /// The limits a write must send: none when the layer has checked them against the record
    /// it loaded (the store may then write without re-checking), else the store checks.
    fn limits_for(&self, state: &State) -> Option<Limits> {
        (state.existence != Existence::Loaded).then(|| self.shared.limits())
    }

    /// Writes `changes` at once: into the existing session, or a new one if there is none.
    async fn write_now(
        &self,
        state: &mut State,
        changes: &Changes,
    ) -> Result<BTreeMap<String, i64>, SessionError> {
        let now = now_millis();
        let mut changes = changes.clone();
        changes.limits = self.limits_for(state);
        if let Some(key) = state.key.filter(|_| state.existence != Existence::Absent) {
            let store = &self.shared.store;
            bump(&store.metrics.applies);
            match store.call(store.store.apply(&key, &changes, now)).await? {
                Applied::Done {
                    counters,
                    key: target,
                } => {
                    state.key = Some(target);
                    if state.existence == Existence::Unknown {
                        state.existence = Existence::Confirmed;
                    }
                    return Ok(counters);
                }
                Applied::Aliased => {
                    state.access = Access::Alias;
                    return Err(SessionError::Superseded);
                }
                Applied::Gone if state.existence == Existence::Unknown => {
                    // A blind write to a cookie whose session expired: like no cookie at all.
                    state.forget();
                }
                Applied::Gone => {
                    bump(&store.metrics.writes_to_ended_sessions);
                    state.forget();
                    state.lifecycle = Lifecycle::Purged;
                    return Err(SessionError::Gone);
                }
            }
        }
        let mut record = self.shared.new_record(now);
        changes.limits = Some(self.shared.limits());
        let counters = record.apply(&changes).map_err(SessionError::Store)?;
        self.create(state, record).await?;
        Ok(counters)
    }

    /// Files `record` under a fresh ID and makes it this request's session.
    async fn create(&self, state: &mut State, mut record: Record) -> Result<(), SessionError> {
        if let Some(bound) = &state.bound {
            record.fields.insert(
                BINDING_FIELD.to_owned(),
                serde_json::Value::String(bound.clone()).to_string(),
            );
        }
        let store = &self.shared.store;
        let Ok(_admitted) = self.shared.creates.try_acquire() else {
            bump(&store.metrics.creates_refused);
            return Err(StoreError::Overloaded.into());
        };
        for _ in 0..CREATE_ATTEMPTS {
            let id = fresh_id()?;
            let key = id.key();
            bump(&store.metrics.creates);
            match store.call(store.store.create(&key, &record)).await {
                Ok(()) => {
                    tracing::debug!(session = %key.fingerprint(), "session created");
                    state.id = Some(id);
                    state.key = Some(key);
                    state.record = Some(record);
                    state.existence = Existence::Loaded;
                    state.access = Access::Direct {
                        stale_signature: false,
                    };
                    state.lifecycle = Lifecycle::Issued;
                    return Ok(());
                }
                Err(StoreError::IdCollision) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::IdCollision.into())
    }

    /// Queues a message for the next page that shows flashes (the post/redirect/get pattern):
    /// it survives exactly until [`Session::take_flashes`] reads it. A plain message at
    /// [`FlashLevel::Info`]; [`Session::flash_with`] sets a level and any payload.
    ///
    /// # Errors
    /// As [`Session::insert`].
    pub async fn flash(&self, message: impl Into<String>) -> Result<(), SessionError> {
        self.flash_with(FlashLevel::Info, message.into()).await
    }

    /// Queues a flash with a level and a typed payload (a message, or a struct a template
    /// renders).
    ///
    /// # Errors
    /// As [`Session::insert`].
    ///
    /// ```
    /// # async fn demo(session: cloakroom::Session) -> Result<(), cloakroom::SessionError> {
    /// use cloakroom::FlashLevel;
    /// session.flash_with(FlashLevel::Success, "Saved.").await?;
    /// for flash in session.take_flashes_with::<String>().await? {
    ///     println!("{:?}: {}", flash.level, flash.payload);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn flash_with<T: Serialize>(
        &self,
        level: FlashLevel,
        payload: T,
    ) -> Result<(), SessionError> {
        // Time first so flashes from several app instances sort by age; the counter orders
        // flashes of the same millisecond and keeps concurrent ones from sharing a field.
        static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let sequence = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = format!("{FLASH_PREFIX}{:015}.{sequence:020}", now_millis());
        let text = serde_json::to_string(&Flash { level, payload }).map_err(|source| {
            SessionError::Encode {
                key: key.clone(),
                source,
            }
        })?;
        self.set_field(&key, text).await
    }

    /// The queued flash messages, oldest first, as text; reading removes them. A flash whose
    /// payload is not a string is given as its JSON text.
    ///
    /// # Errors
    /// A store error from loading the session.
    pub async fn take_flashes(&self) -> Result<Vec<String>, SessionError> {
        Ok(self
            .take_flash_values()
            .await?
            .into_iter()
            .map(|(_, payload)| match payload {
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            })
            .collect())
    }

    /// The queued flashes with their levels, payloads decoded as `T`, oldest first; reading
    /// removes them. Plain [`Session::flash`] messages come at [`FlashLevel::Info`].
    ///
    /// # Errors
    /// [`SessionError::Decode`] if a payload is not a `T` (then nothing is removed); a store
    /// error from loading the session.
    pub async fn take_flashes_with<T: DeserializeOwned>(
        &self,
    ) -> Result<Vec<Flash<T>>, SessionError> {
        let values = self.peek_flash_values().await?;
        let mut out = Vec::with_capacity(values.len());
        for (level, payload) in values {
            let payload =
                serde_json::from_value(payload).map_err(|source| SessionError::Decode {
                    key: FLASH_PREFIX.trim_end_matches('.').to_owned(),
                    source,
                })?;
            out.push(Flash { level, payload });
        }
        self.take_flash_values().await?;
        Ok(out)
    }

    /// The queued flashes (level, payload) without removing them.
    async fn peek_flash_values(
        &self,
    ) -> Result<Vec<(FlashLevel, serde_json::Value)>, SessionError> {
        let state = self.loaded().await?;
        Ok(flash_entries(&state)
            .into_iter()
            .map(|(_, text)| parse_flash(&text))
            .collect())
    }

    /// The queued flashes (level, payload), removed.
    async fn take_flash_values(
        &self,
    ) -> Result<Vec<(FlashLevel, serde_json::Value)>, SessionError> {
        let mut state = self.loaded().await?;
        if state.writable().is_err() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for (key, text) in flash_entries(&state) {
            state.remove_field(&key);
            out.push(parse_flash(&text));
        }
        Ok(out)
    }

    /// Removes every key (the user tag stays; use [`Session::destroy`] to log out).
    ///
    /// # Errors
    /// A store error from loading the session; [`SessionError::Superseded`] through a
    /// replaced ID.
    pub async fn clear(&self) -> Result<(), SessionError> {
        let mut state = self.loaded().await?;
        state.writable()?;
        if let Some(record) = state.record.as_mut() {
            record.fields.clear();
        }
        state.pending.clear = true;
        state.pending.set.clear();
        state.pending.remove.clear();
        Ok(())
    }

    /// Tags the session with a user id, for [`Session::user_sessions`] and
    /// [`Session::revoke_other_sessions`]. A change of user is a privilege change: the
    /// session gets a new ID at commit and the old one stops working at once (no grace), so
    /// an ID planted or seen before login is worth nothing after it.
    ///
    /// # Errors
    /// A store error from loading the session, [`SessionError::TooLarge`], or
    /// [`SessionError::Superseded`] through a replaced ID.
    pub async fn set_user(&self, user: &str) -> Result<(), SessionError> {
        let mut state = self.loaded().await?;
        state.writable()?;
        let limit = self.shared.config.max_size;
        let size = state.record.as_ref().map_or(0, |r| {
            r.data_size() - r.user.as_ref().map_or(0, String::len)
        }) + user.len();
        if size > limit {
            return Err(SessionError::TooLarge { size, limit });
        }
        let now = now_millis();
        let shared = &self.shared;
        let record = state.record.get_or_insert_with(|| shared.new_record(now));
        if record.user.as_deref() == Some(user) {
            return Ok(());
        }
        record.user = Some(user.to_owned());
        state.drop_own_expiry(now, Shared::millis(shared.config.absolute_lifetime));
        // A signed-in session gets the full idle timeout from now on.
        let deadline = now.saturating_add(shared.idle(true));
        if let Some(record) = state.record.as_mut() {
            record.idle_deadline = deadline.min(record.absolute_deadline);
        }
        state.pending.idle_deadline = Some(deadline);
        state.pending.user = Some(UserChange::Set(user.to_owned()));
        state.cycle = Some(Cycle::Privilege);
        // A token seen before the change of user is worth nothing after it.
        state.remove_field(CSRF_FIELD);
        Ok(())
    }

    /// Gives this session its own lifetime ("remember me"): an idle timeout, an absolute
    /// lifetime counted from the session's creation, and whether its cookie persists. Every
    /// later request, on any instance, slides it by its own idle timeout; the cookie is sent
    /// again with the new `Max-Age` (or none, for a browser session).
    ///
    /// A lifetime shorter than the session's age ends it at commit.
    ///
    /// ```
    /// # async fn login(session: cloakroom::Session, remember: bool) -> Result<(), cloakroom::SessionError> {
    /// use std::time::Duration;
    /// session.set_user("alice").await?;
    /// if remember {
    ///     let days = |n: u64| Duration::from_secs(n * 24 * 3600);
    ///     // Allowed by SessionConfigBuilder::with_max_expiry(days(30), days(30)).
    ///     session.set_expiry(cloakroom::Expiry::new(days(30), days(30))).await?;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`SessionError::ExpiryOutOfBounds`] beyond [`SessionConfig::max_expiry`] (nothing is
    /// changed); as [`Session::insert`] otherwise.
    ///
    /// [`SessionConfig::max_expiry`]: crate::SessionConfig::max_expiry
    pub async fn set_expiry(&self, expiry: Expiry) -> Result<(), SessionError> {
        if let Some(why) = expiry.refusal(&self.shared.config.max_expiry()) {
            return Err(SessionError::ExpiryOutOfBounds(why));
        }
        let idle = Shared::millis(expiry.idle_timeout());
        let own = OwnExpiry {
            idle,
            every: self.shared.refresh_every(idle),
            persistent: !expiry.browser_session(),
        };
        self.set_field(EXPIRY_FIELD, own.text()).await?;
        let mut state = self.state.lock().await;
        let now = now_millis();
        let Some(record) = state.record.as_mut() else {
            return Ok(());
        };
        let absolute = record
            .created
            .saturating_add(Shared::millis(expiry.absolute_lifetime()));
        record.absolute_deadline = absolute;
        record.idle_deadline = now.saturating_add(idle).min(absolute);
        let idle_deadline = record.idle_deadline;
        state.pending.absolute_deadline = Some(absolute);
        state.pending.idle_deadline = Some(idle_deadline);
        // The ticket must not outlive the session it stands for.
        state.ticket_dirty = true;
        if state.lifecycle == Lifecycle::Kept {
            state.lifecycle = Lifecycle::Issued;
        }
        Ok(())
    }

    /// This session's own expiry, if [`Session::set_expiry`] gave it one.
    ///
    /// # Errors
    /// A store error from loading the session.
    pub async fn expiry(&self) -> Result<Option<Expiry>, SessionError> {
        let state = self.loaded().await?;
        let Some(record) = state.record.as_ref() else {
            return Ok(None);
        };
        Ok(OwnExpiry::of(record).map(|own| {
            let lifetime = record.absolute_deadline.saturating_sub(record.created);
            Expiry::new(
                Duration::from_millis(own.idle),
                Duration::from_millis(lifetime),
            )
            .with_browser_session(!own.persistent)
        }))
    }

    /// The session's CSRF token for HTML forms, made (from the OS CSPRNG) if it has none.
    /// [`Session::set_user`] replaces it, so a token seen before login is useless after.
    ///
    /// # Errors
    /// As [`Session::insert`].
    pub async fn csrf_token(&self) -> Result<String, SessionError> {
        let state = self.loaded().await?;
        if let Some(token) = state.own_string(CSRF_FIELD) {
            return Ok(token);
        }
        state.writable()?;
        let token = crate::keyring::generate_secret()
            .map_err(|e| StoreError::unavailable(std::io::Error::other(e)))?;
        let text = serde_json::to_string(&token).map_err(|source| SessionError::Encode {
            key: CSRF_FIELD.to_owned(),
            source,
        })?;
        drop(state);
        self.set_field(CSRF_FIELD, text).await?;
        Ok(token)
    }

    /// Whether `submitted` is the session's CSRF token (compared in constant time). A
    /// session without a token accepts nothing.
    ///
    /// # Errors
    /// A store error from loading the session.
    pub async fn verify_csrf_token(&self, submitted: &str) -> Result<bool, SessionError> {
        use subtle::ConstantTimeEq;
        let expected = self.loaded().await?.own_string(CSRF_FIELD);
        Ok(!submitted.is_empty()
            && expected.is_some_and(|e| bool::from(e.as_bytes().ct_eq(submitted.as_bytes()))))
    }

    /// The user this session is tagged with.
    ///
    /// # Errors
    /// A store error from loading the session.
    pub async fn user(&self) -> Result<Option<String>, SessionError> {
        let state = self.loaded().await?;
        Ok(state.record.as_ref().and_then(|r| r.user.clone()))
    }

    /// Takes the user off the session but keeps the session and its data (a "switch
    /// account" or a downgrade; to log out, [`Session::destroy`]). Like any change of user it
    /// gives the session a new ID at commit and a new CSRF token.
    ///
    /// # Errors
    /// A store error from loading the session; [`SessionError::Superseded`] through a
    /// replaced ID.
    pub async fn clear_user(&self) -> Result<(), SessionError> {
        let mut state = self.loaded().await?;
        state.writable()?;
        let Some(record) = state.record.as_mut() else {
            return Ok(());
        };
        if record.user.take().is_none() {
            return Ok(());
        }
        let now = now_millis();
        let lifetime = Shared::millis(self.shared.config.absolute_lifetime);
        state.drop_own_expiry(now, lifetime);
        // Anonymous from now on: the anonymous idle timeout applies at once, not after the
        // signed-in (or "remember me") deadline it had.
        let idle = now.saturating_add(self.shared.idle(false));
        if let Some(record) = state.record.as_mut() {
            if idle < record.idle_deadline {
                record.idle_deadline = idle;
                state.pending.idle_deadline = Some(idle);
            }
        }
        state.pending.user = Some(UserChange::Clear);
        state.cycle = Some(Cycle::Privilege);
        state.remove_field(CSRF_FIELD);
        Ok(())
    }

    /// Gives the session a new ID at commit, keeping its data: call it at every privilege
    /// change (login, role change, password change; [`Session::set_user`] does it for you).
    /// The old ID stops working at once, so whoever planted or saw it gets nothing.
    ///
    /// # Errors
    /// [`SessionError::Superseded`] if this request came through a replaced ID (only the
    /// holder of the current ID may cycle it), or a store error from loading the session.
    pub async fn cycle_id(&self) -> Result<(), SessionError> {
        let mut state = self.loaded().await?;
        state.writable()?;
        state.cycle = Some(Cycle::Privilege);
        Ok(())
    }

    /// Ends the session: deleted in the store, and the browser told to forget the cookie.
    /// Data stored after this call goes into a new, empty session (e.g. a "logged out" flash).
    pub async fn destroy(&self) {
        let mut state = self.touch().await;
        if let Some(key) = state.key {
            state.destroyed = Some(key);
            state.lifecycle = Lifecycle::Purged;
        }
        state.forget();
        state.pending = Changes::default();
        state.cycle = None;
    }

    /// Whether this request has a live session (loads it if needed).
    ///
    /// # Errors
    /// A store error from loading the session.
    pub async fn exists(&self) -> Result<bool, SessionError> {
        let state = self.loaded().await?;
        Ok(state.record.is_some())
    }

    /// Whether the store failed during this request and the session is served degraded:
    /// read-only from its fallback ticket ([`FailurePolicy::Fallback`]: the user and the
    /// ticket's fields are there, nothing else), or as anonymous
    /// ([`FailurePolicy::Anonymous`]). Either way every write is refused.
    pub async fn is_degraded(&self) -> bool {
        self.state.lock().await.degraded
    }

    /// The key as the request left it, without verifying a cookie that was never used.
    pub(crate) async fn current_key(&self) -> Option<SessionKey> {
        self.state.lock().await.key
    }

    /// The store key of this session (a safe handle for logs and lists), if it has one yet.
    pub async fn key(&self) -> Option<SessionKey> {
        self.verified().await.key
    }

    /// The live sessions of this session's user, the current one marked: the current one
    /// first, then the newest, at most [`crate::USER_SESSIONS_LISTED`] of them and
    /// [`crate::USER_SESSIONS_LISTED_BYTES`] of their data (a user with more gets the first
    /// that fit; [`Session::revoke_other_sessions`] still ends them all). The library's own
    /// fields (`__`-prefixed: CSRF tokens, bindings) are never listed.
    ///
    /// # Errors
    /// A store error.
    pub async fn user_sessions(&self) -> Result<Vec<SessionInfo>, SessionError> {
        let Some(user) = self.user().await? else {
            return Ok(Vec::new());
        };
        let current = self.key().await;
        let store = &self.shared.store;
        let mut list = store
            .call(store.store.list_user(&user, now_millis()))
            .await?;
        list.sort_by_key(|s| (Some(s.key) != current, std::cmp::Reverse(s.record.created)));
        let mut bytes = 0;
        let mut out = Vec::new();
        for mut s in list.into_iter().take(crate::USER_SESSIONS_LISTED) {
            let mut fields = std::mem::take(&mut s.record.fields);
            fields.retain(|name, _| !name.starts_with(RESERVED_PREFIX));
            bytes += fields.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>();
            if bytes > crate::USER_SESSIONS_LISTED_BYTES {
                break;
            }
            out.push(SessionInfo {
                key: s.key.to_string(),
                created: s.record.created,
                last_seen: s
                    .record
                    .idle_deadline
                    .saturating_sub(self.shared.idle_for(&s.record))
                    .max(s.record.created),
                expires: s.record.expires_at(),
                current: Some(s.key) == current,
                fields,
            });
        }
        Ok(out)
    }

    /// Ends one other session of this session's user, named by its key (as
    /// [`Session::user_sessions`] lists it): a "log out this device" button. Returns whether
    /// a session ended; `false` for a key that is not one of the user's other live sessions
    /// (a foreign or stale key ends nothing, and the current session ends with
    /// [`Session::destroy`]).
    ///
    /// # Errors
    /// A store error; [`SessionError::Superseded`] through a replaced ID.
    pub async fn end_session(&self, key: &str) -> Result<bool, SessionError> {
        let Some(target) = SessionKey::parse(key) else {
            return Ok(false);
        };
        let Some(user) = self.user().await? else {
            return Ok(false);
        };
        let current = {
            let state = self.touch().await;
            state.writable()?;
            state.key
        };
        if current == Some(target) {
            return Ok(false);
        }
        let store = &self.shared.store;
        let now = now_millis();
        let mine = store
            .call(store.store.list_user(&user, now))
            .await?
            .iter()
            .any(|s| s.key == target);
        if !mine {
            return Ok(false);
        }
        let ended = store.call(store.store.destroy(&target)).await?;
        self.ended_here(target, now);
        tracing::debug!(session = %target.fingerprint(), by = %current.map(|k| k.fingerprint()).unwrap_or_default(), "session ended by its user from another session");
        Ok(ended == Destroyed::Session)
    }

    /// Logs this session's user out everywhere else (and every old ID that reached those
    /// sessions); returns how many sessions ended.
    ///
    /// # Errors
    /// A store error; [`SessionError::Superseded`] through a replaced ID.
    pub async fn revoke_other_sessions(&self) -> Result<u64, SessionError> {
        let Some(user) = self.user().await? else {
            return Ok(0);
        };
        let current = {
            let state = self.touch().await;
            state.writable()?;
            state.key
        };
        if self.shared.config.failure_policy == FailurePolicy::Fallback {
            // Every ticket of this user issued until now stops working here; this response
            // re-issues the current session's.
            self.shared.ended.user(&user, now_millis());
            self.state.lock().await.ticket_dirty = true;
        }
        let store = &self.shared.store;
        let n = store
            .call(
                store
                    .store
                    .destroy_user(&user, current.as_ref(), now_millis()),
            )
            .await?;
        tracing::info!(
            session = %current.map(|k| k.fingerprint()).unwrap_or_default(),
            revoked = n,
            "other sessions of the user revoked"
        );
        Ok(n)
    }

    /// Writes what the request changed, once, after the handler, and says what the response
    /// must do with the cookie.
    pub(crate) async fn commit(&self) -> Result<Committed, SessionError> {
        let mut state = self.state.lock().await;
        state.committed = true;
        if state.unverified.is_some() {
            // Never used: nothing to write, and no cookie to send.
            bump(&self.shared.store.metrics.requests_none);
            return Ok(Committed {
                ticket: TicketOut::Keep,
                cookie: CookieOut::Keep,
                value: None,
                touched: false,
            });
        }
        let store = &self.shared.store;
        let mut outcome = &store.metrics.requests_none;
        if let Some(key) = state.destroyed.take() {
            outcome = &store.metrics.requests_destroyed;
            bump(&store.metrics.destroys);
            match store.call(store.store.destroy(&key)).await {
                Ok(Destroyed::Alias) => {
                    // Only the old ID died; the session it named lives on, so this logout did
                    // not happen: say so, and the client retries with its current cookie.
                    tracing::debug!(session = %key.fingerprint(), "logout through a replaced ID refused");
                    return Err(SessionError::Superseded);
                }
                Ok(_) => {
                    tracing::debug!(session = %key.fingerprint(), "session destroyed (logout)");
                    self.ended_here(key, now_millis());
                }
                Err(e) => {
                    state.destroyed = Some(key);
                    return Err(e.into());
                }
            }
        }
        let mut changes = std::mem::take(&mut state.pending);
        let fallback = &self.shared.config.fallback.fields;
        state.ticket_dirty |= changes.user.is_some()
            || changes.clear
            || state.cycle.is_some()
            || state.existence == Existence::Absent
            || fallback
                .iter()
                .any(|f| changes.set.contains_key(f) || changes.remove.contains(f));
        if !state.degraded {
            changes.limits = self.limits_for(&state);
            match (state.existence, state.key, state.cycle) {
                (Existence::Absent, _, _) | (_, None, _) if !changes.is_empty() => {
                    let mut record = self.shared.new_record(now_millis());
                    changes.limits = Some(self.shared.limits());
                    record.apply(&changes)?;
                    self.create(&mut state, record).await?;
                    outcome = &store.metrics.requests_created;
                    if changes.user.is_some() {
                        tracing::debug!(session = %state.key.map(|k| k.fingerprint()).unwrap_or_default(), "login");
                    }
                }
                (Existence::Absent, _, _) | (_, None, _) => {}
                (_, Some(old), Some(kind)) => {
                    self.cycle(&mut state, old, kind, changes.clone()).await?;
                    outcome = &store.metrics.requests_cycled;
                }
                (_, Some(key), None) if !changes.is_empty() => {
                    self.apply(&mut state, key, &changes).await?;
                }
                _ => {}
            }
        }
        if let (Some(UserChange::Set(user)), Some(key)) = (&changes.user, state.key) {
            if !state.degraded {
                bump(&store.metrics.logins);
            }
            self.limit_user_sessions(user, key).await;
        }
        if std::ptr::eq(outcome, &store.metrics.requests_none)
            && matches!(state.existence, Existence::Loaded | Existence::Confirmed)
        {
            outcome = &store.metrics.requests_loaded;
        }
        bump(outcome);
        let cookie = state.cookie();
        let value = match (cookie, &state.id) {
            (CookieOut::Set, Some(id)) => Some(self.shared.config.keys.sign(id)),
            _ => None,
        };
        Ok(Committed {
            ticket: self.ticket_out(&state),
            cookie,
            value,
            touched: state.touched,
        })
    }

    /// After a login: ends the user's oldest other sessions past the configured limit, and
    /// notes concurrent logons. Best effort: the login itself has been committed.
    async fn limit_user_sessions(&self, user: &str, current: SessionKey) {
        let Some(limit) = self.shared.config.max_sessions_per_user else {
            return;
        };
        let no_index = &self.shared.no_user_index;
        if no_index.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let store = &self.shared.store;
        let now = now_millis();
        let mut sessions = match store.call(store.store.list_user(user, now)).await {
            Ok(sessions) => sessions,
            // No per-user index: nothing to limit (the default limit is on for every store),
            // and no need to ask again.
            Err(StoreError::Unsupported(_)) => {
                no_index.store(true, std::sync::atomic::Ordering::Relaxed);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not check the user's session limit");
                return;
            }
        };
        if sessions.len() > 1 {
            tracing::debug!(session = %current.fingerprint(), sessions = sessions.len(), "concurrent logons");
        }
        sessions.retain(|s| s.key != current);
        sessions.sort_by_key(|s| s.record.created);
        let excess = (sessions.len() + 1)
            .saturating_sub(limit)
            .min(crate::USER_SESSIONS_ENDED_PER_LOGIN);
        for old in sessions.iter().take(excess) {
            if let Err(e) = store.call(store.store.destroy(&old.key)).await {
                tracing::warn!(error = %e, "could not end a session past the user's limit");
                return;
            }
            tracing::debug!(session = %old.key.fingerprint(), "session ended: the user's session limit");
            self.ended_here(old.key, now);
        }
    }

    async fn apply(
        &self,
        state: &mut State,
        key: SessionKey,
        changes: &Changes,
    ) -> Result<(), SessionError> {
        let store = &self.shared.store;
        bump(&store.metrics.applies);
        match store
            .call(store.store.apply(&key, changes, now_millis()))
            .await?
        {
            Applied::Done { .. } => Ok(()),
            Applied::Aliased => Err(SessionError::Superseded),
            Applied::Gone => {
                // The session ended (e.g. logged out) while we ran: never recreate it.
                bump(&store.metrics.writes_to_ended_sessions);
                tracing::debug!(session = %key.fingerprint(), "dropped a write to an ended session");
                state.forget();
                state.lifecycle = Lifecycle::Purged;
                Ok(())
            }
        }
    }

    async fn cycle(
        &self,
        state: &mut State,
        old: SessionKey,
        kind: Cycle,
        mut changes: Changes,
    ) -> Result<(), SessionError> {
        let store = &self.shared.store;
        let now = now_millis();
        let data_changes = !changes.is_empty();
        let grace_until = match kind {
            Cycle::Privilege => now,
            Cycle::Renewal => now.saturating_add(Shared::millis(self.shared.config.grace)),
        };
        if self.shared.config.renewal.is_some() {
            changes.set.insert(ISSUED_FIELD.to_owned(), now.to_string());
        }
        for _ in 0..CREATE_ATTEMPTS {
            let id = id_near(&*store.store, &old)?;
            let key = id.key();
            bump(&store.metrics.cycles);
            match store
                .call(store.store.cycle(&old, &key, &changes, now, grace_until))
                .await
            {
                Ok(Applied::Done { .. }) => {
                    let event = match (kind, &changes.user) {
                        (Cycle::Renewal, _) => "session ID renewed",
                        (Cycle::Privilege, Some(_)) => "login: session ID cycled",
                        (Cycle::Privilege, None) => "privilege change: session ID cycled",
                    };
                    tracing::debug!(old = %old.fingerprint(), new = %key.fingerprint(), "{event}");
                    // Tickets of the old ID stop here; this response carries a new one.
                    self.ended_here(old, now);
                    state.id = Some(id);
                    state.key = Some(key);
                    state.access = Access::Direct {
                        stale_signature: false,
                    };
                    state.lifecycle = Lifecycle::Issued;
                    return Ok(());
                }
                Ok(Applied::Gone) => {
                    bump(&store.metrics.writes_to_ended_sessions);
                    state.forget();
                    state.lifecycle = Lifecycle::Purged;
                    return Ok(());
                }
                // A concurrent request renewed first: nothing of ours to write, nothing lost.
                Ok(Applied::Aliased) if kind == Cycle::Renewal && !data_changes => {
                    state.access = Access::Alias;
                    return Ok(());
                }
                Ok(Applied::Aliased) => {
                    state.access = Access::Alias;
                    return Err(SessionError::Superseded);
                }
                Err(StoreError::IdCollision) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::IdCollision.into())
    }

    /// The `Max-Age` a freshly set cookie gets.
    pub(crate) async fn cookie_max_age(&self) -> Option<Duration> {
        let state = self.state.lock().await;
        let record = state.record.as_ref();
        if self.shared.browser_session_for(record) {
            return None;
        }
        let idle = Duration::from_millis(
            record.map_or(self.shared.idle(false), |r| self.shared.idle_for(r)),
        );
        let remaining = record.map_or(idle, |r| {
            Duration::from_millis(r.absolute_deadline.saturating_sub(now_millis()))
        });
        Some(idle.min(remaining))
    }
}

impl Session {
    /// Drops what this request would have written (its response is a server error): no
    /// data, no new user, no new ID, no logout. A session found gone still clears its cookie.
    pub(crate) async fn discard(&self) {
        let mut state = self.state.lock().await;
        state.pending = Changes::default();
        state.cycle = None;
        if state.destroyed.take().is_some() {
            state.lifecycle = Lifecycle::Kept;
        }
        if state.lifecycle == Lifecycle::Issued {
            state.lifecycle = Lifecycle::Kept;
        }
    }
}

/// How a flash message is meant to be shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlashLevel {
    /// Neutral information (plain [`Session::flash`] messages).
    #[default]
    Info,
    /// Something worked.
    Success,
    /// Something to look at.
    Warning,
    /// Something failed.
    Error,
}

/// A flash message: its level and its payload ([`Session::flash_with`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Flash<T = String> {
    /// How to show it.
    #[serde(rename = "l")]
    pub level: FlashLevel,
    /// What to show.
    #[serde(rename = "p")]
    pub payload: T,
}

/// The flash fields of the session, oldest first: (field, JSON text).
fn flash_entries(state: &State) -> Vec<(String, String)> {
    state
        .record
        .as_ref()
        .map(|r| {
            r.fields
                .range(FLASH_PREFIX.to_owned()..)
                .take_while(|(k, _)| k.starts_with(FLASH_PREFIX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// A stored flash as (level, payload): `{"l":…,"p":…}`, or a bare JSON string stored by
/// earlier versions (at `Info`); text that is not JSON is its own payload.
fn parse_flash(text: &str) -> (FlashLevel, serde_json::Value) {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(mut map))
            if map.contains_key("l") && map.contains_key("p") =>
        {
            let level = map
                .remove("l")
                .and_then(|l| serde_json::from_value(l).ok())
                .unwrap_or_default();
            (level, map.remove("p").unwrap_or_default())
        }
        Ok(value) => (FlashLevel::Info, value),
        Err(_) => (FlashLevel::Info, serde_json::Value::String(text.to_owned())),
    }
}

/// The fields a ticket carries: the configured ones the record has, in order, while they fit
/// in [`crate::FALLBACK_FIELDS_MAX_BYTES`].
fn fallback_fields(names: &[String], record: &Record) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut bytes = 0;
    for name in names {
        let Some(value) = record.fields.get(name) else {
            continue;
        };
        bytes += name.len() + value.len();
        if bytes > crate::FALLBACK_FIELDS_MAX_BYTES {
            tracing::warn!(field = %name, "fallback ticket: field left out, over {} bytes", crate::FALLBACK_FIELDS_MAX_BYTES);
            break;
        }
        out.insert(name.clone(), value.clone());
    }
    out
}

fn fresh_id() -> Result<SessionId, SessionError> {
    SessionId::random().map_err(|e| StoreError::unavailable(std::io::Error::other(e)).into())
}

/// Draws IDs until the store accepts the key as a cycle's target ([`SessionStore::can_cycle_to`]).
/// A sharded store accepts about one key in 256, so this takes a few hundred draws there and
/// one elsewhere; the bound makes a store that accepts nothing an error, not a hang.
fn id_near(store: &dyn crate::SessionStore, old: &SessionKey) -> Result<SessionId, SessionError> {
    const DRAWS: usize = 1 << 15;
    for _ in 0..DRAWS {
        let id = fresh_id()?;
        if store.can_cycle_to(old, &id.key()) {
            return Ok(id);
        }
    }
    Err(StoreError::IdCollision.into())
}
