//! Cloakroom on Redis, serving the bench routes.

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cloakroom::{now_millis, KeyRing, Session, SessionConfig, SessionError, SessionLayer};
use cloakroom_redis::{RedisConfig, RedisStore};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Login {
    user: String,
}

async fn login(session: Session, Query(q): Query<Login>) -> Result<Response, SessionError> {
    session.set_user(&q.user).await?;
    session.insert("login_time", now_millis()).await?;
    Ok(Json(json!({ "user": q.user })).into_response())
}

async fn profile(session: Session) -> Result<Response, SessionError> {
    let Some(user) = session.user().await? else {
        return Ok(StatusCode::UNAUTHORIZED.into_response());
    };
    let login_time: Option<u64> = session.get("login_time").await?;
    Ok(Json(json!({ "user_id": user, "login_time": login_time })).into_response())
}

async fn visits(session: Session) -> Result<Response, SessionError> {
    let n = session.increment("visits", 1).await?;
    Ok(Json(json!({ "visits": n })).into_response())
}

/// A route that never uses the session: with a cookie it must cost no store call.
async fn untouched() -> &'static str {
    "ok"
}

#[tokio::main]
async fn main() {
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let url = std::env::var("REDIS_URL").expect("REDIS_URL");
    // STORE=memory isolates the layer's own cost from the Redis client's (for profiling).
    let store: std::sync::Arc<dyn cloakroom::SessionStore> =
        if std::env::var("STORE").as_deref() == Ok("memory") {
            std::sync::Arc::new(cloakroom::MemoryStore::default())
        } else {
            // The defaults (the read cache kept coherent by CLIENT TRACKING); READ_CACHE=0:
            // strict reads, every read asks Redis.
            let cached = std::env::var("READ_CACHE").as_deref() != Ok("0");
            let config = RedisConfig::new(url).with_read_cache(cached);
            std::sync::Arc::new(RedisStore::connect(config).await.expect("redis"))
        };
    let keys =
        KeyRing::from_comma_separated("bench-secret-bench-secret-bench-secret-0001").unwrap();
    let mut config = SessionConfig::builder(keys).with_secure(false);
    // FALLBACK=1: the fallback failure policy, its ticket carrying the login time.
    if std::env::var("FALLBACK").as_deref() == Ok("1") {
        config = config
            .with_failure_policy(cloakroom::FailurePolicy::Fallback)
            .with_fallback_fields(["login_time"]);
    }
    let config = config.build().unwrap();
    let app = Router::new()
        .route("/api/login", post(login))
        .route("/api/profile", get(profile))
        .route("/api/visits", post(visits))
        .route("/api/untouched", get(untouched))
        .layer(SessionLayer::from_arc(store, config));
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    axum::serve(listener, app).await.unwrap();
}
