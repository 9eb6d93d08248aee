//! Reading the session cookie and the fallback ticket's from a request, and writing every
//! `Set-Cookie` header: the one place a cookie is decided.

use std::time::Duration;

use http::{header, HeaderMap, HeaderValue};

use crate::config::{FailurePolicy, SessionConfig};
use crate::keyring::COOKIE_VALUE_LEN;
use crate::record::Millis;

/// Every candidate value of our cookie, in header order, byte-wise so that non-UTF-8 input is
/// safe. Values that cannot be ours (oversized, not ASCII) are counted, not returned.
///
/// Hand-written on purpose, not the `cookie` crate: we need *every* value of one name in
/// header order (a jar keeps one per name, and which one is what cookie tossing exploits),
/// a bound on how many are looked at, no percent-decoding (our values are base64url; decoding
/// would let two spellings name one cookie), and no allocation for the other cookies.
///
/// Several values is the normal shape of a cookie-tossing attack: a sibling subdomain plants
/// `sid=…; Domain=parent` beside the real one. The caller takes the first value whose
/// signature verifies, so a planted cookie can neither replace nor lock out the real one.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Candidates {
    pub(crate) values: Vec<String>,
    pub(crate) malformed: usize,
}

/// More candidates than this are not looked at (each costs an HMAC).
const MAX_CANDIDATES: usize = 4;

pub(crate) fn find(headers: &HeaderMap, name: &str) -> Candidates {
    find_in(headers.get_all(header::COOKIE), name, COOKIE_VALUE_LEN * 2)
}

/// As [`find`], over `Cookie` header values, accepting values up to `max_len` bytes.
pub(crate) fn find_in<'a>(
    headers: impl IntoIterator<Item = &'a HeaderValue>,
    name: &str,
    max_len: usize,
) -> Candidates {
    let mut found = Candidates::default();
    for header in headers {
        for pair in header.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if &pair[..eq] != name.as_bytes() {
                continue;
            }
            let mut value = pair[eq + 1..].trim_ascii();
            if value.len() >= 2 && value[0] == b'"' && value[value.len() - 1] == b'"' {
                value = &value[1..value.len() - 1];
            }
            if value.len() > max_len || !value.is_ascii() || found.values.len() >= MAX_CANDIDATES {
                found.malformed += 1;
            } else {
                found
                    .values
                    .push(String::from_utf8_lossy(value).into_owned());
            }
        }
    }
    found
}

fn attributes(config: &SessionConfig, out: &mut String) {
    out.push_str("; Path=");
    out.push_str(&config.path);
    if let Some(domain) = &config.domain {
        out.push_str("; Domain=");
        out.push_str(domain);
    }
    out.push_str("; HttpOnly; SameSite=");
    out.push_str(config.same_site.as_str());
    if config.secure {
        out.push_str("; Secure");
    }
}

/// A `Set-Cookie` value carrying `value`, valid for `max_age` (none: a browser-session cookie).
pub(crate) fn set(config: &SessionConfig, value: &str, max_age: Option<Duration>) -> HeaderValue {
    set_named(config, &config.cookie_name, value, max_age)
}

/// As [`set`], for the cookie `name` (the fallback ticket) with the session cookie's attributes.
pub(crate) fn set_named(
    config: &SessionConfig,
    name: &str,
    value: &str,
    max_age: Option<Duration>,
) -> HeaderValue {
    let mut out = format!("{name}={value}");
    if let Some(age) = max_age {
        out.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    attributes(config, &mut out);
    // The name is validated by the config builder and the value is base64url, so this holds.
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A `Set-Cookie` value that makes the browser forget the cookie.
pub(crate) fn removal(config: &SessionConfig) -> HeaderValue {
    removal_named(config, &config.cookie_name)
}

/// As [`removal`], for the cookie `name`.
pub(crate) fn removal_named(config: &SessionConfig, name: &str) -> HeaderValue {
    let mut out = format!("{name}=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT");
    attributes(config, &mut out);
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The fallback ticket's cookie as one request carries it: the raw `Cookie` headers, kept
/// unparsed (a reference count each) and read only when the store fails or the response may
/// re-issue the ticket; and the headers that issue or remove it.
#[derive(Debug, Default)]
pub(crate) struct TicketCookie {
    headers: Vec<HeaderValue>,
}

impl TicketCookie {
    /// The request's cookies, kept only under [`FailurePolicy::Fallback`].
    pub(crate) fn from_request(headers: &HeaderMap, config: &SessionConfig) -> Self {
        if config.failure_policy != FailurePolicy::Fallback {
            return Self::default();
        }
        Self {
            headers: headers.get_all(header::COOKIE).iter().cloned().collect(),
        }
    }

    /// The ticket values the request carries (bounded in length).
    pub(crate) fn values(&self, config: &SessionConfig) -> Vec<String> {
        if self.headers.is_empty() {
            return Vec::new();
        }
        find_in(
            &self.headers,
            &config.fallback.cookie_name,
            crate::ticket::MAX_VALUE_LEN,
        )
        .values
    }

    /// Every ticket the request carries, opened: each valid one, or why it is not.
    pub(crate) fn open(
        &self,
        config: &SessionConfig,
        now: Millis,
    ) -> Vec<Result<crate::ticket::Ticket, crate::ticket::Refused>> {
        self.values(config)
            .iter()
            .map(|value| config.fallback.keys.open(value, now))
            .collect()
    }

    /// The `Set-Cookie` that issues the sealed ticket `value`.
    pub(crate) fn issue(config: &SessionConfig, value: &str) -> HeaderValue {
        set_named(
            config,
            &config.fallback.cookie_name,
            value,
            Some(config.fallback.lifetime),
        )
    }

    /// The `Set-Cookie` that removes the ticket.
    pub(crate) fn remove(config: &SessionConfig) -> HeaderValue {
        removal_named(config, &config.fallback.cookie_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(header::COOKIE, HeaderValue::from_bytes(v).unwrap());
        }
        map
    }

    fn values(found: Candidates) -> (Vec<String>, usize) {
        (found.values, found.malformed)
    }

    #[test]
    fn finds_one_cookie_among_others() {
        let h = headers(&[b"a=1; sid=abc; b=2"]);
        assert_eq!(values(find(&h, "sid")), (vec!["abc".into()], 0));
        assert_eq!(values(find(&h, "si")), (vec![], 0));
    }

    #[test]
    fn duplicates_are_all_candidates_and_garbage_is_counted() {
        assert_eq!(
            values(find(&headers(&[b"sid=a; sid=b"]), "sid")),
            (vec!["a".into(), "b".into()], 0)
        );
        assert_eq!(
            values(find(&headers(&[b"sid=a", b"sid=b"]), "sid")),
            (vec!["a".into(), "b".into()], 0)
        );
        assert_eq!(
            values(find(&headers(&[b"sid=\xff\xfe"]), "sid")),
            (vec![], 1)
        );
        let huge = format!("sid={}", "A".repeat(10_000));
        assert_eq!(
            values(find(&headers(&[huge.as_bytes()]), "sid")),
            (vec![], 1)
        );
        assert_eq!(values(find(&headers(&[b";;=;sid"]), "sid")), (vec![], 0));
        let many = "sid=a; ".repeat(10);
        let found = find(&headers(&[many.as_bytes()]), "sid");
        assert_eq!(
            (found.values.len(), found.malformed),
            (MAX_CANDIDATES, 10 - MAX_CANDIDATES)
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;
        use crate::{KeyRing, SessionId, Verified};

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

            /// Any bytes in any number of Cookie headers: no panic, and every candidate is
            /// bounded in size and count.
            #[test]
            fn the_parser_takes_any_bytes(raw in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..4)) {
                let mut map = HeaderMap::new();
                for bytes in &raw {
                    if let Ok(value) = HeaderValue::from_bytes(bytes) {
                        map.append(header::COOKIE, value);
                    }
                }
                let found = find(&map, "sid");
                prop_assert!(found.values.len() <= MAX_CANDIDATES);
                prop_assert!(found.values.iter().all(|v| v.len() <= COOKIE_VALUE_LEN * 2));
            }

            /// No string the attacker makes verifies, and no change to a real cookie does.
            #[test]
            fn no_forgery_verifies(text in "[A-Za-z0-9_=-]{0,120}", at in 0usize..64, with in "[A-Za-z0-9_-]") {
                let ring = KeyRing::from_comma_separated("prop-secret-prop-secret-prop-secret-01").unwrap();
                prop_assert!(ring.verify(&text).is_none());
                let good = ring.sign(&SessionId::random().unwrap());
                prop_assert!(matches!(ring.verify(&good), Some(Verified::Current(_))));
                let mut forged = good.clone().into_bytes();
                let at = at % forged.len();
                forged[at] = with.as_bytes()[0];
                let forged = String::from_utf8(forged).unwrap();
                if forged != good {
                    prop_assert!(ring.verify(&forged).is_none(), "{forged} verified");
                }
            }
        }
    }
}
