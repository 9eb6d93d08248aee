//! Operational endpoints: liveness, readiness, metrics, and the stylesheet.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use cloakroom::Gauges;

use super::{AppError, AppState};

/// `GET /healthz`: the process answers. Never touches the store.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: the session store answers (through the timeout and circuit breaker).
pub async fn readyz(State(state): State<AppState>) -> Response {
    if let Some(pending) = state.late.as_ref().and_then(|l| l.pending()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            Json(json!({ "status": "starting", "pending": pending })),
        )
            .into_response();
    }
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

/// `GET /metrics`: the session layer's counters, store latency histograms, breaker state,
/// live sessions and read-cache figures, in the Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let layer = &state.sessions;
    let mut gauges = Gauges::new().with_breaker_open(layer.breaker_open());
    // Through the timeout and the breaker: a scrape during an outage answers at once.
    if let Ok(stats) = layer.ready().await {
        gauges = gauges.with_live_sessions(stats.sessions);
    }
    if let Some((hits, misses)) = state.redis().and_then(|r| r.read_cache_counts()) {
        gauges = gauges.with_cache(hits, misses);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        layer.metrics().render_prometheus_with(gauges),
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
