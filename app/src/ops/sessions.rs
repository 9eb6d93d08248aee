//! `cloakroom list` and `cloakroom revoke`: a user's sessions, and ending them.

use std::fmt::Write as _;

use cloakroom::{now_millis, SessionKey};

use crate::config::StoreArgs;
use crate::identity::rfc3339;

use super::*;

/// `cloakroom list --user U`.
///
/// # Errors
/// [`OpsError`].
pub async fn list(store: &StoreArgs, user: &str) -> Result<String, OpsError> {
    let backend = open(store).await?;
    let list = backend.sessions.list_user(user, now_millis()).await?;
    backend.close();
    let mut out = format!("{} session(s) of {user:?}\n", list.len());
    for s in list {
        let agent = s
            .record
            .fields
            .get("user_agent")
            .and_then(|v| serde_json::from_str::<String>(v).ok())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{}  created {}  expires {}  {agent}",
            s.key,
            rfc3339(s.record.created),
            rfc3339(s.record.expires_at())
        );
    }
    Ok(out)
}

/// Revokes one session, leaving its tombstone first.
async fn revoke_one(
    backend: &crate::backend::Backend,
    key: &SessionKey,
    until: cloakroom::Millis,
) -> Result<cloakroom::Destroyed, OpsError> {
    let reason = cloakroom::events::EndReason::RevokedByOperator;
    let destroyed = backend.sessions.destroy(key).await?;
    if destroyed == cloakroom::Destroyed::Session {
        let _ = backend.sessions.record_end(key, reason, until).await;
    }
    Ok(destroyed)
}

/// `cloakroom revoke --user U` or `--key K`.
///
/// # Errors
/// [`OpsError`].
pub async fn revoke(
    store: &StoreArgs,
    user: Option<&str>,
    key: Option<&str>,
) -> Result<String, OpsError> {
    let parsed = match key {
        Some(k) => Some(
            SessionKey::parse(k).ok_or_else(|| OpsError::BadKey(k.chars().take(64).collect()))?,
        ),
        None => None,
    };
    let backend = open(store).await?;
    // Each session revoked keeps why, for its user's next request (a tombstone, a day).
    let until = now_millis().saturating_add(cloakroom::TOMBSTONE_LIFETIME_MS);
    let reason = cloakroom::events::EndReason::RevokedByOperator;
    let out = match (user, parsed) {
        (Some(user), _) => {
            let listed = backend.sessions.list_user(user, now_millis()).await?;
            let n = backend
                .sessions
                .destroy_user(user, None, now_millis())
                .await?;
            // Best effort, once they are ended: a failure here must not undo the revocation.
            for s in listed {
                let _ = backend.sessions.record_end(&s.key, reason, until).await;
            }
            format!("revoked {n} session(s) of {user:?}\n")
        }
        (None, Some(key)) => match revoke_one(&backend, &key, until).await? {
            cloakroom::Destroyed::Session => format!("revoked session {key}\n"),
            cloakroom::Destroyed::Alias => format!("{key} was an old ID of a session; it no longer works, the session itself was not revoked\n"),
            cloakroom::Destroyed::Nothing => format!("no session {key} (already ended)\n"),
        },
        (None, None) => String::from("nothing to revoke\n"),
    };
    backend.close();
    Ok(out)
}
