//! Session identifiers and the store keys derived from them.
//!
//! The raw [`SessionId`] only ever lives in the cookie. Stores see a [`SessionKey`], a hash of
//! the ID, so a dump of the store yields nothing that works as a cookie. Logs see only a
//! [`SessionKey::fingerprint`].

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Number of random bytes in a session ID (128 bits, from the OS CSPRNG).
pub const ID_LEN: usize = 16;
/// Number of bytes in a store key (a truncated SHA-256 of the ID).
pub const KEY_LEN: usize = 16;

/// A raw session ID: 128 bits from the operating system's CSPRNG.
///
/// It is deliberately neither `Debug`-printable nor `Display`able, so that it cannot end up in
/// a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId([u8; ID_LEN]);

impl SessionId {
    /// Draws a fresh ID from the OS CSPRNG.
    ///
    /// # Errors
    /// Fails only if the operating system cannot provide randomness.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; ID_LEN];
        getrandom::fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// Wraps raw bytes (used when a verified cookie is decoded).
    pub(crate) fn from_bytes(bytes: [u8; ID_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw bytes, for signing.
    pub(crate) fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }

    /// The store key of this ID: what every store is keyed by.
    ///
    /// ```
    /// use cloakroom::SessionId;
    /// let id = SessionId::random().unwrap();
    /// assert_eq!(id.key(), id.key());
    /// assert_ne!(id.key(), SessionId::random().unwrap().key());
    /// ```
    #[must_use]
    pub fn key(&self) -> SessionKey {
        let digest = Sha256::new()
            .chain_update(b"cloakroom-key-v1")
            .chain_update(self.0)
            .finalize();
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(&digest[..KEY_LEN]);
        SessionKey(key)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.key().fingerprint())
    }
}

/// The key a store files a session under: a hash of the [`SessionId`], never the ID itself.
///
/// Its text form (22 base64url characters) is safe to show to operators and to use as a
/// handle for revoking one session: it cannot be turned back into a cookie.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey([u8; KEY_LEN]);

impl SessionKey {
    /// The raw key bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Rebuilds a key from its raw bytes (for stores reading their own data back).
    #[must_use]
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses the text form produced by [`fmt::Display`]; `None` if it is not one.
    ///
    /// ```
    /// use cloakroom::{SessionId, SessionKey};
    /// let key = SessionId::random().unwrap().key();
    /// assert_eq!(SessionKey::parse(&key.to_string()), Some(key));
    /// assert_eq!(SessionKey::parse("not a key"), None);
    /// ```
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 22 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    /// A short, non-reversible fingerprint for log lines (8 hex digits).
    #[must_use]
    pub fn fingerprint(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = Sha256::digest(self.0);
        let mut out = String::with_capacity(8);
        for b in &digest[..4] {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        out
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey({})", self.fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// OWASP 1 and 2: IDs come from the OS CSPRNG, 10^6 of them never collide, and every bit
    /// of every position is set about half the time (no fixed or predictable part).
    #[test]
    fn owasp_01_02_ids_are_unique_uniform_and_have_no_fixed_part() {
        const N: usize = 1_000_000;
        let mut seen = HashSet::with_capacity(N);
        let mut ones = [0u32; ID_LEN * 8];
        for _ in 0..N {
            let id = SessionId::random().expect("OS randomness");
            for (i, byte) in id.as_bytes().iter().enumerate() {
                for bit in 0..8 {
                    ones[i * 8 + bit] += u32::from(byte >> bit & 1);
                }
            }
            assert!(seen.insert(*id.as_bytes()), "a collision among {N} IDs");
        }
        // Binomial(10^6, 1/2): standard deviation 500; 6 sigma is 3,000.
        for (bit, count) in ones.iter().enumerate() {
            let off = (i64::from(*count) - 500_000).abs();
            assert!(off < 3_000, "bit {bit} set {count} times in {N}");
        }
    }
}
