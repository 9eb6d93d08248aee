//! Concurrency: no lost update, no resurrection by a write racing a logout, no half login.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{header, Request, StatusCode};

use crate::{Applied, SessionKey, SessionStore, StoreError};

use super::*;
use crate::testing::harness::*;
use crate::testing::DynStore;

/// 200 concurrent increments on one session end at exactly 200.
pub async fn concurrent_increments_are_not_lost(store: DynStore) {
    let mut b = browser(store);
    b.send("POST", "/put/seed", Some(serde_json::json!(1)))
        .await;
    let replies = concurrently(200, |_| {
        let b = b.clone();
        async move {
            b.send_raw("POST", "/incr/hits", None, b.cookie.clone())
                .await
        }
    })
    .await;
    assert!(
        replies.iter().all(|r| r.status == 200),
        "all increments succeed"
    );
    let mut seen: Vec<i64> = replies.iter().map(|r| r.body.parse().unwrap()).collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=200).collect::<Vec<_>>(),
        "each increment saw a distinct value"
    );
    assert_eq!(b.send("GET", "/show/hits", None).await.body, "200");
}

/// `Session::update` is a compare-and-set in the store: concurrent updates of one
/// structured value (a list every request appends to) all survive, and a stale expectation
/// writes nothing.
pub async fn concurrent_updates_are_not_lost(store: DynStore) {
    let mut b = browser(store.clone());
    b.send("POST", "/put/seed", Some(serde_json::json!(1)))
        .await;
    let replies = concurrently(20, |i| {
        let b = b.clone();
        async move {
            b.send_raw(
                "POST",
                &format!("/append/list/v{i}"),
                None,
                b.cookie.clone(),
            )
            .await
        }
    })
    .await;
    assert!(
        replies.iter().all(|r| r.status == 200),
        "every update succeeds: {:?}",
        replies
            .iter()
            .map(|r| (r.status, r.body.clone()))
            .collect::<Vec<_>>()
    );
    let list: Vec<String> =
        serde_json::from_str(&b.send("GET", "/show/list", None).await.body).unwrap();
    let mut sorted = list.clone();
    sorted.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
    expected.sort();
    assert_eq!(sorted, expected, "no update lost");

    // At the store: an expectation that no longer holds refuses the whole change.
    let k = key();
    store
        .create(&k, &record(T0, 60_000, 600_000))
        .await
        .unwrap();
    let mut first = set(&[("a", "1")]);
    first.expect.insert("a".into(), None);
    assert!(matches!(
        store.apply(&k, &first, T0 + 1).await,
        Ok(Applied::Done { .. })
    ));
    let mut stale = set(&[("a", "2"), ("b", "2")]);
    stale.expect.insert("a".into(), None);
    assert!(matches!(
        store.apply(&k, &stale, T0 + 2).await,
        Err(StoreError::Conflict(f)) if f == "a"
    ));
    let fields = load(&store, &k, T0 + 3).await.unwrap().record.fields;
    assert_eq!(fields.get("a").map(String::as_str), Some("1"));
    assert!(
        !fields.contains_key("b"),
        "nothing of the refused change was written"
    );
}

/// Concurrent read-modify-write requests on different keys all survive.
pub async fn concurrent_writes_to_different_keys_survive(store: DynStore) {
    let mut b = browser(store);
    b.send("POST", "/put/seed", Some(serde_json::json!(0)))
        .await;
    let replies = concurrently(50, |i| {
        let b = b.clone();
        async move {
            b.send_raw(
                "POST",
                &format!("/put/k{i}"),
                Some(serde_json::json!(i)),
                b.cookie.clone(),
            )
            .await
        }
    })
    .await;
    assert!(replies.iter().all(|r| r.status == 200));
    for i in 0..50 {
        assert_eq!(
            b.send("GET", &format!("/show/k{i}"), None).await.body,
            i.to_string()
        );
    }
}

pub(crate) async fn race_with_logout(store: DynStore, slow_path: &str) {
    let gate = Arc::new(Gate::default());
    let mut b = Browser::new(test_router(layer(store.clone()), gate.clone()));
    b.send("POST", "/login/alice", None).await;
    let key = SessionKey::parse(&b.send("GET", "/key", None).await.body).unwrap();
    let slow = {
        let b = b.clone();
        let path = slow_path.to_owned();
        tokio::spawn(async move { b.send_raw("POST", &path, None, b.cookie.clone()).await })
    };
    tokio::time::timeout(Duration::from_secs(10), gate.loaded.notified())
        .await
        .expect("slow request started");
    assert_eq!(b.clone().send("POST", "/logout", None).await.status, 200);
    gate.proceed.notify_one();
    let slow = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("bounded")
        .unwrap();
    assert!(
        load(&store, &key, crate::now_millis()).await.is_none(),
        "no resurrection"
    );
    let alices = listed(&store, "alice", crate::now_millis()).await;
    assert!(alices.is_none_or(|list| list.is_empty()));
    assert!(
        !slow
            .set_cookies
            .iter()
            .any(|c| c.contains(&b.cookie.clone().unwrap_or_default())),
        "the old cookie is not handed out again"
    );
    // The replayed cookie names no session.
    assert_eq!(b.send("GET", "/show/login", None).await.body, "null");
}

/// A request that loaded the session, then writes after a concurrent logout, writes nothing.
pub async fn write_racing_destroy_leaves_no_record(store: DynStore) {
    race_with_logout(store.clone(), "/slow-put/late").await;
    // And directly at the contract:
    let k = key();
    store.create(&k, &record(T0, 1000, 5000)).await.unwrap();
    store.destroy(&k).await.unwrap();
    assert_eq!(
        store.apply(&k, &set(&[("a", "1")]), T0 + 1).await.unwrap(),
        Applied::Gone
    );
    assert!(load(&store, &k, T0 + 1).await.is_none());
}

/// An increment (a blind write) after a concurrent logout does not revive the session.
pub async fn blind_write_after_destroy_leaves_no_record(store: DynStore) {
    race_with_logout(store, "/slow-incr/late").await;
}

/// A login request dropped after any number of polls (a client hanging up) leaves the session
/// whole: either still under its old ID and not yet the user's, or under a new ID that is in
/// the user's index; never lost, never duplicated.
pub async fn cancelled_login_leaves_one_whole_session(store: DynStore) {
    use std::future::Future as _;
    for polls in 0..12 {
        let mut b = browser(store.clone());
        b.send("POST", "/put/cart", Some(serde_json::json!(1)))
            .await;
        let cookie = b.cookie.clone().unwrap();
        let user = format!("cancel-{polls}-{}", crate::now_millis());
        let request = Request::builder()
            .method("POST")
            .uri(format!("/login/{user}"))
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .expect("valid request");
        let mut call = Box::pin(b.request(request));
        let mut seen = 0;
        std::future::poll_fn(|cx| {
            while seen < polls {
                seen += 1;
                if call.as_mut().poll(cx).is_ready() {
                    break;
                }
            }
            std::task::Poll::Ready(())
        })
        .await;
        drop(call);
        // Let a store call that was already sent finish on the server.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let before = b.send_raw("GET", "/whoami", None, Some(cookie)).await;
        let listed = listed(&store, &user, crate::now_millis()).await;
        let not_indexed = listed.as_ref().is_none_or(Vec::is_empty);
        match before.body.as_str() {
            "null" if before.status == StatusCode::OK && not_indexed => {
                // Not logged in: the old session must still be there, whole.
                let again = b.send("GET", "/show/cart", None).await;
                assert!(
                    again.body == "1" || again.body == "null",
                    "polls {polls}: {again:?}"
                );
            }
            _ => {
                // Without an index the pre-login ID is all there is to look through, and
                // it must reach either the old session or nothing.
                let listed = listed.unwrap_or_else(|| {
                    panic!("polls {polls}: the pre-login ID answered {before:?}")
                });
                assert_eq!(
                    listed.len(),
                    1,
                    "polls {polls}: the new session is indexed once"
                );
                assert_eq!(
                    listed[0].record.fields["cart"], "1",
                    "polls {polls}: with its data"
                );
            }
        }
    }
}
