//! Opening the configured backend: the session store and the todo store beside it.
//!
//! - `url`: the store setting parsed ([`url::StoreSpec`]) and URLs redacted for logs;
//! - `redis`, `postgres`: opening each server's stores;
//! - `late`: a backend connected in the background when it was unreachable at start.

pub mod late;
pub mod postgres;
pub mod redis;
pub mod url;

use std::path::PathBuf;
use std::sync::Arc;

use cloakroom::{MemoryStore, SessionStore};
use cloakroom_embedded::{EmbeddedError, EmbeddedStore};

use crate::config::StoreArgs;
use crate::todos::{embedded::EmbeddedTodos, MemoryTodos, TodoStore};
use url::StoreSpec;

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
    /// The store did not answer the first try in time (it is tried again in the background).
    #[error("the session store did not answer within {0:?}")]
    NoAnswer(std::time::Duration),
}

/// How long the start waits for the store before it serves and goes on trying in the
/// background.
const FIRST_TRY: std::time::Duration = std::time::Duration::from_secs(3);

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
    /// A store still being connected in the background ([`crate::late`]).
    pub late: Option<Arc<late::Late>>,
    embedded: Option<EmbeddedStore>,
}

impl BackendError {
    /// Whether this is the network's doing (the server unreachable, refusing us, or its
    /// set-up failing), which a later try may not meet; not a mistake in the configuration.
    #[must_use]
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Redis {
                source: cloakroom_redis::RedisError::Connect(_),
                ..
            } | Self::Postgres {
                source: cloakroom_postgres::PostgresError::Connect(_)
                    | cloakroom_postgres::PostgresError::Setup(_),
                ..
            } | Self::Todos(_)
                | Self::NoAnswer(_)
        )
    }
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
                late: None,
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
                    late: None,
                    embedded: Some(store),
                })
            }
            StoreSpec::Redis(url) => redis::open(url, args).await,
            StoreSpec::Postgres(url) => postgres::open(url, args).await,
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
            late: None,
            embedded: None,
        }
    }

    /// Opens the backend for serving: a Redis or PostgreSQL store that cannot be reached yet
    /// is connected in the background ([`crate::late`]) while the app serves; what is wrong
    /// at boot whatever the network does (a malformed URL, a missing CA file) still stops it.
    ///
    /// # Errors
    /// [`BackendError`] for what no later try can fix.
    pub async fn open_serving(spec: &StoreSpec, args: &StoreArgs) -> Result<Self, BackendError> {
        if !matches!(spec, StoreSpec::Redis(_) | StoreSpec::Postgres(_)) {
            return Self::open(spec, args).await;
        }
        let tried = tokio::time::timeout(FIRST_TRY, Self::open(spec, args)).await;
        let first = match tried.unwrap_or(Err(BackendError::NoAnswer(FIRST_TRY))) {
            Err(e) if e.is_unreachable() => e,
            opened => return opened,
        };
        tracing::warn!(error = %first, "the session store is unreachable: serving, and connecting in the background");
        let what = match spec {
            StoreSpec::Redis(url) => format!("Redis at {}", crate::backend::url::redact(url)),
            StoreSpec::Postgres(url) => {
                format!("PostgreSQL at {}", crate::backend::url::redact(url))
            }
            _ => "the session store".to_owned(),
        };
        let (spec, args) = (spec.clone(), args.clone());
        let late = late::Late::start(what.clone(), &first, move || {
            let (spec, args) = (spec.clone(), args.clone());
            // Boxed: the store's whole set-up is a deep future type.
            let open: late::Opening = Box::pin(async move { Self::open(&spec, &args).await });
            open
        });
        let mut backend = Self::from_parts(
            Arc::new(late::LateSessions(late.clone())),
            Arc::new(late::LateTodos(late.clone())),
            format!("{what} (connecting in the background)"),
        );
        backend.late = Some(late);
        Ok(backend)
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
