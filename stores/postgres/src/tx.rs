//! A pooled connection that may be inside a transaction, and never goes back to the pool so.
//!
//! The layer drops a store call that outlives its timeout, and a caller may be cancelled at
//! any await. If that happens between `BEGIN` and `COMMIT`, the connection still holds the
//! transaction and its row locks; returned to the pool, the next request would run inside
//! it. So a [`Conn`] that is dropped while a transaction is open leaves the pool and closes,
//! which makes the server roll the transaction back.

use std::sync::atomic::{AtomicBool, Ordering};

use deadpool_postgres::{Object, Pool};
use tokio_postgres::Client;

use cloakroom::StoreError;

/// One pooled connection, for one store call.
pub(crate) struct Conn {
    client: Option<Object>,
    in_transaction: AtomicBool,
}

impl Conn {
    pub(crate) async fn get(pool: &Pool) -> Result<Self, StoreError> {
        let client = pool.get().await.map_err(StoreError::unavailable)?;
        Ok(Self {
            client: Some(client),
            in_transaction: AtomicBool::new(false),
        })
    }

    /// The client.
    pub(crate) fn client(&self) -> &Client {
        self.object()
    }

    /// The pooled object, for its statement cache.
    pub(crate) fn object(&self) -> &Object {
        // `client` is taken only in `drop`, so it is always here before that.
        self.client.as_ref().expect("a connection until dropped")
    }

    /// Marks a transaction as started: from here until [`Conn::ended`], dropping this closes
    /// the connection. Call it before sending `BEGIN`.
    pub(crate) fn begin(&self) {
        self.in_transaction.store(true, Ordering::Relaxed);
    }

    /// Marks the transaction as ended (`COMMIT` or `ROLLBACK` acknowledged).
    pub(crate) fn ended(&self) {
        self.in_transaction.store(false, Ordering::Relaxed);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if *self.in_transaction.get_mut() {
            if let Some(object) = self.client.take() {
                // Detached from the pool, the client drops here and its connection closes.
                drop(Object::take(object));
            }
        }
    }
}
