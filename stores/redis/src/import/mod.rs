//! Sessions that Express and Flask apps keep in Redis, taken over by Cloakroom on a user's
//! first request (see `cloakroom::import` and `docs/migration.md`):
//!
//! - `express`: express-session with connect-redis (`connect.sid`, `sess:<id>`, JSON);
//! - `flask`: Flask-Session's Redis interface (`session`, `session:<id>`, msgpack or JSON;
//!   pickled records from older releases are never unpickled);
//! - `msgpack`: the small MessagePack reader Flask's records need;
//! - this file: what both share (the user field, the fields kept, the expiry date).

mod express;
mod flask;
mod msgpack;

use std::collections::BTreeMap;

use cloakroom::import::Imported;
use serde_json::{Map, Value};

pub use express::ExpressSessions;
pub use flask::FlaskSessions;

/// Where a foreign session keeps its user: a dotted path into the session object (`user.id`),
/// or, by default, the first of `userId`, `user_id`, `_user_id` (Flask-Login) and `user` that is
/// present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserField(Option<Vec<String>>);

/// The fields tried, in order, when no user field is configured.
pub const DEFAULT_USER_FIELDS: [&str; 4] = ["userId", "user_id", "_user_id", "user"];

impl UserField {
    /// A dotted path such as `user.id`; an empty text means the default.
    #[must_use]
    pub fn path(path: &str) -> Self {
        let path = path.trim();
        if path.is_empty() {
            return Self(None);
        }
        Self(Some(path.split('.').map(str::to_owned).collect()))
    }

    /// The user of `session`: a string as it is, a number as its digits; anything else (an
    /// object, a list, `null`) is no user.
    fn find(&self, session: &Map<String, Value>) -> Option<String> {
        let value = match &self.0 {
            Some(path) => {
                let (first, rest) = path.split_first()?;
                rest.iter()
                    .try_fold(session.get(first)?, |v, step| v.get(step))?
            }
            None => DEFAULT_USER_FIELDS.iter().find_map(|f| session.get(*f))?,
        };
        match value {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// The Cloakroom session for a foreign one: every top-level key except `leave_out` (the
/// framework's own bookkeeping) and names starting with `__` (reserved here), each value as
/// JSON text.
fn imported(
    handle: &str,
    session: Map<String, Value>,
    user: &UserField,
    leave_out: &[&str],
) -> Imported {
    let user = user.find(&session);
    let mut fields = BTreeMap::new();
    let mut skipped = 0;
    for (name, value) in session {
        if leave_out.contains(&name.as_str()) {
            continue;
        }
        if name.starts_with(cloakroom::names::RESERVED_PREFIX) {
            skipped += 1;
            continue;
        }
        fields.insert(name, value.to_string());
    }
    Imported {
        handle: handle.to_owned(),
        user,
        fields,
        skipped,
    }
}

/// Whether `id` can be a session ID of a foreign app: printable ASCII without separators, at
/// most 256 bytes (both frameworks draw base64url IDs).
fn plausible_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 256
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Milliseconds since the epoch of an ISO 8601 UTC time as JavaScript writes it
/// (`2026-12-02T14:59:21.123Z`); `None` for anything else.
fn parse_utc_millis(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        std::str::from_utf8(b.get(r)?).ok()?.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let millis = match b.get(19) {
        Some(b'.') if b.len() == 24 && b[23] == b'Z' => num(20..23)?,
        Some(b'Z') if b.len() == 20 => 0,
        _ => return None,
    };
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    u64::try_from(seconds * 1_000 + millis).ok()
}

/// Takes over the foreign record `name` once: the first caller claims it (a key
/// `cloakroom-imported:<name>` that lives as long as the record), later ones get `false`. So a stolen old-app cookie
/// cannot log in again after the session it became was logged out or revoked here, and two
/// first requests at once import one session, not two.
async fn claim_once(conn: &crate::RedisConnection, name: &str) -> Result<bool, redis::RedisError> {
    let ttl: i64 = redis::cmd("PTTL")
        .arg(name)
        .query_async(&mut conn.clone())
        .await?;
    // No expiry (-1) or gone meanwhile (-2): a day.
    let ttl = if ttl > 0 { ttl } else { 86_400_000 };
    let claimed: Option<String> = redis::cmd("SET")
        // Outside the old app's prefix: its own scans (connect-redis' `all`, `length`) must
        // not meet it.
        .arg(format!("cloakroom-imported:{name}"))
        .arg(1)
        .arg("NX")
        .arg("PX")
        .arg(ttl)
        .query_async(&mut conn.clone())
        .await?;
    Ok(claimed.is_some())
}

/// `%XX` escapes (a cookie value as `encodeURIComponent` wrote it): the connection URL's
/// decoder, which refuses malformed escapes and non-UTF-8.
use crate::connection::percent_decode;

/// The foreign session `session` (record `name`, ID `id`), taken over if nobody claimed it yet.
async fn take_over(
    conn: &crate::RedisConnection,
    name: &str,
    id: &str,
    session: Map<String, Value>,
    user: &UserField,
    leave_out: &[&str],
) -> Result<cloakroom::import::Found, cloakroom::StoreError> {
    if !claim_once(conn, name).await.map_err(store_error)? {
        return Ok(cloakroom::import::Found::Nothing);
    }
    Ok(cloakroom::import::Found::Session(imported(
        id, session, user, leave_out,
    )))
}

/// Deletes the foreign record `name` (a logout here ends it there too).
async fn delete(conn: &crate::RedisConnection, name: String) -> Result<(), cloakroom::StoreError> {
    redis::cmd("DEL")
        .arg(name)
        .query_async::<()>(&mut conn.clone())
        .await
        .map_err(store_error)
}

fn store_error(e: redis::RedisError) -> cloakroom::StoreError {
    cloakroom::StoreError::unavailable(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_user_is_found_by_default_or_by_path() {
        let s = object(json!({"views": 3, "user_id": 42, "user": {"id": "ada"}}));
        assert_eq!(UserField::default().find(&s).as_deref(), Some("42"));
        assert_eq!(UserField::path("user.id").find(&s).as_deref(), Some("ada"));
        assert_eq!(UserField::path("user.name").find(&s), None);
        assert_eq!(
            UserField::path("user").find(&s),
            None,
            "an object is no user"
        );
        assert_eq!(UserField::path(" ").find(&s).as_deref(), Some("42"));
        let s = object(json!({"_user_id": "7", "user": "x"}));
        assert_eq!(UserField::default().find(&s).as_deref(), Some("7"));
    }

    #[test]
    fn fields_keep_their_json_and_reserved_names_are_skipped() {
        let s = object(json!({"cookie": {"path": "/"}, "n": 2, "name": "Ada", "__x": 1}));
        let i = imported("abc", s, &UserField::default(), &["cookie"]);
        assert_eq!(i.fields.get("n").map(String::as_str), Some("2"));
        assert_eq!(i.fields.get("name").map(String::as_str), Some("\"Ada\""));
        assert!(!i.fields.contains_key("cookie") && !i.fields.contains_key("__x"));
        assert_eq!(i.skipped, 1);
    }

    #[test]
    fn javascript_dates_parse_and_nothing_else_does() {
        assert_eq!(parse_utc_millis("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            parse_utc_millis("2026-12-02T14:59:21.123Z"),
            Some(1_796_223_561_123)
        );
        assert_eq!(
            parse_utc_millis("2000-03-01T00:00:00Z"),
            Some(951_868_800_000)
        );
        for bad in [
            "",
            "2026-12-02",
            "2026-13-02T00:00:00Z",
            "2026-12-02T14:59:21+01:00",
            "x".repeat(24).as_str(),
        ] {
            assert_eq!(parse_utc_millis(bad), None, "{bad}");
        }
    }

    #[test]
    fn ids_and_escapes() {
        assert!(plausible_id("abc_DEF-123"));
        assert!(!plausible_id("") && !plausible_id("a.b") && !plausible_id(&"a".repeat(257)));
        assert_eq!(percent_decode("s%3Aab%2Bc").as_deref(), Some("s:ab+c"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }
}
