//! The per-user index and the live count: which bucket a user's sessions are filed in, and
//! filing or unfiling a session around a write that changes its user.

use cloakroom::{Applied, Changes, Millis, Record, SessionKey, StoreError, UserChange};
use redis::{Cmd, Value};

use super::transport::evalsha;
use super::RedisStore;
use crate::codec::text;
use crate::scripts::Lua;

/// What a user's index entry says once its list spilled into a set (`SPILLED` in the
/// scripts).
pub(crate) const INDEX_SPILLED: &str = "*";

/// The live-count hash's field that counts logins (`count_login` in the scripts).
pub(crate) const LOGINS_FIELD: &str = "logins";

/// The minute buckets of the live count (matches `BUCKET_MS` in the scripts).
pub(crate) const BUCKET_MS: Millis = 60_000;

impl RedisStore {
    /// Changes `user`'s index entry: files `add`, drops `drop` (for `create` and listing; the
    /// write scripts keep the index themselves).
    pub(crate) fn index_cmd(
        &self,
        user: &str,
        add: Option<&SessionKey>,
        drop: &[SessionKey],
    ) -> Cmd {
        let mut args = vec![
            self.keys.prune_prefix().to_owned(),
            user.to_owned(),
            add.map(ToString::to_string).unwrap_or_default(),
        ];
        args.extend(drop.iter().map(ToString::to_string));
        evalsha(Lua::Index, &[self.keys.user_bucket(user)], &args)
    }

    /// On a cluster, before a write that files the session at `key` (or at `new`, for a
    /// cycle) under a user: adds that key to the user's index first, so that a revocation
    /// listing the user while the write lands finds it. Answers the user, for
    /// [`RedisStore::file_after`]. Standalone, the scripts keep the index and this is a no-op.
    ///
    /// The user is the one `changes` sets, else (a cycle) the old session's own, read here.
    pub(crate) async fn file_before(
        &self,
        key: &SessionKey,
        changes: &Changes,
        new: Option<&SessionKey>,
    ) -> Result<Option<String>, StoreError> {
        if !self.keys.is_cluster() {
            return Ok(None);
        }
        let user = match (&changes.user, new) {
            (Some(UserChange::Set(user)), _) => Some(user.clone()),
            (Some(UserChange::Clear), _) | (None, None) => None,
            (None, Some(_)) => {
                let mut meta = redis::cmd("HGET");
                meta.arg(self.keys.session(key)).arg(crate::codec::META);
                match self.one(meta).await? {
                    Value::Nil => None,
                    value => {
                        let mut record = Record::new(0, 0, 0);
                        crate::codec::unpack_meta(&text(value)?, &mut record)?;
                        record.user
                    }
                }
            }
        };
        if let Some(user) = &user {
            self.one(self.index_cmd(user, Some(new.unwrap_or(key)), &[]))
                .await?;
        }
        Ok(user)
    }

    /// On a cluster, after the write: files the key again (a listing in between may have
    /// dropped it, the session not being there yet) and drops the old key of a cycle.
    pub(crate) async fn file_after(
        &self,
        user: Option<&str>,
        key: &SessionKey,
        old: Option<&SessionKey>,
        applied: &Applied,
    ) -> Result<(), StoreError> {
        if let (Some(user), Applied::Done { .. }) = (user, applied) {
            let drop: Vec<SessionKey> = old.into_iter().copied().collect();
            self.one(self.index_cmd(user, Some(key), &drop)).await?;
        }
        Ok(())
    }
}
