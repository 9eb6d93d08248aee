//! The throughput workload every store's benchmark runs, so their figures sit side by side:
//! 10,000 login-sized sessions, then read-only loads and conditional writes (increments)
//! from 64 concurrent callers (as concurrent requests would be). Each store crate has a
//! `throughput` bench (`cargo bench -p <crate> --bench throughput`) that calls [`run`].

use std::sync::Arc;
use std::time::Instant;

use crate::testing::DynStore;
use crate::{now_millis, Changes, Record, Refresh, SessionId, SessionKey};

/// Sessions the workload creates first.
pub const SESSIONS: usize = 10_000;
/// Concurrent callers.
pub const CALLERS: usize = 64;

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
    println!("{label}: {total} ops in {elapsed:.2?} = {rate:.0} ops/s");
}

/// Creates the sessions, then prints reads/s and writes/s (`reads` and `writes` per caller).
///
/// # Panics
/// If the store fails: a benchmark of a failing store measures nothing.
pub async fn run(store: DynStore, reads: usize, writes: usize) {
    let now = now_millis();
    let keys: Arc<Vec<SessionKey>> = Arc::new(
        (0..SESSIONS)
            .map(|_| SessionId::random().expect("randomness").key())
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
        now,
    };
    measure("read-only load", reads, move |i| {
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
    let (s, k) = (store, keys);
    measure("conditional write (increment)", writes, move |i| {
        let (s, k) = (s.clone(), k[i % SESSIONS]);
        async move {
            let mut changes = Changes::default();
            changes.increments.insert("visits".into(), 1);
            s.apply(&k, &changes, now_millis()).await.expect("apply");
        }
    })
    .await;
}
