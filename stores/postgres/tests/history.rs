//! The generated, model-checked history (`cloakroom::testing::history`) on PostgreSQL: three
//! instances (each its own pool) on one server, with every connection terminated now and then
//! and the server killed and restarted (the test server runs without fsync, but a killed
//! process loses nothing the OS holds: nothing acknowledged may be lost), futures dropped
//! mid-transaction, and time passing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cloakroom::testing::history::{check, run, Faults, Instance, Struck};
use cloakroom::SessionStore as _;
use cloakroom_postgres::{PostgresConfig, PostgresStore};
use cloakroom_testkit::postgres::PostgresServer;

struct Postgres {
    server: PostgresServer,
    probe: PostgresStore,
}

impl Postgres {
    async fn answers(&self) {
        let started = Instant::now();
        while self.probe.ping().await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "PostgreSQL is back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[async_trait]
impl Faults for Postgres {
    async fn strike(&mut self, pick: u64) -> Struck {
        if pick % 4 == 0 {
            self.server.restart().await;
            self.answers().await;
            Struck::harmless("restart")
        } else {
            let terminate = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                             WHERE pid <> pg_backend_pid() AND datname = current_database()";
            if let Ok(client) = self.probe.pool().get().await {
                let _ = client.simple_query(terminate).await;
            }
            Struck::harmless("connections terminated")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_histories_with_terminated_connections_and_restarts_match_the_model() {
    check("postgres", 3, 500, |seed, ops| async move {
        let server = PostgresServer::start()
            .await
            .expect("PostgreSQL is required: apt-get install postgresql (scripts/test does this)");
        let connect = || {
            let config = PostgresConfig::new(server.url())
                .with_connect_timeout(Duration::from_millis(1_000));
            async move { PostgresStore::connect(config).await.expect("connect") }
        };
        let mut instances = Vec::new();
        for _ in 0..3 {
            instances.push(Instance {
                store: Arc::new(connect().await),
                cached: false,
            });
        }
        let probe = connect().await;
        let mut faults = Postgres { server, probe };
        run(&instances, &mut faults, seed, ops, Duration::from_millis(5)).await
    })
    .await;
}
