//! Why a Redis store could not be opened.

/// Errors from [`crate::RedisStore::connect`]. Operations on an open store fail with
/// [`cloakroom::StoreError`] instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The URL is not `redis://[user:password@]host:port[/db]` or `rediss://…`.
    #[error(
        "malformed Redis URL ({0}); expected redis://[user:password@]host:port[/db] or rediss://…"
    )]
    Url(#[source] redis::RedisError),
    /// The CA certificate given for `rediss://` could not be used.
    #[error("cannot use the CA certificate for rediss://: {0}")]
    Certificate(#[source] redis::RedisError),
    /// The server did not answer, refused the credentials, or failed the TLS handshake.
    #[error("cannot connect to Redis: {0}")]
    Connect(#[source] redis::RedisError),
    /// The URL's topology (cluster seeds, sentinels) cannot be read.
    #[error("cannot read the Redis URL: {0}")]
    Topology(&'static str),
    /// The prefix is empty or contains a character that would make keys ambiguous.
    #[error("key prefix {0:?} must be 1 to 64 printable characters without spaces or braces")]
    Prefix(String),
}

/// A durable write ([`crate::RedisConfig::with_durable_writes`]) that no replica acknowledged
/// in time. It is on the primary, but a failover now could lose it, so it is not reported
/// done. Found inside [`cloakroom::StoreError::Unavailable`].
#[derive(Debug, thiserror::Error)]
#[error("no replica acknowledged the write within {0:?}")]
pub struct NotReplicated(pub std::time::Duration);
