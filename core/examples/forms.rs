//! Form state across pages with plain forms (no JavaScript): a two-step sign-up keeps what
//! was typed in step one in the session, so that going back shows it again.
//!
//! `cargo run -p cloakroom --example forms`, then open http://127.0.0.1:3000.

use axum::extract::Form;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use cloakroom::{KeyRing, MemoryStore, Session, SessionConfig, SessionError, SessionLayer};
use serde::{Deserialize, Serialize};

/// What the sign-up has collected so far.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Draft {
    email: String,
    plan: String,
}

#[derive(Deserialize)]
struct Step {
    csrf: String,
    email: Option<String>,
    plan: Option<String>,
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('"', "&quot;")
}

async fn draft(session: &Session) -> Result<Draft, SessionError> {
    Ok(session.get::<Draft>("signup").await?.unwrap_or_default())
}

async fn step_one(session: Session) -> Result<Html<String>, SessionError> {
    let d = draft(&session).await?;
    let token = esc(&session.csrf_token().await?);
    Ok(Html(format!(
        "<h1>Step 1</h1><form method=post action=/>\
         <input type=hidden name=csrf value=\"{token}\">\
         <input name=email value=\"{}\"><button>Next</button></form>",
        esc(&d.email)
    )))
}

async fn save_one(session: Session, Form(step): Form<Step>) -> Result<Response, SessionError> {
    if !session.verify_csrf_token(&step.csrf).await? {
        return Ok(Redirect::to("/").into_response());
    }
    let mut d = draft(&session).await?;
    d.email = step.email.unwrap_or_default().chars().take(200).collect();
    session.insert("signup", &d).await?;
    Ok(Redirect::to("/plan").into_response())
}

async fn step_two(session: Session) -> Result<Html<String>, SessionError> {
    let d = draft(&session).await?;
    let token = esc(&session.csrf_token().await?);
    Ok(Html(format!(
        "<h1>Step 2 for {}</h1><form method=post action=/plan>\
         <input type=hidden name=csrf value=\"{token}\">\
         <input name=plan value=\"{}\"><button>Finish</button></form><a href=/>Back</a>",
        esc(&d.email),
        esc(&d.plan)
    )))
}

async fn save_two(session: Session, Form(step): Form<Step>) -> Result<Response, SessionError> {
    if !session.verify_csrf_token(&step.csrf).await? {
        return Ok(Redirect::to("/plan").into_response());
    }
    let mut d = draft(&session).await?;
    d.plan = step.plan.unwrap_or_default().chars().take(50).collect();
    // Done: the draft leaves the session, a flash says so.
    session.remove_value("signup").await?;
    session
        .flash(format!("Signed up {} on the {} plan.", d.email, d.plan))
        .await?;
    Ok(Redirect::to("/done").into_response())
}

async fn done(session: Session) -> Result<Html<String>, SessionError> {
    Ok(Html(session.take_flashes().await?.join("<br>")))
}

/// The app (a function, so the example's test drives the same router).
pub fn app() -> Router {
    let keys = KeyRing::generate().expect("OS randomness");
    let config = SessionConfig::builder(keys).build().expect("valid config");
    Router::new()
        .route("/", get(step_one).post(save_one))
        .route("/plan", get(step_two).post(save_two))
        .route("/done", get(done))
        .layer(SessionLayer::new(MemoryStore::default(), config))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app()).await
}
