//! Session-ID guessing detection: invalid cookies counted per client address.
//!
//! A forged cookie never reaches the store (its signature fails first), so guessing costs the
//! app only an HMAC. It is still a signal worth seeing: a client that keeps sending invalid
//! cookies is counted, logged once per window, and (optionally) answered `429`.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use http::HeaderMap;

use crate::record::{now_millis, Millis};

/// Clients tracked at most; past this the oldest leaves (an active guesser goes to the back).
const MAX_CLIENTS: usize = 10_000;

/// How invalid cookies are counted and answered. Build with [`GuessingPolicy::new`].
///
/// ```
/// use std::time::Duration;
/// use cloakroom::GuessingPolicy;
/// let policy = GuessingPolicy::new(20, Duration::from_secs(60))
///     .with_throttle(true)
///     .with_trusted_proxies(["10.0.0.1".parse().unwrap()]);
/// # let _ = policy;
/// ```
#[derive(Debug, Clone)]
pub struct GuessingPolicy {
    limit: u32,
    window: Duration,
    throttle: bool,
    trusted_proxies: Vec<IpAddr>,
}

impl Default for GuessingPolicy {
    /// 20 invalid cookies per client per minute, logged and counted, not throttled; no
    /// trusted proxies.
    fn default() -> Self {
        Self::new(20, Duration::from_secs(60))
    }
}

impl GuessingPolicy {
    /// Flags a client that sends more than `limit` invalid cookies within `window`.
    #[must_use]
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            throttle: false,
            trusted_proxies: Vec::new(),
        }
    }

    /// Answer a flagged client's invalid-cookie requests with `429` until its window ends.
    #[must_use]
    pub fn with_throttle(mut self, throttle: bool) -> Self {
        self.throttle = throttle;
        self
    }

    /// Peers whose `X-Forwarded-For` is believed: the client is the rightmost address in it
    /// that is not itself a trusted proxy. Other peers are the client themselves.
    #[must_use]
    pub fn with_trusted_proxies(mut self, proxies: impl IntoIterator<Item = IpAddr>) -> Self {
        self.trusted_proxies = proxies.into_iter().collect();
        self
    }

    /// Whether flagged clients are answered `429` (the cookie must then be verified before the
    /// handler runs).
    pub(crate) fn throttles(&self) -> bool {
        self.throttle
    }

    /// The client behind a request from `peer` with `headers`.
    pub(crate) fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?;
        if !self.trusted_proxies.contains(&peer) {
            return Some(peer);
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse().ok())
            .collect();
        Some(
            forwarded
                .into_iter()
                .rev()
                .find(|a| !self.trusted_proxies.contains(a))
                .unwrap_or(peer),
        )
    }
}

/// What the detector says about one invalid cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Under the limit.
    Counted,
    /// This cookie crossed the limit: log it.
    Flagged,
    /// Over the limit and throttling is on: answer 429.
    Throttled,
}

/// Per-client counts of invalid cookies in fixed windows. A client is an IPv4 address or an
/// IPv6 /64 (one subscriber's network: an attacker with one has 2^64 addresses to rotate
/// through). Bounded: when full, the client counted first leaves first (O(1)), unless it is
/// guessing right now, so a flood of new addresses neither resets everyone's count nor
/// frees an active guesser.
#[derive(Debug, Default)]
pub(crate) struct Detector {
    clients: Mutex<Clients>,
}

#[derive(Debug, Default)]
struct Clients {
    counts: HashMap<IpAddr, (Millis, u32)>,
    order: VecDeque<IpAddr>,
}

/// The address a client is counted under: IPv6 cut to its /64.
fn counted_as(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

impl Detector {
    pub(crate) fn invalid(&self, policy: &GuessingPolicy, client: IpAddr) -> Verdict {
        let now = now_millis();
        let client = counted_as(client);
        let window = u64::try_from(policy.window.as_millis()).unwrap_or(u64::MAX);
        let mut guard = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Clients { counts, order } = &mut *guard;
        if !counts.contains_key(&client) {
            // The oldest leaves, unless it is guessing now (over the limit in an open
            // window): that one goes to the back, a few times at most per insert.
            let mut spared = 0;
            while counts.len() >= MAX_CLIENTS {
                let Some(oldest) = order.pop_front() else {
                    break;
                };
                let guessing = counts.get(&oldest).is_some_and(|(start, n)| {
                    *n > policy.limit && now < start.saturating_add(window)
                });
                if guessing && spared < 8 {
                    spared += 1;
                    order.push_back(oldest);
                } else {
                    counts.remove(&oldest);
                }
            }
            order.push_back(client);
        }
        let entry = counts.entry(client).or_insert((now, 0));
        if now >= entry.0.saturating_add(window) {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        match entry.1 {
            n if n <= policy.limit => Verdict::Counted,
            n if n == policy.limit + 1 => Verdict::Flagged,
            _ if policy.throttle => Verdict::Throttled,
            _ => Verdict::Counted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_once_then_throttles_when_asked() {
        let policy = GuessingPolicy::new(3, Duration::from_secs(60)).with_throttle(true);
        let d = Detector::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let verdicts: Vec<Verdict> = (0..5).map(|_| d.invalid(&policy, ip)).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Counted,
                Verdict::Counted,
                Verdict::Counted,
                Verdict::Flagged,
                Verdict::Throttled
            ]
        );
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert_eq!(d.invalid(&policy, other), Verdict::Counted);
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let policy = GuessingPolicy::default().with_trusted_proxies([proxy]);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.0.0.1".parse().unwrap());
        assert_eq!(
            policy.client(Some(proxy), &h),
            Some("203.0.113.9".parse().unwrap())
        );
        let stranger: IpAddr = "198.51.100.3".parse().unwrap();
        assert_eq!(policy.client(Some(stranger), &h), Some(stranger));
        assert_eq!(policy.client(None, &h), None);
    }

    #[test]
    fn the_table_stays_bounded() {
        let policy = GuessingPolicy::default();
        let d = Detector::default();
        for i in 0..(MAX_CLIENTS as u32 + 10) {
            d.invalid(&policy, IpAddr::from(i.to_be_bytes()));
        }
        assert!(d.clients.lock().unwrap().counts.len() <= MAX_CLIENTS);
    }

    #[test]
    fn an_ipv6_network_counts_as_one_client_and_a_flood_resets_nobody() {
        let policy = GuessingPolicy::new(3, Duration::from_secs(60));
        let d = Detector::default();
        let guesser: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        for _ in 0..3 {
            d.invalid(&policy, guesser);
        }
        // Rotating through the /64 is the same client.
        let rotated: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        assert_eq!(d.invalid(&policy, rotated), Verdict::Flagged);
        // A flood of other networks evicts the oldest one at a time, never everyone at once.
        let recent: IpAddr = "198.51.100.1".parse().unwrap();
        for i in 0..(MAX_CLIENTS as u32 - 2) {
            d.invalid(&policy, IpAddr::from((0x0a00_0000 + i).to_be_bytes()));
        }
        d.invalid(&policy, recent);
        d.invalid(&policy, recent);
        d.invalid(&policy, recent);
        d.invalid(&policy, IpAddr::from([192, 0, 2, 200]));
        assert_eq!(
            d.invalid(&policy, recent),
            Verdict::Flagged,
            "still counted"
        );
    }
}
