//! `cloakroom stats --watch`: one line of rates and latency per interval, from Redis, the running app or the embedded file.

use crate::backend::{Backend, BackendError};
use crate::config::StoreArgs;

use super::*;

/// One reading of the running totals `watch` prints the differences of.
#[derive(Debug, Clone, Default)]
pub(super) struct Reading {
    sessions: u64,
    logins: u64,
    reads: u64,
    writes: u64,
    /// Per latency bucket (app), or none when the store's round trip is measured instead.
    latency: Vec<u64>,
    round_trip: Option<std::time::Duration>,
}

/// Where `watch` reads: Redis itself, the running app's admin socket, or the embedded file.
pub(super) enum Watched {
    Redis(cloakroom_redis::RedisStore),
    App(std::path::PathBuf),
    File(Backend),
}

impl Watched {
    async fn read(&self) -> Result<Reading, OpsError> {
        match self {
            Self::Redis(redis) => {
                let a = redis.activity().await?;
                Ok(Reading {
                    sessions: a.sessions,
                    logins: a.logins,
                    reads: a.reads,
                    writes: a.writes,
                    latency: Vec::new(),
                    round_trip: Some(a.round_trip),
                })
            }
            Self::App(socket) => {
                let s = crate::ops::admin::ask_stats(socket)
                    .await
                    .map_err(|e| OpsError::Admin(e.to_string()))?;
                Ok(Reading {
                    sessions: s.sessions,
                    logins: s.totals.logins,
                    reads: s.totals.reads,
                    writes: s.totals.writes,
                    latency: s.totals.latency,
                    round_trip: None,
                })
            }
            Self::File(backend) => Ok(Reading {
                sessions: backend.sessions.stats().await?.sessions,
                ..Reading::default()
            }),
        }
    }
}

/// The bucket bound under which 99% of the calls between two readings finished.
pub(super) fn p99(before: &[u64], after: &[u64]) -> Option<f64> {
    let deltas: Vec<u64> = after
        .iter()
        .zip(before.iter().chain(std::iter::repeat(&0)))
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    let total: u64 = deltas.iter().sum();
    if total == 0 {
        return None;
    }
    let mut seen = 0;
    for (i, n) in deltas.iter().enumerate() {
        seen += n;
        if seen * 100 >= total * 99 {
            return Some(
                cloakroom::LATENCY_BUCKETS
                    .get(i)
                    .copied()
                    .unwrap_or(f64::INFINITY),
            );
        }
    }
    None
}

/// `cloakroom stats --watch [SECONDS] [--count N]`: one line per interval.
///
/// # Errors
/// [`OpsError`] when the store (or the running app) cannot be read.
pub async fn watch(store: &StoreArgs, every: u64, count: Option<u64>) -> Result<(), OpsError> {
    use std::io::Write as _;
    let watched = match open(store).await {
        Ok(backend) => match backend.redis.clone() {
            Some(redis) => Watched::Redis(redis),
            None => Watched::File(backend),
        },
        Err(e) => {
            let in_use = matches!(
                e,
                OpsError::Backend(BackendError::Embedded(
                    cloakroom_embedded::EmbeddedError::InUse { .. }
                ))
            );
            match (in_use, store.resolve().parse()?) {
                (true, crate::backend::url::StoreSpec::Embedded(dir)) => {
                    Watched::App(crate::ops::admin::socket_path(&dir))
                }
                _ => return Err(e),
            }
        }
    };
    let every = std::time::Duration::from_secs(every.max(1));
    let secs = every.as_secs_f64();
    let mut stdout = std::io::stdout();
    let _ = writeln!(
        stdout,
        "{:<9} {:>10} {:>9} {:>9} {:>9} {:>11}",
        "time", "sessions", "logins/s", "reads/s", "writes/s", "store p99"
    );
    let mut before = watched.read().await?;
    let mut printed = 0;
    while count.is_none_or(|n| printed < n) {
        tokio::time::sleep(every).await;
        let now = watched.read().await?;
        let rate = |a: u64, b: u64| format!("{:.1}", a.saturating_sub(b) as f64 / secs);
        let (logins, reads, writes) = if matches!(watched, Watched::File(_)) {
            ("-".to_owned(), "-".to_owned(), "-".to_owned())
        } else {
            (
                rate(now.logins, before.logins),
                rate(now.reads, before.reads),
                rate(now.writes, before.writes),
            )
        };
        let latency = match (now.round_trip, p99(&before.latency, &now.latency)) {
            (Some(rtt), _) => format!("{:.2} ms", rtt.as_secs_f64() * 1000.0),
            (None, Some(bound)) => format!("<= {:.1} ms", bound * 1000.0),
            (None, None) => "-".to_owned(),
        };
        let time = crate::identity::rfc3339(cloakroom::now_millis());
        let _ = writeln!(
            stdout,
            "{:<9} {:>10} {:>9} {:>9} {:>9} {:>11}",
            time.get(11..19).unwrap_or(&time),
            now.sessions,
            logins,
            reads,
            writes,
            latency
        );
        let _ = stdout.flush();
        before = now;
        printed += 1;
    }
    if let Watched::File(backend) = &watched {
        backend.close();
    }
    Ok(())
}
