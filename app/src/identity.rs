//! Logging in: what a user name may be, and what a login stores in the session.

use axum::http::{header, HeaderMap};
use cloakroom::{now_millis, Expiry, Session, SessionError};

/// The session field holding when the user logged in (shown on the profile; carried by the
/// fallback ticket, so it is there during a store outage too).
pub const LOGIN_TIME: &str = "login_time";

/// Longest user name, in characters.
pub const MAX_USERNAME: usize = 64;
/// How much of the User-Agent header is kept for "your devices".
const MAX_USER_AGENT: usize = 200;

/// Why a user name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UsernameError {
    /// Missing or blank.
    #[error("username required")]
    Empty,
    /// Too long.
    #[error("username too long (at most {MAX_USERNAME} characters)")]
    TooLong,
    /// Characters other than letters, digits, `.`, `_`, `-`, `@`.
    #[error("username may only contain letters, digits, '.', '_', '-' and '@'")]
    Characters,
}

/// Validates a user name (trimmed).
///
/// # Errors
/// [`UsernameError`].
pub fn validate_username(name: &str) -> Result<String, UsernameError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(UsernameError::Empty);
    }
    if name.chars().count() > MAX_USERNAME {
        return Err(UsernameError::TooLong);
    }
    if !name
        .chars()
        .all(|c| c.is_alphanumeric() || "._-@".contains(c))
    {
        return Err(UsernameError::Characters);
    }
    Ok(name.to_owned())
}

/// What a login records.
#[derive(Debug, Clone)]
pub struct Login {
    user: String,
    user_agent: String,
    remember: Option<Expiry>,
}

impl Login {
    /// A login of `user` from the client that sent `headers`.
    #[must_use]
    pub fn new(user: &str, headers: &HeaderMap) -> Self {
        let user_agent = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown")
            .chars()
            .take(MAX_USER_AGENT)
            .collect();
        Self {
            user: user.to_owned(),
            user_agent,
            remember: None,
        }
    }

    /// "Remember me": the session gets the longest expiry the layer allows (`--remember-me`)
    /// and a cookie that outlives the browser.
    #[must_use]
    pub fn remembered(mut self, remember: bool, sessions: &cloakroom::SessionLayer) -> Self {
        self.remember =
            remember.then(|| sessions.config().max_expiry().with_browser_session(false));
        self
    }
}

/// Logs `login` in: a new session ID (against fixation), the user tag (for the per-user
/// index), its own expiry when remembered, the login time and the device.
///
/// # Errors
/// A session error.
pub async fn log_in(session: &Session, login: &Login) -> Result<(), SessionError> {
    session.cycle_id().await?;
    session.set_user(&login.user).await?;
    if let Some(expiry) = login.remember {
        session.set_expiry(expiry).await?;
    }
    session.insert("user", &login.user).await?;
    session.insert(LOGIN_TIME, rfc3339(now_millis())).await?;
    session.insert("user_agent", &login.user_agent).await
}

/// Formats Unix milliseconds as RFC 3339 UTC (`2026-11-22T19:15:53Z`).
#[must_use]
pub fn rfc3339(millis: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis);
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_374_953_000), "2026-11-22T19:15:53Z");
    }

    #[test]
    fn usernames() {
        assert_eq!(validate_username(" alice "), Ok("alice".into()));
        assert_eq!(validate_username(""), Err(UsernameError::Empty));
        assert_eq!(
            validate_username("<script>"),
            Err(UsernameError::Characters)
        );
        assert_eq!(
            validate_username(&"a".repeat(65)),
            Err(UsernameError::TooLong)
        );
        assert!(validate_username("zoë.o'").is_err());
        assert!(validate_username("zoë.o").is_ok());
    }
}
