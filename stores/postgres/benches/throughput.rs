//! PostgreSQL-store throughput: the shared workload (`cloakroom::testing::throughput`) on a
//! fresh local server with its default durability (every commit flushed to disk). Run with
//! `cargo bench -p cloakroom-postgres --bench throughput`.

use std::sync::Arc;

use cloakroom_postgres::{PostgresConfig, PostgresStore};
use cloakroom_testkit::postgres::{Durability, PostgresServer};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = PostgresServer::start_with(Durability::Durable)
        .await
        .expect("PostgreSQL is required: apt-get install postgresql");
    let store = PostgresStore::connect(PostgresConfig::new(server.url()).with_pool_size(32))
        .await
        .expect("connect");
    cloakroom::testing::throughput::run(Arc::new(store), 2_000, 500).await;
}
