//! Each instance's read cache, as other processes see it: every [`PUBLISH_EVERY`] an instance
//! with a cache writes its figures into one hash beside the sessions, `<prefix>caches`, a
//! field per instance (`<host>:<pid>:<random>`), so that `cloakroom stats`, run anywhere,
//! shows every running instance's cache: its size, its bound and its hit rate.
//!
//! The figures are a few dozen bytes an instance. A field not refreshed for [`STALE_AFTER`]
//! is an instance that stopped: readers skip it, and each publisher deletes what is stale, so
//! the hash holds about one field per running instance. The hash itself expires if every
//! instance stops.

use std::time::Duration;

use cloakroom::{now_millis, Millis};
use redis::Value;

use std::sync::Arc;

use super::CacheState;
use crate::link::RedisConnection;

/// How often an instance writes its figures.
pub(crate) const PUBLISH_EVERY: Duration = Duration::from_secs(10);

/// Figures older than this are an instance that stopped.
pub(crate) const STALE_AFTER: Millis = 35_000;

/// One instance's read cache, as it last published it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CacheFigures {
    /// Which instance: its host name, process ID and a random suffix.
    pub instance: String,
    /// When it published these (Unix ms).
    pub at: Millis,
    /// Session records cached.
    pub entries: u64,
    /// Bytes they are counted at.
    pub bytes: u64,
    /// The cache's bound in bytes.
    pub limit: u64,
    /// Reads served from the cache since the instance started.
    pub hits: u64,
    /// Reads that went to Redis.
    pub misses: u64,
}

impl CacheFigures {
    /// The share of reads served from the cache, if there were any.
    #[must_use]
    pub fn hit_rate(&self) -> Option<f64> {
        let reads = self.hits.saturating_add(self.misses);
        (reads > 0).then(|| self.hits as f64 / reads as f64)
    }

    fn encode(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}",
            self.at, self.entries, self.bytes, self.limit, self.hits, self.misses
        )
    }

    /// The figures in a field's value, or `None` for anything else (never a panic).
    fn decode(instance: &str, value: &str) -> Option<Self> {
        let mut n = value.split('|').map(|v| v.parse::<u64>().ok());
        let mut next = || n.next().flatten();
        Some(Self {
            instance: instance.to_owned(),
            at: next()?,
            entries: next()?,
            bytes: next()?,
            limit: next()?,
            hits: next()?,
            misses: next()?,
        })
    }
}

/// This process's name among the publishers.
pub(crate) fn instance_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty() && h.len() <= 64)
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().chars().take(64).collect())
        })
        .filter(|h: &String| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    // Two processes with one PID (containers) stay apart.
    let suffix: String = cloakroom::SessionId::random()
        .map(|id| id.key().to_string().chars().take(6).collect())
        .unwrap_or_default();
    format!("{host}:{}:{suffix}", std::process::id())
}

/// The publishing task: aborted when the store's last clone is dropped.
pub(crate) struct PublishTask(tokio::task::AbortHandle);

impl Drop for PublishTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl PublishTask {
    /// Publishes `state`'s figures under `hash` every [`PUBLISH_EVERY`], the first at once.
    pub(crate) fn start(conn: RedisConnection, hash: String, state: Arc<CacheState>) -> Self {
        let instance = instance_name();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(PUBLISH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // Best effort: a failure is retried at the next tick, and costs no request.
                let _ = publish(&conn, &hash, &instance, &state).await;
            }
        });
        Self(task.abort_handle())
    }
}

/// One round: this instance's figures, the hash's expiry, and the stale fields deleted.
async fn publish(
    conn: &RedisConnection,
    hash: &str,
    instance: &str,
    state: &CacheState,
) -> Result<(), redis::RedisError> {
    let (entries, bytes) = state.size();
    let (hits, misses) = state.counts();
    let now = now_millis();
    let mine = CacheFigures {
        instance: instance.to_owned(),
        at: now,
        entries: entries as u64,
        bytes: bytes as u64,
        limit: state.limit() as u64,
        hits,
        misses,
    };
    let mut conn = conn.clone();
    let mut pipe = redis::pipe();
    pipe.cmd("HSET").arg(hash).arg(instance).arg(mine.encode());
    pipe.cmd("PEXPIRE").arg(hash).arg(STALE_AFTER * 2);
    pipe.cmd("HGETALL").arg(hash);
    let replies: Vec<Value> = pipe.query_async(&mut conn).await?;
    let stale: Vec<String> = match replies.into_iter().nth(2) {
        Some(all) => fields(all)
            .into_iter()
            .filter(|(name, value)| {
                CacheFigures::decode(name, value).is_none_or(|f| !current(&f, now))
            })
            .map(|(name, _)| name)
            .collect(),
        None => Vec::new(),
    };
    if !stale.is_empty() {
        let mut drop = redis::cmd("HDEL");
        drop.arg(hash).arg(stale);
        let _: Value = drop.query_async(&mut conn).await?;
    }
    Ok(())
}

/// Whether figures published at `f.at` still stand at `now`: not stale, and not from the
/// future (a value written by anything else, or a clock far ahead, is dropped, not kept).
fn current(f: &CacheFigures, now: Millis) -> bool {
    f.at.saturating_add(STALE_AFTER) >= now && f.at <= now.saturating_add(STALE_AFTER)
}

/// The name/value pairs of an `HGETALL` reply (RESP2 array or RESP3 map).
fn fields(reply: Value) -> Vec<(String, String)> {
    let text = |v: Value| match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    };
    match reply {
        Value::Array(items) => {
            let mut items = items.into_iter();
            let mut out = Vec::new();
            while let (Some(n), Some(v)) = (items.next(), items.next()) {
                if let (Some(n), Some(v)) = (text(n), text(v)) {
                    out.push((n, v));
                }
            }
            out
        }
        Value::Map(pairs) => pairs
            .into_iter()
            .filter_map(|(n, v)| Some((text(n)?, text(v)?)))
            .collect(),
        _ => Vec::new(),
    }
}

/// The figures of every instance that published within [`STALE_AFTER`], from `hash`'s
/// `HGETALL` reply, by instance name.
pub(crate) fn live_figures(reply: Value, now: Millis) -> Vec<CacheFigures> {
    let mut out: Vec<CacheFigures> = fields(reply)
        .into_iter()
        .filter_map(|(name, value)| CacheFigures::decode(&name, &value))
        .filter(|f| current(f, now))
        .collect();
    out.sort_by(|a, b| a.instance.cmp(&b.instance));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_round_trip_and_garbage_is_skipped() {
        let f = CacheFigures {
            instance: "web-1:42:abcdef".into(),
            at: 1_000,
            entries: 3,
            bytes: 900,
            limit: 64 << 20,
            hits: 9,
            misses: 1,
        };
        assert_eq!(
            CacheFigures::decode(&f.instance, &f.encode()),
            Some(f.clone())
        );
        assert_eq!(f.hit_rate(), Some(0.9));
        for bad in ["", "1|2", "x|1|2|3|4|5", "1|2|3|4|5|-6", "1|2|3|4|5"] {
            assert_eq!(CacheFigures::decode("i", bad), None, "{bad:?}");
        }
        let reply = Value::Array(vec![
            Value::BulkString(b"b".to_vec()),
            Value::BulkString(f.encode().into_bytes()),
            Value::BulkString(b"a".to_vec()),
            Value::BulkString(b"garbage".to_vec()),
            Value::BulkString(b"old".to_vec()),
            Value::BulkString(b"1|0|0|0|0|0".to_vec()),
            Value::BulkString(b"huge".to_vec()),
            Value::BulkString(format!("{}|1|1|1|{}|{}", u64::MAX, u64::MAX, u64::MAX).into_bytes()),
        ]);
        let live = live_figures(reply, 1_000 + STALE_AFTER);
        assert_eq!(live.len(), 1, "{live:?}");
        assert_eq!(live[0].instance, "b");
    }
}
