//! Key names. Session keys hold a hash of the session ID, never the ID itself.
//!
//! Every script touches one session key (plus, in standalone mode, the live-count key); the
//! per-user index is written by separate commands. See `docs/redis-data-model.md` for slots.

use cloakroom::SessionKey;

use crate::error::RedisError;

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

    /// One hash per session: `session:<22 base64url chars of the key hash>`.
    pub(crate) fn session(&self, key: &SessionKey) -> String {
        format!("{}{key}", self.prefix)
    }

    /// A user's index: `session:user:<user>` (':' never occurs in a session key).
    pub(crate) fn user(&self, user: &str) -> String {
        format!("{}user:{user}", self.prefix)
    }

    /// Live sessions counted by minute of expiry.
    pub(crate) fn live(&self) -> String {
        format!("{}live", self.prefix)
    }
}
