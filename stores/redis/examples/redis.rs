//! Sessions in Redis/Valkey, shared by every instance of the app: a visit counter, a login
//! and "log out everywhere", with the secret and the URL from the environment as the
//! managed-Redis tutorials set them.
//!
//! ```sh
//! REDIS_URL=redis://127.0.0.1:6379 SESSION_SECRET=$(openssl rand -base64 48) \
//!   cargo run -p cloakroom-redis --example redis
//! ```
//! then open http://127.0.0.1:3000 (start a second copy with `PORT=3001` to see both share
//! the sessions).

use axum::extract::Path;
use axum::routing::{get, post};
use axum::Router;
use cloakroom::{KeyRing, Session, SessionConfig, SessionError, SessionLayer};
use cloakroom_redis::{RedisConfig, RedisStore};

async fn visits(session: Session) -> Result<String, SessionError> {
    let n = session.increment("visits", 1).await?;
    let user = session.user().await?.unwrap_or_else(|| "nobody".into());
    Ok(format!("{user}: visit {n}"))
}

async fn login(session: Session, Path(user): Path<String>) -> Result<String, SessionError> {
    // A new session ID and the user's entry in the per-user index, in one Redis script.
    session.set_user(&user).await?;
    Ok(format!("logged in as {user}"))
}

async fn everywhere(session: Session) -> Result<String, SessionError> {
    let ended = session.revoke_other_sessions().await?;
    Ok(format!("ended {ended} other session(s)"))
}

/// The app over `store` (a function, so a test can drive the same router).
pub fn app(store: RedisStore, keys: KeyRing) -> Router {
    let config = SessionConfig::builder(keys).build().expect("valid config");
    Router::new()
        .route("/", get(visits))
        .route("/login/{user}", post(login))
        .route("/logout-everywhere", post(everywhere))
        .layer(SessionLayer::new(store, config))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    // Comma-separated keys: the first signs, all verify (rotation without logging anyone out).
    let keys = match std::env::var("SESSION_SECRET") {
        Ok(secret) => KeyRing::from_comma_separated(&secret)?,
        Err(_) => {
            eprintln!("SESSION_SECRET unset: a random key, so sessions end with this process");
            KeyRing::generate()?
        }
    };
    let store = RedisStore::connect(RedisConfig::new(url)).await?;
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("http://127.0.0.1:{port}");
    axum::serve(listener, app(store, keys)).await?;
    Ok(())
}
