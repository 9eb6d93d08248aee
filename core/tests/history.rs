//! The generated, model-checked history (`cloakroom::testing::history`) on the in-process
//! store: three layers' worth of callers on one store, dropped futures and time passing.

use std::sync::Arc;
use std::time::Duration;

use cloakroom::testing::history::{check, run, Instance, NoFaults};
use cloakroom::testing::DynStore;
use cloakroom::MemoryStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_histories_match_the_model() {
    check("memory", 3, 600, |seed, ops| async move {
        let store: DynStore = Arc::new(MemoryStore::default());
        let instances: Vec<Instance> = (0..3)
            .map(|_| Instance {
                store: store.clone(),
                cached: false,
            })
            .collect();
        run(
            &instances,
            &mut NoFaults,
            seed,
            ops,
            Duration::from_millis(5),
        )
        .await
    })
    .await;
}
