//! The optional read cache: session records kept in process, invalidated by Redis itself.
//!
//! A second connection speaks RESP3 with `CLIENT TRACKING ON` (default mode): Redis remembers
//! which keys that connection read and pushes an `invalidate` message when any client changes
//! one of them. A read served from the cache costs no round trip; every write still goes to
//! Redis, conditional as always, so a stale read can never write.
//!
//! What keeps the cache honest:
//! - Every invalidation (and every write this process makes) stamps the key's slot with a new
//!   sequence number; a read inserts its reply only if its slot was not stamped after the read
//!   was sent. So a reply that raced an invalidation is never cached.
//! - Losing the tracking link (the connection's `Disconnection`, or its replacement after a
//!   failover, or the main link moving to another primary) empties the cache at once and bumps
//!   an epoch; reads go to Redis until tracking is switched on again. Tracking counts as on
//!   only if no loss happened between sending `CLIENT TRACKING ON` and its `OK` (the epoch
//!   is unchanged): a reply from a connection that was replaced meanwhile proves nothing.
//! - A script-free write sent on the tracking connection (`NOLOOP`: Redis sends no
//!   invalidation for it) that is cancelled or fails forgets its key: whatever happened in
//!   Redis, the copy here is no longer trusted.
//! - A server that refuses `CLIENT TRACKING` leaves the cache off: strict reads.
//! - A hit answered without a future (`SessionStore::load_cached`, tried by the layer before
//!   `load`) makes the same checks as a read through `load`: tracking on, the main link not
//!   moved to another primary since this link followed it, the record alive, no refresh due;
//!   anything else goes through `load`.
//! - What remains: an invalidation still on its way (Redis to this process) when a request
//!   arrives. That window is one push delivery: the network's one-way latency plus the time
//!   until the connection reads its socket. `docs/redis-data-model.md` states the bound and
//!   `tests/dropped_links.rs` checks it.
//!
//! - `state`: the records, the stamps and the epoch: everything above except the links;
//! - `nodes`: on a Redis Cluster, one tracking link per primary and the slot map that
//!   routes each read to the node that owns it;
//! - `published`: each instance's cache figures, written beside the sessions for
//!   `cloakroom stats` in another process.

mod nodes;
mod published;
mod state;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

pub(crate) use nodes::ClusterNodes;
pub use published::CacheFigures;
pub(crate) use published::{live_figures, PublishTask};
pub(crate) use state::{CacheState, ForgetUnlessDone, Patch};

/// Where the cache's reads go and its invalidations come from.
#[derive(Clone)]
pub(crate) enum Tracker {
    /// One tracking connection to the primary (standalone, managed endpoint, Sentinel). It
    /// also carries this process's script-free writes (`NOLOOP`), patched into the cache.
    Link(crate::RedisConnection),
    /// One tracking connection per cluster primary; writes go through the cluster client and
    /// come back as invalidations.
    Nodes(Arc<ClusterNodes>),
}

/// The tracking connections and the state their pushes keep.
#[derive(Clone)]
pub(crate) struct ReadCache {
    pub(crate) tracker: Tracker,
    pub(crate) state: Arc<CacheState>,
    /// How many times the store's main link had moved to another primary when this link
    /// last followed it.
    main_swaps: Arc<AtomicU64>,
    /// A background attempt to switch tracking on again is running.
    reviving: Arc<AtomicBool>,
}

impl ReadCache {
    pub(crate) fn new(tracker: Tracker, state: Arc<CacheState>) -> Self {
        Self {
            tracker,
            state,
            main_swaps: Arc::default(),
            reviving: Arc::default(),
        }
    }

    /// The single tracking link, which also carries script-free writes (none on a cluster).
    pub(crate) fn link(&self) -> Option<&crate::RedisConnection> {
        match &self.tracker {
            Tracker::Link(conn) => Some(conn),
            Tracker::Nodes(_) => None,
        }
    }

    /// Switches tracking on again in the background (one attempt at a time), so that a read
    /// while it is off goes to Redis at once and pays one timeout during an outage, not two.
    pub(crate) fn revive(&self) {
        if self.state.is_tracking() || self.reviving.swap(true, Ordering::AcqRel) {
            return;
        }
        let cache = self.clone();
        tokio::spawn(async move {
            if let Err(e) = cache.ensure_tracking().await {
                tracing::debug!(error = %e, "session read cache: tracking not back yet");
            }
            cache.reviving.store(false, Ordering::Release);
        });
    }

    /// Keeps the tracking links on the servers that own the data. After a managed failover
    /// the main link may have found the new primary while the tracking link still reads from
    /// the demoted one (a replica answers reads without complaint): when the main link moved,
    /// the cache empties and this link resolves the primary again. On a cluster, the slot map
    /// is checked in the background at most once a second.
    pub(crate) async fn follow(&self, main: &crate::RedisConnection) {
        match &self.tracker {
            Tracker::Link(conn) => {
                let swaps = main.swaps();
                if self.main_swaps.swap(swaps, Ordering::AcqRel) != swaps {
                    self.state.lost();
                    conn.resolve_again().await;
                }
            }
            Tracker::Nodes(nodes) => nodes.check_map_soon(),
        }
    }

    /// Whether the cache may answer now without I/O: the main link has not moved to another
    /// primary since this link followed it (else [`ReadCache::follow`] must run first); on a
    /// cluster the slot map's check is scheduled as `follow` does.
    pub(crate) fn followed(&self, main: &crate::RedisConnection) -> bool {
        match &self.tracker {
            Tracker::Link(_) => self.main_swaps.load(Ordering::Acquire) == main.swaps(),
            Tracker::Nodes(nodes) => {
                nodes.check_map_soon();
                true
            }
        }
    }

    /// Switches tracking on if it is off. After a reconnect the server has forgotten it;
    /// until it answers OK nothing is served from the cache.
    pub(crate) async fn ensure_tracking(&self) -> Result<(), redis::RedisError> {
        if self.state.is_tracking() {
            return Ok(());
        }
        let epoch = self.state.epoch();
        match &self.tracker {
            // NOLOOP: the script-free writes this process sends on this connection bring back
            // no invalidation; the store applies their effect to the cache itself (`patch`).
            Tracker::Link(conn) => {
                tracking_on()
                    .arg("NOLOOP")
                    .query_async::<()>(&mut conn.clone())
                    .await?;
            }
            Tracker::Nodes(nodes) => nodes.connect_all().await?,
        }
        if !self.state.confirm(epoch) {
            // The link was lost while the command was out: the next read asks again.
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "tracking link lost while switching tracking on",
            )));
        }
        Ok(())
    }
}

/// `CLIENT TRACKING ON` (default mode: the server tracks the keys this connection reads).
fn tracking_on() -> redis::Cmd {
    let mut cmd = redis::cmd("CLIENT");
    cmd.arg("TRACKING").arg("ON");
    cmd
}
