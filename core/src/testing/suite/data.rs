//! Values, flashes, figures and deletes: what goes in comes out, once.

use std::collections::BTreeMap;

use crate::{Changes, SessionKey, SessionStore, StoreError};

use super::*;
use crate::testing::harness::*;
use crate::testing::DynStore;

/// Typed values survive a round trip through the layer and the store.
pub async fn round_trip_of_typed_values(store: DynStore) {
    let mut b = browser(store.clone());
    let value = serde_json::json!({"name": "Zoë", "n": 3, "tags": ["a", "b"], "none": null});
    assert_eq!(
        b.send("POST", "/put/profile", Some(value.clone()))
            .await
            .status,
        200
    );
    assert!(b.cookie.is_some(), "a new session sets a cookie");
    let shown = b.send("GET", "/show/profile", None).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&shown.body).unwrap(),
        value
    );
    // The contract directly: fields and metadata come back as stored.
    let k = key();
    let mut r = record(T0, 1000, 5000);
    r.fields.insert("a".into(), "\"x\"".into());
    store.create(&k, &r).await.unwrap();
    let loaded = load(&store, &k, T0 + 1).await.unwrap();
    assert_eq!(loaded.record.fields, r.fields);
    assert_eq!(loaded.record.created, T0);
    assert_eq!(loaded.key, k);
}

/// Flash messages are shown once, in order.
pub async fn flashes_are_shown_once(store: DynStore) {
    let mut b = browser(store);
    b.send("POST", "/flash/one", None).await;
    b.send("POST", "/flash/two", None).await;
    assert_eq!(
        b.send("GET", "/flashes", None).await.body,
        "[\"one\",\"two\"]"
    );
    assert_eq!(b.send("GET", "/flashes", None).await.body, "[]");
}

/// The live-session count follows creates and destroys.
pub async fn stats_count_live_sessions(store: DynStore) {
    let before = match store.stats().await {
        Ok(stats) => stats.sessions,
        Err(StoreError::Unsupported(_)) => {
            // Optional; then the store is taken to be up.
            store.ping().await.expect("ping");
            return;
        }
        Err(e) => panic!("stats: {e}"),
    };
    let keys: Vec<SessionKey> = (0..5).map(|_| key()).collect();
    let now = crate::now_millis();
    for k in &keys {
        store.create(k, &record(now, 60_000, 60_000)).await.unwrap();
    }
    assert_eq!(store.stats().await.unwrap().sessions, before + 5);
    store.destroy(&keys[0]).await.unwrap();
    assert_eq!(store.stats().await.unwrap().sessions, before + 4);
}

/// A walk of every session, page by page (small pages, so that cursors are used), lists
/// each session created before it, whatever the store already held.
pub async fn scan_lists_every_session(store: DynStore) {
    let now = crate::now_millis();
    let keys: Vec<SessionKey> = (0..7).map(|_| key()).collect();
    for k in &keys {
        store.create(k, &record(now, 60_000, 60_000)).await.unwrap();
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor: Option<String> = None;
    for page in 0.. {
        assert!(page < 100_000, "the walk ends");
        let found = match store.scan(cursor.as_deref(), 2).await {
            Ok(found) => found,
            Err(StoreError::Unsupported(_)) if page == 0 => return, // optional
            Err(e) => panic!("scan: {e}"),
        };
        seen.extend(found.keys);
        match found.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    for k in &keys {
        assert!(seen.contains(k), "a session was not listed");
    }
}

/// A tombstone keeps why a session ended, for that session only (where the store keeps
/// them: optional, and a store without them answers `None`).
pub async fn an_end_keeps_its_reason(store: DynStore) {
    use crate::events::EndReason;
    let (k, now) = (key(), crate::now_millis());
    store
        .record_end(&k, EndReason::Revoked, now + 60_000)
        .await
        .unwrap();
    match store.end_reason(&k, now).await.unwrap() {
        None => return,
        Some(reason) => assert_eq!(reason, EndReason::Revoked),
    }
    assert_eq!(store.end_reason(&key(), now).await.unwrap(), None);
    store
        .record_end(&k, EndReason::LoggedOut, now + 60_000)
        .await
        .unwrap();
    assert_eq!(
        store.end_reason(&k, now).await.unwrap(),
        Some(EndReason::LoggedOut),
        "the latest end"
    );
}

/// An increment of a non-integer field fails and leaves the whole change unapplied.
pub async fn bad_increment_changes_nothing(store: DynStore) {
    let k = key();
    let mut r = record(T0, 1000, 5000);
    r.fields.insert("name".into(), "\"bob\"".into());
    store.create(&k, &r).await.unwrap();
    let mut changes = set(&[("other", "1")]);
    changes.increments.insert("name".into(), 1);
    assert!(matches!(
        store.apply(&k, &changes, T0 + 1).await,
        Err(StoreError::NotAnInteger(_))
    ));
    let fields: BTreeMap<String, String> = load(&store, &k, T0 + 2).await.unwrap().record.fields;
    assert_eq!(fields, r.fields);
}

/// `create` never overwrites an existing session.
pub async fn id_collision_on_create(store: DynStore) {
    let k = key();
    let mut r = record(T0, 1000, 5000);
    r.fields.insert("owner".into(), "1".into());
    store.create(&k, &r).await.unwrap();
    let other = record(T0, 1000, 5000);
    assert!(matches!(
        store.create(&k, &other).await,
        Err(StoreError::IdCollision)
    ));
    assert_eq!(
        load(&store, &k, T0 + 1).await.unwrap().record.fields["owner"],
        "1"
    );
}

/// Destroying twice is fine; destroying a renewal's alias ends only the alias, never the
/// session (an old ID may not log its session out); destroying the session ends its alias.
pub async fn destroy_is_idempotent_and_an_alias_ends_only_itself(store: DynStore) {
    use crate::Destroyed;
    let old = key();
    let new = near(&store, &old);
    store
        .create(&old, &record(T0, 10_000, 50_000))
        .await
        .unwrap();
    store
        .cycle(&old, &new, &Changes::default(), T0 + 1, T0 + 5000)
        .await
        .unwrap();
    assert_eq!(store.destroy(&old).await.unwrap(), Destroyed::Alias);
    assert!(
        load(&store, &new, T0 + 2).await.is_some(),
        "the session lives on"
    );
    assert!(
        load(&store, &old, T0 + 2).await.is_none(),
        "the old ID is dead"
    );
    assert_eq!(store.destroy(&old).await.unwrap(), Destroyed::Nothing);
    // A session takes its alias with it.
    let newer = near(&store, &new);
    store
        .cycle(&new, &newer, &Changes::default(), T0 + 3, T0 + 5000)
        .await
        .unwrap();
    assert_eq!(store.destroy(&newer).await.unwrap(), Destroyed::Session);
    assert!(
        load(&store, &new, T0 + 4).await.is_none(),
        "its alias went with it"
    );
    assert_eq!(store.destroy(&newer).await.unwrap(), Destroyed::Nothing);
    assert_eq!(store.destroy(&key()).await.unwrap(), Destroyed::Nothing);
}
