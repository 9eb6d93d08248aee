//! `SessionStore` on Redis: one script per operation, one round trip per request.
//!
//! - this file: [`RedisStore`], connecting, and the `SessionStore` impl;
//! - `transport`: sending over the link, resends, durable writes;
//! - `protocol`: the scripts' arguments and replies;
//! - `fast`: writes without a script (`MULTI`/`EXEC`);
//! - `index`: the per-user index and the live count;
//! - `figures`: operator figures.

mod fast;
mod figures;
mod index;
mod protocol;
mod transport;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cloakroom::events::EndReason;
use cloakroom::{
    now_millis, Applied, Changes, Destroyed, Ended, Loaded, Millis, Record, Refresh, SessionKey,
    SessionStore, StoreError, StoreStats, UserSession,
};
use redis::{Cmd, Value};

use crate::cache::{
    live_figures, CacheFigures, CacheState, ClusterNodes, PublishTask, ReadCache, Tracker,
};
use crate::codec::{array, record_from_flat, stored_from_flat, text, Reply, Stored};
use crate::config::RedisConfig;
use crate::error::RedisError;
use crate::feed::{EndedFeed, FeedTask};
use crate::keys::Keys;
use crate::link::RedisConnection;
use crate::scripts::Lua;
use index::{BUCKET_MS, INDEX_SPILLED, LOGINS_FIELD};
use protocol::{loaded, write_args, written};
use transport::{evalsha, link_dropped, Resend};

/// The `SCAN MATCH` pattern of the names under `prefix`, its glob characters matched
/// literally (a prefix may hold `*`, `?`, `[`).
fn scan_pattern(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    pattern
}

#[cfg(test)]
#[test]
fn scan_patterns_match_the_prefix_literally() {
    assert_eq!(scan_pattern("sid:"), "sid:*");
    assert_eq!(scan_pattern("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\*");
}

/// Sessions in Redis or Valkey. Cheap to clone: clones share one multiplexed connection.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use cloakroom::{KeyRing, SessionConfig, SessionLayer};
/// use cloakroom_redis::{RedisConfig, RedisStore};
/// let store = RedisStore::connect(RedisConfig::new("redis://127.0.0.1:6379/0")).await?;
/// let config = SessionConfig::builder(KeyRing::generate()?).build()?;
/// let layer = SessionLayer::new(store, config);
/// # let _ = layer; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    pub(crate) conn: RedisConnection,
    pub(crate) keys: Keys,
    pub(crate) response_timeout: Duration,
    pub(crate) cache: Option<ReadCache>,
    pub(crate) durable: Option<Duration>,
    /// Sessions other instances ended lately (and its subscription, kept open).
    pub(crate) ended: Arc<EndedFeed>,
    pub(crate) _feed: Option<Arc<FeedTask>>,
    /// Writes this instance's cache figures for other processes (with a cache only).
    pub(crate) _published: Option<Arc<PublishTask>>,
}

impl RedisStore {
    /// Connects, checks the credentials, and loads the scripts, so that a wrong URL, password
    /// or certificate fails here rather than on the first request.
    ///
    /// # Errors
    /// [`RedisError`] saying what to fix.
    pub async fn connect(config: RedisConfig) -> Result<Self, RedisError> {
        let keys = Keys::new(&config.prefix)?;
        let conn = crate::connection::connect(&config).await?;
        let keys = if conn.is_cluster() {
            keys.for_cluster()
        } else {
            keys
        };
        let cache = match config.read_cache {
            Some(bytes) => Self::open_cache(&config, &conn, bytes).await,
            None => None,
        };
        let ended = EndedFeed::new();
        let heard = ended.clone();
        let channel = format!("{}ended", config.prefix);
        let feed = FeedTask::start(&config, channel, heard)
            .await
            .map(Arc::new)
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot hear which sessions other instances end; fallback tickets rely on this instance's own memory");
            })
            .ok();
        let published = cache
            .as_ref()
            .filter(|_| config.publish_cache_figures)
            .map(|c| {
                Arc::new(PublishTask::start(
                    conn.clone(),
                    keys.caches(),
                    c.state.clone(),
                ))
            });
        let store = Self {
            conn,
            keys,
            response_timeout: config.response_timeout,
            cache,
            durable: config.durable_writes,
            ended,
            _feed: feed,
            _published: published,
        };
        store.load_scripts().await.map_err(RedisError::Connect)?;
        Ok(store)
    }

    /// The read cache, or `None` (strict reads) when the server will not track for us.
    async fn open_cache(
        config: &RedisConfig,
        main: &RedisConnection,
        bytes: usize,
    ) -> Option<ReadCache> {
        let state = CacheState::new(&config.prefix, bytes);
        let tracker = if main.is_cluster() {
            Tracker::Nodes(Arc::new(ClusterNodes::new(
                config,
                main.clone(),
                state.clone(),
            )))
        } else {
            let (on_push, on_swap) = (state.clone(), state.clone());
            let opened = crate::connection::connect_tracking(
                config,
                move |p| on_push.on_push(&p),
                Box::new(move || on_swap.lost()),
            )
            .await;
            match opened {
                Ok(conn) => Tracker::Link(conn),
                Err(e) => {
                    tracing::warn!(error = %e, "session read cache unavailable (no RESP3?); reads go to Redis");
                    return None;
                }
            }
        };
        let cache = ReadCache::new(tracker, state);
        match cache.ensure_tracking().await {
            Ok(()) => Some(cache),
            Err(e) => {
                tracing::warn!(error = %e, "the server refuses CLIENT TRACKING; session reads go to Redis");
                None
            }
        }
    }

    /// Whether reads are served from the in-process cache, and its hits and misses so far.
    #[must_use]
    pub fn read_cache_counts(&self) -> Option<(u64, u64)> {
        self.cache.as_ref().map(|c| c.state.counts())
    }

    /// The read caches of every instance on this store (this prefix) that published its
    /// figures lately (every 10 s; an instance silent for 35 s is left out), by instance:
    /// what `cloakroom stats` shows of processes it is not part of.
    ///
    /// # Errors
    /// A store error.
    pub async fn read_caches(&self) -> Result<Vec<CacheFigures>, StoreError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.keys.caches());
        Ok(live_figures(self.one(cmd).await?, now_millis()))
    }

    /// The read cache's size now, if there is one: the records it holds and the bytes they
    /// are counted at (within [`RedisConfig::with_read_cache_bytes`]).
    #[must_use]
    pub fn read_cache_size(&self) -> Option<(usize, usize)> {
        self.cache.as_ref().map(|c| c.state.size())
    }

    /// Drops `keys` from the read cache before and after a write to them, so that no read
    /// that raced the write can cache what it replaced.
    pub(crate) async fn writing<T>(
        &self,
        keys: &[SessionKey],
        write: impl std::future::Future<Output = T>,
    ) -> T {
        let Some(cache) = &self.cache else {
            return write.await;
        };
        for k in keys {
            cache.state.invalidate(k);
        }
        let outcome = write.await;
        for k in keys {
            cache.state.invalidate(k);
        }
        outcome
    }

    /// The underlying connection, for data that lives beside the sessions (the reference
    /// app keeps its todo lists there). It follows failovers, and on a cluster routes each
    /// command by its key.
    #[must_use]
    pub fn connection(&self) -> RedisConnection {
        self.conn.clone()
    }

    /// The Redis key that holds the session `key` (for operators and tests).
    #[must_use]
    pub fn key_name(&self, key: &SessionKey) -> String {
        self.keys.session(key)
    }

    /// What `key` holds, by plain HGETALL: the cheapest read Redis has (a script call costs
    /// about twice as much server time as the command it runs). With the read cache, a
    /// session read before and unchanged since costs nothing.
    pub(crate) async fn read(&self, key: &SessionKey) -> Result<Stored, StoreError> {
        let hgetall = |name: &str| {
            let mut cmd = redis::cmd("HGETALL");
            cmd.arg(name);
            cmd
        };
        let Some(cache) = &self.cache else {
            return stored_from_flat(array(self.one(hgetall(&self.keys.session(key))).await?)?);
        };
        cache.follow(&self.conn).await;
        // A hit builds no command and no key name.
        if let Some(record) = cache.state.get(key) {
            return Ok(Stored::Session(record));
        }
        let name = self.keys.session(key);
        let cmd = hgetall(&name);
        if !cache.state.is_tracking() {
            // Tracking is off (the link was lost): it is switched on again in the background,
            // and this read goes to Redis strictly, caching nothing.
            cache.revive();
            return stored_from_flat(array(self.one(cmd).await?)?);
        }
        let ticket = cache.state.ticket();
        let reply = match &cache.tracker {
            Tracker::Link(link) => Resend::IfDropped
                .send(link, |mut conn| {
                    let cmd = &cmd;
                    async move { cmd.query_async::<Value>(&mut conn).await }
                })
                .await
                .map_err(|e| self.failed(e))?,
            Tracker::Nodes(nodes) => match nodes.read(&cmd, &name).await {
                Some(reply) => reply,
                None => {
                    cache.revive();
                    return stored_from_flat(array(self.one(cmd).await?)?);
                }
            },
        };
        let stored = stored_from_flat(array(reply)?)?;
        if let Stored::Session(record) = &stored {
            cache.state.insert(*key, record.clone(), ticket);
        }
        Ok(stored)
    }

    pub(crate) async fn load_once(
        &self,
        key: &SessionKey,
        now: Millis,
        refresh: Option<Refresh>,
    ) -> Result<Reply, StoreError> {
        let (before, deadline) = refresh.map_or((String::new(), String::new()), |r| {
            (r.if_deadline_before.to_string(), r.new_deadline.to_string())
        });
        let reply = self
            .one(self.session_script(Lua::Load, key, &[now.to_string(), before, deadline]))
            .await?;
        Reply::decode(reply)
    }

    pub(crate) async fn destroy_once(
        &self,
        key: &SessionKey,
        end: Option<(EndReason, Millis)>,
    ) -> Result<Vec<Value>, StoreError> {
        self.writing(
            &[*key],
            self.run_durable_with(vec![self.destroy_cmd(key, end)], Resend::Never),
        )
        .await
    }

    /// A destroy, keeping why it ended (`end`: the reason and for how many milliseconds) for a
    /// signed-in session in the same script.
    async fn destroy_keeping(
        &self,
        key: &SessionKey,
        end: Option<(EndReason, Millis)>,
    ) -> Result<Ended, StoreError> {
        let decode = |replies: Vec<Value>| {
            Ok::<_, StoreError>(
                match Reply::decode(replies.into_iter().next().unwrap_or(Value::Nil))? {
                    Reply::Alias(_) => Ended::plain(Destroyed::Alias),
                    Reply::Gone => Ended::plain(Destroyed::Nothing),
                    // Already past a deadline: no logout (it kept which deadline passed).
                    Reply::Tagged(tag, _) if tag == "expired" => Ended::plain(Destroyed::Nothing),
                    Reply::Tagged(_, rest) => {
                        let user = rest.into_iter().next().map(text).transpose()?;
                        Ended {
                            destroyed: Destroyed::Session,
                            kept: end.is_some() && user.is_some(),
                            user,
                        }
                    }
                },
            )
        };
        // Sent again after a dropped link (a logout must not fail for a blip), but a second
        // run that finds nothing cannot tell "the first deleted a session" from "the first
        // deleted an old ID's alias" (whose logout must be refused): that one answer is
        // reported as the failure it follows.
        match self.destroy_once(key, end).await {
            Err(first) if link_dropped(&first) => {
                match decode(self.destroy_once(key, end).await?)? {
                    e if e.destroyed == Destroyed::Nothing => Err(first),
                    ended => Ok(ended),
                }
            }
            replies => decode(replies?),
        }
    }

    /// Destroys every session of `user` but `keep` (and what a renewal of `keep` reaches),
    /// each keeping `end` if given; returns the keys of those that ended.
    async fn destroy_sessions_of(
        &self,
        user: &str,
        keep: Option<&SessionKey>,
        end: Option<(EndReason, Millis)>,
        now: Millis,
    ) -> Result<Vec<SessionKey>, StoreError> {
        let listed = self.list_user(user, now).await?;
        let spared = match keep {
            Some(k) => self.load(k, now, None).await?.map(|l| l.key),
            None => None,
        };
        let doomed = cloakroom::sessions_to_end(listed, keep, spared);
        if doomed.is_empty() {
            return Ok(doomed);
        }
        let mut cmds: Vec<Cmd> = doomed.iter().map(|k| self.destroy_cmd(k, end)).collect();
        cmds.push(self.index_cmd(user, None, &doomed));
        // Never sent twice: a second run could not tell which aliases the first one followed.
        let replies = self
            .writing(&doomed, self.run_durable_with(cmds, Resend::Never))
            .await?;
        // Only the keys whose session this call ended (not one already gone or expired). A key
        // that became an alias since the listing was cycled meanwhile (on a cluster the index
        // learns the new key a moment after the cycle): its target goes too.
        let mut ended = Vec::new();
        let mut moved = Vec::new();
        for (key, reply) in doomed.iter().zip(replies) {
            match Reply::decode(reply) {
                Ok(Reply::Tagged(tag, _)) if tag == "ok" => ended.push(*key),
                Ok(Reply::Alias(target)) if Some(&target) != keep && Some(target) != spared => {
                    moved.push(target);
                }
                _ => {}
            }
        }
        if !moved.is_empty() {
            let cmds = moved.iter().map(|k| self.destroy_cmd(k, end)).collect();
            let replies = self.writing(&moved, self.run_durable(cmds)).await?;
            for (key, reply) in moved.iter().zip(replies) {
                if matches!(Reply::decode(reply), Ok(Reply::Tagged(tag, _)) if tag == "ok") {
                    ended.push(*key);
                }
            }
        }
        Ok(ended)
    }

    /// Any change, by the `apply` script.
    pub(crate) async fn apply_with_script(
        &self,
        key: &SessionKey,
        changes: &Changes,
        now: Millis,
    ) -> Result<Applied, StoreError> {
        let mut args = vec![now.to_string(), self.keys.session_prefix(key)];
        write_args(&mut args, changes);
        let filed = self.file_before(key, changes, None).await?;
        let cmd = self.session_script(Lua::Apply, key, &args);
        let reply = self
            .writing(&[*key], self.one_with(cmd, Resend::for_changes(changes)))
            .await?;
        let applied = written(Reply::decode(reply)?, *key)?;
        self.file_after(filed.as_deref(), key, None, &applied)
            .await?;
        Ok(applied)
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn load(
        &self,
        key: &SessionKey,
        now: Millis,
        refresh: Option<Refresh>,
    ) -> Result<Option<Loaded>, StoreError> {
        let (target, record) = match self.read(key).await? {
            Stored::Session(record) => (*key, record),
            // Within a cycle's grace window: one more hop, never two.
            Stored::Alias(target, until) if now < until => match self.read(&target).await? {
                Stored::Session(record) => (target, record),
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        // Judged by the app's clock; Redis's TTL drops the key soon after anyway.
        if !record.is_alive(now) {
            return Ok(None);
        }
        match refresh.and_then(|r| r.due(&record)) {
            // Due at most once per refresh interval: the load script re-checks and slides
            // the deadline atomically, so concurrent refreshes cannot revive a dead session.
            Some(deadline) => {
                // The script slides only if nobody slid it since this read.
                let window = Refresh {
                    if_deadline_before: record.idle_deadline.saturating_add(1),
                    new_deadline: deadline,
                    anonymous: None,
                    now,
                };
                match self
                    .writing(&[target], self.load_once(&target, now, Some(window)))
                    .await?
                {
                    Reply::Tagged(tag, rest) => loaded(target, &tag, rest).map(Some),
                    Reply::Gone | Reply::Alias(_) => Ok(None),
                }
            }
            _ => Ok(Some(Loaded {
                record,
                key: target,
                refreshed: false,
            })),
        }
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<(), StoreError> {
        let now = record.created;
        let mut cmds = vec![self.create_cmd(key, record, now)];
        // One round trip: the index entry rides in the same pipeline. Should the create
        // collide, the entry names a live session that is not this user's, and listing
        // checks every entry against its session's owner.
        if let Some(user) = &record.user {
            cmds.push(self.index_cmd(user, Some(key), &[]));
        }
        // Sent again after a dropped link only when anonymous: a create that landed the first
        // time answers "collision" the second, and the layer files the data under another ID,
        // which for a login would leave a phantom session in the user's list.
        let resend = if record.user.is_some() {
            Resend::Never
        } else {
            Resend::IfDropped
        };
        let replies = self.run_durable_with(cmds, resend).await?;
        match Reply::decode(replies.into_iter().next().unwrap_or(Value::Nil))? {
            Reply::Tagged(tag, _) if tag == "ok" => Ok(()),
            Reply::Tagged(tag, _) if tag == "collision" => Err(StoreError::IdCollision),
            _ => Err(StoreError::Corrupt("unexpected reply to create".into())),
        }
    }

    async fn apply(
        &self,
        key: &SessionKey,
        changes: &Changes,
        now: Millis,
    ) -> Result<Applied, StoreError> {
        if fast::eligible(changes) {
            return self.apply_without_script(key, changes, now).await;
        }
        self.apply_with_script(key, changes, now).await
    }

    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        changes: &Changes,
        now: Millis,
        grace_until: Millis,
    ) -> Result<Applied, StoreError> {
        if old == new {
            return Err(StoreError::IdCollision);
        }
        // One script, one round trip, atomic: there is no moment at which the session is
        // under neither key or missing from its user's index, whatever is cancelled when.
        let mut args = vec![
            now.to_string(),
            self.keys.session_prefix(old),
            new.to_string(),
            grace_until.to_string(),
        ];
        write_args(&mut args, changes);
        let cmd = evalsha(
            Lua::Cycle,
            &[
                self.keys.session(old),
                self.keys.live(old),
                self.keys.session(new),
            ],
            &args,
        );
        let filed = self.file_before(old, changes, Some(new)).await?;
        let reply = self
            .writing(
                &[*old, *new],
                self.run_durable_with(vec![cmd], Resend::Never),
            )
            .await?;
        let applied = match Reply::decode(reply.into_iter().next().unwrap_or(Value::Nil))? {
            Reply::Tagged(tag, _) if tag == "collision" => return Err(StoreError::IdCollision),
            Reply::Tagged(tag, _) if tag == "aliased" => Applied::Aliased,
            reply => written(reply, *new)?,
        };
        self.file_after(filed.as_deref(), new, Some(old), &applied)
            .await?;
        Ok(applied)
    }

    async fn destroy(&self, key: &SessionKey) -> Result<Destroyed, StoreError> {
        // The user index is not touched: listing drops entries whose session is gone, which
        // keeps logout at one round trip.
        Ok(self.destroy_keeping(key, None).await?.destroyed)
    }

    /// The destroy script with the reason: one round trip.
    async fn end(
        &self,
        key: &SessionKey,
        reason: EndReason,
        until: Millis,
    ) -> Result<Ended, StoreError> {
        let ttl = until.saturating_sub(now_millis());
        self.destroy_keeping(key, Some((reason, ttl))).await
    }

    async fn end_user(
        &self,
        user: &str,
        keep: Option<&SessionKey>,
        reason: EndReason,
        until: Millis,
        now: Millis,
    ) -> Result<Vec<SessionKey>, StoreError> {
        let ttl = until.saturating_sub(now_millis());
        self.destroy_sessions_of(user, keep, Some((reason, ttl)), now)
            .await
    }

    async fn list_user(&self, user: &str, now: Millis) -> Result<Vec<UserSession>, StoreError> {
        let mut entry = redis::cmd("HGET");
        entry.arg(self.keys.user_bucket(user)).arg(user);
        let list = match self.one(entry).await? {
            Value::Nil => String::new(),
            value => text(value)?,
        };
        let members: Vec<SessionKey> = if list == INDEX_SPILLED {
            // A long list lives in a set of its own (`index_edit` in lua/prelude.lua).
            let mut all = redis::cmd("SMEMBERS");
            all.arg(self.keys.user_spill(user));
            array(self.one(all).await?)?
                .into_iter()
                .filter_map(|m| text(m).ok())
                .filter_map(|m| SessionKey::parse(&m))
                .collect()
        } else {
            list.as_bytes()
                .chunks(22)
                .filter_map(|m| std::str::from_utf8(m).ok())
                .filter_map(SessionKey::parse)
                .collect()
        };
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let reads = members
            .iter()
            .map(|k| {
                let mut cmd = redis::cmd("HGETALL");
                cmd.arg(self.keys.session(k));
                cmd
            })
            .collect();
        let mut live = Vec::new();
        let mut stale = Vec::new();
        for (key, reply) in members.into_iter().zip(self.run(reads).await?) {
            let record = array(reply)
                .ok()
                .and_then(|flat| record_from_flat(flat).ok());
            match record {
                Some(record) if record.is_alive(now) && record.user.as_deref() == Some(user) => {
                    live.push(UserSession { key, record });
                }
                _ => stale.push(key),
            }
        }
        if !stale.is_empty() {
            self.one(self.index_cmd(user, None, &stale)).await?;
        }
        Ok(live)
    }

    async fn destroy_user(
        &self,
        user: &str,
        keep: Option<&SessionKey>,
        now: Millis,
    ) -> Result<u64, StoreError> {
        let ended = self.destroy_sessions_of(user, keep, None, now).await?;
        Ok(ended.len() as u64)
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let lives = self.keys.lives();
        let reads = lives
            .iter()
            .map(|live| {
                let mut all = redis::cmd("HGETALL");
                all.arg(live);
                all
            })
            .collect();
        let current = now_millis() / BUCKET_MS;
        let mut sessions = 0u64;
        let mut drops = Vec::new();
        for (live, reply) in lives.iter().zip(self.run(reads).await?) {
            let mut past = Vec::new();
            let mut items = array(reply)?.into_iter();
            while let (Some(bucket), Some(count)) = (items.next(), items.next()) {
                let bucket = text(bucket)?;
                let count: i64 = text(count)?.parse().unwrap_or(0);
                match bucket.parse::<u64>() {
                    Ok(b) if b >= current => sessions += u64::try_from(count).unwrap_or(0),
                    _ if bucket == LOGINS_FIELD => {}
                    _ => past.push(bucket),
                }
            }
            if !past.is_empty() {
                let mut drop = redis::cmd("HDEL");
                drop.arg(live).arg(past);
                drops.push(drop);
            }
        }
        if !drops.is_empty() {
            self.run(drops).await?;
        }
        Ok(StoreStats {
            sessions,
            bytes: None,
        })
    }

    /// A tombstone is one string beside the session's hash, `<prefix>ended:<key>`, holding
    /// the reason, with its own expiry.
    async fn record_end(
        &self,
        key: &SessionKey,
        reason: EndReason,
        until: Millis,
    ) -> Result<(), StoreError> {
        let ttl = until.saturating_sub(now_millis()).max(1);
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.keys.tombstone(key))
            .arg(reason.as_str())
            .arg("PX")
            .arg(ttl);
        self.one(cmd).await.map(drop)
    }

    async fn end_reason(
        &self,
        key: &SessionKey,
        _now: Millis,
    ) -> Result<Option<EndReason>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.keys.tombstone(key));
        Ok(match self.one(cmd).await? {
            Value::BulkString(b) => std::str::from_utf8(&b).ok().and_then(EndReason::parse),
            _ => None,
        })
    }

    /// `SCAN` over the prefix: the cursor is Redis's own, so a walk resumes where it stopped.
    /// Not on a cluster (each node would be walked on its own).
    async fn scan(
        &self,
        cursor: Option<&str>,
        count: usize,
    ) -> Result<cloakroom::ScanPage, StoreError> {
        if self.keys.is_cluster() {
            return Err(StoreError::Unsupported(
                "listing every session of a cluster",
            ));
        }
        let start = match cursor {
            None => 0,
            Some(c) => c
                .parse::<u64>()
                .map_err(|_| StoreError::Unsupported("that cursor"))?,
        };
        let prefix = self
            .keys
            .session_prefix(&SessionKey::from_bytes([0; cloakroom::KEY_LEN]));
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(start)
            .arg("MATCH")
            .arg(scan_pattern(&prefix))
            .arg("COUNT")
            .arg(count.max(1));
        let (next, names): (u64, Vec<String>) = redis::from_redis_value(self.one(cmd).await?)
            .map_err(|e| StoreError::Corrupt(format!("SCAN reply: {e}")))?;
        let prefix_len = self
            .keys
            .session_prefix(&SessionKey::from_bytes([0; cloakroom::KEY_LEN]))
            .len();
        let keys = names
            .iter()
            .filter_map(|n| n.get(prefix_len..).and_then(SessionKey::parse))
            .collect();
        Ok(cloakroom::ScanPage {
            keys,
            next: (next != 0).then(|| next.to_string()),
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.one(redis::cmd("PING")).await.map(|_| ())
    }

    /// A cache hit needing nothing else: the same checks as `load` (alive by the app's
    /// clock, no refresh due), and the main link not moved since the cache followed it.
    fn load_cached(
        &self,
        key: &SessionKey,
        now: Millis,
        refresh: Option<Refresh>,
    ) -> Option<Loaded> {
        let cache = self.cache.as_ref()?;
        if !cache.followed(&self.conn) {
            return None;
        }
        let record = cache.state.peek(key)?;
        if !record.is_alive(now) || refresh.and_then(|r| r.due(&record)).is_some() {
            return None;
        }
        cache.state.count_hit();
        Some(Loaded {
            record,
            key: *key,
            refreshed: false,
        })
    }

    fn cached(&self, key: &SessionKey) -> Option<Record> {
        self.cache.as_ref().and_then(|c| c.state.get(key))
    }

    fn can_cycle_to(&self, old: &SessionKey, new: &SessionKey) -> bool {
        self.keys.same_slot(old, new)
    }

    fn ended_recently(&self, key: &SessionKey, issued: Millis) -> bool {
        self.ended.ended_recently(key, issued)
    }
}
