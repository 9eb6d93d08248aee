//! Cycling IDs: renewal aliases that only read, privilege cycles that leave no old ID.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::{Applied, Changes, SessionLayer, SessionStore, StoreError, UserChange};

use super::*;
use crate::testing::harness::*;
use crate::testing::{test_config, DynStore};

/// A renewal's `cycle` moves the data to the new key; until the grace window ends the old key
/// can read it, but never write it or cycle it (an old ID must not act as the session).
pub async fn renewal_alias_is_read_only_for_the_grace_window(store: DynStore) {
    let old = key();
    let new = near(&store, &old);
    let mut r = record(T0, 10_000, 50_000);
    r.fields.insert("cart".into(), "3".into());
    store.create(&old, &r).await.unwrap();
    let changes = Changes {
        user: Some(UserChange::Set("alice".into())),
        ..set(&[("login", "true")])
    };
    let done = store
        .cycle(&old, &new, &changes, T0 + 10, T0 + 1000)
        .await
        .unwrap();
    assert!(matches!(done, Applied::Done { key, .. } if key == new));
    let fresh = load(&store, &new, T0 + 20).await.unwrap();
    assert_eq!(fresh.record.fields["cart"], "3");
    assert_eq!(fresh.record.fields["login"], "true");
    assert_eq!(fresh.record.user.as_deref(), Some("alice"));
    // Within the grace window the old key reads the same session, and writes nothing.
    let via_old = load(&store, &old, T0 + 500).await.unwrap();
    assert_eq!(via_old.key, new);
    let mut incr = Changes::default();
    incr.increments.insert("cart".into(), 1);
    assert_eq!(
        store.apply(&old, &incr, T0 + 600).await.unwrap(),
        Applied::Aliased
    );
    assert_eq!(
        store
            .cycle(&old, &near(&store, &old), &incr, T0 + 600, T0 + 900)
            .await
            .unwrap(),
        Applied::Aliased,
        "an old ID cannot walk away with a fresh one"
    );
    let Applied::Done { counters, .. } = store.apply(&new, &incr, T0 + 600).await.unwrap() else {
        panic!("the new key writes");
    };
    assert_eq!(counters["cart"], 4);
    // After it, the old key is rejected; the new one lives on.
    assert!(load(&store, &old, T0 + 1000).await.is_none());
    assert_eq!(
        store.apply(&old, &incr, T0 + 1001).await.unwrap(),
        Applied::Gone
    );
    assert_eq!(
        load(&store, &new, T0 + 1001).await.unwrap().record.fields["cart"],
        "4"
    );
    let alices = listed(&store, "alice", T0 + 1001).await;
    assert!(alices.is_none_or(|list| list.len() == 1));
    // Cycling onto a taken key is a collision; cycling a dead key is Gone.
    assert!(matches!(
        store
            .cycle(&new, &new, &Changes::default(), T0 + 1002, T0 + 2000)
            .await,
        Err(StoreError::IdCollision)
    ));
    let nobody = key();
    assert_eq!(
        store
            .cycle(
                &nobody,
                &near(&store, &nobody),
                &Changes::default(),
                T0,
                T0 + 10
            )
            .await
            .unwrap(),
        Applied::Gone
    );
}

/// A cycle that changes privilege (`grace_until <= now`) leaves no alias: the old key reaches
/// nothing at once, for reads, writes and cycles.
pub async fn privilege_cycle_leaves_no_old_id(store: DynStore) {
    let old = key();
    let new = near(&store, &old);
    store
        .create(&old, &record(T0, 10_000, 50_000))
        .await
        .unwrap();
    let login = Changes {
        user: Some(UserChange::Set("mallory-victim".into())),
        ..Changes::default()
    };
    let done = store.cycle(&old, &new, &login, T0 + 10, T0 + 10).await;
    assert!(matches!(done, Ok(Applied::Done { key, .. }) if key == new));
    assert!(load(&store, &old, T0 + 11).await.is_none());
    assert_eq!(
        store
            .apply(&old, &set(&[("x", "1")]), T0 + 11)
            .await
            .unwrap(),
        Applied::Gone
    );
    assert_eq!(
        store
            .cycle(
                &old,
                &near(&store, &old),
                &Changes::default(),
                T0 + 11,
                T0 + 11
            )
            .await
            .unwrap(),
        Applied::Gone
    );
    assert_eq!(load(&store, &new, T0 + 11).await.unwrap().key, new);
}

/// Login through the layer issues a new cookie, and the pre-login cookie (planted by an
/// attacker, say) reaches nothing from that moment: session fixation is closed.
pub async fn cycle_through_layer(store: DynStore) {
    let mut b = browser(store);
    b.send("POST", "/put/cart", Some(serde_json::json!(["apple"])))
        .await;
    let before = b.cookie.clone().unwrap();
    let login = b.send("POST", "/login/alice", None).await;
    assert_eq!(login.status, 200);
    let after = b.cookie.clone().unwrap();
    assert_ne!(before, after, "login cycles the ID");
    assert_eq!(b.send("GET", "/show/cart", None).await.body, "[\"apple\"]");
    assert_eq!(b.send("GET", "/whoami", None).await.body, "\"alice\"");
    let old = b
        .send_raw("GET", "/whoami", None, Some(before.clone()))
        .await;
    assert_eq!(old.body, "null", "the pre-login cookie reaches nothing");
    let stolen = b.send_raw("POST", "/cycle", None, Some(before)).await;
    assert!(
        !stolen.set_cookies.iter().any(|c| !c.contains("Max-Age=0")),
        "and cannot be cycled into a fresh cookie"
    );
    assert_eq!(b.send("GET", "/whoami", None).await.body, "\"alice\"");
}

/// Periodic renewal rotates the ID with a grace window: the old cookie still reads, never
/// writes (409), never cycles, and is never handed a cookie.
pub async fn renewal_through_layer(store: DynStore) {
    let config = test_config()
        .with_renewal(Duration::from_millis(200))
        .with_grace(Duration::from_secs(30))
        .build()
        .expect("valid config");
    let mut b = Browser::new(test_router(
        SessionLayer::from_arc(store, config),
        Arc::default(),
    ));
    assert_eq!(b.send("POST", "/login/alice", None).await.status, 200);
    b.send("POST", "/put/cart", Some(serde_json::json!(1)))
        .await;
    let before = b.cookie.clone().unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let renewed = b.send("GET", "/show/cart", None).await;
    assert_eq!(renewed.body, "1");
    let after = b.cookie.clone().unwrap();
    assert_ne!(before, after, "the ID was renewed");
    let old_read = b
        .send_raw("GET", "/show/cart", None, Some(before.clone()))
        .await;
    assert_eq!(
        old_read.body, "1",
        "the old ID reads within the grace window"
    );
    assert!(old_read.set_cookies.is_empty());
    for (method, path, body) in [
        ("POST", "/put/cart", Some(serde_json::json!(2))),
        ("POST", "/incr/n", None),
        ("POST", "/cycle", None),
        ("POST", "/login/mallory", None),
    ] {
        let r = b.send_raw(method, path, body, Some(before.clone())).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{path} through the old ID");
        assert!(
            r.set_cookies.is_empty(),
            "{path} hands the old ID no cookie"
        );
    }
    assert_eq!(b.send("GET", "/show/cart", None).await.body, "1");
    assert_eq!(b.send("GET", "/show/n", None).await.body, "null");
    assert_eq!(b.send("GET", "/whoami", None).await.body, "\"alice\"");
}

/// Revoking a user's sessions also ends every old ID that still reached them.
pub async fn revoke_also_ends_aliases(store: DynStore) {
    if !has_user_index(&store).await {
        return;
    }
    let (old, mine) = (key(), key());
    let new = near(&store, &old);
    let alice = Changes {
        user: Some(UserChange::Set("alice".into())),
        ..Changes::default()
    };
    let now = crate::now_millis();
    for k in [&old, &mine] {
        store
            .create(k, &record(now, 60_000, 600_000))
            .await
            .unwrap();
        store.apply(k, &alice, now).await.unwrap();
    }
    store
        .cycle(&old, &new, &Changes::default(), now, now + 60_000)
        .await
        .unwrap();
    assert!(load(&store, &old, now + 1).await.is_some(), "alias works");
    assert_eq!(
        store
            .destroy_user("alice", Some(&mine), now + 1)
            .await
            .unwrap(),
        1
    );
    assert!(load(&store, &new, now + 2).await.is_none());
    assert!(
        load(&store, &old, now + 2).await.is_none(),
        "the alias is gone too"
    );
    assert!(load(&store, &mine, now + 2).await.is_some());
}
