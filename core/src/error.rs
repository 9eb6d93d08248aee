//! What a handler sees when a session operation fails, and the response it turns into.

use axum_core::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

use crate::store::StoreError;

/// Why a session operation failed.
///
/// Returning it from a handler gives a documented response: `503 Service Unavailable` with
/// `Retry-After: 1` for store failures, `413`/`400` for data the handler tried to store, `409`
/// for a write through a replaced ID or to an ended session, and a
/// short JSON body (HTML for browsers that ask for it, when the layer can see `Accept`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The store failed or timed out.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Storing the value would make the session larger than the configured limit.
    #[error("the session would grow to {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The size the session would have had.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Storing the value would give the session more fields than the configured limit.
    #[error("the session would have {count} fields, over the limit of {limit}")]
    TooManyFields {
        /// The field count the session would have had.
        count: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The request reached its session through an ID that a renewal replaced. Such a
    /// request may read the session for the grace window, but never change it, cycle it, or
    /// receive a cookie: whoever holds an old ID must not be able to act as the session.
    #[error("this request used a session ID that has been replaced; nothing was written")]
    Superseded,
    /// The store failed earlier in this request and the failure policy served the request
    /// as anonymous: a write now would be lost, so it is refused instead.
    #[error("the session store is unavailable; nothing was written")]
    Unavailable,
    /// The key is empty, too long, or reserved (keys starting with `__` are Cloakroom's own).
    #[error("invalid session key {0:?}: keys must be 1 to the configured maximum bytes and not start with \"__\"")]
    InvalidKey(String),
    /// The value could not be encoded as JSON.
    #[error("could not encode the value for key {key:?}: {source}")]
    Encode {
        /// The key.
        key: String,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// The stored value does not decode as the requested type.
    /// (The message leaves out the decoder's text, which quotes the value.)
    #[error("the value under key {key:?} does not decode as the requested type")]
    Decode {
        /// The key.
        key: String,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// The session ended (logged out elsewhere, or expired) while this request was using it.
    /// Nothing was written.
    #[error("the session ended while this request was using it")]
    Gone,
    /// The request asked for the signed-in user ([`crate::Session::require_user`]) and has
    /// none: `None` when it came without a session, or the reason its session ended (its
    /// cookie was correctly signed). A `401`.
    #[error("not signed in{}", .0.map(|r| format!(" (the session ended: {r})")).unwrap_or_default())]
    NotSignedIn(Option<crate::events::EndReason>),
    /// The handler ran without a [`crate::SessionLayer`] in front of it.
    #[error("no SessionLayer is installed in front of this handler")]
    MissingLayer,
    /// A change was attempted after the session was committed (from a streaming body, or a
    /// task that outlived its request): it cannot be written any more, so it is refused.
    #[error("the session was already committed for this request; the change was not written")]
    AlreadyCommitted,
    /// [`crate::Session::set_expiry`] was given an expiry outside the bounds the layer allows
    /// ([`crate::SessionConfigBuilder::with_max_expiry`]), a zero duration, or an idle
    /// timeout longer than the lifetime. Nothing was changed.
    #[error("session expiry out of bounds: {0}")]
    ExpiryOutOfBounds(&'static str),
}

/// Marks an error response made from a [`SessionError`], so that the layer may re-render its
/// body as HTML for a browser.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorMarker {
    pub(crate) status: StatusCode,
    pub(crate) message: &'static str,
    /// Why the request's session ended, for a [`SessionError::NotSignedIn`].
    pub(crate) ended: Option<crate::events::EndReason>,
}

impl SessionError {
    /// The status this error answers with.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Store(StoreError::NotAnInteger(_))
            | Self::InvalidKey(_)
            | Self::Encode { .. } => StatusCode::BAD_REQUEST,
            Self::Store(StoreError::LimitExceeded(_))
            | Self::TooLarge { .. }
            | Self::TooManyFields { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Store(StoreError::Conflict(_)) => StatusCode::CONFLICT,
            Self::Store(StoreError::Unsupported(_)) => StatusCode::NOT_IMPLEMENTED,
            Self::Store(_) | Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Superseded => StatusCode::CONFLICT,
            Self::Decode { .. }
            | Self::MissingLayer
            | Self::AlreadyCommitted
            | Self::ExpiryOutOfBounds(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Gone => StatusCode::CONFLICT,
            Self::NotSignedIn(_) => StatusCode::UNAUTHORIZED,
        }
    }

    pub(crate) fn public_message(&self) -> &'static str {
        match self {
            Self::Store(StoreError::NotAnInteger(_)) => "session value is not a number",
            Self::Store(StoreError::LimitExceeded(_))
            | Self::TooLarge { .. }
            | Self::TooManyFields { .. } => "session data too large",
            Self::Store(StoreError::Conflict(_)) => {
                "session data changed concurrently, please retry"
            }
            Self::Store(StoreError::Unsupported(_)) => "not supported by this session store",
            Self::Store(_) | Self::Unavailable => "session store unavailable, please retry",
            Self::Superseded => "this session ID has been replaced, please retry",
            Self::InvalidKey(_) | Self::Encode { .. } => "invalid session data",
            Self::Decode { .. } => "session data could not be read",
            Self::Gone => "session ended, please sign in again",
            Self::NotSignedIn(_) => "not signed in",
            Self::MissingLayer => "session support is not configured",
            Self::AlreadyCommitted => "session changed after the response was sent",
            Self::ExpiryOutOfBounds(_) => "session lifetime not allowed",
        }
    }
}

/// Builds the error response for `status`/`message` as JSON or as a small HTML page.
pub(crate) fn error_response(status: StatusCode, message: &'static str, html: bool) -> Response {
    ended_response(status, message, None, html)
}

/// As [`error_response`], saying why the request's session ended if `ended` does (JSON
/// `"ended": "<reason>"`).
pub(crate) fn ended_response(
    status: StatusCode,
    message: &'static str,
    ended: Option<crate::events::EndReason>,
    html: bool,
) -> Response {
    let (content_type, body) = if html {
        let why = ended
            .map(|r| format!("<p>Your session ended: {r}.</p>"))
            .unwrap_or_default();
        (
            "text/html; charset=utf-8",
            format!(
                "<!doctype html><meta charset=utf-8><title>{code}</title>\
                 <h1>{code}</h1><p>{message}</p>{why}",
                code = status.as_u16()
            ),
        )
    } else {
        let body = match ended {
            Some(reason) => serde_json::json!({ "error": message, "ended": reason.as_str() }),
            None => serde_json::json!({ "error": message }),
        };
        ("application/json", body.to_string())
    };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response.extensions_mut().insert(ErrorMarker {
        status,
        message,
        ended,
    });
    response
}

/// Whether a request prefers an HTML answer (a browser navigation).
pub(crate) fn wants_html(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "session operation failed");
        }
        let ended = match self {
            Self::NotSignedIn(reason) => reason,
            _ => None,
        };
        ended_response(status, self.public_message(), ended, false)
    }
}
