//! `SessionStore` on Redis: one script per operation, one round trip per request.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cloakroom::{
    now_millis, Applied, Changes, Destroyed, Limit, Loaded, Millis, Record, Refresh, SessionKey,
    SessionStore, StoreError, StoreStats, UserChange, UserSession,
};
use redis::{Cmd, ErrorKind, ServerErrorKind, Value};

use crate::cache::{CacheState, ForgetUnlessDone, Patch, ReadCache};
use crate::codec::{
    array, counters, record_fields, record_from_flat, stored_from_flat, text, Reply, Stored,
};
use crate::config::RedisConfig;
use crate::error::RedisError;
use crate::fast;
use crate::feed::{EndedFeed, FeedTask};
use crate::keys::Keys;
use crate::link::RedisConnection;
use crate::scripts::{self, Lua};

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
    conn: RedisConnection,
    keys: Keys,
    response_timeout: Duration,
    cache: Option<ReadCache>,
    durable: Option<Duration>,
    /// Sessions other instances ended lately (and its subscription, kept open).
    ended: Arc<EndedFeed>,
    _feed: Option<Arc<FeedTask>>,
}

/// What a user's index entry says once its list spilled into a set (`SPILLED` in the
/// scripts).
const INDEX_SPILLED: &str = "*";

/// The live-count hash's field that counts logins (`count_login` in the scripts).
const LOGINS_FIELD: &str = "logins";

/// The minute buckets of the live count (matches `BUCKET_MS` in the scripts).
const BUCKET_MS: Millis = 60_000;

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
            // Tracking is per node: one connection cannot watch a cluster's keys.
            Some(_) if conn.is_cluster() => {
                tracing::warn!(
                    "the session read cache is not available on Redis Cluster; reads go to Redis"
                );
                None
            }
            Some(entries) => Self::open_cache(&config, entries).await,
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
        let store = Self {
            conn,
            keys,
            response_timeout: config.response_timeout,
            cache,
            durable: config.durable_writes,
            ended,
            _feed: feed,
        };
        store.load_scripts().await.map_err(RedisError::Connect)?;
        Ok(store)
    }

    /// The read cache, or `None` (strict reads) when the server will not track for us.
    async fn open_cache(config: &RedisConfig, entries: usize) -> Option<ReadCache> {
        let state = CacheState::new(&config.prefix, entries);
        let (on_push, on_swap) = (state.clone(), state.clone());
        let opened = crate::connection::connect_tracking(
            config,
            move |p| on_push.on_push(&p),
            Box::new(move || on_swap.lost()),
        )
        .await;
        let cache = match opened {
            Ok(conn) => ReadCache::new(conn, state),
            Err(e) => {
                tracing::warn!(error = %e, "session read cache unavailable (no RESP3?); reads go to Redis");
                return None;
            }
        };
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

    /// Drops `keys` from the read cache before and after a write to them, so that no read
    /// that raced the write can cache what it replaced.
    async fn writing<T>(
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

    /// The Redis key that holds the session `key` (for operators and tests).
    #[must_use]
    pub fn key_name(&self, key: &SessionKey) -> String {
        self.keys.session(key)
    }

    async fn load_scripts(&self) -> Result<(), redis::RedisError> {
        if self.conn.is_cluster() {
            // One at a time: a lone SCRIPT LOAD goes to every node, a pipeline to one.
            for source in scripts::sources() {
                redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(*source)
                    .query_async::<()>(&mut self.conn.clone())
                    .await?;
            }
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for source in scripts::sources() {
            pipe.cmd("SCRIPT").arg("LOAD").arg(*source).ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await
    }

    fn failed(&self, error: redis::RedisError) -> StoreError {
        if error.is_timeout() {
            return StoreError::Timeout(self.response_timeout);
        }
        match error.code() {
            Some("WRONGTYPE") => {
                StoreError::Corrupt("a session key holds something other than a hash".into())
            }
            // A script that failed on one session's data (a generic ERR from a script, not a
            // server condition) says nothing about the server's health: it must not open the
            // breaker for everyone. Its text is not kept: it may quote the data.
            Some("ERR") if error.detail().is_some_and(|d| d.contains("script")) => {
                StoreError::Corrupt("a session script failed on this session's data".into())
            }
            _ => StoreError::unavailable(error),
        }
    }

    /// Sends `cmds` as one pipeline (one round trip); the first failed command fails the call.
    /// Sent once more on a fresh connection if the link dropped: only for commands that may
    /// run twice (reads, and writes that set rather than add).
    async fn run(&self, cmds: Vec<Cmd>) -> Result<Vec<Value>, StoreError> {
        self.run_each(cmds, Resend::IfDropped)
            .await?
            .into_iter()
            .collect()
    }

    /// Sends `cmds` as one pipeline and answers each command's outcome. Scripts the server has
    /// forgotten (after a restart) are loaded and just those commands sent again: they did not
    /// run the first time.
    async fn run_each(
        &self,
        cmds: Vec<Cmd>,
        resend: Resend,
    ) -> Result<Vec<Result<Value, StoreError>>, StoreError> {
        let mut replies = self.send(&cmds, resend).await?;
        let forgotten: Vec<usize> = replies
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                matches!(r, Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript))
            })
            .map(|(i, _)| i)
            .collect();
        if !forgotten.is_empty() {
            // A durable write's WAIT must come after the commands sent again, or it would
            // vouch for nothing.
            let mut forgotten = forgotten;
            let waits: Vec<usize> = forgotten
                .iter()
                .filter_map(|&i| (i + 1..cmds.len()).find(|&j| is_wait(&cmds[j])))
                .collect();
            forgotten.extend(waits);
            forgotten.sort_unstable();
            forgotten.dedup();
            self.load_scripts().await.map_err(|e| self.failed(e))?;
            let again = self
                .send(
                    &forgotten
                        .iter()
                        .map(|&i| cmds[i].clone())
                        .collect::<Vec<_>>(),
                    resend,
                )
                .await?;
            for (i, reply) in forgotten.into_iter().zip(again) {
                replies[i] = reply;
            }
        }
        Ok(replies
            .into_iter()
            .map(|r| r.map_err(|e| self.failed(e)))
            .collect())
    }

    async fn send(
        &self,
        cmds: &[Cmd],
        resend: Resend,
    ) -> Result<Vec<redis::RedisResult<Value>>, StoreError> {
        if !self.conn.is_cluster() || cmds.len() < 2 {
            return self.send_together(cmds, resend).await;
        }
        // A cluster pipeline must stay in one slot: each command goes on its own, with the
        // WAIT that follows it (which must reach the same node), all at once.
        let mut units: Vec<&[Cmd]> = Vec::new();
        let mut start = 0;
        for i in 1..=cmds.len() {
            if i == cmds.len() || !is_wait(&cmds[i]) {
                units.push(&cmds[start..i]);
                start = i;
            }
        }
        let replies = futures_util::future::join_all(
            units.into_iter().map(|u| self.send_together(u, resend)),
        )
        .await;
        let mut out = Vec::with_capacity(cmds.len());
        for reply in replies {
            out.extend(reply?);
        }
        Ok(out)
    }

    async fn send_together(
        &self,
        cmds: &[Cmd],
        resend: Resend,
    ) -> Result<Vec<redis::RedisResult<Value>>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for cmd in cmds {
            pipe.add_command(cmd.clone());
        }
        resend
            .send(&self.conn, |mut conn| {
                let pipe = &pipe;
                async move { pipe.query_async(&mut conn).await }
            })
            .await
            .map_err(|e| self.failed(e))
    }

    /// Sends `cmds` (logins, logouts, revocations) and, with durable writes, waits in the same
    /// round trip until one replica has them. Answers the commands' replies.
    async fn run_durable(&self, cmds: Vec<Cmd>) -> Result<Vec<Value>, StoreError> {
        self.run_durable_with(cmds, Resend::IfDropped).await
    }

    /// [`RedisStore::run_durable`], sent again after a dropped link only if `resend` says so.
    async fn run_durable_with(
        &self,
        cmds: Vec<Cmd>,
        resend: Resend,
    ) -> Result<Vec<Value>, StoreError> {
        let Some(timeout) = self.durable else {
            return self.run_each(cmds, resend).await?.into_iter().collect();
        };
        let mut wait = redis::cmd("WAIT");
        wait.arg(1)
            .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        // One WAIT at the end covers the connection's earlier writes; on a cluster each
        // command may reach another node, so each gets its own.
        let count = cmds.len();
        let mut sent = Vec::with_capacity(count * 2);
        for (i, cmd) in cmds.into_iter().enumerate() {
            sent.push(cmd);
            if self.conn.is_cluster() || i + 1 == count {
                sent.push(wait.clone());
            }
        }
        let waits: Vec<bool> = sent.iter().map(is_wait).collect();
        let mut out = Vec::with_capacity(count);
        let replies: Vec<Value> = self
            .run_each(sent, resend)
            .await?
            .into_iter()
            .collect::<Result<_, _>>()?;
        for (reply, was_wait) in replies.into_iter().zip(waits) {
            match (was_wait, reply) {
                (false, reply) => out.push(reply),
                (true, Value::Int(n)) if n >= 1 => {}
                (true, _) => return Err(StoreError::unavailable(crate::NotReplicated(timeout))),
            }
        }
        Ok(out)
    }

    /// Sends one command that may run twice; a forgotten script is loaded and the command
    /// sent again, and so is a command whose link dropped.
    async fn one(&self, cmd: Cmd) -> Result<Value, StoreError> {
        self.one_with(cmd, Resend::IfDropped).await
    }

    /// Sends one command that must not run twice (it adds): never sent again after a dropped
    /// link, whose fate is unknown.
    async fn one_once(&self, cmd: Cmd) -> Result<Value, StoreError> {
        self.one_with(cmd, Resend::Never).await
    }

    async fn one_with(&self, cmd: Cmd, resend: Resend) -> Result<Value, StoreError> {
        let send = |mut conn: RedisConnection| {
            let cmd = &cmd;
            async move { cmd.query_async(&mut conn).await }
        };
        match resend.send(&self.conn, send).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.load_scripts().await.map_err(|e| self.failed(e))?;
                resend
                    .send(&self.conn, send)
                    .await
                    .map_err(|e| self.failed(e))
            }
            reply => reply.map_err(|e| self.failed(e)),
        }
    }

    /// What `key` holds, by plain HGETALL: the cheapest read Redis has (a script call costs
    /// about twice as much server time as the command it runs). With the read cache, a
    /// session read before and unchanged since costs nothing.
    async fn read(&self, key: &SessionKey) -> Result<Stored, StoreError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.keys.session(key));
        let Some(cache) = &self.cache else {
            return stored_from_flat(array(self.one(cmd).await?)?);
        };
        cache.follow(&self.conn).await;
        if let Some(record) = cache.state.get(key) {
            return Ok(Stored::Session(record));
        }
        if cache.ensure_tracking().await.is_err() {
            // Tracking cannot be switched on now: read strictly, cache nothing.
            return stored_from_flat(array(self.one(cmd).await?)?);
        }
        let ticket = cache.state.ticket();
        let reply = Resend::IfDropped
            .send(&cache.conn, |mut conn| {
                let cmd = &cmd;
                async move { cmd.query_async::<Value>(&mut conn).await }
            })
            .await
            .map_err(|e| self.failed(e))?;
        let stored = stored_from_flat(array(reply)?)?;
        if let Stored::Session(record) = &stored {
            cache.state.insert(*key, record.clone(), ticket);
        }
        Ok(stored)
    }

    /// EVALSHA of a session script on `key` (with the live-count key beside it).
    fn session_script(&self, script: Lua, key: &SessionKey, args: &[String]) -> Cmd {
        evalsha(script, &[self.keys.session(key), self.keys.live(key)], args)
    }

    /// Changes `user`'s index entry: files `add`, drops `drop` (for `create` and listing; the
    /// write scripts keep the index themselves).
    fn index_cmd(&self, user: &str, add: Option<&SessionKey>, drop: &[SessionKey]) -> Cmd {
        let mut args = vec![
            self.keys.prune_prefix().to_owned(),
            user.to_owned(),
            add.map(ToString::to_string).unwrap_or_default(),
        ];
        args.extend(drop.iter().map(ToString::to_string));
        evalsha(Lua::Index, &[self.keys.user_bucket(user)], &args)
    }

    async fn load_once(
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

    /// Files `record` under `key`.
    fn create_cmd(&self, key: &SessionKey, record: &Record, now: Millis) -> Cmd {
        let mut args = vec![now.to_string(), record.expires_at().to_string()];
        args.extend(record_fields(record));
        self.session_script(Lua::Create, key, &args)
    }
}

/// Whether a command may be sent again on a fresh connection when its link dropped (a proxy's
/// idle timeout, `CLIENT KILL`, a network blip, a managed service's maintenance): the first
/// request after such a drop fails at once, though the command most likely never reached
/// Redis. Whether it did cannot be told, so only a command that may run twice is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// Reads, logouts, and writes that set or remove fields: running twice does no harm.
    IfDropped,
    /// Increments and compare-and-sets (they add or check), login cycles and logged-in
    /// creates: an unknown fate is reported, never doubled.
    Never,
}

impl Resend {
    /// For a change: sent again only if it neither adds nor compares.
    fn for_changes(changes: &Changes) -> Self {
        if changes.increments.is_empty() && changes.expect.is_empty() {
            Self::IfDropped
        } else {
            Self::Never
        }
    }

    /// Runs `send` on `conn`, and once more (on the connection the link has by then
    /// replaced) if it failed because the link dropped and this kind may be sent again.
    async fn send<T, F, Fut>(self, conn: &RedisConnection, send: F) -> redis::RedisResult<T>
    where
        F: Fn(RedisConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match send(conn.clone()).await {
            Err(e) if self == Self::IfDropped && dropped(&e) => {
                tracing::debug!(error = %e, "Redis link dropped; sending the command again");
                send(conn.clone()).await
            }
            reply => reply,
        }
    }
}

/// Whether a store error is a dropped link (see [`dropped`]).
fn link_dropped(e: &StoreError) -> bool {
    match e {
        StoreError::Unavailable(source) => source
            .downcast_ref::<redis::RedisError>()
            .is_some_and(dropped),
        _ => false,
    }
}

/// A connection that dropped under the command (not a timeout: a slow server is not retried
/// into a slower one).
fn dropped(e: &redis::RedisError) -> bool {
    e.is_connection_dropped() && !e.is_timeout()
}

fn is_wait(cmd: &Cmd) -> bool {
    matches!(cmd.args_iter().next(), Some(redis::Arg::Simple(name)) if name == b"WAIT")
}

impl RedisStore {
    async fn destroy_once(&self, key: &SessionKey) -> Result<Vec<Value>, StoreError> {
        self.writing(
            &[*key],
            self.run_durable_with(vec![self.destroy_cmd(key)], Resend::Never),
        )
        .await
    }

    fn destroy_cmd(&self, key: &SessionKey) -> Cmd {
        self.session_script(Lua::Destroy, key, &[self.keys.session_prefix(key)])
    }

    /// On a cluster, before a write that files the session at `key` (or at `new`, for a
    /// cycle) under a user: adds that key to the user's index first, so that a revocation
    /// listing the user while the write lands finds it. Answers the user, for
    /// [`RedisStore::file_after`]. Standalone, the scripts keep the index and this is a no-op.
    ///
    /// The user is the one `changes` sets, else (a cycle) the old session's own, read here.
    async fn file_before(
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
                meta.arg(self.keys.session(key)).arg("__m");
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
    async fn file_after(
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

fn evalsha(script: Lua, keys: &[String], args: &[String]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.hash()).arg(keys.len()).arg(keys).arg(args);
    cmd
}

/// Appends `changes` to `args` in the layout `apply_to` reads (the header of
/// `lua/apply_fn.lua` documents it; the tests in `tests/redis_store.rs` hold the two together).
fn write_args(args: &mut Vec<String>, changes: &Changes) {
    let (op, user) = match &changes.user {
        None => ("", String::new()),
        Some(UserChange::Set(user)) => ("s", user.clone()),
        Some(UserChange::Clear) => ("c", String::new()),
    };
    let limit = |f: fn(&cloakroom::Limits) -> usize| {
        changes
            .limits
            .as_ref()
            .map(|l| f(l).to_string())
            .unwrap_or_default()
    };
    args.extend([
        if changes.clear { "1" } else { "0" }.into(),
        op.into(),
        user,
        changes
            .idle_deadline
            .map(|d| d.to_string())
            .unwrap_or_default(),
        limit(|l| l.max_fields),
        limit(|l| l.max_bytes),
        changes
            .absolute_deadline
            .map(|d| d.to_string())
            .unwrap_or_default(),
        changes.remove.len().to_string(),
    ]);
    args.extend(changes.remove.iter().cloned());
    args.push(changes.set.len().to_string());
    for (k, v) in &changes.set {
        args.push(k.clone());
        args.push(v.clone());
    }
    args.push(changes.increments.len().to_string());
    for (k, by) in &changes.increments {
        args.push(k.clone());
        args.push(by.to_string());
    }
    args.push(changes.expect.len().to_string());
    for (k, expected) in &changes.expect {
        args.push(k.clone());
        match expected {
            Some(text) => args.extend(["1".to_owned(), text.clone()]),
            None => args.extend(["0".to_owned(), String::new()]),
        }
    }
}

impl RedisStore {
    /// A simple change as one `MULTI … EXEC` (see `fast.rs` for why it keeps the guarantees).
    async fn apply_without_script(
        &self,
        key: &SessionKey,
        changes: &Changes,
        now: Millis,
    ) -> Result<Applied, StoreError> {
        let pipe = fast::transaction(&self.keys.session(key), changes);
        // With the read cache, the write goes on the tracking connection (NOLOOP) and its
        // effect is applied to the cached record: a stream of writes keeps the record cached,
        // and so keeps taking this path, instead of dropping it at every write.
        let outcome = match self.cache.as_ref().filter(|c| c.state.is_tracking()) {
            Some(cache) => {
                let ticket = cache.state.ticket();
                let guard = ForgetUnlessDone::new(&cache.state, *key);
                let replies: Result<Vec<Value>, _> = Resend::for_changes(changes)
                    .send(&cache.conn, |mut conn| {
                        let pipe = &pipe;
                        async move { pipe.query_async(&mut conn).await }
                    })
                    .await;
                let outcome = replies
                    .map_err(|e| self.failed(e))
                    .map(|r| fast::outcome(r, changes, now, *key));
                match &outcome {
                    Ok(fast::Outcome::Applied(Applied::Done { .. })) => {
                        let fields = |record: &mut Record| fast::apply_to_cached(record, changes);
                        let patch = match changes.increments.iter().next() {
                            Some((field, by)) => Patch::Step(field, *by),
                            None => Patch::Fields(&fields),
                        };
                        cache.state.patch(key, ticket, patch);
                    }
                    _ => cache.state.invalidate(key),
                }
                guard.disarm();
                outcome?
            }
            None => {
                let replies: Result<Vec<Value>, redis::RedisError> = self
                    .writing(
                        &[*key],
                        Resend::for_changes(changes).send(&self.conn, |mut conn| {
                            let pipe = &pipe;
                            async move { pipe.query_async(&mut conn).await }
                        }),
                    )
                    .await;
                match replies {
                    // A transaction refused whole ran nothing. On a cluster that is a slot
                    // on the move (redis-rs follows ASK for a command, not a transaction):
                    // the script, one command, makes the same change and is redirected.
                    Err(e)
                        if self.keys.is_cluster()
                            && e.kind() == ErrorKind::Server(ServerErrorKind::ExecAbort) =>
                    {
                        return self.apply_with_script(key, changes, now).await;
                    }
                    replies => {
                        fast::outcome(replies.map_err(|e| self.failed(e))?, changes, now, *key)
                    }
                }
            }
        };
        match outcome {
            fast::Outcome::Applied(applied) => Ok(applied),
            fast::Outcome::Failed(error) => Err(error),
            fast::Outcome::Overflowed { field, by } => {
                // Past the range every store keeps: take the step back (a second round trip,
                // only here) and refuse it, as the script and the other stores do.
                let mut undo = redis::cmd("HINCRBY");
                undo.arg(self.keys.session(key)).arg(&field).arg(-by);
                self.writing(&[*key], self.one_once(undo)).await?;
                Err(StoreError::NotAnInteger(field))
            }
        }
    }
}

impl RedisStore {
    /// Any change, by the `apply` script.
    async fn apply_with_script(
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

/// What a write script's reply means for the caller.
fn written(reply: Reply, key: SessionKey) -> Result<Applied, StoreError> {
    match reply {
        Reply::Gone => Ok(Applied::Gone),
        // Old IDs are read-only: a write through one is refused, never followed.
        Reply::Alias(_) => Ok(Applied::Aliased),
        Reply::Tagged(tag, rest) if tag == "ok" => Ok(Applied::Done {
            counters: counters(rest)?,
            key,
        }),
        Reply::Tagged(tag, rest) if tag == "conflict" => {
            let field = rest.into_iter().next().map(text).transpose()?;
            Err(StoreError::Conflict(field.unwrap_or_default()))
        }
        Reply::Tagged(tag, rest) if tag == "limit" => {
            let which = rest.into_iter().next().map(text).transpose()?;
            Err(StoreError::LimitExceeded(match which.as_deref() {
                Some("fields") => Limit::Fields,
                _ => Limit::Bytes,
            }))
        }
        Reply::Tagged(..) => Err(StoreError::Corrupt("unexpected reply to a write".into())),
    }
}

fn loaded(key: SessionKey, tag: &str, rest: Vec<Value>) -> Result<Loaded, StoreError> {
    let flat = array(rest.into_iter().next().unwrap_or(Value::Nil))?;
    Ok(Loaded {
        record: record_from_flat(flat)?,
        key,
        refreshed: tag == "refreshed",
    })
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
        let decode = |replies: Vec<Value>| {
            Ok::<_, StoreError>(
                match Reply::decode(replies.into_iter().next().unwrap_or(Value::Nil))? {
                    Reply::Alias(_) => Destroyed::Alias,
                    Reply::Gone => Destroyed::Nothing,
                    Reply::Tagged(..) => Destroyed::Session,
                },
            )
        };
        // Sent again after a dropped link (a logout must not fail for a blip), but a second
        // run that finds nothing cannot tell "the first deleted a session" from "the first
        // deleted an old ID's alias" (whose logout must be refused): that one answer is
        // reported as the failure it follows.
        match self.destroy_once(key).await {
            Err(first) if link_dropped(&first) => match decode(self.destroy_once(key).await?)? {
                Destroyed::Nothing => Err(first),
                destroyed => Ok(destroyed),
            },
            replies => decode(replies?),
        }
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
        let listed = self.list_user(user, now).await?;
        // Listed first, resolved second: a renewal of `keep` the listing saw is the caller's
        // session too; one after it is not in the listing.
        let spared = match keep {
            Some(k) => self.load(k, now, None).await?.map(|l| l.key),
            None => None,
        };
        let doomed: Vec<SessionKey> = listed
            .into_iter()
            .map(|s| s.key)
            .filter(|k| Some(k) != keep && Some(k) != spared.as_ref())
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        let mut cmds: Vec<Cmd> = doomed.iter().map(|k| self.destroy_cmd(k)).collect();
        cmds.push(self.index_cmd(user, None, &doomed));
        // Never sent twice: a second run could not tell which aliases the first one followed.
        let replies = self
            .writing(&doomed, self.run_durable_with(cmds, Resend::Never))
            .await?;
        // A key that became an alias since the listing was cycled meanwhile (on a cluster
        // the index learns the new key a moment after the cycle): its target goes too.
        let moved: Vec<SessionKey> = replies
            .into_iter()
            .filter_map(|r| match Reply::decode(r) {
                Ok(Reply::Alias(target)) => Some(target),
                _ => None,
            })
            .filter(|k| Some(k) != keep && Some(k) != spared.as_ref())
            .collect();
        if !moved.is_empty() {
            let cmds = moved.iter().map(|k| self.destroy_cmd(k)).collect();
            self.writing(&moved, self.run_durable(cmds)).await?;
        }
        Ok((doomed.len() + moved.len()) as u64)
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

    async fn ping(&self) -> Result<(), StoreError> {
        self.one(redis::cmd("PING")).await.map(|_| ())
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
