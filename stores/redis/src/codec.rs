//! Between `Record` and the session hash: the metadata packed in one `__m` field, one field
//! per session key holding its JSON text. Script replies are decoded here too.

use std::collections::BTreeMap;

use cloakroom::{Millis, Record, SessionKey, StoreError};
use redis::Value;

/// `created|idle|absolute|version`, then `|user` when there is one (last, so a user may
/// contain `|`); the two deadlines are offsets from `created`. The scripts read and write the same format (`meta` and `packed` in
/// `lua/prelude.lua`).
pub(crate) const META: &str = "__m";
/// On an old ID: the key it is an alias of.
pub(crate) const ALIAS: &str = "__to";
/// On an old ID: until when the alias may read.
pub(crate) const GRACE: &str = "__g";
/// On a renewed session: the alias that still reaches it (see `lua/cycle.lua`).
const FROM: &str = "__from";

/// The field/value pairs that file `record` (for the create script).
pub(crate) fn record_fields(record: &Record) -> Vec<String> {
    let mut out = Vec::with_capacity(2 + record.fields.len() * 2);
    out.push(META.to_owned());
    out.push(packed_meta(record));
    for (name, value) in &record.fields {
        out.push(name.clone());
        out.push(value.clone());
    }
    out
}

fn packed_meta(record: &Record) -> String {
    // Deadlines as offsets from the creation time: 8 or 9 digits instead of 13.
    let created = record.created;
    let idle = record
        .idle_deadline
        .min(record.absolute_deadline)
        .saturating_sub(created);
    let absolute = record.absolute_deadline.saturating_sub(created);
    let mut meta = format!("{created}|{idle}|{absolute}|{}", record.version);
    if let Some(user) = &record.user {
        meta.push('|');
        meta.push_str(user);
    }
    meta
}

/// Fills `record`'s metadata from the packed field.
pub(crate) fn unpack_meta(text: &str, record: &mut Record) -> Result<(), StoreError> {
    let mut parts = text.splitn(5, '|');
    let mut next = || -> Result<u64, StoreError> {
        let part = parts.next().unwrap_or_default();
        // 1 to 15 digits, as the scripts' `meta` accepts: Lua reads numbers as doubles.
        if part.is_empty() || part.len() > 15 || !part.bytes().all(|b| b.is_ascii_digit()) {
            // Never the text itself: it holds the user id.
            return Err(StoreError::Corrupt("damaged session metadata".into()));
        }
        number(part)
    };
    let created: u64 = next()?;
    let idle: u64 = next()?;
    let absolute: u64 = next()?;
    record.created = created;
    record.idle_deadline = created.saturating_add(idle);
    record.absolute_deadline = created.saturating_add(absolute);
    record.version = next()?;
    record.user = parts.next().map(str::to_owned);
    Ok(())
}

/// What a key's HGETALL holds.
pub(crate) enum Stored {
    /// Nothing (never filed, expired by TTL, or destroyed).
    Missing,
    /// A cycle's alias: the new key and the end of the grace window.
    Alias(SessionKey, Millis),
    /// A session (alive or not: the caller judges by its clock).
    Session(Record),
}

/// Decodes a flat HGETALL reply.
pub(crate) fn stored_from_flat(flat: Vec<Value>) -> Result<Stored, StoreError> {
    if flat.is_empty() {
        return Ok(Stored::Missing);
    }
    let alias = flat
        .chunks(2)
        .any(|pair| matches!(&pair[0], Value::BulkString(b) if b == ALIAS.as_bytes()));
    if !alias {
        let has_meta = flat
            .chunks(2)
            .any(|pair| matches!(&pair[0], Value::BulkString(b) if b == META.as_bytes()));
        if !has_meta {
            // A stub: what a script-free write leaves where a session had gone (`fast.rs`).
            return Ok(Stored::Missing);
        }
        return record_from_flat(flat).map(Stored::Session);
    }
    let (mut to, mut until) = (None, 0);
    let mut items = flat.into_iter();
    while let (Some(name), Some(value)) = (items.next(), items.next()) {
        match text(name)?.as_str() {
            ALIAS => to = SessionKey::parse(&text(value)?),
            GRACE => until = number(&text(value)?)?,
            _ => {}
        }
    }
    to.map(|to| Stored::Alias(to, until))
        .ok_or_else(|| StoreError::Corrupt("alias with a malformed target".into()))
}

/// A record from a flat HGETALL reply.
pub(crate) fn record_from_flat(flat: Vec<Value>) -> Result<Record, StoreError> {
    let mut record = Record::new(0, 0, 0);
    let mut meta = None;
    let mut items = flat.into_iter();
    while let (Some(name), Some(value)) = (items.next(), items.next()) {
        let (name, value) = (text(name)?, text(value)?);
        match name.as_str() {
            META => meta = Some(value),
            FROM => {}
            ALIAS => {
                return Err(StoreError::Corrupt(
                    "alias where a session was expected".into(),
                ))
            }
            _ => {
                record.fields.insert(name, value);
            }
        }
    }
    let meta =
        meta.ok_or_else(|| StoreError::Corrupt("session hash without its metadata".into()))?;
    unpack_meta(&meta, &mut record)?;
    Ok(record)
}

/// What a script answered.
pub(crate) enum Reply {
    /// No live session (nil).
    Gone,
    /// The key is a cycle's alias, naming its target (followed only by revocations: old
    /// IDs are read-only, and reads go through HGETALL).
    Alias(SessionKey),
    /// A status word and what follows it.
    Tagged(String, Vec<Value>),
}

impl Reply {
    pub(crate) fn decode(value: Value) -> Result<Self, StoreError> {
        let items = match value {
            Value::Nil => return Ok(Self::Gone),
            Value::Array(items) => items,
            other => return Err(unexpected(&other)),
        };
        let mut items = items.into_iter();
        let tag = text(items.next().unwrap_or(Value::Nil))?;
        let rest: Vec<Value> = items.collect();
        match tag.as_str() {
            "alias" => {
                let target = rest.into_iter().next().map(text).transpose()?;
                target
                    .as_deref()
                    .and_then(SessionKey::parse)
                    .map(Self::Alias)
                    .ok_or_else(|| StoreError::Corrupt("alias with a malformed target".into()))
            }
            "corrupt" => Err(StoreError::Corrupt(
                rest.into_iter()
                    .next()
                    .and_then(|v| text(v).ok())
                    .unwrap_or_default(),
            )),
            "nan" => Err(StoreError::NotAnInteger(
                rest.into_iter()
                    .next()
                    .and_then(|v| text(v).ok())
                    .unwrap_or_default(),
            )),
            _ => Ok(Self::Tagged(tag, rest)),
        }
    }
}

/// UTF-8 text of a string reply.
pub(crate) fn text(value: Value) -> Result<String, StoreError> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes)
            .map_err(|_| StoreError::Corrupt("a stored string is not UTF-8".into())),
        Value::SimpleString(s) => Ok(s),
        Value::Int(n) => Ok(n.to_string()),
        other => Err(unexpected(&other)),
    }
}

/// The elements of an array reply (a RESP3 map, as the read cache's connection gets for
/// `HGETALL`, is flattened to the same name, value, … list).
pub(crate) fn array(value: Value) -> Result<Vec<Value>, StoreError> {
    match value {
        Value::Array(items) => Ok(items),
        Value::Map(pairs) => Ok(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect()),
        Value::Nil => Ok(Vec::new()),
        other => Err(unexpected(&other)),
    }
}

fn number<T: std::str::FromStr>(text: &str) -> Result<T, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt("a stored number is out of range".into()))
}

/// Counter name → new value pairs from the apply script.
pub(crate) fn counters(flat: Vec<Value>) -> Result<BTreeMap<String, i64>, StoreError> {
    let mut out = BTreeMap::new();
    let mut items = flat.into_iter();
    while let (Some(name), Some(value)) = (items.next(), items.next()) {
        out.insert(text(name)?, number(&text(value)?)?);
    }
    Ok(out)
}

/// Names the kind of reply only: its content may be session data, which errors never carry.
fn unexpected(value: &Value) -> StoreError {
    let kind = match value {
        Value::Nil => "nil",
        Value::Int(_) => "an integer",
        Value::BulkString(_) | Value::SimpleString(_) => "a string",
        Value::Array(_) => "an array",
        _ => "another type",
    };
    StoreError::Corrupt(format!("unexpected reply from Redis: {kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_record_survives_its_field_encoding() {
        for user in [None, Some("zoë"), Some("a|b"), Some("")] {
            let mut record = Record::new(5, 10, 20);
            record.version = 3;
            record.user = user.map(str::to_owned);
            record.fields.insert("cart".into(), "[1,2]".into());
            let fields = record_fields(&record);
            assert_eq!(fields.len(), 4, "one metadata field, then the data");
            let flat = fields.iter().map(|s| bulk(s)).collect();
            assert_eq!(record_from_flat(flat).unwrap(), record);
        }
    }

    #[test]
    fn damaged_hashes_are_corrupt_not_panics() {
        for flat in [
            vec![bulk("cart"), bulk("[1]")],
            vec![bulk("__m"), bulk("1|2|3")],
            vec![bulk("__m"), bulk("1|2|3|x")],
            vec![bulk("__m"), bulk("1|2|+3|4")],
            vec![bulk("__m"), bulk("1||3|4")],
            vec![bulk("__m"), bulk("99999999999999999999|2|3|4")],
            vec![bulk("__to"), bulk("abc")],
            vec![Value::BulkString(vec![0xff]), bulk("1")],
            vec![Value::Okay, bulk("1")],
            vec![bulk("__m"), bulk("1|2|3|x|secret-user")],
        ] {
            match record_from_flat(flat) {
                Err(StoreError::Corrupt(what)) => {
                    assert!(
                        !what.contains("secret"),
                        "errors never carry user data: {what}"
                    );
                }
                other => panic!("damaged data must be Corrupt: {other:?}"),
            }
        }
        assert!(matches!(
            Reply::decode(Value::Array(vec![bulk("alias"), bulk("not a key")])),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            Reply::decode(Value::Int(3)),
            Err(StoreError::Corrupt(_))
        ));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn record() -> impl Strategy<Value = Record> {
            // Times and versions stay below 10^15 (milliseconds until the year 33658).
            let n = || 0u64..100_000_000_000_000;
            (
                n(),
                n(),
                n(),
                n(),
                prop::option::of(".{0,40}"),
                prop::collection::btree_map("[a-z_.:0-9]{1,12}", ".{0,40}", 0..6),
            )
                .prop_map(|(created, idle, absolute, version, user, fields)| {
                    // Deadlines are never before the creation (they are stored as offsets).
                    let mut record = Record::new(created, created + idle, created + absolute);
                    record.version = version;
                    record.user = user;
                    record.fields = fields
                        .into_iter()
                        .filter(|(k, _)| !k.starts_with("__"))
                        .collect();
                    record
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

            /// Every record survives its encoding, whatever its user and data hold.
            #[test]
            fn records_round_trip(record in record()) {
                let flat = record_fields(&record).iter().map(|s| bulk(s)).collect();
                prop_assert_eq!(record_from_flat(flat).unwrap(), record);
            }

            /// Damaged metadata is refused or read as exactly what it says: never a panic, and
            /// a text that parses prints back to a text that parses to the same record.
            #[test]
            fn damaged_metadata_is_refused_never_misread(text in "[0-9|a-z+-]{0,40}") {
                let flat = vec![bulk("__m"), bulk(&text)];
                match record_from_flat(flat) {
                    Err(StoreError::Corrupt(what)) => prop_assert!(text.len() < 8 || !what.contains(&text)),
                    Err(other) => prop_assert!(false, "not Corrupt: {other:?}"),
                    Ok(record) => {
                        let again = record_fields(&record).iter().map(|s| bulk(s)).collect();
                        prop_assert_eq!(record_from_flat(again).unwrap(), record);
                    }
                }
            }
        }
    }
}
