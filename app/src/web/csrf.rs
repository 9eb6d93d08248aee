//! The synchronizer token of the HTML forms. The token itself lives in the library
//! ([`Session::csrf_token`]), which replaces it at every change of user; cross-site requests
//! are refused before they reach a handler by [`cloakroom::CsrfLayer`].

use cloakroom::{Session, SessionError};

/// The session's token, creating one if it has none.
///
/// # Errors
/// A session error.
pub async fn token(session: &Session) -> Result<String, SessionError> {
    session.csrf_token().await
}

/// Whether `submitted` is the session's token.
///
/// # Errors
/// A session error.
pub async fn check(session: &Session, submitted: Option<&str>) -> Result<bool, SessionError> {
    session
        .verify_csrf_token(submitted.unwrap_or_default())
        .await
}
