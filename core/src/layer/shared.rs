//! What a layer shares with the sessions it hands out: the configuration, the guarded
//! store, flood admission, the guessing detector and the recently ended sessions; and the
//! cookie verification and expiry arithmetic every session asks of it.

use std::net::IpAddr;
use std::time::Duration;

use crate::config::SessionConfig;
use crate::cookie::Candidates;
use crate::guard::Guarded;
use crate::guessing::{Detector, Verdict};
use crate::id::SessionId;
use crate::keyring::Verified;
use crate::metrics::bump;
use crate::record::{Limits, Millis, OwnExpiry, Record, Refresh};
use crate::ticket::Ended;

/// Everything a layer shares with the sessions it hands out.
pub(crate) struct Shared {
    pub(crate) config: SessionConfig,
    pub(crate) store: Guarded,
    /// Admission for new sessions: a flood of anonymous clients gets `503` at once when these
    /// run out, instead of queueing in front of the writes of sessions that exist.
    pub(crate) creates: tokio::sync::Semaphore,
    /// Invalid cookies counted per client.
    pub(crate) guesses: Detector,
    /// Sessions and users that ended here lately: their fallback tickets are refused.
    pub(crate) ended: Ended,
    /// The store answered that it keeps no per-user index: the per-user limit stops asking.
    pub(crate) no_user_index: std::sync::atomic::AtomicBool,
    /// The app's lifecycle event handler, if it set one.
    pub(crate) events: crate::events::Events,
}

/// What a request's cookies name, as the layer hands it to the session.
pub(crate) enum Presented {
    /// No cookie of our name.
    Nothing,
    /// Already verified (the layer had to decide on a `429` before the handler).
    Verified(Option<(SessionId, bool)>),
    /// Candidates to verify when the handler first uses the session: a request that never
    /// does pays for no HMAC.
    Unverified(Candidates, Option<IpAddr>),
}

impl Shared {
    /// Takes the first candidate whose signature verifies; counts, logs and (per client)
    /// tallies the others. Returns the chosen ID, and whether the client is to be throttled.
    pub(crate) fn verify(
        &self,
        found: &Candidates,
        client: Option<IpAddr>,
    ) -> (Option<(SessionId, bool)>, bool) {
        let mut rejected = found.malformed;
        let mut chosen = None;
        for value in &found.values {
            match self.config.keys.verify(value) {
                Some(Verified::Current(id)) if chosen.is_none() => chosen = Some((id, false)),
                Some(Verified::Stale(id)) if chosen.is_none() => chosen = Some((id, true)),
                Some(_) => {}
                None => rejected += 1,
            }
        }
        if rejected == 0 {
            return (chosen, false);
        }
        bump(&self.store.metrics.rejected_cookies);
        tracing::debug!(
            count = rejected,
            "session cookie refused: bad signature or malformed"
        );
        let throttle = chosen.is_none() && client.is_some_and(|c| self.guessed(c));
        (chosen, throttle)
    }

    /// Counts an invalid cookie against its client; true if the client is to be throttled.
    fn guessed(&self, client: IpAddr) -> bool {
        match self.guesses.invalid(&self.config.guessing, client) {
            Verdict::Counted => false,
            Verdict::Flagged => {
                tracing::warn!(%client, "possible session-ID guessing: many invalid cookies from one client");
                false
            }
            Verdict::Throttled => {
                bump(&self.store.metrics.guessing_throttled);
                true
            }
        }
    }

    pub(crate) fn millis(d: Duration) -> Millis {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }

    /// The idle timeout of a session with (`true`) or without a user.
    pub(crate) fn idle(&self, signed_in: bool) -> Millis {
        let config = &self.config;
        match config.anonymous_idle_timeout {
            Some(anonymous) if !signed_in => Self::millis(anonymous.min(config.idle_timeout)),
            _ => Self::millis(config.idle_timeout),
        }
    }

    /// The idle timeout of `record`: its own ([`Session::set_expiry`]) or the configured one.
    pub(crate) fn idle_for(&self, record: &Record) -> Millis {
        OwnExpiry::of(record).map_or_else(|| self.idle(record.user.is_some()), |own| own.idle)
    }

    /// Whether `record`'s cookie ends with the browser: its own choice or the configured one.
    pub(crate) fn browser_session_for(&self, record: Option<&Record>) -> bool {
        record
            .and_then(OwnExpiry::of)
            .map_or(self.config.browser_session, |own| !own.persistent)
    }

    /// The refresh interval for an idle timeout of `idle`.
    // Truncation is fine: this is a throttle, not a deadline.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    pub(crate) fn refresh_every(&self, idle: Millis) -> Millis {
        (idle as f64 * self.config.refresh_fraction) as u64
    }

    pub(crate) fn window(&self, now: Millis, idle: Millis) -> (Millis, Millis) {
        let interval = self.refresh_every(idle);
        (
            now.saturating_add(idle).saturating_sub(interval),
            now.saturating_add(idle),
        )
    }

    pub(crate) fn refresh(&self, now: Millis) -> Refresh {
        let (if_deadline_before, new_deadline) = self.window(now, self.idle(true));
        let anonymous = self
            .config
            .anonymous_idle_timeout
            .map(|_| self.window(now, self.idle(false)));
        Refresh {
            if_deadline_before,
            new_deadline,
            anonymous,
            now,
        }
    }

    pub(crate) fn new_record(&self, now: Millis) -> Record {
        Record::new(
            now,
            now.saturating_add(self.idle(false)),
            now.saturating_add(Self::millis(self.config.absolute_lifetime)),
        )
    }

    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_bytes: self.config.max_size,
            max_fields: self.config.max_fields,
        }
    }
}
