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

/// A session signed in as `user`, created at `now` with these timeouts (ms).
async fn signed_in(
    store: &DynStore,
    user: &str,
    now: crate::Millis,
    idle: crate::Millis,
    absolute: crate::Millis,
) -> SessionKey {
    let k = key();
    store
        .create(&k, &record(now, idle, absolute))
        .await
        .unwrap();
    let login = Changes {
        user: Some(crate::UserChange::Set(user.to_owned())),
        ..Changes::default()
    };
    store.apply(&k, &login, now).await.unwrap();
    k
}

/// Ending a signed-in session keeps why in the same step where the store keeps reasons
/// (optional: a store that only destroys says `kept: false`), and says whose session it
/// was; an anonymous session keeps nothing (a flood grows no tombstones), an old ID ends
/// only itself and keeps nothing, and ending nothing changes no reason.
pub async fn an_end_keeps_its_reason_in_the_same_step(store: DynStore) {
    use crate::events::EndReason;
    use crate::Destroyed;
    let now = crate::now_millis();
    let until = now + 60_000;
    let k = signed_in(&store, "alice", now, 60_000, 120_000).await;
    let ended = store.end(&k, EndReason::Revoked, until).await.unwrap();
    assert_eq!(ended.destroyed, Destroyed::Session);
    assert!(load(&store, &k, now).await.is_none(), "ended");
    if ended.kept {
        assert_eq!(ended.user.as_deref(), Some("alice"));
        assert_eq!(
            store.end_reason(&k, now).await.unwrap(),
            Some(EndReason::Revoked)
        );
    } else if let Some(user) = &ended.user {
        assert_eq!(user, "alice");
    }
    let again = store.end(&k, EndReason::LoggedOut, until).await.unwrap();
    assert_eq!(again.destroyed, Destroyed::Nothing);
    assert!(!again.kept, "ending nothing keeps nothing");
    if ended.kept {
        assert_eq!(
            store.end_reason(&k, now).await.unwrap(),
            Some(EndReason::Revoked),
            "ending nothing changes no reason"
        );
    }

    let anonymous = key();
    store
        .create(&anonymous, &record(now, 60_000, 120_000))
        .await
        .unwrap();
    let ended = store
        .end(&anonymous, EndReason::LoggedOut, until)
        .await
        .unwrap();
    assert_eq!(ended.destroyed, Destroyed::Session);
    assert!(!ended.kept && ended.user.is_none(), "{ended:?}");
    assert_eq!(store.end_reason(&anonymous, now).await.unwrap(), None);

    let old = signed_in(&store, "bob", now, 60_000, 120_000).await;
    let new = near(&store, &old);
    store
        .cycle(&old, &new, &Changes::default(), now, now + 30_000)
        .await
        .unwrap();
    let ended = store.end(&old, EndReason::LoggedOut, until).await.unwrap();
    assert_eq!(ended.destroyed, Destroyed::Alias);
    assert!(!ended.kept && ended.user.is_none(), "{ended:?}");
    assert!(
        load(&store, &new, now).await.is_some(),
        "an old ID ends only itself"
    );
    assert_eq!(store.end_reason(&old, now).await.unwrap(), None);
    assert_eq!(store.end_reason(&new, now).await.unwrap(), None);
}

/// Ending a signed-in session that is already past a deadline (by the caller's clock; the
/// store has not dropped it yet) is no logout: nothing ended here, and the reason kept, if
/// any, is which deadline passed.
pub async fn ending_an_expired_session_is_no_logout(store: DynStore) {
    use crate::events::EndReason;
    use crate::Destroyed;
    let now = crate::now_millis();
    // Created 10 s ago with a 1 s idle timeout: expired 9 s ago.
    let k = signed_in(&store, "gus", now - 10_000, 1_000, 60_000).await;
    let ended = store
        .end(&k, EndReason::LoggedOut, now + 60_000)
        .await
        .unwrap();
    assert_ne!(ended.destroyed, Destroyed::Alias);
    if ended.kept {
        panic!("an expired session was ended as a logout: {ended:?}");
    }
    let said = store.end_reason(&k, now).await.unwrap();
    assert!(
        matches!(
            said,
            None | Some(EndReason::ExpiredIdle | EndReason::Expired)
        ),
        "{said:?}"
    );
}

/// Ending a user's other sessions names each one that ended, and keeps the reason for each
/// (where the store keeps reasons), never for the one kept.
pub async fn end_user_keeps_each_reason(store: DynStore) {
    use crate::events::EndReason;
    if !has_user_index(&store).await {
        return;
    }
    let now = crate::now_millis();
    let user = format!("carol-{}", key());
    let mut keys = Vec::new();
    for _ in 0..3 {
        keys.push(signed_in(&store, &user, now, 60_000, 120_000).await);
    }
    let other = signed_in(&store, "dave", now, 60_000, 120_000).await;
    let reason = EndReason::RevokedByOperator;
    let mut ended = store
        .end_user(&user, Some(&keys[0]), reason, now + 60_000, now)
        .await
        .unwrap();
    ended.sort_unstable();
    let mut expected = keys[1..].to_vec();
    expected.sort_unstable();
    assert_eq!(ended, expected);
    assert!(load(&store, &keys[0], now).await.is_some(), "kept");
    assert!(load(&store, &other, now).await.is_some(), "another user's");
    let mut kept = Vec::new();
    for k in &keys[1..] {
        assert!(load(&store, k, now).await.is_none(), "ended");
        kept.push(store.end_reason(k, now).await.unwrap());
    }
    assert!(
        kept.iter().all(|r| *r == Some(reason)) || kept.iter().all(Option::is_none),
        "every ended session keeps its reason, or none does: {kept:?}"
    );
    assert_eq!(store.end_reason(&keys[0], now).await.unwrap(), None);
    assert_eq!(store.end_reason(&other, now).await.unwrap(), None);
}

/// A signed-in session that expired says which deadline passed where the store can still
/// tell (it keeps expired rows until a purge), or nothing; never the wrong one.
pub async fn an_expiry_says_which_deadline_passed_or_nothing(store: DynStore) {
    let said = expiry_reasons(&store).await;
    assert!(said == (None, None) || said == REFINED, "{said:?}");
}

/// For a store that keeps expired sessions until a purge (not part of the suite: Redis lets
/// them go): an idle expiry and an absolute one each say which deadline passed.
pub async fn an_expiry_says_which_deadline_passed(store: DynStore) {
    assert_eq!(expiry_reasons(&store).await, REFINED);
}

const REFINED: (
    Option<crate::events::EndReason>,
    Option<crate::events::EndReason>,
) = (
    Some(crate::events::EndReason::ExpiredIdle),
    Some(crate::events::EndReason::ExpiredAbsolute),
);

/// What the store says of a signed-in session past its idle deadline, and of one past its
/// absolute deadline, once a load found each gone.
async fn expiry_reasons(
    store: &DynStore,
) -> (
    Option<crate::events::EndReason>,
    Option<crate::events::EndReason>,
) {
    let idle = signed_in(store, "erin", T0, 1000, 5000).await;
    let absolute = signed_in(store, "erin", T0, 1500, 1500).await;
    let at = T0 + 1600;
    assert!(load(store, &idle, at).await.is_none());
    assert!(load(store, &absolute, at).await.is_none());
    (
        store.end_reason(&idle, at).await.unwrap(),
        store.end_reason(&absolute, at).await.unwrap(),
    )
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
