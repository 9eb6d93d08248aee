//! How to reach Redis: URL, credentials, TLS trust and time limits.

use std::fmt;
use std::time::Duration;

/// Connection settings for [`crate::RedisStore`]. Private fields behind `with_*` builders, so
/// new options never break callers.
///
/// ```
/// use std::time::Duration;
/// use cloakroom_redis::RedisConfig;
/// let config = RedisConfig::new("rediss://default@cache.internal:6380/0")
///     .with_password(Some("from REDIS_AUTH".into()))
///     .with_prefix("myapp:session:")
///     .with_response_timeout(Duration::from_millis(300));
/// assert_eq!(config.prefix(), "myapp:session:");
/// ```
#[derive(Clone)]
pub struct RedisConfig {
    pub(crate) url: String,
    pub(crate) password: Option<String>,
    pub(crate) prefix: String,
    pub(crate) ca_certificate: Option<Vec<u8>>,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    /// The read cache's memory limit in bytes, or `None` for strict reads.
    pub(crate) read_cache: Option<usize>,
    pub(crate) publish_cache_figures: bool,
    pub(crate) durable_writes: Option<Duration>,
    /// The address, credentials and TLS settings of a client the app handed over
    /// ([`RedisConfig::from_client`]), used in place of parsing `url`.
    pub(crate) client: Option<redis::ConnectionInfo>,
}

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "sid:";

/// The read cache's default memory limit: 64 MiB, about 120,000 login sessions of a few
/// fields (see [`RedisConfig::with_read_cache_bytes`]).
pub const DEFAULT_READ_CACHE_BYTES: usize = 64 * 1024 * 1024;

impl RedisConfig {
    /// Settings for `url` (`redis://[user:password@]host:port[/db]`, or `rediss://` for TLS),
    /// with the defaults: prefix `sid:`, 2 s to connect, 1 s per command, and the read cache
    /// on ([`RedisConfig::with_read_cache`]).
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            password: None,
            prefix: DEFAULT_PREFIX.into(),
            ca_certificate: None,
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(1),
            read_cache: Some(DEFAULT_READ_CACHE_BYTES),
            publish_cache_figures: true,
            durable_writes: None,
            client: None,
        }
    }

    /// Settings for the server an existing `redis::Client` reaches (a standalone server, a
    /// managed endpoint or one node of a cluster), with its address, credentials, database
    /// and TLS settings, and the same defaults as [`RedisConfig::new`]. The store opens its
    /// own connections from them (its main link, which follows a failover, the read cache's
    /// tracking link and the ended-sessions feed), so an app that already has a client
    /// need not spell the URL twice. Sentinel and cluster-seed lists still take a URL.
    ///
    /// ```
    /// use cloakroom_redis::RedisConfig;
    /// let client = redis::Client::open("redis://127.0.0.1:6379/2").unwrap();
    /// let config = RedisConfig::from_client(&client).with_prefix("app:sid:");
    /// assert_eq!(config.prefix(), "app:sid:");
    /// ```
    #[must_use]
    pub fn from_client(client: &redis::Client) -> Self {
        let info = client.get_connection_info().clone();
        let url = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => format!("redis://{host}:{port}"),
            redis::ConnectionAddr::TcpTls { host, port, .. } => {
                format!("rediss://{host}:{port}")
            }
            other => format!("redis+unix://{other}"),
        };
        let mut config = Self::new(url);
        config.client = Some(info);
        config
    }

    /// Make logins, logouts and revocations wait until one replica has them (`WAIT 1`),
    /// for at most `timeout`, so that an acknowledged login or logout survives a failover.
    /// `WAIT` rides in the same round trip as the write; it costs the replication delay.
    /// When no replica acknowledges in time the call fails ([`crate::NotReplicated`] inside
    /// [`cloakroom::StoreError::Unavailable`]): the write may be lost in a failover, so it
    /// is not reported done. Off by default; other writes never wait.
    #[must_use]
    pub fn with_durable_writes(mut self, timeout: Option<Duration>) -> Self {
        self.durable_writes = timeout.filter(|t| !t.is_zero());
        self
    }

    /// Whether to keep session records in process, invalidated by Redis through `CLIENT
    /// TRACKING` (RESP3): a read of a cached session costs no round trip, and every write
    /// still goes to Redis, conditional as always. On by default, within
    /// [`DEFAULT_READ_CACHE_BYTES`], wherever the server tracks for us (standalone, a managed
    /// endpoint, Sentinel, Cluster: a tracking link per primary); a server that refuses
    /// `CLIENT TRACKING` reads strictly. A logout made on another instance reaches this one's cache one push
    /// delivery later (see `docs/redis-data-model.md`); `false` makes every read ask Redis.
    #[must_use]
    pub fn with_read_cache(self, on: bool) -> Self {
        self.with_read_cache_bytes(if on { DEFAULT_READ_CACHE_BYTES } else { 0 })
    }

    /// The read cache's memory limit in bytes (records counted at their fields' length plus
    /// a fixed overhead); past it the cache drops entries, never serving one that is stale.
    /// `0` turns the cache off.
    #[must_use]
    pub fn with_read_cache_bytes(mut self, bytes: usize) -> Self {
        self.read_cache = Some(bytes).filter(|n| *n > 0);
        self
    }

    /// Whether an instance with a read cache writes its cache's figures (size, bound, hits,
    /// misses) beside the sessions every 10 s, a few dozen bytes under `<prefix>caches`, so
    /// that `cloakroom stats` and [`crate::RedisStore::read_caches`] in another process show
    /// every instance's cache. On by default.
    #[must_use]
    pub fn with_published_cache_figures(mut self, on: bool) -> Self {
        self.publish_cache_figures = on;
        self
    }

    /// A password to use when the URL carries none (the `REDIS_AUTH` convention).
    #[must_use]
    pub fn with_password(mut self, password: Option<String>) -> Self {
        self.password = password.filter(|p| !p.is_empty());
        self
    }

    /// The prefix of every key this store writes (default `sid:`: short, so that a session's key name stays in a small allocation class).
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// A PEM CA certificate to trust for `rediss://` (managed services with their own CA, such
    /// as Memorystore); without it the system roots are used.
    #[must_use]
    pub fn with_ca_certificate(mut self, pem: Option<Vec<u8>>) -> Self {
        self.ca_certificate = pem;
        self
    }

    /// How long one connection attempt may take.
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one command may take before it fails.
    #[must_use]
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// The key prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl fmt::Debug for RedisConfig {
    // Never print credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("prefix", &self.prefix)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("ca_certificate", &self.ca_certificate.is_some())
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("durable_writes", &self.durable_writes)
            .field("read_cache_bytes", &self.read_cache)
            .finish_non_exhaustive()
    }
}
