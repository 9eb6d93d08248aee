//! The upper bound: the same routes with no sessions at all.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

static VISITS: AtomicU64 = AtomicU64::new(0);

async fn login() -> Json<Value> {
    Json(json!({ "user": "alice" }))
}

async fn profile() -> Json<Value> {
    Json(json!({ "user_id": "alice", "login_time": 1_763_000_000_000u64 }))
}

async fn visits() -> Json<Value> {
    Json(json!({ "visits": VISITS.fetch_add(1, Ordering::Relaxed) + 1 }))
}

/// A route that never uses the session: with a cookie it must cost no store call.
async fn untouched() -> &'static str {
    "ok"
}

#[tokio::main]
async fn main() {
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let app = Router::new()
        .route("/api/login", post(login))
        .route("/api/profile", get(profile))
        .route("/api/visits", post(visits))
        .route("/api/untouched", get(untouched));
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    axum::serve(listener, app).await.unwrap();
}
