//! The pages in real headless Chromium: log in through the form, see the flash, add and
//! complete a todo, open a second page, log out. Screenshots go to `target/screenshots/`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use cloakroom_testkit::temp_dir;
use cloakroom_testkit::webdriver::Browser;

fn shot(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/screenshots")
        .join(format!("{name}.png"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visit_in_a_real_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let dir = temp_dir("browser-app");
    let store = dir.display().to_string();
    let app = common::app_with(&["--store", &store]).await;
    let (port, server) = common::serve(app.router.clone()).await;
    let base = format!("http://localhost:{port}");

    let step = async {
        browser.goto(&format!("{base}/")).await?;
        assert!(browser.text("h1").await?.contains("You are not logged in"));
        browser.screenshot(&shot("1-logged-out")).await?;

        browser.navigate_by("a.button").await?;
        // The login form: "Remember me" sits right beside its checkbox.
        let [bx, _, bw, _] = browser.rect("#remember").await?;
        let [lx, _, lw, _] = browser.rect("label.check").await?;
        assert!(
            bw <= 24.0 && lx + lw - (bx + bw) <= 160.0,
            "checkbox {bx}+{bw}, label {lx}+{lw}"
        );
        browser.screenshot(&shot("1b-login-form")).await?;
        browser.type_into("#username", "alice").await?;
        browser.navigate_by("form button").await?;
        assert_eq!(browser.url().await?, format!("{base}/"));
        assert_eq!(browser.text("#user").await?, "alice");
        assert!(browser.text(".flashes").await?.contains("Welcome, alice!"));
        assert_eq!(browser.text("#visits").await?, "1");
        let cookies = browser.cookies().await?;
        assert!(
            cookies
                .iter()
                .any(|(n, _)| n == cloakroom::DEFAULT_COOKIE_NAME),
            "the session cookie is set: {cookies:?}"
        );
        browser.screenshot(&shot("2-logged-in")).await?;

        browser.type_into("#title", "Water the <plants>").await?;
        browser.navigate_by("form.add button").await?;
        assert_eq!(browser.text(".todos .title").await?, "Water the <plants>");
        assert!(
            browser.find(".flashes").await.is_err(),
            "the welcome flash was shown once"
        );
        browser
            .navigate_by(".todos form[action$='/done'] button")
            .await?;
        browser.find(".todos li.done").await?;
        browser.screenshot(&shot("3-todo-done")).await?;

        browser.goto(&format!("{base}/views/about")).await?;
        browser.goto(&format!("{base}/views/about")).await?;
        assert_eq!(browser.text("body").await?, "you viewed this page 2 times");
        browser.screenshot(&shot("4-second-page")).await?;

        browser.goto(&format!("{base}/")).await?;
        assert_eq!(
            browser.text("#visits").await?,
            "4",
            "every visit to / counts, redirects included"
        );
        browser.navigate_by("form.logout button").await?;
        assert!(browser.text("h1").await?.contains("You are not logged in"));
        assert!(browser
            .text(".flashes")
            .await?
            .contains("You have been logged out."));
        browser.screenshot(&shot("5-logged-out-again")).await?;
        Ok::<(), String>(())
    };
    let outcome = tokio::time::timeout(Duration::from_secs(120), step).await;
    server.abort();
    app.backend.close();
    outcome
        .expect("the browser test finishes in time")
        .expect("every browser step succeeds");
}

/// "Your sessions": the user sees each of their sessions with its browser, ends one, then
/// all others, with plain forms; the ended devices are logged out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn your_sessions_page_ends_one_device_and_then_all_others() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let dir = temp_dir("browser-devices");
    let store = dir.display().to_string();
    let app = common::app_with(&["--store", &store]).await;
    let (port, server) = common::serve(app.router.clone()).await;
    let base = format!("http://localhost:{port}");
    // Another device of alice's, logged in over the JSON API with its own browser name.
    let device = |agent: &'static str| async move {
        let reply = cloakroom_testkit::http::request(
            port,
            "POST",
            "/api/login",
            &[("content-type", "application/json"), ("user-agent", agent)],
            Some(r#"{"username":"alice"}"#),
        )
        .await
        .expect("login from another device");
        reply.cookie().expect("a session cookie")
    };
    let profile = |cookie: String| async move {
        cloakroom_testkit::http::request(port, "GET", "/api/profile", &[("cookie", &cookie)], None)
            .await
            .expect("profile")
            .status
    };

    let step = async {
        browser.goto(&format!("{base}/login")).await?;
        browser.type_into("#username", "alice").await?;
        browser.navigate_by("form button").await?;
        let phone = device("Phone/1.0 (test)").await;
        browser.navigate_by("#devices").await?;
        let table = browser.text("table.sessions").await?;
        assert!(table.contains("Phone/1.0 (test)"), "{table}");
        assert!(browser.text(".current").await?.contains("This device"));
        browser.screenshot(&shot("6-your-sessions")).await?;
        let png = std::fs::read(shot("6-your-sessions")).map_err(|e| e.to_string())?;
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 1_000,
            "a real screenshot"
        );

        browser.navigate_by("table.sessions form button").await?;
        assert!(browser
            .text(".flashes")
            .await?
            .contains("That session has been logged out."));
        assert!(!browser.text("table.sessions").await?.contains("Phone/1.0"));
        assert_eq!(profile(phone).await, 401, "the phone is logged out");

        let tablet = device("Tablet/2.0 (test)").await;
        let laptop = device("Laptop/3.0 (test)").await;
        browser.goto(&format!("{base}/sessions")).await?;
        browser
            .navigate_by("form[action='/sessions/end-others'] button")
            .await?;
        assert!(browser
            .text(".flashes")
            .await?
            .contains("Logged out 2 other session(s)."));
        assert_eq!(profile(tablet).await, 401);
        assert_eq!(profile(laptop).await, 401);
        browser.screenshot(&shot("7-sessions-ended")).await?;
        Ok::<(), String>(())
    };
    let outcome = tokio::time::timeout(Duration::from_secs(120), step).await;
    server.abort();
    app.backend.close();
    outcome
        .expect("the browser test finishes in time")
        .expect("every browser step succeeds");
}
