//! Key names. Session keys hold a hash of the session ID, never the ID itself.
//!
//! Every script touches one session key (plus, in standalone mode, the live-count key); the
//! per-user index is written by separate commands. See `docs/redis-data-model.md` for slots.

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
        })
    }

    /// The prefix itself (scripts that file the user index compute its key from it).
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// One hash per session: `sid:<22 base64url chars of the key hash>`.
    pub(crate) fn session(&self, key: &SessionKey) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The hash that holds `user`'s index entry: `sid:users:<bucket>`, the bucket
    /// computed as `index_bucket` in `lua/prelude.lua` computes it.
    pub(crate) fn user_bucket(&self, user: &str) -> String {
        format!("{}users:{}", self.prefix, bucket(user))
    }

    /// Live sessions counted by minute of expiry.
    pub(crate) fn live(&self) -> String {
        format!("{}live", self.prefix)
    }
}
