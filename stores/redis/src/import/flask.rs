//! Flask-Session's Redis interface: the cookie `session` holds the session ID, signed with
//! itsdangerous when `SESSION_USE_SIGNER` is set (ID + `.` + base64url HMAC-SHA1 under a key
//! derived from the app's `secret_key` and the salt `flask-session`); the record is the ID
//! under `session:`, msgpack (the default since 0.7) or JSON (`SESSION_SERIALIZATION_FORMAT`). Its
//! Redis TTL is its expiry. Pickled records, which releases before 0.7 wrote, are never
//! unpickled: unpickling runs code.

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use cloakroom::import::{ForeignSessions, Found};
use cloakroom::StoreError;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha1::Sha1;
use subtle::ConstantTimeEq;

use super::{delete, plausible_id, store_error, take_over, UserField};
use crate::RedisConnection;

/// Flask-Session's sessions in Redis.
///
/// ```
/// # async fn demo(conn: cloakroom_redis::RedisConnection) {
/// use cloakroom_redis::import::FlaskSessions;
/// // SESSION_USE_SIGNER = True: the app's secret_key verifies the cookie.
/// let flask = FlaskSessions::new(conn).with_signer("the Flask secret_key");
/// # let _ = flask; }
/// ```
pub struct FlaskSessions {
    conn: RedisConnection,
    /// The key derived from the app's `secret_key`, when cookies are signed.
    signer: Option<Vec<u8>>,
    cookie: String,
    prefix: String,
    user: UserField,
}

impl FlaskSessions {
    /// Sessions whose cookie is the plain session ID (Flask-Session's default).
    #[must_use]
    pub fn new(conn: RedisConnection) -> Self {
        Self {
            conn,
            signer: None,
            cookie: "session".into(),
            prefix: "session:".into(),
            user: UserField::default(),
        }
    }

    /// Cookies signed with the app's `secret_key` (`SESSION_USE_SIGNER = True`): only those
    /// that verify are read.
    #[must_use]
    pub fn with_signer(mut self, secret_key: &str) -> Self {
        self.signer = Some(derive_key(secret_key.as_bytes()));
        self
    }

    /// The cookie's name (Flask's `SESSION_COOKIE_NAME`; default `session`).
    #[must_use]
    pub fn with_cookie(mut self, name: impl Into<String>) -> Self {
        self.cookie = name.into();
        self
    }

    /// `SESSION_KEY_PREFIX` (default `session:`).
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Where the user is found (default: see [`UserField`], which finds Flask-Login's
    /// `_user_id`).
    #[must_use]
    pub fn with_user_field(mut self, user: UserField) -> Self {
        self.user = user;
        self
    }
}

/// itsdangerous' `key_derivation="hmac"`: HMAC-SHA1 of the salt under the secret key.
fn derive_key(secret_key: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret_key).expect("HMAC takes any key length");
    mac.update(b"flask-session");
    mac.finalize().into_bytes().to_vec()
}

/// The session ID of a cookie value: verified with `signer` when cookies are signed.
fn session_id(signer: Option<&[u8]>, value: &str) -> Option<String> {
    let id = match signer {
        None => value,
        Some(key) => {
            let (id, signature) = value.rsplit_once('.')?;
            let mut mac = Hmac::<Sha1>::new_from_slice(key).ok()?;
            mac.update(id.as_bytes());
            let expected = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
            if !bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) {
                return None;
            }
            id
        }
    };
    plausible_id(id).then(|| id.to_owned())
}

/// Whether `bytes` is a pickle (protocol 2 or later: `\x80`, the protocol, …, `.`). A msgpack
/// map that starts with `\x80` is the empty one, a single byte.
fn is_pickle(bytes: &[u8]) -> bool {
    bytes.len() > 2 && bytes[0] == 0x80 && (2..=5).contains(&bytes[1]) && bytes.ends_with(b".")
}

/// The session object of a record, or why it is not read.
fn decode(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, &'static str> {
    if is_pickle(bytes) {
        return Err("pickle");
    }
    let value = if bytes.first() == Some(&b'{') {
        serde_json::from_slice(bytes).map_err(|_| "not JSON")?
    } else {
        super::msgpack::decode(bytes).ok_or("not msgpack")?
    };
    match value {
        Value::Object(map) => Ok(map),
        _ => Err("not a map"),
    }
}

#[async_trait]
impl ForeignSessions for FlaskSessions {
    fn cookie_name(&self) -> &str {
        &self.cookie
    }

    async fn find(&self, value: &str) -> Result<Found, StoreError> {
        let Some(id) = session_id(self.signer.as_deref(), value) else {
            return Ok(Found::Nothing);
        };
        let name = format!("{}{id}", self.prefix);
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&name)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        let Some(bytes) = bytes else {
            return Ok(Found::Nothing);
        };
        let session = match decode(&bytes) {
            Ok(session) => session,
            Err(why) => return Ok(Found::Unreadable(why)),
        };
        // `_permanent`: Flask's own flag, meaningless here.
        take_over(&self.conn, &name, &id, session, &self.user, &["_permanent"]).await
    }

    async fn end(&self, handle: &str) -> Result<(), StoreError> {
        delete(&self.conn, format!("{}{handle}", self.prefix)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// itsdangerous' Signer(secret, salt="flask-session", key_derivation="hmac").sign(id),
    /// computed here the same way (checked against the real Flask-Session in the app's tests).
    fn sign(id: &str, secret: &str) -> String {
        let mut mac = Hmac::<Sha1>::new_from_slice(&derive_key(secret.as_bytes())).unwrap();
        mac.update(id.as_bytes());
        format!(
            "{id}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    #[test]
    fn signed_cookies_verify_under_their_secret_only() {
        let key = derive_key(b"s3cret");
        let cookie = sign("abcDEF_-1", "s3cret");
        assert_eq!(
            session_id(Some(&key), &cookie).as_deref(),
            Some("abcDEF_-1")
        );
        assert_eq!(session_id(Some(&derive_key(b"other")), &cookie), None);
        assert_eq!(session_id(Some(&key), "abcDEF_-1"), None, "unsigned");
        assert_eq!(session_id(None, "abcDEF_-1").as_deref(), Some("abcDEF_-1"));
        assert_eq!(session_id(None, "a b"), None);
    }

    #[test]
    fn pickles_are_recognised_and_never_read() {
        // pickle.dumps({"a": 1}, protocol=4)
        let pickled = b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s.";
        assert_eq!(decode(pickled), Err("pickle"));
        assert!(decode(b"\x80").unwrap().is_empty(), "the empty msgpack map");
        assert_eq!(decode(br#"{"a": 1}"#).unwrap()["a"], 1);
        assert_eq!(decode(b"[1]"), Err("not msgpack"));
        assert_eq!(decode(b"\x91\x01"), Err("not a map"));
    }
}
