//! The user's other sessions: listing them (bounded), ending one, ending all but this one,
//! and the per-user limit applied after a login.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::FailurePolicy;
use crate::events::EndReason;
use crate::id::SessionKey;
use crate::names::RESERVED_PREFIX;
use crate::record::{now_millis, Destroyed, Millis};
use crate::store::{SessionStore as _, StoreError};
use crate::SessionError;

use super::Session;

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

impl Session {
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
        let mut list = store.list_user(&user, now_millis()).await?;
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
            .list_user(&user, now)
            .await?
            .iter()
            .any(|s| s.key == target);
        if !mine {
            return Ok(false);
        }
        let ended = self.end_one(target, &user, EndReason::Revoked).await?;
        self.ended_here(target, now);
        tracing::debug!(session = %target.fingerprint(), by = %current.map(|k| k.fingerprint()).unwrap_or_default(), "session ended by its user from another session");
        Ok(ended)
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
        // Each session keeps why it ended (a tombstone), in the same step where the store can.
        let until = now_millis().saturating_add(crate::TOMBSTONE_LIFETIME_MS);
        let ended = store
            .end_user(
                &user,
                current.as_ref(),
                EndReason::Revoked,
                until,
                now_millis(),
            )
            .await?;
        for key in &ended {
            self.emit_ended(Some(user.clone()), *key, EndReason::Revoked);
        }
        let n = ended.len() as u64;
        tracing::info!(
            session = %current.map(|k| k.fingerprint()).unwrap_or_default(),
            revoked = n,
            "other sessions of the user revoked"
        );
        Ok(n)
    }

    /// After a login: ends the user's oldest other sessions past the configured limit, and
    /// notes concurrent logons. Best effort: the login itself has been committed.
    pub(super) async fn limit_user_sessions(&self, user: &str, current: SessionKey) {
        let Some(limit) = self.shared.config.max_sessions_per_user else {
            return;
        };
        let no_index = &self.shared.no_user_index;
        if no_index.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let store = &self.shared.store;
        let now = now_millis();
        let mut sessions = match store.list_user(user, now).await {
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
            match self.end_one(old.key, user, EndReason::Replaced).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "could not end a session past the user's limit");
                    return;
                }
            }
            tracing::debug!(session = %old.key.fingerprint(), "session ended: the user's session limit");
            self.ended_here(old.key, now);
        }
    }

    /// Ends the session `key` of `user` for `reason`: its tombstone (in the store's own step
    /// where it can) and its event. Returns whether a session ended.
    async fn end_one(
        &self,
        key: SessionKey,
        user: &str,
        reason: EndReason,
    ) -> Result<bool, StoreError> {
        let until = now_millis().saturating_add(crate::TOMBSTONE_LIFETIME_MS);
        let ended = self.shared.store.end(&key, reason, until).await?;
        if ended.destroyed != Destroyed::Session {
            return Ok(false);
        }
        if !ended.kept {
            self.tombstone(key, Some(user), reason).await;
        }
        self.emit_ended(Some(user.to_owned()), key, reason);
        Ok(true)
    }
}
