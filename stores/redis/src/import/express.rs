//! express-session with connect-redis: the cookie `connect.sid` is `s:` + ID + `.` + the
//! base64 HMAC-SHA256 of the ID under one of the app's secrets (no padding), URL-encoded; the
//! record is `sess:` + ID, JSON, with express-session's own `cookie` object (whose `expires` it
//! honours).

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use cloakroom::import::{ForeignSessions, Found};
use cloakroom::StoreError;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{
    delete, parse_utc_millis, percent_decode, plausible_id, store_error, take_over, UserField,
};
use crate::RedisConnection;

/// express-session's sessions in Redis, as connect-redis writes them.
///
/// ```
/// # async fn demo(conn: cloakroom_redis::RedisConnection) {
/// use cloakroom_redis::import::{ExpressSessions, UserField};
/// let express = ExpressSessions::new(conn, ["keyboard cat"])
///     .unwrap()
///     .with_user_field(UserField::path("user.id"));
/// let config = cloakroom::SessionConfig::builder(cloakroom::KeyRing::generate().unwrap())
///     .with_import(express)
///     .build()
///     .unwrap();
/// # let _ = config; }
/// ```
pub struct ExpressSessions {
    conn: RedisConnection,
    secrets: Vec<Vec<u8>>,
    cookie: String,
    prefix: String,
    user: UserField,
}

impl ExpressSessions {
    /// Sessions signed with any of `secrets` (express-session's `secret`, one or an array).
    ///
    /// # Errors
    /// When no secret, or an empty one, is given: the cookies could not be verified.
    pub fn new<I, S>(conn: RedisConnection, secrets: I) -> Result<Self, &'static str>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let secrets: Vec<Vec<u8>> = secrets.into_iter().map(|s| s.into().into_bytes()).collect();
        if secrets.is_empty() || secrets.iter().any(Vec::is_empty) {
            return Err("express-session secrets must not be empty");
        }
        Ok(Self {
            conn,
            secrets,
            cookie: "connect.sid".into(),
            prefix: "sess:".into(),
            user: UserField::default(),
        })
    }

    /// The cookie's name (express-session's `name`; default `connect.sid`).
    #[must_use]
    pub fn with_cookie(mut self, name: impl Into<String>) -> Self {
        self.cookie = name.into();
        self
    }

    /// connect-redis's `prefix` (default `sess:`).
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Where the user is found (default: see [`UserField`]).
    #[must_use]
    pub fn with_user_field(mut self, user: UserField) -> Self {
        self.user = user;
        self
    }
}

/// The session ID a cookie value carries, if its signature verifies under one of `secrets`.
fn unsign(secrets: &[Vec<u8>], value: &str) -> Option<String> {
    let value = percent_decode(value)?;
    let (id, signature) = value.strip_prefix("s:")?.rsplit_once('.')?;
    if !plausible_id(id) {
        return None;
    }
    let verified = secrets.iter().any(|secret| {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
            return false;
        };
        mac.update(id.as_bytes());
        let expected = STANDARD_NO_PAD.encode(mac.finalize().into_bytes());
        bool::from(expected.as_bytes().ct_eq(signature.as_bytes()))
    });
    verified.then(|| id.to_owned())
}

#[async_trait]
impl ForeignSessions for ExpressSessions {
    fn cookie_name(&self) -> &str {
        &self.cookie
    }

    async fn find(&self, value: &str) -> Result<Found, StoreError> {
        let Some(id) = unsign(&self.secrets, value) else {
            return Ok(Found::Nothing);
        };
        let name = format!("{}{id}", self.prefix);
        let text: Option<String> = redis::cmd("GET")
            .arg(&name)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        let Some(text) = text else {
            return Ok(Found::Nothing);
        };
        let Ok(Value::Object(session)) = serde_json::from_str::<Value>(&text) else {
            return Ok(Found::Unreadable("not a JSON object"));
        };
        let expires = session
            .get("cookie")
            .and_then(|c| c.get("expires"))
            .and_then(Value::as_str)
            .and_then(parse_utc_millis);
        if expires.is_some_and(|at| at <= cloakroom::now_millis()) {
            return Ok(Found::Nothing);
        }
        take_over(&self.conn, &name, &id, session, &self.user, &["cookie"]).await
    }

    async fn end(&self, handle: &str) -> Result<(), StoreError> {
        delete(&self.conn, format!("{}{handle}", self.prefix)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What express-session's cookie-signature writes for `id` under `secret`.
    fn sign(id: &str, secret: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(id.as_bytes());
        let sig = STANDARD_NO_PAD.encode(mac.finalize().into_bytes());
        format!("s:{id}.{sig}")
            .replace(':', "%3A")
            .replace('+', "%2B")
            .replace('/', "%2F")
    }

    fn unsigned(secrets: &[&str], value: &str) -> Option<String> {
        let secrets: Vec<Vec<u8>> = secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
        unsign(&secrets, value)
    }

    #[test]
    fn every_secret_verifies_and_nothing_else_does() {
        let cookie = sign("abc_DEF-123", "old");
        assert_eq!(
            unsigned(&["new", "old"], &cookie).as_deref(),
            Some("abc_DEF-123")
        );
        assert_eq!(unsigned(&["new"], &cookie), None);
        let forged = cookie.replace("abc", "abd");
        assert_eq!(unsigned(&["old"], &forged), None);
        assert_eq!(unsigned(&["old"], "abc_DEF-123"), None, "unsigned");
        assert_eq!(unsigned(&["old"], "s%3Aabc"), None, "no signature");
        assert_eq!(unsigned(&["old"], "%E0%80"), None, "not UTF-8");
    }
}
