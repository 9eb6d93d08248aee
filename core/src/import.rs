//! Sessions another framework keeps, taken over on a user's first request here, so that moving
//! an app to Cloakroom logs nobody out (`docs/migration.md`).
//!
//! A [`ForeignSessions`] source names the cookie it reads and finds the session a cookie value
//! names. When a request carries no live Cloakroom session but does carry a source's cookie,
//! the layer asks the source; a session found becomes a new Cloakroom session with the same
//! data and user, and the response sets the Cloakroom cookie. The foreign session stays (the
//! old app may still serve some routes) until the user logs out here, which ends it too.
//!
//! A cookie that does not verify, names nothing, or names an expired or unreadable record
//! imports nothing: the request is anonymous, never an error page.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::store::StoreError;

/// What a source found for a cookie value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A live session to take over.
    Session(Imported),
    /// Nothing: the cookie did not verify, or names no live session.
    Nothing,
    /// A record that exists but is not read, and why (for instance `"pickle"`: a format that
    /// would run code to decode). Counted, and the request is anonymous.
    Unreadable(&'static str),
}

/// A foreign session's data, in Cloakroom's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Imported {
    /// What identifies the foreign session to its source, to end it later (its ID).
    pub handle: String,
    /// The user, from the source's user field, if the session had one.
    pub user: Option<String>,
    /// Its data: field names and their values as JSON text.
    pub fields: BTreeMap<String, String>,
    /// Fields the source left out (reserved names, values it cannot express as JSON).
    pub skipped: usize,
}

/// Where another framework's sessions are found. Implemented for express-session +
/// connect-redis and Flask-Session by the Redis store crate (`cloakroom_redis::import`).
///
/// ```
/// use async_trait::async_trait;
/// use cloakroom::import::{Found, ForeignSessions, Imported};
/// use cloakroom::StoreError;
///
/// /// Sessions of an old app whose cookie `legacy` is the user's name (a toy).
/// struct Legacy;
///
/// #[async_trait]
/// impl ForeignSessions for Legacy {
///     fn cookie_name(&self) -> &str {
///         "legacy"
///     }
///     async fn find(&self, value: &str) -> Result<Found, StoreError> {
///         Ok(Found::Session(Imported {
///             handle: value.to_owned(),
///             user: Some(value.to_owned()),
///             ..Imported::default()
///         }))
///     }
///     async fn end(&self, _handle: &str) -> Result<(), StoreError> {
///         Ok(())
///     }
/// }
/// let config = cloakroom::SessionConfig::builder(cloakroom::KeyRing::generate().unwrap())
///     .with_import(Legacy)
///     .build()
///     .unwrap();
/// # let _ = config;
/// ```
#[async_trait]
pub trait ForeignSessions: Send + Sync + 'static {
    /// The cookie this source reads (`connect.sid`, `session`).
    fn cookie_name(&self) -> &str;

    /// The session the cookie `value` (as the browser sent it) names, if it verifies and is
    /// alive.
    ///
    /// # Errors
    /// A store error: the request is then served as anonymous.
    async fn find(&self, value: &str) -> Result<Found, StoreError>;

    /// Ends the foreign session `handle` (the user logged out here).
    ///
    /// # Errors
    /// A store error: logged; the Cloakroom logout stands.
    async fn end(&self, handle: &str) -> Result<(), StoreError>;
}

#[async_trait]
impl<T: ForeignSessions + ?Sized> ForeignSessions for std::sync::Arc<T> {
    fn cookie_name(&self) -> &str {
        (**self).cookie_name()
    }
    async fn find(&self, value: &str) -> Result<Found, StoreError> {
        (**self).find(value).await
    }
    async fn end(&self, handle: &str) -> Result<(), StoreError> {
        (**self).end(handle).await
    }
}

/// The configured sources, in the order they are tried.
#[derive(Clone, Default)]
pub(crate) struct Sources(pub(crate) Vec<std::sync::Arc<dyn ForeignSessions>>);

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|s| s.cookie_name()))
            .finish()
    }
}

impl Sources {
    /// The source whose cookie is `name`.
    pub(crate) fn named(&self, name: &str) -> Option<&dyn ForeignSessions> {
        self.0
            .iter()
            .find(|s| s.cookie_name() == name)
            .map(AsRef::as_ref)
    }
}

/// The first source whose cookie the request carries, and the cookie's values (several when
/// one was planted beside the real one: each is tried, the first that verifies wins).
pub(crate) fn presented(
    sources: &Sources,
    headers: &http::HeaderMap,
) -> Option<(usize, Vec<String>)> {
    /// Foreign cookies are longer than ours (a signed ID, URL-encoded).
    const MAX_LEN: usize = 512;
    sources.0.iter().enumerate().find_map(|(i, source)| {
        let found = crate::cookie::find_in(
            headers.get_all(http::header::COOKIE),
            source.cookie_name(),
            MAX_LEN,
        );
        (!found.values.is_empty()).then_some((i, found.values))
    })
}
