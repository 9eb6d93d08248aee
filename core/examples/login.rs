//! Log in and out with plain HTML forms: a new session ID at login, a flash message, a CSRF
//! token in every form and `CsrfLayer` refusing cross-site posts.
//!
//! `cargo run -p cloakroom --example login`, then open http://127.0.0.1:3000.

use axum::extract::Form;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use cloakroom::{
    CsrfLayer, KeyRing, MemoryStore, Session, SessionConfig, SessionError, SessionLayer,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct LoginForm {
    csrf: String,
    name: String,
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

/// Minimal escaping for the demo's HTML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('"', "&quot;")
}

async fn home(session: Session) -> Result<Html<String>, SessionError> {
    let flashes: String = session
        .take_flashes()
        .await?
        .iter()
        .map(|f| format!("<p class=flash>{}</p>", esc(f)))
        .collect();
    let token = esc(&session.csrf_token().await?);
    let body = match session.user().await? {
        Some(user) => format!(
            "<h1>Hello, {}</h1><form method=post action=/logout>\
             <input type=hidden name=csrf value=\"{token}\"><button>Log out</button></form>",
            esc(&user)
        ),
        None => format!(
            "<h1>Log in</h1><form method=post action=/login>\
             <input type=hidden name=csrf value=\"{token}\">\
             <input name=name placeholder=name><button>Log in</button></form>"
        ),
    };
    Ok(Html(format!("{flashes}{body}")))
}

async fn login(session: Session, Form(form): Form<LoginForm>) -> Result<Response, SessionError> {
    if !session.verify_csrf_token(&form.csrf).await? {
        return Ok(StatusCode::FORBIDDEN.into_response());
    }
    let name = form.name.trim();
    if name.is_empty() || name.len() > 64 {
        session.flash("Please type a name.").await?;
    } else {
        // A new ID and a new CSRF token: whatever was seen before login is worth nothing.
        session.set_user(name).await?;
        session.flash(format!("Welcome, {name}!")).await?;
    }
    Ok(Redirect::to("/").into_response())
}

async fn logout(session: Session, Form(form): Form<CsrfForm>) -> Result<Response, SessionError> {
    if !session.verify_csrf_token(&form.csrf).await? {
        return Ok(StatusCode::FORBIDDEN.into_response());
    }
    session.destroy().await;
    // Written to a fresh session: the old one is gone.
    session.flash("You have been logged out.").await?;
    Ok(Redirect::to("/").into_response())
}

/// The app (a function, so the example's test drives the same router).
pub fn app() -> Router {
    let keys = KeyRing::generate().expect("OS randomness");
    let config = SessionConfig::builder(keys).build().expect("valid config");
    Router::new()
        .route("/", get(home))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .layer(CsrfLayer::new())
        .layer(SessionLayer::new(MemoryStore::default(), config))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app()).await
}
