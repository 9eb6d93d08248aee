//! Optional binding of a session to properties of its client (OWASP: anomaly detection).
//!
//! Off by default: mobile users change networks and browsers update their User-Agent, so a
//! binding that terminates sessions logs real users out. When on, the session keeps a hash of
//! the bound properties; a request whose properties differ is logged (and counted), and with
//! [`Binding::with_terminate`] the session is ended, as if its cookie had been stolen.

use std::net::IpAddr;

use http::{header, HeaderMap};
use sha2::{Digest, Sha256};

/// Which client properties a session is bound to, and what a change does.
///
/// ```
/// use cloakroom::Binding;
/// let binding = Binding::new().with_user_agent(true).with_network(true).with_terminate(false);
/// # let _ = binding;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Binding {
    user_agent: bool,
    network: bool,
    terminate: bool,
}

impl Binding {
    /// Binds to nothing (the default): the same as no binding.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Bind to the `User-Agent` header.
    #[must_use]
    pub fn with_user_agent(mut self, on: bool) -> Self {
        self.user_agent = on;
        self
    }

    /// Bind to the client's network: its IPv4 /24 or IPv6 /48 (trusted-proxy aware, like
    /// the guessing detector).
    #[must_use]
    pub fn with_network(mut self, on: bool) -> Self {
        self.network = on;
        self
    }

    /// End the session when the properties change, instead of only logging it.
    #[must_use]
    pub fn with_terminate(mut self, on: bool) -> Self {
        self.terminate = on;
        self
    }

    pub(crate) fn is_on(&self) -> bool {
        self.user_agent || self.network
    }

    pub(crate) fn terminates(&self) -> bool {
        self.terminate
    }

    /// The hash of a request's bound properties (16 hex digits), or `None` when off.
    pub(crate) fn fingerprint(
        &self,
        headers: &HeaderMap,
        client: Option<IpAddr>,
    ) -> Option<String> {
        if !self.is_on() {
            return None;
        }
        let mut hash = Sha256::new().chain_update(b"cloakroom-binding-v1");
        if self.user_agent {
            let agent = headers
                .get(header::USER_AGENT)
                .map_or(&[][..], http::HeaderValue::as_bytes);
            hash.update(b"ua\0");
            hash.update(agent);
        }
        if self.network {
            hash.update(b"\0net\0");
            match client {
                Some(IpAddr::V4(v4)) => hash.update(&v4.octets()[..3]),
                Some(IpAddr::V6(v6)) => hash.update(&v6.octets()[..6]),
                None => {}
            }
        }
        Some(
            hash.finalize()[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_follows_only_the_bound_properties() {
        let ua = |agent: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::USER_AGENT, agent.parse().unwrap());
            h
        };
        let ip = |text: &str| Some(text.parse::<IpAddr>().unwrap());
        assert_eq!(Binding::new().fingerprint(&ua("a"), None), None);
        let by_agent = Binding::new().with_user_agent(true);
        assert_ne!(
            by_agent.fingerprint(&ua("a"), None),
            by_agent.fingerprint(&ua("b"), None)
        );
        assert_eq!(
            by_agent.fingerprint(&ua("a"), ip("192.0.2.1")),
            by_agent.fingerprint(&ua("a"), ip("198.51.100.1"))
        );
        let by_net = Binding::new().with_network(true);
        assert_eq!(
            by_net.fingerprint(&ua("a"), ip("192.0.2.1")),
            by_net.fingerprint(&ua("b"), ip("192.0.2.200")),
            "same /24"
        );
        assert_ne!(
            by_net.fingerprint(&ua("a"), ip("192.0.2.1")),
            by_net.fingerprint(&ua("a"), ip("192.0.3.1"))
        );
    }
}
