//! The axum extractor for [`Session`].

use axum_core::extract::FromRequestParts;
use http::request::Parts;

use crate::{Session, SessionError};

impl<S: Send + Sync> FromRequestParts<S> for Session {
    /// Only [`SessionError::MissingLayer`]: extracting never touches the store (sessions
    /// load lazily), so store failures surface from the session's methods instead, as
    /// [`SessionError::Store`] (a `503` with `Retry-After`).
    type Rejection = SessionError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(SessionError::MissingLayer)
    }
}

/// The signed-in user, as an extractor: a handler that takes `RequireUser(user)` runs only
/// for a signed-in request. Any other is refused with [`SessionError::NotSignedIn`], a `401`
/// that says why the request's session ended when its cookie was correctly signed (JSON
/// `{"error": "not signed in", "ended": "revoked"}`; see [`Session::ended`]). A store failure
/// is the store's error (a `503`).
///
/// ```
/// use axum::{routing::get, Router};
/// use cloakroom::RequireUser;
///
/// async fn profile(RequireUser(user): RequireUser) -> String {
///     format!("hello, {user}")
/// }
/// let app: Router = Router::new().route("/profile", get(profile));
/// # let _ = app;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequireUser(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequireUser {
    /// [`SessionError::NotSignedIn`], a store error, or [`SessionError::MissingLayer`].
    type Rejection = SessionError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let session = Session::from_request_parts(parts, state).await?;
        Ok(Self(session.require_user().await?))
    }
}
