//! The store contract on PostgreSQL.
//!
//! Reads are one statement. A write locks the session's row (`SELECT … FOR UPDATE`), applies
//! the change in Rust with the same [`Record::apply`] every other store uses (so counters,
//! limits and compare-and-set mean the same everywhere), and writes the row back: two round
//! trips, because each pair of statements is pipelined. Concurrent writes to one session
//! queue on its row lock instead of retrying.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use cloakroom::events::EndReason;
use cloakroom::{
    now_millis, Applied, Changes, Destroyed, Ended, HeardEnded, Loaded, Millis, Record, Refresh,
    SessionKey, SessionStore, StoreError, StoreStats, UserSession,
};
use deadpool_postgres::Pool;
use tokio_postgres::types::ToSql;

/// One statement parameter.
type Param<'a> = &'a (dyn ToSql + Sync);

use crate::config::{libpq_ssl_modes, valid_schema, PostgresConfig};
use crate::error::PostgresError;
use crate::row::{alive, backend, collision_or_backend, fields_text, int, record};
use crate::sql::{self, Statements};
use crate::tx::Conn;

/// The PostgreSQL session store. Cheap to clone; clones share one connection pool.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    sql: Statements,
    schema: String,
    purge: Option<tokio::task::AbortHandle>,
    /// What the listener heard other instances end.
    ended: Arc<HeardEnded>,
    listener: Option<tokio::task::AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(purge) = &self.purge {
            purge.abort();
        }
        if let Some(listener) = &self.listener {
            listener.abort();
        }
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects, creates the schema and tables if missing, and starts the expiry purge.
    ///
    /// # Errors
    /// [`PostgresError`] if the URL or schema name is malformed, the server cannot be
    /// reached, or the tables cannot be set up.
    pub async fn connect(config: PostgresConfig) -> Result<Self, PostgresError> {
        if !valid_schema(&config.schema) {
            return Err(PostgresError::Schema(config.schema));
        }
        let mut pg: tokio_postgres::Config = libpq_ssl_modes(&config.url)
            .parse()
            .map_err(PostgresError::Url)?;
        pg.connect_timeout(config.connect_timeout);
        if pg.get_application_name().is_none() {
            pg.application_name("cloakroom");
        }
        let tls = crate::tls::connector(config.ca_certificate.as_deref())?;
        let listen_with = (pg.clone(), tls.clone());
        let manager = deadpool_postgres::Manager::from_config(
            pg,
            tls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(config.connect_timeout))
            .create_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| PostgresError::Connect(Box::new(e)))?;
        Self::start(pool, config, Some(listen_with)).await
    }

    /// A store on the app's own connection pool: every statement goes through `pool`, and
    /// `config` gives the schema, timeouts and purge (its pool size is the pool's business).
    /// The one extra connection that `LISTEN`s for other instances' logouts is opened from
    /// `config`'s URL when it has one (a pool does not reveal its settings); with an empty
    /// URL this instance honours only the logouts it made itself during an outage.
    ///
    /// # Errors
    /// [`PostgresError`] if the schema name or the URL is malformed, the pool cannot give a
    /// connection, or the tables cannot be set up.
    pub async fn from_pool(pool: Pool, config: PostgresConfig) -> Result<Self, PostgresError> {
        if !valid_schema(&config.schema) {
            return Err(PostgresError::Schema(config.schema));
        }
        let listen_with = if config.url.is_empty() {
            tracing::warn!(
                "PostgresStore::from_pool without a URL: other instances' logouts are not heard"
            );
            None
        } else {
            let mut pg: tokio_postgres::Config = libpq_ssl_modes(&config.url)
                .parse()
                .map_err(PostgresError::Url)?;
            pg.connect_timeout(config.connect_timeout);
            let tls = crate::tls::connector(config.ca_certificate.as_deref())?;
            Some((pg, tls))
        };
        Self::start(pool, config, listen_with).await
    }

    /// Sets up the schema through `pool`, then starts the purge and the listener.
    async fn start(
        pool: Pool,
        config: PostgresConfig,
        listen_with: Option<(
            tokio_postgres::Config,
            tokio_postgres_rustls::MakeRustlsConnect,
        )>,
    ) -> Result<Self, PostgresError> {
        let client = pool
            .get()
            .await
            .map_err(|e| PostgresError::Connect(Box::new(e)))?;
        client
            .batch_execute(&sql::setup(&config.schema))
            .await
            .map_err(|e| PostgresError::Setup(e.to_string()))?;
        let sql = Statements::new(&config.schema);
        let layout: Option<i32> = client
            .query_one(sql.layout.as_str(), &[])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|e| PostgresError::Setup(e.to_string()))?;
        if layout.unwrap_or(0) > sql::LAYOUT {
            return Err(PostgresError::Setup(format!(
                "schema {} has layout {}, newer than this version's {}; upgrade cloakroom-postgres",
                config.schema,
                layout.unwrap_or(0),
                sql::LAYOUT
            )));
        }
        drop(client);
        let ended = Arc::new(HeardEnded::default());
        let listener = listen_with.map(|(pg, tls)| {
            let (ready, listening) = tokio::sync::oneshot::channel();
            let task = tokio::spawn(crate::ended::listen(
                pg,
                tls,
                config.schema.clone(),
                ended.clone(),
                ready,
            ));
            (task.abort_handle(), listening)
        });
        let listener = match listener {
            Some((task, listening)) => {
                // A store returned from here hears every end from now on (bounded: a
                // listener that cannot connect keeps trying in the background, and says so).
                let _ = tokio::time::timeout(config.connect_timeout, listening).await;
                Some(task)
            }
            None => None,
        };
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| Inner {
            purge: config
                .purge_every
                .map(|every| tokio::spawn(purge_loop(weak.clone(), every)).abort_handle()),
            pool,
            sql,
            schema: config.schema,
            ended,
            listener,
        });
        Ok(Self { inner })
    }

    /// The connection pool, for an app's own tables beside the sessions (the reference app
    /// keeps its todo lists there).
    #[must_use]
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The schema the tables live in.
    #[must_use]
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// Deletes expired sessions and aliases now (the store also does this every
    /// [`PostgresConfig::with_purge_every`]); returns how many sessions went. Deletes in
    /// batches of 1,000 so that no statement holds many locks for long.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the server fails.
    pub async fn purge_expired(&self, now: Millis) -> Result<u64, StoreError> {
        let conn = Conn::get(&self.inner.pool).await?;
        let (c, sql) = (conn.client(), &self.inner.sql);
        let mut purged = 0;
        // Bounded: a million expired sessions take a thousand batches.
        for _ in 0..10_000 {
            let row = c
                .query_one(sql.purge_sessions.as_str(), &[&int(now)])
                .await
                .map_err(backend)?;
            let n: i64 = row.try_get(0).map_err(backend)?;
            purged += u64::try_from(n).unwrap_or(0);
            if n < 1000 {
                break;
            }
        }
        c.execute(sql.purge_aliases.as_str(), &[&int(now)])
            .await
            .map_err(backend)?;
        c.execute(sql.purge_ended.as_str(), &[&int(now)])
            .await
            .map_err(backend)?;
        Ok(purged)
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        Conn::get(&self.inner.pool).await
    }

    /// Ends the transaction with `ROLLBACK`, pipelined after `also` (a last read).
    async fn rollback_after<T>(
        &self,
        conn: &Conn,
        also: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        let rollback = conn
            .object()
            .prepare_cached("ROLLBACK")
            .await
            .map_err(backend)?;
        let (value, _) =
            tokio::try_join!(also, conn.client().execute(&rollback, &[])).map_err(backend)?;
        conn.ended();
        Ok(value)
    }

    async fn rollback(&self, conn: &Conn) -> Result<(), StoreError> {
        self.rollback_after(conn, async { Ok(()) }).await
    }

    /// `apply` (`renamed` is `None`) and `cycle` (the new key and the end of the old one's
    /// grace window): lock the row, apply `changes` in Rust, write the row back, and with a
    /// new key move the row to it and leave an alias while the grace window lasts. Two round
    /// trips: `[BEGIN, (new key taken?), old key an alias?, SELECT … FOR UPDATE]`, then
    /// `[UPDATE, (alias), COMMIT]`.
    async fn write(
        &self,
        key: &SessionKey,
        renamed: Option<(&SessionKey, Millis)>,
        changes: &Changes,
        now: Millis,
    ) -> Result<Applied, StoreError> {
        let conn = self.conn().await?;
        let sql = &self.inner.sql;
        let c = conn.object();
        let begin = c.prepare_cached("BEGIN").await.map_err(backend)?;
        let is_alias = c.prepare_cached(&sql.is_alias).await.map_err(backend)?;
        let taken = c.prepare_cached(&sql.taken).await.map_err(backend)?;
        let lock = c.prepare_cached(&sql.lock).await.map_err(backend)?;
        let update = c.prepare_cached(&sql.update).await.map_err(backend)?;
        let notify = c.prepare_cached(&sql.notify_ended).await.map_err(backend)?;
        let alias = c.prepare_cached(&sql.alias).await.map_err(backend)?;
        let commit = c.prepare_cached("COMMIT").await.map_err(backend)?;
        let target = renamed.map_or(key, |(new, _)| new);
        let (old_id, new_id) = (key.as_bytes().as_slice(), target.as_bytes().as_slice());
        let now_i = int(now);
        let (new_params, old_params): ([Param; 1], [Param; 1]) = ([&new_id], [&old_id]);
        let alias_params: [Param; 2] = [&old_id, &now_i];
        conn.begin();
        let c = conn.client();
        let taken = async {
            match renamed {
                Some(_) => c
                    .query_one(&taken, &new_params)
                    .await?
                    .try_get::<_, bool>(0),
                None => Ok(false),
            }
        };
        let (_, taken, aliased, row) = tokio::try_join!(
            c.execute(&begin, &[]),
            taken,
            c.query_one(&is_alias, &alias_params),
            c.query_opt(&lock, &old_params),
        )
        .map_err(backend)?;
        if taken {
            self.rollback(&conn).await?;
            return Err(StoreError::IdCollision);
        }
        if aliased.try_get::<_, bool>(0).map_err(backend)? {
            self.rollback(&conn).await?;
            return Ok(Applied::Aliased);
        }
        let Some((_, mut record)) = alive(row.as_ref(), now)? else {
            // A cycle that committed while this waited for the row has left an alias here.
            let again = conn.client().query_one(&is_alias, &alias_params);
            let aliased = self.rollback_after(&conn, again).await?;
            return Ok(if aliased.try_get(0).map_err(backend)? {
                Applied::Aliased
            } else {
                Applied::Gone
            });
        };
        let counters = match record.apply(changes) {
            Ok(counters) => counters,
            Err(refused) => {
                self.rollback(&conn).await?;
                return Err(refused);
            }
        };
        let fields = fields_text(&record)?;
        let (deadline, version) = (int(record.idle_deadline), int(record.version));
        let absolute = int(record.absolute_deadline);
        let update_params: [Param; 7] = [
            &old_id,
            &new_id,
            &deadline,
            &record.user,
            &version,
            &fields,
            &absolute,
        ];
        let c = conn.client();
        // With a new key the row keeps its identity and takes the new id: see `sql` for why.
        let updated = c.execute(&update, &update_params);
        match renamed {
            Some((_, grace_until)) => {
                // Every instance hears that the old ID ended (its fallback tickets stop),
                // when the transaction commits.
                let told = c.execute(&notify, &old_params);
                let until = int(grace_until);
                let alias_params: [Param; 3] = [&old_id, &new_id, &until];
                if now < grace_until {
                    let alias = c.execute(&alias, &alias_params);
                    tokio::try_join!(updated, told, alias, c.execute(&commit, &[]))
                        .map_err(collision_or_backend)?;
                } else {
                    tokio::try_join!(updated, told, c.execute(&commit, &[]))
                        .map_err(collision_or_backend)?;
                }
            }
            _ => {
                tokio::try_join!(updated, c.execute(&commit, &[])).map_err(collision_or_backend)?;
            }
        }
        conn.ended();
        Ok(Applied::Done {
            counters,
            key: *target,
        })
    }

    /// Destroys `key`; with `end` (a reason and until when), a signed-in session keeps why it
    /// ended, in the same statement.
    async fn destroy_keeping(
        &self,
        key: &SessionKey,
        end: Option<(EndReason, Millis)>,
    ) -> Result<Ended, StoreError> {
        let conn = self.conn().await?;
        let (c, sql) = (conn.object(), &self.inner.sql);
        let id = key.as_bytes().as_slice();
        let reason = end.map(|(r, _)| r.as_str());
        let until = end.map(|(_, u)| int(u));
        let statement = c.prepare_cached(&sql.destroy).await.map_err(backend)?;
        let now = int(now_millis());
        let row = c
            .query_one(&statement, &[&id, &reason, &until, &now])
            .await
            .map_err(backend)?;
        if row.try_get::<_, bool>(0).map_err(backend)? {
            return Ok(Ended::plain(Destroyed::Alias));
        }
        let live: bool = row.try_get(5).map_err(backend)?;
        if end.is_some() && row.try_get::<_, bool>(1).map_err(backend)? && !live {
            // Expired, not yet purged: ending it is no logout (it kept which deadline passed).
            return Ok(Ended::plain(Destroyed::Nothing));
        }
        if row.try_get::<_, bool>(1).map_err(backend)? {
            return Ok(Ended {
                destroyed: Destroyed::Session,
                user: row.try_get(3).map_err(backend)?,
                kept: row.try_get(4).map_err(backend)?,
            });
        }
        // A cycle may have moved the session on and left an alias after this statement's
        // snapshot was taken; a new statement sees it.
        let statement = c
            .prepare_cached(&sql.destroy_alias)
            .await
            .map_err(backend)?;
        let row = c.query_one(&statement, &[&id]).await.map_err(backend)?;
        Ok(Ended::plain(if row.try_get(0).map_err(backend)? {
            Destroyed::Alias
        } else {
            Destroyed::Nothing
        }))
    }

    /// Destroys every session of `user` but `keep` (and what a renewal of `keep` reaches),
    /// each keeping `end` if given; returns how many live sessions went, and their keys.
    async fn destroy_sessions_of(
        &self,
        user: &str,
        keep: Option<&SessionKey>,
        end: Option<(EndReason, Millis)>,
        now: Millis,
    ) -> Result<(u64, Vec<SessionKey>), StoreError> {
        let conn = self.conn().await?;
        let c = conn.object();
        let statement = c
            .prepare_cached(&self.inner.sql.destroy_user)
            .await
            .map_err(backend)?;
        let keep = keep.map(|k| k.as_bytes().as_slice());
        let reason = end.map(|(r, _)| r.as_str());
        let until = end.map(|(_, u)| int(u));
        let row = c
            .query_one(&statement, &[&user, &keep, &int(now), &reason, &until])
            .await
            .map_err(backend)?;
        let n: i64 = row.try_get(0).map_err(backend)?;
        let ids: Option<Vec<Vec<u8>>> = row.try_get(2).map_err(backend)?;
        let keys = ids
            .unwrap_or_default()
            .iter()
            .filter_map(|id| <[u8; cloakroom::KEY_LEN]>::try_from(id.as_slice()).ok())
            .map(SessionKey::from_bytes)
            .collect();
        Ok((u64::try_from(n).unwrap_or(0), keys))
    }
}

async fn purge_loop(store: Weak<Inner>, every: std::time::Duration) {
    // The first purge waits one period: connecting is not the moment to add work.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = store.upgrade() else { return };
        let store = PostgresStore { inner };
        match store.purge_expired(now_millis()).await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "purged expired sessions"),
            Err(error) => tracing::warn!(%error, "purging expired sessions failed"),
        }
    }
}

#[async_trait]
impl SessionStore for PostgresStore {
    async fn load(
        &self,
        key: &SessionKey,
        now: Millis,
        refresh: Option<Refresh>,
    ) -> Result<Option<Loaded>, StoreError> {
        let conn = self.conn().await?;
        let (c, sql) = (conn.object(), &self.inner.sql);
        let id = key.as_bytes().as_slice();
        let statement = c.prepare_cached(&sql.load).await.map_err(backend)?;
        let row = c
            .query_opt(&statement, &[&id, &int(now)])
            .await
            .map_err(backend)?;
        let Some((target, record)) = alive(row.as_ref(), now)? else {
            return Ok(None);
        };
        let Some((before, deadline)) = refresh
            .filter(|r| r.due(&record).is_some())
            .map(|r| r.window(&record))
        else {
            return Ok(Some(Loaded {
                record,
                key: target,
                refreshed: false,
            }));
        };
        // Due: slide the deadline in one conditional statement that re-checks it all.
        let statement = c.prepare_cached(&sql.refresh).await.map_err(backend)?;
        let target_id = target.as_bytes().as_slice();
        let refreshed = c
            .query_opt(
                &statement,
                &[&target_id, &int(deadline), &int(now), &int(before)],
            )
            .await
            .map_err(backend)?;
        if let Some((key, record)) = alive(refreshed.as_ref(), now)? {
            return Ok(Some(Loaded {
                record,
                key,
                refreshed: true,
            }));
        }
        // Another request refreshed it first, or it ended meanwhile: read it again.
        drop(conn);
        self.load(key, now, None).await
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        let c = conn.object();
        let statement = c
            .prepare_cached(&self.inner.sql.create)
            .await
            .map_err(backend)?;
        let id = key.as_bytes().as_slice();
        let version = int(record.version);
        let fields = fields_text(record)?;
        let inserted = c
            .execute(
                &statement,
                &[
                    &id,
                    &int(record.created),
                    &int(record.idle_deadline),
                    &int(record.absolute_deadline),
                    &record.user,
                    &version,
                    &fields,
                ],
            )
            .await
            .map_err(collision_or_backend)?;
        if inserted == 1 {
            Ok(())
        } else {
            Err(StoreError::IdCollision)
        }
    }

    async fn apply(
        &self,
        key: &SessionKey,
        changes: &Changes,
        now: Millis,
    ) -> Result<Applied, StoreError> {
        self.write(key, None, changes, now).await
    }

    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        changes: &Changes,
        now: Millis,
        grace_until: Millis,
    ) -> Result<Applied, StoreError> {
        self.write(old, Some((new, grace_until)), changes, now)
            .await
    }

    async fn destroy(&self, key: &SessionKey) -> Result<Destroyed, StoreError> {
        Ok(self.destroy_keeping(key, None).await?.destroyed)
    }

    /// The destroy statement with the reason: one round trip, one transaction.
    async fn end(
        &self,
        key: &SessionKey,
        reason: EndReason,
        until: Millis,
    ) -> Result<Ended, StoreError> {
        self.destroy_keeping(key, Some((reason, until))).await
    }

    async fn end_user(
        &self,
        user: &str,
        keep: Option<&SessionKey>,
        reason: EndReason,
        until: Millis,
        now: Millis,
    ) -> Result<Vec<SessionKey>, StoreError> {
        let (_, keys) = self
            .destroy_sessions_of(user, keep, Some((reason, until)), now)
            .await?;
        Ok(keys)
    }

    async fn list_user(&self, user: &str, now: Millis) -> Result<Vec<UserSession>, StoreError> {
        let conn = self.conn().await?;
        let c = conn.object();
        let statement = c
            .prepare_cached(&self.inner.sql.list_user)
            .await
            .map_err(backend)?;
        let rows = c
            .query(&statement, &[&user, &int(now)])
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|row| record(row).map(|(key, record)| UserSession { key, record }))
            .collect()
    }

    async fn destroy_user(
        &self,
        user: &str,
        keep: Option<&SessionKey>,
        now: Millis,
    ) -> Result<u64, StoreError> {
        Ok(self.destroy_sessions_of(user, keep, None, now).await?.0)
    }

    /// A tombstone is a row of `ended`, deleted by the purge once past its time.
    async fn record_end(
        &self,
        key: &SessionKey,
        reason: cloakroom::events::EndReason,
        until: Millis,
    ) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        let c = conn.object();
        let statement = c
            .prepare_cached(&self.inner.sql.record_end)
            .await
            .map_err(backend)?;
        let id = key.as_bytes().as_slice();
        c.execute(&statement, &[&id, &reason.as_str(), &int(until)])
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn end_reason(
        &self,
        key: &SessionKey,
        now: Millis,
    ) -> Result<Option<cloakroom::events::EndReason>, StoreError> {
        let conn = self.conn().await?;
        let c = conn.object();
        let statement = c
            .prepare_cached(&self.inner.sql.end_reason)
            .await
            .map_err(backend)?;
        let id = key.as_bytes().as_slice();
        let row = c
            .query_opt(&statement, &[&id, &int(now)])
            .await
            .map_err(backend)?;
        Ok(row
            .and_then(|r| r.try_get::<_, String>(0).ok())
            .and_then(|t| cloakroom::events::EndReason::parse(&t)))
    }

    async fn scan(
        &self,
        cursor: Option<&str>,
        count: usize,
    ) -> Result<cloakroom::ScanPage, StoreError> {
        let after = cloakroom::ScanPage::after(cursor)?;
        let start: Vec<u8> = after.map(|k| k.as_bytes().to_vec()).unwrap_or_default();
        let limit = i64::try_from(count.max(1)).unwrap_or(i64::MAX);
        let conn = self.conn().await?;
        let c = conn.object();
        let statement = c
            .prepare_cached(&self.inner.sql.scan)
            .await
            .map_err(backend)?;
        let rows = c
            .query(&statement, &[&start, &limit])
            .await
            .map_err(backend)?;
        let keys = rows
            .iter()
            .map(|row| {
                let id: Vec<u8> = row.try_get(0).map_err(backend)?;
                let bytes: [u8; cloakroom::KEY_LEN] = id
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("a session id of the wrong length".into()))?;
                Ok(SessionKey::from_bytes(bytes))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(cloakroom::ScanPage::ordered(keys, count))
    }

    fn ended_recently(&self, key: &SessionKey, issued: Millis) -> bool {
        self.inner.ended.refuses(key, issued)
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let conn = self.conn().await?;
        let row = conn
            .client()
            .query_one(self.inner.sql.stats.as_str(), &[])
            .await
            .map_err(backend)?;
        let sessions: i64 = row.try_get(0).map_err(backend)?;
        let bytes: i64 = row.try_get(1).map_err(backend)?;
        Ok(StoreStats {
            sessions: u64::try_from(sessions).unwrap_or(0),
            bytes: u64::try_from(bytes).ok(),
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        conn.client().simple_query("").await.map_err(backend)?;
        Ok(())
    }
}
