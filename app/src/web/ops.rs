//! Operational endpoints: liveness, readiness, metrics, and the stylesheet.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{AppError, AppState};

/// `GET /healthz`: the process answers. Never touches the store.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: the session store answers (through the timeout and circuit breaker).
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.sessions.ready().await {
        Ok(stats) => Json(json!({ "status": "ready", "sessions": stats.sessions })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                Json(json!({ "status": "unavailable", "error": "session store unreachable" })),
            )
                .into_response()
        }
    }
}

/// `GET /metrics`: the session layer's counters, Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.sessions.metrics().render_prometheus(),
    )
        .into_response()
}

/// `GET /static/style.css`.
pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/style.css"),
    )
        .into_response()
}

/// Anything else.
pub async fn not_found() -> AppError {
    AppError::NotFound
}
