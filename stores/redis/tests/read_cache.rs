//! The read cache (`CLIENT TRACKING`): the whole behavioural suite again with it on, and what
//! only it can get wrong: serving a record another writer changed, or one from before a lost
//! tracking link.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloakroom::testing::{DynStore, Kept};
use cloakroom::{now_millis, Changes, Record, SessionId, SessionKey, SessionStore};
use cloakroom_redis::{RedisConfig, RedisStore};
use cloakroom_testkit::redis::{Options, RedisServer};

/// A store on its own fresh server, which lives as long as the store.
type Cached = Kept<RedisStore, RedisServer>;

async fn server(persist: bool) -> RedisServer {
    RedisServer::start_with(Options {
        persist,
        ..Options::default()
    })
    .await
    .expect("redis-server is required: apt-get install redis-server (scripts/test does this)")
}

async fn cached(server: &RedisServer) -> RedisStore {
    let store = RedisStore::connect(RedisConfig::new(server.url()).with_read_cache_bytes(1 << 20))
        .await
        .expect("connect");
    assert!(store.read_cache_counts().is_some(), "tracking is on");
    store
}

async fn make_store() -> Cached {
    let server = server(false).await;
    Kept::new(cached(&server).await, server)
}

// Every guarantee of the contract holds with the cache on.
cloakroom::store_suite!(make_store);

fn key() -> SessionKey {
    SessionId::random().unwrap().key()
}

fn session(now: u64) -> Record {
    let mut r = Record::new(now, now + 60_000, now + 120_000);
    r.fields.insert("n".into(), "1".into());
    r
}

/// Polls `check` until it holds, for at most `limit`; returns how long it took.
async fn within(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

/// A repeat read costs no command; a change by another instance (another connection)
/// reaches the cache by Redis' push, and so does a logout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_reads_are_free_and_other_writers_invalidate() {
    let server = server(false).await;
    let reader = cached(&server).await;
    let writer = RedisStore::connect(RedisConfig::new(server.url()).with_read_cache(false))
        .await
        .unwrap();
    let (k, now) = (key(), now_millis());
    writer.create(&k, &session(now)).await.unwrap();
    assert!(reader.load(&k, now + 1, None).await.unwrap().is_some());
    let before = server.command_calls().await;
    for _ in 0..10 {
        assert!(reader.load(&k, now + 2, None).await.unwrap().is_some());
    }
    let after = server.command_calls().await;
    assert_eq!(
        after.get("hgetall"),
        before.get("hgetall"),
        "served from the cache"
    );
    let mut set = Changes::default();
    set.set.insert("n".into(), "2".into());
    writer.apply(&k, &set, now + 3).await.unwrap();
    let seen = within(Duration::from_secs(2), async || {
        reader
            .load(&k, now + 4, None)
            .await
            .unwrap()
            .unwrap()
            .record
            .fields["n"]
            == "2"
    })
    .await;
    assert!(seen.is_some(), "another writer's change reaches the cache");
    writer.destroy(&k).await.unwrap();
    let gone = within(Duration::from_secs(2), async || {
        reader.load(&k, now + 5, None).await.unwrap().is_none()
    })
    .await;
    let gone = gone.expect("a logout elsewhere reaches the cache");
    eprintln!("logout reached the other instance's cache after {gone:?}");
}

/// Losing the tracking link empties the cache: after Redis restarts, a record changed while
/// nobody was tracking is read fresh, never served from before the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_tracking_link_empties_the_cache() {
    let mut server = server(true).await;
    let store = cached(&server).await;
    let (k, now) = (key(), now_millis());
    store.create(&k, &session(now)).await.unwrap();
    assert!(store.load(&k, now + 1, None).await.unwrap().is_some());
    server.kill().await;
    // As soon as the connection notices the loss, the cache is empty: reads go to Redis (and
    // fail while it is down). Nobody can change a session while Redis is down, so what was
    // served until then was not stale.
    let lost = within(Duration::from_secs(5), async || {
        store.load(&k, now + 2, None).await.is_err()
    })
    .await;
    assert!(
        lost.is_some(),
        "the loss is noticed and the cache no longer serves"
    );
    server.restart().await;
    // A restarted server answers LOADING while it replays its file: retry until it takes it.
    let written = within(Duration::from_secs(10), async || {
        server
            .command(&["HSET", &store.key_name(&k), "n", "7"])
            .await
            .starts_with(':')
    })
    .await;
    assert!(written.is_some(), "the restarted server takes writes");
    let fresh = within(Duration::from_secs(10), async || {
        matches!(
            store.load(&k, now + 3, None).await,
            Ok(Some(l)) if l.record.fields["n"] == "7"
        )
    })
    .await;
    assert!(fresh.is_some(), "read fresh after the link came back");
}

/// With the cache, a stream of simple writes takes no script and no re-read: each write's
/// effect is applied to the cached record (the tracking connection is NOLOOP, so no
/// invalidation comes back for it), while another writer's change still invalidates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_writes_keep_the_record_cached_and_current() {
    let server = server(false).await;
    let store = cached(&server).await;
    let other = RedisStore::connect(RedisConfig::new(server.url()).with_read_cache(false))
        .await
        .unwrap();
    let (k, now) = (key(), now_millis());
    store.create(&k, &session(now)).await.unwrap();
    assert!(store.load(&k, now + 1, None).await.unwrap().is_some());
    let before = server.command_calls().await;
    let mut one = Changes::default();
    one.increments.insert("n".into(), 1);
    for expected in 2..=6 {
        let done = store.apply(&k, &one, now + 2).await.unwrap();
        assert!(
            matches!(done, cloakroom::Applied::Done { ref counters, .. } if counters["n"] == expected)
        );
        assert_eq!(
            store.cached(&k).map(|r| r.fields["n"].clone()).as_deref(),
            Some(expected.to_string().as_str()),
            "the cached record follows the writes"
        );
    }
    let after = server.command_calls().await;
    assert_eq!(after.get("evalsha"), before.get("evalsha"), "no script");
    assert_eq!(after.get("hgetall"), before.get("hgetall"), "no re-read");
    let mut set = Changes::default();
    set.set.insert("x".into(), "1".into());
    other.apply(&k, &set, now + 3).await.unwrap();
    let dropped = within(Duration::from_secs(2), async || store.cached(&k).is_none()).await;
    assert!(
        dropped.is_some(),
        "another writer's change still invalidates"
    );
    let fresh = store.load(&k, now + 4, None).await.unwrap().unwrap().record;
    assert_eq!(
        (fresh.fields["n"].as_str(), fresh.fields["x"].as_str()),
        ("6", "1")
    );
}

/// Through the layer: with the cache, a blind increment (the app's visit counter) on a
/// session that was read before takes the script-free path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blind_increments_through_the_layer_take_no_script() {
    let server = server(false).await;
    let store: DynStore = Arc::new(cached(&server).await);
    let layer = cloakroom::SessionLayer::from_arc(
        store,
        cloakroom::testing::test_config().build().unwrap(),
    );
    let mut b =
        cloakroom::testing::Browser::new(cloakroom::testing::test_router(layer, Arc::default()));
    b.send("POST", "/login/alice", None).await;
    b.send("GET", "/whoami", None).await;
    let before = server.command_calls().await;
    for n in 1..=5 {
        assert_eq!(
            b.send("POST", "/incr/visits", None).await.body,
            n.to_string()
        );
    }
    let after = server.command_calls().await;
    assert_eq!(
        after.get("evalsha"),
        before.get("evalsha"),
        "{before:?} {after:?}"
    );
}

/// Concurrent script-free increments from one process come back in any order; the cached
/// record adds their steps, so it ends exactly where Redis does, and stays cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_keep_the_cached_counter_exact() {
    let server = server(false).await;
    let store = Arc::new(cached(&server).await);
    let (k, now) = (key(), now_millis());
    store.create(&k, &session(now)).await.unwrap();
    assert!(store.load(&k, now + 1, None).await.unwrap().is_some());
    let before = server.command_calls().await;
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut one = Changes::default();
            one.increments.insert("n".into(), 1);
            for _ in 0..10 {
                store.apply(&k, &one, now + 2).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let after = server.command_calls().await;
    assert_eq!(after.get("evalsha"), before.get("evalsha"), "no script");
    let truth = server.command(&["HGET", &store.key_name(&k), "n"]).await;
    assert!(truth.contains("321"), "1 + 320 in Redis: {truth}");
    let cached = store.cached(&k).map(|r| r.fields["n"].clone());
    assert_eq!(
        cached.as_deref(),
        Some("321"),
        "the cache adds the same steps"
    );
}

/// Each instance's cache figures are visible from another process's store (`cloakroom
/// stats`): size, bound, hits and misses; an instance that opted out is not listed, and
/// neither is a store without a cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instances_cache_figures_are_visible_from_elsewhere() {
    let server = server(false).await;
    let publishing = cached(&server).await;
    let quiet = RedisStore::connect(
        RedisConfig::new(server.url())
            .with_read_cache_bytes(1 << 20)
            .with_published_cache_figures(false),
    )
    .await
    .unwrap();
    let operator = RedisStore::connect(RedisConfig::new(server.url()).with_read_cache(false))
        .await
        .unwrap();
    let k = key();
    publishing.create(&k, &session(now_millis())).await.unwrap();
    for _ in 0..3 {
        assert!(publishing
            .load(&k, now_millis(), None)
            .await
            .unwrap()
            .is_some());
    }
    let _ = quiet.load(&k, now_millis(), None).await.unwrap();
    // Published at once, then every 10 s.
    let seen = within(Duration::from_secs(5), async || {
        !operator.read_caches().await.unwrap().is_empty()
    })
    .await;
    assert!(seen.is_some(), "published within 5 s");
    let figures = operator.read_caches().await.unwrap();
    assert_eq!(
        figures.len(),
        1,
        "only the publishing instance: {figures:?}"
    );
    let mine = &figures[0];
    assert!(
        mine.instance.contains(&format!(":{}:", std::process::id())),
        "{mine:?}"
    );
    assert_eq!(mine.limit, 1 << 20);
    assert!(mine.at <= now_millis() && mine.at + 35_000 > now_millis());
    drop(quiet);
    drop(publishing);
}
