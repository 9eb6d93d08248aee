//! The behavioural suite against a real PostgreSQL server, plus what only this store has:
//! outages and restarts, transactions dropped mid-way, the expiry purge, shared databases.

use std::future::Future as _;
use std::time::{Duration, Instant};

use cloakroom::testing::Kept;
use cloakroom::{
    now_millis, Applied, Changes, Record, SessionId, SessionKey, SessionStore, StoreError,
};
use cloakroom_postgres::{PostgresConfig, PostgresError, PostgresStore};
use cloakroom_testkit::postgres::PostgresServer;

/// A store on its own fresh server, which lives as long as the store.
type OnPostgres = Kept<PostgresStore, PostgresServer>;

async fn server() -> PostgresServer {
    PostgresServer::start()
        .await
        .expect("PostgreSQL is required: apt-get install postgresql (scripts/test does this)")
}

async fn connect(server: &PostgresServer) -> PostgresStore {
    PostgresStore::connect(PostgresConfig::new(server.url()))
        .await
        .expect("connect to the test server")
}

async fn make_store() -> OnPostgres {
    let server = server().await;
    Kept::new(connect(&server).await, server)
}

cloakroom::store_suite!(make_store);

fn key() -> SessionKey {
    SessionId::random().unwrap().key()
}

fn fresh(now: u64) -> Record {
    Record::new(now, now + 60_000, now + 120_000)
}

fn increment(field: &str) -> Changes {
    let mut changes = Changes::default();
    changes.increments.insert(field.into(), 1);
    changes
}

/// Runs `statement` on its own connection, as an operator (or an attacker with database
/// access) would.
async fn behind_the_stores_back(server: &PostgresServer, statement: &str) {
    let (client, connection) = cloakroom_postgres::tokio_postgres::connect(
        &server.url(),
        cloakroom_postgres::tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    client.batch_execute(statement).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_a_typed_error_and_the_store_recovers() {
    let mut server = server().await;
    let store = PostgresStore::connect(
        PostgresConfig::new(server.url()).with_connect_timeout(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    let (k, now) = (key(), now_millis());
    store.create(&k, &fresh(now)).await.unwrap();
    server.kill().await;
    let started = Instant::now();
    let failed = store.apply(&k, &increment("n"), now + 1).await;
    assert!(
        matches!(&failed, Err(e) if e.is_outage()),
        "an outage is Unavailable, not a panic or a hang: {failed:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "bounded");
    server.restart().await;
    // The pool drops its dead connections and opens new ones (bounded retries).
    let mut recovered = None;
    for _ in 0..50 {
        match store.apply(&k, &increment("n"), now + 2).await {
            Ok(applied) => {
                recovered = Some(applied);
                break;
            }
            Err(e) => assert!(e.is_outage(), "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        matches!(recovered, Some(Applied::Done { ref counters, .. }) if counters["n"] == 1),
        "the session committed before the outage is still there: {recovered:?}"
    );
}

/// A write dropped at any await (a timeout, a client hanging up) leaves no transaction and
/// no row lock behind: the next write to the same session goes through at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_write_holds_no_lock() {
    let server = server().await;
    let store = PostgresStore::connect(PostgresConfig::new(server.url()).with_pool_size(2))
        .await
        .unwrap();
    let (k, now) = (key(), now_millis());
    store.create(&k, &fresh(now)).await.unwrap();
    let mut done = 0;
    for polls in 0..16 {
        let changes = increment("n");
        let mut call = Box::pin(store.apply(&k, &changes, now + 1));
        let mut seen = 0;
        let mut finished = false;
        std::future::poll_fn(|cx| {
            while seen < polls && !finished {
                seen += 1;
                finished = call.as_mut().poll(cx).is_ready();
            }
            std::task::Poll::Ready(())
        })
        .await;
        drop(call);
        done += u64::from(finished);
        let next = tokio::time::timeout(
            Duration::from_secs(3),
            store.apply(&k, &increment("n"), now + 2),
        )
        .await
        .unwrap_or_else(|_| panic!("polls {polls}: a dropped write left its row locked"));
        assert!(
            matches!(next, Ok(Applied::Done { .. })),
            "polls {polls}: {next:?}"
        );
        done += 1;
    }
    let counted = store.load(&k, now + 3, None).await.unwrap().unwrap();
    let n: u64 = counted.record.fields["n"].parse().unwrap();
    assert!(
        n >= done && n <= done + 16,
        "every finished increment counted, each dropped one at most once: {n} vs {done}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_deletes_what_has_expired_and_nothing_else() {
    let server = server().await;
    let store = connect(&server).await;
    let now = now_millis();
    let (dead, live) = (key(), key());
    store
        .create(&dead, &Record::new(now - 10_000, now - 1, now + 60_000))
        .await
        .unwrap();
    store.create(&live, &fresh(now)).await.unwrap();
    let renewed = key();
    store
        .cycle(&live, &renewed, &Changes::default(), now, now + 5)
        .await
        .unwrap();
    assert_eq!(store.stats().await.unwrap().sessions, 2);
    assert_eq!(store.purge_expired(now).await.unwrap(), 1);
    assert_eq!(store.stats().await.unwrap().sessions, 1);
    assert!(store.load(&renewed, now + 1, None).await.unwrap().is_some());
    assert!(
        store.load(&live, now + 1, None).await.unwrap().is_some(),
        "the alias lives until its grace ends"
    );
    store.purge_expired(now + 10).await.unwrap();
    assert!(
        store.load(&live, now + 1, None).await.unwrap().is_none(),
        "then it is purged"
    );
}

/// Two app instances (two pools) on one database: concurrent increments from both are all
/// counted, and a logout on one is seen by the other at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_database() {
    let server = server().await;
    let (a, b) = (connect(&server).await, connect(&server).await);
    let (k, now) = (key(), now_millis());
    a.create(&k, &fresh(now)).await.unwrap();
    let mut calls = Vec::new();
    for i in 0..100 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        calls.push(tokio::spawn(async move {
            store.apply(&k, &increment("n"), now + 1).await
        }));
    }
    for call in calls {
        assert!(matches!(call.await.unwrap(), Ok(Applied::Done { .. })));
    }
    let loaded = b.load(&k, now + 2, None).await.unwrap().unwrap();
    assert_eq!(loaded.record.fields["n"], "100");
    a.destroy(&k).await.unwrap();
    assert_eq!(
        b.apply(&k, &increment("n"), now + 3).await.unwrap(),
        Applied::Gone
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_typed_errors() {
    let server = server().await;
    for schema in ["", "Bad", "a;drop table x", "a b"] {
        let refused =
            PostgresStore::connect(PostgresConfig::new(server.url()).with_schema(schema)).await;
        assert!(
            matches!(refused, Err(PostgresError::Schema(_))),
            "{schema:?}"
        );
    }
    let refused =
        PostgresStore::connect(PostgresConfig::new("postgres://a:b@host:notaport/x")).await;
    assert!(matches!(refused, Err(PostgresError::Url(_))));
    let closed = cloakroom_testkit::free_port();
    let refused = PostgresStore::connect(
        PostgresConfig::new(format!("postgres://postgres@127.0.0.1:{closed}/postgres"))
            .with_connect_timeout(Duration::from_secs(1)),
    )
    .await;
    assert!(matches!(refused, Err(PostgresError::Connect(_))));
    let refused = PostgresStore::connect(
        PostgresConfig::new(server.url()).with_ca_certificate(Some(b"not a certificate".to_vec())),
    )
    .await;
    assert!(matches!(refused, Err(PostgresError::Certificate(_))));
}

/// Each schema is its own store; a layout newer than this crate's is refused, not misread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_are_separate_and_a_newer_layout_is_refused() {
    let server = server().await;
    let one = connect(&server).await;
    let two = PostgresStore::connect(PostgresConfig::new(server.url()).with_schema("other"))
        .await
        .unwrap();
    let (k, now) = (key(), now_millis());
    one.create(&k, &fresh(now)).await.unwrap();
    assert!(two.load(&k, now, None).await.unwrap().is_none());
    assert_eq!(two.stats().await.unwrap().sessions, 0);
    behind_the_stores_back(&server, "UPDATE other.layout SET version = 99").await;
    let refused =
        PostgresStore::connect(PostgresConfig::new(server.url()).with_schema("other")).await;
    assert!(
        matches!(&refused, Err(PostgresError::Setup(text)) if text.contains("newer")),
        "{refused:?}"
    );
}

/// A row whose fields are not what this crate writes is Corrupt, never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_rows_are_corrupt_not_a_panic() {
    let server = server().await;
    let store = connect(&server).await;
    let (k, now) = (key(), now_millis());
    store.create(&k, &fresh(now)).await.unwrap();
    behind_the_stores_back(&server, "UPDATE cloakroom.sessions SET fields = '[1, 2'").await;
    assert!(matches!(
        store.load(&k, now + 1, None).await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store.apply(&k, &increment("n"), now + 1).await,
        Err(StoreError::Corrupt(_))
    ));
    // The failed write left no transaction open: the session can still be ended.
    assert_eq!(
        store.destroy(&k).await.unwrap(),
        cloakroom::Destroyed::Session
    );
}

/// `sslmode=require` (and libpq's `verify-full`) connect over TLS with the operator's CA; the
/// server's certificate is verified, so without that CA the connection is refused rather
/// than made to an unverified server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_verified_against_the_given_ca() {
    let mut server = server().await;
    let dir = cloakroom_testkit::temp_dir("pg-tls");
    let Some(tls) = cloakroom_testkit::redis::Tls::generate(&dir) else {
        return;
    };
    server.enable_tls(&tls).await;
    let ca = std::fs::read(&tls.ca).unwrap();
    for mode in ["require", "verify-full"] {
        let url = format!("{}?sslmode={mode}", server.url());
        let config = PostgresConfig::new(&url).with_ca_certificate(Some(ca.clone()));
        let store = PostgresStore::connect(config).await.unwrap();
        let (k, now) = (key(), now_millis());
        store.create(&k, &fresh(now)).await.unwrap();
        assert!(store.load(&k, now, None).await.unwrap().is_some(), "{mode}");
        let client = store.pool().get().await.unwrap();
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        assert!(row.get::<_, bool>(0), "{mode}: the connection uses TLS");
    }
    let untrusted = PostgresConfig::new(format!("{}?sslmode=require", server.url()))
        .with_connect_timeout(Duration::from_secs(2));
    let refused = PostgresStore::connect(untrusted).await;
    assert!(
        matches!(refused, Err(PostgresError::Connect(_))),
        "a certificate no trusted CA signed is refused: {refused:?}"
    );
}

/// Waits (bounded) until `store` has heard that `key` ended.
async fn hears(store: &PostgresStore, key: &SessionKey, issued: u64) -> bool {
    cloakroom::testing::heard_within(store, key, issued, Duration::from_secs(5)).await
}

/// A logout or revocation on one instance is heard by the others (`NOTIFY`), so their
/// fallback tickets stop working there too, also after PostgreSQL restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_instances_hear_which_sessions_ended() {
    let mut server = server().await;
    let (a, b) = (connect(&server).await, connect(&server).await);
    let now = now_millis();
    let mut login = fresh(now);
    login.user = Some("ada".into());
    let (k1, k2, k3) = (key(), key(), key());
    for k in [&k1, &k2, &k3] {
        a.create(k, &login).await.unwrap();
    }
    // The listener connects in the background: wait until it hears at all.
    a.destroy(&k1).await.unwrap();
    assert!(hears(&b, &k1, now).await, "a logout on A is heard on B");
    assert!(!b.ended_recently(&k3, now), "a live session is not refused");
    assert_eq!(a.destroy_user("ada", Some(&k3), now).await.unwrap(), 1);
    assert!(hears(&b, &k2, now).await, "a revocation on A is heard on B");
    assert!(!b.ended_recently(&k3, now));
    let (k4, k5) = (key(), key());
    a.create(&k4, &login).await.unwrap();
    a.cycle(&k4, &k5, &Changes::default(), now, now + 30_000)
        .await
        .unwrap();
    assert!(
        hears(&b, &k4, now).await,
        "a cycle away from an ID on A is heard on B"
    );
    assert!(!b.ended_recently(&k5, now));
    server.restart().await;
    let started = Instant::now();
    while a.destroy(&k3).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "back after a restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The listener is back too (it may take its backoff to notice).
    let mut heard = hears(&b, &k3, now).await;
    for _ in 0..3 {
        if heard {
            break;
        }
        let k = key();
        a.create(&k, &login).await.unwrap();
        a.destroy(&k).await.unwrap();
        heard = hears(&b, &k, now).await;
    }
    assert!(heard, "B listens again after a restart");
}

/// A store on the app's own pool: it sets up its tables through the pool and serves from
/// it; given the URL too, it hears other instances' logouts; without, it still serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_is_built_from_an_existing_pool() {
    use cloakroom_postgres::deadpool_postgres;
    let server = server().await;
    let pg: cloakroom_postgres::tokio_postgres::Config = server.url().parse().unwrap();
    let manager = deadpool_postgres::Manager::new(pg, cloakroom_postgres::tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(4)
        .build()
        .unwrap();
    let listening = PostgresStore::from_pool(pool.clone(), PostgresConfig::new(server.url()))
        .await
        .expect("a store on the app's pool");
    let deaf = PostgresStore::from_pool(pool, PostgresConfig::new(""))
        .await
        .expect("a store on the app's pool, without a URL");
    let (k, now) = (key(), now_millis());
    let mut login = fresh(now);
    login.user = Some("ada".into());
    deaf.create(&k, &login).await.unwrap();
    assert!(listening.load(&k, now, None).await.unwrap().is_some());
    deaf.destroy(&k).await.unwrap();
    assert!(
        hears(&listening, &k, now).await,
        "the URL's listener hears the logout"
    );
    assert!(listening.load(&k, now, None).await.unwrap().is_none());
}

/// Expired rows stay until the purge, and say which deadline passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_says_which_deadline_passed() {
    cloakroom::testing::an_expiry_says_which_deadline_passed(std::sync::Arc::new(
        make_store().await,
    ))
    .await;
}
