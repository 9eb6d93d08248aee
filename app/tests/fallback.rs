//! `--failure-policy fallback` on real Redis, seen in real headless Chromium: Redis is killed
//! under a logged-in browser session; the user stays logged in, read only; Redis comes back
//! and the same process serves as before.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cloakroom_testkit::http::{request, Response};
use cloakroom_testkit::redis::{Options, RedisServer};
use cloakroom_testkit::webdriver::Browser;

fn shot(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/screenshots")
        .join(format!("{name}.png"))
}

async fn call(port: u16, method: &str, path: &str, cookie: &str, body: Option<&str>) -> Response {
    let mut headers = vec![("content-type", "application/json"), ("cookie", cookie)];
    if cookie.is_empty() {
        headers.pop();
    }
    request(port, method, path, &headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_a_logged_in_browser_keeps_the_user_logged_in_read_only() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let Some(mut redis) = RedisServer::start_with(Options {
        persist: true,
        ..Options::default()
    })
    .await
    else {
        return;
    };
    let url = redis.url();
    let app = common::app_with(&[
        "--store",
        &url,
        "--failure-policy",
        "fallback",
        "--store-timeout",
        "1s",
    ])
    .await;
    let (port, server) = common::serve(app.router.clone()).await;
    let base = format!("http://localhost:{port}");

    let step = async {
        browser.goto(&format!("{base}/login")).await?;
        browser.type_into("#username", "alice").await?;
        browser.navigate_by("form button").await?;
        assert_eq!(browser.text("#user").await?, "alice");
        let cookies = browser.cookies().await?;
        assert!(
            cookies.iter().any(|(n, _)| n == "__Host-sid-fb"),
            "the login left a fallback ticket beside the session cookie: {cookies:?}"
        );
        let jar = cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ");

        // Redis dies.
        redis.kill().await;
        browser.goto(&format!("{base}/")).await?;
        assert_eq!(browser.text("#user").await?, "alice");
        assert!(browser.text("h1").await?.contains("Logged in as"));
        browser.find("#degraded").await?;
        browser.screenshot(&shot("fallback-1-read-only")).await?;
        let profile = call(port, "GET", "/api/profile", &jar, None).await;
        assert_eq!(profile.status, 200, "{}", profile.body);
        assert_eq!(profile.json()["user_id"], "alice");
        assert_eq!(profile.json()["degraded"], true);
        assert!(profile.json()["login_time"].is_string(), "a ticket field");
        assert_eq!(
            call(port, "POST", "/api/visits", &jar, None).await.status,
            503
        );
        assert_eq!(
            call(port, "GET", "/api/todos", &jar, None).await.status,
            503
        );
        let login = call(
            port,
            "POST",
            "/api/login",
            "",
            Some(r#"{"username":"eve"}"#),
        )
        .await;
        assert_eq!(login.status, 503, "no new logins while the store is down");

        // Redis is back: normal service, no restart.
        redis.restart().await;
        let start = Instant::now();
        loop {
            let visits = call(port, "POST", "/api/visits", &jar, None).await;
            if visits.status == 200 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "not back after 15 s: {}",
                visits.status
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let profile = call(port, "GET", "/api/profile", &jar, None).await;
        assert_eq!(profile.status, 200);
        assert!(profile.json().get("degraded").is_none());
        browser.goto(&format!("{base}/")).await?;
        browser.find("#visits").await?;
        assert!(browser.find("#degraded").await.is_err());
        browser.screenshot(&shot("fallback-2-back")).await?;
        Ok::<(), String>(())
    };
    let outcome = step.await;
    server.abort();
    outcome.expect("the browser steps");
}

/// A logout made on one instance just before Redis dies is honoured by the others: a copy of
/// the ticket taken before the logout does not bring the session back on another instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_another_instance_is_honoured_during_the_outage() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let url = redis.url();
    let flags = [
        "--store",
        url.as_str(),
        "--failure-policy",
        "fallback",
        "--store-timeout",
        "1s",
    ];
    let first = common::app_with(&flags).await;
    let second = common::app_with(&flags).await;
    let (a, server_a) = common::serve(first.router.clone()).await;
    let (b, server_b) = common::serve(second.router.clone()).await;

    let login = call(a, "POST", "/api/login", "", Some(r#"{"username":"ada"}"#)).await;
    assert_eq!(login.status, 200, "{}", login.body);
    let jar: String = login
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.split(';').next().unwrap_or_default().to_owned())
        .collect::<Vec<_>>()
        .join("; ");
    assert!(jar.contains("__Host-sid-fb="), "{jar}");
    // Ada's other device, still holding a copy, and the logout on the second instance.
    let logout = call(b, "POST", "/api/logout", &jar, None).await;
    assert!(logout.status < 300, "{}", logout.body);
    tokio::time::sleep(Duration::from_millis(200)).await;

    redis.kill().await;
    let replay = call(a, "GET", "/api/profile", &jar, None).await;
    assert_eq!(
        replay.status, 503,
        "the ended session stays ended: {}",
        replay.body
    );
    server_a.abort();
    server_b.abort();
}
