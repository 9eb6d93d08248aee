//! Counters for operators: what the layer did and what went wrong, in Prometheus text form.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Monotonic counters kept by a [`crate::SessionLayer`]. Cheap to update (relaxed atomics).
        #[derive(Debug, Default)]
        pub struct SessionMetrics {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        impl SessionMetrics {
            /// Renders every counter in the Prometheus text exposition format.
            #[must_use]
            pub fn render_prometheus(&self) -> String {
                let mut out = String::new();
                $(
                    let _ = writeln!(out, "# TYPE cloakroom_{}_total counter", stringify!($name));
                    let _ = writeln!(out, "cloakroom_{}_total {}", stringify!($name), self.$name.load(Ordering::Relaxed));
                )*
                out
            }
        }
    };
}

counters! {
    /// Sessions loaded from the store.
    loads,
    /// Sessions created.
    creates,
    /// New sessions refused because too many were being created at once (a flood).
    creates_refused,
    /// Conditional writes applied.
    applies,
    /// Session IDs cycled.
    cycles,
    /// Sessions destroyed.
    destroys,
    /// Idle deadlines slid forward.
    refreshes,
    /// Cookies refused: forged, malformed, or signed by an unknown key.
    rejected_cookies,
    /// Validly signed cookies whose session had expired or was unknown to the store.
    expired_seen,
    /// Requests refused with `429` because their client kept sending invalid cookies.
    guessing_throttled,
    /// Unsafe cross-site requests refused by the CSRF guard.
    csrf_rejections,
    /// Requests whose client properties differed from those the session is bound to.
    binding_mismatches,
    /// Writes refused because the session had ended (a would-be resurrection).
    writes_to_ended_sessions,
    /// Store calls that failed.
    store_errors,
    /// Store calls that timed out.
    store_timeouts,
    /// Store calls not attempted because the circuit breaker was open.
    circuit_rejections,
    /// Requests served a read-only session from a fallback ticket while the store was down.
    degraded_requests,
    /// Fallback tickets issued (or re-issued) while the store answered.
    tickets_issued,
    /// Fallback tickets refused: past their lifetime.
    tickets_refused_expired,
    /// Fallback tickets refused: not sealed by a key of the ring (tampered, forged, retired).
    tickets_refused_forged,
    /// Fallback tickets refused: for another session, or one that ended.
    tickets_refused_stale,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
