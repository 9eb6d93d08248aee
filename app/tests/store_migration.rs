//! Moving the app from one store to another logs nobody out and loses no acknowledged write:
//! embedded → Redis, Redis → PostgreSQL, PostgreSQL → Redis and Redis → Cluster. Users log in
//! on the old store; the app restarts on the new one with `--migrate-from` and serves them
//! while it copies in the background; `cloakroom migrate` finishes the copy (idempotent), and
//! the app on the new store alone still knows every user and every counter.

use std::time::Duration;

use cloakroom_testkit::free_port;
use cloakroom_testkit::http::wait_healthy;
use cloakroom_testkit::postgres::PostgresServer;
use cloakroom_testkit::redis::{Cluster, RedisServer};
use tokio::process::{Child, Command};

mod common;

use common::instances::{call, login};

/// Users per move: enough that the background copy overlaps the requests.
const USERS: usize = 150;

async fn app(store: &str, extra: &[&str]) -> (Child, u16) {
    let port = free_port();
    let port_text = port.to_string();
    let mut args = vec!["serve", "--port", &port_text, "--store", store];
    args.extend_from_slice(extra);
    let child = common::spawn_binary(&args, &[]);
    wait_healthy(port, Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("the app starts on {store}: {e}"));
    (child, port)
}

async fn visits(port: u16, cookie: &str) -> u64 {
    let reply = call(port, "POST", "/api/visits", Some(cookie), None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["visits"].as_u64().expect("a count")
}

async fn user_of(port: u16, cookie: &str) -> Option<String> {
    let reply = call(port, "GET", "/api/profile", Some(cookie), None).await;
    (reply.status == 200).then(|| {
        reply.json()["user_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    })
}

/// Logs `USERS` users in on `from` (one visit each), moves the app to `to`, and checks that
/// nobody was logged out and no visit was lost.
async fn move_under_traffic(from: &str, to: &str) {
    let mut cookies = Vec::new();
    {
        let (_old, port) = app(from, &[]).await;
        for i in 0..USERS {
            let cookie = login(port, &format!("user{i}")).await;
            assert_eq!(visits(port, &cookie).await, 1);
            cookies.push(cookie);
        }
    }
    // The old app is gone (the embedded store's file is free); the new one moves sessions as
    // they are used and copies the rest meanwhile. Every user comes back at once.
    let (moving, port) = app(to, &["--migrate-from", from]).await;
    let requests = cookies
        .clone()
        .into_iter()
        .enumerate()
        .map(move |(i, cookie)| async move {
            let cookie = cookie.as_str();
            assert_eq!(
                user_of(port, cookie).await.as_deref(),
                Some(format!("user{i}").as_str()),
                "user{i} was logged out by the move"
            );
            assert_eq!(visits(port, cookie).await, 2, "user{i}'s visit was lost");
        });
    futures_join_all(requests).await;
    drop(moving);

    // The copy, finished (or found finished) by the operator command.
    let out = Command::new(env!("CARGO_BIN_EXE_cloakroom"))
        .args(["migrate", "--from", from, "--to", to])
        .env("SESSION_SECRET", common::SECRET)
        .output()
        .await
        .expect("run cloakroom migrate");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("moved "), "{text}");
    eprintln!("{from} -> {to}: cloakroom migrate: {text}");

    // The new store alone knows everyone.
    let (_new, port) = app(to, &[]).await;
    for (i, cookie) in cookies.iter().enumerate() {
        assert_eq!(
            user_of(port, cookie).await.as_deref(),
            Some(format!("user{i}").as_str()),
            "user{i} after the move"
        );
        assert_eq!(visits(port, cookie).await, 3, "user{i}'s visits");
    }
}

/// Runs the futures at once (the test's client is one task per request, bounded by `USERS`).
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) {
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    for task in tasks {
        task.await.expect("a request task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_to_redis() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let dir = cloakroom_testkit::temp_dir("embedded-source");
    move_under_traffic(&format!("file:{}", dir.display()), &redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_to_postgres_and_back() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let Some(postgres) = PostgresServer::start().await else {
        return;
    };
    move_under_traffic(&redis.url(), &postgres.url()).await;
    let Some(other) = RedisServer::start().await else {
        return;
    };
    move_under_traffic(&postgres.url(), &other.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_to_cluster() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let Some(cluster) = Cluster::start(3, 0).await else {
        return;
    };
    move_under_traffic(&redis.url(), &cluster.url()).await;
}

/// The app stopped: `cloakroom migrate` alone moves every session (resumable: its position is
/// saved in a state file, and a second run finds the walk done).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_app_moves_with_the_cli_alone() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let dir = cloakroom_testkit::temp_dir("embedded-offline");
    let from = format!("file:{}", dir.display());
    let mut cookies = Vec::new();
    {
        let (_old, port) = app(&from, &[]).await;
        for i in 0..20 {
            let cookie = login(port, &format!("user{i}")).await;
            assert_eq!(visits(port, &cookie).await, 1);
            cookies.push(cookie);
        }
    }
    let state = dir.join("migrate.state");
    let migrate = || {
        Command::new(env!("CARGO_BIN_EXE_cloakroom"))
            .args(["migrate", "--from", &from, "--to", &redis.url(), "--state"])
            .arg(&state)
            .env("SESSION_SECRET", common::SECRET)
            .output()
    };
    let out = migrate().await.expect("run cloakroom migrate");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("moved 20,"), "{text}");
    let again = migrate().await.expect("run it again");
    assert!(String::from_utf8_lossy(&again.stdout).starts_with("moved 0,"));
    let (_new, port) = app(&redis.url(), &[]).await;
    for (i, cookie) in cookies.iter().enumerate() {
        assert_eq!(
            user_of(port, cookie).await.as_deref(),
            Some(format!("user{i}").as_str())
        );
        assert_eq!(visits(port, cookie).await, 2);
    }
}
