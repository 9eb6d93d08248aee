//! actix-session with its Redis store, serving the bench routes the way its examples do.

use actix_session::storage::RedisSessionStore;
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::Key;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde::Deserialize;
use serde_json::json;

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

async fn login(session: Session, q: web::Query<Login>) -> HttpResponse {
    session.renew();
    if session.insert("user", &q.user).is_err() || session.insert("login_time", now_ms()).is_err() {
        return HttpResponse::InternalServerError().finish();
    }
    HttpResponse::Ok().json(json!({ "user": q.user }))
}

async fn profile(session: Session) -> HttpResponse {
    match session.get::<String>("user") {
        Ok(Some(user)) => {
            let login_time: Option<u64> = session.get("login_time").ok().flatten();
            HttpResponse::Ok().json(json!({ "user_id": user, "login_time": login_time }))
        }
        Ok(None) => HttpResponse::Unauthorized().finish(),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

async fn visits(session: Session) -> HttpResponse {
    let n = session.get::<i64>("visits").ok().flatten().unwrap_or(0) + 1;
    if session.insert("visits", n).is_err() {
        return HttpResponse::InternalServerError().finish();
    }
    HttpResponse::Ok().json(json!({ "visits": n }))
}

/// A route that never uses the session: with a cookie it should cost no store call.
async fn untouched() -> &'static str {
    "ok"
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let url = std::env::var("REDIS_URL").expect("REDIS_URL");
    let store = RedisSessionStore::new(url).await.expect("redis");
    let key = Key::from(&[7u8; 64]);
    HttpServer::new(move || {
        App::new()
            .wrap(
                SessionMiddleware::builder(store.clone(), key.clone())
                    .cookie_secure(false)
                    .build(),
            )
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
