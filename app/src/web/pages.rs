//! The HTML pages: they work without JavaScript, and every form carries a CSRF token.

use axum::extract::{Form, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use cloakroom::Session;
use serde::Deserialize;

use maud::html;

use super::html::{csrf_field, flashes, page};
use super::{csrf, AppError, AppState, PageError};
use crate::identity::{self, Login};
use crate::todos::validate_title;

type PageResult = Result<Response, PageError>;

/// A form that only carries its CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

/// The login form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    csrf: Option<String>,
    username: Option<String>,
    /// The "remember me" checkbox: present (`on`) when ticked.
    remember: Option<String>,
}

/// The new-todo form.
#[derive(Debug, Deserialize)]
pub struct TodoForm {
    csrf: Option<String>,
    title: Option<String>,
}

async fn require_csrf(session: &Session, submitted: Option<&str>) -> Result<(), AppError> {
    if csrf::check(session, submitted).await? {
        Ok(())
    } else {
        Err(AppError::Csrf)
    }
}

/// The one sentence the home page says about why a user was signed out.
fn signed_out_because(reason: cloakroom::events::EndReason) -> &'static str {
    use cloakroom::events::EndReason;
    match reason {
        EndReason::LoggedOut => "You were signed out because you logged out.",
        EndReason::Revoked => {
            "You were signed out because you ended this session from another device."
        }
        EndReason::RevokedByOperator => "You were signed out by an administrator.",
        EndReason::Replaced => {
            "You were signed out because you signed in on too many devices; this was the oldest."
        }
        EndReason::BindingMismatch => {
            "You were signed out because this session was used from another browser or network."
        }
        EndReason::ExpiredIdle => "You were signed out because you were inactive for too long.",
        EndReason::ExpiredAbsolute => {
            "You were signed out because your session reached its maximum lifetime."
        }
        _ => "You were signed out because your session expired.",
    }
}

/// `GET /`: who you are, your visits, flashes and todos.
pub async fn home(State(state): State<AppState>, session: Session) -> PageResult {
    let Some(user) = session.user().await? else {
        let notes = flashes(&session.take_flashes().await?);
        let why = session.ended().await?.map(signed_out_because);
        let body = html! {
            (notes)
            @if let Some(why) = why {
                p.notice #ended { (why) }
            }
            h1 { "You are not logged in" }
            p { a.button href="/login" { "Log in" } }
        };
        return Ok(page("Welcome", body).into_response());
    };
    if session.is_degraded().await {
        // The store is down and this page comes from the fallback ticket: who you are, and
        // nothing that would need a write.
        let body = html! {
            h1 { "Logged in as " span #user { (user) } }
            p.notice #degraded {
                "Your session is read-only for a moment: the session store is unavailable. \
                 Visits, todos and logins are paused; nothing you see is lost."
            }
        };
        return Ok(page("Read only", body).into_response());
    }
    let notes = flashes(&session.take_flashes().await?);
    let token = csrf::token(&session).await?;
    let visits = session.increment("visits", 1).await?;
    let todos = state.todos.list(&user).await?;
    let csrf = csrf_field(&token);
    let body = html! {
        (notes)
        h1 { "Logged in as " span #user { (user) } }
        p.visits { "You have visited this page " strong #visits { (visits) } " times." }
        section {
            h2 { "Your todos" }
            @if todos.is_empty() {
                p.empty { "Nothing to do. Add something below." }
            } @else {
                ul.todos {
                    @for todo in &todos {
                        li.done[todo.done] {
                            span.title { (todo.title) }
                            @if !todo.done {
                                form method="post" action={ "/todos/" (todo.id) "/done" } {
                                    (csrf) button { "Done" }
                                }
                            }
                            form method="post" action={ "/todos/" (todo.id) "/delete" } {
                                (csrf) button.secondary { "Delete" }
                            }
                        }
                    }
                }
            }
            form.add method="post" action="/todos" {
                (csrf)
                label for="title" { "New todo" } " "
                input #title name="title" maxlength="200" required;
                button { "Add" }
            }
        }
        p { a #devices href="/sessions" { "Your sessions" } }
        form.logout method="post" action="/logout" { (csrf) button.secondary { "Log out" } }
    };
    Ok(page("Home", body).into_response())
}

/// `GET /sessions`: "Your sessions": every session of the user, when it was created and last
/// seen, its browser, which one is this one; a button to end each other one, and one to end
/// all others. Plain forms with CSRF tokens: no JavaScript needed.
pub async fn devices(session: Session) -> PageResult {
    logged_in(&session).await?;
    let notes = flashes(&session.take_flashes().await?);
    let token = csrf::token(&session).await?;
    let csrf = csrf_field(&token);
    let list = session.user_sessions().await?;
    let agent = |s: &cloakroom::SessionInfo| {
        s.fields
            .get("user_agent")
            .and_then(|v| serde_json::from_str::<String>(v).ok())
            .unwrap_or_else(|| "unknown browser".into())
    };
    let body = html! {
        (notes)
        h1 { "Your sessions" }
        table.sessions {
            thead { tr { th { "Browser" } th { "Logged in" } th { "Last seen" } th {} } }
            tbody {
                @for s in &list {
                    tr data-key=(s.key) {
                        td.agent { (agent(s)) }
                        td { (identity::rfc3339(s.created)) }
                        td { (identity::rfc3339(s.last_seen)) }
                        td {
                            @if s.current {
                                strong.current { "This device" }
                            } @else {
                                form method="post" action={ "/sessions/" (s.key) "/end" } {
                                    (csrf) button.secondary { "End" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if list.len() > 1 {
            form method="post" action="/sessions/end-others" {
                (csrf) button { "End all other sessions" }
            }
        }
        p { a href="/" { "Back" } }
    };
    Ok(page("Your sessions", body).into_response())
}

/// `POST /sessions/{key}/end`: ends one of the user's other sessions.
pub async fn end_device(
    session: Session,
    Path(key): Path<String>,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    require_csrf(&session, form.csrf.as_deref()).await?;
    logged_in(&session).await?;
    let note = if session.end_session(&key).await? {
        "That session has been logged out."
    } else {
        "That session had already ended."
    };
    session.flash(note).await?;
    Ok(Redirect::to("/sessions").into_response())
}

/// `POST /sessions/end-others`: log out everywhere else.
pub async fn end_other_devices(session: Session, Form(form): Form<CsrfForm>) -> PageResult {
    require_csrf(&session, form.csrf.as_deref()).await?;
    logged_in(&session).await?;
    let n = session.revoke_other_sessions().await?;
    session
        .flash(format!("Logged out {n} other session(s)."))
        .await?;
    Ok(Redirect::to("/sessions").into_response())
}

/// `GET /login`: the form, with the last attempt's error and input.
pub async fn login_form(session: Session) -> PageResult {
    let token = csrf::token(&session).await?;
    let error: Option<String> = session.remove("login_error").await?;
    let typed: Option<String> = session.remove("login_typed").await?;
    let body = html! {
        h1 { "Log in" }
        @if let Some(error) = error { p.error role="alert" { (error) } }
        form method="post" action="/login" {
            (csrf_field(&token))
            label for="username" { "Username" } " "
            input #username name="username" value=(typed.unwrap_or_default())
                maxlength=(identity::MAX_USERNAME) autofocus;
            label.check { input #remember type="checkbox" name="remember"; "Remember me" }
            button { "Log in" }
        }
    };
    Ok(page("Log in", body).into_response())
}

/// `POST /login`: cycle the ID, remember the user, welcome them.
pub async fn login(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> PageResult {
    require_csrf(&session, form.csrf.as_deref()).await?;
    let typed = form.username.unwrap_or_default();
    match identity::validate_username(&typed) {
        Ok(name) => {
            // Logging in replaces the CSRF token too (the library does it with the user).
            let login =
                Login::new(&name, &headers).remembered(form.remember.is_some(), &state.sessions);
            identity::log_in(&session, &login).await?;
            session.flash(format!("Welcome, {name}!")).await?;
            Ok(Redirect::to("/").into_response())
        }
        Err(e) => {
            let kept: String = typed.chars().take(identity::MAX_USERNAME).collect();
            session.insert("login_error", e.to_string()).await?;
            session.insert("login_typed", kept).await?;
            Ok(Redirect::to("/login").into_response())
        }
    }
}

/// `POST /logout`: end the session everywhere it is stored, say goodbye.
pub async fn logout(session: Session, Form(form): Form<CsrfForm>) -> PageResult {
    require_csrf(&session, form.csrf.as_deref()).await?;
    session.destroy().await;
    session.flash("You have been logged out.").await?;
    // Not "cookies": the goodbye flash lives in the new session this response starts.
    Ok((
        [(super::headers::CLEAR_SITE_DATA, "\"cache\", \"storage\"")],
        Redirect::to("/"),
    )
        .into_response())
}

/// The longest page name with a view counter.
pub const MAX_PAGE_NAME: usize = 64;

/// Whether `name` can have a view counter: 1 to [`MAX_PAGE_NAME`] letters, digits, `-`, `_`
/// or `.`.
fn is_page_name(name: &str) -> bool {
    (1..=MAX_PAGE_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `GET /views/{page}`: a per-page counter, one atomic increment. Any page name counts; each
/// counter is a field of the visitor's session, so the session's field and byte limits bound
/// how many one client can make: past them the answer is `413` and the session (its other
/// counters included) keeps working.
pub async fn views(session: Session, Path(name): Path<String>) -> PageResult {
    if !is_page_name(&name) {
        return Err(AppError::NotFound.into());
    }
    let n = session.increment(&format!("views:{name}"), 1).await?;
    let times = if n == 1 { "time" } else { "times" };
    Ok(format!("you viewed this page {n} {times}").into_response())
}

async fn logged_in(session: &Session) -> Result<String, AppError> {
    match session.user().await? {
        Some(user) => Ok(user),
        None => Err(AppError::NotLoggedIn(session.ended().await?)),
    }
}

/// `POST /todos`: add a todo from the form.
pub async fn add_todo(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<TodoForm>,
) -> PageResult {
    require_csrf(&session, form.csrf.as_deref()).await?;
    let user = logged_in(&session).await?;
    match validate_title(form.title.as_deref().unwrap_or_default()) {
        Ok(title) => {
            state.todos.add(&user, &title).await?;
        }
        Err(e) => {
            session
                .flash(format!("Could not add the todo: {e}."))
                .await?
        }
    }
    Ok(Redirect::to("/").into_response())
}

/// Which change a todo form asks for.
#[derive(Clone, Copy)]
enum TodoAction {
    Complete,
    Delete,
}

/// The shared path of the per-todo forms: CSRF, login, the change, back home.
async fn change_todo(
    state: &AppState,
    session: &Session,
    id: u64,
    csrf: Option<&str>,
    action: TodoAction,
) -> PageResult {
    require_csrf(session, csrf).await?;
    let user = logged_in(session).await?;
    let found = match action {
        TodoAction::Complete => state.todos.complete(&user, id).await?,
        TodoAction::Delete => state.todos.delete(&user, id).await?,
    };
    if !found {
        return Err(AppError::NotFound.into());
    }
    Ok(Redirect::to("/").into_response())
}

/// `POST /todos/{id}/done`.
pub async fn complete_todo(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<u64>,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    change_todo(
        &state,
        &session,
        id,
        form.csrf.as_deref(),
        TodoAction::Complete,
    )
    .await
}

/// `POST /todos/{id}/delete`.
pub async fn delete_todo(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<u64>,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    change_todo(
        &state,
        &session,
        id,
        form.csrf.as_deref(),
        TodoAction::Delete,
    )
    .await
}
