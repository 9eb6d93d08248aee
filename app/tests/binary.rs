//! The `cloakroom` binary as a process: restart on the same data folder keeps sessions and
//! todos; bad configuration is a clear error at start.

use std::time::Duration;

use cloakroom_testkit::http::{request, wait_healthy};
use cloakroom_testkit::{free_port, temp_dir};
use tokio::process::{Child, Command};

mod common;

fn start(port: u16, store: &str) -> Child {
    common::spawn_binary(
        &["serve", "--port", &port.to_string(), "--store", store],
        &[],
    )
}

async fn stop(child: &mut Child) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("graceful stop in time");
    assert!(
        exit.expect("exit status").success(),
        "SIGTERM is a clean shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_todos_survive_a_restart() {
    let dir = temp_dir("restart");
    let store = dir.display().to_string();
    let port = free_port();
    let mut app = start(port, &store);
    wait_healthy(port, Duration::from_secs(15)).await.unwrap();
    let json = [("content-type", "application/json")];
    let login = request(
        port,
        "POST",
        "/api/login",
        &json,
        Some(r#"{"username":"alice"}"#),
    )
    .await
    .unwrap();
    let cookie = login.cookie().expect("a session cookie");
    let with_cookie = [
        ("content-type", "application/json"),
        ("cookie", cookie.as_str()),
    ];
    let added = request(
        port,
        "POST",
        "/api/todos",
        &with_cookie,
        Some(r#"{"title":"survive"}"#),
    )
    .await
    .unwrap();
    assert_eq!(added.status, 201);
    stop(&mut app).await;

    let mut app = start(port, &store);
    wait_healthy(port, Duration::from_secs(15)).await.unwrap();
    let profile = request(port, "GET", "/api/profile", &with_cookie[1..], None)
        .await
        .unwrap();
    assert_eq!(profile.status, 200, "{}", profile.body);
    assert_eq!(profile.json()["user_id"], "alice");
    let todos = request(port, "GET", "/api/todos", &with_cookie[1..], None)
        .await
        .unwrap();
    assert_eq!(todos.json()["todos"][0]["title"], "survive");
    stop(&mut app).await;
}

async fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloakroom"));
    cmd.args(args)
        .env_remove("SESSION_SECRET")
        .env_remove("CLOAKROOM_ENV");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(15), cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "refused with exit code 2");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn bad_configuration_is_a_clear_error() {
    let dir = temp_dir("refuse").display().to_string();
    let port = free_port().to_string();
    let err = refused(
        &["serve", "--production", "--store", &dir, "--port", &port],
        &[],
    )
    .await;
    assert!(
        err.contains("SESSION_SECRET is required in production"),
        "{err}"
    );
    let err = refused(
        &["serve", "--store", &dir, "--port", &port],
        &[("CLOAKROOM_ENV", "production")],
    )
    .await;
    assert!(
        err.contains("SESSION_SECRET is required in production"),
        "{err}"
    );
    let err = refused(
        &["serve", "--port", &port],
        &[("DB", "mysql://u:hunter2@h/db")],
    )
    .await;
    assert!(
        err.contains("Accepted") && !err.contains("hunter2"),
        "{err}"
    );
    let err = refused(
        &["serve", "--port", &port, "--store", &dir],
        &[("SESSION_SECRET", "short")],
    )
    .await;
    assert!(err.contains("invalid SESSION_SECRET"), "{err}");
    let bad = temp_dir("corrupt");
    std::fs::write(bad.join("sessions.redb"), vec![7u8; 4096]).unwrap();
    let err = refused(
        &[
            "serve",
            "--port",
            &port,
            "--store",
            &bad.display().to_string(),
        ],
        &[],
    )
    .await;
    assert!(err.contains("Move it aside"), "{err}");
}

/// Starts the binary with `args` and a store in a fresh folder, waits until it answers,
/// stops it, and returns what it logged.
async fn start_up_log(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = temp_dir("start-up").display().to_string();
    let port = free_port();
    let port_text = port.to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloakroom"));
    cmd.args(["serve", "--port", &port_text, "--store", &dir])
        .args(args)
        .env("SESSION_SECRET", common::SECRET)
        .env_remove("CLOAKROOM_ENV")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    cloakroom_testkit::http::wait_healthy(port, Duration::from_secs(15))
        .await
        .unwrap();
    stop(&mut child).await;
    let out = child.wait_with_output().await.unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// OWASP 7 and 13: the cookie is Secure unless `--insecure-cookie` is given, which is
/// warned about; a plain-HTTP listener on a non-loopback address is warned about too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owasp_07_13_insecure_set_ups_are_said_out_loud() {
    let quiet = start_up_log(&[], &[]).await;
    assert!(!quiet.contains("without Secure"), "{quiet}");
    assert!(!quiet.contains("plain HTTP"), "{quiet}");
    let insecure = start_up_log(&["--insecure-cookie"], &[]).await;
    assert!(insecure.contains("without Secure"), "{insecure}");
    let exposed = start_up_log(&["--host", "0.0.0.0"], &[]).await;
    assert!(exposed.contains("plain HTTP"), "{exposed}");
}

/// While the app holds the embedded store, `stats` and `sizing` read it through the app's
/// admin socket instead of refusing; once the app stops, they open the file themselves.
#[tokio::test]
async fn operator_commands_work_while_the_app_holds_the_embedded_store() {
    let dir = temp_dir("ops-running").display().to_string();
    let port = free_port();
    let mut app = start(port, &dir);
    wait_healthy(port, Duration::from_secs(15)).await.unwrap();
    for user in ["ada", "bob"] {
        let body = format!(r#"{{"username":"{user}"}}"#);
        let reply = request(
            port,
            "POST",
            "/api/login",
            &[("content-type", "application/json")],
            Some(&body),
        )
        .await
        .unwrap();
        assert_eq!(reply.status, 200);
    }
    let run = |args: Vec<String>| async move {
        let out = Command::new(env!("CARGO_BIN_EXE_cloakroom"))
            .args(args)
            .output()
            .await
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let args = |cmd: &[&str]| {
        let mut v: Vec<String> = cmd.iter().map(|s| (*s).to_owned()).collect();
        v.extend(["--store".to_owned(), dir.clone()]);
        v
    };
    let (ok, text) = run(args(&["stats"])).await;
    assert!(ok, "{text}");
    assert!(text.contains("read from the running app"), "{text}");
    assert!(text.contains("sessions: 2"), "{text}");
    assert!(text.contains(" free; "), "pages used and free: {text}");
    let (ok, text) = run(args(&["stats", "--json"])).await;
    assert!(ok, "{text}");
    let figures: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(figures["sessions"], 2);
    let (ok, text) = run(args(&["sizing", "--sessions", "1000000"])).await;
    assert!(ok && text.contains("recommended instance"), "{text}");
    let checked = Command::new(env!("CARGO_BIN_EXE_cloakroom"))
        .args(args(&["check"]))
        .env("SESSION_SECRET", common::SECRET)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&checked.stdout).into_owned();
    assert!(checked.status.success(), "{text}");
    assert!(
        text.contains("read from the running app) answers, 2 session(s)"),
        "{text}"
    );
    let (ok, text) = run(args(&["stats", "--watch", "1", "--count", "1"])).await;
    assert!(ok, "{text}");
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.lines().nth(1).unwrap().split_whitespace().nth(1) == Some("2"),
        "{text}"
    );
    stop(&mut app).await;
    let (ok, text) = run(args(&["stats"])).await;
    assert!(
        ok && text.contains("sessions: 2") && !text.contains("running app"),
        "{text}"
    );
    assert!(text.contains(" free; "), "{text}");
}

/// `LOG_FORMAT=json`: every line the binary writes is one JSON object with the fields
/// Cloud Logging and Loki index, start-up and shutdown included; a session appears only as
/// its fingerprint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_json_on_every_line() {
    let dir = temp_dir("json-logs").display().to_string();
    let port = free_port();
    let port_text = port.to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloakroom"));
    cmd.args(["serve", "--port", &port_text, "--store", &dir])
        .env("SESSION_SECRET", common::SECRET)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .env_remove("CLOAKROOM_ENV")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    wait_healthy(port, Duration::from_secs(15)).await.unwrap();
    let cookie = common::instances::login(port, "alice").await;
    let logout = common::instances::call(port, "POST", "/api/logout", Some(&cookie), None).await;
    assert!(logout.status < 300, "{}", logout.body);
    // Audit lines come from the events thread: give it a moment before the shutdown.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop(&mut child).await;
    let out = child.wait_with_output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 3, "{text}");
    for line in &lines {
        for field in ["timestamp", "severity", "message", "target"] {
            assert!(line.get(field).is_some(), "{field} missing: {line}");
        }
    }
    let login_line = lines
        .iter()
        .find(|l| l["message"] == "login")
        .unwrap_or_else(|| panic!("the login is logged at debug: {text}"));
    assert_eq!(login_line["severity"], "DEBUG");
    let fingerprint = login_line["session"].as_str().expect("a fingerprint");
    assert_eq!(fingerprint.len(), 8, "{fingerprint}");
    // One audit line per login and logout, at INFO, with the user and the fingerprint.
    for (message, reason) in [
        ("audit: login", None),
        ("audit: session ended", Some("logged_out")),
    ] {
        let line = lines
            .iter()
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("{message}: {text}"));
        assert_eq!(line["severity"], "INFO");
        assert_eq!(line["user"], "alice", "{line}");
        assert_eq!(line["session"].as_str().map(str::len), Some(8), "{line}");
        if let Some(reason) = reason {
            assert_eq!(line["reason"], reason, "{line}");
        }
    }
    let value = cookie.split_once('=').unwrap().1;
    let id = value.split('.').next().unwrap();
    assert!(!text.contains(id), "the session ID never reaches the log");
    assert!(!text.contains('\u{1b}'), "no colour codes in a pipe");
}
