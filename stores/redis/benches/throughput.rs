//! Redis-store throughput: the shared workload (`cloakroom::testing::throughput`) on a fresh
//! local `redis-server` with an append-only file fsync'd on every write, so its figures are
//! as durable as the embedded and PostgreSQL stores' beside them. Run with
//! `cargo bench -p cloakroom-redis --bench throughput`.

use std::sync::Arc;

use cloakroom_redis::{RedisConfig, RedisStore};
use cloakroom_testkit::redis::{Options, RedisServer};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = RedisServer::start_with(Options {
        persist: true,
        ..Options::default()
    })
    .await
    .expect("redis-server is required: apt-get install redis-server");
    let store = RedisStore::connect(RedisConfig::new(server.url()))
        .await
        .expect("connect");
    cloakroom::testing::throughput::run(Arc::new(store), 2_000, 500).await;
}
