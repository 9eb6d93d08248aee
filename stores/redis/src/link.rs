//! A connection to the current primary that follows failovers.
//!
//! redis-rs' `ConnectionManager` reconnects to the address it was opened with. That is not
//! enough when the primary moves:
//!
//! - **Managed endpoints** (ElastiCache's primary endpoint, Memorystore Standard Tier) are
//!   re-pointed at the promoted replica while connections already open stay on the demoted
//!   primary, which answers every write with `READONLY`.
//! - **Sentinel** names the primary; after a failover the old address is dead or a replica.
//!
//! So the store talks through a [`PrimaryLink`]: one multiplexed connection, and on a sign
//! that it no longer reaches the primary (`READONLY`, a refused or dropped connection, a
//! timeout) it resolves the primary again (the endpoint's DNS name, or the sentinels) and
//! swaps in a new connection. Requests that were in flight fail as they would have; later
//! ones use the new connection. A `READONLY` refusal is sent once more on the new
//! connection: a replica refuses every write before running it (a script's first write, a
//! transaction at `EXEC`), so nothing was applied and nothing is applied twice.
//!
//! At most one resolution runs at a time and they are spaced by [`RESOLVE_INTERVAL`], so an
//! outage costs every request one failed command, not a reconnect each.
//!
//! A link that only reads never meets `READONLY`: a demoted primary answers reads as a
//! replica, a replication lag late, or (cut off from the new primary) never again. So at most
//! once per [`ROLE_CHECK_INTERVAL`] a command also sends `ROLE` in the background, and a link
//! on a replica resolves the primary again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::SentinelClient;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

/// The least time between two resolutions of the primary.
pub(crate) const RESOLVE_INTERVAL: Duration = Duration::from_millis(250);

/// How often a link in use asks its server whether it is still a primary.
const ROLE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Where the primary is found.
pub(crate) enum Target {
    /// One address (a standalone server, or a managed primary endpoint that may be
    /// re-pointed: each new connection resolves the name again).
    Direct(redis::Client),
    /// Asked of the sentinels at every resolution.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

impl Target {
    async fn client(&self) -> Result<redis::Client, RedisError> {
        match self {
            Self::Direct(client) => Ok(client.clone()),
            Self::Sentinel(sentinel) => sentinel.lock().await.async_get_client().await,
        }
    }
}

/// The store's connection to Redis, shared by every request and cheap to clone: the current
/// primary (found again after a failover), or a Redis Cluster (redis-rs follows `MOVED` and
/// `ASK`). Implements [`redis::aio::ConnectionLike`], so any redis-rs command runs on it.
#[derive(Clone)]
pub struct RedisConnection(Kind);

#[derive(Clone)]
enum Kind {
    Primary(PrimaryLink),
    Cluster(ClusterConnection),
}

impl RedisConnection {
    pub(crate) fn cluster(conn: ClusterConnection) -> Self {
        Self(Kind::Cluster(conn))
    }

    /// Finds the primary again now, if this is a primary link (see
    /// [`PrimaryLink::resolve_again`]).
    pub(crate) async fn resolve_again(&self) {
        if let Kind::Primary(link) = &self.0 {
            link.resolve_again().await;
        }
    }

    /// Whether this is a Redis Cluster connection.
    #[must_use]
    pub fn is_cluster(&self) -> bool {
        matches!(self.0, Kind::Cluster(_))
    }

    /// How many times the primary was found again and the connection replaced (0 on a
    /// cluster, whose client follows the slots itself).
    #[must_use]
    pub fn swaps(&self) -> u64 {
        match &self.0 {
            Kind::Primary(link) => link.inner.swaps.load(Ordering::Acquire),
            Kind::Cluster(_) => 0,
        }
    }
}

impl From<PrimaryLink> for RedisConnection {
    fn from(link: PrimaryLink) -> Self {
        Self(Kind::Primary(link))
    }
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.is_cluster() {
            "cluster"
        } else {
            "primary"
        };
        f.debug_struct("RedisConnection")
            .field("kind", &kind)
            .field("swaps", &self.swaps())
            .finish()
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Kind::Primary(link) => link.req_packed_command(cmd),
            Kind::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Kind::Primary(link) => link.req_packed_commands(pipeline, offset, count),
            Kind::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Kind::Primary(link) => link.get_db(),
            Kind::Cluster(conn) => conn.get_db(),
        }
    }
}

/// A multiplexed connection to the current primary that resolves it again when it moves.
#[derive(Clone)]
pub(crate) struct PrimaryLink {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    manager: ConnectionManagerConfig,
    /// The connection in use and its generation (bumped at every swap).
    current: RwLock<(u64, ConnectionManager)>,
    /// Held while a resolution runs; others do not wait for it.
    resolving: tokio::sync::Mutex<()>,
    last_resolution: Mutex<Option<Instant>>,
    on_swap: Option<Box<dyn Fn() + Send + Sync>>,
    /// The generation of `current`, readable without its lock.
    swaps: AtomicU64,
    /// When the role was last checked (ms since `opened`).
    role_checked: AtomicU64,
    opened: Instant,
}

impl PrimaryLink {
    /// Resolves the primary and connects. `on_swap` runs after every later swap (the read
    /// cache empties itself: its tracking belonged to the old connection).
    pub(crate) async fn open(
        target: Target,
        manager: ConnectionManagerConfig,
        on_swap: Option<Box<dyn Fn() + Send + Sync>>,
    ) -> Result<Self, RedisError> {
        let client = target.client().await?;
        let conn = ConnectionManager::new_with_config(client, manager.clone()).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                target,
                manager,
                current: RwLock::new((0, conn)),
                resolving: tokio::sync::Mutex::new(()),
                last_resolution: Mutex::new(None),
                on_swap,
                swaps: AtomicU64::new(0),
                role_checked: AtomicU64::new(0),
                opened: Instant::now(),
            }),
        })
    }

    fn current(&self) -> (u64, ConnectionManager) {
        self.inner
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Finds the primary again now (the read cache's link follows the main link when that
    /// one moved: reads must not stay on a demoted primary).
    pub(crate) async fn resolve_again(&self) {
        let seen = self.current().0;
        self.resolve(seen).await;
    }

    /// At most once per [`ROLE_CHECK_INTERVAL`], in the background: if the server is now a
    /// replica, resolves the primary again. A server that refuses `ROLE` is left alone.
    fn check_role(&self) {
        let now = u64::try_from(self.inner.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.inner.role_checked.load(Ordering::Acquire);
        let interval = u64::try_from(ROLE_CHECK_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(last) < interval
            || self
                .inner
                .role_checked
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        let link = self.clone();
        tokio::spawn(async move {
            let (seen, mut conn) = link.current();
            let role: Result<Vec<Value>, _> = redis::cmd("ROLE").query_async(&mut conn).await;
            let replica = matches!(
                role.as_deref().ok().and_then(<[Value]>::first),
                Some(Value::BulkString(b)) if b == b"slave"
            );
            if replica {
                tracing::warn!("the Redis server this link reaches is now a replica");
                link.resolve(seen).await;
            }
        });
    }

    /// Finds the primary again and swaps in a connection to it, unless another request
    /// already did since `seen` was current, one is running now, or one ran a moment ago.
    async fn resolve(&self, seen: u64) {
        let Ok(_running) = self.inner.resolving.try_lock() else {
            return;
        };
        if self.current().0 != seen {
            return;
        }
        {
            let mut last = self
                .inner
                .last_resolution
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < RESOLVE_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let fresh = match self.inner.target.client().await {
            Ok(client) => {
                ConnectionManager::new_with_config(client, self.inner.manager.clone()).await
            }
            Err(e) => Err(e),
        };
        match fresh {
            Ok(conn) => {
                {
                    let mut current = self
                        .inner
                        .current
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    *current = (current.0 + 1, conn);
                    self.inner.swaps.store(current.0, Ordering::Release);
                }
                tracing::warn!("Redis primary resolved again: now using a new connection");
                if let Some(on_swap) = &self.inner.on_swap {
                    on_swap();
                }
            }
            Err(e) => tracing::warn!(error = %e, "Redis primary not reachable yet"),
        }
    }
}

/// What an answer says about the connection.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Fine, or an error that is about the command, not the server.
    Keep,
    /// Not the primary any more; nothing was applied, so the command may be sent again.
    Refused,
    /// The connection may not reach the primary; whether the command ran is unknown.
    Lost,
}

fn judge_error(e: &RedisError) -> Verdict {
    if e.code() == Some("READONLY") || refused_transaction(e) {
        Verdict::Refused
    } else if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
    {
        Verdict::Lost
    } else {
        Verdict::Keep
    }
}

/// A transaction discarded (`EXECABORT`) because a replica refused its writes at queue time
/// (`READONLY`): nothing in it ran. Discarded for another reason (an out-of-memory refusal, a
/// wrong argument) it says nothing about where the primary is.
fn refused_transaction(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ExecAbort)
        && e.clone()
            .into_server_errors()
            .is_some_and(|errors| errors.iter().any(|(_, e)| e.code() == "READONLY"))
}

fn judge_values(values: &[Value]) -> Verdict {
    // A replica refuses each queued write with READONLY; an EXECABORT beside none of those
    // is about the commands (memory, arguments), not the server's role.
    let refused = values.iter().any(|v| match v {
        Value::ServerError(e) => e.code() == "READONLY",
        _ => false,
    });
    if refused {
        Verdict::Refused
    } else {
        Verdict::Keep
    }
}

impl ConnectionLike for PrimaryLink {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.check_role();
        Box::pin(async move {
            let (seen, mut conn) = self.current();
            let reply = conn.req_packed_command(cmd).await;
            let verdict = match &reply {
                Ok(Value::ServerError(e)) if e.code() == "READONLY" => Verdict::Refused,
                Ok(_) => Verdict::Keep,
                Err(e) => judge_error(e),
            };
            match verdict {
                Verdict::Keep => reply,
                Verdict::Lost => {
                    self.resolve(seen).await;
                    reply
                }
                Verdict::Refused => {
                    self.resolve(seen).await;
                    let (now, mut conn) = self.current();
                    if now == seen {
                        return reply;
                    }
                    conn.req_packed_command(cmd).await
                }
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.check_role();
        Box::pin(async move {
            let (seen, mut conn) = self.current();
            let replies = conn.req_packed_commands(pipeline, offset, count).await;
            let verdict = match &replies {
                Ok(values) => judge_values(values),
                Err(e) => judge_error(e),
            };
            match verdict {
                Verdict::Keep => replies,
                Verdict::Lost => {
                    self.resolve(seen).await;
                    replies
                }
                // A replica refuses every write in the pipeline, so sending it all again
                // applies each write once; its reads are read again.
                Verdict::Refused => {
                    self.resolve(seen).await;
                    let (now, mut conn) = self.current();
                    if now == seen {
                        return replies;
                    }
                    conn.req_packed_commands(pipeline, offset, count).await
                }
            }
        })
    }

    fn get_db(&self) -> i64 {
        self.current().1.get_db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(line: &str) -> RedisError {
        match redis::parse_redis_value(format!("-{line}\r\n").as_bytes()) {
            Ok(Value::ServerError(e)) => e.into(),
            other => panic!("not an error reply: {other:?}"),
        }
    }

    #[test]
    fn a_replica_refusal_may_be_sent_again_and_a_lost_connection_may_not() {
        let readonly = server_error("READONLY You can't write against a read only replica.");
        assert_eq!(judge_error(&readonly), Verdict::Refused);
        let dropped = RedisError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert_eq!(judge_error(&dropped), Verdict::Lost);
        let wrong =
            server_error("WRONGTYPE Operation against a key holding the wrong kind of value");
        assert_eq!(judge_error(&wrong), Verdict::Keep);
        // A transaction discarded for memory is not a demoted primary.
        let oom = server_error("EXECABORT Transaction discarded because of previous errors.");
        assert_eq!(judge_error(&oom), Verdict::Keep);
        let values = [Value::ServerError(
            match redis::parse_redis_value(b"-OOM command not allowed\r\n") {
                Ok(Value::ServerError(e)) => e,
                other => panic!("{other:?}"),
            },
        )];
        assert_eq!(judge_values(&values), Verdict::Keep);
    }
}
