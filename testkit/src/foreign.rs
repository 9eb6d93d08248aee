//! Real Express and Flask apps, written like the tutorials (`testkit/foreign/`), for the
//! migration tests: express-session with connect-redis, and Flask-Session, on a given Redis.
//!
//! Their packages are installed once, at pinned versions, into `target/foreign/` (npm into
//! `node_modules`, pip into a virtualenv), which later runs reuse; concurrent tests wait for one
//! install. Needs `node`, `npm` and `python3` with `venv` (Debian: nodejs npm python3-venv).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// The npm packages, pinned.
const NPM: [&str; 4] = [
    "express@5.3.0",
    "express-session@1.19.0",
    "connect-redis@9.0.0",
    "redis@6.3.1",
];
/// The PyPI packages, pinned.
const PIP: [&str; 4] = [
    "flask==3.1.3",
    "flask-session==0.8.0",
    "redis==8.1.0",
    "msgspec==0.23.0",
];
/// Bumped when the pins change: a folder installed for other pins is installed again.
const STAMP: &str = "installed-v1";

fn sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("foreign")
}

fn root() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        },
        PathBuf::from,
    );
    target.join("foreign")
}

/// The install folder, installing into it first if needed; `None` outside CI when node, npm
/// or python3 is missing.
///
/// # Panics
/// In CI when a program is missing, or when an install fails or takes over ten minutes.
pub async fn installed() -> Option<PathBuf> {
    crate::require("node", "nodejs")?;
    crate::require("npm", "npm")?;
    let python = crate::require("python3", "python3-venv")?;
    let root = root();
    if root.join(STAMP).is_file() {
        return Some(root);
    }
    std::fs::create_dir_all(&root).expect("create target/foreign");
    // One installer at a time: the others wait for its stamp (a lock folder older than the
    // longest install is a crashed run's, and is taken over).
    let lock = root.join("installing");
    let started = Instant::now();
    loop {
        if root.join(STAMP).is_file() {
            return Some(root);
        }
        match std::fs::create_dir(&lock) {
            Ok(()) => break,
            Err(_) if stale(&lock) => {
                let _ = std::fs::remove_dir(&lock);
            }
            Err(_) => {
                assert!(
                    started.elapsed() < Duration::from_secs(600),
                    "waited ten minutes for another test's install into {}",
                    root.display()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let result = install(&root, &python).await;
    let _ = std::fs::remove_dir(&lock);
    if let Err(e) = result {
        panic!("installing the Express and Flask test apps failed: {e}");
    }
    std::fs::write(root.join(STAMP), "").expect("write the stamp");
    Some(root)
}

fn stale(lock: &Path) -> bool {
    std::fs::metadata(lock)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(900))
}

async fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = tokio::time::timeout(Duration::from_secs(600), cmd.kill_on_drop(true).output())
        .await
        .map_err(|_| format!("{what} took over ten minutes"))?
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

async fn install(root: &Path, python: &Path) -> Result<(), String> {
    std::fs::write(
        root.join("package.json"),
        r#"{"private": true, "type": "module"}"#,
    )
    .map_err(|e| e.to_string())?;
    run(
        Command::new("npm")
            .current_dir(root)
            .args(["install", "--no-audit", "--no-fund", "--save-exact"])
            .args(NPM),
        "npm install",
    )
    .await?;
    let venv = root.join("venv");
    if !venv.join("bin").join("python").is_file() {
        run(
            Command::new(python).arg("-m").arg("venv").arg(&venv),
            "python3 -m venv (apt-get install python3-venv)",
        )
        .await?;
    }
    run(
        Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PIP),
        "pip install",
    )
    .await
}

/// A running foreign app on a free loopback port; killed when dropped.
pub struct ForeignApp {
    /// Its port.
    pub port: u16,
    _child: Child,
}

impl ForeignApp {
    /// The Express app (express-session + connect-redis) on `redis_url`, signing with the first
    /// of the comma-separated `secrets`; `None` outside CI without node.
    pub async fn express(redis_url: &str, secrets: &str) -> Option<Self> {
        let root = installed().await?;
        let port = crate::free_port();
        // Node resolves packages from the script's folder upwards: run a copy inside root.
        let script = root.join("express-app.mjs");
        std::fs::copy(sources().join("express-app.mjs"), &script).expect("copy the Express app");
        let mut cmd = Command::new("node");
        cmd.arg(&script)
            .env("PORT", port.to_string())
            .env("REDIS_URL", redis_url)
            .env("SESSION_SECRET", secrets);
        Some(Self::spawn(cmd, port, "Express").await)
    }

    /// The Flask app (Flask-Session on Redis) on `redis_url` with `secret_key`, its cookie
    /// signed when `signer`, its records in `format` (`msgpack` or `json`); `None` outside CI
    /// without python3.
    pub async fn flask(
        redis_url: &str,
        secret_key: &str,
        signer: bool,
        format: &str,
    ) -> Option<Self> {
        let root = installed().await?;
        let port = crate::free_port();
        let mut cmd = Command::new(root.join("venv").join("bin").join("python"));
        cmd.arg(sources().join("flask_app.py"))
            .env("PORT", port.to_string())
            .env("REDIS_URL", redis_url)
            .env("SECRET_KEY", secret_key)
            .env("SIGNER", if signer { "1" } else { "0" })
            .env("FORMAT", format);
        Some(Self::spawn(cmd, port, "Flask").await)
    }

    async fn spawn(mut cmd: Command, port: u16, name: &str) -> Self {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start the {name} app: {e}"));
        assert!(
            crate::wait_for_port(port, Duration::from_secs(30)).await,
            "the {name} app did not listen on {port} within 30 s"
        );
        Self {
            port,
            _child: child,
        }
    }
}
