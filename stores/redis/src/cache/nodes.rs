//! The read cache on a Redis Cluster: one tracking link per primary.
//!
//! A node tracks the keys read on a connection and tells that connection when one changes; it
//! knows nothing of reads made elsewhere. So on a cluster the cache keeps a link of its own to
//! every primary (not the cluster client's connections: one that client re-creates would come
//! back without tracking), learns the slot map with `CLUSTER SLOTS`, and sends each read to
//! the primary that owns the session's slot. Beyond what one link needs (`mod.rs`):
//! - a node that refuses or fails a read (`MOVED`, `ASK`: the slot moved or is moving) empties
//!   the cache; that read goes through the cluster client, strictly, and the links are rebuilt
//!   on the new map in the background;
//! - losing any node's link empties the cache, as on one server;
//! - at most once a second a read also asks for the slot map in the background, and a map
//!   that changed (a failover promoted a replica, a primary joined) empties the cache. Until
//!   then a demoted primary still relays, a replication lag late, the changes it replicates:
//!   the same one-second window as a managed failover on one server.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, PushInfo, PushKind, RedisError, Value};

use super::state::CacheState;
use crate::config::RedisConfig;
use crate::RedisConnection;

/// How often a read also checks, in the background, that the slot map is unchanged.
const MAP_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Which primary owns which slots: `(first, last, host, port)`, sorted by first slot.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SlotMap(Vec<(u16, u16, String, u16)>);

impl SlotMap {
    /// The index of the range that holds `slot`.
    fn range_of(&self, slot: u16) -> Option<usize> {
        let range = self
            .0
            .partition_point(|(first, ..)| *first <= slot)
            .checked_sub(1)?;
        (slot <= self.0[range].1).then_some(range)
    }
}

/// The links of one build: one connection per primary of `map`.
struct Links {
    map: SlotMap,
    /// For each range of `map`, the index of its primary's connection in `nodes`.
    owners: Vec<usize>,
    nodes: Vec<MultiplexedConnection>,
}

impl Links {
    fn owner(&self, slot: u16) -> Option<&MultiplexedConnection> {
        self.map
            .range_of(slot)
            .map(|range| &self.nodes[self.owners[range]])
    }
}

/// The tracking links to a cluster's primaries.
pub(crate) struct ClusterNodes {
    config: RedisConfig,
    /// The store's cluster client, which asks any node for the slot map.
    main: RedisConnection,
    state: Arc<CacheState>,
    links: RwLock<Option<Arc<Links>>>,
    /// Each build's connections carry its number; a disconnection counts only from the build
    /// in use (dropping a replaced build's connections is not a loss).
    builds: AtomicU64,
    installed: Arc<AtomicU64>,
    /// When the map was last checked (ms since `opened`), and whether a check runs.
    checked: AtomicU64,
    checking: AtomicBool,
    opened: Instant,
}

impl ClusterNodes {
    pub(crate) fn new(config: &RedisConfig, main: RedisConnection, state: Arc<CacheState>) -> Self {
        Self {
            config: config.clone(),
            main,
            state,
            links: RwLock::new(None),
            builds: AtomicU64::new(0),
            installed: Arc::new(AtomicU64::new(0)),
            checked: AtomicU64::new(0),
            checking: AtomicBool::new(false),
            opened: Instant::now(),
        }
    }

    fn current(&self) -> Option<Arc<Links>> {
        self.links
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Learns the slot map, opens a link to every primary with tracking on, and puts them in
    /// use. The caller confirms tracking against the epoch it read before.
    pub(crate) async fn connect_all(&self) -> Result<(), RedisError> {
        let map = self.fetch_map().await?;
        let build = self.builds.fetch_add(1, Ordering::AcqRel) + 1;
        let mut addresses: Vec<(&str, u16)> = Vec::new();
        let mut owners = Vec::with_capacity(map.0.len());
        for (_, _, host, port) in &map.0 {
            let at = match addresses.iter().position(|a| *a == (host.as_str(), *port)) {
                Some(at) => at,
                None => {
                    addresses.push((host, *port));
                    addresses.len() - 1
                }
            };
            owners.push(at);
        }
        let mut nodes = Vec::with_capacity(addresses.len());
        for (host, port) in addresses {
            nodes.push(self.connect_node(host, port, build).await?);
        }
        let links = Links { map, owners, nodes };
        *self
            .links
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(links));
        self.installed.store(build, Ordering::Release);
        Ok(())
    }

    async fn connect_node(
        &self,
        host: &str,
        port: u16,
        build: u64,
    ) -> Result<MultiplexedConnection, RedisError> {
        let client =
            crate::connection::cluster_node_client(&self.config, host, port).map_err(|e| {
                RedisError::from((redis::ErrorKind::Client, "cluster node", e.to_string()))
            })?;
        let (state, installed) = (self.state.clone(), self.installed.clone());
        let on_push = move |push: PushInfo| {
            let stale =
                push.kind == PushKind::Disconnection && installed.load(Ordering::Acquire) != build;
            if !stale {
                state.on_push(&push);
            }
            Ok::<(), std::convert::Infallible>(())
        };
        let settings = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(Some(self.config.response_timeout))
            .set_push_sender(on_push);
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&settings)
            .await?;
        super::tracking_on().query_async::<()>(&mut conn).await?;
        Ok(conn)
    }

    /// Reads `cmd` (about the key `name`) from the primary that owns it, on its tracking
    /// link. `None` when there is no link for it, or the node refused or failed the read:
    /// the cache has emptied and the caller reads strictly.
    pub(crate) async fn read(&self, cmd: &Cmd, name: &str) -> Option<Value> {
        let links = self.current()?;
        let mut conn = links.owner(key_slot(name))?.clone();
        match cmd.query_async::<Value>(&mut conn).await {
            Ok(value) => Some(value),
            Err(e) => {
                tracing::info!(error = %e, "session read cache: a cluster node refused a read; rebuilding its links");
                self.state.lost();
                None
            }
        }
    }

    /// At most once per [`MAP_CHECK_INTERVAL`], checks in the background that the slot map is
    /// the one the links were built on; a changed map empties the cache.
    pub(crate) fn check_map_soon(self: &Arc<Self>) {
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.checked.load(Ordering::Acquire);
        let interval = u64::try_from(MAP_CHECK_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(last) < interval
            || !self.state.is_tracking()
            || self.checking.swap(true, Ordering::AcqRel)
        {
            return;
        }
        self.checked.store(now, Ordering::Release);
        let nodes = self.clone();
        tokio::spawn(async move {
            if let Some(links) = nodes.current() {
                match nodes.fetch_map().await {
                    Ok(map) if map == links.map => {}
                    Ok(_) => {
                        tracing::info!("session read cache: the cluster's slot map changed");
                        nodes.state.lost();
                    }
                    // Unconfirmed is untrusted: the links are rebuilt once the map answers.
                    Err(e) => {
                        tracing::info!(error = %e, "session read cache: the slot map could not be checked");
                        nodes.state.lost();
                    }
                }
            }
            nodes.checking.store(false, Ordering::Release);
        });
    }

    async fn fetch_map(&self) -> Result<SlotMap, RedisError> {
        let reply: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut self.main.clone())
            .await?;
        parse_slots(reply).ok_or_else(|| {
            RedisError::from((redis::ErrorKind::Parse, "unexpected CLUSTER SLOTS reply"))
        })
    }
}

/// `CLUSTER SLOTS`: `[[first, last, [host, port, id, …], replicas…], …]`.
fn parse_slots(reply: Value) -> Option<SlotMap> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    let mut map = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(parts) = range else {
            return None;
        };
        let [Value::Int(first), Value::Int(last), Value::Array(primary), ..] = parts.as_slice()
        else {
            return None;
        };
        let host = match primary.first()? {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
            Value::SimpleString(s) => s.clone(),
            _ => return None,
        };
        let Value::Int(port) = primary.get(1)? else {
            return None;
        };
        // An unknown endpoint ("?" or empty) cannot be dialled.
        if host.is_empty() || host == "?" {
            return None;
        }
        map.push((
            u16::try_from(*first).ok()?,
            u16::try_from(*last).ok()?,
            host,
            u16::try_from(*port).ok()?,
        ));
    }
    map.sort_unstable();
    Some(SlotMap(map))
}

/// The cluster slot of a key name: CRC16 (XMODEM) of its hash tag, or of the whole name.
fn key_slot(name: &str) -> u16 {
    let bytes = name.as_bytes();
    let hashed = bytes
        .iter()
        .position(|&c| c == b'{')
        .and_then(|open| {
            let rest = &bytes[open + 1..];
            let close = rest.iter().position(|&c| c == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(bytes);
    crc16(hashed) % 16384
}

fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &byte| {
        (0..8).fold(crc ^ (u16::from(byte) << 8), |crc, _| {
            if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_the_clusters() {
        // The CRC16 check value, and slots as `CLUSTER KEYSLOT` answers them.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("{foo}bar"), 12182);
        assert_eq!(key_slot("a{}b"), crc16(b"a{}b") % 16384);
        assert_eq!(key_slot("sid:{a7}xyz"), key_slot("a7"));
    }

    #[test]
    fn each_slot_finds_its_primary() {
        let map = parse_slots(Value::Array(vec![
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                Value::Array(vec![
                    Value::BulkString(b"10.0.0.2".to_vec()),
                    Value::Int(7001),
                ]),
            ]),
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                Value::Array(vec![
                    Value::BulkString(b"10.0.0.1".to_vec()),
                    Value::Int(7000),
                ]),
            ]),
        ]))
        .unwrap();
        assert_eq!(map.range_of(0), Some(0), "sorted by first slot");
        assert_eq!(map.range_of(5460), Some(0));
        assert_eq!(map.range_of(5461), Some(1));
        assert_eq!(map.range_of(16383), Some(1));
        assert_eq!(map.range_of(16384), None);
        let gap = SlotMap(vec![(10, 20, "h".into(), 1)]);
        assert_eq!(gap.range_of(5), None, "an unowned slot has no primary");
        assert_eq!(gap.range_of(21), None);
        assert!(parse_slots(Value::Array(vec![Value::Int(1)])).is_none());
        assert!(parse_slots(Value::Nil).is_none());
    }
}
