//! Expiry: idle and absolute deadlines, a session's own expiry, throttled refreshes, anonymous sessions.

use std::sync::Arc;
use std::time::Duration;

use crate::{Applied, Changes, Millis, Refresh, SessionLayer, SessionStore};

use super::*;
use crate::testing::harness::*;
use crate::testing::{test_config, DynStore};

/// A session unused for the idle timeout is gone, for reads and for writes.
pub async fn idle_expiry(store: DynStore) {
    let k = key();
    store.create(&k, &record(T0, 1000, 5000)).await.unwrap();
    assert!(load(&store, &k, T0 + 999).await.is_some());
    assert!(load(&store, &k, T0 + 1000).await.is_none());
    assert_eq!(
        store
            .apply(&k, &set(&[("a", "1")]), T0 + 1001)
            .await
            .unwrap(),
        Applied::Gone
    );
}

/// However often a session is refreshed, it ends at its absolute deadline.
pub async fn absolute_expiry(store: DynStore) {
    let k = key();
    store.create(&k, &record(T0, 1000, 2500)).await.unwrap();
    for step in 1..=4u64 {
        let now = T0 + step * 600;
        let refresh = Refresh {
            anonymous: None,
            if_deadline_before: now + 1000,
            new_deadline: now + 1000,
            now,
        };
        let alive = store.load(&k, now, Some(refresh)).await.unwrap();
        assert_eq!(alive.is_some(), now < T0 + 2500, "at +{}ms", step * 600);
    }
}

/// A session given its own expiry ("remember me", [`crate::Expiry`]): a write moves its
/// absolute deadline (out or in), and loads slide it by its own idle timeout, kept in
/// [`crate::EXPIRY_FIELD`], not by the window the layer passes for everyone else.
pub async fn a_session_keeps_its_own_expiry(store: DynStore) {
    let configured = |now: Millis| Refresh {
        anonymous: None,
        if_deadline_before: now + 900,
        new_deadline: now + 1000,
        now,
    };
    let k = key();
    store.create(&k, &record(T0, 1000, 2000)).await.unwrap();
    let mut remember = set(&[(crate::EXPIRY_FIELD, "[5000,500,true]")]);
    remember.absolute_deadline = Some(T0 + 10_000);
    remember.idle_deadline = Some(T0 + 100 + 5000);
    assert!(matches!(
        store.apply(&k, &remember, T0 + 100).await.unwrap(),
        Applied::Done { .. }
    ));
    // Past the old absolute deadline, alive; its own window makes the refresh due.
    let l = store
        .load(&k, T0 + 2500, Some(configured(T0 + 2500)))
        .await
        .unwrap()
        .expect("alive past the old absolute deadline");
    assert_eq!(l.record.absolute_deadline, T0 + 10_000);
    assert!(l.refreshed, "due by its own 5 s timeout");
    assert_eq!(l.record.idle_deadline, T0 + 7500);
    // Not due again until its own interval has passed.
    let l = store
        .load(&k, T0 + 2800, Some(configured(T0 + 2800)))
        .await
        .unwrap()
        .unwrap();
    assert!(!l.refreshed);
    assert!(load(&store, &k, T0 + 7400).await.is_some());
    assert!(
        load(&store, &k, T0 + 7600).await.is_none(),
        "its own idle timeout"
    );

    // A lifetime moved in ends the session at once when it lies in the past.
    let k = key();
    store.create(&k, &record(T0, 1000, 2000)).await.unwrap();
    let shorten = Changes {
        absolute_deadline: Some(T0 + 200),
        ..Changes::default()
    };
    store.apply(&k, &shorten, T0 + 100).await.unwrap();
    let l = load(&store, &k, T0 + 150).await.expect("alive until then");
    let deadlines = (l.record.idle_deadline, l.record.absolute_deadline);
    assert_eq!(deadlines, (T0 + 200, T0 + 200));
    assert!(load(&store, &k, T0 + 200).await.is_none());
}

/// The sliding refresh writes only when due, and moves the idle deadline when it does.
pub async fn refresh_is_throttled(store: DynStore) {
    let k = key();
    store.create(&k, &record(T0, 1000, 10_000)).await.unwrap();
    let not_due = Refresh {
        anonymous: None,
        if_deadline_before: T0 + 900,
        new_deadline: T0 + 1100,
        now: T0 + 100,
    };
    let l = store
        .load(&k, T0 + 100, Some(not_due))
        .await
        .unwrap()
        .unwrap();
    assert!(!l.refreshed);
    assert_eq!(l.record.idle_deadline, T0 + 1000);
    let due = Refresh {
        anonymous: None,
        if_deadline_before: T0 + 1500,
        new_deadline: T0 + 1600,
        now: T0 + 600,
    };
    let l = store.load(&k, T0 + 600, Some(due)).await.unwrap().unwrap();
    assert!(l.refreshed);
    assert_eq!(l.record.idle_deadline, T0 + 1600);
    assert!(
        load(&store, &k, T0 + 1500).await.is_some(),
        "the refresh was stored"
    );
}

/// A session without a user gets the anonymous idle timeout; logging in gives it the full one.
pub async fn anonymous_sessions_expire_sooner(store: DynStore) {
    let config = test_config()
        .with_idle_timeout(Duration::from_secs(3600))
        .with_anonymous_idle_timeout(Some(Duration::from_secs(60)))
        .build()
        .expect("valid config");
    let layer = SessionLayer::from_arc(store.clone(), config.clone());
    let mut b = Browser::new(test_router(layer, Arc::default()));
    b.send("POST", "/put/x", Some(serde_json::json!(1))).await;
    let key_of = |b: &Browser| {
        let value = b
            .cookie
            .as_deref()
            .and_then(|c| c.split_once('='))
            .unwrap()
            .1;
        match config.keys.verify(value) {
            Some(crate::Verified::Current(id)) => id.key(),
            other => panic!("own cookie verifies: {other:?}"),
        }
    };
    let now = crate::now_millis();
    let anon = load(&store, &key_of(&b), now).await.unwrap().record;
    assert!(anon.idle_deadline <= now + 60_000, "anonymous: one minute");
    b.send("POST", "/login/alice", None).await;
    let signed_in = load(&store, &key_of(&b), now).await.unwrap().record;
    assert!(
        signed_in.idle_deadline > now + 3_000_000,
        "signed in: the full hour"
    );
}
