//! The attack suite: the library and the reference app attacked the way a real attacker
//! would. Forged, planted, replayed, fixated and guessed cookies; cross-site forms and
//! fetches in real Chromium; a flood of anonymous sessions; oversized and many-field
//! sessions; Redis down while clients hang up. `docs/security.md` maps each OWASP item to
//! the test here (or elsewhere) that proves it.

mod common;

/// The app's session cookie (the library's default name).
const NAME: &str = cloakroom::DEFAULT_COOKIE_NAME;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use cloakroom::testing::Browser;
use cloakroom_testkit::free_port;
use cloakroom_testkit::http::{request, wait_healthy};
use cloakroom_testkit::redis::{Options, RedisServer};
use cloakroom_testkit::webdriver;
use common::{app_with, json, SECRET};
use serde_json::json;

async fn logged_in(user: &str) -> (Browser, String) {
    let app = app_with(&[]).await;
    let mut b = Browser::new(app.router);
    let reply = b
        .send("POST", "/api/login", Some(json!({ "username": user })))
        .await;
    assert_eq!(reply.status, 200);
    let cookie = b.cookie.clone().expect("a session cookie");
    (b, cookie)
}

/// A cookie whose signature does not verify is "no session", whatever it names.
#[tokio::test]
async fn forged_cookies_reach_nothing() {
    let (b, good) = logged_in("alice").await;
    let value = good.split_once('=').unwrap().1;
    let id_part = &value[..22];
    for forged in [
        // The real ID with a made-up signature, a truncated one, no signature at all.
        format!("{NAME}={id_part}{}", "A".repeat(value.len() - 22)),
        format!("{NAME}={}", &value[..value.len() - 4]),
        format!("{NAME}={id_part}"),
        // Signed with another secret (a leaked staging key, say).
        format!(
            "{NAME}={}",
            cloakroom::KeyRing::from_comma_separated("another-secret-another-secret-1234")
                .unwrap()
                .sign(&cloakroom::SessionId::random().unwrap())
        ),
    ] {
        let reply = b
            .send_raw("GET", "/api/profile", None, Some(forged.clone()))
            .await;
        assert_eq!(reply.status, 401, "{forged}");
    }
}

/// Cookie tossing: a value planted beside the real cookie (by a sibling subdomain) neither
/// replaces it nor locks its owner out.
#[tokio::test]
async fn planted_cookies_neither_win_nor_lock_out() {
    let (b, good) = logged_in("alice").await;
    let (_, attackers) = logged_in("mallory").await;
    for cookie in [
        format!("{NAME}=planted; {good}"),
        format!("{good}; {NAME}=planted"),
        format!("{good}; {attackers}"),
    ] {
        let reply = b
            .send_raw("GET", "/api/profile", None, Some(cookie.clone()))
            .await;
        assert_eq!(json(&reply)["user_id"], "alice", "{cookie}");
    }
}

/// A cookie replayed after logout (or after "log out everywhere") reaches nothing.
#[tokio::test]
async fn replayed_cookies_after_logout_reach_nothing() {
    let (mut b, good) = logged_in("alice").await;
    assert_eq!(b.send("POST", "/api/logout", None).await.status, 200);
    let replay = b
        .send_raw("GET", "/api/profile", None, Some(good.clone()))
        .await;
    assert_eq!(replay.status, 401);
    let again = b
        .send_raw("POST", "/api/visits", None, Some(good.clone()))
        .await;
    assert_eq!(
        again.status, 200,
        "a write through it is a new, empty session"
    );
    assert_eq!(json(&again)["visits"], 1, "not the old one resurrected");
}

/// Session fixation: an ID the attacker planted before login is worth nothing after it, and
/// an ID in the URL is never adopted.
#[tokio::test]
async fn fixated_ids_are_worthless_after_login() {
    let app = app_with(&[]).await;
    let mut attacker = Browser::new(app.router.clone());
    attacker.send("POST", "/api/visits", None).await;
    let planted = attacker.cookie.clone().unwrap();
    // The victim logs in carrying the planted cookie.
    let mut victim = Browser::new(app.router.clone());
    victim.cookie = Some(planted.clone());
    victim
        .send("POST", "/api/login", Some(json!({"username": "victim"})))
        .await;
    assert_ne!(victim.cookie.as_deref(), Some(planted.as_str()));
    let stolen = attacker.send("GET", "/api/profile", None).await;
    assert_eq!(
        stolen.status, 401,
        "the planted ID does not reach the victim's session"
    );
    assert_eq!(
        json(&victim.send("GET", "/api/profile", None).await)["user_id"],
        "victim"
    );
    // An ID in the query string is ignored (cookies only).
    let value = victim.cookie.clone().unwrap();
    let via_url = attacker
        .send_raw(
            "GET",
            &format!("/api/profile?{NAME}={}", value.split_once('=').unwrap().1),
            None,
            None,
        )
        .await;
    assert_eq!(via_url.status, 401);
}

/// Guessing: a client that sends many invalid cookies is counted, and with
/// `--throttle-guessing` answered 429; a bystander is not.
#[tokio::test]
async fn guessed_cookies_are_counted_and_throttled() {
    let app = app_with(&["--throttle-guessing"]).await;
    let client = Browser::new(app.router.clone());
    let guess = |i: u32, peer: &str| {
        let mut request = axum::http::Request::builder()
            .uri("/api/profile")
            .header("cookie", format!("{NAME}=guess{i:060}"))
            .body(Body::empty())
            .unwrap();
        request.extensions_mut().insert(axum::extract::ConnectInfo(
            peer.parse::<SocketAddr>().unwrap(),
        ));
        client.request(request)
    };
    let mut throttled = 0;
    for i in 0..40 {
        if guess(i, "192.0.2.10:4000").await.status == 429 {
            throttled += 1;
        }
    }
    assert!(
        throttled >= 15,
        "the guesser is throttled ({throttled} of 40)"
    );
    assert_eq!(
        guess(0, "192.0.2.11:4000").await.status,
        401,
        "a bystander is not"
    );
    let metrics = Browser::new(app.router.clone())
        .send_raw("GET", "/metrics", None, None)
        .await;
    let counted: u64 = metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix("cloakroom_guessing_throttled_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert_eq!(counted, throttled, "every 429 is counted in the metrics");
}

/// One anonymous client cannot grow its session without bound: every page name counts, but
/// the library refuses any write past the field or byte limit (413), writing nothing, and the
/// session keeps working.
#[tokio::test]
async fn many_field_and_oversized_sessions_are_refused() {
    let app = app_with(&[]).await;
    let mut b = Browser::new(app.router.clone());
    let mut counted = 0;
    for i in 0..200 {
        let reply = b.send("GET", &format!("/views/page{i}"), None).await;
        match reply.status.as_u16() {
            200 => counted += 1,
            413 => {}
            other => panic!("page{i}: {other} {}", reply.body),
        }
    }
    assert!(
        (1..=64).contains(&counted),
        "{counted} counters: the field limit (64) stops the rest"
    );
    let again = b.send("GET", "/views/page0", None).await;
    assert_eq!(
        (again.status.as_u16(), again.body.as_str()),
        (200, "you viewed this page 2 times"),
        "a counter that exists still counts"
    );
    for bad in ["a%20b", "%2e%2e%2fx", &"p".repeat(65)] {
        assert_eq!(
            b.send("GET", &format!("/views/{bad}"), None).await.status,
            404
        );
    }
    // Oversized input is refused before the session sees it.
    let huge = "x".repeat(20_000);
    let reply = b
        .send("POST", "/api/login", Some(json!({ "username": huge })))
        .await;
    assert!(
        reply.status == 413 || reply.status == 400,
        "{}",
        reply.status
    );
    assert_eq!(b.send("GET", "/api/profile", None).await.status, 401);
}

/// A flood of new anonymous sessions (50,000) on the embedded store does not starve a
/// logged-in user: every one of their requests during the flood succeeds. Anonymous sessions
/// expire after the (short) anonymous idle timeout, which bounds what a flood leaves behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_flood_does_not_starve_logged_in_users() {
    const FLOOD: usize = 50_000;
    const CONCURRENCY: usize = 32;
    let dir = cloakroom_testkit::temp_dir("flood");
    let store = dir.display().to_string();
    // A debug build on a shared two-core CI machine (a browser test may run beside this one):
    // the store timeout is widened for those neighbours, not for the flood.
    let app = app_with(&[
        "--store",
        &store,
        "--anonymous-idle-timeout",
        "2m",
        "--store-timeout",
        "3s",
    ])
    .await;
    let mut user = Browser::new(app.router.clone());
    user.send("POST", "/api/login", Some(json!({"username": "alice"})))
        .await;
    let started = Instant::now();
    let flood = {
        let router = app.router.clone();
        tokio::spawn(async move {
            let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut workers = Vec::new();
            for _ in 0..CONCURRENCY {
                let (router, next) = (router.clone(), next.clone());
                workers.push(tokio::spawn(async move {
                    let b = Browser::new(router);
                    let mut created = 0usize;
                    while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < FLOOD {
                        let reply = b.send_raw("POST", "/api/visits", None, None).await;
                        created += usize::from(reply.status == 200);
                    }
                    created
                }));
            }
            let mut created = 0;
            for w in workers {
                created += w.await.unwrap();
            }
            created
        })
    };
    let mut worst = Duration::ZERO;
    let mut served = 0;
    while !flood.is_finished() && started.elapsed() < Duration::from_secs(240) {
        let t = Instant::now();
        let reply = user.send("GET", "/api/profile", None).await;
        assert_eq!(
            reply.status,
            200,
            "the logged-in user is served during the flood: {} after {:?}",
            reply.body,
            started.elapsed()
        );
        assert_eq!(json(&reply)["user_id"], "alice");
        worst = worst.max(t.elapsed());
        served += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let created = flood.await.unwrap();
    assert_eq!(created, FLOOD, "every flood request was answered");
    assert!(served > 0);
    eprintln!(
        "flood of {FLOOD} sessions in {:?}; logged-in user served {served} times, slowest {worst:?}",
        started.elapsed()
    );
    let stats = app.sessions.ready().await.unwrap();
    assert!(stats.sessions >= FLOOD as u64);
    app.backend.close();
}

/// Cross-site requests in real Chromium: a page on another site auto-submits forms and fires
/// `fetch` at the app. Nothing changes for the logged-in victim, with SameSite=Lax and with
/// SameSite=None, and the guard counted what it refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_forms_and_fetches_change_nothing() {
    for same_site in ["lax", "none"] {
        let Some(browser) = webdriver::Browser::start().await else {
            return;
        };
        let app = app_with(&["--same-site", same_site]).await;
        let (port, server) = common::serve(app.router.clone()).await;
        // localhost and 127.0.0.1 are different sites: the attacker lives on the second.
        let base = format!("http://localhost:{port}");
        let (evil_port, evil) = common::serve(attacker_site(&base)).await;
        let step = async {
            browser.goto(&format!("{base}/login")).await?;
            browser.type_into("#username", "victim").await?;
            browser.navigate_by("form button").await?;
            assert_eq!(browser.text("#visits").await?, "1");
            browser
                .goto(&format!("http://127.0.0.1:{evil_port}/"))
                .await?;
            // The page submits its last form; wait until that navigation happened.
            for _ in 0..100 {
                if browser.url().await?.starts_with(&base) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            browser.goto(&format!("{base}/")).await?;
            let user = browser.text("#user").await?;
            let visits = browser.text("#visits").await?;
            Ok::<_, String>((user, visits))
        };
        let outcome = tokio::time::timeout(Duration::from_secs(60), step).await;
        let metrics = request(port, "GET", "/metrics", &[], None).await.unwrap();
        server.abort();
        evil.abort();
        let (user, visits) = outcome
            .expect("the browser test finishes in time")
            .expect("every browser step succeeds");
        assert_eq!(user, "victim", "SameSite={same_site}: still logged in");
        assert_eq!(
            visits, "2",
            "SameSite={same_site}: only the victim's own visit counted"
        );
        let refused: u64 = metrics
            .body
            .lines()
            .find_map(|l| l.strip_prefix("cloakroom_csrf_rejections_total "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        assert!(
            refused >= 2,
            "SameSite={same_site}: the guard refused the forged requests ({refused})"
        );
    }
}

/// A page on another site that fires every bodiless unsafe route at `target`.
fn attacker_site(target: &str) -> axum::Router {
    let page = format!(
        r#"<!doctype html><title>cute cats</title>
<form id=visits method=post action="{target}/api/visits"></form>
<form id=logout method=post action="{target}/logout"></form>
<script>
const opts = {{ method: 'POST', credentials: 'include', mode: 'no-cors' }};
Promise.allSettled([
  fetch('{target}/api/visits', opts),
  fetch('{target}/api/logout', opts),
  fetch('{target}/api/sessions/revoke-others', opts),
  fetch('{target}/todos/1/done', opts),
]).then(() => document.getElementById('visits').submit());
</script>"#
    );
    axum::Router::new().route(
        "/",
        axum::routing::get(move || async move { axum::response::Html(page) }),
    )
}

/// Redis down while clients hang up mid-request (the probe's future dropped at every point):
/// the app answers fast while it is down, and serves again when Redis returns, without a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_with_clients_hanging_up_recovers() {
    let Some(mut redis) = RedisServer::start_with(Options {
        persist: true,
        ..Options::default()
    })
    .await
    else {
        return;
    };
    let port = free_port();
    let port_text = port.to_string();
    let _app = common::spawn_binary(
        &["serve", "--port", &port_text, "--store-timeout", "300ms"],
        &[("SESSION_STORE", &redis.url()), ("SESSION_SECRET", SECRET)],
    );
    wait_healthy(port, Duration::from_secs(15)).await.unwrap();
    let login = request(
        port,
        "POST",
        "/api/login",
        &[("content-type", "application/json")],
        Some(r#"{"username":"alice"}"#),
    )
    .await
    .unwrap();
    let cookie = login.cookie().unwrap();
    redis.kill().await;
    // Bounded: 300 hang-ups, at most 20 s.
    let started = Instant::now();
    for i in 0..300u32 {
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
        if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            use tokio::io::AsyncWriteExt as _;
            let head =
                format!("GET /api/profile HTTP/1.1\r\nhost: 127.0.0.1\r\ncookie: {cookie}\r\n\r\n");
            let _ = stream.write_all(head.as_bytes()).await;
            // Hang up at a different moment each time, often while the store call is pending.
            tokio::time::sleep(Duration::from_millis(u64::from(i % 7) * 15)).await;
            drop(stream);
        }
    }
    let down = request(port, "GET", "/api/profile", &[("cookie", &cookie)], None)
        .await
        .unwrap();
    assert_eq!(down.status, 503, "fails closed while Redis is down");
    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut status = 0;
    while Instant::now() < deadline {
        status = request(port, "GET", "/api/profile", &[("cookie", &cookie)], None)
            .await
            .map_or(0, |r| r.status);
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 200,
        "serves again once Redis is back, without a restart"
    );
}

/// OWASP 23: responses that used the session are `no-store` and `Vary: Cookie`; logout also
/// sends `Clear-Site-Data`. HTML pages carry CSP (`frame-ancestors 'none'`), nosniff and a
/// Referrer-Policy; production adds HSTS.
#[tokio::test]
async fn owasp_23_pages_are_not_cached_framed_or_sniffed() {
    let (mut b, _) = logged_in("alice").await;
    let home = b.send("GET", "/", None).await;
    assert_eq!(home.headers["cache-control"], "no-store");
    assert_eq!(home.headers["vary"], "Cookie");
    let csp = home.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(home.headers["x-content-type-options"], "nosniff");
    assert!(home.headers.contains_key("referrer-policy"));
    assert!(!home.headers.contains_key("strict-transport-security"));
    let logout = b.send("POST", "/api/logout", None).await;
    assert!(logout.headers["clear-site-data"]
        .to_str()
        .unwrap()
        .contains("\"cookies\""));
    let production = app_with(&["--production"]).await;
    let reply = Browser::new(production.router)
        .send_raw("GET", "/login", None, None)
        .await;
    assert!(reply.headers["strict-transport-security"]
        .to_str()
        .unwrap()
        .starts_with("max-age="));
    assert!(
        reply.set_cookies[0].starts_with("__Host-sid="),
        "production names the cookie __Host-sid: {:?}",
        reply.set_cookies
    );
}

/// OWASP 28: nothing over HTTP enumerates sessions: a user sees only their own, an anonymous
/// client none, and the metrics hold counts, never keys.
#[tokio::test]
async fn owasp_28_sessions_are_not_enumerable_over_http() {
    let app = app_with(&[]).await;
    let mut alice = Browser::new(app.router.clone());
    alice
        .send("POST", "/api/login", Some(json!({"username": "alice"})))
        .await;
    let mut bob = Browser::new(app.router.clone());
    bob.send("POST", "/api/login", Some(json!({"username": "bob"})))
        .await;
    let mine = json(&alice.send("GET", "/api/sessions", None).await);
    assert_eq!(mine["sessions"].as_array().unwrap().len(), 1);
    let anonymous = Browser::new(app.router.clone());
    assert_eq!(
        anonymous
            .send_raw("GET", "/api/sessions", None, None)
            .await
            .status,
        401
    );
    for path in [
        "/admin",
        "/api/sessions/all",
        "/api/users",
        "/debug/sessions",
    ] {
        assert_eq!(
            anonymous.send_raw("GET", path, None, None).await.status,
            404,
            "{path}"
        );
    }
    let metrics = anonymous.send_raw("GET", "/metrics", None, None).await;
    let key = mine["sessions"][0]["id"].as_str().unwrap();
    assert!(!metrics.body.contains(key));
}

/// The CSRF token of the forms is replaced at login, by the JSON API as by the form: a token
/// an attacker saw on the login page is useless afterwards.
#[tokio::test]
async fn json_login_replaces_the_csrf_token() {
    let app = app_with(&[]).await;
    let mut b = Browser::new(app.router.clone());
    let before = common::csrf(&b.send("GET", "/login", None).await.body);
    b.send("POST", "/api/login", Some(json!({"username": "alice"})))
        .await;
    let after = common::csrf(&b.send("GET", "/", None).await.body);
    assert_ne!(before, after);
    let stale = b
        .send_body(
            "POST",
            "/todos",
            "application/x-www-form-urlencoded",
            common::form(&[("csrf", &before), ("title", "x")]),
        )
        .await;
    assert_eq!(stale.status, 403, "the pre-login token is refused");
}

/// A stolen cookie used from another browser, with the binding set to end sessions
/// (`--binding user-agent,terminate`): the thief's request ends the session, and the owner's
/// next request (and any replay of the cookie) learns why, in the API and on the home page,
/// and the operator counts it.
#[tokio::test]
async fn a_bound_session_used_from_another_browser_ends_and_says_why() {
    let app = app_with(&["--binding", "user-agent,terminate"]).await;
    let b = Browser::new(app.router.clone());
    let send = |agent: &'static str, path: &'static str, cookie: Option<String>| {
        let mut req = axum::http::Request::builder()
            .method(if path == "/api/login" { "POST" } else { "GET" })
            .uri(path)
            .header("user-agent", agent)
            .header("content-type", "application/json");
        if let Some(cookie) = cookie {
            req = req.header("cookie", cookie);
        }
        let body = if path == "/api/login" {
            Body::from(json!({"username": "alice"}).to_string())
        } else {
            Body::empty()
        };
        b.request(req.body(body).unwrap())
    };
    const OWNER: &str = "Mozilla/5.0 (owner)";
    const THIEF: &str = "curl/8.0 (thief)";
    let login = send(OWNER, "/api/login", None).await;
    assert_eq!(login.status, 200);
    let cookie = login
        .set_cookies
        .iter()
        .find(|c| c.starts_with(&format!("{NAME}=")))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let profile = send(OWNER, "/api/profile", Some(cookie.clone())).await;
    assert_eq!(profile.status, 200, "{}", profile.body);

    let stolen = send(THIEF, "/api/profile", Some(cookie.clone())).await;
    assert_eq!(
        stolen.status, 401,
        "the thief gets nothing: {}",
        stolen.body
    );
    let owner = send(OWNER, "/api/profile", Some(cookie.clone())).await;
    assert_eq!(
        (owner.status.as_u16(), json(&owner)["ended"].as_str()),
        (401, Some("binding_mismatch")),
        "{}",
        owner.body
    );
    let home = send(OWNER, "/", Some(cookie)).await;
    assert!(
        home.body
            .contains("this session was used from another browser or network"),
        "{}",
        home.body
    );
    let metrics = Browser::new(app.router)
        .send("GET", "/metrics", None)
        .await
        .body;
    assert!(
        metrics.contains("cloakroom_sessions_ended_total{reason=\"binding_mismatch\"} 1"),
        "{metrics}"
    );
}
