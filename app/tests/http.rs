//! Every route of the reference app at the HTTP level, including bad input.

mod common;

use cloakroom::testing::Browser;
use common::*;
use serde_json::json;

#[tokio::test]
async fn home_when_logged_out() {
    let mut b = browser().await;
    let page = b.send("GET", "/", None).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("You are not logged in"));
    assert!(page.body.contains("href=\"/login\""));
    assert!(
        page.set_cookies.is_empty(),
        "no session for a visitor who stores nothing"
    );
}

#[tokio::test]
async fn form_login_flashes_once_and_counts_visits() {
    let mut b = browser().await;
    b.send("GET", "/login", None).await;
    let pre_login = b
        .cookie
        .clone()
        .expect("the form's CSRF token lives in a session");
    let reply = form_login(&mut b, "alice").await;
    assert_eq!(reply.status, 303);
    assert_eq!(location(&reply), "/");
    assert_ne!(
        b.cookie.clone().unwrap(),
        pre_login,
        "login cycles the session ID"
    );
    let home = b.send("GET", "/", None).await;
    assert!(
        home.body
            .contains("Logged in as <span id=\"user\">alice</span>"),
        "{}",
        home.body
    );
    assert!(home.body.contains("Welcome, alice!"));
    assert!(home.body.contains("<strong id=\"visits\">1</strong>"));
    let again = b.send("GET", "/", None).await;
    assert!(
        !again.body.contains("Welcome, alice!"),
        "a flash is shown once"
    );
    assert!(again.body.contains("<strong id=\"visits\">2</strong>"));
}

#[tokio::test]
async fn invalid_username_keeps_what_was_typed() {
    let mut b = browser().await;
    let reply = form_login(&mut b, "<bob>").await;
    assert_eq!((reply.status.as_u16(), location(&reply)), (303, "/login"));
    let page = b.send("GET", "/login", None).await;
    assert!(page.body.contains("class=\"error\""), "{}", page.body);
    assert!(
        page.body.contains("value=\"&lt;bob&gt;\""),
        "typed value kept, escaped"
    );
    let page = b.send("GET", "/login", None).await;
    assert!(
        !page.body.contains("class=\"error\""),
        "the error is shown once"
    );
    let reply = form_login(&mut b, "   ").await;
    assert_eq!(location(&reply), "/login");
    assert!(b
        .send("GET", "/login", None)
        .await
        .body
        .contains("username required"));
}

#[tokio::test]
async fn forms_without_a_valid_csrf_token_are_refused() {
    let mut b = browser().await;
    form_login(&mut b, "alice").await;
    for body in [
        String::new(),
        form(&[("csrf", "forged")]),
        form(&[("csrf", "")]),
    ] {
        let reply = b.send_body("POST", "/logout", FORM, body.clone()).await;
        assert_eq!(reply.status, 403, "{body:?}");
        let reply = b
            .send_body("POST", "/todos", FORM, format!("{body}&title=x"))
            .await;
        assert_eq!(reply.status, 403);
    }
    // A token from another session is no good either.
    let mut other = browser().await;
    let token = csrf(&other.send("GET", "/login", None).await.body);
    let reply = b
        .send_body("POST", "/logout", FORM, form(&[("csrf", &token)]))
        .await;
    assert_eq!(reply.status, 403);
    assert!(b.send("GET", "/", None).await.body.contains("Logged in as"));
}

#[tokio::test]
async fn logout_destroys_the_session_and_replay_fails() {
    let mut b = browser().await;
    form_login(&mut b, "alice").await;
    let logged_in_cookie = b.cookie.clone();
    let token = csrf(&b.send("GET", "/", None).await.body);
    let reply = b
        .send_body("POST", "/logout", FORM, form(&[("csrf", &token)]))
        .await;
    assert_eq!((reply.status.as_u16(), location(&reply)), (303, "/"));
    let home = b.send("GET", "/", None).await;
    assert!(home.body.contains("You are not logged in"));
    assert!(home.body.contains("You have been logged out."));
    let replay = b
        .send_raw("GET", "/api/profile", None, logged_in_cookie.clone())
        .await;
    assert_eq!(replay.status, 401, "a logged-out cookie is dead");
    // And says why (issue: "Why was I signed out?"): in the API and on the home page.
    assert_eq!(json(&replay)["ended"], "logged_out", "{}", replay.body);
    let home = b.send_raw("GET", "/", None, logged_in_cookie).await;
    assert!(
        home.body
            .contains("You were signed out because you logged out."),
        "{}",
        home.body
    );
    // A forged cookie learns nothing.
    let forged = b
        .send_raw(
            "GET",
            "/api/profile",
            None,
            Some("__Host-sid=AAAA.BBBB".into()),
        )
        .await;
    assert_eq!(forged.status, 401);
    assert!(json(&forged).get("ended").is_none(), "{}", forged.body);
}

#[tokio::test]
async fn per_page_view_counters() {
    let mut b = browser().await;
    assert_eq!(
        b.send("GET", "/views/about", None).await.body,
        "you viewed this page 1 time"
    );
    assert_eq!(
        b.send("GET", "/views/about", None).await.body,
        "you viewed this page 2 times"
    );
    assert_eq!(
        b.send("GET", "/views/docs", None).await.body,
        "you viewed this page 1 time"
    );
    assert_eq!(
        b.send("GET", "/views/about", None).await.body,
        "you viewed this page 3 times"
    );
    assert_eq!(
        b.send("GET", &format!("/views/{}", "x".repeat(65)), None)
            .await
            .status,
        404
    );
    assert_eq!(b.send("GET", "/views/a%20b", None).await.status, 404);
    // Seed 002's pages: any page name counts (the session's limits bound how many).
    for page in ["foo", "bar"] {
        assert_eq!(
            b.send("GET", &format!("/views/{page}"), None).await.body,
            "you viewed this page 1 time"
        );
    }
}

#[tokio::test]
async fn todos_through_forms() {
    let mut b = browser().await;
    form_login(&mut b, "alice").await;
    let token = csrf(&b.send("GET", "/", None).await.body);
    let add = |title: &str| form(&[("csrf", &token), ("title", title)]);
    assert_eq!(
        b.send_body("POST", "/todos", FORM, add("<b>buy milk</b>"))
            .await
            .status,
        303
    );
    let home = b.send("GET", "/", None).await;
    assert!(
        home.body.contains("&lt;b&gt;buy milk&lt;/b&gt;"),
        "titles are escaped"
    );
    b.send_body("POST", "/todos", FORM, add("   ")).await;
    assert!(b
        .send("GET", "/", None)
        .await
        .body
        .contains("Could not add the todo: title required."));
    let done = form(&[("csrf", &token)]);
    assert_eq!(
        b.send_body("POST", "/todos/1/done", FORM, done.clone())
            .await
            .status,
        303
    );
    assert!(b
        .send("GET", "/", None)
        .await
        .body
        .contains("<li class=\"done\">"));
    assert_eq!(
        b.send_body("POST", "/todos/99/done", FORM, done.clone())
            .await
            .status,
        404
    );
    assert_eq!(
        b.send_body("POST", "/todos/1/delete", FORM, done.clone())
            .await
            .status,
        303
    );
    assert!(b
        .send("GET", "/", None)
        .await
        .body
        .contains("Nothing to do"));
    assert_eq!(
        b.send_body("POST", "/todos/abc/delete", FORM, done)
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn api_login_profile_logout() {
    let mut b = browser().await;
    let reply = b
        .send("POST", "/api/login", Some(json!({"username": "alice"})))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        json(&reply),
        json!({"status": "logged in", "user": "alice"})
    );
    assert_eq!(reply.headers["cache-control"], "no-store");
    let profile = json(&b.send("GET", "/api/profile", None).await);
    assert_eq!(profile["user_id"], "alice");
    let time = profile["login_time"].as_str().unwrap();
    assert!(
        time.len() == 20 && time.ends_with('Z') && &time[10..11] == "T",
        "{time}"
    );
    let cookie = b.cookie.clone();
    assert_eq!(
        json(&b.send("POST", "/api/logout", None).await),
        json!({"status": "logged out"})
    );
    assert_eq!(b.send("GET", "/api/profile", None).await.status, 401);
    let replay = b.send_raw("GET", "/api/profile", None, cookie).await;
    assert_eq!(
        (replay.status.as_u16(), json_of(&replay.body)),
        (
            401,
            json!({"error": "not logged in", "ended": "logged_out"})
        ),
        "a replayed logged-out cookie is told why"
    );
}

fn json_of(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

#[tokio::test]
async fn api_login_rejects_bad_input() {
    let mut b = browser().await;
    let required = json!({"error": "username required"});
    for body in [
        json!({}),
        json!({"username": ""}),
        json!({"username": "   "}),
        json!({"username": null}),
        json!([1]),
    ] {
        let reply = b.send("POST", "/api/login", Some(body.clone())).await;
        assert_eq!(
            (reply.status.as_u16(), json(&reply)),
            (400, required.clone()),
            "{body}"
        );
    }
    let reply = b
        .send_body("POST", "/api/login", "application/json", "{not json")
        .await;
    assert_eq!(
        (reply.status.as_u16(), json(&reply)),
        (400, required.clone())
    );
    let reply = b
        .send_body("POST", "/api/login", "text/plain", r#"{"username":"a"}"#)
        .await;
    assert_eq!(reply.status, 400);
    let reply = b
        .send(
            "POST",
            "/api/login",
            Some(json!({"username": "a".repeat(65)})),
        )
        .await;
    assert_eq!(reply.status, 400);
    let huge = format!(r#"{{"username":"{}"}}"#, "a".repeat(100_000));
    let reply = b
        .send_body("POST", "/api/login", "application/json", huge)
        .await;
    assert_eq!(reply.status, 413, "huge bodies are refused");
    assert!(b.cookie.is_none(), "no session was created by bad input");
}

#[tokio::test]
async fn api_visits_are_atomic_increments() {
    let mut b = browser().await;
    assert_eq!(
        json(&b.send("POST", "/api/visits", None).await),
        json!({"visits": 1})
    );
    let replies: Vec<_> = {
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move {
                    b.send_raw("POST", "/api/visits", None, b.cookie.clone())
                        .await
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    };
    assert!(replies.iter().all(|r| r.status == 200));
    assert_eq!(
        json(&b.send("POST", "/api/visits", None).await),
        json!({"visits": 52})
    );
}

#[tokio::test]
async fn api_todos() {
    let mut b = browser().await;
    assert_eq!(b.send("GET", "/api/todos", None).await.status, 401);
    assert_eq!(
        b.send("POST", "/api/todos", Some(json!({"title": "x"})))
            .await
            .status,
        401
    );
    b.send("POST", "/api/login", Some(json!({"username": "alice"})))
        .await;
    let reply = b
        .send(
            "POST",
            "/api/todos",
            Some(json!({"title": "  write tests "})),
        )
        .await;
    assert_eq!(reply.status, 201);
    assert_eq!(json(&reply)["title"], "write tests");
    for bad in [
        json!({}),
        json!({"title": ""}),
        json!({"title": "x".repeat(201)}),
        json!({"title": 5}),
    ] {
        assert_eq!(
            b.send("POST", "/api/todos", Some(bad.clone())).await.status,
            400,
            "{bad}"
        );
    }
    assert_eq!(
        b.send_body("POST", "/api/todos", "application/json", "{")
            .await
            .status,
        400
    );
    let list = json(&b.send("GET", "/api/todos", None).await);
    assert_eq!(list["todos"].as_array().unwrap().len(), 1);
    assert_eq!(b.send("POST", "/api/todos/1/done", None).await.status, 200);
    assert_eq!(
        json(&b.send("GET", "/api/todos", None).await)["todos"][0]["done"],
        true
    );
    // Todos live outside the session: they survive logout and a new login.
    b.send("POST", "/api/logout", None).await;
    b.send("POST", "/api/login", Some(json!({"username": "alice"})))
        .await;
    assert_eq!(
        json(&b.send("GET", "/api/todos", None).await)["todos"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(b.send("DELETE", "/api/todos/1", None).await.status, 204);
    assert_eq!(b.send("DELETE", "/api/todos/1", None).await.status, 404);
    // Another user sees their own list only.
    let mut bob = b.clone();
    bob.cookie = None;
    bob.send("POST", "/api/login", Some(json!({"username": "bob"})))
        .await;
    assert_eq!(
        json(&bob.send("GET", "/api/todos", None).await)["todos"],
        json!([])
    );
}

#[tokio::test]
async fn sessions_list_and_revoke_others() {
    let app = app_with(&[]).await;
    let mut laptop = Browser::new(app.router.clone());
    let mut phone = Browser::new(app.router.clone());
    assert_eq!(laptop.send("GET", "/api/sessions", None).await.status, 401);
    laptop
        .send("POST", "/api/login", Some(json!({"username": "alice"})))
        .await;
    phone
        .send("POST", "/api/login", Some(json!({"username": "alice"})))
        .await;
    let list = json(&laptop.send("GET", "/api/sessions", None).await);
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    assert!(sessions
        .iter()
        .all(|s| s["id"].as_str().unwrap().len() == 22));
    let revoked = json(
        &laptop
            .send("POST", "/api/sessions/revoke-others", None)
            .await,
    );
    assert_eq!(revoked, json!({"revoked": 1}));
    assert_eq!(phone.send("GET", "/api/profile", None).await.status, 401);
    assert_eq!(laptop.send("GET", "/api/profile", None).await.status, 200);
}

#[tokio::test]
async fn forged_and_garbage_cookies_are_anonymous() {
    let mut b = browser().await;
    b.send("POST", "/api/login", Some(json!({"username": "alice"})))
        .await;
    let good = b.cookie.clone().unwrap();
    let (name, value) = good.split_once('=').unwrap();
    // One character changed; it must differ from the original (1 in 64 cookies ends in 'x').
    let last = if value.ends_with('x') { 'y' } else { 'x' };
    for cookie in [
        format!("{name}={}{last}", &value[..value.len() - 1]),
        format!("{name}=garbage"),
        format!("{name}={}", "A".repeat(4096)),
    ] {
        let reply = b
            .send_raw("GET", "/api/profile", None, Some(cookie.clone()))
            .await;
        assert_eq!(reply.status, 401, "{cookie}");
        let page = b.send_raw("GET", "/", None, Some(cookie)).await;
        assert_eq!(page.status, 200);
    }
    // A forged or duplicated cookie beside the real one neither wins nor locks the user out.
    for cookie in [format!("{name}=garbage; {good}"), format!("{good}; {good}")] {
        let reply = b
            .send_raw("GET", "/api/profile", None, Some(cookie.clone()))
            .await;
        assert_eq!(reply.status, 200, "{cookie}");
    }
}

/// Session fixation: whoever planted or saw the pre-login ID gets nothing from it, from the
/// moment of login, whatever the grace window (which serves only periodic renewal).
#[tokio::test]
async fn pre_login_cookie_is_dead_at_once_after_login() {
    let app = app_with(&["--grace", "30s"]).await;
    let mut b = Browser::new(app.router.clone());
    b.send("POST", "/api/visits", None).await;
    let pre_login = b.cookie.clone();
    b.send("POST", "/api/login", Some(json!({"username": "alice"})))
        .await;
    assert_ne!(b.cookie, pre_login);
    let replay = b
        .send_raw("GET", "/api/profile", None, pre_login.clone())
        .await;
    assert_eq!(replay.status, 401, "the pre-login cookie reaches nothing");
    assert!(
        replay.set_cookies.iter().all(|c| c.contains("Max-Age=0")),
        "and is handed no cookie, only told to forget its own"
    );
    let relogin = b
        .send_raw(
            "POST",
            "/api/login",
            Some(json!({"username": "mallory"})),
            pre_login,
        )
        .await;
    assert_eq!(relogin.status, 200, "a login through it is a fresh session");
    assert_eq!(
        json(&b.send("GET", "/api/profile", None).await)["user_id"],
        "alice",
        "and never touches the victim's"
    );
}

#[tokio::test]
async fn operational_endpoints() {
    let mut b = browser().await;
    assert_eq!(b.send("GET", "/healthz", None).await.body, "ok");
    let ready = b.send("GET", "/readyz", None).await;
    assert_eq!(
        (ready.status.as_u16(), json(&ready)["status"].clone()),
        (200, json!("ready"))
    );
    b.send("POST", "/api/visits", None).await;
    let metrics = b.send("GET", "/metrics", None).await;
    assert!(
        metrics
            .body
            .contains("cloakroom_session_operations_total{operation=\"create\"} 1"),
        "{}",
        metrics.body
    );
    let css = b.send("GET", "/static/style.css", None).await;
    assert!(css.body.contains("--accent"));
    let missing = b.send("GET", "/nope", None).await;
    assert_eq!(
        (missing.status.as_u16(), json(&missing)),
        (404, json!({"error": "not found"}))
    );
}

/// A user ends only their own sessions: a key of someone else's (or garbage, or a forged
/// form without the CSRF token) ends nothing.
#[tokio::test]
async fn a_device_page_ends_only_the_users_own_sessions() {
    let app = app_with(&[]).await;
    let mut alice = Browser::new(app.router.clone());
    let mut mallory = Browser::new(app.router.clone());
    alice
        .send("POST", "/api/login", Some(json!({"username": "alice"})))
        .await;
    mallory
        .send("POST", "/api/login", Some(json!({"username": "mallory"})))
        .await;
    let list = json(&alice.send("GET", "/api/sessions", None).await);
    let alice_key = list["sessions"][0]["id"].as_str().unwrap().to_owned();
    let page = mallory.send("GET", "/sessions", None).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("<form"), "one session: nothing to end");
    let token = csrf(&mallory.send("GET", "/", None).await.body);
    for key in [alice_key.as_str(), "not-a-key", &"A".repeat(22)] {
        let reply = mallory
            .send_body(
                "POST",
                &format!("/sessions/{key}/end"),
                FORM,
                form(&[("csrf", &token)]),
            )
            .await;
        assert_eq!(location(&reply), "/sessions", "{key}");
    }
    let page = mallory.send("GET", "/sessions", None).await;
    assert!(page.body.contains("That session had already ended."));
    // Without the token nothing happens either.
    let forged = mallory
        .send_body("POST", &format!("/sessions/{alice_key}/end"), FORM, "")
        .await;
    assert_eq!(forged.status, 403);
    assert_eq!(alice.send("GET", "/api/profile", None).await.status, 200);
    // Logged out, the page sends you to log in.
    let mut stranger = Browser::new(app.router.clone());
    let reply = stranger.send("GET", "/sessions", None).await;
    assert!(
        reply.status.is_redirection() || reply.status == 401,
        "{}",
        reply.status
    );
}

/// `/metrics` parses as Prometheus text: HELP and TYPE for each family, a latency histogram
/// per store operation, requests by session outcome, the breaker and live sessions.
#[tokio::test]
async fn metrics_parse_as_prometheus_text() {
    let mut b = browser().await;
    // An anonymous session first, so that the login cycles its ID.
    b.send("POST", "/api/visits", None).await;
    b.send("POST", "/api/login", Some(json!({"username": "ada"})))
        .await;
    b.send("GET", "/api/profile", None).await;
    b.send("GET", "/healthz", None).await;
    b.send("POST", "/api/logout", None).await;
    let body = b.send("GET", "/metrics", None).await.body;
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    let value = |name: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| s.value.clone())
    };
    // OpenMetrics names a counter family without `_total` and its sample with it; this parser
    // then calls the sample untyped.
    let counter = |name: &str, label| match value(name, label) {
        Some(prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v)) => v,
        other => panic!("{name} {label:?}: {other:?}\n{body}"),
    };
    // Dimensions are labels, not names.
    for outcome in ["created", "loaded", "destroyed", "none"] {
        let n = counter("cloakroom_requests_total", Some(("session", outcome)));
        assert!(n >= 1.0, "{outcome}: {n}");
    }
    assert!(counter("cloakroom_requests_total", Some(("session", "cycled"))) >= 1.0);
    assert_eq!(counter("cloakroom_logins_total", None), 1.0);
    assert_eq!(
        counter("cloakroom_store_failures_total", Some(("kind", "timeout"))),
        0.0
    );
    assert!(!body.contains("cloakroom_requests_created"), "{body}");
    match value(
        "cloakroom_store_latency_seconds",
        Some(("operation", "load")),
    ) {
        Some(prometheus_parse::Value::Histogram(buckets)) => {
            assert!(buckets.iter().any(|b| b.count >= 1.0), "{buckets:?}");
        }
        other => panic!("load latency: {other:?}\n{body}"),
    }
    assert!(matches!(
        value("cloakroom_breaker_open", None),
        Some(prometheus_parse::Value::Gauge(v)) if v == 0.0
    ));
    assert!(matches!(
        value("cloakroom_live_sessions", None),
        Some(prometheus_parse::Value::Gauge(_))
    ));
    // Every metric the Grafana dashboard in deploy/ queries exists (the read cache's only
    // with --read-cache).
    let dashboard = include_str!("../../deploy/grafana-dashboard.json");
    for name in dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("cloakroom_") && !w.contains("read_cache"))
    {
        let sample = name.trim_end_matches("_bucket");
        assert!(
            body.contains(sample),
            "the dashboard queries {name}, /metrics has no {sample}"
        );
    }
    // Store-wide gauges are the max over instances (each reports the shared store's total),
    // and every query follows the dashboard's job and instance variables.
    assert!(dashboard.contains("max(cloakroom_live_sessions{"));
    assert!(!dashboard.contains("sum(cloakroom_live_sessions"));
    let queries = dashboard.matches("\"expr\"").count();
    let filtered = dashboard
        .matches("{job=~\\\"$job\\\",instance=~\\\"$instance\\\"")
        .count();
    assert!(
        filtered >= queries,
        "every query is filtered by $job and $instance: {filtered} of {queries}"
    );
    for family in [
        "cloakroom_requests",
        "cloakroom_session_operations",
        "cloakroom_store_latency_seconds",
    ] {
        assert!(
            body.contains(&format!("# HELP {family} "))
                && body.contains(&format!("# TYPE {family} ")),
            "{family} has HELP and TYPE\n{body}"
        );
    }
}

/// The cookie's `Max-Age`, if the reply sets one for the session.
fn session_max_age(reply: &cloakroom::testing::Reply) -> Option<u64> {
    reply
        .set_cookies
        .iter()
        .filter(|c| !c.contains("Max-Age=0"))
        .flat_map(|c| c.split("; "))
        .find_map(|attr| attr.strip_prefix("Max-Age="))
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn remember_me_keeps_a_login_for_its_own_lifetime() {
    const DAY: u64 = 24 * 3600;
    // Browser-session cookies, so the difference shows in the cookie.
    let mut b = Browser::new(app_with(&["--browser-session"]).await.router);
    let plain = b
        .send("POST", "/api/login", Some(json!({"username": "ada"})))
        .await;
    assert_eq!(plain.status, 200);
    assert!(!plain.set_cookies.is_empty());
    assert_eq!(session_max_age(&plain), None, "ends with the browser");

    let mut b = Browser::new(
        app_with(&["--browser-session", "--remember-me", "14d"])
            .await
            .router,
    );
    let api = b
        .send(
            "POST",
            "/api/login",
            Some(json!({"username": "ada", "remember": true})),
        )
        .await;
    let age = session_max_age(&api).expect("a persistent cookie");
    assert!(age > 13 * DAY && age <= 14 * DAY, "Max-Age {age}");

    // The HTML form's checkbox does the same.
    let mut b = Browser::new(app_with(&["--browser-session"]).await.router);
    let page = b.send("GET", "/login", None).await;
    assert!(page.body.contains("name=\"remember\""), "{}", page.body);
    let token = csrf(&page.body);
    let form_login = b
        .send_body(
            "POST",
            "/login",
            FORM,
            form(&[("csrf", &token), ("username", "ada"), ("remember", "on")]),
        )
        .await;
    assert_eq!(form_login.status, 303);
    let age = session_max_age(&form_login).expect("a persistent cookie");
    assert!(
        age > 29 * DAY && age <= 30 * DAY,
        "the default 30 days: {age}"
    );
    let profile = b.send("GET", "/api/profile", None).await;
    assert_eq!(json(&profile)["user_id"], "ada");
}

/// In production `/metrics` is not on the public port: it has its own listener
/// (`METRICS_PORT`, default 9090); in development it stays on the app's port.
#[tokio::test]
async fn production_serves_metrics_on_their_own_port_only() {
    let app = app_with(&["--production"]).await;
    let mut public = Browser::new(app.router.clone());
    assert_eq!(public.send("GET", "/metrics", None).await.status, 404);
    let (port, metrics) = app.metrics.clone().expect("a metrics listener");
    assert_eq!(port, cloakroom_app::config::DEFAULT_METRICS_PORT);
    let mut scraper = Browser::new(metrics);
    let scrape = scraper.send("GET", "/metrics", None).await;
    assert_eq!(scrape.status, 200);
    assert!(
        scrape.body.contains("cloakroom_session_operations_total"),
        "{}",
        scrape.body
    );
    assert_eq!(
        scraper.send("GET", "/api/profile", None).await.status,
        404,
        "only /metrics there"
    );
    let dev = app_with(&[]).await;
    assert!(dev.metrics.is_none());
    assert_eq!(
        Browser::new(dev.router)
            .send("GET", "/metrics", None)
            .await
            .status,
        200
    );
}
