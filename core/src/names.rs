//! The field names Cloakroom reserves inside a session, in one place. A store keeps them like
//! any other field; it needs to know them only to leave them out where the contract says so
//! (a listing of a user's sessions never shows a `__` field). Handlers cannot write them:
//! keys starting with [`RESERVED_PREFIX`] are refused.

/// Prefix of every field Cloakroom keeps for itself; user keys may not use it.
pub const RESERVED_PREFIX: &str = "__";
/// Prefix of the flash messages' fields (one field each, in order of their names).
pub const FLASH_PREFIX: &str = "__flash.";
/// The synchronizer token of HTML forms.
pub const CSRF_FIELD: &str = "__csrf";
/// The hash of the client properties the session is bound to (see [`crate::Binding`]).
pub const BINDING_FIELD: &str = "__bind";
/// The reserved field in which a session with its own expiry keeps its idle timeout, its
/// refresh interval and whether its cookie persists: a JSON array `[idle ms, every ms,
/// persistent]`. A field, not a column, so that every store keeps it without a change of
/// layout; [`crate::Refresh::window`] reads it, so every store slides such a session by its own
/// timeout.
pub const EXPIRY_FIELD: &str = "__expiry";
/// Which foreign session this one was imported from: a JSON array `[cookie name, handle]`,
/// so that a logout here ends it too (`crate::import`).
pub const IMPORTED_FIELD: &str = "__import";
/// The field of an ended marker: a short-lived record a [`crate::MigratingStore`] leaves in
/// the new store where a session was logged out, so that no move in flight brings it back.
pub const ENDED_FIELD: &str = "__ended";
/// When the current ID was issued, kept only when periodic renewal is on.
pub const ISSUED_FIELD: &str = "__issued";
