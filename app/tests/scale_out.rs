//! The deployment Cloakroom exists for: several app instances behind a real load balancer
//! (HAProxy), sessions in a Redis Cluster. One instance is killed mid-run and the users'
//! sessions carry on through the others. Real processes on loopback; bounded.

use std::time::Duration;

use cloakroom_testkit::balancer::LoadBalancer;
use cloakroom_testkit::free_port;
use cloakroom_testkit::http::{request, wait_healthy, Response};
use cloakroom_testkit::redis::Cluster;
use tokio::process::Child;

mod common;

async fn instance(url: &str) -> (Child, u16) {
    let port = free_port();
    let port_text = port.to_string();
    let child = common::spawn_binary(&["serve", "--port", &port_text], &[("SESSION_STORE", url)]);
    wait_healthy(port, Duration::from_secs(15))
        .await
        .expect("the app starts on the cluster");
    (child, port)
}

async fn call(port: u16, method: &str, path: &str, cookie: &str, body: Option<&str>) -> Response {
    let mut headers = vec![("content-type", "application/json")];
    if !cookie.is_empty() {
        headers.push(("cookie", cookie));
    }
    request(port, method, path, &headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_behind_haproxy_on_a_cluster_carry_on_when_one_dies() {
    let Some(cluster) = Cluster::start(3, 0).await else {
        return;
    };
    let url = cluster.url();
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(instance(&url).await);
    }
    let ports: Vec<u16> = instances.iter().map(|(_, p)| *p).collect();
    let Some(lb) = LoadBalancer::start(&ports).await else {
        return;
    };
    wait_healthy(lb.port, Duration::from_secs(15))
        .await
        .expect("haproxy serves the app");

    // The flow, through the balancer: every request may land on another instance.
    let login = call(
        lb.port,
        "POST",
        "/api/login",
        "",
        Some(r#"{"username":"ada"}"#),
    )
    .await;
    assert_eq!(login.status, 200, "{}", login.body);
    let cookie = login.cookie().expect("a session cookie");
    let added = call(
        lb.port,
        "POST",
        "/api/todos",
        &cookie,
        Some(r#"{"title":"ship it"}"#),
    )
    .await;
    assert_eq!(added.status, 201, "{}", added.body);
    let mut visits = 0;
    for _ in 0..6 {
        let reply = call(lb.port, "POST", "/api/visits", &cookie, None).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        visits += 1;
        assert_eq!(
            reply.json()["visits"],
            visits,
            "no visit lost across instances"
        );
    }

    // One instance dies mid-run. HAProxy sends what cannot reach it to the others.
    let (mut dead, _) = instances.remove(1);
    dead.kill().await.expect("kill an instance");
    for round in 0..30 {
        let profile = call(lb.port, "GET", "/api/profile", &cookie, None).await;
        assert_eq!(profile.status, 200, "round {round}: {}", profile.body);
        assert_eq!(profile.json()["user_id"], "ada");
        let reply = call(lb.port, "POST", "/api/visits", &cookie, None).await;
        assert_eq!(reply.status, 200, "round {round}: {}", reply.body);
        visits += 1;
        assert_eq!(reply.json()["visits"], visits, "round {round}");
        let todos = call(lb.port, "GET", "/api/todos", &cookie, None).await;
        assert_eq!(
            todos.json()["todos"][0]["title"],
            "ship it",
            "round {round}"
        );
    }

    // The operator CLI sees every primary: ada's sessions (this one and three more, on
    // whatever slots their keys hash to), counted, listed and revoked.
    for _ in 0..3 {
        let other = call(
            lb.port,
            "POST",
            "/api/login",
            "",
            Some(r#"{"username":"ada"}"#),
        )
        .await;
        assert_eq!(other.status, 200, "{}", other.body);
    }
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cloakroom"))
            .args(args)
            .args(["--store", &url])
            .output()
            .expect("run the CLI")
    };
    let stats = cli(&["stats"]);
    let text = String::from_utf8_lossy(&stats.stdout).into_owned();
    assert!(
        stats.status.success() && text.contains("sessions: 4"),
        "{text}"
    );
    let listed = cli(&["list", "--user", "ada"]);
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.status.success(), "{text}");
    assert!(text.starts_with("4 session(s) of \"ada\""), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains(" created ")).count(),
        4,
        "{text}"
    );

    // Logout through the balancer ends the session on every instance.
    let logout = call(lb.port, "POST", "/api/logout", &cookie, None).await;
    assert!(logout.status < 300, "{}", logout.body);
    for (_, port) in &instances {
        let replay = call(*port, "GET", "/api/profile", &cookie, None).await;
        assert_eq!(replay.status, 401, "a logged-out cookie is dead everywhere");
    }
    let revoked = cli(&["revoke", "--user", "ada"]);
    let text = String::from_utf8_lossy(&revoked.stdout).into_owned();
    assert!(revoked.status.success() && text.contains('3'), "{text}");
    let listed = cli(&["list", "--user", "ada"]);
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(!text.contains(" created "), "{text}");
}
