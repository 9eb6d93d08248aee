//! The session handle a handler works with: lazy loading, field-level change tracking, and
//! the commit that runs before the response head is sent.
//!
//! A request's session moves through one [`Lifecycle`]: it stays *kept* (nothing about its
//! identity changed: maybe data was written), becomes *issued* (created, cycled, renewed or
//! refreshed: the browser gets a fresh cookie), or *purged* (destroyed, expired or gone: the
//! browser is told to forget the cookie). The cookie the response carries is derived from that
//! and from how the request reached the session ([`Access`]), in one place: [`State::cookie`].
//!
//! One file per concern, each with its own `impl Session` block:
//! - [`state`]: the state machine and the one place the cookie is decided;
//! - `load`: loading on first use, the failure policy, binding and renewal;
//! - `data`: typed reads and writes of fields and counters;
//! - `flash`: flash messages;
//! - `identity`: user, expiry, CSRF token, cycling and ending;
//! - `others`: the user's other sessions;
//! - `fallback`: the fallback ticket;
//! - `commit`: the write after the handler.

use std::sync::Arc;

use tokio::sync::{Mutex, MutexGuard};

use crate::layer::shared::{Presented, Shared};
use crate::record::Changes;
use crate::SessionError;

mod commit;
mod data;
mod fallback;
mod flash;
mod identity;
mod import;
mod load;
mod others;
pub(crate) mod state;

pub use flash::{Flash, FlashLevel};
pub use others::SessionInfo;

use state::{Access, Existence, Lifecycle, State};

/// How long the layer keeps why a session ended (its tombstone).
pub const TOMBSTONE_LIFETIME_MS: crate::record::Millis = 86_400_000;

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

impl Session {
    pub(crate) fn new(
        shared: Arc<Shared>,
        presented: Presented,
        bound: Option<String>,
        ticket_cookie: crate::cookie::TicketCookie,
        foreign: Option<(usize, Vec<String>)>,
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
            ticket_cookie,
            ticket_dirty: false,
            committed: false,
            created: false,
            foreign,
            end_foreign: None,
            end_user: None,
            end_reason: None,
            dead: None,
            ended: None,
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

    /// Hands a lifecycle event to the app's handler (see [`crate::SessionLayer::on_event`]).
    pub(super) fn emit(&self, event: crate::events::SessionEvent) {
        self.shared.events.emit(&self.shared.store.metrics, event);
    }

    /// The session `key` (of `user`) ended for `reason`.
    pub(super) fn emit_ended(
        &self,
        user: Option<String>,
        key: crate::SessionKey,
        reason: crate::events::EndReason,
    ) {
        self.emit(crate::events::SessionEvent::Ended {
            user,
            session: key.fingerprint(),
            reason,
        });
    }

    /// Leaves a tombstone saying why the session `key` ends (a day long; signed-in sessions
    /// only, so that an anonymous flood grows nothing). Best effort: a failure is logged.
    pub(super) async fn tombstone(
        &self,
        key: crate::SessionKey,
        user: Option<&str>,
        reason: crate::events::EndReason,
    ) {
        if user.is_none() {
            return;
        }
        let until = crate::record::now_millis().saturating_add(TOMBSTONE_LIFETIME_MS);
        let store = &self.shared.store;
        if let Err(e) = crate::store::SessionStore::record_end(store, &key, reason, until).await {
            tracing::warn!(error = %e, session = %key.fingerprint(), "could not keep why the session ended");
        }
    }

    /// The state with the request's cookies verified (done once, at first use).
    pub(super) async fn verified(&self) -> MutexGuard<'_, State> {
        let mut state = self.state.lock().await;
        if let Some((found, client)) = state.unverified.take() {
            let (cookie, _) = self.shared.verify(&found, client);
            state.adopt(cookie);
        }
        state
    }

    /// The state, marked as used by the handler (its response now depends on the session).
    pub(super) async fn touch(&self) -> MutexGuard<'_, State> {
        let mut state = self.verified().await;
        state.touched = true;
        state
    }

    /// The state, loaded from the store if this request has not yet.
    pub(super) async fn loaded(&self) -> Result<MutexGuard<'_, State>, SessionError> {
        let mut state = self.touch().await;
        self.ensure_loaded(&mut state).await?;
        Ok(state)
    }
}
