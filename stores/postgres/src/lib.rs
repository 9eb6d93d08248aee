//! # The PostgreSQL store
//!
//! A [`cloakroom::SessionStore`] for apps that already run PostgreSQL and no Redis. It keeps
//! the same guarantees as the other stores and passes the same behavioural suite
//! (`cloakroom::store_suite!`) against a real server:
//!
//! - **No lost updates.** A write locks the session's row, applies only the fields the
//!   request changed (the same code as every other store), and writes it back in one
//!   transaction; concurrent writes queue on the row lock. Increments are atomic and
//!   [`cloakroom::Session::update`]'s compare-and-set is checked under the lock.
//! - **No resurrection.** A write finds no row once a logout deleted it, and writes nothing.
//! - **Per-user index** ("log out everywhere", "Your sessions") on an index of the user
//!   column. A concurrent login's ID cycle changes the row's id in place, so a revocation
//!   waiting on that row still finds and deletes it.
//! - **Expiry.** Every read and write checks the deadlines against the app's clock; a
//!   background purge deletes what has expired.
//! - **Cancel-safe.** A call dropped mid-transaction (a timeout) closes its connection, so
//!   the server rolls back and no lock outlives the request.
//!
//! Two round trips per write (each pair of statements pipelined), one per read. The layout
//! is documented in `docs/postgres-data-model.md`.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use cloakroom_postgres::{PostgresConfig, PostgresStore};
//! let store = PostgresStore::connect(PostgresConfig::new("postgres://app@localhost/app")).await?;
//! # let _ = store; Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod ended;
mod error;
mod row;
mod sql;
mod store;
mod tls;
mod tx;

pub use config::{PostgresConfig, DEFAULT_SCHEMA};
pub use error::PostgresError;
pub use store::PostgresStore;
pub use {deadpool_postgres, tokio_postgres};
