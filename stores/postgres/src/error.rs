//! Why a PostgreSQL store could not be opened.

/// Errors from [`crate::PostgresStore::connect`]. Operations on an open store fail with
/// [`cloakroom::StoreError`] instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// The URL is not `postgres://[user[:password]@]host[:port]/database[?…]`.
    #[error("malformed PostgreSQL URL ({0}); expected postgres://[user[:password]@]host[:port]/database")]
    Url(#[source] tokio_postgres::Error),
    /// The schema name would need quoting.
    #[error("schema name {0:?} must be lower-case letters, digits and _, starting with a letter, at most 63 characters")]
    Schema(String),
    /// The CA certificate could not be read as PEM.
    #[error("cannot use the CA certificate: {0}")]
    Certificate(String),
    /// The server did not answer, refused the credentials, or failed the TLS handshake.
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The tables could not be created, or were made by a newer version of this crate.
    #[error("cannot set up the session tables: {0}")]
    Setup(String),
}
