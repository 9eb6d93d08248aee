//! Opening the configured backend: the session store and the todo store beside it.

use std::path::PathBuf;
use std::sync::Arc;

use cloakroom::{MemoryStore, SessionStore};
use cloakroom_embedded::{EmbeddedError, EmbeddedStore};

use crate::config::{StoreArgs, StoreSpec};
use crate::todos::{embedded::EmbeddedTodos, MemoryTodos, TodoStore};

/// Why the backend could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The embedded store failed to open.
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    /// The Redis store failed to connect.
    #[error("cannot use the Redis store at {url}: {source}")]
    Redis {
        /// The URL, password redacted.
        url: String,
        /// What went wrong.
        source: cloakroom_redis::RedisError,
    },
    /// A CA certificate file could not be read.
    #[error("cannot read the CA certificate {}: {source}", path.display())]
    CaFile {
        /// The file named by `--redis-ca` / `REDIS_CA_CERT` or `--postgres-ca` / `PGSSLROOTCERT`.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The PostgreSQL store failed to connect.
    #[error("cannot use the PostgreSQL store at {url}: {source}")]
    Postgres {
        /// The URL, password redacted.
        url: String,
        /// What went wrong.
        source: cloakroom_postgres::PostgresError,
    },
    /// The todo table could not be set up.
    #[error("cannot set up the todo lists: {0}")]
    Todos(String),
}

/// An open backend.
pub struct Backend {
    /// Sessions.
    pub sessions: Arc<dyn SessionStore>,
    /// Todo lists, in the same backend.
    pub todos: Arc<dyn TodoStore>,
    /// The folder the backend keeps its files in, if any.
    pub data_dir: Option<PathBuf>,
    /// A human-readable description for the startup log (no secrets).
    pub description: String,
    /// The Redis store itself, for the operator commands' server figures.
    pub redis: Option<cloakroom_redis::RedisStore>,
    embedded: Option<EmbeddedStore>,
}

impl Backend {
    /// Opens the backend `spec` names.
    ///
    /// # Errors
    /// [`BackendError`] with a message that says what to fix.
    pub async fn open(spec: &StoreSpec, args: &StoreArgs) -> Result<Self, BackendError> {
        match spec {
            StoreSpec::Memory => Ok(Self {
                sessions: Arc::new(MemoryStore::default()),
                todos: Arc::new(MemoryTodos::default()),
                data_dir: None,
                description: "memory (nothing survives a restart)".into(),
                redis: None,
                embedded: None,
            }),
            StoreSpec::Embedded(dir) => {
                let store = EmbeddedStore::open(dir)?;
                Ok(Self {
                    sessions: Arc::new(store.clone()),
                    todos: Arc::new(EmbeddedTodos::new(store.clone())),
                    data_dir: Some(dir.clone()),
                    description: format!("embedded store in {}", store.path().display()),
                    redis: None,
                    embedded: Some(store),
                })
            }
            StoreSpec::Redis(url) => crate::redis_backend::open(url, args).await,
            StoreSpec::Postgres(url) => crate::postgres_backend::open(url, args).await,
        }
    }

    /// Assembles a backend from parts (used by the Redis backend).
    #[must_use]
    pub fn from_parts(
        sessions: Arc<dyn SessionStore>,
        todos: Arc<dyn TodoStore>,
        description: String,
    ) -> Self {
        Self {
            sessions,
            todos,
            data_dir: None,
            description,
            redis: None,
            embedded: None,
        }
    }

    /// The embedded store, when that is the backend.
    #[must_use]
    pub fn embedded(&self) -> Option<&EmbeddedStore> {
        self.embedded.as_ref()
    }

    /// Flushes and closes: queued writes are committed before this returns.
    pub fn close(&self) {
        if let Some(store) = &self.embedded {
            store.shutdown();
        }
    }
}
