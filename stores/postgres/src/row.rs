//! The stored format: a row of `sessions` as a key and a record, and back; times as
//! `bigint` milliseconds; which errors mean a taken ID.

use std::collections::BTreeMap;

use cloakroom::{Millis, Record, SessionKey, StoreError, KEY_LEN};
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

pub(crate) fn backend(e: tokio_postgres::Error) -> StoreError {
    StoreError::unavailable(e)
}

/// Milliseconds as a `bigint` (no deadline reaches 2^63 ms).
pub(crate) fn int(m: Millis) -> i64 {
    i64::try_from(m).unwrap_or(i64::MAX)
}

pub(crate) fn millis(row: &Row, column: usize) -> Result<Millis, StoreError> {
    let n: i64 = row.try_get(column).map_err(backend)?;
    Millis::try_from(n).map_err(|_| StoreError::Corrupt("negative time".into()))
}

/// A row of `sessions` (columns in [`crate::sql`]'s order) as its key and record.
pub(crate) fn record(row: &Row) -> Result<(SessionKey, Record), StoreError> {
    let id: &[u8] = row.try_get(0).map_err(backend)?;
    let id: [u8; KEY_LEN] = id
        .try_into()
        .map_err(|_| StoreError::Corrupt("session id of the wrong length".into()))?;
    let fields: &str = row.try_get(6).map_err(backend)?;
    let version: i64 = row.try_get(5).map_err(backend)?;
    let record = Record {
        created: millis(row, 1)?,
        idle_deadline: millis(row, 2)?,
        absolute_deadline: millis(row, 3)?,
        user: row.try_get(4).map_err(backend)?,
        version: u64::try_from(version).map_err(|_| StoreError::Corrupt("version".into()))?,
        fields: serde_json::from_str::<BTreeMap<String, String>>(fields)
            .map_err(|_| StoreError::Corrupt("fields are not a JSON map of strings".into()))?,
    };
    Ok((SessionKey::from_bytes(id), record))
}

pub(crate) fn fields_text(record: &Record) -> Result<String, StoreError> {
    serde_json::to_string(&record.fields).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A unique-key violation means the new id is taken; anything else is the backend's.
pub(crate) fn collision_or_backend(e: tokio_postgres::Error) -> StoreError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        StoreError::IdCollision
    } else {
        backend(e)
    }
}

/// Whether the row read under lock is a session `apply` may change at `now`.
pub(crate) fn alive(
    row: Option<&Row>,
    now: Millis,
) -> Result<Option<(SessionKey, Record)>, StoreError> {
    match row.map(record).transpose()? {
        Some((key, record)) if record.is_alive(now) => Ok(Some((key, record))),
        _ => Ok(None),
    }
}
