//! Redis Cluster: the shared suite on a real cluster built with `redis-cli --cluster create`,
//! sessions spread over every primary, a primary killed mid-run, and a slot migrated under
//! load and under a reader's cache (which reads through one tracking link per primary). Real processes on loopback; every wait is bounded.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cloakroom::testing::Kept;
use cloakroom::{now_millis, Applied, Changes, Record, SessionId, SessionKey, SessionStore};
use cloakroom_redis::{RedisConfig, RedisStore};
use cloakroom_testkit::redis::{Cluster, RedisServer};

/// A store on its own fresh server, which lives as long as the store.
type OnCluster = Kept<RedisStore, Cluster>;

async fn cluster(masters: usize, replicas: usize) -> Cluster {
    Cluster::start(masters, replicas)
        .await
        .expect("redis-server and redis-cli are required: apt-get install redis-server redis-tools")
}

async fn connect(url: &str) -> RedisStore {
    RedisStore::connect(
        RedisConfig::new(url)
            .with_connect_timeout(Duration::from_millis(500))
            .with_response_timeout(Duration::from_millis(1000)),
    )
    .await
    .expect("connect to the cluster")
}

async fn connect_strict(url: &str) -> RedisStore {
    RedisStore::connect(RedisConfig::new(url).with_read_cache(false))
        .await
        .expect("connect to the cluster")
}

async fn make_store() -> OnCluster {
    let cluster = cluster(3, 0).await;
    let store = connect(&cluster.url()).await;
    assert!(
        store.connection().is_cluster(),
        "a cluster node is detected"
    );
    Kept::new(store, cluster)
}

cloakroom::store_suite!(make_store);

fn key() -> SessionKey {
    SessionId::random().unwrap().key()
}

fn login(now: u64, user: &str) -> Record {
    let mut record = Record::new(now, now + 600_000, now + 1_200_000);
    record.user = Some(user.into());
    record
}

fn one_more() -> Changes {
    let mut changes = Changes::default();
    changes.increments.insert("visits".into(), 1);
    changes
}

/// The integer in a raw `:n` reply (the harness's replies end with QUIT's `+OK`).
fn integer(reply: &str) -> u64 {
    reply
        .lines()
        .next()
        .and_then(|l| l.strip_prefix(':'))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// How many keys each node holds.
async fn keys_per_node(cluster: &Cluster) -> Vec<u64> {
    let mut out = Vec::new();
    for node in &cluster.nodes {
        out.push(integer(&node.command(&["DBSIZE"]).await));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_spread_over_every_primary_and_a_user_is_listed_across_slots() {
    let cluster = cluster(3, 0).await;
    // Seeds as a comma-separated list work as well as one node.
    let seeds: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let store = connect(&format!("redis://{}", seeds.join(","))).await;
    let now = now_millis();
    let mut ada = BTreeSet::new();
    for i in 0..60 {
        let k = key();
        let user = if i % 3 == 0 { "ada" } else { "bob" };
        store.create(&k, &login(now, user)).await.unwrap();
        if user == "ada" {
            ada.insert(k);
        }
    }
    let spread = keys_per_node(&cluster).await;
    assert!(
        spread.iter().all(|n| *n > 0),
        "every primary holds sessions: {spread:?}"
    );
    assert_eq!(store.stats().await.unwrap().sessions, 60);
    let listed: BTreeSet<SessionKey> = store
        .list_user("ada", now_millis())
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.key)
        .collect();
    assert_eq!(listed, ada);
    assert_eq!(
        store.destroy_user("ada", None, now_millis()).await.unwrap(),
        20
    );
    assert_eq!(store.stats().await.unwrap().sessions, 40);
    for k in &ada {
        assert!(store.load(k, now_millis(), None).await.unwrap().is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_is_replaced_by_its_replica_without_a_restart() {
    let mut cluster = cluster(3, 1).await;
    let store = connect(&cluster.url()).await;
    let now = now_millis();
    let mut sessions = Vec::new();
    for _ in 0..30 {
        let k = key();
        store.create(&k, &login(now, "ada")).await.unwrap();
        sessions.push(k);
    }
    // Let the replicas catch up, then kill one primary (not the one the URL names).
    for node in &cluster.nodes {
        node.command(&["WAIT", "1", "2000"]).await;
    }
    let primaries = cluster.primaries().await;
    let victim = *primaries
        .iter()
        .find(|p| **p != cluster.nodes[0].port)
        .expect("another primary");
    let index = cluster.nodes.iter().position(|n| n.port == victim).unwrap();
    cluster.nodes[index].kill().await;

    // Every session is readable and writable again once the replica is promoted.
    let start = Instant::now();
    let mut failed = 0u32;
    for k in &sessions {
        loop {
            match store.apply(k, &one_more(), now_millis()).await {
                Ok(Applied::Done { .. }) => break,
                Ok(other) => panic!("a session was lost in the failover: {other:?}"),
                Err(_) if start.elapsed() < Duration::from_secs(30) => {
                    failed += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no write 30 s after the primary died: {e}"),
            }
        }
    }
    eprintln!(
        "cluster failover: every session writable after {:?} ({failed} failed meanwhile)",
        start.elapsed()
    );
    // Logins work too.
    store
        .create(&key(), &login(now_millis(), "after"))
        .await
        .unwrap();
}

/// Moves the slot of session `k` to another primary as `redis-cli --cluster reshard` does:
/// IMPORTING/MIGRATING, MIGRATE the keys, then hand the slot over. Answers the target node.
async fn move_slot<'c>(
    cluster: &'c Cluster,
    store: &RedisStore,
    k: &SessionKey,
) -> &'c RedisServer {
    let name = store.key_name(k);
    let slot = integer(
        &cluster.nodes[0]
            .command(&["CLUSTER", "KEYSLOT", &name])
            .await,
    )
    .to_string();
    let mut source = None;
    for node in &cluster.nodes {
        if !node
            .command(&["CLUSTER", "COUNTKEYSINSLOT", &slot])
            .await
            .starts_with(":0")
        {
            source = Some(node);
        }
    }
    let source = source.expect("the node holding the session");
    let target = cluster
        .nodes
        .iter()
        .find(|n| n.port != source.port)
        .unwrap();
    let id = |reply: String| reply.lines().nth(1).unwrap_or("").trim().to_owned();
    let source_id = id(source.command(&["CLUSTER", "MYID"]).await);
    let target_id = id(target.command(&["CLUSTER", "MYID"]).await);
    target
        .command(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &source_id])
        .await;
    source
        .command(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &target_id])
        .await;
    let keys = source
        .command(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"])
        .await;
    let keys: Vec<&str> = keys
        .lines()
        .filter(|l| !l.starts_with('*') && !l.starts_with('$') && !l.starts_with('+'))
        .collect();
    assert!(!keys.is_empty(), "the slot holds the session");
    for key in keys {
        let port = target.port.to_string();
        let reply = source
            .command(&["MIGRATE", "127.0.0.1", &port, key, "0", "5000"])
            .await;
        assert!(
            reply.starts_with("+OK") || reply.starts_with("+NOKEY"),
            "{reply}"
        );
    }
    for node in &cluster.nodes {
        node.command(&["CLUSTER", "SETSLOT", &slot, "NODE", &target_id])
            .await;
    }
    assert!(!target
        .command(&["CLUSTER", "COUNTKEYSINSLOT", &slot])
        .await
        .starts_with(":0"));
    target
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migration_under_load_loses_nothing() {
    let cluster = cluster(3, 0).await;
    let store = connect(&cluster.url()).await;
    let now = now_millis();
    let k = key();
    store.create(&k, &login(now, "ada")).await.unwrap();
    // Writes run while the slot moves; ASK and MOVED redirect the store on the way.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut done = 0u32;
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(3) && done < 3_000 {
                match store.apply(&k, &one_more(), now_millis()).await {
                    Ok(Applied::Done { .. }) => done += 1,
                    Ok(other) => panic!("the session went away during the migration: {other:?}"),
                    Err(e) => panic!("a write failed during the migration: {e}"),
                }
            }
            done
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    move_slot(&cluster, &store, &k).await;
    let writes = writer.await.expect("the writer");
    let loaded = store.load(&k, now_millis(), None).await.unwrap().unwrap();
    assert_eq!(
        loaded.record.fields.get("visits").map(String::as_str),
        Some(writes.to_string().as_str()),
        "every acknowledged write is in the migrated session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_reader_follows_a_slot_to_its_new_primary() {
    let cluster = cluster(3, 0).await;
    let a = connect_strict(&cluster.url()).await;
    let b = connect(&cluster.url()).await;
    let k = key();
    a.create(&k, &login(now_millis(), "ada")).await.unwrap();
    let visits = |b: &RedisStore| {
        let b = b.clone();
        async move {
            let loaded = b.load(&k, now_millis(), None).await.unwrap().unwrap();
            loaded.record.fields.get("visits").cloned()
        }
    };
    assert_eq!(visits(&b).await, None);
    let (hits, _) = b.read_cache_counts().expect("the cache is on");
    assert_eq!(visits(&b).await, None);
    assert!(
        b.read_cache_counts().unwrap().0 > hits,
        "served from the cache"
    );

    move_slot(&cluster, &a, &k).await;
    // Each write, now on the new primary, is seen by B's next read (within the push bound).
    for n in 1..=20u32 {
        a.apply(&k, &one_more(), now_millis()).await.unwrap();
        let started = Instant::now();
        while visits(&b).await != Some(n.to_string()) {
            assert!(
                started.elapsed() < Duration::from_millis(50),
                "B read a stale count after write {n}"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    // And B caches on the new primary: a second read is a hit.
    let started = Instant::now();
    loop {
        let (hits, _) = b.read_cache_counts().unwrap();
        visits(&b).await;
        if b.read_cache_counts().unwrap().0 > hits {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "caching again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) until `store` has heard that `key` ended.
async fn hears(store: &RedisStore, key: &SessionKey, issued: u64) -> bool {
    cloakroom::testing::heard_within(store, key, issued, Duration::from_secs(30)).await
}

/// Every instance hears which sessions end wherever their keys live, and keeps hearing when
/// the node it listens on (the one the URL names) dies and its replica takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ends_are_heard_across_nodes_and_after_the_listening_node_dies() {
    let mut cluster = cluster(3, 1).await;
    let (a, b) = (connect(&cluster.url()).await, connect(&cluster.url()).await);
    let issued = now_millis();
    let mut sessions = Vec::new();
    for _ in 0..12 {
        let k = key();
        a.create(&k, &login(issued, "ada")).await.unwrap();
        sessions.push(k);
    }
    for k in &sessions[..6] {
        a.destroy(k).await.unwrap();
    }
    for k in &sessions[..6] {
        assert!(hears(&b, k, issued).await, "an end on any node is heard");
    }
    for node in &cluster.nodes {
        node.command(&["WAIT", "1", "2000"]).await;
    }
    cluster.nodes[0].kill().await;
    let start = Instant::now();
    for k in &sessions[6..] {
        while a.destroy(k).await.is_err() {
            assert!(start.elapsed() < Duration::from_secs(30), "no failover");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut heard = true;
    for k in &sessions[6..] {
        heard &= b.ended_recently(k, issued);
    }
    // Ends made while the feed moved may be missed; one made after it moved is heard.
    if !heard {
        let k = key();
        let mut attempts = 0;
        loop {
            attempts += 1;
            if a.create(&k, &login(now_millis(), "ada")).await.is_ok()
                && a.destroy(&k).await.is_ok()
                && hears(&b, &k, issued).await
            {
                break;
            }
            // Bounded in time: a create may still meet the failover settling (about 5 s).
            assert!(attempts < 50, "the feed did not move off the dead node");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A user with more sessions than the index keeps packed (its list spills into a set in the
/// bucket's slot) is listed and revoked on a cluster as anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_with_many_sessions_is_listed_and_revoked() {
    let cluster = cluster(3, 0).await;
    let store = connect(&cluster.url()).await;
    let now = now_millis();
    let mut sessions = Vec::new();
    for i in 0..90 {
        let k = key();
        store.create(&k, &login(now + i, "ada")).await.unwrap();
        sessions.push(k);
    }
    assert_eq!(store.list_user("ada", now + 100).await.unwrap().len(), 90);
    store.destroy(&sessions[0]).await.unwrap();
    assert_eq!(store.list_user("ada", now + 101).await.unwrap().len(), 89);
    assert_eq!(
        store
            .destroy_user("ada", Some(&sessions[1]), now + 102)
            .await
            .unwrap(),
        88
    );
    assert_eq!(store.list_user("ada", now + 103).await.unwrap().len(), 1);
}
