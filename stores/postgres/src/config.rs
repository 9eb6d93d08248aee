//! How to reach PostgreSQL: URL, schema, pool size, TLS trust and the expiry purge.

use std::fmt;
use std::time::Duration;

/// Connection settings for [`crate::PostgresStore`]. Private fields behind `with_*` builders,
/// so new options never break callers.
///
/// ```
/// use std::time::Duration;
/// use cloakroom_postgres::PostgresConfig;
/// let config = PostgresConfig::new("postgres://app@db.internal/app?sslmode=require")
///     .with_schema("sessions")
///     .with_pool_size(32)
///     .with_purge_every(Some(Duration::from_secs(60)));
/// assert_eq!(config.schema(), "sessions");
/// ```
#[derive(Clone)]
pub struct PostgresConfig {
    pub(crate) url: String,
    pub(crate) schema: String,
    pub(crate) pool_size: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) purge_every: Option<Duration>,
    pub(crate) ca_certificate: Option<Vec<u8>>,
}

/// The default schema: the store's two tables live there, apart from the app's own.
pub const DEFAULT_SCHEMA: &str = "cloakroom";

impl PostgresConfig {
    /// Settings for `url` (`postgres://[user[:password]@]host[:port]/database[?sslmode=…]`;
    /// `sslmode=verify-ca` and `verify-full` mean `require`, which always verifies here),
    /// with the defaults: schema `cloakroom`, 16 connections, 5 s to connect, a purge of
    /// expired sessions every 60 s.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: DEFAULT_SCHEMA.into(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            purge_every: Some(Duration::from_secs(60)),
            ca_certificate: None,
        }
    }

    /// The schema the tables live in (created if missing). Lower-case letters, digits and
    /// `_`, starting with a letter, at most 57 characters (its `<schema>_ended` channel must
    /// fit PostgreSQL's 63).
    #[must_use]
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The most connections the store keeps open (each request holds one for one call).
    #[must_use]
    pub fn with_pool_size(mut self, connections: usize) -> Self {
        self.pool_size = connections.max(1);
        self
    }

    /// How long one connection attempt, or a wait for a free pooled connection, may take.
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How often this process deletes expired sessions and aliases; `None` leaves it to
    /// another instance or to [`crate::PostgresStore::purge_expired`]. Expired rows are never
    /// served either way: every read and write checks the deadlines.
    #[must_use]
    pub fn with_purge_every(mut self, every: Option<Duration>) -> Self {
        self.purge_every = every.filter(|d| !d.is_zero());
        self
    }

    /// A PEM CA certificate to trust for TLS (`sslmode=require`), for managed services with
    /// their own CA; the public web roots are trusted either way.
    #[must_use]
    pub fn with_ca_certificate(mut self, pem: Option<Vec<u8>>) -> Self {
        self.ca_certificate = pem;
        self
    }

    /// The schema name.
    #[must_use]
    pub fn schema(&self) -> &str {
        &self.schema
    }
}

impl fmt::Debug for PostgresConfig {
    // Never print the URL: it may carry a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("purge_every", &self.purge_every)
            .field("ca_certificate", &self.ca_certificate.is_some())
            .finish_non_exhaustive()
    }
}

/// Whether `name` is a schema name that needs no quoting (so it can be put into SQL text).
pub(crate) fn valid_schema(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        // 63 is PostgreSQL's limit; the channel `<schema>_ended` must fit it too.
        && name.len() <= 63 - crate::sql::ENDED_CHANNEL.len()
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `url` with libpq's `sslmode=verify-ca` and `sslmode=verify-full` read as `require`, which
/// `tokio-postgres` knows: this store verifies the server's certificate and host name
/// whenever it uses TLS, so both are what `require` already does here.
pub(crate) fn libpq_ssl_modes(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let query: Vec<&str> = query
        .split('&')
        .map(|pair| match pair {
            "sslmode=verify-ca" | "sslmode=verify-full" => "sslmode=require",
            other => other,
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn libpq_verify_modes_are_require() {
        use super::libpq_ssl_modes as m;
        assert_eq!(m("postgres://h/d"), "postgres://h/d");
        assert_eq!(
            m("postgres://h/d?sslmode=verify-full&connect_timeout=3"),
            "postgres://h/d?sslmode=require&connect_timeout=3"
        );
        assert_eq!(
            m("postgres://h/d?application_name=x&sslmode=verify-ca"),
            "postgres://h/d?application_name=x&sslmode=require"
        );
        assert_eq!(
            m("postgres://h/d?sslmode=disable"),
            "postgres://h/d?sslmode=disable"
        );
    }

    #[test]
    fn schema_names_that_need_no_quoting() {
        for ok in ["cloakroom", "s1", "app_sessions", &"a".repeat(57)] {
            assert!(super::valid_schema(ok), "{ok}");
        }
        for bad in [
            "",
            "1s",
            "Sessions",
            "a-b",
            "a;drop",
            "a b",
            "\"x\"",
            // Its `<schema>_ended` channel would pass PostgreSQL's 63 bytes.
            &"a".repeat(58),
        ] {
            assert!(!super::valid_schema(bad), "{bad}");
        }
    }
}
