//! Key names. Session keys hold a hash of the session ID, never the ID itself.
//!
//! Standalone (and Sentinel, and a managed primary): `sid:<key>` per session, `sid:live` for
//! the count, `sid:users:<bucket>` for the per-user index.
//!
//! Redis Cluster: a script may touch keys of one slot only, so a session's keys carry a hash
//! tag, the first byte of the session key in hex: `sid:{a7}<key>`, its live count
//! `sid:{a7}live`. There are 256 tags, spread by Redis over the slots and so over the
//! primaries. A cycle keeps the tag (the layer draws the new ID until its key has the old
//! key's first byte: [`cloakroom::SessionStore::can_cycle_to`]), so the cycle, its alias and
//! the live count stay one atomic script on one shard. The per-user index buckets have no tag
//! and live wherever their own name hashes; the client keeps them (see `store.rs`).
//! `docs/redis-data-model.md` has the whole layout.

use cloakroom::SessionKey;

use crate::error::RedisError;

/// Buckets of the per-user index (`INDEX_BUCKETS` in `lua/prelude.lua`).
pub(crate) const INDEX_BUCKETS: u32 = 256;

/// `h = (h * 33 + byte) mod INDEX_BUCKETS` over the user's bytes, as the scripts compute it.
pub(crate) fn bucket(user: &str) -> u32 {
    user.bytes()
        .fold(0, |h, b| (h * 33 + u32::from(b)) % INDEX_BUCKETS)
}

/// The names of everything this store keeps under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
    cluster: bool,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Result<Self, RedisError> {
        let ok = !prefix.is_empty()
            && prefix.len() <= 64
            && prefix
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '{' && c != '}');
        if !ok {
            return Err(RedisError::Prefix(prefix.to_owned()));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            cluster: false,
        })
    }

    /// The same names, laid out for Redis Cluster (hash tags).
    pub(crate) fn for_cluster(mut self) -> Self {
        self.cluster = true;
        self
    }

    /// Whether the layout is the cluster one.
    pub(crate) fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// What the session scripts get as the prefix of `key`'s session: the names of the
    /// session and of its alias are this plus the 22-character key. On a cluster it ends
    /// with the hash tag, which tells the scripts to leave the per-user index alone.
    pub(crate) fn session_prefix(&self, key: &SessionKey) -> String {
        if self.cluster {
            format!("{}{{{:02x}}}", self.prefix, key.as_bytes()[0])
        } else {
            self.prefix.clone()
        }
    }

    /// One hash per session: `sid:<22 base64url chars of the key hash>` (`sid:{a7}<…>` on a
    /// cluster).
    pub(crate) fn session(&self, key: &SessionKey) -> String {
        format!("{}{key}", self.session_prefix(key))
    }

    /// Why the session `key` ended (a tombstone): `sid:ended:<key>` (`sid:{a7}ended:<key>` on
    /// a cluster, beside the session).
    pub(crate) fn tombstone(&self, key: &SessionKey) -> String {
        format!("{}ended:{key}", self.session_prefix(key))
    }

    /// The prefix to prune the index by, in `index.lua` (none on a cluster).
    pub(crate) fn prune_prefix(&self) -> &str {
        if self.cluster {
            ""
        } else {
            &self.prefix
        }
    }

    /// The hash that holds `user`'s index entry: `sid:users:<bucket>`, the bucket
    /// computed as `index_bucket` in `lua/prelude.lua` computes it.
    pub(crate) fn user_bucket(&self, user: &str) -> String {
        self.bucket_name(bucket(user))
    }

    /// The set a long index list spills into (`spill_key` in `lua/prelude.lua`): under
    /// the prefix, tagged with the bucket's name, so that it shares the bucket's cluster slot.
    pub(crate) fn user_spill(&self, user: &str) -> String {
        let bucket = self.user_bucket(user);
        format!("{bucket}:{{{bucket}}}:{user}")
    }

    /// The index hash of bucket number `bucket`.
    pub(crate) fn bucket_name(&self, bucket: u32) -> String {
        format!("{}users:{bucket}", self.prefix)
    }

    /// Every instance's read-cache figures (`cache/published.rs`): `sid:caches`.
    pub(crate) fn caches(&self) -> String {
        format!("{}caches", self.prefix)
    }

    /// The live count `key`'s session is counted in.
    pub(crate) fn live(&self, key: &SessionKey) -> String {
        if self.cluster {
            format!("{}{{{:02x}}}live", self.prefix, key.as_bytes()[0])
        } else {
            format!("{}live", self.prefix)
        }
    }

    /// Every live-count hash (one, or one per hash tag on a cluster).
    pub(crate) fn lives(&self) -> Vec<String> {
        if self.cluster {
            (0..=255u8)
                .map(|tag| format!("{}{{{tag:02x}}}live", self.prefix))
                .collect()
        } else {
            vec![format!("{}live", self.prefix)]
        }
    }

    /// Whether a session may move from `old` to `new` in one script (same slot).
    pub(crate) fn same_slot(&self, old: &SessionKey, new: &SessionKey) -> bool {
        !self.cluster || old.as_bytes()[0] == new.as_bytes()[0]
    }
}
