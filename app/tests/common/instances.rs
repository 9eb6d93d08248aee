//! The app as separate processes on a shared store: start one, call its JSON API, log in,
//! and check that two instances see one session.

use std::time::Duration;

use cloakroom_testkit::free_port;
use cloakroom_testkit::http::{request, wait_healthy, Response};
use tokio::process::Child;

/// Starts the binary with the store URL in the environment variable `var` (the ways
/// tutorials name it) and waits until it answers.
pub async fn start(var: &str, url: &str, extra: &[&str]) -> (Child, u16) {
    let port = free_port();
    let port_text = port.to_string();
    let mut args = vec!["serve", "--port", &port_text];
    args.extend_from_slice(extra);
    let child = super::spawn_binary(&args, &[(var, url)]);
    wait_healthy(port, Duration::from_secs(15))
        .await
        .unwrap_or_else(|e| panic!("the app starts on {var}: {e}"));
    (child, port)
}

/// One JSON API call; panics only when the app does not answer at all.
pub async fn call(
    port: u16,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: Option<&str>,
) -> Response {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(cookie) = cookie {
        headers.push(("cookie", cookie));
    }
    request(port, method, path, &headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Logs `user` in through the JSON API and returns the session cookie.
pub async fn login(port: u16, user: &str) -> String {
    let body = format!(r#"{{"username":"{user}"}}"#);
    let reply = call(port, "POST", "/api/login", None, Some(&body)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.cookie().expect("a session cookie")
}

/// Logs alice in on `first`, adds a todo there, and checks that `second` sees her profile
/// and the todo. Returns her cookie.
pub async fn share_one_session(first: u16, second: u16) -> String {
    let cookie = login(first, "alice").await;
    let todo = Some(r#"{"title":"shared"}"#);
    let added = call(first, "POST", "/api/todos", Some(&cookie), todo).await;
    assert_eq!(added.status, 201, "{}", added.body);
    let profile = call(second, "GET", "/api/profile", Some(&cookie), None).await;
    assert_eq!(profile.status, 200, "{}", profile.body);
    assert_eq!(profile.json()["user_id"], "alice");
    let todos = call(second, "GET", "/api/todos", Some(&cookie), None).await;
    assert_eq!(todos.json()["todos"][0]["title"], "shared");
    cookie
}

/// While the store is down: `rounds` profile reads and visit writes each answer 503 with
/// `Retry-After` within `limit`, liveness stays 200 and readiness says 503.
pub async fn answers_503_fast(port: u16, cookie: &str, rounds: usize, limit: Duration) {
    for _ in 0..rounds {
        let started = std::time::Instant::now();
        let profile = call(port, "GET", "/api/profile", Some(cookie), None).await;
        assert_eq!(profile.status, 503, "{}", profile.body);
        assert!(profile.header("retry-after").is_some());
        let took = started.elapsed();
        assert!(took < limit, "503 within the timeout, took {took:?}");
        let write = call(port, "POST", "/api/visits", Some(cookie), None).await;
        assert_eq!(write.status, 503, "{}", write.body);
        assert_eq!(call(port, "GET", "/healthz", None, None).await.status, 200);
    }
    let ready = call(port, "GET", "/readyz", None, None).await;
    assert_eq!(ready.status, 503, "readyz reports the outage");
}

/// The outage test every store passes: an acknowledged increment, then the store killed under
/// a bounded background load (no request hangs: every answer 200 or 503, the slowest under
/// 2 s), session routes answering 503 within `fail_within`, the store restarted, recovery
/// within `heal_within` with no restart of the app, and the increment kept.
pub async fn an_outage_is_fast_and_heals(
    server: &mut impl cloakroom_testkit::Outage,
    port: u16,
    fail_within: Duration,
    heal_within: Duration,
) {
    use std::time::Instant;
    let cookie = login(port, "bob").await;
    let first = call(port, "POST", "/api/visits", Some(&cookie), None).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let load = tokio::spawn({
        let cookie = cookie.clone();
        async move {
            let (mut slowest, mut statuses) = (Duration::ZERO, std::collections::BTreeSet::new());
            let stop = Instant::now() + Duration::from_secs(8);
            for _ in 0..400 {
                let t = Instant::now();
                let reply = call(port, "GET", "/api/profile", Some(&cookie), None).await;
                slowest = slowest.max(t.elapsed());
                statuses.insert(reply.status);
                if Instant::now() > stop {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (slowest, statuses)
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.kill().await;
    // A read cache serves what it holds until the lost link's notice is handled (one push
    // delivery, well under a millisecond on loopback): bounded here at one second.
    let cache_stops = Instant::now() + Duration::from_secs(1);
    while call(port, "GET", "/api/profile", Some(&cookie), None)
        .await
        .status
        == 200
    {
        assert!(
            Instant::now() < cache_stops,
            "a cached read still served a second after the store died"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    answers_503_fast(port, &cookie, 10, fail_within).await;
    server.restart().await;
    recovers(port, &cookie, heal_within).await;
    let visits = call(port, "POST", "/api/visits", Some(&cookie), None).await;
    assert_eq!(visits.status, 200, "{}", visits.body);
    assert_eq!(
        visits.json()["visits"],
        2,
        "the increment acknowledged before the outage was kept: {}",
        visits.body
    );
    // Readiness follows within one store check (it is asked at most once a second).
    let ready_by = Instant::now() + Duration::from_secs(3);
    while call(port, "GET", "/readyz", None, None).await.status != 200 {
        assert!(
            Instant::now() < ready_by,
            "/readyz still 503 after recovery"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (slowest, statuses) = load.await.expect("the background load");
    assert!(
        statuses.iter().all(|s| [200, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "no request hung: slowest {slowest:?}"
    );
}

/// Polls the profile with `cookie` until it answers 200; fails after `within`.
pub async fn recovers(port: u16, cookie: &str, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let profile = call(port, "GET", "/api/profile", Some(cookie), None).await;
        if profile.status == 200 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery: {} {}",
            profile.status,
            profile.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An app started while its store is down: it serves (`/healthz` 200), `/readyz` says 503
/// and what is pending, a login answers 503 within `limit`. Returns once that is checked.
pub async fn serves_without_its_store(port: u16, limit: Duration) {
    assert_eq!(call(port, "GET", "/healthz", None, None).await.status, 200);
    let ready = call(port, "GET", "/readyz", None, None).await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.json()["status"], "starting", "{}", ready.body);
    let pending = ready.json()["pending"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(pending.starts_with("connecting to "), "{pending}");
    assert!(
        !pending.contains("secret"),
        "no password in /readyz: {pending}"
    );
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let body = Some(r#"{"username":"carol"}"#);
        let refused = call(port, "POST", "/api/login", None, body).await;
        assert_eq!(refused.status, 503, "{}", refused.body);
        assert!(
            started.elapsed() < limit,
            "503 at once: {:?}",
            started.elapsed()
        );
    }
}

/// Polls `/readyz` until the app has connected to the store that came up (fails after
/// `within`), then logs in and keeps a todo: the whole set-up ran.
pub async fn connects_when_its_store_arrives(port: u16, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let ready = call(port, "GET", "/readyz", None, None).await;
        if ready.status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never connected: {}",
            ready.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cookie = login(port, "carol").await;
    let todo = Some(r#"{"title":"late"}"#);
    let added = call(port, "POST", "/api/todos", Some(&cookie), todo).await;
    assert_eq!(added.status, 201, "{}", added.body);
}
