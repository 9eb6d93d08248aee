//! Per-session expiry ("remember me"): a session given its own idle timeout, lifetime and
//! cookie kind, within the bounds the layer sets.

use std::time::Duration;

use axum::extract::Path;
use axum::routing::{get, post};
use axum::Router;
use cloakroom::testing::{test_config, Browser};
use cloakroom::{Expiry, MemoryStore, Session, SessionError, SessionLayer};

const DAY: u64 = 24 * 3600;

fn days(n: u64) -> Duration {
    Duration::from_secs(n * DAY)
}

fn app() -> Browser {
    async fn login(s: Session, Path(days_kept): Path<u64>) -> Result<&'static str, SessionError> {
        s.set_user("alice").await?;
        if days_kept > 0 {
            s.set_expiry(Expiry::new(days(days_kept), days(days_kept)))
                .await?;
        }
        Ok("ok")
    }
    async fn shorten(s: Session) -> Result<&'static str, SessionError> {
        let short = Duration::from_secs(60);
        s.set_expiry(Expiry::new(short, short).with_browser_session(true))
            .await?;
        Ok("ok")
    }
    async fn switch(s: Session, Path(user): Path<String>) -> Result<&'static str, SessionError> {
        s.set_user(&user).await?;
        Ok("ok")
    }
    async fn anonymous(s: Session) -> Result<&'static str, SessionError> {
        s.clear_user().await?;
        Ok("ok")
    }
    async fn show(s: Session) -> Result<String, SessionError> {
        Ok(format!("{:?} {:?}", s.user().await?, s.expiry().await?))
    }
    // The default configuration: browser-session cookies, 24 h idle, 7 days; remember-me
    // sessions may last up to 30 days.
    let config = test_config()
        .with_max_expiry(days(30), days(30))
        .build()
        .unwrap();
    let layer = SessionLayer::new(MemoryStore::default(), config);
    Browser::new(
        Router::new()
            .route("/login/{days}", post(login))
            .route("/shorten", post(shorten))
            .route("/as/{user}", post(switch))
            .route("/anonymous", post(anonymous))
            .route("/show", get(show))
            .layer(layer),
    )
}

fn max_age(set_cookies: &[String]) -> Option<u64> {
    let cookie = set_cookies.iter().find(|c| c.starts_with("sid="))?;
    cookie
        .split("; ")
        .find_map(|attr| attr.strip_prefix("Max-Age="))
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn remember_me_gives_a_persistent_cookie_and_its_own_lifetime() {
    let mut b = app();
    let plain = b.send("POST", "/login/0", None).await;
    assert_eq!(plain.status, 200, "{}", plain.body);
    assert!(plain.set_cookies.iter().any(|c| c.starts_with("sid=")));
    assert_eq!(
        max_age(&plain.set_cookies),
        None,
        "a browser-session cookie"
    );

    let mut b = app();
    let remembered = b.send("POST", "/login/30", None).await;
    assert_eq!(remembered.status, 200, "{}", remembered.body);
    let age = max_age(&remembered.set_cookies).expect("a persistent cookie");
    assert!(age > 29 * DAY && age <= 30 * DAY, "Max-Age {age}");
    let shown = b.send("GET", "/show", None).await.body;
    assert!(shown.contains("idle_timeout: 2592000s"), "{shown}");
    assert!(shown.contains("browser_session: false"), "{shown}");

    // Shortened again (a "forget me" on a shared computer): a browser-session cookie.
    let short = b.send("POST", "/shorten", None).await;
    assert_eq!(short.status, 200, "{}", short.body);
    assert!(!short.set_cookies.is_empty(), "the cookie is sent again");
    assert_eq!(max_age(&short.set_cookies), None);
    assert!(b
        .send("GET", "/show", None)
        .await
        .body
        .contains("Some(\"alice\")"));
}

#[tokio::test]
async fn an_expiry_beyond_the_bounds_is_refused_and_changes_nothing() {
    let mut b = app();
    let refused = b.send("POST", "/login/31", None).await;
    assert_eq!(refused.status, 500, "{}", refused.body);
    assert!(
        refused.body.contains("session lifetime not allowed"),
        "{}",
        refused.body
    );
    // A 5xx commits nothing: no session, no cookie.
    assert!(refused.set_cookies.is_empty(), "{:?}", refused.set_cookies);
    assert_eq!(b.send("GET", "/show", None).await.body, "None None");
}

#[test]
fn bounds_default_to_the_configured_lifetime() {
    let config = test_config().build().unwrap();
    let max = config.max_expiry();
    assert_eq!(max.idle_timeout(), config.idle_timeout());
    assert_eq!(max.absolute_lifetime(), config.absolute_lifetime());
    let inverted = test_config().with_max_expiry(days(2), days(1)).build();
    assert!(inverted.is_err());
}

/// "Remember me" belongs to the user who asked for it: another user logging in over the
/// session, or the user leaving it, gets the configured expiry and a browser-session cookie.
#[tokio::test]
async fn a_change_of_user_drops_the_previous_users_remember_me() {
    let mut b = app();
    b.send("POST", "/login/30", None).await;
    let switched = b.send("POST", "/as/bob", None).await;
    assert_eq!(switched.status, 200, "{}", switched.body);
    assert!(switched.set_cookies.iter().any(|c| c.starts_with("sid=")));
    assert_eq!(max_age(&switched.set_cookies), None, "not bob's choice");
    assert_eq!(
        b.send("GET", "/show", None).await.body,
        "Some(\"bob\") None"
    );

    let mut b = app();
    b.send("POST", "/login/30", None).await;
    let left = b.send("POST", "/anonymous", None).await;
    assert_eq!(left.status, 200, "{}", left.body);
    assert_eq!(max_age(&left.set_cookies), None);
    assert_eq!(b.send("GET", "/show", None).await.body, "None None");
}

/// Signing out without ending the session (`clear_user`) makes it anonymous at once: a
/// "remember me" login does not live on for weeks as an anonymous session, it gets the
/// anonymous idle timeout (1 h by default) from then.
#[tokio::test]
async fn clear_user_gives_the_session_the_anonymous_idle_timeout() {
    async fn login(s: Session) -> Result<&'static str, SessionError> {
        s.set_user("alice").await?;
        s.set_expiry(Expiry::new(days(30), days(30))).await?;
        Ok("ok")
    }
    async fn anonymous(s: Session) -> Result<&'static str, SessionError> {
        s.clear_user().await?;
        Ok("ok")
    }
    let store = std::sync::Arc::new(MemoryStore::default());
    let config = test_config()
        .with_max_expiry(days(30), days(30))
        .with_anonymous_idle_timeout(Some(Duration::from_secs(3600)))
        .build()
        .unwrap();
    let mut b = Browser::new(
        Router::new()
            .route("/login", post(login))
            .route("/anonymous", post(anonymous))
            .layer(SessionLayer::new(store.clone(), config)),
    );
    assert_eq!(b.send("POST", "/login", None).await.status, 200);
    assert_eq!(b.send("POST", "/anonymous", None).await.status, 200);
    let now = cloakroom::now_millis();
    assert_eq!(
        store.purge_expired(now + 2 * 3600 * 1000),
        1,
        "idle for two hours, the anonymous session is gone"
    );
}
