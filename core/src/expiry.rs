//! A session's own lifetime, within bounds the layer sets: "remember me".
//!
//! By default every session lives by the layer's configuration (idle timeout, absolute
//! lifetime, browser-session cookie). [`crate::Session::set_expiry`] gives one session its
//! own, typically at login when the user ticks "remember me": a longer idle timeout and
//! lifetime, and a cookie that outlives the browser. The layer's
//! [`crate::SessionConfigBuilder::with_max_expiry`] bounds what a handler may ask for, so a
//! bug (or an attacker-controlled form value) cannot make a session live for ever.
//!
//! The store keeps the choice in the session itself (the reserved field
//! [`crate::EXPIRY_FIELD`] and the absolute deadline), so every instance and every later
//! request slides the session by its own timeout, and no store needed a new column.

use std::time::Duration;

/// How long one session lives and whether its cookie persists ("remember me"):
/// [`crate::Session::set_expiry`] gives it to one session, within the bounds of
/// [`crate::SessionConfigBuilder::with_max_expiry`]; every later request, on any instance,
/// slides that session by its own idle timeout.
///
/// ```
/// use std::time::Duration;
/// use cloakroom::Expiry;
/// let day = Duration::from_secs(24 * 3600);
/// // "Remember me": 30 days idle, 90 days at most, a cookie that survives a browser restart.
/// let remember = Expiry::new(30 * day, 90 * day).with_browser_session(false);
/// assert_eq!(remember.idle_timeout(), 30 * day);
/// assert!(!remember.browser_session());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    idle_timeout: Duration,
    absolute_lifetime: Duration,
    browser_session: bool,
}

impl Expiry {
    /// An idle timeout and an absolute lifetime (counted from the session's creation), with
    /// a persistent cookie (`Max-Age`); see [`Expiry::with_browser_session`].
    #[must_use]
    pub fn new(idle_timeout: Duration, absolute_lifetime: Duration) -> Self {
        Self {
            idle_timeout,
            absolute_lifetime,
            browser_session: false,
        }
    }

    /// `true`: the cookie carries no `Max-Age`, so the browser drops it when it closes.
    #[must_use]
    pub fn with_browser_session(mut self, browser_session: bool) -> Self {
        self.browser_session = browser_session;
        self
    }

    /// The idle timeout.
    #[must_use]
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// The absolute lifetime, from the session's creation.
    #[must_use]
    pub fn absolute_lifetime(&self) -> Duration {
        self.absolute_lifetime
    }

    /// Whether the cookie ends with the browser session.
    #[must_use]
    pub fn browser_session(&self) -> bool {
        self.browser_session
    }

    /// Why this expiry is not allowed under `max`, if it is not.
    pub(crate) fn refusal(&self, max: &Expiry) -> Option<&'static str> {
        if self.idle_timeout.is_zero() || self.absolute_lifetime.is_zero() {
            Some("durations must be positive")
        } else if self.idle_timeout > self.absolute_lifetime {
            Some("the idle timeout must not exceed the lifetime")
        } else if self.idle_timeout > max.idle_timeout {
            Some("the idle timeout exceeds the layer's maximum")
        } else if self.absolute_lifetime > max.absolute_lifetime {
            Some("the lifetime exceeds the layer's maximum")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        let h = Duration::from_secs(3600);
        let max = Expiry::new(24 * h, 48 * h);
        assert_eq!(Expiry::new(h, 2 * h).refusal(&max), None);
        assert_eq!(Expiry::new(24 * h, 48 * h).refusal(&max), None);
        for bad in [
            Expiry::new(Duration::ZERO, h),
            Expiry::new(h, Duration::ZERO),
            Expiry::new(2 * h, h),
            Expiry::new(25 * h, 48 * h),
            Expiry::new(h, 49 * h),
        ] {
            assert!(bad.refusal(&max).is_some(), "{bad:?}");
        }
    }
}
