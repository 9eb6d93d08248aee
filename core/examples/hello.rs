//! The five-line layer: a visit counter kept in a server-side session.
//!
//! `cargo run -p cloakroom --example hello`, then open http://127.0.0.1:3000 and reload.

use axum::{routing::get, Router};
use cloakroom::{KeyRing, MemoryStore, Session, SessionConfig, SessionError, SessionLayer};

async fn visits(session: Session) -> Result<String, SessionError> {
    let n = session.increment("visits", 1).await?;
    Ok(format!("you have been here {n} times"))
}

/// The app (a function, so the example's test drives the same router).
pub fn app() -> Router {
    // A fresh key each start: sessions do not outlive the process here. Use
    // KeyRing::from_comma_separated(&std::env::var("SESSION_SECRET")?) in real apps.
    let keys = KeyRing::generate().expect("OS randomness");
    // The defaults are the production ones (a Secure `__Host-sid` cookie): browsers keep
    // Secure cookies from http://localhost too, so the demo needs no exception.
    let config = SessionConfig::builder(keys).build().expect("valid config");
    Router::new()
        .route("/", get(visits))
        .layer(SessionLayer::new(MemoryStore::default(), config))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app()).await
}
