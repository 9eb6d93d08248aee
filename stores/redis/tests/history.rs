//! The generated, model-checked history (`cloakroom::testing::history`) on Redis:
//!
//! - standalone: three instances on one Redis (two strict, one reading through the read cache),
//!   every link dropped now and then (`CLIENT KILL`), Redis restarted (AOF with
//!   `appendfsync always`: nothing acknowledged may be lost);
//! - Cluster: three instances on a three-primary cluster, every node's links dropped now and
//!   then.
//!
//! Both with futures dropped halfway and time passing. The seed is printed;
//! `CLOAKROOM_SEED=<n>` replays one, `CLOAKROOM_LONG=1` runs 20 histories of 5,000.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cloakroom::testing::history::{check, run, Faults, Instance};
use cloakroom::SessionStore as _;
use cloakroom_redis::{RedisConfig, RedisStore};
use cloakroom_testkit::redis::{Cluster, Options, RedisServer};

/// The stated bound on a stale cached read (docs/redis-data-model.md), with slack for a
/// loaded 2-core machine.
const BOUND: Duration = Duration::from_millis(50);

/// Links dropped, or the server restarted.
struct Standalone {
    server: RedisServer,
    probe: RedisStore,
}

#[async_trait]
impl Faults for Standalone {
    async fn strike(&mut self, pick: u64) -> &'static str {
        if pick % 3 == 0 {
            self.server.restart().await;
            let started = Instant::now();
            while self.probe.ping().await.is_err() {
                assert!(started.elapsed() < Duration::from_secs(10), "restart");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            "restart"
        } else {
            self.server
                .command(&["CLIENT", "KILL", "TYPE", "normal"])
                .await;
            "links dropped"
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_histories_with_dropped_links_and_restarts_match_the_model() {
    check("redis", 3, 600, |seed, ops| async move {
        let server = RedisServer::start_with(Options {
            persist: true,
            ..Options::default()
        })
        .await
        .expect("redis-server is required: apt-get install redis-server (scripts/test does this)");
        let url = server.url();
        let connect = |cache: Option<usize>| {
            let config = RedisConfig::new(&url).with_read_cache(cache);
            async move { RedisStore::connect(config).await.expect("connect") }
        };
        let cached = connect(Some(1_000)).await;
        let instances = vec![
            Instance {
                store: Arc::new(connect(None).await),
                cached: false,
            },
            Instance {
                store: Arc::new(connect(None).await),
                cached: false,
            },
            Instance {
                store: Arc::new(cached.clone()),
                cached: true,
            },
        ];
        let mut faults = Standalone {
            server,
            probe: connect(None).await,
        };
        let counts = run(&instances, &mut faults, seed, ops, BOUND).await;
        eprintln!(
            "read cache hits and misses: {:?}",
            cached.read_cache_counts()
        );
        counts
    })
    .await;
}

/// Every node's links dropped.
struct OnCluster(Cluster);

#[async_trait]
impl Faults for OnCluster {
    async fn strike(&mut self, _pick: u64) -> &'static str {
        for node in &self.0.nodes {
            node.command(&["CLIENT", "KILL", "TYPE", "normal"]).await;
        }
        "links dropped"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_histories_with_dropped_links_match_the_model() {
    check("redis cluster", 2, 400, |seed, ops| async move {
        let cluster = Cluster::start(3, 0).await.expect(
            "redis-server and redis-cli are required: apt-get install redis-server redis-tools",
        );
        let mut instances = Vec::new();
        for _ in 0..3 {
            let store = RedisStore::connect(
                RedisConfig::new(cluster.url())
                    .with_connect_timeout(Duration::from_millis(500))
                    .with_response_timeout(Duration::from_millis(1000)),
            )
            .await
            .expect("connect to the cluster");
            instances.push(Instance {
                store: Arc::new(store),
                cached: false,
            });
        }
        run(
            &instances,
            &mut OnCluster(cluster),
            seed,
            ops,
            Duration::from_millis(5),
        )
        .await
    })
    .await;
}
