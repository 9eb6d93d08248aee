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
