//! The per-user index: listing and revoking a user's sessions.

use crate::{Changes, SessionStore, UserChange, UserSession};

use super::*;
use crate::testing::harness::*;
use crate::testing::DynStore;

/// Sessions tagged with a user can be listed and revoked, all but one.
pub async fn per_user_list_and_revoke(store: DynStore) {
    if !has_user_index(&store).await {
        // The features built on it answer 501, not a wrong answer.
        let mut b = browser(store);
        assert_eq!(b.send("POST", "/login/alice", None).await.status, 200);
        assert_eq!(b.send("GET", "/mine", None).await.status, 501);
        assert_eq!(b.send("POST", "/others", None).await.status, 501);
        return;
    }
    let mut alice: Vec<Browser> = Vec::new();
    let base = browser(store.clone());
    for _ in 0..3 {
        let mut b = base.clone();
        b.cookie = None;
        assert_eq!(b.send("POST", "/login/alice", None).await.status, 200);
        alice.push(b);
    }
    let mut bob = base.clone();
    bob.cookie = None;
    bob.send("POST", "/login/bob", None).await;
    let now = crate::now_millis();
    assert_eq!(store.list_user("alice", now).await.unwrap().len(), 3);
    let mine = alice[0].send("GET", "/mine", None).await;
    let list: Vec<serde_json::Value> = serde_json::from_str(&mine.body).unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list.iter().filter(|s| s["current"] == true).count(), 1);
    assert_eq!(alice[0].send("POST", "/others", None).await.body, "2");
    assert_eq!(store.list_user("alice", now).await.unwrap().len(), 1);
    assert_eq!(alice[1].send("GET", "/show/login", None).await.body, "null");
    assert_eq!(alice[0].send("GET", "/show/login", None).await.body, "true");
    assert_eq!(bob.send("GET", "/show/login", None).await.body, "true");
    // The contract directly, including a change of owner.
    let k = key();
    store.create(&k, &record(T0, 1000, 5000)).await.unwrap();
    let to = |u: &str| Changes {
        user: Some(UserChange::Set(u.into())),
        ..Changes::default()
    };
    store.apply(&k, &to("carol"), T0 + 1).await.unwrap();
    store.apply(&k, &to("dave"), T0 + 2).await.unwrap();
    assert!(store.list_user("carol", T0 + 3).await.unwrap().is_empty());
    let dave: Vec<UserSession> = store.list_user("dave", T0 + 3).await.unwrap();
    assert_eq!(dave.len(), 1);
    assert_eq!(dave[0].key, k);
    assert!(
        store.list_user("dave", T0 + 1000).await.unwrap().is_empty(),
        "expired ones are not listed"
    );
    let k2 = key();
    store.create(&k2, &record(T0, 1000, 5000)).await.unwrap();
    store.apply(&k2, &to("erin"), T0 + 1).await.unwrap();
    assert_eq!(store.destroy_user("erin", None, T0 + 3).await.unwrap(), 1);
    assert!(load(&store, &k2, T0 + 4).await.is_none());
}

/// "Log out my other devices" sent with the ID a renewal just replaced (a request that left
/// before the renewal's answer arrived) keeps the session that ID moved to: the caller is
/// never among the others.
pub async fn revoke_others_spares_the_callers_renewed_session(store: DynStore) {
    if !has_user_index(&store).await {
        return;
    }
    let (old, other) = (key(), key());
    let renewed = near(&store, &old);
    let login = Changes {
        user: Some(UserChange::Set("frank".into())),
        ..Changes::default()
    };
    for k in [&old, &other] {
        store.create(k, &record(T0, 1000, 5000)).await.unwrap();
        store.apply(k, &login, T0 + 1).await.unwrap();
    }
    store
        .cycle(&old, &renewed, &Changes::default(), T0 + 2, T0 + 500)
        .await
        .unwrap();
    assert_eq!(
        store
            .destroy_user("frank", Some(&old), T0 + 3)
            .await
            .unwrap(),
        1
    );
    assert!(
        load(&store, &renewed, T0 + 4).await.is_some(),
        "the caller's session lives"
    );
    assert!(load(&store, &other, T0 + 4).await.is_none());
}
