//! tower-sessions with its Redis store (fred), serving the bench routes the way its examples
//! do: read the value, change it, insert it back.

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tower_sessions::{Expiry, Session, SessionManagerLayer};
use tower_sessions_redis_store::fred::prelude::*;
use tower_sessions_redis_store::RedisStore;

#[derive(Deserialize)]
struct Login {
    user: String,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn fail(e: impl std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
}

async fn login(session: Session, Query(q): Query<Login>) -> Response {
    if let Err(e) = session.cycle_id().await {
        return fail(e);
    }
    if let Err(e) = session.insert("user", &q.user).await {
        return fail(e);
    }
    if let Err(e) = session.insert("login_time", now_ms()).await {
        return fail(e);
    }
    Json(json!({ "user": q.user })).into_response()
}

async fn profile(session: Session) -> Response {
    match session.get::<String>("user").await {
        Ok(Some(user)) => {
            let login_time: Option<u64> = session.get("login_time").await.ok().flatten();
            Json(json!({ "user_id": user, "login_time": login_time })).into_response()
        }
        Ok(None) => StatusCode::UNAUTHORIZED.into_response(),
        Err(e) => fail(e),
    }
}

async fn visits(session: Session) -> Response {
    let n: i64 = match session.get("visits").await {
        Ok(n) => n.unwrap_or(0) + 1,
        Err(e) => return fail(e),
    };
    if let Err(e) = session.insert("visits", n).await {
        return fail(e);
    }
    Json(json!({ "visits": n })).into_response()
}

/// A route that never uses the session: with a cookie it must cost no store call.
async fn untouched() -> &'static str {
    "ok"
}

#[tokio::main]
async fn main() {
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let url = std::env::var("REDIS_URL").expect("REDIS_URL");
    let config = Config::from_url(&url).expect("redis url");
    let pool = Pool::new(config, None, None, None, 6).expect("pool");
    let _conn = pool.connect();
    pool.wait_for_connect().await.expect("connect");
    let store = RedisStore::new(pool);
    let layer = SessionManagerLayer::new(store)
        .with_secure(false)
        .with_expiry(Expiry::OnInactivity(time::Duration::hours(24)));
    let app = Router::new()
        .route("/api/login", post(login))
        .route("/api/profile", get(profile))
        .route("/api/visits", post(visits))
        .route("/api/untouched", get(untouched))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    axum::serve(listener, app).await.unwrap();
}
