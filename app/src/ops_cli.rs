//! The operator commands: stats, sizing, list and revoke sessions.

use std::fmt::Write as _;

use cloakroom::{now_millis, SessionKey};

use crate::backend::{Backend, BackendError};
use crate::config::{StoreArgs, StoreSpecError};
use crate::identity::rfc3339;

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The store setting.
    #[error(transparent)]
    Spec(#[from] StoreSpecError),
    /// Opening the backend.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A store call.
    #[error(transparent)]
    Store(#[from] cloakroom::StoreError),
    /// A key that is not one `list` prints.
    #[error("invalid session key {0:?}: use a key printed by `cloakroom list`")]
    BadKey(String),
    /// `memory` has nothing to inspect from another process.
    #[error("the memory store lives inside the app process; operator commands need the embedded or Redis store")]
    Memory,
}

async fn open(store: &StoreArgs) -> Result<Backend, OpsError> {
    let spec: crate::config::StoreSpec = store.resolve().parse()?;
    if spec == crate::config::StoreSpec::Memory {
        return Err(OpsError::Memory);
    }
    Ok(Backend::open(&spec, store).await?)
}

/// `cloakroom stats`.
///
/// # Errors
/// [`OpsError`].
pub async fn stats(store: &StoreArgs) -> Result<String, OpsError> {
    let backend = open(store).await?;
    let stats = backend.sessions.stats().await?;
    backend.close();
    let mut out = format!(
        "store: {}\nsessions: {}\n",
        backend.description, stats.sessions
    );
    if let Some(bytes) = stats.bytes {
        let _ = writeln!(out, "bytes: {bytes}");
        if let Some(per) = bytes.checked_div(stats.sessions) {
            let _ = writeln!(out, "bytes per session: {per}");
        }
    }
    Ok(out)
}

/// `cloakroom sizing --sessions N`.
///
/// # Errors
/// [`OpsError`].
pub async fn sizing(store: &StoreArgs, sessions: u64) -> Result<String, OpsError> {
    let backend = open(store).await?;
    let stats = backend.sessions.stats().await?;
    backend.close();
    let per = match (stats.bytes, stats.sessions) {
        (Some(bytes), n) if n > 0 => bytes / n,
        // No data yet: a login session (user, login time, user agent, CSRF) is about 400 bytes.
        _ => 400,
    };
    let total = per.saturating_mul(sessions);
    Ok(format!(
        "at {per} bytes per session, {sessions} sessions need about {:.1} MiB\n",
        total as f64 / (1024.0 * 1024.0)
    ))
}

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
    let out = match (user, parsed) {
        (Some(user), _) => {
            let n = backend
                .sessions
                .destroy_user(user, None, now_millis())
                .await?;
            format!("revoked {n} session(s) of {user:?}\n")
        }
        (None, Some(key)) => match backend.sessions.destroy(&key).await? {
            cloakroom::Destroyed::Session => format!("revoked session {key}\n"),
            cloakroom::Destroyed::Alias => format!("{key} was an old ID of a session; it no longer works, the session itself was not revoked\n"),
            cloakroom::Destroyed::Nothing => format!("no session {key} (already ended)\n"),
        },
        (None, None) => String::from("nothing to revoke\n"),
    };
    backend.close();
    Ok(out)
}
