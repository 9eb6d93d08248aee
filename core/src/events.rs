//! Lifecycle events for the app: audit logs, security alerts ("a new login"), analytics.
//!
//! [`crate::SessionLayer::on_event`] sets a handler; the layer hands it each event through a
//! bounded queue drained by a thread of its own, so that a slow or failing handler never slows
//! or fails a request: when the queue is full the event is dropped and counted
//! (`cloakroom_events_dropped_total`). Events carry the user and the session's fingerprint
//! (a short hash of its store key), never the session ID.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::RwLock;

use crate::metrics::{bump, SessionMetrics};

/// Events queued for the handler at most; more are dropped and counted.
pub const EVENT_QUEUE: usize = 4096;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndReason {
    /// Its user logged out.
    LoggedOut,
    /// Ended from another of the user's sessions ("log out my other devices").
    Revoked,
    /// Ended by an operator (`cloakroom revoke`, the admin API).
    RevokedByOperator,
    /// The per-user session limit ended it, the oldest, for a new login.
    Replaced,
    /// Used from a different client than it is bound to, with a binding that ends sessions.
    BindingMismatch,
    /// A correctly signed cookie found no session: it expired, or the store lost it (the
    /// store could not tell which deadline passed).
    Expired,
    /// It expired unused: its idle (sliding) deadline passed. Said by stores that keep an
    /// expired session until a purge (PostgreSQL, embedded, memory).
    ExpiredIdle,
    /// It reached its absolute lifetime, however active it was. Said as for
    /// [`EndReason::ExpiredIdle`].
    ExpiredAbsolute,
}

impl EndReason {
    /// Every reason, in a fixed order (metric labels).
    pub const ALL: [Self; 8] = [
        Self::LoggedOut,
        Self::Revoked,
        Self::RevokedByOperator,
        Self::Replaced,
        Self::BindingMismatch,
        Self::Expired,
        Self::ExpiredIdle,
        Self::ExpiredAbsolute,
    ];

    /// The reason as a label: `logged_out`, `revoked`, `revoked_by_operator`, `replaced`,
    /// `binding_mismatch`, `expired`, `expired_idle`, `expired_absolute`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoggedOut => "logged_out",
            Self::Revoked => "revoked",
            Self::RevokedByOperator => "revoked_by_operator",
            Self::Replaced => "replaced",
            Self::BindingMismatch => "binding_mismatch",
            Self::Expired => "expired",
            Self::ExpiredIdle => "expired_idle",
            Self::ExpiredAbsolute => "expired_absolute",
        }
    }

    /// The reason a label names (see [`EndReason::as_str`]).
    #[must_use]
    pub fn parse(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == label)
    }

    /// Whether the session expired (any of the three expiry reasons).
    #[must_use]
    pub fn is_expiry(self) -> bool {
        matches!(
            self,
            Self::Expired | Self::ExpiredIdle | Self::ExpiredAbsolute
        )
    }

    /// Its place in [`EndReason::ALL`] (a metric's slot).
    pub(crate) fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step in a session's life. `session` is the fingerprint of its store key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// A session was filed (anonymous or not).
    Created {
        /// Its fingerprint.
        session: String,
    },
    /// A session was given a user (a login).
    LoggedIn {
        /// The user.
        user: String,
        /// Its fingerprint (after the login's new ID).
        session: String,
    },
    /// A session got a new ID for a change of privilege.
    IdCycled {
        /// The new ID's fingerprint.
        session: String,
        /// The old ID's fingerprint.
        previous: String,
    },
    /// A session got a new ID by periodic renewal.
    Renewed {
        /// The new ID's fingerprint.
        session: String,
        /// The old ID's fingerprint.
        previous: String,
    },
    /// A session ended.
    Ended {
        /// Its user, when the layer knew it.
        user: Option<String>,
        /// Its fingerprint.
        session: String,
        /// Why.
        reason: EndReason,
    },
}

/// The handler's queue, if one is set.
#[derive(Default)]
pub(crate) struct Events {
    queue: RwLock<Option<SyncSender<SessionEvent>>>,
}

impl Events {
    /// Hands events to `handler` on a thread of its own from now on (replacing any earlier
    /// handler, whose thread ends).
    pub(crate) fn set(&self, handler: impl Fn(SessionEvent) + Send + 'static) {
        let (tx, rx) = sync_channel::<SessionEvent>(EVENT_QUEUE);
        let spawned = std::thread::Builder::new()
            .name("cloakroom-events".into())
            .spawn(move || {
                for event in rx {
                    let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        handler(event);
                    }));
                    if handled.is_err() {
                        tracing::error!(
                            "the session event handler panicked; later events still go to it"
                        );
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the session events thread; events are off");
            return;
        }
        *self
            .queue
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tx);
    }

    /// Whether a handler is set (so that the layer only gathers what events need then).
    pub(crate) fn on(&self) -> bool {
        self.queue
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }

    /// Queues `event` for the handler, never waiting: a full queue drops it (counted).
    pub(crate) fn emit(&self, metrics: &SessionMetrics, event: SessionEvent) {
        if let SessionEvent::Ended { reason, .. } = &event {
            bump(&metrics.sessions_ended[reason.index()]);
        }
        let queue = self
            .queue
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tx) = queue.as_ref() {
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(event) {
                bump(&metrics.events_dropped);
            }
        }
    }
}
