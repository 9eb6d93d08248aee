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
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    assert!(!cookie.contains("Domain"));
    assert!(
        !cookie.contains("Max-Age") && !cookie.contains("Expires"),
        "non-persistent by default (OWASP): {cookie}"
    );
    assert!(
        cookie.starts_with("__Host-sid="),
        "the strongest name by default: {cookie}"
    );
    assert_eq!(reply.headers["cache-control"], "no-store");
    assert_eq!(reply.headers["vary"], "Cookie");
}

/// Every response that read the session is `no-store` and `Vary: Cookie`, not only those
/// that set a cookie; one that never touched it is left to the app.
#[tokio::test]
async fn responses_that_read_the_session_are_not_cached() {
    let mut b = browser_with(memory_layer(test_config().build().unwrap()));
    b.send("POST", "/put/a", Some(serde_json::json!(1))).await;
    let reply = b.send("GET", "/show/a", None).await;
    assert!(reply.set_cookies.is_empty());
    assert_eq!(reply.headers["cache-control"], "no-store");
    assert_eq!(reply.headers["vary"], "Cookie");
    let reply = b.send("GET", "/untouched", None).await;
    assert!(reply.headers.get("cache-control").is_none());
    assert!(reply.headers.get("vary").is_none());
    // Configurable: an app that sets its own Cache-Control still gets Vary.
    let mut b = browser_with(memory_layer(
        test_config().with_cache_control(false).build().unwrap(),
    ));
    b.send("POST", "/put/a", Some(serde_json::json!(1))).await;
    let reply = b.send("GET", "/show/a", None).await;
    assert!(reply.headers.get("cache-control").is_none());
    assert_eq!(reply.headers["vary"], "Cookie");
}

#[tokio::test]
async fn persistent_cookie_has_max_age_of_the_idle_timeout() {
    let config = test_config().with_browser_session(false).build().unwrap();
    let mut b = browser_with(memory_layer(config));
    b.send("POST", "/login/alice", None).await;
    let reply = b.send("POST", "/login/bob", None).await;
    assert!(
        reply.set_cookies[0].contains("Max-Age=86400"),
        "{:?}",
        reply.set_cookies
    );
}

/// A planted duplicate (cookie tossing from a sibling subdomain) neither replaces the real
/// cookie nor locks its owner out: the first cookie whose signature verifies wins.
#[tokio::test]
async fn a_planted_duplicate_cookie_neither_wins_nor_locks_out() {
    let layer = memory_layer(test_config().build().unwrap());
    let metrics = layer.metrics();
    let mut b = browser_with(layer);
    b.send("POST", "/put/secret", Some(serde_json::json!("mine")))
        .await;
    let good = b.cookie.clone().unwrap();
    let mut attacker = b.clone();
    attacker.cookie = None;
    attacker
        .send("POST", "/put/secret", Some(serde_json::json!("attacker's")))
        .await;
    let planted = attacker.cookie.clone().unwrap();
    for cookie in [
        format!("sid=forged; {good}"),
        format!("{good}; sid=forged"),
        format!("sid=%00; {good}; sid=AAAA"),
    ] {
        let reply = b
            .send_raw("GET", "/show/secret", None, Some(cookie.clone()))
            .await;
        assert_eq!(reply.body, "\"mine\"", "{cookie}");
    }
    assert!(metrics.rejected_cookies.load(Ordering::Relaxed) >= 3);
    // Two validly signed cookies: the browser sends the most specific (the real) one first.
    let reply = b
        .send_raw(
            "GET",
            "/show/secret",
            None,
            Some(format!("{good}; {planted}")),
        )
        .await;
    assert_eq!(reply.body, "\"mine\"");
}

/// A client that keeps sending invalid cookies is counted, logged, and throttled with 429
/// when the policy says so; clients with valid cookies are unaffected.
#[tokio::test]
async fn guessing_clients_are_counted_and_throttled() {
    use std::net::SocketAddr;
    let policy = cloakroom::GuessingPolicy::new(5, Duration::from_secs(60)).with_throttle(true);
    let layer = memory_layer(test_config().with_guessing_policy(policy).build().unwrap());
    let metrics = layer.metrics();
    let router = test_router(layer, Arc::default());
    let guess = |i: usize, peer: SocketAddr| {
        let mut request = http::Request::builder()
            .uri("/show/secret")
            .header("cookie", format!("sid=guess{i:040}"))
            .body(axum::body::Body::empty())
            .unwrap();
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        tower::ServiceExt::oneshot(router.clone(), request)
    };
    let guesser: SocketAddr = "192.0.2.1:5000".parse().unwrap();
    let mut statuses = Vec::new();
    for i in 0..8 {
        statuses.push(guess(i, guesser).await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 429, 429]);
    assert_eq!(metrics.guessing_throttled.load(Ordering::Relaxed), 2);
    let bystander: SocketAddr = "192.0.2.2:5000".parse().unwrap();
    assert_eq!(guess(0, bystander).await.unwrap().status(), 200);
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

/// Under the anonymous policy reads degrade to "logged out", but a write that cannot be
/// stored fails with 503 instead of answering as if it were done (express-session's bug).
#[tokio::test]
async fn anonymous_policy_serves_logged_out_and_refuses_writes() {
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
    for (path, body) in [
        ("/put/x", Some(serde_json::json!(1))),
        ("/incr/n", None),
        ("/login/mallory", None),
        ("/flash/hi", None),
    ] {
        let reply = b.send("POST", path, body).await;
        assert_eq!(reply.status, 503, "{path} must not pretend to succeed");
        assert_eq!(reply.headers["retry-after"], "1");
    }
    let mut stranger = b.clone();
    stranger.cookie = None;
    let reply = stranger.send("POST", "/login/eve", None).await;
    assert_eq!(
        reply.status, 503,
        "a new login while the store is down fails"
    );
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
    // Browsers match the prefixes case-insensitively.
    for name in ["__HOST-id", "__host-id", "__SECURE-id"] {
        assert!(
            SessionConfig::builder(ring())
                .with_cookie_name(name)
                .with_secure(false)
                .build()
                .is_err(),
            "{name}"
        );
    }
    for (path, domain) in [
        ("/a;b", None),
        ("/a b", None),
        ("a", None),
        ("/", Some("x.com; Secure")),
        ("/", Some("x\u{7f}.com")),
    ] {
        let mut builder = SessionConfig::builder(ring()).with_path(path);
        if let Some(domain) = domain {
            builder = builder.with_domain(domain);
        }
        assert!(
            matches!(builder.build(), Err(cloakroom::ConfigError::Attribute(..))),
            "{path} {domain:?}"
        );
    }
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
