//! The argument and reply protocol of the scripts: the arguments a change becomes, the
//! commands that carry them, and what a script's reply means.

use cloakroom::events::EndReason;
use cloakroom::{
    Applied, Changes, Limit, Loaded, Millis, Record, SessionKey, StoreError, UserChange,
};
use redis::{Cmd, Value};

use super::transport::evalsha;
use super::RedisStore;
use crate::codec::{array, counters, record_fields, record_from_flat, text, Reply};
use crate::scripts::Lua;

impl RedisStore {
    /// EVALSHA of a session script on `key` (with the live-count key beside it).
    pub(crate) fn session_script(&self, script: Lua, key: &SessionKey, args: &[String]) -> Cmd {
        evalsha(script, &[self.keys.session(key), self.keys.live(key)], args)
    }

    /// Files `record` under `key`.
    pub(crate) fn create_cmd(&self, key: &SessionKey, record: &Record, now: Millis) -> Cmd {
        let mut args = vec![now.to_string(), record.expires_at().to_string()];
        args.extend(record_fields(record));
        self.session_script(Lua::Create, key, &args)
    }

    /// Destroys `key`; with `end`, a signed-in session keeps that reason for that many
    /// milliseconds in its tombstone, in the same step.
    pub(crate) fn destroy_cmd(&self, key: &SessionKey, end: Option<(EndReason, Millis)>) -> Cmd {
        let mut args = vec![self.keys.session_prefix(key)];
        if let Some((reason, ttl)) = end {
            args.push(reason.as_str().to_owned());
            args.push(ttl.max(1).to_string());
            args.push(cloakroom::now_millis().to_string());
        }
        let keys = [
            self.keys.session(key),
            self.keys.live(key),
            self.keys.tombstone(key),
        ];
        evalsha(Lua::Destroy, &keys, &args)
    }
}

/// Appends `changes` to `args` in the layout `apply_to` reads (the header of
/// `lua/apply_fn.lua` documents it; the tests in `tests/redis_store.rs` hold the two together).
pub(crate) fn write_args(args: &mut Vec<String>, changes: &Changes) {
    let (op, user) = match &changes.user {
        None => ("", String::new()),
        Some(UserChange::Set(user)) => ("s", user.clone()),
        Some(UserChange::Clear) => ("c", String::new()),
    };
    let limit = |f: fn(&cloakroom::Limits) -> usize| {
        changes
            .limits
            .as_ref()
            .map(|l| f(l).to_string())
            .unwrap_or_default()
    };
    args.extend([
        if changes.clear { "1" } else { "0" }.into(),
        op.into(),
        user,
        changes
            .idle_deadline
            .map(|d| d.to_string())
            .unwrap_or_default(),
        limit(|l| l.max_fields),
        limit(|l| l.max_bytes),
        changes
            .absolute_deadline
            .map(|d| d.to_string())
            .unwrap_or_default(),
        changes.remove.len().to_string(),
    ]);
    args.extend(changes.remove.iter().cloned());
    args.push(changes.set.len().to_string());
    for (k, v) in &changes.set {
        args.push(k.clone());
        args.push(v.clone());
    }
    args.push(changes.increments.len().to_string());
    for (k, by) in &changes.increments {
        args.push(k.clone());
        args.push(by.to_string());
    }
    args.push(changes.expect.len().to_string());
    for (k, expected) in &changes.expect {
        args.push(k.clone());
        match expected {
            Some(text) => args.extend(["1".to_owned(), text.clone()]),
            None => args.extend(["0".to_owned(), String::new()]),
        }
    }
}

/// What a write script's reply means for the caller.
pub(crate) fn written(reply: Reply, key: SessionKey) -> Result<Applied, StoreError> {
    match reply {
        Reply::Gone => Ok(Applied::Gone),
        // Old IDs are read-only: a write through one is refused, never followed.
        Reply::Alias(_) => Ok(Applied::Aliased),
        Reply::Tagged(tag, rest) if tag == "ok" => Ok(Applied::Done {
            counters: counters(rest)?,
            key,
        }),
        Reply::Tagged(tag, rest) if tag == "conflict" => {
            let field = rest.into_iter().next().map(text).transpose()?;
            Err(StoreError::Conflict(field.unwrap_or_default()))
        }
        Reply::Tagged(tag, rest) if tag == "limit" => {
            let which = rest.into_iter().next().map(text).transpose()?;
            Err(StoreError::LimitExceeded(match which.as_deref() {
                Some("fields") => Limit::Fields,
                _ => Limit::Bytes,
            }))
        }
        Reply::Tagged(..) => Err(StoreError::Corrupt("unexpected reply to a write".into())),
    }
}

pub(crate) fn loaded(key: SessionKey, tag: &str, rest: Vec<Value>) -> Result<Loaded, StoreError> {
    let flat = array(rest.into_iter().next().unwrap_or(Value::Nil))?;
    Ok(Loaded {
        record: record_from_flat(flat)?,
        key,
        refreshed: tag == "refreshed",
    })
}
