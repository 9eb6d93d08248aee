//! One user's many logins, on every store, through the session layer (in process: the
//! layer and the store are all a login costs the app besides its HTTP framework):
//!
//! - a login's median time over the first 200 logins of one user and over 200 more after
//!   `--logins` (default 5,000), with the per-user limit off, and with the default limit;
//! - how many bytes that user's listing (`Session::user_sessions`, as JSON) takes then;
//! - the process' resident memory over a login/logout loop (`--loops`, default 50,000), on
//!   the fallback failure policy, whose bounded lists of ended sessions fill on such a loop.
//!
//! Prints a Markdown report. Usage: `cargo run --release -p bench-logins -- [--logins N]
//! [--loops N] [--stores memory,embedded,redis,postgres]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloakroom::testing::{test_config, test_router, Browser};
use cloakroom::{FailurePolicy, MemoryStore, SessionLayer, SessionStore};
use cloakroom_testkit::postgres::{Durability, PostgresServer};
use cloakroom_testkit::redis::RedisServer;

/// A store and whatever server keeps it alive.
struct Running {
    store: Arc<dyn SessionStore>,
    _server: Box<dyn std::any::Any + Send>,
}

async fn start(name: &str) -> Running {
    match name {
        "memory" => Running {
            store: Arc::new(MemoryStore::default()),
            _server: Box::new(()),
        },
        "embedded" => {
            let dir = std::env::temp_dir().join(format!("bench-logins-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Running {
                store: Arc::new(cloakroom_embedded::EmbeddedStore::open(&dir).expect("embedded")),
                _server: Box::new(Cleanup(dir)),
            }
        }
        "redis" => {
            let server = RedisServer::start().await.expect("redis-server");
            let store = cloakroom_redis::RedisStore::connect(cloakroom_redis::RedisConfig::new(
                server.url(),
            ))
            .await
            .expect("redis");
            Running {
                store: Arc::new(store),
                _server: Box::new(server),
            }
        }
        "postgres" => {
            let server = PostgresServer::start_with(Durability::Durable)
                .await
                .expect("postgresql");
            let store = cloakroom_postgres::PostgresStore::connect(
                cloakroom_postgres::PostgresConfig::new(server.url()),
            )
            .await
            .expect("postgres");
            Running {
                store: Arc::new(store),
                _server: Box::new(server),
            }
        }
        other => panic!("unknown store {other}: memory, embedded, redis or postgres"),
    }
}

/// Removes the embedded store's folder when the run ends.
struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

/// One login from a new browser; how long it took, and the browser.
async fn login(base: &Browser, user: &str) -> (Duration, Browser) {
    let mut b = base.clone();
    b.cookie = None;
    let started = Instant::now();
    let reply = b.send("POST", &format!("/login/{user}"), None).await;
    assert_eq!(reply.status, 200, "login: {}", reply.body);
    (started.elapsed(), b)
}

struct Logins {
    first: Duration,
    after: Duration,
    live: usize,
    listed: usize,
    listing_bytes: usize,
}

async fn many_logins(store: Arc<dyn SessionStore>, user: &str, n: usize, cap: bool) -> Logins {
    let config = if cap {
        test_config()
    } else {
        test_config().with_max_sessions_per_user(None)
    };
    let layer = SessionLayer::from_arc(store.clone(), config.build().unwrap());
    let base = Browser::new(test_router(layer, Arc::default()));
    let mut first = Vec::new();
    let mut after = Vec::new();
    let mut last = base.clone();
    for i in 0..n + 200 {
        let (took, b) = login(&base, user).await;
        if i < 200 {
            first.push(took);
        } else if i >= n {
            after.push(took);
        }
        last = b;
    }
    let listing = last.send("GET", "/mine", None).await;
    let listed: Vec<serde_json::Value> = serde_json::from_str(&listing.body).expect("a listing");
    Logins {
        first: median(first),
        after: median(after),
        live: store
            .list_user(user, cloakroom::now_millis())
            .await
            .map_or(0, |l| l.len()),
        listed: listed.len(),
        listing_bytes: listing.body.len(),
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resident memory at half, three quarters and the end of the loop.
async fn login_logout_loop(store: Arc<dyn SessionStore>, loops: usize) -> [u64; 3] {
    let config = test_config()
        .with_failure_policy(FailurePolicy::Fallback)
        .build()
        .unwrap();
    let layer = SessionLayer::from_arc(store, config);
    let base = Browser::new(test_router(layer, Arc::default()));
    let mut rss = [0; 3];
    for i in 1..=loops {
        let (_, mut b) = login(&base, &format!("u{}", i % 1_000)).await;
        assert_eq!(b.send("POST", "/logout", None).await.status, 200);
        if i == loops / 2 {
            rss[0] = rss_kib();
        } else if i == loops * 3 / 4 {
            rss[1] = rss_kib();
        }
    }
    rss[2] = rss_kib();
    rss
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let logins: usize = arg("--logins", "5000").parse().expect("--logins N");
    let loops: usize = arg("--loops", "400000").parse().expect("--loops N");
    let stores = arg("--stores", "memory,embedded,redis,postgres");
    // The loop fills the layer's list of ended sessions (100,000) and the Redis feed's
    // (200,000) past their bounds; the other stores add nothing to the app's memory.
    let loop_stores = arg("--loop-stores", "memory,redis");
    println!(
        "Command: `cargo run --release -p bench-logins -- --logins {logins} --loops {loops}` \
         (in bench/)\n"
    );
    println!(
        "| store | limit | login p50, first 200 | login p50 after {logins} | ratio | live sessions \
         | listed | listing bytes | RSS after {}k / {}k / {}k login+logout pairs |",
        loops / 2000,
        loops * 3 / 4000,
        loops / 1000
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for name in stores.split(',') {
        for cap in [false, true] {
            let running = start(name).await;
            let r = many_logins(running.store.clone(), "ada", logins, cap).await;
            let memory = if cap && loop_stores.split(',').any(|s| s == name) {
                let [half, more, end] = login_logout_loop(running.store.clone(), loops).await;
                format!("{} / {} / {} MiB", half / 1024, more / 1024, end / 1024)
            } else {
                "—".into()
            };
            println!(
                "| {name} | {} | {:.0} µs | {:.0} µs | {:.2}× | {} | {} | {} | {memory} |",
                if cap { "default (100)" } else { "off" },
                r.first.as_secs_f64() * 1e6,
                r.after.as_secs_f64() * 1e6,
                r.after.as_secs_f64() / r.first.as_secs_f64(),
                r.live,
                r.listed,
                r.listing_bytes,
            );
        }
    }
}
