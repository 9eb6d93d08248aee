//! The JSON API. Bodies must be `application/json` (a cross-site form cannot send that
//! without a CORS preflight, which is this API's CSRF defence).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cloakroom::Session;
use serde::Deserialize;
use serde_json::json;

use super::{AppError, AppState};
use crate::identity::{self, rfc3339, Login, UsernameError};
use crate::todos::validate_title;

type ApiResult = Result<Response, AppError>;

/// `POST /api/login` body.
#[derive(Debug, Deserialize)]
pub struct LoginBody {
    username: Option<String>,
    /// "Remember me": a longer session and a persistent cookie.
    #[serde(default)]
    remember: bool,
}

/// `POST /api/todos` body.
#[derive(Debug, Deserialize)]
pub struct TodoBody {
    title: Option<String>,
}

fn bad_json(rejection: &JsonRejection) -> AppError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return AppError::TooLarge;
    }
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            AppError::BadInput("expected Content-Type: application/json".into())
        }
        _ => AppError::BadInput("malformed JSON body".into()),
    }
}

async fn user(session: &Session) -> Result<String, AppError> {
    match session.user().await? {
        Some(user) => Ok(user),
        None => Err(AppError::NotLoggedIn(session.ended().await?)),
    }
}

/// `POST /api/login` → `{"status":"logged in","user":…}`.
pub async fn login(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    body: Result<Json<LoginBody>, JsonRejection>,
) -> ApiResult {
    let (name, remember) = match body {
        Ok(Json(body)) => (body.username.unwrap_or_default(), body.remember),
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(bad_json(&r)),
        Err(r @ JsonRejection::MissingJsonContentType(_)) => return Err(bad_json(&r)),
        // Malformed JSON: the name is missing as far as the client can tell.
        Err(_) => (String::new(), false),
    };
    let name = identity::validate_username(&name).map_err(|e| match e {
        UsernameError::Empty => AppError::BadInput("username required".into()),
        other => AppError::BadInput(other.to_string()),
    })?;
    let login = Login::new(&name, &headers).remembered(remember, &state.sessions);
    identity::log_in(&session, &login).await?;
    Ok(Json(json!({ "status": "logged in", "user": name })).into_response())
}

/// `GET /api/profile` → `{"user_id":…,"login_time":…}` or 401.
pub async fn profile(session: Session) -> ApiResult {
    let user = user(&session).await?;
    let login_time: Option<String> = session.get(identity::LOGIN_TIME).await?;
    let mut body = json!({ "user_id": user, "login_time": login_time });
    if session.is_degraded().await {
        // Served from the fallback ticket while the store is down: read only.
        body["degraded"] = json!(true);
    }
    Ok(Json(body).into_response())
}

/// `POST /api/logout` → `{"status":"logged out"}`, and the browser told to drop what it
/// cached or stored for this site.
pub async fn logout(session: Session) -> ApiResult {
    session.destroy().await;
    Ok((
        [(
            super::headers::CLEAR_SITE_DATA,
            "\"cache\", \"cookies\", \"storage\"",
        )],
        Json(json!({ "status": "logged out" })),
    )
        .into_response())
}

/// `POST /api/visits` → `{"visits":N}`, one atomic increment.
pub async fn visits(session: Session) -> ApiResult {
    let n = session.increment("visits", 1).await?;
    Ok(Json(json!({ "visits": n })).into_response())
}

/// `GET /api/sessions`: the caller's sessions, the current one marked.
pub async fn sessions(session: Session) -> ApiResult {
    user(&session).await?;
    let list: Vec<serde_json::Value> = session
        .user_sessions()
        .await?
        .into_iter()
        .map(|s| {
            let agent = s
                .fields
                .get("user_agent")
                .and_then(|v| serde_json::from_str::<String>(v).ok());
            json!({
                "id": s.key,
                "created": rfc3339(s.created),
                "last_seen": rfc3339(s.last_seen),
                "expires": rfc3339(s.expires),
                "user_agent": agent,
                "current": s.current,
            })
        })
        .collect();
    Ok(Json(json!({ "sessions": list })).into_response())
}

/// `POST /api/sessions/revoke-others`: log out everywhere else.
pub async fn revoke_others(session: Session) -> ApiResult {
    user(&session).await?;
    let revoked = session.revoke_other_sessions().await?;
    Ok(Json(json!({ "revoked": revoked })).into_response())
}

/// `GET /api/todos`.
pub async fn list_todos(State(state): State<AppState>, session: Session) -> ApiResult {
    let user = user(&session).await?;
    Ok(Json(json!({ "todos": state.todos.list(&user).await? })).into_response())
}

/// `POST /api/todos` with `{"title":…}` → 201 and the todo.
pub async fn add_todo(
    State(state): State<AppState>,
    session: Session,
    body: Result<Json<TodoBody>, JsonRejection>,
) -> ApiResult {
    let user = user(&session).await?;
    let Json(body) = body.map_err(|r| bad_json(&r))?;
    let title = validate_title(body.title.as_deref().unwrap_or_default())
        .map_err(|e| AppError::BadInput(e.to_string()))?;
    let todo = state.todos.add(&user, &title).await?;
    Ok((StatusCode::CREATED, Json(todo)).into_response())
}

/// `POST /api/todos/{id}/done`.
pub async fn complete_todo(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<u64>,
) -> ApiResult {
    let user = user(&session).await?;
    if state.todos.complete(&user, id).await? {
        Ok(Json(json!({ "status": "done" })).into_response())
    } else {
        Err(AppError::NotFound)
    }
}

/// `DELETE /api/todos/{id}`.
pub async fn delete_todo(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<u64>,
) -> ApiResult {
    let user = user(&session).await?;
    if state.todos.delete(&user, id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(AppError::NotFound)
    }
}
