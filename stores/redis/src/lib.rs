//! The Redis/Valkey store for Cloakroom sessions.
//!
//! # Design
//!
//! * **One hash per session**, named by the configured prefix (default `sid:`) and a hash of
//!   the session ID, never the ID. One field per session key holding its JSON text, plus one
//!   metadata field `__m` packing created, idle deadline, absolute deadline, version and user.
//!   The key's TTL is the nearer deadline, so Redis drops dead sessions itself.
//! * **Every write is one server-side script** (EVALSHA; reloaded on NOSCRIPT) that checks
//!   the session is alive, by the caller's clock, before writing anything. A write to a session
//!   that was destroyed or expired answers [`cloakroom::Applied::Gone`] and never recreates it.
//!   Increments return their new values from the same script.
//! * **Round trips**: a read is one plain `HGETALL`, judged by the caller's clock (a due
//!   sliding-expiry refresh, at most once per tenth of the idle timeout, adds the `load`
//!   script), a write is one, a login is two (take the old session and leave an alias; file the new
//!   one together with its per-user index entry), a logout is one.
//! * **Per-user index**: a sorted set per user of session keys scored by absolute deadline,
//!   pruned whenever it is written or read; no keyspace notifications needed.
//! * **Cheap count**: live sessions are counted per minute of expiry in one small hash, so
//!   [`cloakroom::SessionStore::stats`] needs no `KEYS` or `SCAN`. Nothing uses `CONFIG`,
//!   `KEYS` or `MONITOR`, which managed services disable.
//! * **Connections**: one multiplexed connection (redis-rs `ConnectionManager`) shared by all
//!   requests, reconnecting in the background with bounded backoff; bounded connect and command
//!   timeouts. `redis://` and `rediss://` URLs, ACL user names, a password fallback for URLs
//!   without one (the `REDIS_AUTH` convention) and a custom CA for TLS.
//!
//! `docs/redis-data-model.md` in the repository lists every key, which keys a script touches,
//! and what Redis Cluster will need.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod cache;
mod codec;
mod config;
mod connection;
mod error;
mod feed;
pub mod import;
mod keys;
mod link;
mod report;
mod scripts;
mod store;

/// The client crate, re-exported: [`RedisError`]'s sources are its errors, and
/// [`RedisConnection`] runs its commands.
pub use redis;

pub use cache::CacheFigures;
pub use config::{RedisConfig, DEFAULT_PREFIX, DEFAULT_READ_CACHE_BYTES};
pub use error::{NotReplicated, RedisError};
pub use link::RedisConnection;
pub use report::{Activity, ServerReport, ServerTopology};
pub use store::RedisStore;
