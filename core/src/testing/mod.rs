//! The behavioural suite every store must pass, and the test doubles it uses.
//!
//! - `suite_macro`: [`crate::store_suite!`], one test per behaviour;
//! - `suite`: the behaviour tests, grouped by concern (data, concurrency, expiry, cycling,
//!   limits, the user index, the round-trip budget);
//! - `harness`: a router behind a real layer and a [`Browser`] that keeps cookies;
//! - `doubles`: [`Hook`], [`CountingStore`], [`FlakyStore`], [`Kept`];
//! - [`history`]: the model-checked history of random operations with faults;
//! - [`throughput`]: the workload every store's throughput bench runs.
//!
//! A store crate runs the whole suite with one line in a test file:
//!
//! ```ignore
//! async fn make_store() -> MyStore { /* a fresh, empty store */ }
//! cloakroom::store_suite!(make_store);
//! ```
//!
//! The suite talks to the store both directly (the contract, with synthetic clocks for expiry)
//! and through a real [`SessionLayer`] in front of an axum router (what handlers see:
//! concurrency, no resurrection, round-trip budget, size limit).

use std::sync::Arc;
use std::time::Duration;

use crate::{KeyRing, Millis, SessionConfig, SessionKey, SessionStore};

mod doubles;
mod harness;
pub mod history;
mod suite;
mod suite_macro;
pub mod throughput;

pub use doubles::{CountingStore, FlakyStore, Hook, Kept};
pub use harness::{test_router, Browser, Gate, Reply};
pub use suite::*;

/// Waits (bounded by `within`) until `store` has heard that `key`'s session ended
/// ([`SessionStore::ended_recently`] for a ticket issued at `issued`); whether it did.
pub async fn heard_within(
    store: &dyn SessionStore,
    key: &SessionKey,
    issued: Millis,
    within: Duration,
) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < within {
        if store.ended_recently(key, issued) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A shared, type-erased store, as the suite passes it around.
pub type DynStore = Arc<dyn SessionStore>;

/// A configuration for tests: a fresh key, plain-http cookies.
#[must_use]
pub fn test_config() -> crate::SessionConfigBuilder {
    SessionConfig::builder(KeyRing::generate().expect("OS randomness")).with_secure(false)
}
