//! Signing and verifying cookie values with a ring of HMAC-SHA256 keys.
//!
//! The first key signs; every key verifies. Rotating a secret is therefore: put the new key
//! first, keep the old one behind it until every cookie signed with it has expired or been
//! re-signed (Cloakroom re-signs a cookie verified by an older key on its next use).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::id::{SessionId, ID_LEN};

type HmacSha256 = Hmac<Sha256>;

/// Shortest secret accepted, in bytes: 256 bits of a random secret.
pub const MIN_SECRET_LEN: usize = 32;
const TAG_LEN: usize = 32;
/// Length of an encoded cookie value: base64url of the ID followed by its tag.
pub(crate) const COOKIE_VALUE_LEN: usize = (ID_LEN + TAG_LEN) / 3 * 4;
const DOMAIN: &[u8] = b"cloakroom-cookie-v1";

/// Why a set of secrets cannot make a key ring.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyRingError {
    /// No secret was given.
    #[error("no session secret given: pass at least one key of {MIN_SECRET_LEN} or more bytes")]
    Empty,
    /// A secret is shorter than [`MIN_SECRET_LEN`].
    #[error("session secret number {position} is {len} bytes long; each key needs at least {MIN_SECRET_LEN}")]
    TooShort {
        /// 1-based position of the key in the list.
        position: usize,
        /// Its length in bytes.
        len: usize,
    },
}

/// The outcome of verifying a cookie value.
#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    /// Signed by the current (first) key.
    Current(SessionId),
    /// Signed by an older key: valid, but should be re-signed.
    Stale(SessionId),
}

/// An ordered list of signing keys: the first signs, all verify.
#[derive(Clone)]
pub struct KeyRing {
    /// One HMAC already keyed with each secret: cloning it skips the two key-schedule
    /// compressions that keying costs on every cookie.
    keys: Vec<HmacSha256>,
}

fn keyed(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!())
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyRing({} keys)", self.keys.len())
    }
}

impl KeyRing {
    /// Builds a ring from secrets, the signing key first.
    ///
    /// ```
    /// use cloakroom::KeyRing;
    /// let ring = KeyRing::new(["a-new-secret-of-at-least-32-bytes!!", "an-old-secret-of-at-least-32-bytes!!"]).unwrap();
    /// assert_eq!(ring.len(), 2);
    /// assert!(KeyRing::new(["short"]).is_err());
    /// ```
    ///
    /// # Errors
    /// [`KeyRingError`] if there is no key or a key is too short.
    pub fn new<I, K>(secrets: I) -> Result<Self, KeyRingError>
    where
        I: IntoIterator<Item = K>,
        K: AsRef<[u8]>,
    {
        let mut keys = Vec::new();
        for (i, secret) in secrets.into_iter().enumerate() {
            let secret = secret.as_ref();
            if secret.len() < MIN_SECRET_LEN {
                return Err(KeyRingError::TooShort {
                    position: i + 1,
                    len: secret.len(),
                });
            }
            keys.push(keyed(secret));
        }
        if keys.is_empty() {
            return Err(KeyRingError::Empty);
        }
        Ok(Self { keys })
    }

    /// Parses the `SESSION_SECRET` convention: comma-separated keys, the first signs.
    /// Blank entries (e.g. a trailing comma) are ignored.
    ///
    /// # Errors
    /// As [`KeyRing::new`].
    pub fn from_comma_separated(secrets: &str) -> Result<Self, KeyRingError> {
        Self::new(secrets.split(',').map(str::trim).filter(|s| !s.is_empty()))
    }

    /// A ring with one fresh random key, for development and tests.
    ///
    /// # Errors
    /// Fails only if the OS cannot provide randomness.
    pub fn generate() -> Result<Self, getrandom::Error> {
        Ok(Self {
            keys: vec![keyed(generate_secret()?.as_bytes())],
        })
    }

    /// Number of keys in the ring.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a ring has at least one key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// One 32-byte key per key of the ring for the purpose `label` (HMAC of the label under
    /// each key), the signing key's first: other secrets (the fallback ticket's AEAD keys)
    /// rotate with the ring.
    pub(crate) fn derive(&self, label: &[u8]) -> Vec<[u8; 32]> {
        self.keys
            .iter()
            .map(|key| {
                let mut mac = key.clone();
                mac.update(label);
                mac.finalize().into_bytes().into()
            })
            .collect()
    }

    fn mac(key: &HmacSha256, id: &SessionId) -> HmacSha256 {
        let mut mac = key.clone();
        mac.update(DOMAIN);
        mac.update(id.as_bytes());
        mac
    }

    /// Encodes a signed cookie value for `id` with the current key.
    #[must_use]
    pub fn sign(&self, id: &SessionId) -> String {
        let tag = Self::mac(&self.keys[0], id).finalize().into_bytes();
        let mut raw = Vec::with_capacity(ID_LEN + TAG_LEN);
        raw.extend_from_slice(id.as_bytes());
        raw.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Verifies a cookie value in constant time per key; `None` for anything not signed by us.
    ///
    /// ```
    /// use cloakroom::{KeyRing, SessionId, Verified};
    /// let ring = KeyRing::generate().unwrap();
    /// let id = SessionId::random().unwrap();
    /// let value = ring.sign(&id);
    /// assert_eq!(ring.verify(&value), Some(Verified::Current(id)));
    /// assert_eq!(ring.verify("forged"), None);
    /// ```
    #[must_use]
    pub fn verify(&self, value: &str) -> Option<Verified> {
        if value.len() != COOKIE_VALUE_LEN {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(value).ok()?;
        let (id_bytes, tag) = raw.split_at(ID_LEN);
        let id = SessionId::from_bytes(id_bytes.try_into().ok()?);
        for (i, key) in self.keys.iter().enumerate() {
            // `verify_slice` compares in constant time.
            if Self::mac(key, &id).verify_slice(tag).is_ok() {
                return Some(if i == 0 {
                    Verified::Current(id)
                } else {
                    Verified::Stale(id)
                });
            }
        }
        None
    }
}

/// A fresh random secret (256 bits, base64url), suitable for `SESSION_SECRET`.
///
/// # Errors
/// Fails only if the OS cannot provide randomness.
pub fn generate_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn rotation_accepts_old_keys_and_flags_them() {
        let old = KeyRing::new([A]).unwrap();
        let rotated = KeyRing::new([B, A]).unwrap();
        let id = SessionId::random().unwrap();
        let value = old.sign(&id);
        assert_eq!(rotated.verify(&value), Some(Verified::Stale(id.clone())));
        assert_eq!(
            rotated.verify(&rotated.sign(&id)),
            Some(Verified::Current(id))
        );
    }

    #[test]
    fn tampered_values_are_rejected() {
        let ring = KeyRing::new([A]).unwrap();
        let value = ring.sign(&SessionId::random().unwrap());
        let mut bytes = value.clone().into_bytes();
        bytes[3] = if bytes[3] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(ring.verify(&tampered), None);
        assert_eq!(ring.verify(&value[..value.len() - 1]), None);
        assert_eq!(ring.verify(&format!("{value}A")), None);
        assert_eq!(ring.verify(""), None);
        assert_eq!(ring.verify(&"é".repeat(COOKIE_VALUE_LEN / 2)), None);
        assert_eq!(KeyRing::new([B]).unwrap().verify(&value), None);
    }

    #[test]
    fn comma_separated_secrets() {
        let ring = KeyRing::from_comma_separated(&format!(" {A} , {B},")).unwrap();
        assert_eq!(ring.len(), 2);
        assert!(matches!(
            KeyRing::from_comma_separated(",,"),
            Err(KeyRingError::Empty)
        ));
        assert!(matches!(
            KeyRing::from_comma_separated(&format!("{A},short")),
            Err(KeyRingError::TooShort {
                position: 2,
                len: 5
            })
        ));
    }
}
