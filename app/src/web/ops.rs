//! Operational endpoints: liveness, readiness, metrics, and the stylesheet.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use cloakroom::prometheus_client::{self, registry::Registry};
use cloakroom::{Gauges, StoreStats};

use super::{AppError, AppState};

/// `GET /healthz`: the process answers. Never touches the store.
pub async fn healthz() -> &'static str {
    "ok"
}

/// The store's answer to a readiness check, shared by `/readyz` and `/metrics` and asked at
/// most once a second, however often probes and scrapes come: a flood of them costs the
/// store one cheap call per second.
#[derive(Default)]
pub struct StoreCheck {
    last: tokio::sync::Mutex<Option<(Instant, Result<StoreStats, String>)>>,
    /// The live sessions of the last answer, for a scrape to read without waiting.
    sessions: std::sync::Mutex<Option<u64>>,
}

impl StoreCheck {
    /// How long one answer is reused.
    pub const INTERVAL: Duration = Duration::from_secs(1);

    /// The last answer if it is recent, else a fresh one (through the timeout and breaker).
    pub async fn get(&self, layer: &cloakroom::SessionLayer) -> Result<StoreStats, String> {
        // Held across the call: concurrent probes wait for the one store call in flight.
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = last.as_ref() {
            if at.elapsed() < Self::INTERVAL {
                return answer.clone();
            }
        }
        let answer = layer.ready().await.map_err(|e| e.to_string());
        *self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            answer.as_ref().ok().map(|stats| stats.sessions);
        *last = Some((Instant::now(), answer.clone()));
        answer
    }

    /// The live sessions the last answer counted, if it was an answer.
    pub fn sessions(&self) -> Option<u64> {
        *self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
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
    match state.store_check.get(&state.sessions).await {
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

/// The app's metrics registry: the session layer's metrics with the breaker state, live
/// sessions from the shared store check, and the read cache's figures when there is one.
pub fn registry(state: &AppState) -> Registry {
    let mut registry = Registry::default();
    let check = state.store_check.clone();
    // Not the state itself: it will hold this registry.
    let (redis, late) = (state.redis.clone(), state.late.clone());
    state
        .sessions
        .register_metrics_with(&mut registry, move || {
            let mut gauges = Gauges::new();
            if let Some(n) = check.sessions() {
                gauges = gauges.with_live_sessions(n);
            }
            if let Some(store) = super::connected_redis(redis.as_ref(), late.as_deref()) {
                if let Some((hits, misses)) = store.read_cache_counts() {
                    gauges = gauges.with_cache(hits, misses);
                }
                if let Some((entries, bytes)) = store.read_cache_size() {
                    gauges = gauges.with_cache_size(entries as u64, bytes as u64);
                }
            }
            gauges
        });
    registry
}

/// `GET /metrics`: the app's registry ([`registry`]) in the OpenMetrics text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    // Refreshes the live-session count at most once a second, through the timeout and the
    // breaker: a scrape during an outage answers at once, without it.
    let _ = state.store_check.get(&state.sessions).await;
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &state.metrics) {
        tracing::error!(error = %e, "cannot encode the metrics");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cloakroom::testing::{test_config, CountingStore};
    use cloakroom::{MemoryStore, SessionLayer};

    use super::StoreCheck;

    /// A flood of probes and scrapes costs the store one call per interval.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn probes_share_one_store_call_per_interval() {
        let store = Arc::new(CountingStore::new(Arc::new(MemoryStore::default())));
        let layer = SessionLayer::from_arc(store.clone(), test_config().build().unwrap());
        let check = Arc::new(StoreCheck::default());
        let probes: Vec<_> = (0..200)
            .map(|_| {
                let (check, layer) = (check.clone(), layer.clone());
                tokio::spawn(async move { check.get(&layer).await })
            })
            .collect();
        for probe in probes {
            assert!(probe.await.unwrap().is_ok());
        }
        let (calls, _) = store.take();
        assert_eq!(calls, 1, "200 probes within the interval, one store call");
        tokio::time::sleep(StoreCheck::INTERVAL).await;
        check.get(&layer).await.unwrap();
        assert_eq!(store.take().0, 1, "a new interval, a new call");
    }
}
