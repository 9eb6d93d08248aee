//! Writes without a script: one `MULTI … EXEC` for the common, simple changes.
//!
//! A script costs Redis 7.0 about 120k instructions per write (`bench/script_cost.py`), most of
//! it moving values between Lua and Redis. The commonest writes need none of what a script
//! adds: an increment of one counter, or setting and removing fields. For those the store
//! sends, in one round trip:
//!
//! ```text
//! MULTI
//! HINCRBY … | HDEL … HSET …       # the change itself
//! HMGET <session> __m __to __g    # what the key is: the change never touches these fields
//! PEXPIRE <session> <stub TTL> NX # only a key without a TTL gets one
//! EXEC
//! ```
//!
//! The `HMGET` comes after the change so that, on the read cache's connection, it tracks the
//! key again: Redis drops a key from a client's tracking when that client (`NOLOOP`) changes it.
//!
//! `MULTI` runs the change whatever the key holds, so the guarantees come from what it leaves
//! behind, decided by the `HMGET` reply (the layer never writes `__m`, `__to` or `__g`, so it
//! says what the key was before the change too):
//!
//! - a live session (its `__m` says so by the caller's clock): the write is done;
//! - no `__m` (the session is gone): the change made a **stub**, a hash with no metadata that
//!   every reader treats as no session, and that expires on its own (`PEXPIRE … NX`, a live
//!   session's TTL is untouched). The caller is told `Gone`: nothing was resurrected;
//! - `__to` (an old ID's alias): the change landed in the alias hash, which readers follow by
//!   `__to` and otherwise ignore. The caller is told `Aliased`;
//! - a dead `__m` (deadline passed, TTL not yet): the change landed in a record no reader
//!   accepts. The caller is told `Gone`.
//!
//! Only changes that cannot half-fail take this path: one increment alone (if `HINCRBY`
//! refuses, nothing else was in the transaction), or sets and removes alone (`HSET`/`HDEL` do
//! not fail on a hash). And only when the layer has checked the session's limits against the
//! record it loaded (`Changes::limits` is `None`): a blind write that may add a field goes
//! through the script, which checks before it writes. A change of user, expiry or `clear`
//! rewrites `__m` and keeps the script too.

use std::collections::BTreeMap;

use cloakroom::{Applied, Changes, Millis, Record, SessionKey, StoreError, COUNTER_LIMIT};
use redis::Value;

use super::transport::Resend;
use super::RedisStore;
use crate::cache::{ForgetUnlessDone, Patch};
use crate::codec;
use redis::{ErrorKind, ServerErrorKind};

/// How long a stub lives: long enough for any write racing a logout to land in it, short
/// enough to cost nothing.
pub(crate) const STUB_TTL_MS: u64 = 60_000;

/// Whether `changes` can be written without a script.
pub(crate) fn eligible(changes: &Changes) -> bool {
    let simple = !changes.clear
        && changes.expect.is_empty()
        && changes.user.is_none()
        && changes.idle_deadline.is_none()
        && changes.absolute_deadline.is_none()
        && changes.limits.is_none();
    let one_increment = changes.increments.len() == 1
        && changes.set.is_empty()
        && changes.remove.is_empty()
        && changes
            .increments
            .values()
            .all(|by| by.unsigned_abs() < COUNTER_LIMIT.unsigned_abs());
    let fields_only =
        changes.increments.is_empty() && !(changes.set.is_empty() && changes.remove.is_empty());
    simple && (one_increment || fields_only)
}

/// The transaction for `changes` on the session hash `name`, as plain commands.
pub(crate) fn transaction(name: &str, changes: &Changes) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.atomic().ignore_errors();
    for (field, by) in &changes.increments {
        pipe.cmd("HINCRBY").arg(name).arg(field).arg(*by);
    }
    if !changes.remove.is_empty() {
        pipe.cmd("HDEL")
            .arg(name)
            .arg(changes.remove.iter().collect::<Vec<_>>());
    }
    if !changes.set.is_empty() {
        let mut hset = redis::cmd("HSET");
        hset.arg(name);
        for (k, v) in &changes.set {
            hset.arg(k).arg(v);
        }
        pipe.add_command(hset);
    }
    pipe.cmd("HMGET")
        .arg(name)
        .arg(codec::META)
        .arg(codec::ALIAS)
        .arg(codec::GRACE);
    pipe.cmd("PEXPIRE").arg(name).arg(STUB_TTL_MS).arg("NX");
    pipe
}

/// What the key was before the transaction, from its `HMGET` reply, judged at `now`.
pub(crate) enum Before {
    /// A session, with its metadata text.
    Session(String),
    /// An old ID's alias within its grace window.
    Alias,
    /// Nothing (or an alias whose grace has ended): the transaction left a stub.
    Nothing,
}

pub(crate) fn before(hmget: Value, now: Millis) -> Before {
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    };
    let Value::Array(items) = hmget else {
        return Before::Nothing;
    };
    let field = |i: usize| items.get(i).and_then(text);
    match (field(0), field(1), field(2)) {
        (_, Some(_), grace) => {
            let until: Millis = grace.and_then(|g| g.parse().ok()).unwrap_or(0);
            if now < until {
                Before::Alias
            } else {
                Before::Nothing
            }
        }
        (Some(meta), None, _) => Before::Session(meta),
        (None, None, _) => Before::Nothing,
    }
}

/// What a script-free write came to.
pub(crate) enum Outcome {
    /// Done, gone, or through an alias.
    Applied(Applied),
    /// Refused: nothing else was in the transaction, so nothing changed.
    Failed(StoreError),
    /// The counter went past the range every store keeps: the caller takes the step back.
    Overflowed { field: String, by: i64 },
}

/// Reads the transaction's replies for `changes` on `key` at `now`.
pub(crate) fn outcome(
    replies: Vec<Value>,
    changes: &Changes,
    now: Millis,
    key: SessionKey,
) -> Outcome {
    // The change's replies come first (one per command `transaction` built), then the HMGET.
    let changed = changes.increments.len()
        + usize::from(!changes.remove.is_empty())
        + usize::from(!changes.set.is_empty());
    let state = replies.get(changed).cloned().unwrap_or(Value::Nil);
    let mut replies = replies.into_iter();
    match before(state, now) {
        Before::Alias => return Outcome::Applied(Applied::Aliased),
        Before::Nothing => return Outcome::Applied(Applied::Gone),
        Before::Session(meta) if !alive(&meta, now) => return Outcome::Applied(Applied::Gone),
        Before::Session(_) => {}
    }
    let mut counters = BTreeMap::new();
    if let Some((field, by)) = changes.increments.iter().next() {
        let value = match replies.next() {
            Some(Value::Int(n)) => n,
            Some(Value::ServerError(e)) if e.code() == "WRONGTYPE" => {
                return Outcome::Failed(StoreError::Corrupt(
                    "a session key holds something other than a hash".into(),
                ))
            }
            _ => return Outcome::Failed(StoreError::NotAnInteger(field.clone())),
        };
        if value.unsigned_abs() >= COUNTER_LIMIT.unsigned_abs() {
            return Outcome::Overflowed {
                field: field.clone(),
                by: *by,
            };
        }
        counters.insert(field.clone(), value);
    }
    Outcome::Applied(Applied::Done { counters, key })
}

/// Applies a done script-free write of sets and removes to the cached copy of its record.
pub(crate) fn apply_to_cached(record: &mut Record, changes: &Changes) {
    for field in &changes.remove {
        record.fields.remove(field);
    }
    for (field, value) in &changes.set {
        record.fields.insert(field.clone(), value.clone());
    }
}

/// Whether the session whose metadata is `meta` was alive at `now` (a damaged one is not).
pub(crate) fn alive(meta: &str, now: Millis) -> bool {
    let mut record = Record::new(0, 0, 0);
    crate::codec::unpack_meta(meta, &mut record).is_ok() && record.is_alive(now)
}

impl RedisStore {
    /// A simple change as one `MULTI … EXEC` (see `fast.rs` for why it keeps the guarantees).
    pub(crate) async fn apply_without_script(
        &self,
        key: &SessionKey,
        changes: &Changes,
        now: Millis,
    ) -> Result<Applied, StoreError> {
        let pipe = transaction(&self.keys.session(key), changes);
        // With the read cache, the write goes on the tracking connection (NOLOOP) and its
        // effect is applied to the cached record: a stream of writes keeps the record cached,
        // and so keeps taking this path, instead of dropping it at every write.
        let on_link = self
            .cache
            .as_ref()
            .filter(|c| c.state.is_tracking())
            .and_then(|c| Some((c, c.link()?)));
        let outcome = match on_link {
            Some((cache, link)) => {
                let ticket = cache.state.ticket();
                let guard = ForgetUnlessDone::new(&cache.state, *key);
                let replies: Result<Vec<Value>, _> = Resend::for_changes(changes)
                    .send(link, |mut conn| {
                        let pipe = &pipe;
                        async move { pipe.query_async(&mut conn).await }
                    })
                    .await;
                let outcome = replies
                    .map_err(|e| self.failed(e))
                    .map(|r| outcome(r, changes, now, *key));
                match &outcome {
                    Ok(Outcome::Applied(Applied::Done { .. })) => {
                        let fields = |record: &mut Record| apply_to_cached(record, changes);
                        let patch = match changes.increments.iter().next() {
                            Some((field, by)) => Patch::Step(field, *by),
                            None => Patch::Fields(&fields),
                        };
                        cache.state.patch(key, ticket, patch);
                    }
                    _ => cache.state.invalidate(key),
                }
                guard.disarm();
                outcome?
            }
            None => {
                let replies: Result<Vec<Value>, redis::RedisError> = self
                    .writing(
                        &[*key],
                        Resend::for_changes(changes).send(&self.conn, |mut conn| {
                            let pipe = &pipe;
                            async move { pipe.query_async(&mut conn).await }
                        }),
                    )
                    .await;
                match replies {
                    // A transaction refused whole ran nothing. On a cluster that is a slot
                    // on the move (redis-rs follows ASK for a command, not a transaction):
                    // the script, one command, makes the same change and is redirected.
                    Err(e)
                        if self.keys.is_cluster()
                            && e.kind() == ErrorKind::Server(ServerErrorKind::ExecAbort) =>
                    {
                        return self.apply_with_script(key, changes, now).await;
                    }
                    replies => outcome(replies.map_err(|e| self.failed(e))?, changes, now, *key),
                }
            }
        };
        match outcome {
            Outcome::Applied(applied) => Ok(applied),
            Outcome::Failed(error) => Err(error),
            Outcome::Overflowed { field, by } => {
                // Past the range every store keeps: take the step back (a second round trip,
                // only here) and refuse it, as the script and the other stores do.
                let mut undo = redis::cmd("HINCRBY");
                undo.arg(self.keys.session(key)).arg(&field).arg(-by);
                self.writing(&[*key], self.one_once(undo)).await?;
                Err(StoreError::NotAnInteger(field))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_that_cannot_half_fail_are_eligible() {
        let mut one = Changes::default();
        one.increments.insert("n".into(), 1);
        assert!(eligible(&one));
        let mut two = one.clone();
        two.increments.insert("m".into(), 1);
        assert!(!eligible(&two), "two increments can half-fail");
        let mut mixed = one.clone();
        mixed.set.insert("a".into(), "1".into());
        assert!(!eligible(&mixed), "a set beside an increment can half-fail");
        let mut sets = Changes::default();
        sets.set.insert("a".into(), "1".into());
        sets.remove.insert("b".into());
        assert!(eligible(&sets));
        let mut limited = sets.clone();
        limited.limits = Some(cloakroom::Limits {
            max_bytes: 10,
            max_fields: 1,
        });
        assert!(!eligible(&limited), "unchecked limits need the script");
        let mut user = sets.clone();
        user.user = Some(cloakroom::UserChange::Set("u".into()));
        assert!(!eligible(&user));
        let mut huge = Changes::default();
        huge.increments.insert("n".into(), COUNTER_LIMIT);
        assert!(!eligible(&huge));
        assert!(!eligible(&Changes::default()));
    }
}
