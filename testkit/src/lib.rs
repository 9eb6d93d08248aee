//! Test harness shared by the store and app tests. Real parts, not mocks: `redis-server`
//! and PostgreSQL processes on free loopback ports (so tests can kill and restart them),
//! Chromium through chromedriver, and the app over real TCP.
//!
//! Prerequisites are found on `PATH`. When one is missing, [`require`] fails the test if
//! `CI=true` and otherwise skips it loudly: nothing is skipped silently in CI.
#![forbid(unsafe_code)]

pub mod balancer;
pub mod endpoint;
pub mod foreign;
pub mod http;
pub mod postgres;
pub mod redis;
pub mod webdriver;

use std::net::TcpListener;
use std::path::PathBuf;

/// A free loopback TCP port.
///
/// # Panics
/// If the OS has no free port (a test-environment failure).
#[must_use]
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Finds `program` on `PATH` (or at an absolute path).
#[must_use]
pub fn which(program: &str) -> Option<PathBuf> {
    let candidate = PathBuf::from(program);
    if candidate.is_absolute() {
        return candidate.is_file().then_some(candidate);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// Whether this is a CI run (`CI=true`): missing prerequisites are failures there.
#[must_use]
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Returns the path of `program`, or `None` (test should return early) outside CI.
///
/// # Panics
/// In CI, when the program is missing: a missing prerequisite fails the run.
#[must_use]
pub fn require(program: &str, debian_package: &str) -> Option<PathBuf> {
    if let Some(path) = which(program) {
        return Some(path);
    }
    let message = format!(
        "{program} not found: install it with `apt-get install {debian_package}` (scripts/test does this when run as root)"
    );
    assert!(!in_ci(), "{message}");
    eprintln!("SKIPPED (not in CI): {message}");
    None
}

/// Kills the process group `pid` leads (a child started with `process_group(0)`) and
/// everything in it, at once: a server's workers or a browser's helpers must not outlive it.
pub fn kill_group(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .status();
}

/// A fresh, empty temporary folder for one test.
#[must_use]
pub fn temp_dir(label: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "cloakroom-{label}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

/// Waits until `port` on loopback accepts TCP connections, for at most `limit`; whether it
/// did. Every server the kit starts is waited for here.
pub async fn wait_for_port(port: u16, limit: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    false
}

/// A server a test can take down and bring back (Redis, PostgreSQL): the outage tests are
/// written once over it.
pub trait Outage {
    /// Kills the server (its data stays on disk).
    fn kill(&mut self) -> impl std::future::Future<Output = ()> + Send;
    /// Starts it again on the same port and data.
    fn restart(&mut self) -> impl std::future::Future<Output = ()> + Send;
}

impl Outage for redis::RedisServer {
    async fn kill(&mut self) {
        redis::RedisServer::kill(self).await;
    }
    async fn restart(&mut self) {
        redis::RedisServer::restart(self).await;
    }
}

impl Outage for postgres::PostgresServer {
    async fn kill(&mut self) {
        postgres::PostgresServer::kill(self).await;
    }
    async fn restart(&mut self) {
        postgres::PostgresServer::restart(self).await;
    }
}
