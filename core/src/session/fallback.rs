//! Fallback tickets ([`FailurePolicy::Fallback`]): the read-only copy of a session the
//! browser carries, opened when the store fails and issued or removed at commit.

use std::collections::BTreeMap;

use crate::config::FailurePolicy;
use crate::id::SessionKey;
use crate::layer::shared::Shared;
use crate::metrics::bump;
use crate::names::BINDING_FIELD;
use crate::record::{now_millis, Millis, Record};
use crate::store::SessionStore as _;
use crate::ticket::{Refused, Ticket};

use super::state::{Existence, Lifecycle, State, TicketOut};
use super::Session;

impl Session {
    /// The read-only record a valid ticket for the session `key` stands for, if the request
    /// carries one. Counts the tickets refused.
    pub(super) fn ticket_record(
        &self,
        state: &State,
        key: SessionKey,
        now: Millis,
    ) -> Option<Record> {
        let metrics = &self.shared.store.metrics;
        let text = key.to_string();
        for opened in state.ticket_cookie.open(&self.shared.config, now) {
            match opened {
                Ok(t)
                    if t.session == text
                        && !self.shared.ended.refuses(&t, &key, now)
                        && !self.shared.store.ended_recently(&key, t.issued) =>
                {
                    if !Self::ticket_fits_client(state, &t) {
                        bump(&metrics.binding_mismatches);
                        let terminates = self.shared.config.binding.terminates();
                        tracing::warn!(session = %key.fingerprint(), refused = terminates, "fallback ticket used from a different client than its session is bound to");
                        if terminates {
                            return None;
                        }
                    }
                    let mut record = Record::new(t.issued, t.expires, t.expires);
                    record.user = Some(t.user);
                    record.fields = t.fields;
                    return Some(record);
                }
                Ok(_) => bump(&metrics.tickets_refused_stale),
                Err(Refused::Expired) => bump(&metrics.tickets_refused_expired),
                Err(Refused::Forged) => bump(&metrics.tickets_refused_forged),
            }
        }
        None
    }

    /// Whether a ticket may serve this client: it carries the session's binding (a ticket
    /// issued while binding was off, or forged around it, carries none and serves no bound
    /// client).
    pub(super) fn ticket_fits_client(state: &State, ticket: &Ticket) -> bool {
        state.bound.as_ref().is_none_or(|current| {
            ticket.fields.get(BINDING_FIELD)
                == Some(&serde_json::Value::String(current.clone()).to_string())
        })
    }

    /// What the response does with the fallback ticket: issued while a session with a user
    /// is in use, again once the one presented is older than the refresh interval (read from
    /// its clear issue time: no cryptography on the common path) or this request changed
    /// what it says; removed once the session is known to be gone or without a user.
    pub(super) fn ticket_out(&self, state: &State) -> TicketOut {
        let config = &self.shared.config;
        if config.failure_policy != FailurePolicy::Fallback || !state.touched || state.degraded {
            return TicketOut::Keep;
        }
        let now = now_millis();
        let presented = state.ticket_cookie.values(config);
        let live = match (state.lifecycle, state.existence, state.key, &state.record) {
            (Lifecycle::Purged, ..) | (_, Existence::Absent, ..) => None,
            (_, Existence::Loaded, Some(key), Some(record)) => {
                record.user.as_ref().map(|user| (key, user, record))
            }
            // Not loaded (a blind write): nothing known to put in a ticket, nothing to clear.
            _ => return TicketOut::Keep,
        };
        let Some((key, user, record)) = live else {
            return if presented.is_empty() {
                TicketOut::Keep
            } else {
                TicketOut::Remove
            };
        };
        let refresh = Shared::millis(config.fallback.refresh_interval());
        let fresh = presented
            .first()
            .and_then(|v| crate::ticket::issued_of(v))
            .is_some_and(|issued| now < issued.saturating_add(refresh) && issued <= now);
        if fresh && !state.ticket_dirty {
            return TicketOut::Keep;
        }
        let fallback = &config.fallback;
        let mut fields = fallback_fields(&fallback.fields, record);
        if let Some(bound) = record.fields.get(BINDING_FIELD) {
            // The binding travels with the ticket: an outage must not unbind a session.
            fields.insert(BINDING_FIELD.to_owned(), bound.clone());
        }
        let ticket = Ticket {
            user: user.clone(),
            session: key.to_string(),
            issued: self.shared.ended.issue_time(user, now),
            expires: now
                .saturating_add(Shared::millis(fallback.lifetime))
                .min(record.idle_deadline)
                .min(record.absolute_deadline),
            fields,
        };
        match fallback.keys.seal(&ticket) {
            Some(value) => {
                bump(&self.shared.store.metrics.tickets_issued);
                TicketOut::Set(value)
            }
            None => TicketOut::Keep,
        }
    }
}

/// The fields a ticket carries: the configured ones the record has, in order, while they fit
/// in [`crate::FALLBACK_FIELDS_MAX_BYTES`].
pub(super) fn fallback_fields(names: &[String], record: &Record) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut bytes = 0;
    for name in names {
        let Some(value) = record.fields.get(name) else {
            continue;
        };
        bytes += name.len() + value.len();
        if bytes > crate::FALLBACK_FIELDS_MAX_BYTES {
            tracing::warn!(field = %name, "fallback ticket: field left out, over {} bytes", crate::FALLBACK_FIELDS_MAX_BYTES);
            break;
        }
        out.insert(name.clone(), value.clone());
    }
    out
}
