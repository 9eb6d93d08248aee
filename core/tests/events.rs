//! Lifecycle events arrive for each step, with the user and the fingerprint (never the ID),
//! the ended ones with their reason and counted in `cloakroom_sessions_ended_total{reason}`;
//! a field of an old type reads as absent (counted), not a 500.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloakroom::events::{EndReason, SessionEvent};
use cloakroom::testing::{test_router, Browser, Gate};
use cloakroom::{DecodeFailure, KeyRing, MemoryStore, SessionConfig, SessionLayer};

type Seen = Arc<Mutex<Vec<SessionEvent>>>;

fn layer(config: cloakroom::SessionConfigBuilder) -> (SessionLayer, Seen) {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let layer = SessionLayer::new(MemoryStore::default(), config.build().unwrap())
        .on_event(move |e| sink.lock().unwrap().push(e));
    (layer, seen)
}

fn config() -> cloakroom::SessionConfigBuilder {
    SessionConfig::builder(KeyRing::generate().unwrap()).with_secure(false)
}

/// Waits (bounded) until `n` events arrived, and takes them.
async fn take(seen: &Seen, n: usize) -> Vec<SessionEvent> {
    let started = Instant::now();
    while seen.lock().unwrap().len() < n {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "expected {n} events, got {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    std::mem::take(&mut *seen.lock().unwrap())
}

/// Whatever arrived so far.
fn take_now(seen: &Seen) -> Vec<SessionEvent> {
    std::mem::take(&mut *seen.lock().unwrap())
}

fn ended(events: &[SessionEvent]) -> Vec<(Option<String>, EndReason)> {
    events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Ended { user, reason, .. } => Some((user.clone(), *reason)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn each_lifecycle_step_arrives_with_its_user_and_reason() {
    let (layer, seen) = layer(config().with_max_sessions_per_user(Some(2)));
    let mut registry = cloakroom::prometheus_client::registry::Registry::default();
    layer.register_metrics(&mut registry);
    let router = test_router(layer, Arc::new(Gate::default()));
    let mut a = Browser::new(router.clone());

    a.send("POST", "/put/x", Some(serde_json::json!(1))).await;
    let events = take(&seen, 1).await;
    assert!(matches!(&events[0], SessionEvent::Created { session } if session.len() == 8));
    let anonymous = a.cookie.clone().unwrap();

    a.send("POST", "/login/ada", None).await;
    let events = take(&seen, 2).await;
    assert!(events
        .iter()
        .any(|e| matches!(e, SessionEvent::IdCycled { .. })));
    assert!(events
        .iter()
        .any(|e| matches!(e, SessionEvent::LoggedIn { user, .. } if user == "ada")));
    // The ID never appears in an event.
    let id = anonymous
        .split('=')
        .nth(1)
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_owned();
    assert!(!format!("{events:?}").contains(&id));

    // Two more logins of ada: the per-user limit (2) replaces the oldest, the first one
    // (created a few milliseconds apart, so that "oldest" is one).
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut b = Browser::new(router.clone());
    b.send("POST", "/login/ada", None).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut c = Browser::new(router.clone());
    c.send("POST", "/login/ada", None).await;
    let events = take(&seen, 5).await;
    assert_eq!(
        ended(&events),
        vec![(Some("ada".into()), EndReason::Replaced)]
    );

    // c logs b out from its own session; then c logs out.
    c.send("POST", "/others", None).await;
    let events = take(&seen, 1).await;
    assert_eq!(
        ended(&events),
        vec![(Some("ada".into()), EndReason::Revoked)]
    );
    let before = c.cookie.clone();
    c.send("POST", "/logout", None).await;
    let events = take(&seen, 1).await;
    assert_eq!(
        ended(&events),
        vec![(Some("ada".into()), EndReason::LoggedOut)]
    );

    // Each ended cookie, replayed, learns why (the tombstones); no new event for them.
    let ask = |cookie: Option<String>| {
        let router = router.clone();
        async move {
            let mut replay = Browser::new(router);
            replay.cookie = cookie;
            replay.send("GET", "/ended", None).await.body
        }
    };
    assert_eq!(ask(before).await, "\"logged_out\"");
    assert_eq!(ask(b.cookie.clone()).await, "\"revoked\"");
    assert_eq!(ask(a.cookie.clone()).await, "\"replaced\"");
    assert_eq!(
        ask(Some("sid=forged.cookie".into())).await,
        "null",
        "a forged one learns nothing"
    );
    // The anonymous ID the login replaced had no user, so no tombstone: it reads as expired.
    assert_eq!(ask(Some(anonymous)).await, "\"expired\"");
    // A dead cookie sends no event (a replay flood must not flood the handler).
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(ended(&take_now(&seen)).is_empty());

    let mut text = String::new();
    cloakroom::prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for (reason, n) in [
        ("replaced", 1),
        ("revoked", 1),
        ("logged_out", 1),
        ("expired", 1),
    ] {
        let line = format!("cloakroom_sessions_ended_total{{reason=\"{reason}\"}} {n}");
        assert!(text.contains(&line), "{line} in {text}");
    }
}

#[tokio::test]
async fn a_value_of_an_old_type_reads_as_absent_unless_told_to_fail() {
    // The harness's `/show/{k}` reads a field as a JSON value; `/incr/{k}` as an integer.
    for (policy, expect_error) in [(DecodeFailure::Absent, false), (DecodeFailure::Fail, true)] {
        let (layer, _seen) = layer(config().with_decode_failure(policy));
        let metrics = layer.metrics();
        let router = test_router(layer, Arc::new(Gate::default()));
        let mut a = Browser::new(router);
        a.send("POST", "/put/n", Some(serde_json::json!("not a number")))
            .await;
        let reply = a.send("GET", "/count/n", None).await;
        if expect_error {
            assert_eq!(reply.status, 500, "{}", reply.body);
        } else {
            assert_eq!(reply.status, 200, "{}", reply.body);
            assert_eq!(reply.body, "none");
            assert_eq!(
                metrics
                    .decode_failures
                    .load(std::sync::atomic::Ordering::Relaxed),
                1
            );
            // The stored value stays until the field is written.
            let shown = a.send("GET", "/show/n", None).await;
            assert!(shown.body.contains("not a number"), "{}", shown.body);
        }
    }
}

#[tokio::test]
async fn a_periodic_renewal_arrives_as_renewed() {
    let (layer, seen) = layer(config().with_renewal(Duration::from_millis(1)));
    let router = test_router(layer, Arc::new(Gate::default()));
    let mut a = Browser::new(router);
    a.send("POST", "/login/ada", None).await;
    take(&seen, 2).await; // created at the login's commit, logged in
    tokio::time::sleep(Duration::from_millis(5)).await;
    a.send("GET", "/whoami", None).await;
    let events = take(&seen, 1).await;
    assert!(
        events.iter().any(
            |e| matches!(e, SessionEvent::Renewed { session, previous } if session != previous)
        ),
        "{events:?}"
    );
}

/// A logout through a renewal's old ID (within its grace window) ends nothing, with a handler
/// set too (which makes the logout read first, resolving the old ID to the live session).
#[tokio::test]
async fn a_logout_through_an_old_id_ends_nothing_with_a_handler_set() {
    let (layer, seen) = layer(config().with_renewal(Duration::from_millis(1)));
    let router = test_router(layer, Arc::new(Gate::default()));
    let mut a = Browser::new(router.clone());
    a.send("POST", "/login/ada", None).await;
    let old = a.cookie.clone();
    tokio::time::sleep(Duration::from_millis(5)).await;
    a.send("GET", "/whoami", None).await;
    assert_ne!(a.cookie, old, "renewed");
    let mut thief = Browser::new(router.clone());
    thief.cookie = old;
    let out = thief.send("POST", "/logout", None).await;
    assert_eq!(out.status, 409, "{}", out.body);
    // The same after a read through a (fresh) old ID, as a form's CSRF check reads first: the
    // read followed the alias, but the logout still names the old ID, which ends only itself.
    let old = a.cookie.clone();
    tokio::time::sleep(Duration::from_millis(5)).await;
    a.send("GET", "/whoami", None).await;
    assert_ne!(a.cookie, old, "renewed again");
    thief.cookie = old;
    let out = thief.send("POST", "/read-then-logout", None).await;
    assert_eq!(out.status, 409, "{}", out.body);
    assert_eq!(
        a.send("GET", "/whoami", None).await.body,
        "\"ada\"",
        "the session lives"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(ended(&take_now(&seen)).is_empty(), "no end was reported");
}

/// A logout that never read the session (a blind one) stays one store call with a handler
/// set, and still names the user in its event and leaves its reason for the next request:
/// the store's `end` does both in the step that ends the session.
#[tokio::test]
async fn a_blind_logout_is_one_store_call_and_still_explains_itself() {
    let counting = Arc::new(cloakroom::testing::CountingStore::new(Arc::new(
        MemoryStore::default(),
    )));
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let layer = SessionLayer::new(counting.clone(), config().build().unwrap())
        .on_event(move |e| sink.lock().unwrap().push(e));
    let mut b = Browser::new(test_router(layer, Arc::new(Gate::default())));
    assert_eq!(b.send("POST", "/login/alice", None).await.status, 200);
    let cookie = b.cookie.clone();
    take(&seen, 2).await; // created, logged in
    counting.take();
    assert_eq!(b.send("POST", "/logout", None).await.status, 200);
    assert_eq!(counting.take(), (1, vec!["end"]), "one store call");
    assert_eq!(
        ended(&take(&seen, 1).await),
        vec![(Some("alice".to_owned()), EndReason::LoggedOut)]
    );
    let why = b.send_raw("GET", "/ended", None, cookie).await;
    assert_eq!(why.body, "\"logged_out\"");
}

/// The `RequireUser` extractor: the user when signed in; else a 401 whose JSON says why the
/// session ended (and says nothing without a session of ours).
#[tokio::test]
async fn require_user_refuses_with_the_reason() {
    let (layer, _seen) = layer(config());
    let mut b = Browser::new(test_router(layer, Arc::new(Gate::default())));
    let anonymous = b.send("GET", "/me", None).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.body, r#"{"error":"not signed in"}"#);
    b.send("POST", "/login/alice", None).await;
    let cookie = b.cookie.clone();
    assert_eq!(b.send("GET", "/me", None).await.body, "alice");
    b.send("POST", "/logout", None).await;
    let replay = b.send_raw("GET", "/me", None, cookie).await;
    assert_eq!(replay.status, 401);
    let body: serde_json::Value = serde_json::from_str(&replay.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"error": "not signed in", "ended": "logged_out"})
    );
}
