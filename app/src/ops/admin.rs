//! The local admin socket: while the app holds the embedded store (its file is locked to
//! one process), the operator commands ask the app itself. A Unix socket in the data folder,
//! readable by the app's user only; it answers `GET /stats` with JSON and nothing else.

use std::path::{Path, PathBuf};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use cloakroom::{SessionLayer, StoreStats};
use serde_json::json;

/// The socket's file name inside the data folder.
pub const SOCKET: &str = "admin.sock";

/// The socket path for a data folder.
#[must_use]
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// The figures the socket serves.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct AdminStats {
    /// Live sessions.
    pub sessions: u64,
    /// The data file's size, bytes.
    pub bytes: Option<u64>,
    /// Running totals since the app started, for `stats --watch`.
    #[serde(default)]
    pub totals: Totals,
    /// The data file's page use.
    #[serde(default)]
    pub file: Option<cloakroom_embedded::FileStats>,
}

/// Running totals of the app's session layer.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Totals {
    /// Logins.
    pub logins: u64,
    /// Sessions loaded.
    pub reads: u64,
    /// Sessions written (created, changed, cycled, destroyed).
    pub writes: u64,
    /// Store calls per latency bucket (`cloakroom::LATENCY_BUCKETS`, then slower).
    pub latency: Vec<u64>,
}

fn totals(layer: &SessionLayer) -> Totals {
    use std::sync::atomic::Ordering::Relaxed;
    let m = layer.metrics();
    Totals {
        logins: m.logins.load(Relaxed),
        reads: m.loads.load(Relaxed),
        writes: m.applies.load(Relaxed)
            + m.creates.load(Relaxed)
            + m.cycles.load(Relaxed)
            + m.destroys.load(Relaxed),
        latency: m.store_latency.buckets(),
    }
}

async fn stats(State((layer, store)): State<Shared>) -> Json<serde_json::Value> {
    let file = match &store {
        Some(store) => store.file_stats().await.ok(),
        None => None,
    };
    match layer.ready().await {
        Ok(StoreStats {
            sessions, bytes, ..
        }) => Json(json!(AdminStats {
            sessions,
            bytes,
            totals: totals(&layer),
            file,
        })),
        Err(e) => Json(json!({ "error": e.to_string() })),
    }
}

/// What the socket's handlers read.
type Shared = (SessionLayer, Option<cloakroom_embedded::EmbeddedStore>);

/// Serves the admin socket at `path` until the process ends; a stale socket file is
/// replaced. Logged and skipped when it cannot be opened (the app serves on).
#[cfg(unix)]
pub fn spawn(path: PathBuf, layer: SessionLayer, store: Option<cloakroom_embedded::EmbeddedStore>) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(&path);
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "no admin socket: operator commands cannot read the running app's store");
            return;
        }
    };
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    let router = Router::new()
        .route("/stats", get(stats))
        .with_state((layer, store));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::warn!(error = %e, "admin socket stopped");
        }
    });
}

/// Not on this platform.
#[cfg(not(unix))]
pub fn spawn(
    _path: PathBuf,
    _layer: SessionLayer,
    _store: Option<cloakroom_embedded::EmbeddedStore>,
) {
}

/// Asks the running app on `path` for its stats.
///
/// # Errors
/// An I/O error when nothing answers there, or its answer is not stats.
#[cfg(unix)]
pub async fn ask_stats(path: &Path) -> std::io::Result<AdminStats> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::UnixStream::connect(path).await?;
    stream
        .write_all(b"GET /stats HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
        .await?;
    let mut reply = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut reply),
    )
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let text = String::from_utf8_lossy(&reply);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).map_err(std::io::Error::other)
}

/// Not on this platform.
///
/// # Errors
/// Always.
#[cfg(not(unix))]
pub async fn ask_stats(_path: &Path) -> std::io::Result<AdminStats> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}
