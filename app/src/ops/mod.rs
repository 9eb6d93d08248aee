//! The operator commands, one file each: `stats` (and `watch`), `sizing`, `check`,
//! `sessions` (list and revoke), and `migrate` (copy every session to another store); `admin` is the running app's socket they ask when the
//! embedded store's file is held by the app.

pub mod admin;
mod check;
pub mod migrate;
mod sessions;
mod sizing;
mod stats;
mod watch;

pub use check::check;
pub use migrate::migrate;
pub use sessions::{list, revoke};
pub use sizing::{sizing, MEASURED_SESSION_BYTES};
pub use stats::stats;
pub use watch::watch;

use crate::backend::url::StoreSpecError;
use crate::backend::{Backend, BackendError};
use crate::config::StoreArgs;
use stats::Stats;

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The store setting.
    #[error(transparent)]
    Spec(#[from] StoreSpecError),
    /// Opening the backend.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A store call.
    #[error(transparent)]
    Store(#[from] cloakroom::StoreError),
    /// A key that is not one `list` prints.
    #[error("invalid session key {0:?}: use a key printed by `cloakroom list`")]
    BadKey(String),
    /// The running app's admin socket did not answer.
    #[error("cannot read the running app's figures through its admin socket: {0}")]
    Admin(String),
    /// The migration's state file.
    #[error("cannot save the migration's position: {0}")]
    State(String),
    /// `memory` has nothing to inspect from another process.
    #[error("the memory store lives inside the app process; operator commands need the embedded, Redis or PostgreSQL store")]
    Memory,
}

/// The embedded store's figures from the app that holds it open, if that is the case: its
/// file is locked to one process, so `stats` and `sizing` ask the app over its admin socket.
async fn from_running_app(store: &StoreArgs, error: &OpsError) -> Option<(String, Stats)> {
    let OpsError::Backend(BackendError::Embedded(cloakroom_embedded::EmbeddedError::InUse {
        ..
    })) = error
    else {
        return None;
    };
    let crate::backend::url::StoreSpec::Embedded(dir) = store.resolve().parse().ok()? else {
        return None;
    };
    let figures = crate::ops::admin::ask_stats(&crate::ops::admin::socket_path(&dir))
        .await
        .ok()?;
    let description = format!(
        "embedded store in {} (read from the running app)",
        dir.display()
    );
    Some((
        description.clone(),
        Stats {
            store: description,
            sessions: figures.sessions,
            bytes: figures.bytes,
            redis: None,
            file: figures.file,
            read_caches: Vec::new(),
            warnings: Vec::new(),
        },
    ))
}

async fn open(store: &StoreArgs) -> Result<Backend, OpsError> {
    let spec: crate::backend::url::StoreSpec = store.resolve().parse()?;
    if spec == crate::backend::url::StoreSpec::Memory {
        return Err(OpsError::Memory);
    }
    // A command reads and writes once: no read cache (nor its tracking link, nor its figures
    // among the running instances').
    let mut args = store.clone();
    args.read_cache = false;
    Ok(Backend::open(&spec, &args).await?)
}
