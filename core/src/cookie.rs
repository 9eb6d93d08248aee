//! Reading the session cookie from a request and writing `Set-Cookie` headers.

use std::time::Duration;

use http::{header, HeaderMap, HeaderValue};

use crate::config::SessionConfig;
use crate::keyring::COOKIE_VALUE_LEN;

/// What the request's `Cookie` headers say about our cookie.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// No cookie of our name.
    Absent,
    /// Present but unusable: duplicated, oversized, or not ASCII.
    Malformed,
    /// Exactly one candidate value (not yet verified).
    One(String),
}

/// Finds our cookie among every `Cookie` header, byte-wise so that non-UTF-8 input is safe.
pub(crate) fn find(headers: &HeaderMap, name: &str) -> Found {
    let mut found: Option<&[u8]> = None;
    let mut malformed = false;
    for header in headers.get_all(header::COOKIE) {
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
            if found.is_some() {
                // Two cookies of our name (e.g. one planted for a parent domain): refuse both
                // rather than guess which one the browser meant.
                return Found::Malformed;
            }
            malformed |= value.len() > COOKIE_VALUE_LEN * 2 || !value.is_ascii();
            found = Some(value);
        }
    }
    match found {
        None => Found::Absent,
        Some(_) if malformed => Found::Malformed,
        Some(value) => Found::One(String::from_utf8_lossy(value).into_owned()),
    }
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
    let mut out = format!("{}={}", config.cookie_name, value);
    if let Some(age) = max_age {
        out.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    attributes(config, &mut out);
    // The name is validated by the config builder and the value is base64url, so this holds.
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A `Set-Cookie` value that makes the browser forget the cookie.
pub(crate) fn removal(config: &SessionConfig) -> HeaderValue {
    let mut out = format!(
        "{}=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        config.cookie_name
    );
    attributes(config, &mut out);
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
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

    #[test]
    fn finds_one_cookie_among_others() {
        let h = headers(&[b"a=1; sid=abc; b=2"]);
        assert_eq!(find(&h, "sid"), Found::One("abc".into()));
        assert_eq!(find(&h, "si"), Found::Absent);
    }

    #[test]
    fn duplicates_and_garbage_are_malformed() {
        assert_eq!(find(&headers(&[b"sid=a; sid=b"]), "sid"), Found::Malformed);
        assert_eq!(
            find(&headers(&[b"sid=a", b"sid=b"]), "sid"),
            Found::Malformed
        );
        assert_eq!(find(&headers(&[b"sid=\xff\xfe"]), "sid"), Found::Malformed);
        let huge = format!("sid={}", "A".repeat(10_000));
        assert_eq!(find(&headers(&[huge.as_bytes()]), "sid"), Found::Malformed);
        assert_eq!(find(&headers(&[b";;=;sid"]), "sid"), Found::Absent);
    }
}
