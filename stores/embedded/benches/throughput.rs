//! Embedded-store throughput: the shared workload (`cloakroom::testing::throughput`) on a
//! fresh file, every write fsync'd before it is acknowledged (group-committed). Run with
//! `cargo bench -p cloakroom-embedded --bench throughput`.

use std::sync::Arc;
use std::time::Duration;

use cloakroom_embedded::EmbeddedStore;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = std::env::temp_dir().join(format!("cloakroom-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = EmbeddedStore::open(&dir).expect("open");
    cloakroom::testing::throughput::run(Arc::new(store.clone()), 2_000, 500).await;
    store.shutdown();
    drop(store);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
