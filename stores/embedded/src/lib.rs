//! # The embedded default store
//!
//! A file-backed [`SessionStore`] for one machine, built on [redb] (a pure-Rust, ACID,
//! copy-on-write B-tree file): the default when no Redis is configured. Why redb, the file
//! layout and the durability guarantees are in `docs/embedded-store.md`.
//!
//! - **Durable acknowledgements.** Every write is committed with an fsync before it is
//!   acknowledged. Writes from concurrent requests are *group-committed*: one writer thread
//!   takes every write that is waiting, runs them in one transaction, and syncs once.
//! - **Atomic.** Each store operation runs whole inside one transaction, so "apply only if the
//!   session still exists" cannot race a destroy.
//! - **Self-cleaning.** The writer purges expired sessions and aliases in the background,
//!   using an expiry index, so the file does not grow with dead sessions.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use cloakroom::SessionStore;
//! use cloakroom_embedded::EmbeddedStore;
//! let dir = std::env::temp_dir().join(format!("cloakroom-doc-{}", std::process::id()));
//! let store = EmbeddedStore::open(&dir).unwrap();
//! assert_eq!(store.stats().await.unwrap().sessions, 0);
//! # drop(store); std::fs::remove_dir_all(dir).ok(); }
//! ```
//!
//! [redb]: https://docs.rs/redb
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod tables;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cloakroom::{
    now_millis, Applied, Changes, Destroyed, Loaded, Millis, Record, Refresh, SessionKey,
    SessionStore, StoreError, StoreStats, UserSession,
};
use redb::{Database, ReadTransaction, ReadableDatabase, WriteTransaction};

use tables::Tables;
use writer::Writer;

/// The file name of the database inside the data folder.
pub const FILE_NAME: &str = "sessions.redb";

/// The data file's size and page use ([`EmbeddedStore::file_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct FileStats {
    /// The file's size on disk.
    pub file_bytes: u64,
    /// The database page size.
    pub page_size: u64,
    /// Pages holding data or metadata.
    pub allocated_pages: u64,
    /// Pages the file holds but nothing uses (reused before the file grows).
    pub free_pages: u64,
    /// Bytes of keys and values stored.
    pub stored_bytes: u64,
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// The data folder could not be created.
    #[error("cannot create the data folder {path}: {source}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another process has the data file open.
    #[error("the data file {path} is in use by another process (is the app already running?)")]
    InUse {
        /// The file.
        path: PathBuf,
    },
    /// The data file is not a readable Cloakroom database (corrupt, truncated, or foreign).
    #[error(
        "cannot open the data file {path}: {reason}. Move it aside to start with an empty store"
    )]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the database engine said.
        reason: String,
    },
}

/// The embedded, file-backed session store. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    writer: Writer,
    path: PathBuf,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish()
    }
}

/// How often the writer purges expired sessions.
const PURGE_EVERY: Duration = Duration::from_secs(30);

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::unavailable(e)
}

impl EmbeddedStore {
    /// Opens (or creates) the store in the data folder `dir`.
    ///
    /// # Errors
    /// [`EmbeddedError`] if the folder cannot be created, the file is in use, or it is not a
    /// readable database. Never panics on a bad file.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, EmbeddedError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| EmbeddedError::Folder {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => EmbeddedError::InUse { path: path.clone() },
            other => EmbeddedError::Unreadable {
                path: path.clone(),
                reason: other.to_string(),
            },
        })?;
        let db = Arc::new(db);
        tables::create_all(&db).map_err(|e| EmbeddedError::Unreadable {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let writer = Writer::start(db.clone(), PURGE_EVERY, |txn| {
            let mut tables = Tables::open(txn)?;
            let purged = tables.purge_expired(now_millis())?;
            tables::purge_ended(txn, now_millis())?;
            if purged > 0 {
                tracing::debug!(purged, "purged expired sessions");
            }
            Ok(())
        });
        Ok(Self { db, writer, path })
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in a read transaction on a blocking thread (for the app's own tables).
    ///
    /// # Errors
    /// Whatever `f` returns, or [`StoreError::Unavailable`] if the database fails.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(backend)?;
            f(&txn)
        })
        .await
        .map_err(backend)?
    }

    /// Runs `f` in the next group-committed write transaction; returns once it is durable.
    /// `f` must not change anything when it returns an error (it shares the transaction).
    ///
    /// # Errors
    /// Whatever `f` returns, or [`StoreError::Unavailable`] if the commit fails.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.submit(f).await
    }

    /// The data file's size and page use, for operators (`cloakroom stats`). Runs in the
    /// writer's next transaction, which it leaves unchanged.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the database fails.
    pub async fn file_stats(&self) -> Result<FileStats, StoreError> {
        let file_bytes = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        let stats = self.write(|txn| txn.stats().map_err(backend)).await?;
        let page = stats.page_size() as u64;
        Ok(FileStats {
            file_bytes,
            page_size: page,
            allocated_pages: stats.allocated_pages(),
            free_pages: (file_bytes / page.max(1)).saturating_sub(stats.allocated_pages()),
            stored_bytes: stats.stored_bytes(),
        })
    }

    /// Finishes queued writes and stops the writer; the file closes when the last clone is
    /// dropped. Later writes fail with [`StoreError::Unavailable`].
    pub fn shutdown(&self) {
        self.writer.shutdown();
    }

    /// Purges expired sessions now (the writer also does this periodically).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the database fails.
    pub async fn purge_expired(&self, now: Millis) -> Result<u64, StoreError> {
        self.write(move |txn| {
            let purged = Tables::open(txn)?.purge_expired(now)?;
            tables::purge_ended(txn, now)?;
            Ok(purged)
        })
        .await
    }
}

#[async_trait]
impl SessionStore for EmbeddedStore {
    async fn load(
        &self,
        key: &SessionKey,
        now: Millis,
        refresh: Option<Refresh>,
    ) -> Result<Option<Loaded>, StoreError> {
        let k = *key;
        let found = self
            .read(move |txn| tables::Reader::open(txn)?.load(&k, now))
            .await?;
        let Some((target, record)) = found else {
            return Ok(None);
        };
        match refresh.and_then(|r| r.due(&record)) {
            Some(deadline) => {
                // Due: slide the deadline in a write that re-checks everything.
                let changes = Changes {
                    idle_deadline: Some(deadline),
                    ..Changes::default()
                };
                self.write(move |txn| {
                    let mut t = Tables::open(txn)?;
                    Ok(t.apply(&target, &changes, now)?
                        .map(|(key, record, _)| Loaded {
                            record,
                            key,
                            refreshed: true,
                        }))
                })
                .await
            }
            None => Ok(Some(Loaded {
                record,
                key: target,
                refreshed: false,
            })),
        }
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<(), StoreError> {
        let (k, record) = (*key, record.clone());
        self.write(move |txn| Tables::open(txn)?.create(&k, &record))
            .await
    }

    async fn apply(
        &self,
        key: &SessionKey,
        changes: &Changes,
        now: Millis,
    ) -> Result<Applied, StoreError> {
        let (k, changes) = (*key, changes.clone());
        self.write(move |txn| {
            let mut tables = Tables::open(txn)?;
            if tables.is_alias(&k, now)? {
                return Ok(Applied::Aliased);
            }
            Ok(match tables.apply(&k, &changes, now)? {
                Some((key, _, counters)) => Applied::Done { counters, key },
                None => Applied::Gone,
            })
        })
        .await
    }

    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        changes: &Changes,
        now: Millis,
        grace_until: Millis,
    ) -> Result<Applied, StoreError> {
        let (old, new, changes) = (*old, *new, changes.clone());
        self.write(move |txn| Tables::open(txn)?.cycle(&old, &new, &changes, now, grace_until))
            .await
    }

    async fn destroy(&self, key: &SessionKey) -> Result<Destroyed, StoreError> {
        let k = *key;
        self.write(move |txn| Ok(Tables::open(txn)?.destroy(&k)?.0))
            .await
    }

    /// The destroy and the tombstone in one transaction.
    async fn end(
        &self,
        key: &SessionKey,
        reason: cloakroom::events::EndReason,
        until: Millis,
    ) -> Result<cloakroom::Ended, StoreError> {
        let k = *key;
        self.write(move |txn| {
            let (destroyed, record) = Tables::open(txn)?.destroy(&k)?;
            let (ended, keep) = cloakroom::Ended::of(destroyed, record, reason, now_millis());
            if let Some(why) = keep {
                tables::record_end(txn, &k, why, until)?;
            }
            Ok(ended)
        })
        .await
    }

    async fn end_user(
        &self,
        user: &str,
        keep: Option<&SessionKey>,
        reason: cloakroom::events::EndReason,
        until: Millis,
        now: Millis,
    ) -> Result<Vec<SessionKey>, StoreError> {
        let (user, keep) = (user.to_owned(), keep.copied());
        self.write(move |txn| {
            let ended = Tables::open(txn)?.destroy_user(&user, keep.as_ref(), now)?;
            for k in &ended {
                tables::record_end(txn, k, reason, until)?;
            }
            Ok(ended)
        })
        .await
    }

    async fn list_user(&self, user: &str, now: Millis) -> Result<Vec<UserSession>, StoreError> {
        let user = user.to_owned();
        self.read(move |txn| tables::Reader::open(txn)?.list_user(&user, now))
            .await
    }

    async fn destroy_user(
        &self,
        user: &str,
        keep: Option<&SessionKey>,
        now: Millis,
    ) -> Result<u64, StoreError> {
        let (user, keep) = (user.to_owned(), keep.copied());
        self.write(move |txn| {
            let ended = Tables::open(txn)?.destroy_user(&user, keep.as_ref(), now)?;
            Ok(ended.len() as u64)
        })
        .await
    }

    async fn record_end(
        &self,
        key: &SessionKey,
        reason: cloakroom::events::EndReason,
        until: Millis,
    ) -> Result<(), StoreError> {
        let k = *key;
        self.write(move |txn| tables::record_end(txn, &k, reason, until))
            .await
    }

    async fn end_reason(
        &self,
        key: &SessionKey,
        now: Millis,
    ) -> Result<Option<cloakroom::events::EndReason>, StoreError> {
        let k = *key;
        self.read(move |txn| tables::end_reason(txn, &k, now)).await
    }

    async fn scan(
        &self,
        cursor: Option<&str>,
        count: usize,
    ) -> Result<cloakroom::ScanPage, StoreError> {
        let after = cloakroom::ScanPage::after(cursor)?;
        let keys = self
            .read(move |txn| tables::Reader::open(txn)?.scan(after, count))
            .await?;
        Ok(cloakroom::ScanPage::ordered(keys, count))
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let path = self.path.clone();
        let sessions = self.read(|txn| tables::Reader::open(txn)?.count()).await?;
        Ok(StoreStats {
            sessions,
            bytes: std::fs::metadata(path).ok().map(|m| m.len()),
        })
    }
}
