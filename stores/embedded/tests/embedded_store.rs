//! The behavioural suite against the embedded store, plus what only a file store has:
//! surviving a restart, purging, and refusing a corrupt file.

use std::sync::atomic::{AtomicU64, Ordering};

use cloakroom::{now_millis, Changes, Record, SessionId, SessionStore, UserChange};
use cloakroom_embedded::{EmbeddedError, EmbeddedStore, FILE_NAME};

fn fresh_dir() -> std::path::PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "cloakroom-embedded-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn make_store() -> EmbeddedStore {
    EmbeddedStore::open(fresh_dir()).expect("open a fresh store")
}

cloakroom::store_suite!(make_store);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_user_index_survive_a_restart() {
    let dir = fresh_dir();
    let key = SessionId::random().unwrap().key();
    let now = now_millis();
    {
        let store = EmbeddedStore::open(&dir).unwrap();
        store
            .create(&key, &Record::new(now, now + 60_000, now + 120_000))
            .await
            .unwrap();
        let changes = Changes {
            user: Some(UserChange::Set("alice".into())),
            set: [("cart".to_owned(), "[1,2]".to_owned())].into(),
            ..Changes::default()
        };
        store.apply(&key, &changes, now).await.unwrap();
        // Reopening while open is a clear error, not a panic.
        assert!(matches!(
            EmbeddedStore::open(&dir),
            Err(EmbeddedError::InUse { .. })
        ));
        store.shutdown();
    }
    let store = EmbeddedStore::open(&dir).unwrap();
    let loaded = store.load(&key, now + 1, None).await.unwrap().unwrap();
    assert_eq!(loaded.record.fields["cart"], "[1,2]");
    assert_eq!(store.list_user("alice", now + 1).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_expired_sessions_and_their_index_entries() {
    let store = make_store().await;
    let now = now_millis();
    let (dead, live) = (
        SessionId::random().unwrap().key(),
        SessionId::random().unwrap().key(),
    );
    let mut r = Record::new(now - 10_000, now - 5_000, now + 60_000);
    r.user = Some("bob".into());
    store.create(&dead, &r).await.unwrap();
    store
        .create(&live, &Record::new(now, now + 60_000, now + 60_000))
        .await
        .unwrap();
    assert_eq!(store.stats().await.unwrap().sessions, 2);
    assert_eq!(store.purge_expired(now).await.unwrap(), 1);
    assert_eq!(store.stats().await.unwrap().sessions, 1);
    assert!(store
        .list_user("bob", now - 20_000)
        .await
        .unwrap()
        .is_empty());
    assert!(store.load(&live, now, None).await.unwrap().is_some());
}

#[test]
fn a_corrupt_file_is_a_clear_error() {
    let dir = fresh_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(FILE_NAME),
        b"this is not a database, just some bytes".repeat(200),
    )
    .unwrap();
    let error = EmbeddedStore::open(&dir).unwrap_err();
    assert!(
        matches!(error, EmbeddedError::Unreadable { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("Move it aside"), "{error}");
}

/// Expired rows stay until the purge, and say which deadline passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_says_which_deadline_passed() {
    cloakroom::testing::an_expiry_says_which_deadline_passed(std::sync::Arc::new(
        make_store().await,
    ))
    .await;
}
