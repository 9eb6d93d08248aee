//! A minimal store: the five essential methods of `SessionStore` over a `HashMap`, nothing
//! optional (no per-user index, no size figures: those features answer `501`). It passes
//! the shared behavioural suite (`core/tests/minimal_store.rs` runs `store_suite!` on it).
//!
//! The shape to copy for a new backend: judge every deadline by the `now` passed in, let
//! `Record::apply` do the field work (counters, limits, compare-and-set), and make each
//! method one atomic step (here: one lock).
//!
//! `cargo run -p cloakroom --example minimal_store`, then open http://127.0.0.1:3000.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use axum::{routing::get, Router};
use cloakroom::{
    Applied, Changes, Destroyed, KeyRing, Loaded, Millis, Record, Refresh, Session, SessionConfig,
    SessionError, SessionKey, SessionLayer, SessionStore, StoreError,
};

/// What a key holds: a session, or a renewal's alias of one (readable until `until`).
enum Entry {
    Session(Record),
    Alias { target: SessionKey, until: Millis },
}

/// Sessions in a `HashMap` behind one lock.
#[derive(Default)]
pub struct MinimalStore {
    entries: Mutex<HashMap<SessionKey, Entry>>,
}

impl MinimalStore {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, Entry>> {
        // Every change is computed before it is stored, so a poisoned lock is consistent.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The live session `key` reaches at `now` (through a live alias too), and whether `key` is
/// that alias.
fn resolve(
    entries: &HashMap<SessionKey, Entry>,
    key: &SessionKey,
    now: Millis,
) -> Option<(SessionKey, bool)> {
    let (target, via_alias) = match entries.get(key)? {
        Entry::Alias { target, until } if now < *until => (*target, true),
        Entry::Alias { .. } => return None,
        Entry::Session(_) => (*key, false),
    };
    match entries.get(&target)? {
        Entry::Session(record) if record.is_alive(now) => Some((target, via_alias)),
        _ => None,
    }
}

fn record_mut<'a>(
    entries: &'a mut HashMap<SessionKey, Entry>,
    key: &SessionKey,
) -> Result<&'a mut Record, StoreError> {
    match entries.get_mut(key) {
        Some(Entry::Session(record)) => Ok(record),
        _ => Err(StoreError::Corrupt("resolved key vanished".into())),
    }
}

#[async_trait]
impl SessionStore for MinimalStore {
    async fn load(
        &self,
        key: &SessionKey,
        now: Millis,
        refresh: Option<Refresh>,
    ) -> Result<Option<Loaded>, StoreError> {
        let mut entries = self.entries();
        let Some((target, _)) = resolve(&entries, key, now) else {
            return Ok(None);
        };
        let record = record_mut(&mut entries, &target)?;
        // `due` picks the right window (anonymous, signed in, or the session's own).
        let due = refresh.and_then(|r| r.due(record));
        if let Some(deadline) = due {
            record.apply(&Changes {
                idle_deadline: Some(deadline),
                ..Changes::default()
            })?;
        }
        Ok(Some(Loaded {
            record: record.clone(),
            key: target,
            refreshed: due.is_some(),
        }))
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<(), StoreError> {
        let mut entries = self.entries();
        if entries.contains_key(key) {
            return Err(StoreError::IdCollision);
        }
        entries.insert(*key, Entry::Session(record.clone()));
        Ok(())
    }

    async fn apply(
        &self,
        key: &SessionKey,
        changes: &Changes,
        now: Millis,
    ) -> Result<Applied, StoreError> {
        let mut entries = self.entries();
        match resolve(&entries, key, now) {
            None => Ok(Applied::Gone),
            // An old ID may read, never write.
            Some((_, true)) => Ok(Applied::Aliased),
            Some((target, false)) => {
                let counters = record_mut(&mut entries, &target)?.apply(changes)?;
                Ok(Applied::Done {
                    counters,
                    key: target,
                })
            }
        }
    }

    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        changes: &Changes,
        now: Millis,
        grace_until: Millis,
    ) -> Result<Applied, StoreError> {
        let mut entries = self.entries();
        if entries.contains_key(new) {
            return Err(StoreError::IdCollision);
        }
        match resolve(&entries, old, now) {
            None => Ok(Applied::Gone),
            Some((_, true)) => Ok(Applied::Aliased),
            Some((source, false)) => {
                // Applied to a copy first: a refused change leaves the session as it was.
                let mut record = record_mut(&mut entries, &source)?.clone();
                let counters = record.apply(changes)?;
                entries.insert(*new, Entry::Session(record));
                if now < grace_until {
                    let alias = Entry::Alias {
                        target: *new,
                        until: grace_until,
                    };
                    entries.insert(source, alias);
                } else {
                    entries.remove(&source);
                }
                Ok(Applied::Done {
                    counters,
                    key: *new,
                })
            }
        }
    }

    async fn destroy(&self, key: &SessionKey) -> Result<Destroyed, StoreError> {
        let mut entries = self.entries();
        Ok(match entries.remove(key) {
            Some(Entry::Alias { .. }) => Destroyed::Alias,
            Some(Entry::Session(_)) => {
                // Old IDs that still reach it go too.
                entries.retain(|_, e| !matches!(e, Entry::Alias { target, .. } if target == key));
                Destroyed::Session
            }
            None => Destroyed::Nothing,
        })
    }
}

async fn visits(session: Session) -> Result<String, SessionError> {
    let n = session.increment("visits", 1).await?;
    Ok(format!("you have been here {n} times"))
}

/// The app: one counter, sessions in the minimal store.
pub fn app() -> Router {
    let keys = KeyRing::generate().expect("OS randomness");
    let config = SessionConfig::builder(keys).build().expect("valid config");
    Router::new()
        .route("/", get(visits))
        .layer(SessionLayer::new(MinimalStore::default(), config))
}

#[tokio::main]
async fn main() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000")
        .await
        .expect("bind 127.0.0.1:3000");
    println!("http://127.0.0.1:3000");
    axum::serve(listener, app()).await.expect("serve");
}
