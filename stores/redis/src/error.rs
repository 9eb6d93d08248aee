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
