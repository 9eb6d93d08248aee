//! The Redis backend: sessions and todo lists on one Redis/Valkey connection.

use std::sync::Arc;

use cloakroom_redis::{RedisConfig, RedisStore};

use crate::backend::url::redact;
use crate::backend::{Backend, BackendError};
use crate::config::StoreArgs;
use crate::todos::redis::RedisTodos;

/// Connects to Redis at `url` with the password, CA and prefix from `args`.
///
/// # Errors
/// [`BackendError`] naming the URL (password redacted) and what went wrong.
pub async fn open(url: &str, args: &StoreArgs) -> Result<Backend, BackendError> {
    let ca = match &args.redis_ca {
        Some(path) => Some(std::fs::read(path).map_err(|source| BackendError::CaFile {
            path: path.clone(),
            source,
        })?),
        None => None,
    };
    let config = RedisConfig::new(url)
        .with_password(args.redis_password.clone())
        .with_ca_certificate(ca)
        .with_prefix(args.key_prefix.clone())
        .with_read_cache_bytes(if args.read_cache {
            args.read_cache_bytes
        } else {
            0
        })
        .with_durable_writes(Some(args.durable_writes));
    let store = RedisStore::connect(config)
        .await
        .map_err(|source| BackendError::Redis {
            url: redact(url),
            source,
        })?;
    let todos = RedisTodos::new(store.connection());
    let mut backend = Backend::from_parts(
        Arc::new(store.clone()),
        Arc::new(todos),
        format!("Redis at {}", redact(url)),
    );
    backend.redis = Some(store);
    Ok(backend)
}
