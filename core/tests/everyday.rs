//! The everyday methods: `contains_key`, `keys`, an untyped `remove_value` that removes what
//! no longer decodes, and `clear_user`.

use axum::extract::Path;
use axum::routing::{get, post};
use axum::{Json, Router};
use cloakroom::testing::{test_config, Browser};
use cloakroom::{MemoryStore, Session, SessionError, SessionLayer};

fn app() -> Browser {
    async fn put(
        s: Session,
        Path(k): Path<String>,
        Json(v): Json<serde_json::Value>,
    ) -> Result<&'static str, SessionError> {
        s.insert(&k, v).await?;
        Ok("ok")
    }
    async fn keys(s: Session) -> Result<Json<Vec<String>>, SessionError> {
        Ok(Json(s.keys().await?))
    }
    async fn has(s: Session, Path(k): Path<String>) -> Result<String, SessionError> {
        Ok(s.contains_key(&k).await?.to_string())
    }
    async fn drop_value(s: Session, Path(k): Path<String>) -> Result<String, SessionError> {
        Ok(s.remove_value(&k).await?.to_string())
    }
    async fn typed(s: Session, Path(k): Path<String>) -> Result<String, SessionError> {
        Ok(format!("{:?}", s.get::<u32>(&k).await?))
    }
    async fn login(s: Session, Path(u): Path<String>) -> Result<&'static str, SessionError> {
        s.set_user(&u).await?;
        Ok("ok")
    }
    async fn switch(s: Session) -> Result<&'static str, SessionError> {
        s.clear_user().await?;
        Ok("ok")
    }
    async fn whoami(s: Session) -> Result<String, SessionError> {
        Ok(format!("{:?}", s.user().await?))
    }
    async fn flash(s: Session) -> Result<&'static str, SessionError> {
        s.flash("hi").await?;
        Ok("ok")
    }
    let layer = SessionLayer::new(MemoryStore::default(), test_config().build().unwrap());
    Browser::new(
        Router::new()
            .route("/put/{k}", post(put))
            .route("/keys", get(keys))
            .route("/has/{k}", get(has))
            .route("/remove/{k}", post(drop_value))
            .route("/typed/{k}", get(typed))
            .route("/login/{u}", post(login))
            .route("/switch", post(switch))
            .route("/whoami", get(whoami))
            .route("/flash", post(flash))
            .layer(layer),
    )
}

#[tokio::test]
async fn keys_and_contains_key_see_the_apps_fields_only() {
    let mut b = app();
    assert_eq!(b.send("GET", "/keys", None).await.body, "[]");
    b.send("POST", "/put/b", Some(serde_json::json!(2))).await;
    b.send("POST", "/put/a", Some(serde_json::json!(1))).await;
    b.send("POST", "/flash", None).await;
    assert_eq!(b.send("GET", "/keys", None).await.body, r#"["a","b"]"#);
    assert_eq!(b.send("GET", "/has/a", None).await.body, "true");
    assert_eq!(b.send("GET", "/has/zzz", None).await.body, "false");
    assert_eq!(b.send("GET", "/has/__flash.0", None).await.body, "false");
}

#[tokio::test]
async fn a_value_that_no_longer_decodes_can_still_be_removed() {
    let mut b = app();
    b.send(
        "POST",
        "/put/cart",
        Some(serde_json::json!({"old": "shape"})),
    )
    .await;
    let typed = b.send("GET", "/typed/cart", None).await;
    assert_eq!(
        (typed.status.as_u16(), typed.body.as_str()),
        (200, "None"),
        "a typed read of the old shape reads as absent (DecodeFailure::Absent, the default)"
    );
    assert_eq!(
        b.send("GET", "/has/cart", None).await.body,
        "true",
        "and stays"
    );
    assert_eq!(b.send("POST", "/remove/cart", None).await.body, "true");
    assert_eq!(b.send("GET", "/has/cart", None).await.body, "false");
    assert_eq!(b.send("POST", "/remove/cart", None).await.body, "false");
    assert_eq!(b.send("POST", "/remove/__csrf", None).await.status, 400);
}

#[tokio::test]
async fn clear_user_keeps_the_data_and_cycles_the_id() {
    let mut b = app();
    b.send("POST", "/put/theme", Some(serde_json::json!("dark")))
        .await;
    b.send("POST", "/login/ada", None).await;
    let before = b.cookie.clone();
    assert_eq!(b.send("GET", "/whoami", None).await.body, "Some(\"ada\")");
    let reply = b.send("POST", "/switch", None).await;
    assert_eq!(reply.status, 200);
    assert_ne!(b.cookie, before, "a new ID");
    assert_eq!(b.send("GET", "/whoami", None).await.body, "None");
    assert_eq!(b.send("GET", "/has/theme", None).await.body, "true");
    let old = b.send_raw("GET", "/whoami", None, before).await;
    assert_eq!(old.body, "None", "the old ID reaches nothing");
}

fn failing_app(
    commit_on_error: bool,
) -> (
    Browser,
    tokio::sync::mpsc::UnboundedReceiver<Result<(), SessionError>>,
) {
    use axum::http::StatusCode;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    async fn fails(s: Session) -> Result<StatusCode, SessionError> {
        s.insert("half", "done").await?;
        s.set_user("ada").await?;
        Ok(StatusCode::INTERNAL_SERVER_ERROR)
    }
    async fn show(s: Session) -> Result<String, SessionError> {
        Ok(format!(
            "{:?} {:?}",
            s.user().await?,
            s.get::<String>("half").await?
        ))
    }
    let late = move |s: Session| {
        let tx = tx.clone();
        async move {
            // A task that outlives the response tries to write afterwards.
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let _ = tx.send(s.insert("late", 1).await);
            });
            "ok"
        }
    };
    let config = test_config()
        .with_commit_on_server_error(commit_on_error)
        .build()
        .unwrap();
    let layer = SessionLayer::new(MemoryStore::default(), config);
    let router = Router::new()
        .route("/fails", post(fails))
        .route("/show", get(show))
        .route("/late", post(late))
        .layer(layer);
    (Browser::new(router), rx)
}

#[tokio::test]
async fn a_server_error_commits_nothing_unless_configured() {
    let (mut b, _) = failing_app(false);
    let reply = b.send("POST", "/fails", None).await;
    assert_eq!(reply.status, 500);
    assert!(
        reply.set_cookies.is_empty(),
        "no session, no login: {:?}",
        reply.set_cookies
    );
    assert_eq!(b.send("GET", "/show", None).await.body, "None None");

    let (mut b, _) = failing_app(true);
    let reply = b.send("POST", "/fails", None).await;
    assert_eq!(reply.status, 500);
    assert_eq!(
        b.send("GET", "/show", None).await.body,
        "Some(\"ada\") Some(\"done\")"
    );
}

#[tokio::test]
async fn a_write_after_the_commit_is_an_error_not_a_silent_drop() {
    let (mut b, mut late) = failing_app(false);
    assert_eq!(b.send("POST", "/late", None).await.status, 200);
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(5), late.recv())
        .await
        .expect("the late write reports")
        .expect("a result");
    assert!(
        matches!(outcome, Err(SessionError::AlreadyCommitted)),
        "{outcome:?}"
    );
}

/// A request runs in a `session` span carrying the session's fingerprint, and each store
/// call in a `store` span naming its operation: never the ID or the cookie.
#[tokio::test]
async fn spans_carry_the_fingerprint_never_the_cookie() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut b = app();
    b.send("POST", "/login/ada", None).await;
    b.send("GET", "/whoami", None).await;
    let cookie = b.cookie.clone().unwrap();
    let value = cookie.split_once('=').unwrap().1.to_owned();
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("session{session="), "{logs}");
    assert!(logs.contains("store{op=\"load\" session="), "{logs}");
    assert!(logs.contains("store{op=\"create\""), "{logs}");
    assert!(
        !logs.contains(&value),
        "the cookie never reaches a log line"
    );
}

/// Flashes with a level and a typed payload; plain ones read back at `Info`, and typed ones
/// still read as text through `take_flashes`.
#[tokio::test]
async fn flashes_have_levels_and_typed_payloads() {
    use cloakroom::{Flash, FlashLevel};
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Saved {
        title: String,
        id: u32,
    }
    async fn add(s: Session) -> Result<&'static str, SessionError> {
        s.flash("plain").await?;
        s.flash_with(FlashLevel::Error, "it failed").await?;
        Ok("ok")
    }
    async fn add_typed(s: Session) -> Result<&'static str, SessionError> {
        s.flash_with(
            FlashLevel::Success,
            Saved {
                title: "Milk".into(),
                id: 7,
            },
        )
        .await?;
        Ok("ok")
    }
    async fn levels(s: Session) -> Result<Json<Vec<Flash<String>>>, SessionError> {
        Ok(Json(s.take_flashes_with::<String>().await?))
    }
    async fn typed(s: Session) -> Result<String, SessionError> {
        Ok(format!("{:?}", s.take_flashes_with::<Saved>().await?))
    }
    async fn text(s: Session) -> Result<Json<Vec<String>>, SessionError> {
        Ok(Json(s.take_flashes().await?))
    }
    let layer = SessionLayer::new(MemoryStore::default(), test_config().build().unwrap());
    let mut b = Browser::new(
        Router::new()
            .route("/add", post(add))
            .route("/add-typed", post(add_typed))
            .route("/levels", get(levels))
            .route("/typed", get(typed))
            .route("/text", get(text))
            .layer(layer),
    );
    b.send("POST", "/add", None).await;
    let reply = b.send("GET", "/levels", None).await;
    assert_eq!(
        reply.body,
        r#"[{"l":"info","p":"plain"},{"l":"error","p":"it failed"}]"#
    );
    assert_eq!(
        b.send("GET", "/levels", None).await.body,
        "[]",
        "shown once"
    );
    b.send("POST", "/add-typed", None).await;
    // The right type reads it.
    assert_eq!(
        b.send("GET", "/typed", None).await.body,
        r#"[Flash { level: Success, payload: Saved { title: "Milk", id: 7 } }]"#
    );
    // The wrong type (a deploy changed the payload) is, by default, dropped with a warning
    // (counted), not a 500.
    b.send("POST", "/add-typed", None).await;
    let wrong = b.send("GET", "/levels", None).await;
    assert_eq!((wrong.status.as_u16(), wrong.body.as_str()), (200, "[]"));
    b.send("POST", "/add-typed", None).await;
    assert_eq!(
        b.send("GET", "/text", None).await.body,
        r#"["{\"id\":7,\"title\":\"Milk\"}"]"#
    );
}
