//! Past one Redis: a managed endpoint re-pointed at a promoted replica, Sentinel failover,
//! and durable logins. Real `redis-server` processes on loopback; every wait is bounded.

use std::time::{Duration, Instant};

use cloakroom::{
    now_millis, Applied, Changes, Record, SessionId, SessionKey, SessionStore, StoreError,
};
use cloakroom_redis::{NotReplicated, RedisConfig, RedisStore};
use cloakroom_testkit::endpoint::Endpoint;
use cloakroom_testkit::redis::{Options, RedisServer, Sentinel};

async fn server(options: Options) -> RedisServer {
    RedisServer::start_with(options)
        .await
        .expect("redis-server is required: apt-get install redis-server (scripts/test does this)")
}

async fn replica_of(primary: &RedisServer) -> RedisServer {
    let replica = server(Options {
        replica_of: Some(primary.port),
        ..Options::default()
    })
    .await;
    replica.wait_synced().await;
    // WAIT counts a replica once the primary has it online and has heard its offset.
    wait_for("the primary to count the replica", || async {
        primary
            .command(&["INFO", "replication"])
            .await
            .contains("state=online")
            && primary
                .command(&["WAIT", "1", "100"])
                .await
                .starts_with(":1")
    })
    .await;
    replica
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn key() -> SessionKey {
    SessionId::random().unwrap().key()
}

fn login(now: u64, user: &str) -> Record {
    let mut record = Record::new(now, now + 600_000, now + 1_200_000);
    record.user = Some(user.into());
    record
}

fn one_more(field: &str) -> Changes {
    let mut changes = Changes::default();
    changes.increments.insert(field.into(), 1);
    changes
}

async fn visits(store: &RedisStore, key: &SessionKey) -> Result<Applied, StoreError> {
    store.apply(key, &one_more("visits"), now_millis()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repointed_endpoint_is_followed_without_a_restart() {
    let primary = server(Options::default()).await;
    let replica = replica_of(&primary).await;
    let endpoint = Endpoint::start(primary.port).await;
    // Strict reads: this checks the main link (with the read cache, a counter's write goes
    // on the tracking link, whose failover `a_managed_failover_moves_the_read_cache_with_the_main_link`
    // checks).
    let store = RedisStore::connect(
        RedisConfig::new(format!("redis://127.0.0.1:{}/0", endpoint.port)).with_read_cache(false),
    )
    .await
    .expect("connect through the endpoint");
    let k = key();
    store.create(&k, &login(now_millis(), "ada")).await.unwrap();
    assert!(matches!(visits(&store, &k).await, Ok(Applied::Done { .. })));
    let name = store.key_name(&k);
    wait_for("the replica to have the session", || async {
        replica
            .command(&["HGET", &name, "visits"])
            .await
            .contains("\r\n1\r\n")
    })
    .await;

    // The managed failover: promote the replica, demote the primary (its open connections
    // stay and now answer READONLY), re-point the endpoint.
    replica.command(&["REPLICAOF", "NO", "ONE"]).await;
    primary
        .command(&["REPLICAOF", "127.0.0.1", &replica.port.to_string()])
        .await;
    endpoint.repoint(replica.port);
    assert!(primary
        .command(&["SET", "probe", "1"])
        .await
        .starts_with("-READONLY"));

    // The next write is refused by the demoted primary, the store finds the endpoint's new
    // target and sends it again there: no request fails.
    let mut failed = 0;
    let start = Instant::now();
    let applied = loop {
        match visits(&store, &k).await {
            Ok(applied) => break applied,
            Err(e) if start.elapsed() < Duration::from_secs(10) => {
                failed += 1;
                eprintln!("write during the failover failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("writes did not resume within 10 s: {e}"),
        }
    };
    assert!(matches!(applied, Applied::Done { .. }), "{applied:?}");
    assert_eq!(failed, 0, "a READONLY refusal is sent again, not failed");
    assert!(store.connection().swaps() >= 1);
    let loaded = store.load(&k, now_millis(), None).await.unwrap().unwrap();
    assert_eq!(
        loaded.record.fields.get("visits").map(String::as_str),
        Some("2")
    );
    assert_eq!(loaded.record.user.as_deref(), Some("ada"));
    // Logins work on the new primary too.
    let k2 = key();
    store
        .create(&k2, &login(now_millis(), "bob"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_writes_wait_for_a_replica_and_fail_without_one() {
    let primary = server(Options::default()).await;
    let config = |port: u16, wait: u64| {
        RedisConfig::new(format!("redis://127.0.0.1:{port}/0"))
            .with_durable_writes(Some(Duration::from_millis(wait)))
            .with_response_timeout(Duration::from_millis(wait + 1_000))
    };
    // No replica: the login is on the primary, but it is not reported done.
    let lonely = RedisStore::connect(config(primary.port, 300))
        .await
        .unwrap();
    let started = Instant::now();
    let refused = lonely.create(&key(), &login(now_millis(), "lonely")).await;
    match refused {
        Err(StoreError::Unavailable(e)) => assert!(e.downcast_ref::<NotReplicated>().is_some()),
        other => panic!("expected NotReplicated, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "bounded by the WAIT timeout"
    );
    // Plain writes never wait.
    let _replica = replica_of(&primary).await;
    // A replica busy on a loaded 2-core machine may take more than 300 ms to acknowledge.
    let store = RedisStore::connect(config(primary.port, 3_000))
        .await
        .unwrap();
    let k = key();
    store.create(&k, &login(now_millis(), "ada")).await.unwrap();
    assert!(matches!(visits(&store, &k).await, Ok(Applied::Done { .. })));
    let new = key();
    let cycled = store
        .cycle(&k, &new, &Changes::default(), now_millis(), now_millis())
        .await
        .unwrap();
    assert!(matches!(cycled, Applied::Done { .. }));
    assert_eq!(
        store.destroy_user("ada", None, now_millis()).await.unwrap(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_is_followed_and_durable_logins_survive_it() {
    let primary = server(Options::default()).await;
    let replica = replica_of(&primary).await;
    let mut sentinels = Vec::new();
    for _ in 0..3 {
        let Some(sentinel) = Sentinel::start(primary.port, "sessions", 2).await else {
            return;
        };
        sentinels.push(sentinel);
    }
    let hosts: Vec<String> = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    let url = format!("redis+sentinel://{}/sessions", hosts.join(","));
    let store = RedisStore::connect(
        RedisConfig::new(&url)
            .with_durable_writes(Some(Duration::from_secs(1)))
            .with_connect_timeout(Duration::from_millis(500))
            .with_response_timeout(Duration::from_millis(3000)),
    )
    .await
    .expect("connect through the sentinels");
    // Another instance, which must keep hearing which sessions end across the failover; it
    // reads strictly, the first through the read cache (the default).
    let other = RedisStore::connect(RedisConfig::new(&url).with_read_cache(false))
        .await
        .expect("connect through the sentinels");

    // Acknowledged logins: each reached the replica before it was reported done.
    let mut logins = Vec::new();
    for i in 0..20 {
        let k = key();
        store
            .create(&k, &login(now_millis(), &format!("user{i}")))
            .await
            .unwrap();
        logins.push(k);
    }
    // Load: logins keep coming while the primary dies; each one acknowledged is kept.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..2_000 {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let k = key();
                if store
                    .create(&k, &login(now_millis(), &format!("load{i}")))
                    .await
                    .is_ok()
                {
                    acknowledged.push(k);
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            acknowledged
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut primary = primary;
    primary.kill().await;

    // The sentinels promote the replica; the store follows without a restart. (A durable
    // login would now fail: the promoted replica has no replica of its own.)
    let start = Instant::now();
    let mut failed = 0u32;
    loop {
        match visits(&store, &logins[0]).await {
            Ok(Applied::Done { .. }) => break,
            Err(_) if start.elapsed() < Duration::from_secs(30) => {
                failed += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(other) => panic!("the acknowledged login is gone: {other:?}"),
            Err(e) => panic!("no write 30 s after the primary died: {e}"),
        }
    }
    eprintln!(
        "sentinel failover: writes resumed after {:?} ({failed} failed meanwhile)",
        start.elapsed()
    );
    assert!(replica.command(&["ROLE"]).await.contains("master"));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let under_load = load.await.expect("the load task");
    assert!(
        !under_load.is_empty(),
        "logins were acknowledged before the kill"
    );
    eprintln!(
        "{} durable logins acknowledged under load",
        under_load.len()
    );
    logins.extend(under_load);
    for k in &logins {
        assert!(
            store.load(k, now_millis(), None).await.unwrap().is_some(),
            "an acknowledged login was lost in the failover"
        );
    }
    // The durable instance's feed followed the sentinels to the new primary: it hears a
    // logout made on the other one (not durable: the new primary has no replica).
    let issued = now_millis();
    other.destroy(&logins[1]).await.unwrap();
    wait_for(
        "an instance to hear a logout after the failover",
        || async { store.ended_recently(&logins[1], issued) },
    )
    .await;

    // The read cache was emptied across the failover and tracks the new primary: repeat
    // reads are hits again, and a change made through the other instance reaches the cache
    // (an invalidation from the new primary), never leaving the old value served.
    let k = logins[0];
    let (hits, _) = store
        .read_cache_counts()
        .expect("the read cache is on by default through Sentinel");
    wait_for("a cached read on the new primary", || async {
        store.load(&k, now_millis(), None).await.unwrap();
        store.read_cache_counts().unwrap().0 > hits
    })
    .await;
    let count = |loaded: Option<cloakroom::Loaded>| {
        loaded.and_then(|l| l.record.fields.get("visits").cloned())
    };
    let before = count(other.load(&k, now_millis(), None).await.unwrap());
    assert_eq!(
        count(store.load(&k, now_millis(), None).await.unwrap()),
        before,
        "the cache serves what Redis holds"
    );
    assert!(matches!(visits(&other, &k).await, Ok(Applied::Done { .. })));
    let after = count(other.load(&k, now_millis(), None).await.unwrap());
    assert_ne!(after, before);
    let changed = Instant::now();
    loop {
        let seen = count(store.load(&k, now_millis(), None).await.unwrap());
        if seen == after {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(1),
            "the cached instance still serves {seen:?} after {:?}",
            changed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_hears_which_sessions_ended() {
    let server = server(Options::default()).await;
    let a = RedisStore::connect(RedisConfig::new(server.url()))
        .await
        .unwrap();
    let b = RedisStore::connect(RedisConfig::new(server.url()))
        .await
        .unwrap();
    let (logged_out, cycled, kept) = (key(), key(), key());
    let issued = now_millis();
    for k in [&logged_out, &cycled, &kept] {
        a.create(k, &login(now_millis(), "ada")).await.unwrap();
    }
    a.destroy(&logged_out).await.unwrap();
    let new = key();
    a.cycle(
        &cycled,
        &new,
        &Changes::default(),
        now_millis(),
        now_millis(),
    )
    .await
    .unwrap();
    wait_for("the other instance to hear of the ends", || async {
        b.ended_recently(&logged_out, issued) && b.ended_recently(&cycled, issued)
    })
    .await;
    assert!(!b.ended_recently(&kept, issued));
    assert!(!b.ended_recently(&new, issued));
}
