//! What an operator needs to know about the Redis behind the sessions, from `INFO` and a
//! `MEMORY USAGE` sample (no `CONFIG`, `KEYS` or `SCAN`, which managed services disable).

use cloakroom::{SessionKey, StoreError};
use redis::Value;

use crate::codec::text;
use crate::keys::INDEX_BUCKETS;
use crate::store::RedisStore;

/// How the sessions' Redis is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerTopology {
    /// One primary, no replica.
    Standalone,
    /// A primary with this many replicas connected.
    Replicated {
        /// Connected replicas.
        replicas: u64,
    },
    /// A Redis Cluster with this many primaries.
    Cluster {
        /// Primaries that answered.
        primaries: u64,
    },
}

impl std::fmt::Display for ServerTopology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Standalone => f.write_str("standalone (no replica)"),
            Self::Replicated { replicas } => write!(f, "replicated ({replicas} replica(s))"),
            Self::Cluster { primaries } => write!(f, "cluster ({primaries} primaries)"),
        }
    }
}

/// The server figures `cloakroom stats` and `cloakroom check` print. On a cluster, memory
/// and counters are summed over the primaries; the version and policy are the first one's.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerReport {
    /// `redis_version` (Valkey reports its Redis-compatible version too).
    pub version: String,
    /// Standalone, replicated or cluster.
    pub topology: ServerTopology,
    /// `used_memory`, bytes.
    pub used_memory: u64,
    /// `maxmemory`, bytes (0: no limit).
    pub maxmemory: u64,
    /// `maxmemory_policy`.
    pub eviction_policy: String,
    /// `connected_clients`.
    pub connected_clients: u64,
    /// `evicted_keys` since the server started.
    pub evicted_keys: u64,
    /// `expired_keys` since the server started.
    pub expired_keys: u64,
    /// Whether the append-only file is on (`aof_enabled`).
    pub aof: bool,
    /// Average `MEMORY USAGE` of the sampled session hashes, bytes.
    pub sampled_session_bytes: Option<u64>,
    /// How many sessions were sampled.
    pub sampled: usize,
}

/// `field:value` lines of an `INFO` reply; on a cluster, one text per primary.
fn info_texts(value: Value) -> Result<Vec<String>, StoreError> {
    match value {
        Value::Map(nodes) => nodes.into_iter().map(|(_, v)| text(v)).collect(),
        Value::Array(nodes) => nodes.into_iter().map(text).collect(),
        other => Ok(vec![text(other)?]),
    }
}

fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

fn number(info: &str, name: &str) -> u64 {
    field(info, name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// How many sessions `report` measures with `MEMORY USAGE`.
const SAMPLE: usize = 20;

impl RedisStore {
    /// Reads the server's figures: `INFO` (memory, clients, stats, replication, persistence,
    /// server) and the `MEMORY USAGE` of up to 20 sessions found through the per-user index.
    ///
    /// # Errors
    /// [`StoreError`] when Redis does not answer.
    pub async fn server_report(&self) -> Result<ServerReport, StoreError> {
        let texts = info_texts(self.info().await?)?;
        let first = texts.first().cloned().unwrap_or_default();
        let sum = |name: &str| texts.iter().map(|t| number(t, name)).sum::<u64>();
        let topology = if self.connection().is_cluster() {
            ServerTopology::Cluster {
                primaries: texts.len() as u64,
            }
        } else {
            match number(&first, "connected_slaves") {
                0 => ServerTopology::Standalone,
                replicas => ServerTopology::Replicated { replicas },
            }
        };
        let sizes = self.sample_sizes().await?;
        Ok(ServerReport {
            version: field(&first, "redis_version").unwrap_or("?").to_owned(),
            topology,
            used_memory: sum("used_memory"),
            maxmemory: sum("maxmemory"),
            eviction_policy: field(&first, "maxmemory_policy").unwrap_or("?").to_owned(),
            connected_clients: sum("connected_clients"),
            evicted_keys: sum("evicted_keys"),
            expired_keys: sum("expired_keys"),
            aof: number(&first, "aof_enabled") == 1,
            sampled_session_bytes: (!sizes.is_empty())
                .then(|| sizes.iter().sum::<u64>() / sizes.len() as u64),
            sampled: sizes.len(),
        })
    }

    /// `MEMORY USAGE` of up to [`SAMPLE`] session hashes, found through the index buckets.
    async fn sample_sizes(&self) -> Result<Vec<u64>, StoreError> {
        let mut keys: Vec<SessionKey> = Vec::new();
        for bucket in 0..INDEX_BUCKETS {
            if keys.len() >= SAMPLE {
                break;
            }
            let flat = self.bucket_entries(bucket).await?;
            for list in flat {
                keys.extend(
                    list.as_bytes()
                        .chunks(22)
                        .filter_map(|m| std::str::from_utf8(m).ok())
                        .filter_map(SessionKey::parse),
                );
            }
        }
        keys.truncate(SAMPLE);
        let mut sizes = Vec::new();
        for key in keys {
            if let Some(bytes) = self.memory_usage(&key).await? {
                sizes.push(bytes);
            }
        }
        Ok(sizes)
    }
}

/// Running totals for `cloakroom stats --watch`: the difference of two readings is the
/// activity in between.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct Activity {
    /// Live sessions now.
    pub sessions: u64,
    /// Logins counted by the scripts so far.
    pub logins: u64,
    /// Session reads Redis served so far (`HGETALL` calls).
    pub reads: u64,
    /// Session writes so far (script calls and transactions).
    pub writes: u64,
    /// The slowest of 10 `PING` round trips just now: the store latency from here.
    pub round_trip: std::time::Duration,
}

/// `calls=` of one command in an `INFO commandstats` text.
fn calls(info: &str, command: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:")))
        .and_then(|rest| rest.split(',').find_map(|kv| kv.strip_prefix("calls=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

impl RedisStore {
    /// The running totals [`Activity`] holds.
    ///
    /// # Errors
    /// [`StoreError`] when Redis does not answer.
    pub async fn activity(&self) -> Result<Activity, StoreError> {
        use cloakroom::SessionStore as _;
        let sessions = self.stats().await?.sessions;
        let logins = self.logins_total().await?;
        let texts = info_texts(self.command_stats().await?)?;
        let sum = |command: &str| texts.iter().map(|t| calls(t, command)).sum::<u64>();
        let mut round_trip = std::time::Duration::ZERO;
        for _ in 0..10 {
            let started = std::time::Instant::now();
            self.ping().await?;
            round_trip = round_trip.max(started.elapsed());
        }
        Ok(Activity {
            sessions,
            logins,
            reads: sum("hgetall"),
            writes: sum("evalsha") + sum("exec"),
            round_trip,
        })
    }
}
