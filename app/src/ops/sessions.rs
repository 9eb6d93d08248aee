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
            let n = backend
                .sessions
                .end_user(user, None, reason, until, now_millis())
                .await?
                .len();
            format!("revoked {n} session(s) of {user:?}\n")
        }
        (None, Some(key)) => match backend.sessions.end(&key, reason, until).await?.destroyed {
            cloakroom::Destroyed::Session => format!("revoked session {key}\n"),
            cloakroom::Destroyed::Alias => format!("{key} was an old ID of a session; it no longer works, the session itself was not revoked\n"),
            cloakroom::Destroyed::Nothing => format!("no session {key} (already ended)\n"),
        },
        (None, None) => String::from("nothing to revoke\n"),
    };
    backend.close();
    Ok(out)
}
