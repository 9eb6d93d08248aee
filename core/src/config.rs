//! Session configuration: private fields behind a builder, so new options never break users.

use std::time::Duration;

use crate::binding::Binding;
use crate::guessing::GuessingPolicy;
use crate::keyring::KeyRing;

/// The `SameSite` attribute of the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// Sent on top-level navigations from other sites, not on their subrequests (default).
    Lax,
    /// Never sent from other sites.
    Strict,
    /// Always sent (requires `Secure`).
    None,
}

impl SameSite {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Lax => "Lax",
            Self::Strict => "Strict",
            Self::None => "None",
        }
    }
}

impl std::str::FromStr for SameSite {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "lax" => Ok(Self::Lax),
            "strict" => Ok(Self::Strict),
            "none" => Ok(Self::None),
            _ => Err(ConfigError::SameSite(s.to_owned())),
        }
    }
}

/// What a read does with a stored value that no longer decodes as the type asked for (a
/// deploy changed the field's type; see `docs/events-and-decoding.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecodeFailure {
    /// The field reads as absent (`None`), logged at WARN with its name and the session's
    /// fingerprint and counted in `cloakroom_decode_failures_total`; the stored value stays
    /// until the app writes that field. The default: a deploy never turns sessions into
    /// errors.
    #[default]
    Absent,
    /// The read fails with [`crate::SessionError::Decode`] (a `500`).
    Fail,
}

/// What the layer does when the store fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Session operations fail with a typed error; the default rejection is `503` with
    /// `Retry-After`. Routes that never touch the session are unaffected.
    #[default]
    FailClosed,
    /// A session that cannot be loaded is treated as absent (not logged in), and nothing is
    /// written. Pages keep working for anonymous visitors.
    Anonymous,
    /// Logged-in users stay logged in, read only, through an outage: while the store answers,
    /// the layer keeps a short-lived encrypted ticket cookie beside the session cookie (the
    /// user and a few fields: [`SessionConfigBuilder::with_fallback_fields`]); when the store
    /// fails, a request with a valid ticket gets a degraded session that knows its user and
    /// refuses writes. Without a valid ticket the base policy applies
    /// ([`SessionConfigBuilder::with_fallback_base`], fail closed by default). The store stays
    /// the authority: a ticket is never read while it answers.
    Fallback,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The cookie name is empty or has characters a cookie name may not have.
    #[error("invalid cookie name {0:?}: use letters, digits and !#$%&'*+-.^_`|~ only")]
    CookieName(String),
    /// A `__Host-` cookie must be `Secure`, have `Path=/` and no `Domain`.
    #[error("a __Host- cookie must be Secure, with Path=/ and no Domain")]
    HostPrefix,
    /// A `__Secure-` cookie, or `SameSite=None`, must be `Secure`.
    #[error("{0} requires the Secure attribute")]
    NeedsSecure(&'static str),
    /// An unknown `SameSite` value.
    #[error("invalid SameSite value {0:?}: use lax, strict or none")]
    SameSite(String),
    /// A duration that must be positive is zero, or the idle timeout exceeds the lifetime.
    #[error("invalid duration: {0}")]
    Duration(&'static str),
    /// A cookie `Path` or `Domain` with a character that would break the `Set-Cookie` header
    /// (`;`, a control character, white space) or, for a path, not starting with `/`.
    #[error(
        "invalid cookie {0} {1:?}: no ';', spaces or control characters (a Path starts with '/')"
    )]
    Attribute(&'static str, String),
    /// The refresh fraction must lie in (0, 1].
    #[error("the refresh fraction must be greater than 0 and at most 1")]
    RefreshFraction,
    /// The fallback ticket's settings are unusable.
    #[error("invalid fallback ticket setting: {0}")]
    Fallback(&'static str),
}

/// The full configuration of a [`crate::SessionLayer`]. Build it with [`SessionConfig::builder`].
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub(crate) keys: KeyRing,
    pub(crate) cookie_name: String,
    pub(crate) secure: bool,
    pub(crate) same_site: SameSite,
    pub(crate) path: String,
    pub(crate) domain: Option<String>,
    pub(crate) browser_session: bool,
    pub(crate) idle_timeout: Duration,
    pub(crate) absolute_lifetime: Duration,
    /// The longest idle timeout and lifetime `Session::set_expiry` may give a session;
    /// `None`: the configured ones.
    pub(crate) max_expiry: Option<(Duration, Duration)>,
    pub(crate) refresh_fraction: f64,
    pub(crate) grace: Duration,
    pub(crate) renewal: Option<Duration>,
    pub(crate) anonymous_idle_timeout: Option<Duration>,
    pub(crate) max_size: usize,
    pub(crate) max_fields: usize,
    pub(crate) max_pending_creates: usize,
    pub(crate) max_sessions_per_user: Option<usize>,
    pub(crate) cache_control: bool,
    pub(crate) guessing: GuessingPolicy,
    pub(crate) binding: Binding,
    pub(crate) max_key_len: usize,
    pub(crate) store_timeout: Duration,
    pub(crate) failure_policy: FailurePolicy,
    pub(crate) decode_failure: DecodeFailure,
    pub(crate) breaker_threshold: u32,
    pub(crate) breaker_cooldown: Duration,
    pub(crate) fallback: Fallback,
    pub(crate) commit_on_server_error: bool,
    pub(crate) imports: crate::import::Sources,
}

/// The fallback ticket's settings ([`FailurePolicy::Fallback`]).
#[derive(Debug, Clone)]
pub(crate) struct Fallback {
    pub(crate) lifetime: Duration,
    pub(crate) fields: Vec<String>,
    pub(crate) base: FailurePolicy,
    pub(crate) keys: crate::ticket::TicketKeys,
    /// The ticket cookie's name: the session cookie's with `-fb`, so prefixes (`__Host-`)
    /// carry over. Set by [`SessionConfigBuilder::build`].
    pub(crate) cookie_name: String,
}

impl Fallback {
    /// A ticket is re-issued when the one presented is older than this.
    pub(crate) fn refresh_interval(&self) -> Duration {
        self.lifetime / 5
    }
}

/// Whether `value` can stand in a `Set-Cookie` attribute without changing its meaning.
fn attribute_ok(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
}

/// The default cookie name, when `Secure`, `Path=/` and no `Domain` allow it.
pub const DEFAULT_COOKIE_NAME: &str = "__Host-sid";

/// Builder for [`SessionConfig`]; every option has a safe default.
///
/// ```
/// use std::time::Duration;
/// use cloakroom::{KeyRing, SessionConfig};
/// let config = SessionConfig::builder(KeyRing::generate().unwrap())
///     .with_cookie_name("__Host-sid")
///     .with_idle_timeout(Duration::from_secs(30 * 60))
///     .build()
///     .unwrap();
/// assert_eq!(config.cookie_name(), "__Host-sid");
/// // A __Host- cookie cannot have a Domain:
/// assert!(SessionConfig::builder(KeyRing::generate().unwrap())
///     .with_cookie_name("__Host-sid")
///     .with_domain("example.com")
///     .build()
///     .is_err());
/// ```
#[derive(Debug, Clone)]
pub struct SessionConfigBuilder {
    config: SessionConfig,
    /// Whether the cookie was named ([`SessionConfigBuilder::with_cookie_name`]); if not,
    /// [`SessionConfigBuilder::build`] picks the strongest name the other settings allow.
    named: bool,
}

impl SessionConfig {
    /// Starts a configuration signed by `keys`, with the defaults: cookie `__Host-sid`
    /// (`__Secure-sid` with a `Domain` or another `Path`, `sid` without `Secure`), `HttpOnly`,
    /// `Secure`, `SameSite=Lax`, `Path=/`, no `Domain`, no `Max-Age` (a browser-session
    /// cookie), 24 h idle timeout, 7 days absolute lifetime,
    /// 1 h idle timeout for sessions without a user, refresh at most every tenth of the idle
    /// window, no periodic renewal (30 s grace when enabled), 16 KiB and 64 fields per
    /// session, 256-byte keys, `Cache-Control: no-store` on every response that used the
    /// session, 500 ms store timeout, fail closed.
    #[must_use]
    pub fn builder(keys: KeyRing) -> SessionConfigBuilder {
        SessionConfigBuilder {
            config: SessionConfig {
                cookie_name: DEFAULT_COOKIE_NAME.into(),
                secure: true,
                same_site: SameSite::Lax,
                path: "/".into(),
                domain: None,
                browser_session: true,
                idle_timeout: Duration::from_secs(24 * 3600),
                absolute_lifetime: Duration::from_secs(7 * 24 * 3600),
                max_expiry: None,
                refresh_fraction: 0.1,
                grace: Duration::from_secs(30),
                renewal: None,
                anonymous_idle_timeout: Some(Duration::from_secs(3600)),
                max_size: 16 * 1024,
                max_fields: 64,
                max_pending_creates: 256,
                max_sessions_per_user: Some(crate::DEFAULT_MAX_SESSIONS_PER_USER),
                cache_control: true,
                guessing: GuessingPolicy::default(),
                binding: Binding::new(),
                max_key_len: 256,
                store_timeout: Duration::from_millis(500),
                failure_policy: FailurePolicy::FailClosed,
                decode_failure: DecodeFailure::Absent,
                breaker_threshold: 5,
                breaker_cooldown: Duration::from_secs(1),
                commit_on_server_error: false,
                imports: crate::import::Sources::default(),
                fallback: Fallback {
                    lifetime: Duration::from_secs(600),
                    fields: Vec::new(),
                    base: FailurePolicy::FailClosed,
                    keys: crate::ticket::TicketKeys::new(&keys),
                    cookie_name: String::new(),
                },
                keys,
            },
            named: false,
        }
    }

    /// The signing keys (for tools that must sign or verify a cookie, and tests).
    #[must_use]
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }
    /// The cookie name.
    #[must_use]
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }
    /// The idle (sliding) timeout.
    #[must_use]
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }
    /// The absolute lifetime.
    #[must_use]
    pub fn absolute_lifetime(&self) -> Duration {
        self.absolute_lifetime
    }
    /// The longest idle timeout and lifetime [`crate::Session::set_expiry`] may give one
    /// session (the configured ones unless [`SessionConfigBuilder::with_max_expiry`] raised
    /// them), with the configured cookie kind.
    #[must_use]
    pub fn max_expiry(&self) -> crate::Expiry {
        let (idle, lifetime) = self
            .max_expiry
            .unwrap_or((self.idle_timeout, self.absolute_lifetime));
        crate::Expiry::new(idle, lifetime).with_browser_session(self.browser_session)
    }
    /// The grace window after `cycle_id`.
    #[must_use]
    pub fn grace(&self) -> Duration {
        self.grace
    }
    /// The store call timeout.
    #[must_use]
    pub fn store_timeout(&self) -> Duration {
        self.store_timeout
    }
    /// The failure policy.
    #[must_use]
    pub fn failure_policy(&self) -> FailurePolicy {
        self.failure_policy
    }
    /// Whether the cookie carries `Secure`.
    #[must_use]
    pub fn secure(&self) -> bool {
        self.secure
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident, $field:ident: $ty:ty) => {
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, value: $ty) -> Self {
            self.config.$field = value;
            self
        }
    };
}

impl SessionConfigBuilder {
    /// Whether a request whose response is a server error (5xx) still commits its session
    /// changes (default `false`: a handler that failed halfway leaves the session as it
    /// was, as a database transaction would be rolled back). A store outage's own `503`
    /// is such a response.
    #[must_use]
    pub fn with_commit_on_server_error(mut self, commit: bool) -> Self {
        self.config.commit_on_server_error = commit;
        self
    }
    /// With [`FailurePolicy::Fallback`]: the session fields the ticket carries besides the
    /// user (their JSON text), so that pages can show them during an outage. At most
    /// [`crate::FALLBACK_FIELDS_MAX_BYTES`] bytes of them go in a ticket: fields past that are
    /// left out (and logged). Keep them few and small: the ticket travels on every request.
    ///
    /// ```
    /// use cloakroom::{FailurePolicy, KeyRing, SessionConfig};
    /// let config = SessionConfig::builder(KeyRing::generate().unwrap())
    ///     .with_failure_policy(FailurePolicy::Fallback)
    ///     .with_fallback_fields(["name", "role"])
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(config.failure_policy(), FailurePolicy::Fallback);
    /// ```
    #[must_use]
    pub fn with_fallback_fields<I, S>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.fallback.fields = fields.into_iter().map(Into::into).collect();
        self
    }
    /// Takes over sessions another framework keeps (see [`crate::import`]): a request with
    /// no live session of its own but with `source`'s cookie gets a new session with the
    /// foreign one's data and user, and a logout here ends the foreign one too. Several
    /// sources are tried in the order they were added.
    #[must_use]
    pub fn with_import(mut self, source: impl crate::import::ForeignSessions) -> Self {
        self.config.imports.0.push(std::sync::Arc::new(source));
        self
    }
    /// With [`FailurePolicy::Fallback`]: how long a ticket works (default 10 minutes). It is
    /// also the longest a ticket copied before a logout or revocation on another instance
    /// could stand in for the session during an outage.
    #[must_use]
    pub fn with_fallback_lifetime(mut self, lifetime: Duration) -> Self {
        self.config.fallback.lifetime = lifetime;
        self
    }
    /// With [`FailurePolicy::Fallback`]: the policy for requests without a valid ticket
    /// (default [`FailurePolicy::FailClosed`]; [`FailurePolicy::Anonymous`] also works).
    #[must_use]
    pub fn with_fallback_base(mut self, base: FailurePolicy) -> Self {
        self.config.fallback.base = base;
        self
    }
    /// The cookie name (default `__Host-sid`: a sibling subdomain can neither set nor
    /// overwrite it; `__Secure-sid` when a `Domain` or another `Path` rules `__Host-` out,
    /// `sid` without `Secure`). `__Host-` and `__Secure-` prefixes are validated.
    #[must_use]
    pub fn with_cookie_name(mut self, name: impl Into<String>) -> Self {
        self.config.cookie_name = name.into();
        self.named = true;
        self
    }
    /// The cookie `Domain` (default none: host-only).
    #[must_use]
    pub fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.config.domain = Some(domain.into());
        self
    }
    /// The cookie `Path` (default `/`).
    #[must_use]
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.config.path = path.into();
        self
    }
    setter!(
        /// The `Secure` attribute (default on). Turn it off only for plain-http development.
        with_secure, secure: bool);
    setter!(
        /// The `SameSite` attribute (default `Lax`).
        with_same_site, same_site: SameSite);
    setter!(
        /// Send the cookie without `Max-Age`, so the browser drops it when it closes (default
        /// on, as OWASP recommends; `false` makes it persist for the idle timeout, "remember me").
        with_browser_session, browser_session: bool);
    setter!(
        /// Idle timeout: a session unused this long expires (default 24 h).
        with_idle_timeout, idle_timeout: Duration);
    setter!(
        /// Absolute lifetime: a session expires this long after creation, used or not (default 7 days).
        with_absolute_lifetime, absolute_lifetime: Duration);
    setter!(
        /// Slide the idle deadline at most once per this fraction of the idle timeout (default 0.1).
        with_refresh_fraction, refresh_fraction: f64);
    setter!(
        /// How long the old ID keeps working, for reads only, after a periodic renewal
        /// (default 30 s; zero disables). A cycle that changes privilege (`cycle_id`,
        /// `set_user`) never leaves an old ID that works.
        with_grace, grace: Duration);
    /// The longest idle timeout and absolute lifetime that [`crate::Session::set_expiry`] may
    /// give one session ("remember me"); default: the configured idle timeout and lifetime,
    /// so a handler can shorten a session but not lengthen it unless this allows it.
    #[must_use]
    pub fn with_max_expiry(mut self, idle_timeout: Duration, absolute_lifetime: Duration) -> Self {
        self.config.max_expiry = Some((idle_timeout, absolute_lifetime));
        self
    }
    /// Rotates the session ID every `every` (default: never). The old ID can still read the
    /// session for the grace window, so requests already in flight keep working.
    #[must_use]
    pub fn with_renewal(mut self, every: Duration) -> Self {
        self.config.renewal = Some(every);
        self
    }
    /// Idle timeout of sessions without a user (default 1 h): a flood of anonymous visitors
    /// costs the store for this long, not for the full idle timeout. `None` uses the idle
    /// timeout for every session.
    #[must_use]
    pub fn with_anonymous_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.anonymous_idle_timeout = timeout;
        self
    }
    setter!(
        /// Largest encoded session, in bytes (default 16 KiB).
        with_max_size, max_size: usize);
    setter!(
        /// Most fields in one session, flash messages included (default 64).
        with_max_fields, max_fields: usize);
    setter!(
        /// Most sessions being created at once (default 256). Past it a new session is
        /// refused at once with `503` ([`crate::StoreError::Overloaded`]), so that a flood of
        /// anonymous clients cannot queue in front of the users who already have a session.
        with_max_pending_creates, max_pending_creates: usize);
    /// Most sessions one user may have at once (default
    /// [`crate::DEFAULT_MAX_SESSIONS_PER_USER`]; `None` or `Some(0)`: no limit). At each login
    /// past it, the user's oldest other sessions end, each as a normal logout for its cookie
    /// (at most [`crate::USER_SESSIONS_ENDED_PER_LOGIN`] per login, so a user far over a newly
    /// set limit is brought under it over a few logins, none of them slow). It bounds
    /// the per-user index too: what a login checks and a listing reads. Needs a store with
    /// the per-user index ([`crate::SessionStore::list_user`]); without one it does nothing.
    ///
    /// ```
    /// # use cloakroom::{KeyRing, SessionConfig};
    /// let config = SessionConfig::builder(KeyRing::generate().unwrap())
    ///     .with_max_sessions_per_user(Some(5))
    ///     .build()
    ///     .unwrap();
    /// ```
    #[must_use]
    pub fn with_max_sessions_per_user(mut self, limit: Option<usize>) -> Self {
        // `Some(0)` means no limit too, as the app's `SESSION_MAX_PER_USER=0` does.
        self.config.max_sessions_per_user = limit.filter(|&n| n > 0);
        self
    }
    setter!(
        /// Send `Cache-Control: no-store` on every response that used the session (default
        /// on; `Vary: Cookie` is always sent then). Turn it off only if the app sets its own.
        with_cache_control, cache_control: bool);
    setter!(
        /// Longest key, in bytes (default 256).
        with_max_key_len, max_key_len: usize);
    setter!(
        /// How invalid cookies are counted per client, logged and optionally throttled
        /// (default: more than 20 a minute is logged, not throttled).
        with_guessing_policy, guessing: GuessingPolicy);
    setter!(
        /// Bind sessions to client properties (User-Agent, network) and log or end them when
        /// those change (default: no binding; see [`Binding`]).
        with_binding, binding: Binding);
    setter!(
        /// Bound on every store call (default 500 ms).
        with_store_timeout, store_timeout: Duration);
    setter!(
        /// What to do when the store fails (default [`FailurePolicy::FailClosed`]).
        with_failure_policy, failure_policy: FailurePolicy);
    setter!(
        /// What a read does with a stored value of another type (default
        /// [`DecodeFailure::Absent`]: the field reads as absent, logged and counted).
        with_decode_failure, decode_failure: DecodeFailure);
    setter!(
        /// Consecutive store outages that open the circuit breaker (default 5; 0 disables it).
        with_breaker_threshold, breaker_threshold: u32);
    setter!(
        /// How long the open breaker fails fast before letting one probe through (default 1 s).
        with_breaker_cooldown, breaker_cooldown: Duration);

    /// Validates and returns the configuration.
    ///
    /// # Errors
    /// [`ConfigError`] for an invalid cookie name, a cookie prefix whose rules are not met,
    /// a zero duration, or an idle timeout longer than the absolute lifetime.
    pub fn build(self) -> Result<SessionConfig, ConfigError> {
        let mut c = self.config;
        if !self.named {
            c.cookie_name = match (c.secure, c.path == "/" && c.domain.is_none()) {
                (true, true) => DEFAULT_COOKIE_NAME,
                (true, false) => "__Secure-sid",
                (false, _) => "sid",
            }
            .into();
        }
        c.fallback.cookie_name = format!("{}-fb", c.cookie_name);
        let name_ok = !c.cookie_name.is_empty()
            && c.cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !name_ok {
            return Err(ConfigError::CookieName(c.cookie_name));
        }
        // Browsers match the prefixes case-insensitively, so must we.
        let lower = c.cookie_name.to_ascii_lowercase();
        if lower.starts_with("__host-") && (!c.secure || c.path != "/" || c.domain.is_some()) {
            return Err(ConfigError::HostPrefix);
        }
        if !attribute_ok(&c.path) || !c.path.starts_with('/') {
            return Err(ConfigError::Attribute("Path", c.path));
        }
        if let Some(domain) = &c.domain {
            if domain.is_empty() || !attribute_ok(domain) {
                return Err(ConfigError::Attribute("Domain", domain.clone()));
            }
        }
        if lower.starts_with("__secure-") && !c.secure {
            return Err(ConfigError::NeedsSecure("a __Secure- cookie"));
        }
        if c.same_site == SameSite::None && !c.secure {
            return Err(ConfigError::NeedsSecure("SameSite=None"));
        }
        if c.idle_timeout.is_zero() || c.absolute_lifetime.is_zero() || c.store_timeout.is_zero() {
            return Err(ConfigError::Duration(
                "timeouts and lifetimes must be positive",
            ));
        }
        if c.renewal.is_some_and(|r| r.is_zero())
            || c.anonymous_idle_timeout.is_some_and(|t| t.is_zero())
            || c.max_fields == 0
            || c.max_pending_creates == 0
        {
            return Err(ConfigError::Duration(
                "the renewal interval, anonymous idle timeout and field limit must be positive",
            ));
        }
        if c.idle_timeout > c.absolute_lifetime
            || c.max_expiry.is_some_and(|(idle, lifetime)| idle > lifetime)
        {
            return Err(ConfigError::Duration(
                "the idle timeout must not exceed the absolute lifetime",
            ));
        }
        if c.max_expiry
            .is_some_and(|(idle, lifetime)| idle.is_zero() || lifetime.is_zero())
        {
            return Err(ConfigError::Duration(
                "timeouts and lifetimes must be positive",
            ));
        }
        if !(c.refresh_fraction > 0.0 && c.refresh_fraction <= 1.0) {
            return Err(ConfigError::RefreshFraction);
        }
        if c.fallback.base == FailurePolicy::Fallback {
            return Err(ConfigError::Fallback(
                "the base policy is fail-closed or anonymous",
            ));
        }
        if c.fallback.lifetime < Duration::from_secs(1) {
            return Err(ConfigError::Fallback("the ticket lifetime is at least 1 s"));
        }
        if c.fallback
            .fields
            .iter()
            .any(|f| f.is_empty() || f.starts_with(crate::names::RESERVED_PREFIX))
        {
            return Err(ConfigError::Fallback(
                "fallback fields are session keys: not empty, not starting with `__`",
            ));
        }
        Ok(c)
    }
}
