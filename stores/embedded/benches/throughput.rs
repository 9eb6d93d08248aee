//! Embedded-store throughput: read-only loads and conditional writes per second, with 64
//! concurrent callers (as concurrent requests would be). Run with
//! `cargo bench -p cloakroom-embedded --bench throughput`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloakroom::{now_millis, Changes, Record, Refresh, SessionId, SessionKey, SessionStore};
use cloakroom_embedded::EmbeddedStore;

const SESSIONS: usize = 10_000;
const CALLERS: usize = 64;

async fn measure<F, Fut>(label: &str, per_caller: usize, op: F)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|c| {
            let op = op.clone();
            tokio::spawn(async move {
                for i in 0..per_caller {
                    op(c * per_caller + i).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let elapsed = started.elapsed();
    let total = CALLERS * per_caller;
    #[allow(clippy::cast_precision_loss)]
    let rate = total as f64 / elapsed.as_secs_f64();
    println!("{label}: {total} ops in {:.2?} = {rate:.0} ops/s", elapsed);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = std::env::temp_dir().join(format!("cloakroom-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(EmbeddedStore::open(&dir).expect("open"));
    let now = now_millis();
    let keys: Arc<Vec<SessionKey>> = Arc::new(
        (0..SESSIONS)
            .map(|_| SessionId::random().unwrap().key())
            .collect(),
    );
    for chunk in keys.chunks(500) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|k| {
                let (store, k) = (store.clone(), *k);
                let mut record = Record::new(now, now + 3_600_000, now + 86_400_000);
                record.fields.insert("user".into(), "\"alice\"".into());
                record
                    .fields
                    .insert("login_time".into(), "\"2026-11-22T19:15:53Z\"".into());
                tokio::spawn(async move { store.create(&k, &record).await.expect("create") })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
    }
    let (s, k) = (store.clone(), keys.clone());
    // Refresh not due: a pure read, as on most requests.
    let refresh = Refresh {
        anonymous: None,
        if_deadline_before: now,
        new_deadline: now + 3_600_000,
    };
    measure("read-only load", 2_000, move |i| {
        let (s, k) = (s.clone(), k[i % SESSIONS]);
        async move {
            assert!(s
                .load(&k, now_millis(), Some(refresh))
                .await
                .expect("load")
                .is_some());
        }
    })
    .await;
    let (s, k) = (store.clone(), keys.clone());
    measure("conditional write (increment)", 500, move |i| {
        let (s, k) = (s.clone(), k[i % SESSIONS]);
        async move {
            let mut changes = Changes::default();
            changes.increments.insert("visits".into(), 1);
            s.apply(&k, &changes, now_millis()).await.expect("apply");
        }
    })
    .await;
    store.shutdown();
    drop(store);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
