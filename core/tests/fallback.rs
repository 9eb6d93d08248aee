//! The fallback ticket (`FailurePolicy::Fallback`): logged-in users stay logged in, read only,
//! while the store is down; the store stays the authority while it answers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cloakroom::testing::{test_config, test_router, Browser, FlakyStore};
use cloakroom::{FailurePolicy, KeyRing, MemoryStore, SessionConfig, SessionLayer};

const OLD: &str = "old-secret-old-secret-old-secret-old";
const NEW: &str = "new-secret-new-secret-new-secret-new";
const TICKET: &str = "sid-fb";

fn layer(store: Arc<FlakyStore>, config: cloakroom::SessionConfigBuilder) -> SessionLayer {
    let config = config
        .with_failure_policy(FailurePolicy::Fallback)
        .with_fallback_fields(["name"])
        .with_store_timeout(Duration::from_millis(100))
        .with_breaker_threshold(3)
        .with_breaker_cooldown(Duration::from_millis(200))
        .build()
        .unwrap();
    SessionLayer::from_arc(store, config)
}

fn setup() -> (Arc<FlakyStore>, SessionLayer, Browser) {
    let store = Arc::new(FlakyStore::new(Arc::new(MemoryStore::default())));
    let layer = layer(store.clone(), test_config());
    let b = Browser::new(test_router(layer.clone(), Arc::default()));
    (store, layer, b)
}

fn ticket_cookie(set_cookies: &[String]) -> Option<&String> {
    set_cookies
        .iter()
        .find(|c| c.starts_with(&format!("{TICKET}=")))
}

fn count(layer: &SessionLayer, counter: &str) -> u64 {
    let metrics = layer.metrics();
    let value = match counter {
        "degraded" => &metrics.degraded_requests,
        "issued" => &metrics.tickets_issued,
        "expired" => &metrics.tickets_refused_expired,
        "forged" => &metrics.tickets_refused_forged,
        "stale" => &metrics.tickets_refused_stale,
        _ => unreachable!(),
    };
    value.load(Ordering::SeqCst)
}

async fn down(store: &FlakyStore) {
    store.down.store(true, Ordering::SeqCst);
}

async fn up(store: &FlakyStore) {
    store.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(250)).await;
}

#[tokio::test]
async fn a_logged_in_user_stays_logged_in_read_only_through_an_outage() {
    let (store, layer, mut b) = setup();
    let login = b.send("POST", "/login/alice", None).await;
    let ticket = ticket_cookie(&login.set_cookies).expect("a login issues a ticket");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=600"] {
        assert!(ticket.contains(attribute), "{ticket} lacks {attribute}");
    }
    // Secure like the session cookie (the test config serves plain http).
    assert_eq!(
        ticket.contains("Secure"),
        login.set_cookies[0].contains("Secure")
    );
    let named = b
        .send("POST", "/put/name", Some(serde_json::json!("Alice")))
        .await;
    assert!(
        ticket_cookie(&named.set_cookies).is_some(),
        "new ticket fields: re-issued"
    );
    b.send(
        "POST",
        "/put/secret",
        Some(serde_json::json!("not in the ticket")),
    )
    .await;
    let issued = count(&layer, "issued");

    down(&store).await;
    let who = b.send("GET", "/degraded", None).await;
    assert_eq!(
        (who.status.as_u16(), who.body.as_str()),
        (200, "Some(\"alice\") true")
    );
    assert_eq!(b.send("GET", "/show/name", None).await.body, "\"Alice\"");
    assert_eq!(
        b.send("GET", "/show/secret", None).await.body,
        "null",
        "only the ticket's fields"
    );
    for (path, body) in [
        ("/put/x", Some(serde_json::json!(1))),
        ("/incr/n", None),
        ("/login/mallory", None),
        ("/flash/hi", None),
        ("/others", None),
    ] {
        let reply = b.send("POST", path, body).await;
        assert_eq!(reply.status, 503, "{path} must fail, not be dropped");
    }
    let mut stranger = b.clone();
    stranger.cookie = None;
    assert_eq!(stranger.send("POST", "/login/eve", None).await.status, 503);
    let session_only = b
        .cookie
        .clone()
        .unwrap()
        .split("; ")
        .find(|p| p.starts_with("sid="))
        .map(str::to_owned);
    assert_eq!(
        b.send_raw("GET", "/whoami", None, session_only)
            .await
            .status,
        503,
        "no ticket: the base policy (fail closed)"
    );
    assert!(count(&layer, "degraded") >= 3);
    assert_eq!(
        count(&layer, "issued"),
        issued,
        "nothing issued during the outage"
    );

    up(&store).await;
    let who = b.send("GET", "/degraded", None).await;
    assert_eq!(who.body, "Some(\"alice\") false");
    assert_eq!(b.send("POST", "/incr/n", None).await.body, "1");
}

#[tokio::test]
async fn untouched_requests_and_fresh_tickets_cost_no_set_cookie() {
    let (_store, _layer, mut b) = setup();
    b.send("POST", "/login/alice", None).await;
    let untouched = b.send("GET", "/untouched", None).await;
    assert!(
        untouched.set_cookies.is_empty(),
        "{:?}",
        untouched.set_cookies
    );
    for _ in 0..3 {
        let read = b.send("GET", "/whoami", None).await;
        assert!(
            ticket_cookie(&read.set_cookies).is_none(),
            "re-issued at most once per refresh interval"
        );
    }
    // Anonymous sessions get no ticket.
    let mut anonymous = b.clone();
    anonymous.cookie = None;
    let reply = anonymous.send("POST", "/incr/n", None).await;
    assert!(ticket_cookie(&reply.set_cookies).is_none());
}

#[tokio::test]
async fn a_logged_out_or_revoked_session_is_never_revived_by_its_ticket() {
    let (store, layer, mut b) = setup();
    b.send("POST", "/login/alice", None).await;
    let copied = b.cookie.clone();
    let logout = b.send("POST", "/logout", None).await;
    let cleared = ticket_cookie(&logout.set_cookies).expect("logout clears the ticket");
    assert!(cleared.contains("Max-Age=0"));

    // Alice on two devices; the first logs the other out everywhere.
    let mut phone = b.clone();
    phone.cookie = None;
    let mut laptop = phone.clone();
    phone.send("POST", "/login/alice", None).await;
    laptop.send("POST", "/login/alice", None).await;
    let revoked = laptop.send("POST", "/others", None).await;
    assert_eq!(revoked.status, 200);
    assert!(
        ticket_cookie(&revoked.set_cookies).is_some(),
        "the revoking session gets a ticket issued after the revocation"
    );

    // The store goes down right after.
    down(&store).await;
    let replay = b.send_raw("GET", "/whoami", None, copied).await;
    assert_eq!(
        replay.status, 503,
        "a logged-out session's ticket is refused"
    );
    assert_eq!(
        phone.send("GET", "/whoami", None).await.status,
        503,
        "revoked"
    );
    assert_eq!(laptop.send("GET", "/whoami", None).await.body, "\"alice\"");
    assert!(count(&layer, "stale") >= 2);

    // Back: the revoked device's ticket is cleared with its cookie.
    up(&store).await;
    let back = phone.send("GET", "/whoami", None).await;
    assert_eq!(back.body, "null");
    assert!(ticket_cookie(&back.set_cookies).is_some_and(|c| c.contains("Max-Age=0")));
}

#[tokio::test]
async fn expired_tampered_and_foreign_tickets_are_refused() {
    let store = Arc::new(FlakyStore::new(Arc::new(MemoryStore::default())));
    let layer = layer(
        store.clone(),
        test_config().with_fallback_lifetime(Duration::from_secs(1)),
    );
    let mut ada = Browser::new(test_router(layer.clone(), Arc::default()));
    let mut bob = ada.clone();
    ada.send("POST", "/login/ada", None).await;
    bob.send("POST", "/login/bob", None).await;
    let jar = |b: &Browser| b.cookie.clone().unwrap();
    let part = |jar: &str, name: &str| {
        jar.split("; ")
            .find(|p| p.starts_with(&format!("{name}=")))
            .unwrap()
            .to_owned()
    };
    down(&store).await;
    // Bob's ticket with Ada's session cookie.
    let foreign = format!("{}; {}", part(&jar(&ada), "sid"), part(&jar(&bob), TICKET));
    let reply = ada.send_raw("GET", "/whoami", None, Some(foreign)).await;
    assert_eq!(reply.status, 503);
    assert_eq!(count(&layer, "stale"), 1);
    // One character changed.
    let ticket = part(&jar(&ada), TICKET);
    let flipped = ticket.replace(
        &ticket[ticket.len() - 2..],
        if ticket.ends_with("AA") { "AB" } else { "AA" },
    );
    let tampered = format!("{}; {flipped}", part(&jar(&ada), "sid"));
    assert_eq!(
        ada.send_raw("GET", "/whoami", None, Some(tampered))
            .await
            .status,
        503
    );
    assert_eq!(count(&layer, "forged"), 1);
    // The real one works, until its lifetime is over.
    assert_eq!(ada.send("GET", "/whoami", None).await.body, "\"ada\"");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(ada.send("GET", "/whoami", None).await.status, 503);
    assert_eq!(count(&layer, "expired"), 1);
}

#[tokio::test]
async fn a_ticket_sealed_by_an_older_key_still_in_the_ring_is_accepted() {
    let store = Arc::new(FlakyStore::new(Arc::new(MemoryStore::default())));
    let old = layer(
        store.clone(),
        SessionConfig::builder(KeyRing::new([OLD]).unwrap()).with_secure(false),
    );
    let mut b = Browser::new(test_router(old, Arc::default()));
    b.send("POST", "/login/ada", None).await;
    down(&store).await;
    let rotated = layer(
        store.clone(),
        SessionConfig::builder(KeyRing::new([NEW, OLD]).unwrap()).with_secure(false),
    );
    let mut after = Browser::new(test_router(rotated, Arc::default()));
    after.cookie = b.cookie.clone();
    assert_eq!(after.send("GET", "/whoami", None).await.body, "\"ada\"");
    // Retired: the session cookie and the ticket both stop working.
    let retired = layer(
        store.clone(),
        SessionConfig::builder(KeyRing::new([NEW]).unwrap()).with_secure(false),
    );
    let mut gone = Browser::new(test_router(retired, Arc::default()));
    gone.cookie = b.cookie.clone();
    assert_ne!(gone.send("GET", "/whoami", None).await.body, "\"ada\"");
}

/// A session bound to its client is bound through an outage too: its ticket, presented by
/// another client, serves nothing (and is counted as a binding mismatch).
#[tokio::test]
async fn a_ticket_is_bound_to_the_client_like_its_session() {
    let store = Arc::new(FlakyStore::new(Arc::new(MemoryStore::default())));
    let binding = cloakroom::Binding::new()
        .with_user_agent(true)
        .with_terminate(true);
    let layer = layer(store.clone(), test_config().with_binding(binding));
    let client = Browser::new(test_router(layer.clone(), Arc::default()));
    let send = |cookie: Option<String>, agent: &str, method: &str, path: &str| {
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("user-agent", agent);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        client.request(request.body(axum::body::Body::empty()).unwrap())
    };
    let login = send(None, "Firefox/140", "POST", "/login/alice").await;
    let jar = login
        .set_cookies
        .iter()
        .map(|c| c.split(';').next().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("; ");
    assert!(ticket_cookie(&login.set_cookies).is_some());
    down(&store).await;
    let own = send(Some(jar.clone()), "Firefox/140", "GET", "/whoami").await;
    assert_eq!(own.body, "\"alice\"", "the bound client is served");
    let stolen = send(Some(jar), "curl/8", "GET", "/whoami").await;
    assert_ne!(stolen.body, "\"alice\"", "another client is not");
    assert_eq!(
        layer.metrics().binding_mismatches.load(Ordering::Relaxed),
        1
    );
}

/// Shortening a session's lifetime re-issues its ticket: the ticket never outlives the
/// session it stands for.
#[tokio::test]
async fn shortening_the_expiry_re_issues_the_ticket() {
    let (_store, _layer, mut b) = setup();
    let login = b.send("POST", "/login/alice", None).await;
    assert!(ticket_cookie(&login.set_cookies).is_some_and(|c| c.contains("Max-Age=600")));
    let short = b.send("POST", "/expiry/60", None).await;
    assert_eq!(short.status, 200, "{}", short.body);
    let ticket = ticket_cookie(&short.set_cookies).expect("a shorter session: a new ticket");
    assert!(ticket.contains("Max-Age=60"), "{ticket}");
}
