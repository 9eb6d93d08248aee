//! The reference app's HTTP surface: pages, the JSON API, and the operational endpoints.

pub mod api;
pub mod csrf;
pub mod headers;
pub mod html;
pub mod ops;
pub mod pages;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cloakroom::{CsrfLayer, Session, SessionLayer};

use crate::todos::{TodoError, TodoStore};

/// Largest request body accepted (forms and JSON are tiny).
pub const MAX_BODY: usize = 16 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The session layer (for readiness and metrics).
    pub sessions: SessionLayer,
    /// Todo lists.
    pub todos: Arc<dyn TodoStore>,
    /// Security headers and the CSRF guard's allow list.
    pub security: Security,
    /// The Redis store, when sessions live there (for the read cache's figures).
    pub redis: Option<cloakroom_redis::RedisStore>,
    /// The store being connected in the background, if it was unreachable at start.
    pub late: Option<Arc<crate::backend::late::Late>>,
    /// The readiness check `/readyz` and `/metrics` share (one store call a second at most).
    pub store_check: Arc<ops::StoreCheck>,
    /// What `/metrics` shows (built by [`ops::registry`]; an app adds its own metrics here).
    pub metrics: Arc<cloakroom::prometheus_client::registry::Registry>,
    /// Whether `/metrics` is on the app's own port (development without `METRICS_PORT`).
    pub public_metrics: bool,
}

impl AppState {
    /// The Redis store, when sessions live there and it is connected.
    #[must_use]
    pub fn redis(&self) -> Option<cloakroom_redis::RedisStore> {
        connected_redis(self.redis.as_ref(), self.late.as_deref())
    }
}

/// The Redis store: the one opened at start, or the late one once it connected.
fn connected_redis(
    redis: Option<&cloakroom_redis::RedisStore>,
    late: Option<&crate::backend::late::Late>,
) -> Option<cloakroom_redis::RedisStore> {
    redis.cloned().or_else(|| late.and_then(|l| l.redis()))
}

pub use headers::Security;

/// The whole app: routes, session layer, CSRF guard, security headers, body limit and
/// access log.
pub fn router(state: AppState) -> Router {
    let layer = state.sessions.clone();
    let csrf = CsrfLayer::new()
        .with_trusted_origins(state.security.trusted_origins.clone())
        .with_metrics(layer.metrics());
    Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/views/{page}", get(pages::views))
        .route("/sessions", get(pages::devices))
        .route("/sessions/{key}/end", post(pages::end_device))
        .route("/sessions/end-others", post(pages::end_other_devices))
        .route("/todos", post(pages::add_todo))
        .route("/todos/{id}/done", post(pages::complete_todo))
        .route("/todos/{id}/delete", post(pages::delete_todo))
        .route("/api/login", post(api::login))
        .route("/api/logout", post(api::logout))
        .route("/api/profile", get(api::profile))
        .route("/api/visits", post(api::visits))
        .route("/api/sessions", get(api::sessions))
        .route("/api/sessions/revoke-others", post(api::revoke_others))
        .route("/api/todos", get(api::list_todos).post(api::add_todo))
        .route("/api/todos/{id}/done", post(api::complete_todo))
        .route("/api/todos/{id}", axum::routing::delete(api::delete_todo))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .merge(if state.public_metrics {
            metrics_router()
        } else {
            Router::new()
        })
        .route("/static/style.css", get(ops::stylesheet))
        .fallback(ops::not_found)
        .layer(middleware::from_fn(access_log))
        .layer(layer)
        // Outside the session layer: a refused cross-site request costs no store call.
        .layer(csrf)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            headers::security_headers,
        ))
        .with_state(state)
}

/// `/metrics` alone, for its own listener (`METRICS_PORT`).
fn metrics_router() -> Router<AppState> {
    Router::new().route("/metrics", get(ops::metrics))
}

/// The metrics listener's service: `/metrics` and nothing else (not the public port's
/// pages, not its session layer).
pub fn metrics_only(state: AppState) -> Router {
    metrics_router().with_state(state)
}

/// One log line per request, with a fingerprint of the session key, never the ID.
async fn access_log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let session = request.extensions().get::<Session>().cloned();
    let response = next.run(request).await;
    let fingerprint = match session {
        Some(s) => s.key().await.map(|k| k.fingerprint()),
        None => None,
    };
    tracing::info!(
        target: "access",
        %method,
        path,
        status = response.status().as_u16(),
        micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        session = fingerprint.as_deref().unwrap_or("-"),
    );
    response
}

/// Why a request failed, before it is rendered as JSON (API) or HTML (pages).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A session operation failed.
    #[error(transparent)]
    Session(#[from] cloakroom::SessionError),
    /// A todo operation failed.
    #[error(transparent)]
    Todo(#[from] crate::todos::TodoError),
    /// A form arrived without a valid CSRF token.
    #[error("invalid or missing CSRF token")]
    Csrf,
    /// The route needs a logged-in user; the reason the request's session ended, if it did.
    #[error("not logged in")]
    NotLoggedIn(Option<cloakroom::events::EndReason>),
    /// Nothing here.
    #[error("not found")]
    NotFound,
    /// The body is over [`MAX_BODY`].
    #[error("request body too large")]
    TooLarge,
    /// The request was well-formed HTTP but its content was refused.
    #[error("{0}")]
    BadInput(String),
}

impl AppError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Session(e) => e.status(),
            Self::Todo(TodoError::Full) => StatusCode::CONFLICT,
            Self::Todo(TodoError::Store(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Csrf => StatusCode::FORBIDDEN,
            Self::NotLoggedIn(_) => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadInput(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    fn message(&self) -> String {
        match self {
            Self::Todo(TodoError::Store(_)) => "storage unavailable, please retry".to_owned(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            // Session errors carry their own documented response (503 + Retry-After, …).
            Self::Session(e) => e.into_response(),
            other => {
                let mut body = serde_json::json!({ "error": other.message() });
                if let Self::NotLoggedIn(Some(reason)) = &other {
                    body["ended"] = reason.as_str().into();
                }
                let mut response = (other.status(), Json(body)).into_response();
                if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                }
                response
            }
        }
    }
}

/// An [`AppError`] rendered as an HTML page (for browser routes).
#[derive(Debug)]
pub struct PageError(pub AppError);

impl From<AppError> for PageError {
    fn from(e: AppError) -> Self {
        Self(e)
    }
}

impl From<cloakroom::SessionError> for PageError {
    fn from(e: cloakroom::SessionError) -> Self {
        Self(e.into())
    }
}

impl From<TodoError> for PageError {
    fn from(e: TodoError) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self.0 {
            AppError::Session(e) => e.into_response(),
            other => {
                let status = other.status();
                let body = maud::html! {
                    h1 { (status.as_u16()) }
                    p { (other.message()) }
                    p { a href="/" { "Back to the start page" } }
                };
                let title = status.canonical_reason().unwrap_or("Error");
                (status, html::page(title, body)).into_response()
            }
        }
    }
}
