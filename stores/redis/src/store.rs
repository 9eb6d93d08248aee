//! `SessionStore` on Redis: one script per operation, one round trip per request.

use std::time::Duration;

use async_trait::async_trait;
use cloakroom::{
    now_millis, Applied, Changes, Loaded, Millis, Record, Refresh, SessionKey, SessionStore,
    StoreError, StoreStats, UserChange, UserSession,
};
use redis::aio::ConnectionManager;
use redis::{Cmd, ErrorKind, ServerErrorKind, Value};

use crate::codec::{
    array, counters, record_fields, record_from_flat, stored_from_flat, text, Reply, Stored,
};
use crate::config::RedisConfig;
use crate::error::RedisError;
use crate::keys::Keys;
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
    conn: ConnectionManager,
    keys: Keys,
    response_timeout: Duration,
}

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
        let store = Self {
            conn,
            keys,
            response_timeout: config.response_timeout,
        };
        store.load_scripts().await.map_err(RedisError::Connect)?;
        Ok(store)
    }

    /// The underlying connection, for data that lives beside the sessions (the reference
    /// app keeps its todo lists there).
    #[must_use]
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The Redis key that holds the session `key` (for operators and tests).
    #[must_use]
    pub fn key_name(&self, key: &SessionKey) -> String {
        self.keys.session(key)
    }

    async fn load_scripts(&self) -> Result<(), redis::RedisError> {
        let mut pipe = redis::pipe();
        for source in scripts::sources() {
            pipe.cmd("SCRIPT").arg("LOAD").arg(*source).ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await
    }

    fn failed(&self, error: redis::RedisError) -> StoreError {
        if error.is_timeout() {
            StoreError::Timeout(self.response_timeout)
        } else if error.code() == Some("WRONGTYPE") {
            StoreError::Corrupt("a session key holds something other than a hash".into())
        } else {
            StoreError::unavailable(error)
        }
    }

    /// Sends `cmds` as one pipeline (one round trip); the first failed command fails the call.
    async fn run(&self, cmds: Vec<Cmd>) -> Result<Vec<Value>, StoreError> {
        self.run_each(cmds).await?.into_iter().collect()
    }

    /// Sends `cmds` as one pipeline and answers each command's outcome. Scripts the server has
    /// forgotten (after a restart) are loaded and just those commands sent again: they did not
    /// run the first time.
    async fn run_each(&self, cmds: Vec<Cmd>) -> Result<Vec<Result<Value, StoreError>>, StoreError> {
        let mut replies = self.send(&cmds).await?;
        let forgotten: Vec<usize> = replies
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                matches!(r, Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript))
            })
            .map(|(i, _)| i)
            .collect();
        if !forgotten.is_empty() {
            self.load_scripts().await.map_err(|e| self.failed(e))?;
            let again = self
                .send(
                    &forgotten
                        .iter()
                        .map(|&i| cmds[i].clone())
                        .collect::<Vec<_>>(),
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

    async fn send(&self, cmds: &[Cmd]) -> Result<Vec<redis::RedisResult<Value>>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for cmd in cmds {
            pipe.add_command(cmd.clone());
        }
        pipe.query_async(&mut self.conn.clone())
            .await
            .map_err(|e| self.failed(e))
    }

    /// Sends one command; a forgotten script is loaded and the command sent again.
    async fn one(&self, cmd: Cmd) -> Result<Value, StoreError> {
        match cmd.query_async(&mut self.conn.clone()).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.load_scripts().await.map_err(|e| self.failed(e))?;
                cmd.query_async(&mut self.conn.clone())
                    .await
                    .map_err(|e| self.failed(e))
            }
            reply => reply.map_err(|e| self.failed(e)),
        }
    }

    /// What `key` holds, by plain HGETALL: the cheapest read Redis has (a script call costs
    /// about twice as much server time as the command it runs).
    async fn read(&self, key: &SessionKey) -> Result<Stored, StoreError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.keys.session(key));
        stored_from_flat(array(self.one(cmd).await?)?)
    }

    /// EVALSHA of a session script on `key` (with the live-count key beside it).
    fn session_script(&self, script: Lua, key: &SessionKey, args: &[String]) -> Cmd {
        evalsha(script, &[self.keys.session(key), self.keys.live()], args)
    }

    fn index_cmd(&self, user: &str, now: Millis, op: IndexOp, key: &SessionKey) -> Cmd {
        let (op, score) = match op {
            IndexOp::Add(score) => ("add", score.to_string()),
            IndexOp::Remove => ("rem", String::new()),
        };
        evalsha(
            Lua::Index,
            &[self.keys.user(user)],
            &[now.to_string(), op.into(), key.to_string(), score],
        )
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

    async fn apply_once(
        &self,
        key: &SessionKey,
        changes: &Changes,
        now: Millis,
    ) -> Result<Reply, StoreError> {
        let reply = self
            .one(self.session_script(Lua::Apply, key, &apply_args(changes, now)))
            .await?;
        Reply::decode(reply)
    }

    /// Files `record` under `key`; `reclaim` lets it replace an alias pointing there.
    fn create_cmd(
        &self,
        key: &SessionKey,
        record: &Record,
        now: Millis,
        reclaim: Option<&SessionKey>,
    ) -> Cmd {
        let mut args = vec![
            now.to_string(),
            record.expires_at().to_string(),
            reclaim.map(ToString::to_string).unwrap_or_default(),
        ];
        args.extend(record_fields(record));
        self.session_script(Lua::Create, key, &args)
    }

    /// Index commands for a session whose owner went from `before` to `after`.
    fn reindex(
        &self,
        key: &SessionKey,
        before: Option<(&str, &SessionKey)>,
        after: Option<&str>,
        absolute: Millis,
        now: Millis,
    ) -> Vec<Cmd> {
        let mut cmds = Vec::new();
        if let Some((user, old_key)) = before {
            if Some(user) != after || old_key != key {
                cmds.push(self.index_cmd(user, now, IndexOp::Remove, old_key));
            }
        }
        if let Some(user) = after {
            if before != Some((user, key)) {
                cmds.push(self.index_cmd(user, now, IndexOp::Add(absolute), key));
            }
        }
        cmds
    }
}

enum IndexOp {
    Add(Millis),
    Remove,
}

fn evalsha(script: Lua, keys: &[String], args: &[String]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.hash()).arg(keys.len()).arg(keys).arg(args);
    cmd
}

fn apply_args(changes: &Changes, now: Millis) -> Vec<String> {
    let (op, user) = match &changes.user {
        None => ("", String::new()),
        Some(UserChange::Set(user)) => ("s", user.clone()),
        Some(UserChange::Clear) => ("c", String::new()),
    };
    let mut args = vec![
        now.to_string(),
        if changes.clear { "1" } else { "0" }.into(),
        op.into(),
        user,
        changes
            .idle_deadline
            .map(|d| d.to_string())
            .unwrap_or_default(),
        changes.remove.len().to_string(),
    ];
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
    args
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
        match refresh {
            // Due at most once per refresh interval: the load script re-checks and slides
            // the deadline atomically, so concurrent refreshes cannot revive a dead session.
            Some(r) if record.idle_deadline < r.if_deadline_before => {
                match self.load_once(&target, now, refresh).await? {
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
        let mut cmds = vec![self.create_cmd(key, record, now, None)];
        // One round trip: the index entry rides in the same pipeline. Should the create
        // collide, the entry names a live session that is not this user's, and listing
        // checks every entry against its session's owner.
        cmds.extend(self.reindex(
            key,
            None,
            record.user.as_deref(),
            record.absolute_deadline,
            now,
        ));
        let replies = self.run(cmds).await?;
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
        let (target, reply) = match self.apply_once(key, changes, now).await? {
            Reply::Alias(target) => (target, self.apply_once(&target, changes, now).await?),
            reply => (*key, reply),
        };
        let Reply::Tagged(_, rest) = reply else {
            return Ok(Applied::Gone);
        };
        let mut rest = rest.into_iter();
        // Only a user change brings the user before and the absolute deadline: it re-indexes.
        let owner = match changes.user {
            Some(_) => {
                let before = text(rest.next().unwrap_or(Value::Nil))?;
                let absolute: Millis = text(rest.next().unwrap_or(Value::Nil))?
                    .parse()
                    .map_err(|_| StoreError::Corrupt("absolute deadline is not a number".into()))?;
                Some((before, absolute))
            }
            None => None,
        };
        let counters = counters(rest.collect())?;
        if let Some((before, absolute)) = owner {
            let before = Some(before.as_str()).filter(|u| !u.is_empty());
            let after = changes.user_after(before);
            let cmds = self.reindex(&target, before.map(|u| (u, &target)), after, absolute, now);
            if !cmds.is_empty() {
                self.run(cmds).await?;
            }
        }
        Ok(Applied::Done {
            counters,
            key: target,
        })
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
        let args = [now.to_string(), new.to_string(), grace_until.to_string()];
        let args = &args;
        let take = |k: SessionKey| async move {
            let reply = self.one(self.session_script(Lua::Move, &k, args)).await?;
            Reply::decode(reply)
        };
        let (source, reply) = match take(*old).await? {
            Reply::Alias(target) => (target, take(target).await?),
            reply => (*old, reply),
        };
        let Reply::Tagged(_, rest) = reply else {
            return Ok(Applied::Gone);
        };
        let before = loaded(source, "ok", rest)?.record;
        // From here the old key is only an alias: whatever stops the new key from being filed
        // must put the session back under the old one (best effort: in an outage that fails
        // too, and the pre-login session is lost; see docs/redis-data-model.md).
        let restore = || async {
            let put_back = self.create_cmd(&source, &before, now, Some(new));
            if let Err(e) = self.one(put_back).await {
                tracing::warn!(error = %e, "could not restore a session after a failed cycle");
            }
        };
        let mut record = before.clone();
        let counters = match record.apply(changes) {
            Ok(counters) => counters,
            Err(error) => {
                restore().await;
                return Err(error);
            }
        };
        let mut cmds = vec![self.create_cmd(new, &record, now, None)];
        cmds.extend(self.reindex(
            new,
            before.user.as_deref().map(|u| (u, &source)),
            record.user.as_deref(),
            record.absolute_deadline,
            now,
        ));
        let filed = match self.run_each(cmds).await {
            Ok(replies) => {
                let mut replies = replies.into_iter();
                let created = replies
                    .next()
                    .unwrap_or(Ok(Value::Nil))
                    .and_then(Reply::decode);
                if let Some(Err(e)) = replies.find(Result::is_err) {
                    // The session is filed; only listing by user will miss it until it ends.
                    tracing::warn!(error = %e, "per-user index not updated after a cycle");
                }
                match created {
                    Ok(Reply::Tagged(tag, _)) if tag == "ok" => Ok(()),
                    Ok(Reply::Tagged(tag, _)) if tag == "collision" => Err(StoreError::IdCollision),
                    Ok(_) => Err(StoreError::Corrupt("unexpected reply to cycle".into())),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match filed {
            Ok(()) => Ok(Applied::Done {
                counters,
                key: *new,
            }),
            Err(error) => {
                restore().await;
                Err(error)
            }
        }
    }

    async fn destroy(&self, key: &SessionKey) -> Result<(), StoreError> {
        // The user index is not touched: listing drops entries whose session is gone, which
        // keeps logout at one round trip.
        let reply = self
            .one(self.session_script(Lua::Destroy, key, &[]))
            .await?;
        if let Reply::Alias(target) = Reply::decode(reply)? {
            self.one(self.session_script(Lua::Destroy, &target, &[]))
                .await?;
        }
        Ok(())
    }

    async fn list_user(&self, user: &str, now: Millis) -> Result<Vec<UserSession>, StoreError> {
        let index = self.keys.user(user);
        let mut prune = redis::cmd("ZREMRANGEBYSCORE");
        prune.arg(&index).arg("-inf").arg(now);
        let mut range = redis::cmd("ZRANGE");
        range.arg(&index).arg(0).arg(-1);
        let replies = self.run(vec![prune, range]).await?;
        let members: Vec<SessionKey> = array(replies.into_iter().nth(1).unwrap_or(Value::Nil))?
            .into_iter()
            .filter_map(|m| text(m).ok())
            .filter_map(|m| SessionKey::parse(&m))
            .collect();
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
        let mut stale = redis::cmd("ZREM");
        stale.arg(&index);
        let mut any_stale = false;
        for (key, reply) in members.into_iter().zip(self.run(reads).await?) {
            let record = array(reply)
                .ok()
                .and_then(|flat| record_from_flat(flat).ok());
            match record {
                Some(record) if record.is_alive(now) && record.user.as_deref() == Some(user) => {
                    live.push(UserSession { key, record });
                }
                _ => {
                    stale.arg(key.to_string());
                    any_stale = true;
                }
            }
        }
        if any_stale {
            self.one(stale).await?;
        }
        Ok(live)
    }

    async fn destroy_user(
        &self,
        user: &str,
        keep: Option<&SessionKey>,
        now: Millis,
    ) -> Result<u64, StoreError> {
        let doomed: Vec<SessionKey> = self
            .list_user(user, now)
            .await?
            .into_iter()
            .map(|s| s.key)
            .filter(|k| Some(k) != keep)
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        let mut cmds: Vec<Cmd> = doomed
            .iter()
            .map(|k| self.session_script(Lua::Destroy, k, &[]))
            .collect();
        let mut unindex = redis::cmd("ZREM");
        unindex.arg(self.keys.user(user));
        for key in &doomed {
            unindex.arg(key.to_string());
        }
        cmds.push(unindex);
        self.run(cmds).await?;
        Ok(doomed.len() as u64)
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut all = redis::cmd("HGETALL");
        all.arg(self.keys.live());
        let flat = array(self.one(all).await?)?;
        let current = now_millis() / BUCKET_MS;
        let (mut sessions, mut past) = (0u64, Vec::new());
        let mut items = flat.into_iter();
        while let (Some(bucket), Some(count)) = (items.next(), items.next()) {
            let bucket = text(bucket)?;
            let count: i64 = text(count)?.parse().unwrap_or(0);
            match bucket.parse::<u64>() {
                Ok(b) if b >= current => sessions += u64::try_from(count).unwrap_or(0),
                _ => past.push(bucket),
            }
        }
        if !past.is_empty() {
            let mut drop = redis::cmd("HDEL");
            drop.arg(self.keys.live()).arg(past);
            self.one(drop).await?;
        }
        Ok(StoreStats {
            sessions,
            bytes: None,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.one(redis::cmd("PING")).await.map(|_| ())
    }
}
