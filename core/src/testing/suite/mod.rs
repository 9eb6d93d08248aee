//! The behaviour tests of the store contract, grouped by concern; [`crate::store_suite!`]
//! runs each on a fresh store. The helpers here build keys, records and changes.

use crate::{
    Changes, Loaded, Millis, Record, SessionId, SessionKey, SessionStore, StoreError, UserSession,
};

use super::DynStore;

mod budget;
mod concurrency;
mod cycling;
mod data;
mod ends;
mod expiry;
mod limits;
mod user_index;

pub use budget::*;
pub use concurrency::*;
pub use cycling::*;
pub use data::*;
pub use ends::*;
pub use expiry::*;
pub use limits::*;
pub use user_index::*;

pub(crate) const T0: Millis = 1_800_000_000_000;

pub(crate) fn key() -> SessionKey {
    SessionId::random().expect("OS randomness").key()
}

/// A fresh key that `store` accepts as the target of a cycle from `old` (a sharded store
/// keeps a cycle on one shard: [`SessionStore::can_cycle_to`]).
pub(crate) fn near(store: &DynStore, old: &SessionKey) -> SessionKey {
    loop {
        let new = key();
        if store.can_cycle_to(old, &new) {
            return new;
        }
    }
}

pub(crate) fn record(now: Millis, idle: Millis, absolute: Millis) -> Record {
    Record::new(now, now + idle, now + absolute)
}

pub(crate) fn set(pairs: &[(&str, &str)]) -> Changes {
    Changes {
        set: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Changes::default()
    }
}

pub(crate) async fn load(store: &DynStore, k: &SessionKey, now: Millis) -> Option<Loaded> {
    store.load(k, now, None).await.expect("load")
}

/// The user's sessions, or `None` from a store without the per-user index (an optional
/// capability: [`SessionStore::list_user`]).
pub(crate) async fn listed(store: &DynStore, user: &str, now: Millis) -> Option<Vec<UserSession>> {
    match store.list_user(user, now).await {
        Ok(list) => Some(list),
        Err(StoreError::Unsupported(_)) => None,
        Err(e) => panic!("list_user: {e}"),
    }
}

/// Whether `store` keeps the per-user index. A store without it must say so from both
/// methods: half an index would let "log out everywhere" miss sessions silently.
pub(crate) async fn has_user_index(store: &DynStore) -> bool {
    let now = crate::now_millis();
    let lists = listed(store, "nobody", now).await.is_some();
    let destroys = !matches!(
        store.destroy_user("nobody", None, now).await,
        Err(StoreError::Unsupported(_))
    );
    assert_eq!(lists, destroys, "list_user and destroy_user come together");
    lists
}
