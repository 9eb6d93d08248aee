//! CSRF tokens for HTML forms: one random token per session, compared in constant time.

use cloakroom::{Session, SessionError};
use subtle::ConstantTimeEq;

const KEY: &str = "csrf";

/// The session's token, creating one if it has none.
///
/// # Errors
/// A session error.
pub async fn token(session: &Session) -> Result<String, SessionError> {
    if let Some(token) = session.get::<String>(KEY).await? {
        return Ok(token);
    }
    rotate(session).await
}

/// Replaces the token (at login, so a token seen before login is useless after).
///
/// # Errors
/// A session error.
pub async fn rotate(session: &Session) -> Result<String, SessionError> {
    let token = cloakroom::generate_secret().map_err(|e| {
        SessionError::Store(cloakroom::StoreError::unavailable(std::io::Error::other(e)))
    })?;
    session.insert(KEY, &token).await?;
    Ok(token)
}

/// Whether `submitted` is the session's token.
///
/// # Errors
/// A session error.
pub async fn check(session: &Session, submitted: Option<&str>) -> Result<bool, SessionError> {
    let Some(submitted) = submitted.filter(|s| !s.is_empty()) else {
        return Ok(false);
    };
    let expected = session.get::<String>(KEY).await?;
    Ok(expected.is_some_and(|e| bool::from(e.as_bytes().ct_eq(submitted.as_bytes()))))
}
