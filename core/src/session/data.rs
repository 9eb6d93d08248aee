//! The session's data API: typed reads and writes of fields, counters, and clearing, each
//! checked against the session's limits before the store is asked.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};

use crate::config::DecodeFailure;
use crate::layer::shared::Shared;
use crate::metrics::bump;
use crate::names::RESERVED_PREFIX;
use crate::record::{now_millis, Applied, Changes, Limits, Record};
use crate::store::{SessionStore as _, StoreError};
use crate::SessionError;

use super::state::{Access, Existence, Lifecycle, State};
use super::Session;

/// Room an integer counter takes, counted against the size limit before the store answers.
pub(super) const COUNTER_BYTES: usize = 20;

pub(super) fn check_key(shared: &Shared, key: &str) -> Result<(), SessionError> {
    if key.is_empty() || key.len() > shared.config.max_key_len || key.starts_with(RESERVED_PREFIX) {
        return Err(SessionError::InvalidKey(key.chars().take(64).collect()));
    }
    Ok(())
}

impl Session {
    /// Reads the value under `key`, or `None` if there is none.
    ///
    /// # Errors
    /// [`SessionError::Store`] if the session cannot be loaded, [`SessionError::Decode`] if the
    /// stored value is not a `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let state = self.loaded().await?;
        let Some(text) = state.record.as_ref().and_then(|r| r.fields.get(key)) else {
            return Ok(None);
        };
        self.decode_field(key, text, state.key)
    }

    /// Reads `key` as a `T`, or, when it holds an older shape `Old`, upgrades it with
    /// `T::from` and stores the new shape (written when the request ends): the way to change
    /// a field's type in a deploy without losing what sessions hold.
    ///
    /// ```
    /// # async fn demo(session: cloakroom::Session) -> Result<(), cloakroom::SessionError> {
    /// #[derive(serde::Deserialize)]
    /// struct CartV1(Vec<String>);
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Cart { items: Vec<(String, u32)> }
    /// impl From<CartV1> for Cart {
    ///     fn from(old: CartV1) -> Self {
    ///         Cart { items: old.0.into_iter().map(|name| (name, 1)).collect() }
    ///     }
    /// }
    /// let cart: Option<Cart> = session.get_upgraded::<Cart, CartV1>("cart").await?;
    /// # let _ = cart; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Session::get`]; and as [`Session::insert`] when the upgraded value is stored.
    pub async fn get_upgraded<T, Old>(&self, key: &str) -> Result<Option<T>, SessionError>
    where
        T: DeserializeOwned + Serialize + From<Old>,
        Old: DeserializeOwned,
    {
        let old = {
            let state = self.loaded().await?;
            let Some(text) = state.record.as_ref().and_then(|r| r.fields.get(key)) else {
                return Ok(None);
            };
            if let Ok(current) = serde_json::from_str::<T>(text) {
                return Ok(Some(current));
            }
            match serde_json::from_str::<Old>(text) {
                Ok(old) => old,
                Err(_) => return self.decode_field(key, text, state.key),
            }
        };
        let upgraded = T::from(old);
        // Written back when the session can take a write; a read through an old ID or from a
        // fallback ticket still gets the upgraded value. (A plain write: a concurrent
        // `update` of the same field in another request may be overwritten.)
        let writable = self.touch().await.writable().is_ok();
        if writable {
            self.insert(key, &upgraded).await?;
        }
        Ok(Some(upgraded))
    }

    /// `text`, the stored value of `key`, as a `T`. A value of another shape (a deploy changed
    /// the field's type) reads as absent by default, logged and counted, and stays stored
    /// until the field is written ([`crate::DecodeFailure`]).
    pub(super) fn decode_field<T: DeserializeOwned>(
        &self,
        key: &str,
        text: &str,
        session: Option<crate::SessionKey>,
    ) -> Result<Option<T>, SessionError> {
        match serde_json::from_str(text) {
            Ok(value) => Ok(Some(value)),
            Err(source) if self.shared.config.decode_failure == DecodeFailure::Absent => {
                bump(&self.shared.store.metrics.decode_failures);
                // Never the error's text: serde quotes the value it met.
                tracing::warn!(
                    field = key,
                    session = %session.map(|k| k.fingerprint()).unwrap_or_default(),
                    kind = ?source.classify(),
                    line = source.line(),
                    column = source.column(),
                    "a stored value does not decode as the type asked for: read as absent (kept until the field is written)"
                );
                Ok(None)
            }
            Err(source) => Err(SessionError::Decode {
                key: key.to_owned(),
                source,
            }),
        }
    }

    /// Stores `value` under `key` (written when the request ends).
    ///
    /// # Errors
    /// [`SessionError::InvalidKey`], [`SessionError::Encode`], [`SessionError::TooLarge`],
    /// [`SessionError::TooManyFields`] (nothing is stored then), [`SessionError::Superseded`]
    /// through a replaced ID, or a store error from loading the session.
    pub async fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<(), SessionError> {
        check_key(&self.shared, key)?;
        let text = serde_json::to_string(&value).map_err(|source| SessionError::Encode {
            key: key.to_owned(),
            source,
        })?;
        self.set_field(key, text).await
    }

    /// Whether `state` may grow by one field `key` holding `len` bytes.
    pub(super) fn check_growth(
        &self,
        state: &State,
        key: &str,
        len: usize,
    ) -> Result<(), SessionError> {
        let record = state.record.as_ref();
        let replaced = record.and_then(|r| r.fields.get(key));
        let count = record.map_or(0, |r| r.fields.len()) + usize::from(replaced.is_none());
        let limit = self.shared.config.max_fields;
        if count > limit {
            return Err(SessionError::TooManyFields { count, limit });
        }
        let current = record.map_or(0, Record::data_size);
        let size = current - replaced.map_or(0, |old| key.len() + old.len()) + key.len() + len;
        let limit = self.shared.config.max_size;
        if size > limit {
            return Err(SessionError::TooLarge { size, limit });
        }
        Ok(())
    }

    pub(super) async fn set_field(&self, key: &str, text: String) -> Result<(), SessionError> {
        let mut state = self.loaded().await?;
        state.writable()?;
        self.check_growth(&state, key, text.len())?;
        let now = now_millis();
        let shared = &self.shared;
        state
            .record
            .get_or_insert_with(|| shared.new_record(now))
            .fields
            .insert(key.to_owned(), text.clone());
        state.pending.remove.remove(key);
        state.pending.set.insert(key.to_owned(), text);
        Ok(())
    }

    /// Removes `key`, returning the value it held.
    ///
    /// # Errors
    /// As [`Session::get`]; [`SessionError::Superseded`] through a replaced ID.
    pub async fn remove<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let old = self.get::<T>(key).await?;
        let mut state = self.touch().await;
        // Removed whether or not it decoded (an old shape reads as absent but is there).
        if state
            .record
            .as_ref()
            .is_some_and(|r| r.fields.contains_key(key))
        {
            state.writable()?;
            state.remove_field(key);
        }
        Ok(old)
    }

    /// Read-modify-write of the value under `key` that never loses a concurrent change: `f`
    /// gets the value as the store holds it now (`None` if absent) and returns the new one,
    /// which is written only if the field still holds what `f` saw (compare-and-set in the
    /// store); otherwise `f` runs again on the newer value, up to 32 times, after a growing
    /// random pause. Applied at once,
    /// like [`Session::increment`], and returns what was written. In a request without a
    /// session yet, the value is staged for the session created at commit.
    ///
    /// # Errors
    /// [`SessionError::InvalidKey`]; [`SessionError::Decode`] if the stored value is not a
    /// `T`; [`SessionError::Store`] with [`StoreError::Conflict`] after 32 lost races, or
    /// [`StoreError::LimitExceeded`]; [`SessionError::Gone`] if the session ended;
    /// [`SessionError::Superseded`] through a replaced ID.
    ///
    /// ```
    /// # async fn demo(session: cloakroom::Session) -> Result<(), cloakroom::SessionError> {
    /// let cart: Vec<String> = session
    ///     .update("cart", |cart: Option<Vec<String>>| {
    ///         let mut cart = cart.unwrap_or_default();
    ///         cart.push("milk".into());
    ///         cart
    ///     })
    ///     .await?;
    /// # let _ = cart; Ok(()) }
    /// ```
    pub async fn update<T, F>(&self, key: &str, mut f: F) -> Result<T, SessionError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> T,
    {
        const ATTEMPTS: u32 = 32;
        check_key(&self.shared, key)?;
        let encode = |value: &T| {
            serde_json::to_string(value).map_err(|source| SessionError::Encode {
                key: key.to_owned(),
                source,
            })
        };
        let store = &self.shared.store;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                // Lost a race: back off a random while, longer each time, so that many
                // writers of one field take turns instead of colliding again.
                let mut jitter = [0u8; 2];
                let _ = getrandom::fill(&mut jitter);
                let micros = u64::from(u16::from_le_bytes(jitter)) % (250 * u64::from(attempt));
                tokio::time::sleep(Duration::from_micros(micros)).await;
            }
            let target = {
                let state = self.loaded().await?;
                state.writable()?;
                state.key.filter(|_| state.existence == Existence::Loaded)
            };
            let Some(target) = target else {
                // No session in the store yet: stage it for the one the commit creates.
                let current = self.get::<T>(key).await?;
                let next = f(current);
                self.insert(key, &next).await?;
                return Ok(next);
            };
            // The value as the store holds it now, not as this request first read it.
            let now = now_millis();
            let stored = store
                .load(&target, now, None)
                .await?
                .and_then(|loaded| loaded.record.fields.get(key).cloned());
            let current = match stored.as_deref() {
                Some(text) => self.decode_field::<T>(key, text, Some(target))?,
                None => None,
            };
            let next = f(current);
            let text = encode(&next)?;
            let mut changes = Changes::default();
            changes.set.insert(key.to_owned(), text.clone());
            changes.expect.insert(key.to_owned(), stored);
            changes.limits = Some(self.shared.limits());
            bump(&store.metrics.applies);
            match store.apply(&target, &changes, now).await {
                Ok(Applied::Done { .. }) => {
                    let mut state = self.state.lock().await;
                    if let Some(record) = state.record.as_mut() {
                        record.fields.insert(key.to_owned(), text);
                    }
                    // Written already: the commit must not write an older staged value.
                    state.pending.set.remove(key);
                    state.pending.remove.remove(key);
                    return Ok(next);
                }
                Ok(Applied::Gone) => return Err(SessionError::Gone),
                Ok(Applied::Aliased) => return Err(SessionError::Superseded),
                Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict(key.to_owned()).into())
    }

    /// Removes `key` without decoding what it holds, so that a value that no longer
    /// deserialises (an old shape after a deploy) can still be removed. Returns whether
    /// there was one.
    ///
    /// # Errors
    /// [`SessionError::InvalidKey`]; a store error from loading the session;
    /// [`SessionError::Superseded`] through a replaced ID.
    ///
    /// ```
    /// # async fn demo(session: cloakroom::Session) -> Result<(), cloakroom::SessionError> {
    /// if session.remove_value("cart").await? {
    ///     session.flash("Your cart was emptied.").await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn remove_value(&self, key: &str) -> Result<bool, SessionError> {
        check_key(&self.shared, key)?;
        let mut state = self.loaded().await?;
        let present = state
            .record
            .as_ref()
            .is_some_and(|r| r.fields.contains_key(key));
        if present {
            state.writable()?;
            state.remove_field(key);
        }
        Ok(present)
    }

    /// Whether `key` holds a value (loads the session if needed).
    ///
    /// # Errors
    /// A store error from loading the session.
    pub async fn contains_key(&self, key: &str) -> Result<bool, SessionError> {
        let state = self.loaded().await?;
        Ok(!key.starts_with(RESERVED_PREFIX)
            && state
                .record
                .as_ref()
                .is_some_and(|r| r.fields.contains_key(key)))
    }

    /// The keys the app has stored, in order (Cloakroom's own fields, such as flashes and the
    /// CSRF token, are left out).
    ///
    /// # Errors
    /// A store error from loading the session.
    pub async fn keys(&self) -> Result<Vec<String>, SessionError> {
        let state = self.loaded().await?;
        Ok(state.record.as_ref().map_or_else(Vec::new, |r| {
            r.fields
                .keys()
                .filter(|k| !k.starts_with(RESERVED_PREFIX))
                .cloned()
                .collect()
        }))
    }

    /// Adds `by` to the integer under `key` (missing counts as 0) **atomically in the store**
    /// and returns the new value: concurrent increments are never lost.
    ///
    /// Costs one store call and needs no prior load; any other pending changes go with it.
    /// The store checks the session's size and field limits before it writes.
    ///
    /// # Errors
    /// [`SessionError::InvalidKey`]; [`SessionError::Store`] with
    /// [`StoreError::NotAnInteger`] if the key holds something else, or
    /// [`StoreError::LimitExceeded`]; [`SessionError::Gone`] if the session ended while this
    /// request was using it; [`SessionError::Superseded`] through a replaced ID.
    pub async fn increment(&self, key: &str, by: i64) -> Result<i64, SessionError> {
        check_key(&self.shared, key)?;
        let mut state = self.touch().await;
        if state.bound.is_some() {
            // A bound session is checked on load: a blind write must not skip the check.
            self.ensure_loaded(&mut state).await?;
        } else if state.existence == Existence::Unknown {
            self.peek_cached(&mut state);
        }
        state.writable()?;
        if state.existence == Existence::Loaded {
            self.check_growth(&state, key, COUNTER_BYTES)?;
        }
        let mut changes = std::mem::take(&mut state.pending);
        changes.increments.insert(key.to_owned(), by);
        let result = self.write_now(&mut state, &changes).await;
        match result {
            Ok(counters) => {
                let value = counters.get(key).copied().unwrap_or(by);
                if let Some(record) = state.record.as_mut() {
                    record.fields.insert(key.to_owned(), value.to_string());
                }
                Ok(value)
            }
            Err(e) => {
                changes.increments.clear();
                state.pending = changes;
                Err(e)
            }
        }
    }

    /// Removes every key (the user tag stays; use [`Session::destroy`] to log out).
    ///
    /// # Errors
    /// A store error from loading the session; [`SessionError::Superseded`] through a
    /// replaced ID.
    pub async fn clear(&self) -> Result<(), SessionError> {
        let mut state = self.loaded().await?;
        state.writable()?;
        if let Some(record) = state.record.as_mut() {
            record.fields.clear();
        }
        state.pending.clear = true;
        state.pending.set.clear();
        state.pending.remove.clear();
        Ok(())
    }

    /// The limits a write must send: none when the layer has checked them against the record
    /// it loaded (the store may then write without re-checking), else the store checks.
    pub(super) fn limits_for(&self, state: &State) -> Option<Limits> {
        (state.existence != Existence::Loaded).then(|| self.shared.limits())
    }

    /// Writes `changes` at once: into the existing session, or a new one if there is none.
    pub(super) async fn write_now(
        &self,
        state: &mut State,
        changes: &Changes,
    ) -> Result<BTreeMap<String, i64>, SessionError> {
        let now = now_millis();
        let mut changes = changes.clone();
        changes.limits = self.limits_for(state);
        if let Some(key) = state.key.filter(|_| state.existence != Existence::Absent) {
            let store = &self.shared.store;
            bump(&store.metrics.applies);
            match store.apply(&key, &changes, now).await? {
                Applied::Done {
                    counters,
                    key: target,
                } => {
                    state.key = Some(target);
                    if state.existence == Existence::Unknown {
                        state.existence = Existence::Confirmed;
                    }
                    return Ok(counters);
                }
                Applied::Aliased => {
                    state.access = Access::Alias;
                    return Err(SessionError::Superseded);
                }
                Applied::Gone if state.existence == Existence::Unknown => {
                    // A blind write to a cookie whose session expired: like no cookie at all.
                    state.forget();
                }
                Applied::Gone => {
                    bump(&store.metrics.writes_to_ended_sessions);
                    state.forget();
                    state.lifecycle = Lifecycle::Purged;
                    return Err(SessionError::Gone);
                }
            }
        }
        let mut record = self.shared.new_record(now);
        changes.limits = Some(self.shared.limits());
        let counters = record.apply(&changes).map_err(SessionError::Store)?;
        self.create(state, record).await?;
        Ok(counters)
    }
}
