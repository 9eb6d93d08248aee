//! # Cloakroom: server-side sessions for tower and axum
//!
//! A browser hands its state to the cloakroom and keeps a ticket: a signed cookie holding a
//! random session ID. Any app instance behind the load balancer can redeem the ticket,
//! because the state lives in a shared [`SessionStore`] (an embedded file store on one
//! machine, Redis/Valkey or PostgreSQL when the app outgrows it).
//!
//! [`SessionLayer`] serves any tower service over `http` types, whatever its response body.
//! The default feature `axum` adds the [`Session`] extractor for axum handlers and reads the
//! client address from axum's `ConnectInfo`; without it the core depends on `axum-core`
//! only, and handlers find the session in the request's extensions
//! (`request.extensions().get::<Session>()`).
//!
//! ## Quick start
//!
//! ```
//! use axum::{routing::get, Router};
//! use cloakroom::{KeyRing, MemoryStore, Session, SessionConfig, SessionError, SessionLayer};
//! use tower::ServiceExt as _;
//!
//! async fn visits(session: Session) -> Result<String, SessionError> {
//!     let n = session.increment("visits", 1).await?;
//!     Ok(format!("you have been here {n} times"))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // In an app: KeyRing::from_comma_separated(&std::env::var("SESSION_SECRET")?)?
//! let keys = KeyRing::generate()?;
//! // The defaults are the production ones: a Secure, HttpOnly `__Host-sid` cookie.
//! let config = SessionConfig::builder(keys).build()?;
//! // MemoryStore for one process; cloakroom-embedded, -redis or -postgres to keep sessions.
//! let app = Router::new()
//!     .route("/", get(visits))
//!     .layer(SessionLayer::new(MemoryStore::default(), config));
//! // Serve it with `axum::serve(listener, app)`; here, one request through it:
//! let request = http::Request::get("/").body(axum::body::Body::empty())?;
//! let reply = app.oneshot(request).await?;
//! let cookie = reply.headers()["set-cookie"].to_str()?;
//! assert!(cookie.starts_with("__Host-sid=") && cookie.contains("Secure"));
//! # Ok(()) }
//! ```
//!
//! ## Guarantees
//!
//! - **No lost updates.** A request writes only the fields it changed, and increments are
//!   applied as increments in the store ([`Session::increment`]). Two concurrent requests
//!   that change different keys both survive; 200 concurrent increments end at 200.
//! - **No resurrection.** Every write is conditional on the session still existing. A slow
//!   request that finishes after a logout writes nothing ([`Applied::Gone`]).
//! - **Lazy and cheap.** A request that never touches its session costs no store call. A
//!   read costs one (expiry refresh included, at most once per fraction of the idle window);
//!   a read-modify-write two; a new session, an increment, or a logout one.
//! - **Commit before the head.** Changes are written after the handler returns and before the
//!   response leaves the layer, so a redirect after login already sees the session. A write
//!   that fails turns the response into a `503`: an unacknowledged write never looks like a
//!   success.
//! - **Bounded failure.** Every store call has a timeout; a circuit breaker fails fast during
//!   an outage and probes for recovery. See [`FailurePolicy`].
//! - **Safe cookies.** 128-bit IDs from the OS CSPRNG, HMAC-SHA256 signed with a rotating
//!   [`KeyRing`], `HttpOnly; Secure; SameSite=Lax; Path=/`, no `Max-Age` by default. Forged
//!   or malformed cookies are "no session", never an error; of several cookies of our name
//!   the first whose signature verifies wins, so a planted one cannot lock a user out.
//!   Stores see only a hash of the ID ([`SessionKey`]); logs only a fingerprint of that.
//! - **No fixation.** A change of user ([`Session::set_user`]) or privilege
//!   ([`Session::cycle_id`]) gives a new ID and the old one reaches nothing at once. Only
//!   periodic renewal leaves the old ID a grace window, and then only to read.
//! - **Bounded.** Every write path honours a byte and a field limit before writing; sessions
//!   without a user have a shorter idle timeout; at most so many sessions are created at once.
//! - **CSRF.** [`CsrfLayer`] refuses cross-site unsafe requests; [`Session::csrf_token`] gives
//!   forms a synchronizer token, replaced at every change of user.
//!
//! ## Lifecycle
//!
//! Per request a session is *kept* (same ID; maybe one conditional write of its data),
//! *issued* (created, cycled at a privilege change, renewed, or its expiry refreshed: the
//! cookie is sent), or *purged* ([`Session::destroy`], expired or gone: a removal cookie is
//! sent). A request that came through a renewed-away ID reads but never writes or gets a
//! cookie ([`SessionError::Superseded`]).
//!
//! ## Stores
//!
//! Every store passes one behavioural suite, `store_suite!` (feature `test-suite`):
//! [`MemoryStore`] here, the embedded file store in `cloakroom-embedded`, Redis/Valkey in
//! `cloakroom-redis`, and PostgreSQL in `cloakroom-postgres`.
//!
//! ## Writing a store
//!
//! A store implements [`SessionStore`]. What each method must guarantee is in its docs and
//! in `docs/store-contract.md`; in short:
//!
//! | method | essential? | what it must guarantee |
//! | --- | --- | --- |
//! | `load` | yes | the record if alive by the caller's clock; a due refresh slides the idle deadline atomically, never reviving a dead session |
//! | `create` | yes | files a record under a new key; `IdCollision` if the key is taken |
//! | `apply` | yes | applies a change **only if the session is alive** (else `Applied::Gone`, nothing written); increments are atomic and return the new values; limits checked before writing |
//! | `cycle` | yes | moves a live session to a new key in one atomic step, leaving an alias only for a renewal's grace window |
//! | `destroy` | yes | deletes a session (or only the alias, when given one) |
//! | `list_user`, `destroy_user` | no: the per-user index, for "log out everywhere", "your sessions" and the per-user limit | the user's live sessions; ending them and their aliases. Default: [`StoreError::Unsupported`] from both, and those features answer `501` |
//! | `stats` | no | a cheap count (no scan per call in a large store); default `Unsupported` |
//! | `ping`, `cached`, `can_cycle_to`, `ended_recently` | no | have defaults |
//!
//! Then run the shared suite against it: with the `test-suite` feature,
//! `cloakroom::store_suite!(make_store);` in a test file, where `make_store` builds a fresh
//! store wrapped in a `testing::Hook`-implementing type. It checks concurrency (lost
//! updates), no resurrection after logout, expiry (the session's own too), cycles and their
//! aliases, limits, cancellation in the middle of a login, the per-user index (or that the
//! store says it has none, from both methods), and the round-trip budget.
//! `examples/minimal_store.rs` is a store of the five essential methods that passes it;
//! `examples/custom_store.rs` a decorator over another store; [`MemoryStore`] a complete one
//! with the per-user index, in one file.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod binding;
mod config;
mod cookie;
mod csrf;
mod ended;
mod error;
pub mod events;
mod expiry;
#[cfg(feature = "axum")]
mod extract;
mod guard;
mod guessing;
mod id;
pub mod import;
mod keyring;
mod layer;
mod memory;
mod metrics;
mod migrating;
pub mod names;
mod record;
mod session;
mod store;
#[cfg(feature = "test-suite")]
pub mod testing;
mod ticket;
mod timed;

/// The `axum-core` crate, whose `Body` the layer's responses carry (so the types in this
/// crate's public API can be named without adding the dependency).
pub use axum_core;
/// The error of the OS randomness source ([`SessionId::random`], [`KeyRing::generate`],
/// [`generate_secret`]), re-exported so that callers need not depend on `getrandom`.
pub use getrandom::Error as RandomnessError;
/// The metrics crate [`SessionLayer::register_metrics`] registers into, at the version it uses.
pub use prometheus_client;

pub use binding::Binding;
pub use config::{
    ConfigError, DecodeFailure, FailurePolicy, SameSite, SessionConfig, SessionConfigBuilder,
    DEFAULT_COOKIE_NAME,
};
pub use csrf::{CsrfLayer, CsrfService};
pub use ended::{HeardEnded, RecentlyEnded, FLOOR_MARGIN_MS};
pub use error::SessionError;
pub use expiry::Expiry;
#[cfg(feature = "axum")]
pub use extract::RequireUser;
pub use guessing::GuessingPolicy;
pub use id::{SessionId, SessionKey, ID_LEN, KEY_LEN};
pub use keyring::{generate_secret, KeyRing, KeyRingError, Verified, MIN_SECRET_LEN};
pub use layer::{SessionLayer, SessionService};
pub use memory::MemoryStore;
pub use metrics::{Gauges, SessionMetrics, StoreLatency, LATENCY_BUCKETS, STORE_OPERATIONS};
pub use migrating::{MigratingStore, Moved, MARKER_LIFETIME_MS};
pub use record::{
    now_millis, Applied, Changes, Destroyed, Ended, Limits, Loaded, Millis, Record, Refresh,
    UserChange, UserSession, COUNTER_LIMIT, EXPIRY_FIELD,
};
pub use session::{Flash, FlashLevel, Session, SessionInfo, TOMBSTONE_LIFETIME_MS};
pub use store::{sessions_to_end, Limit, ScanPage, SessionStore, StoreError, StoreStats, SCAN};
pub use ticket::FALLBACK_FIELDS_MAX_BYTES;

/// The default most sessions one user may have at once
/// ([`SessionConfigBuilder::with_max_sessions_per_user`]): more devices than a person owns,
/// few enough that a login's check and a listing stay small.
pub const DEFAULT_MAX_SESSIONS_PER_USER: usize = 100;

/// At most this many of a user's oldest sessions end at one login past the per-user limit.
pub const USER_SESSIONS_ENDED_PER_LOGIN: usize = 16;

/// At most this many sessions are listed by [`Session::user_sessions`] (the current one
/// first, then the newest), whatever the per-user limit.
pub const USER_SESSIONS_LISTED: usize = 100;

/// At most this many bytes of session data are listed by [`Session::user_sessions`]: the
/// listing stops at the session that would pass it.
pub const USER_SESSIONS_LISTED_BYTES: usize = 256 * 1024;
