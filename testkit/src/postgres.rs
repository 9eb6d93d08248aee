//! Real PostgreSQL servers on free loopback ports, for tests that kill and restart them.
//!
//! `initdb` runs once per machine into a template folder (it takes about a second); each
//! server starts on a copy of it (a tenth of that). PostgreSQL refuses to run as root, so
//! when the tests run as root every server process runs as the `postgres` user that
//! Debian's package creates, through `setpriv` (which execs, so killing the child kills the
//! postmaster itself).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// Where Debian's `postgresql` package puts the server programs (not on `PATH`).
const DEBIAN_BIN: &str = "/usr/lib/postgresql";

/// Finds a server program (`initdb`, `postgres`) on `PATH` or in Debian's versioned folder.
fn find(program: &str) -> Option<PathBuf> {
    // Resolved, so that a symlink on PATH still names the versioned folder.
    let on_path = crate::which(program).map(|p| std::fs::canonicalize(&p).unwrap_or(p));
    on_path.or_else(|| {
        let mut versions: Vec<PathBuf> = std::fs::read_dir(DEBIAN_BIN)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(program)))
            .filter(|p| p.is_file())
            .collect();
        versions.sort();
        versions.pop()
    })
}

/// The `postgres` account's uid and gid, when these tests run as root.
fn run_as() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self").ok()?.uid();
    if me != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let mut parts = line.split(':').skip(2);
    let uid = parts.next()?.parse().ok()?;
    let gid = parts.next()?.parse().ok()?;
    Some((uid, gid))
}

/// A command that runs `program` as the server's account.
fn command(program: &Path) -> Command {
    match run_as() {
        Some((uid, gid)) => {
            let mut cmd = Command::new("setpriv");
            cmd.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg("--")
                .arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// Hands `dir` to the server's account (a no-op unless running as root).
fn give(dir: &Path) {
    if let Some((uid, gid)) = run_as() {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).expect("chown a test folder");
    }
}

async fn check(mut cmd: Command, what: &str) {
    let out = cmd.output().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A data folder made by `initdb` once; later calls reuse it.
async fn template(initdb: &Path) -> PathBuf {
    let root = std::env::temp_dir();
    let version = initdb
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .map_or_else(|| "pg".into(), |v| v.to_string_lossy().into_owned());
    let ready = root.join(format!("cloakroom-pg-template-{version}"));
    if ready.join("PG_VERSION").is_file() {
        return ready;
    }
    // Built aside and renamed into place, so concurrent test processes never see half of it.
    let building = crate::temp_dir("pg-template");
    give(&building);
    let data = building.join("data");
    let mut cmd = command(initdb);
    cmd.arg("-D")
        .arg(&data)
        .args(["-N", "-A", "trust", "-U", "postgres", "-E", "UTF8"])
        .args(["--locale=C", "--no-instructions"]);
    check(cmd, "initdb").await;
    if std::fs::rename(&data, &ready).is_err() && !ready.join("PG_VERSION").is_file() {
        panic!(
            "could not place the PostgreSQL template at {}",
            ready.display()
        );
    }
    let _ = std::fs::remove_dir_all(&building);
    ready
}

/// Whether a server flushes commits to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fsync=off`: fast, for tests (they restart the server, never the machine).
    Tests,
    /// PostgreSQL's defaults, for benchmarks.
    Durable,
}

/// A running PostgreSQL server with a `postgres` superuser (trust auth) on loopback.
/// Killed when dropped.
pub struct PostgresServer {
    /// Its port.
    pub port: u16,
    dir: PathBuf,
    program: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    durability: Durability,
    tls: bool,
}

impl PostgresServer {
    /// Starts a server on a fresh copy of the template, or `None` outside CI when PostgreSQL
    /// is not installed.
    ///
    /// # Panics
    /// In CI when PostgreSQL is missing, or if the server does not start.
    pub async fn start() -> Option<Self> {
        Self::start_with(Durability::Tests).await
    }

    /// Starts a server with the given durability.
    ///
    /// # Panics
    /// As [`PostgresServer::start`].
    pub async fn start_with(durability: Durability) -> Option<Self> {
        let (Some(initdb), Some(program)) = (find("initdb"), find("postgres")) else {
            let message = "PostgreSQL not found: install it with `apt-get install postgresql` \
                           (scripts/test does this when run as root)";
            assert!(!crate::in_ci(), "{message}");
            eprintln!("SKIPPED (not in CI): {message}");
            return None;
        };
        let template = template(&initdb).await;
        let dir = crate::temp_dir("postgres");
        give(&dir);
        let mut copy = command(Path::new("cp"));
        copy.arg("-a").arg(&template).arg(dir.join("data"));
        check(copy, "copy the PostgreSQL template").await;
        let mut server = Self {
            port: crate::free_port(),
            log: dir.join("server.log"),
            dir,
            program,
            child: None,
            durability,
            tls: false,
        };
        server.spawn().await;
        Some(server)
    }

    async fn spawn(&mut self) {
        // A killed postmaster's backends hold its shared memory for a moment; a new one
        // refuses to start until they are gone, so a failed start is retried (bounded).
        for _ in 0..40 {
            if self.try_spawn().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "postgres did not start on port {}: {}",
            self.port,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    async fn try_spawn(&mut self) -> bool {
        let _ = std::fs::remove_file(&self.log);
        let log = std::fs::File::create(&self.log).expect("create the server log");
        let mut cmd = command(&self.program);
        if self.durability == Durability::Tests {
            cmd.args(["-c", "fsync=off", "-c", "full_page_writes=off"]);
        }
        if self.tls {
            cmd.args(["-c", "ssl=on", "-c", "ssl_cert_file=server.crt"])
                .args(["-c", "ssl_key_file=server.key"]);
        }
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            .args(["-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group, so that an outage can kill the backends with it.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("start postgres");
        // Ready when it says so (it accepts TCP connections earlier, while still starting).
        for _ in 0..400 {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.contains("ready to accept connections") {
                self.child = Some(child);
                return true;
            }
            if child.try_wait().ok().flatten().is_some() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = child.kill().await;
        false
    }

    /// Restarts the server serving TLS with `tls`'s certificate (plain connections are still
    /// accepted: the client's `sslmode` decides).
    pub async fn enable_tls(&mut self, tls: &crate::redis::Tls) {
        let data = self.dir.join("data");
        for (from, to) in [(&tls.cert, "server.crt"), (&tls.key, "server.key")] {
            let to = data.join(to);
            std::fs::copy(from, &to).expect("copy the TLS files");
            give(&to);
        }
        // PostgreSQL refuses a key that others can read.
        let key = data.join("server.key");
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod the key");
        self.tls = true;
        self.restart().await;
    }

    /// The URL clients use.
    #[must_use]
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Kills the server and every backend at once (an outage: no shutdown, connections
    /// drop). Killing only the postmaster would let live backends answer a while longer.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status()
                    .await;
            }
            let _ = child.kill().await;
            let _ = child.wait().await;
        }
    }

    /// Starts it again on the same port and data (it recovers what was committed).
    pub async fn restart(&mut self) {
        self.kill().await;
        // Backends outlive a killed postmaster briefly; the new one waits for them to go.
        self.spawn().await;
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Some(pid) = child.id() {
                crate::kill_group(pid);
            }
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
