//! The app on Redis, as processes: three instances sharing one Redis, and an outage with
//! recovery in the same app process.

use std::time::{Duration, Instant};

use cloakroom_testkit::redis::{Options, RedisServer};
use tokio::process::Command;

mod common;

use common::instances::{
    an_outage_is_fast_and_heals, call, connects_when_its_store_arrives, login,
    serves_without_its_store, share_one_session, start as app,
};

async fn server(persist: bool) -> Option<RedisServer> {
    RedisServer::start_with(Options {
        persist,
        ..Options::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_sessions_and_todos() {
    let Some(redis) = server(false).await else {
        return;
    };
    let url = redis.url();
    // The three ways tutorials name the store.
    let (_a, first) = app("SESSION_STORE", &url, &[]).await;
    let (_b, second) = app("DB", &url, &[]).await;
    let (_c, third) = app("REDIS_URL", &url, &[]).await;

    let cookie = share_one_session(first, second).await;
    let visits = call(third, "POST", "/api/visits", Some(&cookie), None).await;
    assert_eq!(visits.status, 200, "{}", visits.body);
    let logout = call(third, "POST", "/api/logout", Some(&cookie), None).await;
    assert!(logout.status < 300, "{}", logout.body);
    let replay = call(first, "GET", "/api/profile", Some(&cookie), None).await;
    assert_eq!(
        replay.status, 401,
        "a logged-out cookie is dead on every instance"
    );
    // A write with the dead cookie starts a fresh anonymous session; the old one stays dead.
    let again = call(second, "POST", "/api/visits", Some(&cookie), None).await;
    assert_eq!(again.json()["visits"], 1, "{}", again.body);
    assert_ne!(again.cookie().as_deref(), Some(cookie.as_str()));
    let replay = call(third, "GET", "/api/profile", Some(&cookie), None).await;
    assert_eq!(replay.status, 401, "not resurrected by the write");
    let relogin = login(second, "alice").await;
    let todos = call(third, "GET", "/api/todos", Some(&relogin), None).await;
    assert_eq!(
        todos.json()["todos"][0]["title"],
        "shared",
        "todos outlive the session"
    );
    // The operator CLI reads the same Redis.
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cloakroom"))
            .args(args)
            .arg("--store")
            .arg(&url)
            .output()
    };
    let stats = cli(&["stats"]).await.unwrap();
    let text = String::from_utf8_lossy(&stats.stdout).into_owned();
    assert!(stats.status.success(), "{text}");
    assert!(text.contains("sessions: "), "{text}");
    // Every running instance's read cache (published beside the sessions; the command
    // itself has none).
    assert!(text.contains("read caches: 3 instance(s)"), "{text}");
    let listed = cli(&["list", "--user", "alice"]).await.unwrap();
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.status.success(), "{text}");
    assert!(!text.trim().is_empty(), "alice's session is listed: {text}");
    // An operator's revocation: her next request is told why.
    let revoked = cli(&["revoke", "--user", "alice"]).await.unwrap();
    assert!(revoked.status.success());
    let told = call(first, "GET", "/api/profile", Some(&relogin), None).await;
    assert_eq!(told.status, 401);
    assert_eq!(told.json()["ended"], "revoked_by_operator", "{}", told.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_answers_503_fast_and_recovers_without_a_restart() {
    let Some(mut redis) = server(true).await else {
        return;
    };
    let (_app, port) = app("SESSION_STORE", &redis.url(), &["--store-timeout", "300ms"]).await;
    // Redis with an fsync'd AOF: the acknowledged increment survives the kill.
    an_outage_is_fast_and_heals(
        &mut redis,
        port,
        Duration::from_secs(2),
        Duration::from_secs(10),
    )
    .await;
}

/// Three instances on the defaults, which read through the cache: repeat reads on one
/// instance cost no Redis command (and `/metrics` shows the hits and the cached record), and
/// a logout on another reaches its cache within one push delivery: the replayed cookie is
/// refused (bounded here at 100 ms; on loopback it is well under 1 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_cache_sees_a_logout_on_another_instance() {
    let Some(redis) = server(false).await else {
        return;
    };
    let url = redis.url();
    let (_a, first) = app("SESSION_STORE", &url, &[]).await;
    let (_b, second) = app("SESSION_STORE", &url, &[]).await;
    let (_c, third) = app("SESSION_STORE", &url, &[]).await;
    let cookie = login(first, "alice").await;
    assert_eq!(
        call(second, "GET", "/api/profile", Some(&cookie), None)
            .await
            .status,
        200
    );
    let before = redis.command_calls().await;
    for _ in 0..5 {
        let profile = call(second, "GET", "/api/profile", Some(&cookie), None).await;
        assert_eq!(profile.json()["user_id"], "alice");
    }
    let after = redis.command_calls().await;
    assert_eq!(
        after.get("hgetall"),
        before.get("hgetall"),
        "served from the cache"
    );
    let metrics = call(second, "GET", "/metrics", None, None).await.body;
    let sample = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics:\n{metrics}"))
    };
    assert!(sample("cloakroom_read_cache_requests_total{result=\"hit\"}") >= 5.0);
    assert_eq!(sample("cloakroom_read_cache_entries"), 1.0);
    assert!(sample("cloakroom_read_cache_bytes") > 0.0);
    let logout = call(third, "POST", "/api/logout", Some(&cookie), None).await;
    assert!(logout.status < 300, "{}", logout.body);
    let started = Instant::now();
    let mut status = 0;
    while started.elapsed() < Duration::from_millis(100) {
        status = call(second, "GET", "/api/profile", Some(&cookie), None)
            .await
            .status;
        if status == 401 {
            break;
        }
    }
    assert_eq!(
        status, 401,
        "the logout reached the other instance's cache in time"
    );
    eprintln!(
        "replay refused {:?} after the logout answered",
        started.elapsed()
    );
}

/// The operator commands on real Redis: `stats` (text and JSON), `sizing` with no store,
/// and `check`, whose exit code says whether the set-up is production-ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_report_redis_and_check_readiness() {
    let Some(redis) = server(false).await else {
        return;
    };
    let url = redis.url();
    redis
        .command(&["CONFIG", "SET", "maxmemory", "100mb"])
        .await;
    redis
        .command(&["CONFIG", "SET", "maxmemory-policy", "volatile-lru"])
        .await;
    let (_app, port) = app("SESSION_STORE", &url, &[]).await;
    login(port, "ada").await;
    login(port, "bob").await;
    let cli = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloakroom"));
        cmd.args(args).env_remove("SESSION_SECRET");
        for var in ["SESSION_STORE", "DB", "REDIS_URL", "DATABASE_URL"] {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output()
    };
    let stats = cli(&["stats", "--json", "--store", &url], &[])
        .await
        .unwrap();
    assert!(stats.status.success());
    let figures: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("JSON");
    assert_eq!(figures["sessions"], 2);
    assert_eq!(figures["redis"]["eviction_policy"], "volatile-lru");
    assert_eq!(figures["redis"]["maxmemory"], 100 * 1024 * 1024);
    assert_eq!(figures["redis"]["topology"], "standalone (no replica)");
    assert!(figures["redis"]["average_session_bytes"].as_u64().unwrap() > 50);
    assert_eq!(figures["warnings"], serde_json::json!([]));
    let text = cli(&["stats", "--store", &url], &[]).await.unwrap();
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("eviction policy: volatile-lru"), "{text}");
    assert!(text.contains("sampled sessions"), "{text}");

    // One line a second, like redis-cli --stat; logins counted by the scripts.
    let watched = cli(
        &["stats", "--watch", "1", "--count", "2", "--store", &url],
        &[],
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&watched.stdout).into_owned();
    assert!(watched.status.success(), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].contains("logins/s") && lines[0].contains("store p99"),
        "{text}"
    );
    assert!(
        lines[1].split_whitespace().nth(1) == Some("2"),
        "two sessions: {text}"
    );
    assert!(lines[1].ends_with(" ms"), "{text}");

    // Sizing needs no store.
    let sizing = cli(&["sizing", "--sessions", "1000000"], &[])
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&sizing.stdout).into_owned();
    assert!(sizing.status.success(), "{text}");
    assert!(text.contains("recommended instance: 1 GB"), "{text}");
    let big = cli(
        &["sizing", "--sessions", "10000000", "--avg-bytes", "2000"],
        &[],
    )
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&big.stdout).contains("recommended instance: 50 GB"));

    // Ready on loopback with a secret and a sane policy; not with allkeys-lru or no secret.
    let secret = [("SESSION_SECRET", common::SECRET)];
    let ready = cli(&["check", "--store", &url], &secret).await.unwrap();
    let text = String::from_utf8_lossy(&ready.stdout).into_owned();
    assert!(ready.status.success(), "{text}");
    assert!(text.contains("ok   version: 7"), "{text}");
    let unready = cli(&["check", "--store", &url], &[]).await.unwrap();
    assert_eq!(unready.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unready.stdout).contains("FAIL SESSION_SECRET"));
    redis
        .command(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"])
        .await;
    let evicting = cli(&["check", "--store", &url], &secret).await.unwrap();
    let text = String::from_utf8_lossy(&evicting.stdout).into_owned();
    assert_eq!(evicting.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL eviction policy allkeys-lru"), "{text}");
}

/// Redis not up yet when the app starts (start order is not guaranteed on Cloud Run or
/// Kubernetes): the app serves, says it is not ready, and connects on its own once Redis
/// arrives, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_before_redis_and_connects_when_it_arrives() {
    let Some(mut redis) = server(false).await else {
        return;
    };
    redis.kill().await;
    let (_app, port) = app("REDIS_URL", &redis.url(), &["--store-timeout", "300ms"]).await;
    serves_without_its_store(port, Duration::from_secs(2)).await;
    redis.restart().await;
    connects_when_its_store_arrives(port, Duration::from_secs(20)).await;
}
