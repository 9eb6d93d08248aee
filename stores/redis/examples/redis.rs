//! Sessions in Redis or Valkey: any number of app instances share them.
//!
//! `REDIS_URL=redis://127.0.0.1:6379 cargo run -p cloakroom-redis --example redis`
//! (also `rediss://`, `redis+sentinel://host:26379/mymaster`, or any node of a cluster), then
//! open http://127.0.0.1:3000 from two browsers.

use axum::{routing::get, Router};
use cloakroom::{KeyRing, Session, SessionConfig, SessionError, SessionLayer};
use cloakroom_redis::{RedisConfig, RedisStore};

async fn visits(session: Session) -> Result<String, SessionError> {
    let n = session.increment("visits", 1).await?;
    Ok(format!("you have been here {n} times"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    // A wrong URL, password or certificate fails here, with a message saying which.
    let store =
        RedisStore::connect(RedisConfig::new(url).with_password(std::env::var("REDIS_AUTH").ok()))
            .await?;
    // Every instance must share the key ring: SESSION_SECRET, comma-separated, first signs.
    let keys = match std::env::var("SESSION_SECRET") {
        Ok(secret) => KeyRing::from_comma_separated(&secret)?,
        Err(_) => KeyRing::generate()?,
    };
    let config = SessionConfig::builder(keys).with_secure(false).build()?;
    let app = Router::new()
        .route("/", get(visits))
        .layer(SessionLayer::new(store, config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app).await?;
    Ok(())
}
