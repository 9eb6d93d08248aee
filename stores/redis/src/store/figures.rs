//! Operator figures: logins so far, command statistics, server info, an index bucket's
//! entries and one session's memory (for `cloakroom stats` and the reports).

use cloakroom::{SessionKey, StoreError};
use redis::Value;

use super::index::LOGINS_FIELD;
use super::RedisStore;
use crate::codec::{array, text};

impl RedisStore {
    /// Logins counted by the scripts since the counter began (every live-count hash's).
    pub(crate) async fn logins_total(&self) -> Result<u64, StoreError> {
        let cmds = self
            .keys
            .lives()
            .into_iter()
            .map(|live| {
                let mut cmd = redis::cmd("HGET");
                cmd.arg(live).arg(LOGINS_FIELD);
                cmd
            })
            .collect();
        let mut total = 0;
        for reply in self.run(cmds).await? {
            if !matches!(reply, Value::Nil) {
                total += text(reply)?.parse::<u64>().unwrap_or(0);
            }
        }
        Ok(total)
    }

    /// `INFO commandstats` (on a cluster, every primary's).
    pub(crate) async fn command_stats(&self) -> Result<Value, StoreError> {
        let mut cmd = redis::cmd("INFO");
        cmd.arg("commandstats");
        self.one(cmd).await
    }

    /// `INFO` (default sections; on a cluster, every primary's).
    pub(crate) async fn info(&self) -> Result<Value, StoreError> {
        self.one(redis::cmd("INFO")).await
    }

    /// The session lists of index bucket `bucket`.
    pub(crate) async fn bucket_entries(&self, bucket: u32) -> Result<Vec<String>, StoreError> {
        let mut cmd = redis::cmd("HVALS");
        cmd.arg(self.keys.bucket_name(bucket));
        array(self.one(cmd).await?)?.into_iter().map(text).collect()
    }

    /// `MEMORY USAGE` of the session `key`'s hash (every field counted), if it exists.
    pub(crate) async fn memory_usage(&self, key: &SessionKey) -> Result<Option<u64>, StoreError> {
        let mut cmd = redis::cmd("MEMORY");
        cmd.arg("USAGE")
            .arg(self.keys.session(key))
            .arg("SAMPLES")
            .arg(0);
        Ok(match self.one(cmd).await? {
            Value::Int(n) => u64::try_from(n).ok(),
            _ => None,
        })
    }
}
