//! Metrics for operators: what the layer did and what went wrong, how long the store took.
//! They register into an app's `prometheus-client` registry ([`SessionMetrics::register`]),
//! every dimension a label: `cloakroom_requests_total{session="created"}`, one latency
//! histogram per store operation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// What a [`crate::SessionLayer`] did and what went wrong: monotonic counters (cheap to
/// update: relaxed atomics) and a latency histogram per store operation.
#[derive(Debug, Default)]
pub struct SessionMetrics {
    /// Sessions loaded from the store.
    pub loads: AtomicU64,
    /// Sessions created.
    pub creates: AtomicU64,
    /// New sessions refused because too many were being created at once (a flood).
    pub creates_refused: AtomicU64,
    /// Conditional writes applied.
    pub applies: AtomicU64,
    /// Session IDs cycled.
    pub cycles: AtomicU64,
    /// Sessions destroyed.
    pub destroys: AtomicU64,
    /// Idle deadlines slid forward.
    pub refreshes: AtomicU64,
    /// Cookies refused: forged, malformed, or signed by an unknown key.
    pub rejected_cookies: AtomicU64,
    /// Validly signed cookies whose session had expired or was unknown to the store.
    pub expired_seen: AtomicU64,
    /// Requests refused with `429` because their client kept sending invalid cookies.
    pub guessing_throttled: AtomicU64,
    /// Unsafe cross-site requests refused by the CSRF guard.
    pub csrf_rejections: AtomicU64,
    /// Requests whose client properties differed from those the session is bound to.
    pub binding_mismatches: AtomicU64,
    /// Writes refused because the session had ended (a would-be resurrection).
    pub writes_to_ended_sessions: AtomicU64,
    /// Store calls that failed.
    pub store_errors: AtomicU64,
    /// Store calls that timed out.
    pub store_timeouts: AtomicU64,
    /// Store calls not attempted because the circuit breaker was open.
    pub circuit_rejections: AtomicU64,
    /// Requests served a read-only session from a fallback ticket while the store was down.
    pub degraded_requests: AtomicU64,
    /// Fallback tickets issued (or re-issued) while the store answered.
    pub tickets_issued: AtomicU64,
    /// Fallback tickets refused: past their lifetime.
    pub tickets_refused_expired: AtomicU64,
    /// Fallback tickets refused: not sealed by a key of the ring (tampered, forged, retired).
    pub tickets_refused_forged: AtomicU64,
    /// Fallback tickets refused: for another session, or one that ended.
    pub tickets_refused_stale: AtomicU64,
    /// Requests that did not use a session (or had none).
    pub requests_none: AtomicU64,
    /// Requests that used an existing session.
    pub requests_loaded: AtomicU64,
    /// Requests that created a session.
    pub requests_created: AtomicU64,
    /// Requests that gave their session a new ID (login, privilege change, renewal).
    pub requests_cycled: AtomicU64,
    /// Requests that ended their session (logout).
    pub requests_destroyed: AtomicU64,
    /// Logins: a session given a user.
    pub logins: AtomicU64,
    /// Stored values that no longer decoded as the type asked for, read as absent.
    pub decode_failures: AtomicU64,
    /// Lifecycle events not delivered because the handler's queue was full.
    pub events_dropped: AtomicU64,
    /// Sessions ended, by reason (in the order of [`crate::events::EndReason::ALL`]).
    pub sessions_ended: [AtomicU64; crate::events::EndReason::ALL.len()],
    /// Foreign sessions taken over (`crate::import`).
    pub imports: AtomicU64,
    /// Foreign session records found but not read (a format such as pickle).
    pub imports_unreadable: AtomicU64,
    /// Fields of imported sessions left out (reserved names, or past this layer's limits).
    pub import_skipped_fields: AtomicU64,
    /// Time each store operation took, as the layer saw it.
    pub store_latency: StoreLatency,
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
    /// The records the read cache holds and the bytes they are counted at.
    pub cache_size: Option<(u64, u64)>,
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
    /// With the read cache's records and the bytes they are counted at.
    #[must_use]
    pub fn with_cache_size(mut self, entries: u64, bytes: u64) -> Self {
        self.cache_size = Some((entries, bytes));
        self
    }
}

/// One operation's histogram at scrape time: name, sum in seconds, count, cumulative buckets.
type HistogramSnapshot = (&'static str, f64, u64, Vec<(f64, u64)>);

/// One labelled counter family: its name (without `cloakroom_` and `_total`), help, label
/// key, and each label value's counter.
struct Family {
    name: &'static str,
    help: &'static str,
    values: Values,
}

/// A family's value: one, or one per value of its label.
enum Values {
    One(u64),
    Labelled(&'static str, Vec<(&'static str, u64)>),
}

impl Family {
    fn single(name: &'static str, help: &'static str, counter: &AtomicU64) -> Self {
        Self {
            name,
            help,
            values: Values::One(counter.load(Ordering::Relaxed)),
        }
    }

    fn labelled(
        name: &'static str,
        help: &'static str,
        label: &'static str,
        members: &[(&'static str, &AtomicU64)],
    ) -> Self {
        let members = members
            .iter()
            .map(|(value, c)| (*value, c.load(Ordering::Relaxed)))
            .collect();
        Self {
            name,
            help,
            values: Values::Labelled(label, members),
        }
    }
}

impl SessionMetrics {
    /// Every counter as a family: one dimension (what a request did to its session, why a
    /// ticket was refused, how a store call failed) is a label, never a name.
    fn families(&self) -> Vec<Family> {
        let m = self;
        vec![
            Family::labelled(
                "requests",
                "Requests by what they did to their session.",
                "session",
                &[
                    ("none", &m.requests_none),
                    ("loaded", &m.requests_loaded),
                    ("created", &m.requests_created),
                    ("cycled", &m.requests_cycled),
                    ("destroyed", &m.requests_destroyed),
                ],
            ),
            Family::labelled(
                "session_operations",
                "Session operations the layer completed in the store.",
                "operation",
                &[
                    ("load", &m.loads),
                    ("create", &m.creates),
                    ("apply", &m.applies),
                    ("cycle", &m.cycles),
                    ("destroy", &m.destroys),
                    ("refresh", &m.refreshes),
                ],
            ),
            Family::single("logins", "Logins: a session given a user.", &m.logins),
            Family::labelled(
                "imports",
                "Foreign sessions (Express, Flask) met: taken over, or found unreadable.",
                "result",
                &[
                    ("imported", &m.imports),
                    ("unreadable", &m.imports_unreadable),
                ],
            ),
            {
                let ended: Vec<(&'static str, &AtomicU64)> = crate::events::EndReason::ALL
                    .iter()
                    .zip(&m.sessions_ended)
                    .map(|(r, c)| (r.as_str(), c))
                    .collect();
                Family::labelled(
                    "sessions_ended",
                    "Sessions ended, by reason (expiries are counted when a correctly signed cookie finds its session gone and asks why).",
                    "reason",
                    &ended,
                )
            },
            Family::single(
                "decode_failures",
                "Stored values that no longer decoded as the type asked for (read as absent).",
                &m.decode_failures,
            ),
            Family::single(
                "events_dropped",
                "Lifecycle events not delivered because the handler's queue was full.",
                &m.events_dropped,
            ),
            Family::single(
                "import_skipped_fields",
                "Fields of imported sessions left out (reserved names, or past the limits).",
                &m.import_skipped_fields,
            ),
            Family::labelled(
                "store_failures",
                "Store calls that failed, timed out, or were not attempted because the circuit \
                 breaker was open.",
                "kind",
                &[
                    ("error", &m.store_errors),
                    ("timeout", &m.store_timeouts),
                    ("circuit_open", &m.circuit_rejections),
                ],
            ),
            Family::single(
                "creates_refused",
                "New sessions refused because too many were being created at once (a flood).",
                &m.creates_refused,
            ),
            Family::single(
                "rejected_cookies",
                "Cookies refused: forged, malformed, or signed by an unknown key.",
                &m.rejected_cookies,
            ),
            Family::single(
                "expired_seen",
                "Validly signed cookies whose session had expired or was unknown to the store.",
                &m.expired_seen,
            ),
            Family::single(
                "guessing_throttled",
                "Requests refused with 429 because their client kept sending invalid cookies.",
                &m.guessing_throttled,
            ),
            Family::single(
                "csrf_rejections",
                "Unsafe cross-site requests refused by the CSRF guard.",
                &m.csrf_rejections,
            ),
            Family::single(
                "binding_mismatches",
                "Requests whose client properties differed from those the session is bound to.",
                &m.binding_mismatches,
            ),
            Family::single(
                "writes_to_ended_sessions",
                "Writes refused because the session had ended (a would-be resurrection).",
                &m.writes_to_ended_sessions,
            ),
            Family::single(
                "degraded_requests",
                "Requests served a read-only session from a fallback ticket while the store was \
                 down.",
                &m.degraded_requests,
            ),
            Family::single(
                "tickets_issued",
                "Fallback tickets issued (or re-issued) while the store answered.",
                &m.tickets_issued,
            ),
            Family::labelled(
                "tickets_refused",
                "Fallback tickets refused: past their lifetime, not sealed by a key of the \
                 ring, or for another session or one that ended.",
                "reason",
                &[
                    ("expired", &m.tickets_refused_expired),
                    ("forged", &m.tickets_refused_forged),
                    ("stale", &m.tickets_refused_stale),
                ],
            ),
        ]
    }

    /// Each operation's histogram now.
    fn latency(&self) -> Vec<HistogramSnapshot> {
        STORE_OPERATIONS
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
            .collect()
    }

    /// Registers every metric into `registry` under the prefix `cloakroom`, so that an app
    /// exposes them beside its own (one exposition, one `# EOF`). The values are read at each
    /// scrape; `gauges` is asked then for the point-in-time figures it knows.
    /// [`crate::SessionLayer::register_metrics`] adds the breaker state for you.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use cloakroom::prometheus_client::{metrics::counter::Counter, registry::Registry};
    /// use cloakroom::{Gauges, SessionMetrics};
    ///
    /// let mut registry = Registry::default();
    /// let orders: Counter = Counter::default();
    /// registry.register("orders", "Orders placed.", orders.clone());
    /// let metrics = Arc::new(SessionMetrics::default());
    /// metrics.clone().register(&mut registry, Gauges::new);
    ///
    /// let mut text = String::new();
    /// cloakroom::prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    /// assert!(text.contains("orders_total 0"));
    /// assert!(text.contains("cloakroom_requests_total{session=\"created\"} 0"));
    /// assert_eq!(text.matches("# EOF").count(), 1);
    /// ```
    pub fn register(
        self: Arc<Self>,
        registry: &mut Registry,
        gauges: impl Fn() -> Gauges + Send + Sync + 'static,
    ) {
        registry
            .sub_registry_with_prefix("cloakroom")
            .register_collector(Box::new(Scrape {
                metrics: self,
                gauges: Box::new(gauges),
            }));
    }

    /// Every metric in the Prometheus text exposition format (names prefixed `cloakroom_`),
    /// on its own; [`SessionMetrics::register`] puts them in an app's registry instead.
    #[must_use]
    pub fn render_prometheus(self: &Arc<Self>) -> String {
        self.render_prometheus_with(Gauges::default())
    }

    /// As [`SessionMetrics::render_prometheus`], with point-in-time `gauges`.
    #[must_use]
    pub fn render_prometheus_with(self: &Arc<Self>, gauges: Gauges) -> String {
        let mut registry = Registry::default();
        self.clone().register(&mut registry, move || gauges);
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// The collector [`SessionMetrics::register`] files: it reads the counters at each scrape.
struct Scrape {
    metrics: Arc<SessionMetrics>,
    gauges: Box<dyn Fn() -> Gauges + Send + Sync>,
}

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrape").finish_non_exhaustive()
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in self.metrics.families() {
            let mut e =
                encoder.encode_descriptor(family.name, family.help, None, MetricType::Counter)?;
            match family.values {
                Values::One(n) => ConstCounter::new(n).encode(e)?,
                Values::Labelled(key, members) => {
                    for (value, n) in members {
                        ConstCounter::new(n).encode(e.encode_family(&[(key, value)])?)?;
                    }
                }
            }
        }
        let mut e = encoder.encode_descriptor(
            "store_latency_seconds",
            "Time each store operation took, as the session layer saw it.",
            None,
            MetricType::Histogram,
        )?;
        for (op, sum, count, buckets) in self.metrics.latency() {
            e.encode_family(&[("operation", op)])?
                .encode_histogram::<Vec<(String, String)>>(sum, count, &buckets, None)?;
        }
        let gauges = (self.gauges)();
        let mut gauge = |name: &str, help: &str, value: i64| {
            let metric = ConstGauge::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
        };
        if let Some(open) = gauges.breaker_open {
            gauge(
                "breaker_open",
                "1 while the circuit breaker is open (store calls fail at once).",
                i64::from(open),
            )?;
        }
        if let Some(n) = gauges.live_sessions {
            gauge(
                "live_sessions",
                "Live sessions in the store.",
                i64::try_from(n).unwrap_or(i64::MAX),
            )?;
        }
        if let Some((entries, bytes)) = gauges.cache_size {
            for (name, help, n) in [
                (
                    "read_cache_entries",
                    "Session records the read cache holds.",
                    entries,
                ),
                (
                    "read_cache_bytes",
                    "Bytes the read cache's records are counted at (bounded by its limit).",
                    bytes,
                ),
            ] {
                gauge(name, help, i64::try_from(n).unwrap_or(i64::MAX))?;
            }
        }
        if let Some((hits, misses)) = gauges.cache {
            let mut e = encoder.encode_descriptor(
                "read_cache_requests",
                "Session reads the read cache served (hit) or sent to the store (miss).",
                None,
                MetricType::Counter,
            )?;
            for (result, n) in [("hit", hits), ("miss", misses)] {
                ConstCounter::new(n).encode(e.encode_family(&[("result", result)])?)?;
            }
        }
        Ok(())
    }
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
