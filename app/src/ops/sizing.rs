//! `cloakroom sizing`: the managed-Redis guides' formula with our measured session size, and the tier to choose.

use crate::config::StoreArgs;

use super::stats::mib;
use super::*;

/// Cloakroom's own measured bytes per login session on Redis, index and count included
/// (`bench/run.py`; 266 on a cluster): what `sizing` assumes without a store.
pub const MEASURED_SESSION_BYTES: u64 = 257;

/// The managed tiers `sizing` recommends from, in GB.
pub(super) const TIERS_GB: [u64; 9] = [1, 2, 5, 10, 25, 50, 100, 250, 500];

/// `cloakroom sizing --sessions N [--avg-bytes B] [--store …]`: the managed-Redis guides'
/// formula (sessions × average size × 1.5) with our measured session size (or the store's,
/// or the one given), and the managed tier to choose.
///
/// # Errors
/// [`OpsError`] when a given store cannot be read.
pub async fn sizing(
    store: &StoreArgs,
    sessions: u64,
    avg_bytes: Option<u64>,
) -> Result<String, OpsError> {
    let (per, source) = match (avg_bytes, store.given()) {
        (Some(b), _) => (b, "as given".to_owned()),
        (None, Some(_)) => {
            let backend = match open(store).await {
                Ok(backend) => backend,
                Err(e) => {
                    let (description, s) = from_running_app(store, &e).await.ok_or(e)?;
                    let per = s.bytes.and_then(|b| b.checked_div(s.sessions));
                    return Ok(plan(
                        sessions,
                        per.unwrap_or(MEASURED_SESSION_BYTES),
                        &format!("measured in {description}"),
                    ));
                }
            };
            let measured = match &backend.redis {
                Some(redis) => redis.server_report().await?.sampled_session_bytes,
                None => {
                    let s = backend.sessions.stats().await?;
                    s.bytes.and_then(|b| b.checked_div(s.sessions))
                }
            };
            backend.close();
            match measured {
                Some(b) => (b, format!("measured in {}", backend.description)),
                None => (
                    MEASURED_SESSION_BYTES,
                    "Cloakroom's measured login session (the store has none to measure)".into(),
                ),
            }
        }
        (None, None) => (
            MEASURED_SESSION_BYTES,
            "Cloakroom's measured login session; pass --avg-bytes or --store for yours".into(),
        ),
    };
    Ok(plan(sessions, per, &source))
}

/// The sizing arithmetic and the tier, printed.
pub(super) fn plan(sessions: u64, per: u64, source: &str) -> String {
    let raw = per.saturating_mul(sessions);
    let planned = raw.saturating_mul(3) / 2;
    let gb = 1024 * 1024 * 1024;
    let tier = TIERS_GB.iter().find(|t| **t * gb >= planned).map_or_else(
        || "more than 500 GB: use a cluster".to_owned(),
        |t| format!("{t} GB"),
    );
    format!(
        "sessions: {sessions}\n\
         average session: {per} bytes ({source})\n\
         data: {}\n\
         with the guides' 1.5× overhead: {}\n\
         recommended instance: {tier} (the next managed tier up), maxmemory-policy volatile-lru\n",
        mib(raw),
        mib(planned)
    )
}
