//! Helpers shared by the app's test files.
#![allow(dead_code)]

pub mod instances;

use cloakroom::testing::{Browser, Reply};
use cloakroom_app::config::ServeArgs;
use cloakroom_app::serve::{self, App};

pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";

/// The app on the memory store, with extra serve flags.
pub async fn app_with(flags: &[&str]) -> App {
    let mut args = flags.to_vec();
    if !flags.contains(&"--store") {
        args.extend_from_slice(&["--store", "memory"]);
    }
    let args = ServeArgs::parse_args(args).expect("valid flags");
    serve::build(&args, Some(SECRET)).await.expect("app builds")
}

pub async fn browser() -> Browser {
    Browser::new(app_with(&[]).await.router)
}

/// The CSRF token in a page.
pub fn csrf(html: &str) -> String {
    let start =
        html.find("name=\"csrf\" value=\"").expect("a CSRF field") + "name=\"csrf\" value=\"".len();
    html[start..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_owned()
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub const FORM: &str = "application/x-www-form-urlencoded";

/// Logs `b` in through the HTML form; returns the reply to the POST.
pub async fn form_login(b: &mut Browser, user: &str) -> Reply {
    let page = b.send("GET", "/login", None).await;
    let token = csrf(&page.body);
    b.send_body(
        "POST",
        "/login",
        FORM,
        form(&[("csrf", &token), ("username", user)]),
    )
    .await
}

pub fn location(reply: &Reply) -> &str {
    reply
        .headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

pub fn json(reply: &Reply) -> serde_json::Value {
    serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", reply.body))
}

/// Starts the `cloakroom` binary with `args`, the test secret, no store variables from the
/// outer environment, and then `env`. Killed when dropped.
pub fn spawn_binary(args: &[&str], env: &[(&str, &str)]) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cloakroom"));
    cmd.args(args).env("SESSION_SECRET", SECRET);
    for var in ["HOST", "SESSION_STORE", "DB", "REDIS_URL", "DATABASE_URL"] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the binary")
}

/// Serves `router` on a free loopback port; the server stops when the handle is aborted.
pub async fn serve(router: axum::Router) -> (u16, tokio::task::JoinHandle<()>) {
    let port = cloakroom_testkit::free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind a loopback port");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (port, server)
}
