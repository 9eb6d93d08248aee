//! The commit after the handler: one conditional store call for what the request changed
//! (create, apply or cycle), and what the response must do with the cookie and the ticket.

use std::time::Duration;

use crate::events::{EndReason, SessionEvent};
use crate::id::{SessionId, SessionKey};
use crate::layer::shared::Shared;
use crate::metrics::bump;
use crate::names::{BINDING_FIELD, ISSUED_FIELD};
use crate::record::{now_millis, Applied, Changes, Destroyed, Record, UserChange};
use crate::store::{SessionStore as _, StoreError};
use crate::SessionError;

use super::state::{Access, Committed, CookieOut, Cycle, Existence, Lifecycle, State, TicketOut};
use super::Session;

/// Attempts at drawing an unused ID before giving up (a collision is astronomically unlikely;
/// more than one in a row means something else is wrong).
pub(super) const CREATE_ATTEMPTS: usize = 3;

impl Session {
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
                max_age: None,
                touched: false,
            });
        }
        let store = &self.shared.store;
        let mut outcome = &store.metrics.requests_none;
        if let Some(key) = state.destroyed.take() {
            outcome = &store.metrics.requests_destroyed;
            bump(&store.metrics.destroys);
            let reason = state.end_reason.unwrap_or(EndReason::LoggedOut);
            let until = now_millis().saturating_add(crate::TOMBSTONE_LIFETIME_MS);
            match store
                .end(&key, reason, until)
                .await
                .map(|e| (e.destroyed, e))
            {
                Ok((Destroyed::Alias, _)) => {
                    // Only the old ID died; the session it named lives on, so this logout did
                    // not happen: say so, and the client retries with its current cookie.
                    tracing::debug!(session = %key.fingerprint(), "logout through a replaced ID refused");
                    return Err(SessionError::Superseded);
                }
                Ok((destroyed, ended)) => {
                    tracing::debug!(session = %key.fingerprint(), "session destroyed (logout)");
                    self.ended_here(key, now_millis());
                    state.end_reason = None;
                    let user = ended.user.or_else(|| state.end_user.take());
                    if destroyed == Destroyed::Session {
                        // Why, for the next request with this cookie (unless the store kept
                        // it as it ended the session); then the event.
                        if !ended.kept {
                            self.tombstone(key, user.as_deref(), reason).await;
                        }
                        self.emit_ended(user, key, reason);
                    }
                    if let Some(marker) = state.end_foreign.take() {
                        self.end_foreign(&marker).await;
                    }
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
                if self.shared.events.on() {
                    self.emit(SessionEvent::LoggedIn {
                        user: user.clone(),
                        session: key.fingerprint(),
                    });
                }
            }
            self.limit_user_sessions(user, key).await;
        }
        if std::ptr::eq(outcome, &store.metrics.requests_none) {
            if state.created {
                // Filed by this request, in the handler (a first increment) or just now.
                outcome = &store.metrics.requests_created;
            } else if matches!(state.existence, Existence::Loaded | Existence::Confirmed) {
                outcome = &store.metrics.requests_loaded;
            }
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
            max_age: value.as_ref().and_then(|_| self.cookie_max_age(&state)),
            value,
            touched: state.touched,
        })
    }

    /// Files `record` under a fresh ID and makes it this request's session.
    pub(super) async fn create(
        &self,
        state: &mut State,
        mut record: Record,
    ) -> Result<(), SessionError> {
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
            match store.create(&key, &record).await {
                Ok(()) => {
                    tracing::debug!(session = %key.fingerprint(), "session created");
                    if self.shared.events.on() {
                        self.emit(SessionEvent::Created {
                            session: key.fingerprint(),
                        });
                    }
                    state.id = Some(id);
                    state.key = Some(key);
                    state.record = Some(record);
                    state.existence = Existence::Loaded;
                    state.access = Access::Direct {
                        stale_signature: false,
                    };
                    state.lifecycle = Lifecycle::Issued;
                    state.created = true;
                    return Ok(());
                }
                Err(StoreError::IdCollision) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::IdCollision.into())
    }

    pub(super) async fn apply(
        &self,
        state: &mut State,
        key: SessionKey,
        changes: &Changes,
    ) -> Result<(), SessionError> {
        let store = &self.shared.store;
        bump(&store.metrics.applies);
        match store.apply(&key, changes, now_millis()).await? {
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

    pub(super) async fn cycle(
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
            let id = id_near(store, &old)?;
            let key = id.key();
            bump(&store.metrics.cycles);
            match store.cycle(&old, &key, &changes, now, grace_until).await {
                Ok(Applied::Done { .. }) => {
                    let event = match (kind, &changes.user) {
                        (Cycle::Renewal, _) => "session ID renewed",
                        (Cycle::Privilege, Some(_)) => "login: session ID cycled",
                        (Cycle::Privilege, None) => "privilege change: session ID cycled",
                    };
                    tracing::debug!(old = %old.fingerprint(), new = %key.fingerprint(), "{event}");
                    if self.shared.events.on() {
                        let (session, previous) = (key.fingerprint(), old.fingerprint());
                        self.emit(match kind {
                            Cycle::Privilege => SessionEvent::IdCycled { session, previous },
                            Cycle::Renewal => SessionEvent::Renewed { session, previous },
                        });
                    }
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
    fn cookie_max_age(&self, state: &State) -> Option<Duration> {
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

pub(super) fn fresh_id() -> Result<SessionId, SessionError> {
    SessionId::random().map_err(|e| StoreError::unavailable(std::io::Error::other(e)).into())
}

/// Draws IDs until the store accepts the key as a cycle's target ([`SessionStore::can_cycle_to`]).
/// A sharded store accepts about one key in 256, so this takes a few hundred draws there and
/// one elsewhere; the bound makes a store that accepts nothing an error, not a hang.
pub(super) fn id_near(
    store: &dyn crate::SessionStore,
    old: &SessionKey,
) -> Result<SessionId, SessionError> {
    const DRAWS: usize = 1 << 15;
    for _ in 0..DRAWS {
        let id = fresh_id()?;
        if store.can_cycle_to(old, &id.key()) {
            return Ok(id);
        }
    }
    Err(StoreError::IdCollision.into())
}
