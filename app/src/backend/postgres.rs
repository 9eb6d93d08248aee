//! The PostgreSQL backend: sessions and todo lists in one database, through one pool.

use std::sync::Arc;

use cloakroom_postgres::{PostgresConfig, PostgresStore};

use crate::backend::url::redact;
use crate::backend::{Backend, BackendError};
use crate::config::StoreArgs;
use crate::todos::postgres::PostgresTodos;

/// Connects to PostgreSQL at `url`, with the CA from `args` for `sslmode=require`.
///
/// # Errors
/// [`BackendError`] naming the URL (password redacted) and what went wrong.
pub async fn open(url: &str, args: &StoreArgs) -> Result<Backend, BackendError> {
    let ca = match &args.postgres_ca {
        Some(path) => Some(std::fs::read(path).map_err(|source| BackendError::CaFile {
            path: path.clone(),
            source,
        })?),
        None => None,
    };
    let failed = |source: cloakroom_postgres::PostgresError| BackendError::Postgres {
        url: redact(url),
        source,
    };
    let store = PostgresStore::connect(
        PostgresConfig::new(url)
            .with_schema(args.postgres_schema.clone())
            .with_ca_certificate(ca),
    )
    .await
    .map_err(failed)?;
    let todos = PostgresTodos::new(store.pool().clone(), store.schema())
        .await
        .map_err(|e| BackendError::Todos(e.to_string()))?;
    Ok(Backend::from_parts(
        Arc::new(store),
        Arc::new(todos),
        format!("PostgreSQL at {}", redact(url)),
    ))
}
