//! Flash messages: queued for the next page that shows them, read once.

use serde::{de::DeserializeOwned, Serialize};

use crate::names::FLASH_PREFIX;
use crate::record::now_millis;
use crate::SessionError;

use super::state::State;
use super::Session;

impl Session {
    /// Queues a message for the next page that shows flashes (the post/redirect/get pattern):
    /// it survives exactly until [`Session::take_flashes`] reads it. A plain message at
    /// [`FlashLevel::Info`]; [`Session::flash_with`] sets a level and any payload.
    ///
    /// # Errors
    /// As [`Session::insert`].
    pub async fn flash(&self, message: impl Into<String>) -> Result<(), SessionError> {
        self.flash_with(FlashLevel::Info, message.into()).await
    }

    /// Queues a flash with a level and a typed payload (a message, or a struct a template
    /// renders).
    ///
    /// # Errors
    /// As [`Session::insert`].
    ///
    /// ```
    /// # async fn demo(session: cloakroom::Session) -> Result<(), cloakroom::SessionError> {
    /// use cloakroom::FlashLevel;
    /// session.flash_with(FlashLevel::Success, "Saved.").await?;
    /// for flash in session.take_flashes_with::<String>().await? {
    ///     println!("{:?}: {}", flash.level, flash.payload);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn flash_with<T: Serialize>(
        &self,
        level: FlashLevel,
        payload: T,
    ) -> Result<(), SessionError> {
        // Time first so flashes from several app instances sort by age; the counter orders
        // flashes of the same millisecond and keeps concurrent ones from sharing a field.
        static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let sequence = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = format!("{FLASH_PREFIX}{:015}.{sequence:020}", now_millis());
        let text = serde_json::to_string(&Flash { level, payload }).map_err(|source| {
            SessionError::Encode {
                key: key.clone(),
                source,
            }
        })?;
        self.set_field(&key, text).await
    }

    /// The queued flash messages, oldest first, as text; reading removes them. A flash whose
    /// payload is not a string is given as its JSON text.
    ///
    /// # Errors
    /// A store error from loading the session.
    pub async fn take_flashes(&self) -> Result<Vec<String>, SessionError> {
        Ok(self
            .take_flash_values()
            .await?
            .into_iter()
            .map(|(_, payload)| match payload {
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            })
            .collect())
    }

    /// The queued flashes with their levels, payloads decoded as `T`, oldest first; reading
    /// removes them. Plain [`Session::flash`] messages come at [`FlashLevel::Info`].
    ///
    /// # Errors
    /// With [`crate::DecodeFailure::Fail`], [`SessionError::Decode`] if a payload is not a
    /// `T` (then nothing is removed; by default such a flash is dropped with a warning); a
    /// store error from loading the session.
    pub async fn take_flashes_with<T: DeserializeOwned>(
        &self,
    ) -> Result<Vec<Flash<T>>, SessionError> {
        let values = self.peek_flash_values().await?;
        let mut out = Vec::with_capacity(values.len());
        for (level, payload) in values {
            // A payload of another shape (a deploy changed it) is, by default, dropped with
            // a warning, like any field that no longer decodes.
            let text = payload.to_string();
            let key = FLASH_PREFIX.trim_end_matches('.');
            if let Some(payload) = self.decode_field(key, &text, self.current_key().await)? {
                out.push(Flash { level, payload });
            }
        }
        self.take_flash_values().await?;
        Ok(out)
    }

    /// The queued flashes (level, payload) without removing them.
    pub(super) async fn peek_flash_values(
        &self,
    ) -> Result<Vec<(FlashLevel, serde_json::Value)>, SessionError> {
        let state = self.loaded().await?;
        Ok(flash_entries(&state)
            .into_iter()
            .map(|(_, text)| parse_flash(&text))
            .collect())
    }

    /// The queued flashes (level, payload), removed.
    pub(super) async fn take_flash_values(
        &self,
    ) -> Result<Vec<(FlashLevel, serde_json::Value)>, SessionError> {
        let mut state = self.loaded().await?;
        if state.writable().is_err() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for (key, text) in flash_entries(&state) {
            state.remove_field(&key);
            out.push(parse_flash(&text));
        }
        Ok(out)
    }
}

/// How a flash message is meant to be shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlashLevel {
    /// Neutral information (plain [`Session::flash`] messages).
    #[default]
    Info,
    /// Something worked.
    Success,
    /// Something to look at.
    Warning,
    /// Something failed.
    Error,
}

/// A flash message: its level and its payload ([`Session::flash_with`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Flash<T = String> {
    /// How to show it.
    #[serde(rename = "l")]
    pub level: FlashLevel,
    /// What to show.
    #[serde(rename = "p")]
    pub payload: T,
}

/// The flash fields of the session, oldest first: (field, JSON text).
pub(super) fn flash_entries(state: &State) -> Vec<(String, String)> {
    state
        .record
        .as_ref()
        .map(|r| {
            r.fields
                .range(FLASH_PREFIX.to_owned()..)
                .take_while(|(k, _)| k.starts_with(FLASH_PREFIX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// A stored flash as (level, payload): `{"l":…,"p":…}`, or a bare JSON string stored by
/// earlier versions (at `Info`); text that is not JSON is its own payload.
pub(super) fn parse_flash(text: &str) -> (FlashLevel, serde_json::Value) {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(mut map))
            if map.contains_key("l") && map.contains_key("p") =>
        {
            let level = map
                .remove("l")
                .and_then(|l| serde_json::from_value(l).ok())
                .unwrap_or_default();
            (level, map.remove("p").unwrap_or_default())
        }
        Ok(value) => (FlashLevel::Info, value),
        Err(_) => (FlashLevel::Info, serde_json::Value::String(text.to_owned())),
    }
}
