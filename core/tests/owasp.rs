//! OWASP session-management items that need a test of their own (the others are proved by
//! the store suite, the layer tests and the app's attack suite; `docs/security.md` maps
//! every item to its test).

use std::sync::Arc;
use std::time::Duration;

use cloakroom::testing::{test_config, test_router, Browser, CountingStore, DynStore};
use cloakroom::{
    Binding, KeyRing, MemoryStore, SessionConfig, SessionId, SessionLayer, SessionStore,
};

fn browser(layer: SessionLayer) -> Browser {
    Browser::new(test_router(layer, Arc::default()))
}

/// OWASP 3: the default cookie name reveals no framework, and it is configurable.
#[test]
fn owasp_03_default_cookie_name_is_neutral() {
    let config = SessionConfig::builder(KeyRing::generate().unwrap())
        .build()
        .unwrap();
    let name = config.cookie_name().to_ascii_lowercase();
    for revealing in [
        "connect.sid",
        "phpsessid",
        "jsessionid",
        "session",
        "actix-session",
        "tower.sid",
        "cloakroom",
    ] {
        assert_ne!(name, revealing);
    }
    // And the strongest one the settings allow: `__Host-` by default, `__Secure-` with a
    // Domain, plain without Secure (development over plain HTTP only).
    assert_eq!(config.cookie_name(), "__Host-sid");
    let named = |b: cloakroom::SessionConfigBuilder| b.build().unwrap().cookie_name().to_owned();
    let builder = || SessionConfig::builder(KeyRing::generate().unwrap());
    assert_eq!(named(builder().with_domain("example.com")), "__Secure-sid");
    assert_eq!(named(builder().with_secure(false)), "sid");
    assert_eq!(named(builder().with_cookie_name("app")), "app");
    assert!(!name.contains("cloak"));
    let renamed = SessionConfig::builder(KeyRing::generate().unwrap())
        .with_cookie_name("__Host-id")
        .build()
        .unwrap();
    assert_eq!(renamed.cookie_name(), "__Host-id");
}

/// OWASP 5: a validly signed ID that the store does not hold (never issued, expired, logged
/// out) is never adopted: a write gets a fresh ID, and the event is logged and counted.
#[tokio::test]
async fn owasp_05_unknown_ids_are_never_adopted() {
    let config = test_config().build().unwrap();
    let keys = config.keys().clone();
    let layer = SessionLayer::new(MemoryStore::default(), config);
    let metrics = layer.metrics();
    let b = browser(layer);
    // A properly signed cookie for an ID the server never issued (or has forgotten).
    let cookie = format!("sid={}", keys.sign(&SessionId::random().unwrap()));
    let reply = b
        .send_raw(
            "POST",
            "/put/x",
            Some(serde_json::json!(1)),
            Some(cookie.clone()),
        )
        .await;
    assert_eq!(reply.status, 200);
    let issued: Vec<&String> = reply
        .set_cookies
        .iter()
        .filter(|c| !c.contains("Max-Age=0"))
        .collect();
    assert_eq!(issued.len(), 1, "a fresh cookie: {:?}", reply.set_cookies);
    assert!(!issued[0].starts_with(&cookie), "never the presented ID");
    assert_eq!(
        metrics
            .expired_seen
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// OWASP 6: an ID is checked (length, charset, signature) before any store lookup: forged,
/// oversized or odd cookies cost the store nothing.
#[tokio::test]
async fn owasp_06_malformed_ids_never_reach_the_store() {
    let counting = Arc::new(CountingStore::new(Arc::new(MemoryStore::default())));
    let store: DynStore = counting.clone();
    let b = browser(SessionLayer::from_arc(
        store,
        test_config().build().unwrap(),
    ));
    for cookie in [
        "sid=AAAA".to_owned(),
        format!("sid={}", "A".repeat(64)),
        format!("sid={}", "A".repeat(10_000)),
        "sid=../../etc/passwd".to_owned(),
        "sid=session:*".to_owned(),
        "sid=%0d%0aKEYS%20*".to_owned(),
    ] {
        let reply = b
            .send_raw("GET", "/show/x", None, Some(cookie.clone()))
            .await;
        assert_eq!(reply.body, "null", "{cookie}");
    }
    assert_eq!(counting.take().0, 0, "not one store call");
}

/// OWASP 9: SameSite is always sent explicitly, and `None` is refused without `Secure`.
#[tokio::test]
async fn owasp_09_same_site_is_explicit_and_none_needs_secure() {
    assert!(SessionConfig::builder(KeyRing::generate().unwrap())
        .with_same_site(cloakroom::SameSite::None)
        .with_secure(false)
        .build()
        .is_err());
    for (same_site, text) in [
        (cloakroom::SameSite::Lax, "SameSite=Lax"),
        (cloakroom::SameSite::Strict, "SameSite=Strict"),
        (cloakroom::SameSite::None, "SameSite=None"),
    ] {
        let config = SessionConfig::builder(KeyRing::generate().unwrap())
            .with_same_site(same_site)
            .build()
            .unwrap();
        let mut b = browser(SessionLayer::new(MemoryStore::default(), config));
        let reply = b.send("POST", "/put/x", Some(serde_json::json!(1))).await;
        assert!(
            reply.set_cookies[0].contains(text),
            "{:?}",
            reply.set_cookies
        );
    }
}

/// OWASP 16: one cookie carries the session; nothing else the client holds is trusted (the
/// CSRF token and every other value stay on the server).
#[tokio::test]
async fn owasp_16_one_cookie_carries_the_session() {
    let mut b = browser(SessionLayer::new(
        MemoryStore::default(),
        test_config().build().unwrap(),
    ));
    let login = b.send("POST", "/login/alice", None).await;
    assert_eq!(login.set_cookies.len(), 1, "{:?}", login.set_cookies);
}

/// OWASP 26: binding to the client is off by default; when on, a request from another
/// client is logged and counted, and with `terminate` the session ends.
#[tokio::test]
async fn owasp_26_sessions_can_be_bound_to_their_client() {
    let binding = Binding::new().with_user_agent(true).with_terminate(true);
    let layer = SessionLayer::new(
        MemoryStore::default(),
        test_config().with_binding(binding).build().unwrap(),
    );
    let metrics = layer.metrics();
    let client = Browser::new(test_router(layer, Arc::default()));
    let send = |cookie: Option<&str>, agent: &str, path: &str| {
        let mut request = http::Request::builder()
            .method(if path.starts_with("/put") {
                "POST"
            } else {
                "GET"
            })
            .uri(path)
            .header("user-agent", agent);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        let request = if path.starts_with("/put") {
            request
                .header("content-type", "application/json")
                .body(axum::body::Body::from("1"))
        } else {
            request.body(axum::body::Body::empty())
        };
        client.request(request.unwrap())
    };
    let created = send(None, "Firefox/140", "/put/x").await;
    let cookie = created.set_cookies[0].split(';').next().unwrap().to_owned();
    assert_eq!(
        send(Some(&cookie), "Firefox/140", "/show/x").await.body,
        "1"
    );
    let stolen = send(Some(&cookie), "curl/8", "/show/x").await;
    assert_eq!(stolen.body, "null", "another client: the session ends");
    assert_eq!(
        send(Some(&cookie), "Firefox/140", "/show/x").await.body,
        "null"
    );
    assert_eq!(
        metrics
            .binding_mismatches
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Off by default: another User-Agent is the same session.
    let mut plain = browser(SessionLayer::new(
        MemoryStore::default(),
        test_config().build().unwrap(),
    ));
    plain
        .send("POST", "/put/x", Some(serde_json::json!(1)))
        .await;
    assert_eq!(plain.send("GET", "/show/x", None).await.body, "1");
}

/// OWASP 30: what the store holds cannot be turned into a working cookie: keys are hashes of
/// the IDs, and cookies need the signing key.
#[tokio::test]
async fn owasp_30_a_store_key_is_not_a_cookie() {
    let store = Arc::new(MemoryStore::default());
    let mut b = browser(SessionLayer::new(
        store.clone(),
        test_config().build().unwrap(),
    ));
    b.send("POST", "/login/alice", None).await;
    let keys = store
        .list_user("alice", cloakroom::now_millis())
        .await
        .unwrap();
    let key = keys[0].key.to_string();
    for cookie in [format!("sid={key}"), format!("sid={key}{key}")] {
        let reply = b.send_raw("GET", "/whoami", None, Some(cookie)).await;
        assert_eq!(reply.body, "null");
    }
}

/// OWASP 29, by default: a user has at most `DEFAULT_MAX_SESSIONS_PER_USER` sessions (a
/// login past it ends the oldest), and a listing is bounded whatever the limit: the current
/// session first, then the newest, never the library's own fields.
#[tokio::test]
async fn owasp_29_the_default_limit_and_a_bounded_listing() {
    let limit = cloakroom::DEFAULT_MAX_SESSIONS_PER_USER;
    for (cap, logins, live) in [(true, limit + 5, limit), (false, 150, 150)] {
        let store = Arc::new(MemoryStore::default());
        let config = if cap {
            test_config()
        } else {
            test_config().with_max_sessions_per_user(None)
        };
        let base = browser(SessionLayer::new(store.clone(), config.build().unwrap()));
        let mut first = base.clone();
        assert_eq!(first.send("POST", "/login/alice", None).await.status, 200);
        let mut last = base.clone();
        for _ in 1..logins {
            last = base.clone();
            assert_eq!(last.send("POST", "/login/alice", None).await.status, 200);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let now = cloakroom::now_millis();
        assert_eq!(store.list_user("alice", now).await.unwrap().len(), live);
        let expected = if cap { "null" } else { "\"alice\"" };
        assert_eq!(first.send("GET", "/whoami", None).await.body, expected);
        let listed = last.send("GET", "/mine", None).await;
        let listed: Vec<serde_json::Value> = serde_json::from_str(&listed.body).unwrap();
        assert_eq!(listed.len(), live.min(cloakroom::USER_SESSIONS_LISTED));
        assert_eq!(listed[0]["current"], true, "the current one first");
        let created: Vec<u64> = listed[1..]
            .iter()
            .map(|s| s["created"].as_u64().unwrap())
            .collect();
        assert!(created.windows(2).all(|w| w[0] >= w[1]), "then the newest");
        assert!(listed.iter().all(|s| s["fields"]
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("__"))));
    }
}

/// OWASP 29: a user's sessions can be listed (with when they were created and last seen) and
/// revoked, and their number limited: past the limit, a login ends the oldest.
#[tokio::test]
async fn owasp_29_concurrent_logons_are_listed_and_limited() {
    let store = Arc::new(MemoryStore::default());
    let layer = SessionLayer::new(
        store.clone(),
        test_config()
            .with_max_sessions_per_user(Some(2))
            .build()
            .unwrap(),
    );
    let base = browser(layer);
    let mut devices = Vec::new();
    for _ in 0..3 {
        let mut b = base.clone();
        b.cookie = None;
        assert_eq!(b.send("POST", "/login/alice", None).await.status, 200);
        devices.push(b);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        devices[0].send("GET", "/whoami", None).await.body,
        "null",
        "the oldest session ended"
    );
    for b in &mut devices[1..] {
        assert_eq!(b.send("GET", "/whoami", None).await.body, "\"alice\"");
    }
    let listed = devices[2].send("GET", "/mine", None).await;
    let listed: Vec<serde_json::Value> = serde_json::from_str(&listed.body).unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed
        .iter()
        .all(|s| s["created"].is_u64() && s["last_seen"].is_u64()));
    assert_eq!(devices[2].send("POST", "/others", None).await.body, "1");
    assert_eq!(devices[1].send("GET", "/whoami", None).await.body, "null");
}
