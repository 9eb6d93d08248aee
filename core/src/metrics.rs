//! Metrics for operators: what the layer did and what went wrong, how long the store took,
//! rendered in the Prometheus text format by `prometheus-client` (HELP and TYPE lines, one
//! histogram per store operation).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident),* $(,)?) => {
        /// What a [`crate::SessionLayer`] did and what went wrong: monotonic counters (cheap
        /// to update: relaxed atomics) and a latency histogram per store operation.
        #[derive(Debug, Default)]
        pub struct SessionMetrics {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
            /// Time each store operation took, as the layer saw it.
            pub store_latency: StoreLatency,
        }

        /// Every counter: Prometheus name (without `cloakroom_` and `_total`), help, value.
        fn counter_values(m: &SessionMetrics) -> Vec<(&'static str, &'static str, u64)> {
            vec![$((
                stringify!($name),
                concat!($($doc, " "),*),
                m.$name.load(Ordering::Relaxed),
            ),)*]
        }
    };
}

counters! {
    /// Sessions loaded from the store.
    loads,
    /// Sessions created.
    creates,
    /// New sessions refused because too many were being created at once (a flood).
    creates_refused,
    /// Conditional writes applied.
    applies,
    /// Session IDs cycled.
    cycles,
    /// Sessions destroyed.
    destroys,
    /// Idle deadlines slid forward.
    refreshes,
    /// Cookies refused: forged, malformed, or signed by an unknown key.
    rejected_cookies,
    /// Validly signed cookies whose session had expired or was unknown to the store.
    expired_seen,
    /// Requests refused with `429` because their client kept sending invalid cookies.
    guessing_throttled,
    /// Unsafe cross-site requests refused by the CSRF guard.
    csrf_rejections,
    /// Requests whose client properties differed from those the session is bound to.
    binding_mismatches,
    /// Writes refused because the session had ended (a would-be resurrection).
    writes_to_ended_sessions,
    /// Store calls that failed.
    store_errors,
    /// Store calls that timed out.
    store_timeouts,
    /// Store calls not attempted because the circuit breaker was open.
    circuit_rejections,
    /// Requests served a read-only session from a fallback ticket while the store was down.
    degraded_requests,
    /// Fallback tickets issued (or re-issued) while the store answered.
    tickets_issued,
    /// Fallback tickets refused: past their lifetime.
    tickets_refused_expired,
    /// Fallback tickets refused: not sealed by a key of the ring (tampered, forged, retired).
    tickets_refused_forged,
    /// Fallback tickets refused: for another session, or one that ended.
    tickets_refused_stale,
    /// Requests that did not use a session (or had none).
    requests_none,
    /// Requests that used an existing session.
    requests_loaded,
    /// Requests that created a session.
    requests_created,
    /// Requests that gave their session a new ID (login, privilege change, renewal).
    requests_cycled,
    /// Requests that ended their session (logout).
    requests_destroyed,
    /// Logins: a session given a user.
    logins,
}

/// The store operations timed, in the order of [`StoreLatency`]'s histograms.
pub const STORE_OPERATIONS: [&str; 9] = [
    "load",
    "create",
    "apply",
    "cycle",
    "destroy",
    "list_user",
    "destroy_user",
    "stats",
    "ping",
];

/// Upper bounds of the latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// One histogram of store call durations per operation ([`STORE_OPERATIONS`]).
#[derive(Debug, Default)]
pub struct StoreLatency {
    ops: [Histogram; 9],
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; 12],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl StoreLatency {
    /// Records one call of operation `op` (an index into [`STORE_OPERATIONS`]).
    pub(crate) fn record(&self, op: usize, took: Duration) {
        let Some(h) = self.ops.get(op) else {
            return;
        };
        let secs = took.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            h.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        h.sum_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Calls per latency bucket ([`LATENCY_BUCKETS`], not cumulative), every operation
    /// together, and the calls slower than the last bucket at the end.
    #[must_use]
    pub fn buckets(&self) -> Vec<u64> {
        let mut out = vec![0; LATENCY_BUCKETS.len() + 1];
        for h in &self.ops {
            let mut counted = 0;
            for (slot, n) in out.iter_mut().zip(&h.buckets) {
                let n = n.load(Ordering::Relaxed);
                *slot += n;
                counted += n;
            }
            out[LATENCY_BUCKETS.len()] += h.count.load(Ordering::Relaxed).saturating_sub(counted);
        }
        out
    }

    /// How many calls of `op` were recorded.
    #[must_use]
    pub fn count(&self, op: &str) -> u64 {
        STORE_OPERATIONS
            .iter()
            .position(|o| *o == op)
            .map_or(0, |i| self.ops[i].count.load(Ordering::Relaxed))
    }
}

/// Point-in-time figures rendered beside the counters, when the caller knows them.
#[derive(Debug, Default, Clone, Copy)]
#[non_exhaustive]
pub struct Gauges {
    /// Whether the circuit breaker is open.
    pub breaker_open: Option<bool>,
    /// Live sessions in the store.
    pub live_sessions: Option<u64>,
    /// Read-cache hits and misses so far.
    pub cache: Option<(u64, u64)>,
}

impl Gauges {
    /// No gauges.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
    /// With the breaker state.
    #[must_use]
    pub fn with_breaker_open(mut self, open: bool) -> Self {
        self.breaker_open = Some(open);
        self
    }
    /// With the live-session count.
    #[must_use]
    pub fn with_live_sessions(mut self, sessions: u64) -> Self {
        self.live_sessions = Some(sessions);
        self
    }
    /// With the read cache's hits and misses.
    #[must_use]
    pub fn with_cache(mut self, hits: u64, misses: u64) -> Self {
        self.cache = Some((hits, misses));
        self
    }
}

/// One operation's histogram at scrape time: name, sum in seconds, count, cumulative buckets.
type HistogramSnapshot = (&'static str, f64, u64, Vec<(f64, u64)>);

/// A snapshot of the metrics, encoded at scrape time.
#[derive(Debug)]
struct Snapshot {
    counters: Vec<(&'static str, &'static str, u64)>,
    latency: Vec<HistogramSnapshot>,
    gauges: Gauges,
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, value) in &self.counters {
            let metric = prometheus_client::metrics::counter::ConstCounter::new(*value);
            let e = encoder.encode_descriptor(name, help.trim(), None, metric.metric_type())?;
            metric.encode(e)?;
        }
        let mut e = encoder.encode_descriptor(
            "store_latency_seconds",
            "Time each store operation took, as the session layer saw it.",
            None,
            MetricType::Histogram,
        )?;
        for (op, sum, count, buckets) in &self.latency {
            let labels = [("operation", *op)];
            e.encode_family(&labels)?
                .encode_histogram::<Vec<(String, String)>>(*sum, *count, buckets, None)?;
        }
        let mut gauge = |name: &str, help: &str, value: i64| {
            let metric = prometheus_client::metrics::gauge::ConstGauge::new(value);
            let e = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
            metric.encode(e)
        };
        if let Some(open) = self.gauges.breaker_open {
            gauge(
                "breaker_open",
                "1 while the circuit breaker is open (store calls fail at once).",
                i64::from(open),
            )?;
        }
        if let Some(n) = self.gauges.live_sessions {
            gauge(
                "live_sessions",
                "Live sessions in the store.",
                i64::try_from(n).unwrap_or(i64::MAX),
            )?;
        }
        if let Some((hits, misses)) = self.gauges.cache {
            for (name, help, v) in [
                (
                    "read_cache_hits",
                    "Session reads served from the read cache.",
                    hits,
                ),
                (
                    "read_cache_misses",
                    "Session reads the read cache sent to the store.",
                    misses,
                ),
            ] {
                let metric = prometheus_client::metrics::counter::ConstCounter::new(v);
                let e = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
                metric.encode(e)?;
            }
        }
        Ok(())
    }
}

impl SessionMetrics {
    /// Every metric in the Prometheus text exposition format (names prefixed `cloakroom_`).
    #[must_use]
    pub fn render_prometheus(&self) -> String {
        self.render_prometheus_with(Gauges::default())
    }

    /// As [`SessionMetrics::render_prometheus`], with point-in-time `gauges`.
    #[must_use]
    pub fn render_prometheus_with(&self, gauges: Gauges) -> String {
        let latency = STORE_OPERATIONS
            .iter()
            .zip(&self.store_latency.ops)
            .map(|(op, h)| {
                let mut cumulative = 0;
                let buckets = LATENCY_BUCKETS
                    .iter()
                    .zip(&h.buckets)
                    .map(|(bound, n)| {
                        cumulative += n.load(Ordering::Relaxed);
                        (*bound, cumulative)
                    })
                    .collect();
                #[allow(clippy::cast_precision_loss)]
                let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
                (*op, sum, h.count.load(Ordering::Relaxed), buckets)
            })
            .collect();
        let mut registry = Registry::with_prefix("cloakroom");
        registry.register_collector(Box::new(Snapshot {
            counters: counter_values(self),
            latency,
            gauges,
        }));
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
