//! Who the session is and how long it lives: its user, its own expiry ("remember me"), its
//! CSRF token, cycling its ID, and ending it.

use std::time::Duration;

use crate::expiry::Expiry;
use crate::id::{SessionId, SessionKey};
use crate::layer::shared::Shared;
use crate::names::{CSRF_FIELD, EXPIRY_FIELD, IMPORTED_FIELD};
use crate::record::{now_millis, Changes, OwnExpiry, UserChange};
use crate::store::StoreError;
use crate::SessionError;

use super::state::{Access, Cycle, Existence, Lifecycle};
use super::Session;

impl Session {
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
        if record.fields.contains_key(IMPORTED_FIELD) {
            // Another user logs in over a session taken over from the old app: its link to
            // that session does not carry over, nor, before it is even filed, its data.
            let filed = state.existence != Existence::Absent;
            if filed {
                state.remove_field(IMPORTED_FIELD);
            } else {
                state.pending.set.clear();
                state.record = Some(shared.new_record(now));
            }
        }
        let record = state.record.get_or_insert_with(|| shared.new_record(now));
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
        // A logout never takes over a foreign session, in this request or later ones.
        state.foreign = None;
        // The key the cookie named: the one a logout ends (through an old ID, the store
        // refuses, as it should), whatever a load resolved it to (a read through a renewal's
        // alias, earlier in this request or below, moves `state.key` to the session itself).
        let presented = match state.access {
            Access::Alias => state.id.as_ref().map(SessionId::key),
            _ => state.key,
        };
        // With imports, read first: the foreign session an imported one names. A failed read
        // still logs out. Otherwise a blind logout stays one store call: the store's `end`
        // keeps the reason and says whose session it was (for the event).
        if !self.shared.config.imports.0.is_empty() {
            let _ = self.ensure_loaded(&mut state).await;
        }
        state.end_foreign = state
            .record
            .as_ref()
            .and_then(|r| r.fields.get(IMPORTED_FIELD).cloned());
        state.end_user = state.record.as_ref().and_then(|r| r.user.clone());
        if let Some(key) = presented {
            state.destroyed = Some(key);
            state.lifecycle = Lifecycle::Purged;
        }
        state.forget();
        state.pending = Changes::default();
        state.cycle = None;
    }

    /// Why the session this request's cookie named ended, when the cookie was correctly signed
    /// but found no session: `logged_out`, `revoked`, `revoked_by_operator`, `replaced`,
    /// `binding_mismatch` from its tombstone (kept a day), else `expired`. `None` when the
    /// request has a live session, or came without one (a forged cookie learns nothing).
    ///
    /// # Errors
    /// A store error from loading the session.
    pub async fn ended(&self) -> Result<Option<crate::events::EndReason>, SessionError> {
        let mut state = self.loaded().await?;
        if state.ended.is_none() {
            if let Some(key) = state.dead {
                let store = &self.shared.store;
                let reason =
                    match crate::store::SessionStore::end_reason(store, &key, now_millis()).await {
                        Ok(Some(reason)) => reason,
                        // No tombstone, and the store cannot tell which deadline passed: it
                        // expired, or the store lost it.
                        Ok(None) => crate::events::EndReason::Expired,
                        // Unknown: say nothing rather than a wrong reason.
                        Err(_) => return Ok(None),
                    };
                if reason.is_expiry() {
                    // Counted here: the other reasons were counted when they ended.
                    crate::metrics::bump(&store.metrics.sessions_ended[reason.index()]);
                }
                state.ended = Some(reason);
            }
        }
        Ok(state.ended)
    }

    /// The signed-in user, or [`SessionError::NotSignedIn`] (a `401`) with the reason the
    /// request's session ended, if it did (see [`Session::ended`]).
    ///
    /// # Errors
    /// [`SessionError::NotSignedIn`]; a store error from loading the session.
    pub async fn require_user(&self) -> Result<String, SessionError> {
        match self.user().await? {
            Some(user) => Ok(user),
            None => Err(SessionError::NotSignedIn(self.ended().await?)),
        }
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
}
