//! Between `Record` and the session hash: metadata in short `__` fields, one field per
//! session key holding its JSON text. Script replies are decoded here too.

use std::collections::BTreeMap;

use cloakroom::{Millis, Record, SessionKey, StoreError};
use redis::Value;

const CREATED: &str = "__c";
const IDLE: &str = "__i";
const ABSOLUTE: &str = "__a";
const USER: &str = "__u";
const VERSION: &str = "__v";
const ALIAS: &str = "__to";
const GRACE: &str = "__g";

/// The field/value pairs that file `record` (for the create script).
pub(crate) fn record_fields(record: &Record) -> Vec<String> {
    let mut out = Vec::with_capacity(10 + record.fields.len() * 2);
    for (name, value) in [
        (CREATED, record.created),
        (IDLE, record.idle_deadline.min(record.absolute_deadline)),
        (ABSOLUTE, record.absolute_deadline),
        (VERSION, record.version),
    ] {
        out.push(name.to_owned());
        out.push(value.to_string());
    }
    if let Some(user) = &record.user {
        out.push(USER.to_owned());
        out.push(user.clone());
    }
    for (name, value) in &record.fields {
        out.push(name.clone());
        out.push(value.clone());
    }
    out
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
    let (mut created, mut idle, mut absolute) = (None, None, None);
    let mut items = flat.into_iter();
    while let (Some(name), Some(value)) = (items.next(), items.next()) {
        let (name, value) = (text(name)?, text(value)?);
        match name.as_str() {
            CREATED => created = Some(number(&value)?),
            IDLE => idle = Some(number(&value)?),
            ABSOLUTE => absolute = Some(number(&value)?),
            VERSION => record.version = number(&value)?,
            USER => record.user = Some(value),
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
    match (created, idle, absolute) {
        (Some(c), Some(i), Some(a)) => {
            record.created = c;
            record.idle_deadline = i;
            record.absolute_deadline = a;
            Ok(record)
        }
        _ => Err(StoreError::Corrupt(
            "session hash without its deadlines".into(),
        )),
    }
}

/// What a script answered.
pub(crate) enum Reply {
    /// No live session (nil).
    Gone,
    /// The key is a cycle's alias for this key.
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

/// The elements of an array reply.
pub(crate) fn array(value: Value) -> Result<Vec<Value>, StoreError> {
    match value {
        Value::Array(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(unexpected(&other)),
    }
}

fn number<T: std::str::FromStr>(text: &str) -> Result<T, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("metadata {text:?} is not a number")))
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

fn unexpected(value: &Value) -> StoreError {
    StoreError::Corrupt(format!("unexpected reply from Redis: {value:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_record_survives_its_field_encoding() {
        let mut record = Record::new(5, 10, 20);
        record.version = 3;
        record.user = Some("zoë".into());
        record.fields.insert("cart".into(), "[1,2]".into());
        let flat = record_fields(&record).iter().map(|s| bulk(s)).collect();
        assert_eq!(record_from_flat(flat).unwrap(), record);
    }

    #[test]
    fn damaged_hashes_are_corrupt_not_panics() {
        for flat in [
            vec![bulk("__c"), bulk("x")],
            vec![bulk("__c"), bulk("1")],
            vec![bulk("__to"), bulk("abc")],
            vec![Value::BulkString(vec![0xff]), bulk("1")],
            vec![Value::Okay, bulk("1")],
        ] {
            assert!(matches!(
                record_from_flat(flat),
                Err(StoreError::Corrupt(_))
            ));
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
}
