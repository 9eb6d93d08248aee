//! The app on PostgreSQL, as processes: two instances sharing one database (named the two
//! ways users name it), the operator commands, and an outage with recovery.

use std::time::Duration;

use cloakroom_testkit::free_port;
use cloakroom_testkit::http::wait_healthy;
use cloakroom_testkit::postgres::PostgresServer;
use tokio::process::Command;

mod common;

use common::instances::{
    an_outage_is_fast_and_heals, call, connects_when_its_store_arrives, login,
    serves_without_its_store, share_one_session, start as app,
};

async fn cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloakroom"));
    cmd.args(args).env_remove("SESSION_SECRET");
    for var in ["SESSION_STORE", "DB", "REDIS_URL", "DATABASE_URL"] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("run the CLI");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        text += &String::from_utf8_lossy(&out.stderr);
    }
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_sessions_and_todos_and_the_cli_sees_them() {
    let Some(db) = PostgresServer::start().await else {
        return;
    };
    let url = db.url();
    let (_a, first) = app("SESSION_STORE", &url, &[]).await;
    let (_b, second) = app("DATABASE_URL", &url, &[]).await;

    let cookie = share_one_session(first, second).await;
    for expected in 1..=3 {
        let port = if expected % 2 == 0 { first } else { second };
        let visits = call(port, "POST", "/api/visits", Some(&cookie), None).await;
        assert_eq!(visits.json()["visits"], expected, "{}", visits.body);
    }

    // The operator commands read the same database.
    let store = ["--store", url.as_str()];
    let (ok, text) = cli(&[&["stats", "--json"][..], &store].concat(), &[]).await;
    assert!(ok, "{text}");
    let figures: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(figures["sessions"], 1, "{text}");
    let (ok, text) = cli(&[&["list", "--user", "alice"][..], &store].concat(), &[]).await;
    assert!(ok && text.starts_with("1 session(s)"), "{text}");
    let secret = [("SESSION_SECRET", common::SECRET)];
    let (ok, text) = cli(&[&["check"][..], &store].concat(), &secret).await;
    assert!(ok, "{text}");
    assert!(
        text.contains("warn TLS: not required, on loopback"),
        "{text}"
    );
    let remote = "postgres://app:pw@db.example:5432/app";
    let (ok, text) = cli(&["check", "--store", remote], &secret).await;
    assert!(
        !ok && text.contains("FAIL TLS: not required over the network"),
        "{text}"
    );

    // Revoked by the operator: dead on both instances at once.
    let (ok, text) = cli(&[&["revoke", "--user", "alice"][..], &store].concat(), &[]).await;
    assert!(ok, "{text}");
    for port in [first, second] {
        let replay = call(port, "GET", "/api/profile", Some(&cookie), None).await;
        assert_eq!(replay.status, 401, "{}", replay.body);
    }
    let relogin = login(second, "alice").await;
    let todos = call(first, "GET", "/api/todos", Some(&relogin), None).await;
    assert_eq!(
        todos.json()["todos"][0]["title"],
        "shared",
        "todos outlive the session"
    );
    let logout = call(first, "POST", "/api/logout", Some(&relogin), None).await;
    assert!(logout.status < 300, "{}", logout.body);
    let replay = call(second, "GET", "/api/profile", Some(&relogin), None).await;
    assert_eq!(
        replay.status, 401,
        "a logged-out cookie is dead on every instance"
    );
}

/// `DATABASE_URL` names the store only when it is PostgreSQL: an app's MySQL URL there must
/// not stop Cloakroom from starting on its default store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_database_url_is_ignored() {
    let dir = cloakroom_testkit::temp_dir("foreign-db-url");
    let data = dir.to_string_lossy().into_owned();
    let port = free_port();
    let _app = common::spawn_binary(
        &["serve", "--port", &port.to_string(), "--data-dir", &data],
        &[
            ("DATABASE_URL", "mysql://u:p@db/app"),
            ("SESSION_STORE", &data),
        ],
    );
    wait_healthy(port, Duration::from_secs(15))
        .await
        .expect("starts on the embedded store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_answers_503_fast_and_recovers_without_a_restart() {
    let Some(mut db) = PostgresServer::start().await else {
        return;
    };
    let (_app, port) = app("SESSION_STORE", &db.url(), &["--store-timeout", "1s"]).await;
    an_outage_is_fast_and_heals(
        &mut db,
        port,
        Duration::from_secs(3),
        Duration::from_secs(15),
    )
    .await;
}

/// PostgreSQL not up yet when the app starts: the app serves, says it is not ready, and on
/// its own creates the schema and the todo table and serves sessions once it arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_before_postgres_and_connects_when_it_arrives() {
    let Some(mut db) = PostgresServer::start().await else {
        return;
    };
    db.kill().await;
    let (_app, port) = app("DATABASE_URL", &db.url(), &["--store-timeout", "1s"]).await;
    serves_without_its_store(port, Duration::from_secs(3)).await;
    db.restart().await;
    connects_when_its_store_arrives(port, Duration::from_secs(30)).await;
}
