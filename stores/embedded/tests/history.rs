//! The generated, model-checked history (`cloakroom::testing::history`) on the embedded
//! store: three instances' worth of callers on one database, with futures dropped while the
//! writer thread works and time passing.

use std::sync::Arc;
use std::time::Duration;

use cloakroom::testing::history::{check, run, Instance, NoFaults};
use cloakroom::testing::DynStore;
use cloakroom_embedded::EmbeddedStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_histories_match_the_model() {
    check("embedded", 3, 600, |seed, ops| async move {
        let dir =
            std::env::temp_dir().join(format!("cloakroom-history-{}-{seed}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store: DynStore = Arc::new(EmbeddedStore::open(&dir).expect("open the store"));
        let instances: Vec<Instance> = (0..3)
            .map(|_| Instance {
                store: store.clone(),
                cached: false,
            })
            .collect();
        let counts = run(
            &instances,
            &mut NoFaults,
            seed,
            ops,
            Duration::from_millis(5),
        )
        .await;
        drop(instances);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
        counts
    })
    .await;
}
