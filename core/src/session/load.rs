//! Loading a session on first use: the store call, the failure policy when it fails, the
//! client binding and the renewal check on what it returns, and the read cache's copy for a
//! blind write.

use crate::config::FailurePolicy;
use crate::events::EndReason;
use crate::id::SessionKey;
use crate::layer::shared::Shared;
use crate::metrics::bump;
use crate::names::{BINDING_FIELD, ISSUED_FIELD};
use crate::record::{now_millis, Millis, Record};
use crate::store::SessionStore as _;
use crate::SessionError;

use super::state::{Access, Cycle, Existence, Lifecycle, State};
use super::Session;

impl Session {
    /// Loads the session if this request has not yet.
    pub(super) async fn ensure_loaded(&self, state: &mut State) -> Result<(), SessionError> {
        if !matches!(state.existence, Existence::Unknown | Existence::Confirmed) {
            // No cookie of ours: perhaps a foreign session to take over (not while the store
            // is failing: its create would turn an anonymous page into an error).
            if state.key.is_none() && state.record.is_none() && !self.shared.store.is_open() {
                self.import_foreign(state).await;
            }
            return Ok(());
        }
        let Some(key) = state.key else {
            state.existence = Existence::Absent;
            self.import_foreign(state).await;
            return Ok(());
        };
        let now = now_millis();
        let refresh = self.shared.refresh(now);
        let store = &self.shared.store;
        bump(&store.metrics.loads);
        // A coherent in-process copy answers without a future (the Redis read cache's hit).
        let loaded = match store.load_cached(&key, now, Some(refresh)) {
            Some(hit) => Ok(Some(hit)),
            None => store.load(&key, now, Some(refresh)).await,
        };
        match loaded {
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
                // Why it ended is read only if asked (`Session::ended`): a replayed dead
                // cookie costs no more than this load, and sends no event.
                state.dead = Some(key);
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
    pub(super) fn ended_here(&self, key: SessionKey, now: Millis) {
        if self.shared.config.failure_policy == FailurePolicy::Fallback {
            self.shared.ended.session(key, now);
        }
    }

    /// Compares the client with the one the session is bound to: a change is logged and
    /// counted, and ends the session when the binding says so.
    pub(super) fn check_binding(&self, state: &mut State, key: SessionKey) {
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
                    // Ended at the commit, whose event gives this reason.
                    state.end_user = state.record.as_ref().and_then(|r| r.user.clone());
                    state.end_reason = Some(EndReason::BindingMismatch);
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

    pub(super) fn renewal_due(&self, record: &Record, now: Millis) -> bool {
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

    /// Takes the session from the store's in-process copy, if it keeps one (a read cache):
    /// then a blind write knows the session's fields without a round trip.
    pub(super) fn peek_cached(&self, state: &mut State) {
        let Some(key) = state.key else {
            return;
        };
        let now = now_millis();
        if let Some(record) = self.shared.store.cached(&key).filter(|r| r.is_alive(now)) {
            state.record = Some(record);
            state.existence = Existence::Loaded;
        }
    }
}
