//! actix-web's own upper bound: the bench routes with no sessions, served as the
//! actix-session server serves them (two workers), so that actix-session's cost per request
//! is measured above its framework's and not above axum's.

use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::json;

static VISITS: AtomicU64 = AtomicU64::new(0);

async fn login() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "user": "alice" }))
}

async fn profile() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "user_id": "alice", "login_time": 1_763_000_000_000u64 }))
}

async fn visits() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "visits": VISITS.fetch_add(1, Ordering::Relaxed) + 1 }))
}

async fn untouched() -> &'static str {
    "ok"
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    HttpServer::new(|| {
        App::new()
            .route("/api/login", web::post().to(login))
            .route("/api/profile", web::get().to(profile))
            .route("/api/visits", web::post().to(visits))
            .route("/api/untouched", web::get().to(untouched))
    })
    .workers(2)
    .bind(("127.0.0.1", port))?
    .run()
    .await
}
