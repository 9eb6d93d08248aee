//! Taking over a foreign session (`crate::import`) when the request has none of its own, and
//! ending it when the user logs out here.

use crate::import::{Found, Imported};
use crate::metrics::bump;
use crate::names::IMPORTED_FIELD;
use crate::record::{now_millis, UserChange};
use crate::store::StoreError;

use super::data::check_key;
use super::state::{Existence, State};
use super::Session;

impl Session {
    /// With no session of its own, takes over the foreign session the request's cookie names,
    /// if one verifies: the request then has a new session (filed at the commit, which sets
    /// the cookie) with the foreign one's data and user.
    pub(super) async fn import_foreign(&self, state: &mut State) {
        let Some((index, values)) = state.foreign.take() else {
            return;
        };
        let Some(source) = self.shared.config.imports.0.get(index).cloned() else {
            return;
        };
        let metrics = &self.shared.store.metrics;
        let limit = self.shared.config.store_timeout;
        for value in values {
            let found = tokio::time::timeout(limit, source.find(&value))
                .await
                .unwrap_or(Err(StoreError::Timeout(limit)));
            match found {
                Ok(Found::Session(imported)) => {
                    if self.adopt_foreign(state, source.cookie_name(), imported) {
                        bump(&metrics.imports);
                        tracing::info!(source = source.cookie_name(), "foreign session imported");
                    }
                    return;
                }
                Ok(Found::Nothing) => {}
                Ok(Found::Unreadable(format)) => {
                    bump(&metrics.imports_unreadable);
                    tracing::info!(
                        source = source.cookie_name(),
                        format,
                        "foreign session not imported: its record is not read"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, source = source.cookie_name(), "foreign sessions unavailable; serving as anonymous");
                    return;
                }
            }
        }
    }

    /// Stages `imported` as this request's new session; answers whether it did (a user past
    /// the size limit imports nothing).
    fn adopt_foreign(&self, state: &mut State, cookie: &str, imported: Imported) -> bool {
        let shared = &self.shared;
        if imported
            .user
            .as_ref()
            .is_some_and(|u| u.is_empty() || u.len() > shared.config.max_size)
        {
            tracing::info!(
                source = cookie,
                "foreign session not imported: its user is not usable here"
            );
            return false;
        }
        let now = now_millis();
        let limits = shared.limits();
        let mut record = shared.new_record(now);
        let mut changes = std::mem::take(&mut state.pending);
        let marker = serde_json::json!([cookie, imported.handle]).to_string();
        record
            .fields
            .insert(IMPORTED_FIELD.to_owned(), marker.clone());
        changes.set.insert(IMPORTED_FIELD.to_owned(), marker);
        if let Some(user) = imported.user {
            let deadline = now.saturating_add(shared.idle(true));
            record.idle_deadline = deadline.min(record.absolute_deadline);
            record.user = Some(user.clone());
            changes.idle_deadline = Some(deadline);
            changes.user = Some(UserChange::Set(user));
        }
        let mut skipped = imported.skipped;
        for (name, value) in imported.fields {
            if check_key(shared, &name).is_err() {
                skipped += 1;
                continue;
            }
            record.fields.insert(name.clone(), value.clone());
            if limits.check(&record).is_err() {
                record.fields.remove(&name);
                skipped += 1;
                continue;
            }
            changes.set.insert(name, value);
        }
        if skipped > 0 {
            shared.store.metrics.import_skipped_fields.fetch_add(
                u64::try_from(skipped).unwrap_or(u64::MAX),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        state.pending = changes;
        state.record = Some(record);
        state.existence = Existence::Absent;
        true
    }

    /// After a logout here: ends the foreign session this one was imported from, so that the
    /// old app cannot keep it alive.
    pub(super) async fn end_foreign(&self, marker: &str) {
        let Ok((cookie, handle)) = serde_json::from_str::<(String, String)>(marker) else {
            return;
        };
        let Some(source) = self.shared.config.imports.named(&cookie) else {
            return;
        };
        if let Err(e) = source.end(&handle).await {
            tracing::warn!(error = %e, source = cookie, "could not end the foreign session this one was imported from");
        }
    }
}
