//! The data model and every statement the store runs, in one place.
//!
//! Two tables in the store's schema (`docs/postgres-data-model.md` explains each choice):
//!
//! - `sessions`: one row per session. `fields` is the JSON text of a map from field name to
//!   the field's JSON text, kept as `text` because compare-and-set and counters compare values
//!   byte for byte (`jsonb` would re-format them). A cycle *updates the row's id* instead of
//!   moving the row, so a concurrent "log out everywhere" that waits on the row lock re-checks
//!   the row it finds after the cycle and still deletes it.
//! - `aliases`: the old id a renewal leaves behind, readable (never writable) until `until`.
//!
//! Deadlines and times are milliseconds since the epoch (`bigint`), judged against the `now`
//! the caller passes, never the server's clock: one clock for every store.

/// The layout version this crate writes; a database with a newer one is refused.
pub(crate) const LAYOUT: i32 = 1;

/// A session row's columns, in the order [`crate::store`] reads them.
const COLUMNS: &str = "id, created, idle_deadline, absolute_deadline, user_id, version, fields";

/// Creates the schema and tables if missing. Run under an advisory lock so that instances
/// starting together do not race on `CREATE … IF NOT EXISTS`.
pub(crate) fn setup(s: &str) -> String {
    format!(
        "SET LOCAL client_min_messages = warning;
         SELECT pg_advisory_xact_lock(7173706);
         CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE IF NOT EXISTS {s}.layout (version integer NOT NULL);
         INSERT INTO {s}.layout SELECT {LAYOUT} WHERE NOT EXISTS (SELECT 1 FROM {s}.layout);
         CREATE TABLE IF NOT EXISTS {s}.sessions (
             id bytea PRIMARY KEY,
             created bigint NOT NULL,
             idle_deadline bigint NOT NULL,
             absolute_deadline bigint NOT NULL,
             user_id text,
             version bigint NOT NULL,
             fields text NOT NULL
         );
         CREATE INDEX IF NOT EXISTS sessions_by_user ON {s}.sessions (user_id)
             WHERE user_id IS NOT NULL;
         CREATE INDEX IF NOT EXISTS sessions_by_expiry
             ON {s}.sessions ((LEAST(idle_deadline, absolute_deadline)));
         CREATE TABLE IF NOT EXISTS {s}.aliases (
             id bytea PRIMARY KEY,
             target bytea NOT NULL,
             until bigint NOT NULL
         );
         CREATE INDEX IF NOT EXISTS aliases_by_target ON {s}.aliases (target);
         CREATE TABLE IF NOT EXISTS {s}.ended (
             id bytea PRIMARY KEY,
             reason text NOT NULL,
             until bigint NOT NULL
         );"
    )
}

/// What the schema's name is followed by in the channel that announces ended sessions
/// (`crate::ended`); a schema name is at most 57 bytes, so the channel fits PostgreSQL's 63.
pub(crate) const ENDED_CHANNEL: &str = "_ended";

/// Every statement, with the schema filled in once at connect time.
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) layout: String,
    /// $1 key, $2 now → the row the key names, following a live alias.
    pub(crate) load: String,
    /// $1 key, $2 new idle deadline, $3 now, $4 refresh only if the deadline is before this
    /// → the refreshed row, if it is alive and the refresh still due.
    pub(crate) refresh: String,
    /// $1 key, $2 now → whether the key is a live alias.
    pub(crate) is_alias: String,
    /// $1 key → the row, locked for the rest of the transaction.
    pub(crate) lock: String,
    /// $1 key → whether a session or an alias is filed under it.
    pub(crate) taken: String,
    /// $1..$7 the columns → 1 row if inserted, 0 if the key is taken.
    pub(crate) create: String,
    /// $1 id, $2 new id, $3 idle deadline, $4 user, $5 version, $6 fields, $7 absolute
    /// deadline.
    pub(crate) update: String,
    /// $1 alias, $2 target, $3 until.
    pub(crate) alias: String,
    /// $1 key: tells every instance the session under it ended (a cycle away from it).
    pub(crate) notify_ended: String,
    /// $1 key, $2 reason (or NULL), $3 until, $4 now → (was an alias, was a session,
    /// notified, its user, whether a reason was kept: a signed-in session's tombstone, in the
    /// same step; an expired row keeps which deadline passed instead, was it live).
    pub(crate) destroy: String,
    /// $1 key → whether an alias was deleted (the retry that sees a cycle committed meanwhile).
    pub(crate) destroy_alias: String,
    /// $1 user, $2 now → the user's live rows.
    pub(crate) list_user: String,
    /// $1 user, $2 key to keep (or NULL), $3 now, $4 reason (or NULL), $5 until → (how many
    /// live sessions went, notified, their keys); each keeps the reason if one is given.
    pub(crate) destroy_user: String,
    /// → (sessions, bytes of the table and its indexes).
    pub(crate) stats: String,
    /// $1 the key to start after, $2 how many → session keys in key order.
    pub(crate) scan: String,
    /// $1 key, $2 reason, $3 until: why the session ended (a tombstone).
    pub(crate) record_end: String,
    /// $1 key, $2 now → the reason, if a tombstone is kept, or which deadline passed if the
    /// expired row is still there (until the purge).
    pub(crate) end_reason: String,
    /// $1 now: tombstones past their time deleted.
    pub(crate) purge_ended: String,
    /// $1 now → expired sessions deleted (at most 1,000 a call).
    pub(crate) purge_sessions: String,
    /// $1 now.
    pub(crate) purge_aliases: String,
}

impl Statements {
    pub(crate) fn new(s: &str) -> Self {
        Self {
            layout: format!("SELECT max(version) FROM {s}.layout"),
            load: format!(
                "SELECT {COLUMNS} FROM {s}.sessions WHERE id = COALESCE(
                     (SELECT target FROM {s}.aliases WHERE id = $1 AND until > $2), $1)"
            ),
            refresh: format!(
                "UPDATE {s}.sessions
                 SET idle_deadline = LEAST($2, absolute_deadline), version = version + 1
                 WHERE id = $1 AND idle_deadline > $3 AND absolute_deadline > $3
                   AND idle_deadline < $4
                 RETURNING {COLUMNS}"
            ),
            is_alias: format!(
                "SELECT EXISTS (SELECT 1 FROM {s}.aliases WHERE id = $1 AND until > $2)"
            ),
            lock: format!("SELECT {COLUMNS} FROM {s}.sessions WHERE id = $1 FOR UPDATE"),
            taken: format!(
                "SELECT EXISTS (SELECT 1 FROM {s}.sessions WHERE id = $1)
                     OR EXISTS (SELECT 1 FROM {s}.aliases WHERE id = $1)"
            ),
            create: format!(
                "INSERT INTO {s}.sessions ({COLUMNS})
                 SELECT $1, $2, $3, $4, $5, $6, $7
                 WHERE NOT EXISTS (SELECT 1 FROM {s}.aliases WHERE id = $1)
                 ON CONFLICT (id) DO NOTHING"
            ),
            update: format!(
                "UPDATE {s}.sessions
                 SET id = $2, idle_deadline = $3, user_id = $4, version = $5, fields = $6,
                     absolute_deadline = $7
                 WHERE id = $1"
            ),
            notify_ended: format!("SELECT pg_notify('{s}{ENDED_CHANNEL}', encode($1, 'hex'))"),
            alias: format!(
                "INSERT INTO {s}.aliases (id, target, until) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET target = $2, until = $3"
            ),
            destroy: format!(
                "WITH alias AS (DELETE FROM {s}.aliases WHERE id = $1 RETURNING 1),
                      session AS (DELETE FROM {s}.sessions
                                  WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM alias)
                                  RETURNING user_id,
                                      idle_deadline > $4 AND absolute_deadline > $4 AS live,
                                      CASE WHEN absolute_deadline <= idle_deadline
                                           THEN 'expired_absolute' ELSE 'expired_idle'
                                      END AS expired),
                      reaching AS (DELETE FROM {s}.aliases
                                   WHERE target = $1 AND NOT EXISTS (SELECT 1 FROM alias)),
                      kept AS (INSERT INTO {s}.ended (id, reason, until)
                               SELECT $1, CASE WHEN live THEN $2::text ELSE expired END,
                                      $3::bigint
                               FROM session
                               WHERE user_id IS NOT NULL AND $2::text IS NOT NULL
                               ON CONFLICT (id) DO UPDATE
                                   SET reason = EXCLUDED.reason, until = EXCLUDED.until
                               RETURNING 1)
                 SELECT EXISTS (SELECT 1 FROM alias), EXISTS (SELECT 1 FROM session),
                        (SELECT count(*) FROM (SELECT pg_notify('{s}{ENDED_CHANNEL}', encode($1, 'hex'))
                                               FROM session) told),
                        (SELECT user_id FROM session), EXISTS (SELECT 1 FROM kept),
                        COALESCE((SELECT live FROM session), false)"
            ),
            destroy_alias: format!(
                "WITH alias AS (DELETE FROM {s}.aliases WHERE id = $1 RETURNING 1)
                 SELECT EXISTS (SELECT 1 FROM alias)"
            ),
            record_end: format!(
                "INSERT INTO {s}.ended (id, reason, until) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET reason = EXCLUDED.reason, until = EXCLUDED.until"
            ),
            end_reason: format!(
                "SELECT COALESCE(
                     (SELECT reason FROM {s}.ended WHERE id = $1 AND until > $2),
                     (SELECT CASE WHEN idle_deadline > $2 AND absolute_deadline > $2 THEN NULL
                                  WHEN absolute_deadline <= idle_deadline THEN 'expired_absolute'
                                  ELSE 'expired_idle' END
                      FROM {s}.sessions WHERE id = $1))"
            ),
            purge_ended: format!("DELETE FROM {s}.ended WHERE until <= $1"),
            scan: format!(
                "SELECT id FROM {s}.sessions WHERE id > $1 ORDER BY id LIMIT $2"
            ),
            list_user: format!(
                "SELECT {COLUMNS} FROM {s}.sessions
                 WHERE user_id = $1 AND idle_deadline > $2 AND absolute_deadline > $2
                 ORDER BY created"
            ),
            destroy_user: format!(
                "WITH gone AS (DELETE FROM {s}.sessions
                               WHERE user_id = $1 AND id IS DISTINCT FROM $2
                                 AND id NOT IN (SELECT target FROM {s}.aliases
                                                WHERE id = $2 AND until > $3)
                               RETURNING id, idle_deadline > $3 AND absolute_deadline > $3 AS live),
                      reaching AS (DELETE FROM {s}.aliases
                                   WHERE target IN (SELECT id FROM gone)),
                      kept AS (INSERT INTO {s}.ended (id, reason, until)
                               SELECT id, $4::text, $5::bigint FROM gone
                               WHERE live AND $4::text IS NOT NULL
                               ON CONFLICT (id) DO UPDATE
                                   SET reason = EXCLUDED.reason, until = EXCLUDED.until)
                 SELECT count(*) FILTER (WHERE live),
                        (SELECT count(*) FROM (SELECT pg_notify('{s}{ENDED_CHANNEL}', encode(id, 'hex'))
                                               FROM gone) told),
                        array_agg(id) FILTER (WHERE live)
                 FROM gone"
            ),
            stats: format!(
                "SELECT count(*), pg_total_relation_size('{s}.sessions') FROM {s}.sessions"
            ),
            purge_sessions: format!(
                "WITH gone AS (DELETE FROM {s}.sessions WHERE id IN (
                     SELECT id FROM {s}.sessions
                     WHERE LEAST(idle_deadline, absolute_deadline) <= $1 LIMIT 1000)
                     RETURNING 1)
                 SELECT count(*) FROM gone"
            ),
            purge_aliases: format!("DELETE FROM {s}.aliases WHERE until <= $1"),
        }
    }
}
