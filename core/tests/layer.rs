//! What the layer does at the HTTP edge: cookies, key rotation, and store failures.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloakroom::testing::{test_config, test_router, Browser, FlakyStore};
use cloakroom::{FailurePolicy, KeyRing, MemoryStore, SessionConfig, SessionLayer};

const OLD: &str = "old-secret-old-secret-old-secret-old";
const NEW: &str = "new-secret-new-secret-new-secret-new";

fn browser_with(layer: SessionLayer) -> Browser {
    Browser::new(test_router(layer, Arc::default()))
}

fn memory_layer(config: SessionConfig) -> SessionLayer {
    SessionLayer::new(MemoryStore::default(), config)
}

#[tokio::test]
async fn new_session_cookie_has_safe_defaults() {
    let config = SessionConfig::builder(KeyRing::generate().unwrap())
        .build()
        .unwrap();
    let mut b = browser_with(memory_layer(config));
    let reply = b.send("POST", "/put/a", Some(serde_json::json!(1))).await;
    let cookie = &reply.set_cookies[0];
    for attribute in [
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        "Path=/",
        "Max-Age=86400",
    ] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    assert!(!cookie.contains("Domain"));
    assert!(cookie.starts_with("sid="));
    assert_eq!(reply.headers["cache-control"], "no-store");
    // A request that changes nothing sets no cookie and is cacheable as the app decides.
    let reply = b.send("GET", "/show/a", None).await;
    assert!(reply.set_cookies.is_empty());
    assert!(reply.headers.get("cache-control").is_none());
}

#[tokio::test]
async fn browser_session_cookie_has_no_max_age() {
    let config = test_config().with_browser_session(true).build().unwrap();
    let mut b = browser_with(memory_layer(config));
    let reply = b.send("POST", "/put/a", Some(serde_json::json!(1))).await;
    assert!(!reply.set_cookies[0].contains("Max-Age"));
}

#[tokio::test]
async fn forged_and_malformed_cookies_are_no_session() {
    let mut b = browser_with(memory_layer(test_config().build().unwrap()));
    b.send("POST", "/put/secret", Some(serde_json::json!("mine")))
        .await;
    let good = b.cookie.clone().unwrap();
    let value = good.split_once('=').unwrap().1.to_owned();
    let mut flipped = value.clone().into_bytes();
    flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let cases = [
        format!("sid={flipped}"),
        format!("sid={}", &value[..value.len() - 2]),
        format!("sid={value}AAAA"),
        "sid=".to_owned(),
        format!("sid={}", "A".repeat(5000)),
        format!("{good}; {good}"),
        format!("{good}; sid=other"),
        "sid=%00%ff".to_owned(),
    ];
    for cookie in cases {
        let reply = b
            .send_raw("GET", "/show/secret", None, Some(cookie.clone()))
            .await;
        assert_eq!(reply.status, 200, "{cookie}");
        assert_eq!(reply.body, "null", "{cookie} must not reach the session");
    }
    // Non-UTF-8 bytes in the header itself.
    let request = http::Request::builder()
        .uri("/show/secret")
        .header(
            "cookie",
            http::HeaderValue::from_bytes(b"sid=\xff\xfe; x=1").unwrap(),
        )
        .body(axum::body::Body::empty())
        .unwrap();
    let router = test_router(memory_layer(test_config().build().unwrap()), Arc::default());
    let response = tower::ServiceExt::oneshot(router, request).await.unwrap();
    assert_eq!(response.status(), 200);
    // The good cookie still works.
    assert_eq!(b.send("GET", "/show/secret", None).await.body, "\"mine\"");
}

#[tokio::test]
async fn rotated_keys_verify_and_re_sign() {
    let store = Arc::new(MemoryStore::default());
    let old = SessionConfig::builder(KeyRing::new([OLD]).unwrap())
        .with_secure(false)
        .build()
        .unwrap();
    let mut b = browser_with(SessionLayer::from_arc(store.clone(), old));
    b.send("POST", "/put/a", Some(serde_json::json!("kept")))
        .await;
    let signed_by_old = b.cookie.clone().unwrap();
    let rotated = SessionConfig::builder(KeyRing::new([NEW, OLD]).unwrap())
        .with_secure(false)
        .build()
        .unwrap();
    let mut b = Browser::new(test_router(
        SessionLayer::from_arc(store.clone(), rotated),
        Arc::default(),
    ));
    b.cookie = Some(signed_by_old.clone());
    let reply = b.send("GET", "/show/a", None).await;
    assert_eq!(reply.body, "\"kept\"");
    assert_eq!(reply.set_cookies.len(), 1, "an old-key cookie is re-signed");
    assert_ne!(b.cookie.clone().unwrap(), signed_by_old);
    // Once the old key is dropped, only the re-signed cookie works.
    let only_new = SessionConfig::builder(KeyRing::new([NEW]).unwrap())
        .with_secure(false)
        .build()
        .unwrap();
    let b2 = Browser::new(test_router(
        SessionLayer::from_arc(store, only_new),
        Arc::default(),
    ));
    assert_eq!(
        b2.send_raw("GET", "/show/a", None, Some(signed_by_old))
            .await
            .body,
        "null"
    );
    assert_eq!(
        b2.send_raw("GET", "/show/a", None, b.cookie.clone())
            .await
            .body,
        "\"kept\""
    );
}

#[tokio::test]
async fn logout_removes_the_cookie_and_replay_fails() {
    let mut b = browser_with(memory_layer(test_config().build().unwrap()));
    b.send("POST", "/login/alice", None).await;
    let cookie = b.cookie.clone();
    let reply = b.send("POST", "/logout", None).await;
    assert!(reply.set_cookies[0].contains("Max-Age=0"));
    assert_eq!(reply.headers["cache-control"], "no-store");
    let replay = b.send_raw("GET", "/show/login", None, cookie).await;
    assert_eq!(replay.body, "null");
    assert!(
        replay.set_cookies[0].contains("Max-Age=0"),
        "a dead cookie is cleared"
    );
}

fn flaky(policy: FailurePolicy) -> (Arc<FlakyStore>, Browser) {
    let store = Arc::new(FlakyStore::new(Arc::new(MemoryStore::default())));
    let config = test_config()
        .with_failure_policy(policy)
        .with_store_timeout(Duration::from_millis(100))
        .with_breaker_threshold(3)
        .with_breaker_cooldown(Duration::from_millis(200))
        .build()
        .unwrap();
    let b = browser_with(SessionLayer::from_arc(store.clone(), config));
    (store, b)
}

#[tokio::test]
async fn store_outage_fails_closed_with_503_and_recovers() {
    let (store, mut b) = flaky(FailurePolicy::FailClosed);
    b.send("POST", "/put/a", Some(serde_json::json!(1))).await;
    store.down.store(true, Ordering::SeqCst);
    let reply = b.send("GET", "/show/a", None).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.headers["retry-after"], "1");
    assert_eq!(
        reply.body,
        r#"{"error":"session store unavailable, please retry"}"#
    );
    assert_eq!(
        b.send("GET", "/untouched", None).await.status,
        200,
        "session-free routes are unaffected"
    );
    // Browsers get a small HTML page instead of JSON.
    let request = http::Request::builder()
        .uri("/show/a")
        .header("accept", "text/html,application/xhtml+xml")
        .header("cookie", b.cookie.clone().unwrap())
        .body(axum::body::Body::empty())
        .unwrap();
    let reply = b.request(request).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.headers["content-type"], "text/html; charset=utf-8");
    assert!(reply.body.contains("<h1>503</h1>"));
    // A write that cannot be committed is not acknowledged.
    let reply = b.send("POST", "/incr/n", None).await;
    assert_eq!(reply.status, 503);
    store.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let reply = b.send("GET", "/show/a", None).await;
    assert_eq!(
        (reply.status.as_u16(), reply.body.as_str()),
        (200, "1"),
        "recovers by itself"
    );
}

#[tokio::test]
async fn a_hanging_store_is_bounded_by_the_timeout_and_the_breaker() {
    let (store, mut b) = flaky(FailurePolicy::FailClosed);
    b.send("POST", "/put/a", Some(serde_json::json!(1))).await;
    store.hang.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(b.send("GET", "/show/a", None).await.status, 503);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "bounded by the store timeout"
        );
    }
    // The breaker is open now: calls fail fast without waiting for the timeout.
    let started = Instant::now();
    assert_eq!(b.send("GET", "/show/a", None).await.status, 503);
    assert!(
        started.elapsed() < Duration::from_millis(90),
        "open breaker fails fast"
    );
    store.hang.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        b.send("GET", "/show/a", None).await.status,
        200,
        "a probe closes the breaker"
    );
}

#[tokio::test]
async fn anonymous_policy_serves_logged_out_and_writes_nothing() {
    let (store, mut b) = flaky(FailurePolicy::Anonymous);
    b.send("POST", "/login/alice", None).await;
    let cookie = b.cookie.clone();
    store.down.store(true, Ordering::SeqCst);
    let reply = b.send("GET", "/show/login", None).await;
    assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, "null"));
    assert!(
        reply.set_cookies.is_empty(),
        "the cookie is kept for when the store is back"
    );
    let reply = b.send("POST", "/put/x", Some(serde_json::json!(1))).await;
    assert_eq!(reply.status, 200);
    store.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(b.cookie, cookie);
    assert_eq!(
        b.send("GET", "/show/login", None).await.body,
        "true",
        "logged in again"
    );
    assert_eq!(
        b.send("GET", "/show/x", None).await.body,
        "null",
        "nothing was written"
    );
}

#[test]
fn cookie_prefix_rules_are_enforced() {
    let ring = || KeyRing::generate().unwrap();
    assert!(SessionConfig::builder(ring())
        .with_cookie_name("__Host-id")
        .build()
        .is_ok());
    assert!(SessionConfig::builder(ring())
        .with_cookie_name("__Host-id")
        .with_secure(false)
        .build()
        .is_err());
    assert!(SessionConfig::builder(ring())
        .with_cookie_name("__Host-id")
        .with_path("/app")
        .build()
        .is_err());
    assert!(SessionConfig::builder(ring())
        .with_cookie_name("__Secure-id")
        .with_secure(false)
        .build()
        .is_err());
    assert!(SessionConfig::builder(ring())
        .with_cookie_name("bad name")
        .build()
        .is_err());
    assert!(SessionConfig::builder(ring())
        .with_cookie_name("")
        .build()
        .is_err());
    assert!(SessionConfig::builder(ring())
        .with_idle_timeout(Duration::from_secs(10))
        .with_absolute_lifetime(Duration::from_secs(5))
        .build()
        .is_err());
}
