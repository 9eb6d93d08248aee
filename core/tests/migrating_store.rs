//! The migrating store: the behavioural suite with every session starting in the new store,
//! and sessions that start in the old one: moved on first use with their data and user, never
//! brought back by a move that races a logout or a revocation (interleavings generated, seeds
//! printed).

use std::sync::Arc;

use cloakroom::{
    now_millis, Applied, Changes, Destroyed, MemoryStore, MigratingStore, Moved, Record, SessionId,
    SessionKey, SessionStore,
};

async fn make_store() -> MigratingStore {
    MigratingStore::new(MemoryStore::default(), MemoryStore::default())
}

cloakroom::store_suite!(make_store);

fn key() -> SessionKey {
    SessionId::random().unwrap().key()
}

fn login(now: u64, user: &str) -> Record {
    let mut record = Record::new(now, now + 600_000, now + 1_200_000);
    record.user = Some(user.into());
    record.fields.insert("n".into(), "1".into());
    record
}

fn stores() -> (Arc<MemoryStore>, Arc<MemoryStore>, MigratingStore) {
    let (old, new) = (
        Arc::new(MemoryStore::default()),
        Arc::new(MemoryStore::default()),
    );
    let migrating = MigratingStore::from_arcs(old.clone(), new.clone());
    (old, new, migrating)
}

#[tokio::test]
async fn a_session_in_the_old_store_moves_on_first_use_with_its_data_and_user() {
    let (old, new, store) = stores();
    let (k, now) = (key(), now_millis());
    old.create(&k, &login(now, "ada")).await.unwrap();
    let loaded = store
        .load(&k, now, None)
        .await
        .unwrap()
        .expect("read through");
    assert_eq!(loaded.record.user.as_deref(), Some("ada"));
    assert_eq!(loaded.record.fields["n"], "1");
    assert!(
        old.load(&k, now, None).await.unwrap().is_none(),
        "moved out"
    );
    assert!(new.load(&k, now, None).await.unwrap().is_some(), "moved in");
    assert_eq!(
        store.list_user("ada", now).await.unwrap().len(),
        1,
        "indexed"
    );
    // A blind write to a session still in the old store moves it too.
    let k2 = key();
    old.create(&k2, &login(now, "ada")).await.unwrap();
    let mut one = Changes::default();
    one.increments.insert("n".into(), 1);
    let applied = store.apply(&k2, &one, now).await.unwrap();
    assert!(matches!(applied, Applied::Done { ref counters, .. } if counters["n"] == 2));
    assert_eq!(store.move_one(&k2, now).await.unwrap(), Moved::Absent);
}

#[tokio::test]
async fn a_logout_never_comes_back_through_a_move() {
    let (old, _new, store) = stores();
    let (k, now) = (key(), now_millis());
    old.create(&k, &login(now, "ada")).await.unwrap();
    // A move that read the old copy before the logout lands after it: refused by the marker.
    let stale = old.load(&k, now, None).await.unwrap().unwrap();
    assert_eq!(store.destroy(&k).await.unwrap(), Destroyed::Session);
    assert!(store.load(&k, now, None).await.unwrap().is_none());
    old.create(&k, &stale.record).await.unwrap(); // the copy the late move still holds
    assert_eq!(store.move_one(&k, now).await.unwrap(), Moved::AlreadyThere);
    assert!(
        store.load(&k, now, None).await.unwrap().is_none(),
        "ended stays ended"
    );
    let mut one = Changes::default();
    one.increments.insert("n".into(), 1);
    assert_eq!(store.apply(&k, &one, now).await.unwrap(), Applied::Gone);
    assert_eq!(
        store.destroy(&k).await.unwrap(),
        Destroyed::Session,
        "the old copy"
    );
    assert_eq!(
        store.destroy(&k).await.unwrap(),
        Destroyed::Nothing,
        "idempotent"
    );
}

/// Random interleavings of moves, reads, writes, logouts and revocations over sessions that
/// start in the old store, on several tasks: a session ended by an acknowledged logout is never
/// read again, and one nobody tried to end is still there at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_histories_of_moves_and_logouts_never_resurrect() {
    let seed: u64 = std::env::var("CLOAKROOM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_millis() % 1_000_000);
    eprintln!("seed {seed} (CLOAKROOM_SEED={seed} replays it)");
    let (old, _new, store) = stores();
    let now = now_millis();
    let keys: Vec<SessionKey> = (0..40).map(|_| key()).collect();
    for (i, k) in keys.iter().enumerate() {
        old.create(k, &login(now, if i % 2 == 0 { "ada" } else { "bob" }))
            .await
            .unwrap();
    }
    let store = Arc::new(store);
    let keys = Arc::new(keys);
    let ended = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let tried = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let mut tasks = Vec::new();
    for worker in 0..4u64 {
        let (store, keys, ended, tried) =
            (store.clone(), keys.clone(), ended.clone(), tried.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(worker + 1);
            let mut next = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            for _ in 0..300 {
                let k = keys[(next() % keys.len() as u64) as usize];
                let now = now_millis();
                match next() % 10 {
                    0 => {
                        tried.lock().unwrap().insert(k);
                        if store.destroy(&k).await.is_ok() {
                            ended.lock().unwrap().insert(k);
                        }
                    }
                    1 => {
                        let _ = store.move_one(&k, now).await;
                    }
                    2 | 3 => {
                        let mut one = Changes::default();
                        one.increments.insert("n".into(), 1);
                        let _ = store.apply(&k, &one, now).await;
                    }
                    _ => {
                        let seen = store.load(&k, now, None).await.unwrap();
                        if ended.lock().unwrap().contains(&k) {
                            assert!(
                                seen.is_none(),
                                "seed {seed}: a logged-out session came back"
                            );
                        }
                    }
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let tried = tried.lock().unwrap().clone();
    for k in keys.iter().filter(|k| !tried.contains(*k)) {
        assert!(
            store.load(k, now_millis(), None).await.unwrap().is_some(),
            "seed {seed}: a session nobody ended was lost"
        );
    }
    // A revocation of everyone, racing nothing now, ends whatever is left in both stores.
    store.destroy_user("ada", None, now_millis()).await.unwrap();
    store.destroy_user("bob", None, now_millis()).await.unwrap();
    for k in keys.iter() {
        assert!(
            store.load(k, now_millis(), None).await.unwrap().is_none(),
            "seed {seed}"
        );
    }
}
