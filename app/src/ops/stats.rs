//! `cloakroom stats`: the store's figures (sessions, bytes, Redis memory and eviction policy), as text or JSON.

use std::fmt::Write as _;

use crate::config::StoreArgs;

use super::*;

/// The `cloakroom stats` figures, printed as text or JSON.
#[derive(Debug, serde::Serialize)]
pub(super) struct Stats {
    pub(super) store: String,
    pub(super) sessions: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) redis: Option<RedisFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) file: Option<cloakroom_embedded::FileStats>,
    /// The read cache of every running instance that published its figures (Redis).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) read_caches: Vec<cloakroom_redis::CacheFigures>,
    pub(super) warnings: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
pub(super) struct RedisFigures {
    version: String,
    topology: String,
    used_memory: u64,
    maxmemory: u64,
    eviction_policy: String,
    connected_clients: u64,
    evicted_keys: u64,
    expired_keys: u64,
    append_only_file: bool,
    average_session_bytes: Option<u64>,
    sampled_sessions: usize,
}

/// What an eviction policy means for sessions, when it is a problem.
pub(super) fn policy_warning(policy: &str, maxmemory: u64) -> Option<String> {
    match policy {
        _ if maxmemory == 0 => Some(
            "no maxmemory: Redis grows until the machine runs out; set maxmemory and volatile-lru"
                .into(),
        ),
        "noeviction" => Some(
            "eviction policy noeviction: when memory is full every login and write fails; use volatile-lru"
                .into(),
        ),
        p if p.starts_with("allkeys") => Some(format!(
            "eviction policy {p}: may evict the per-user index (keys without a TTL) and so hide sessions from \"log out everywhere\"; use volatile-lru"
        )),
        _ => None,
    }
}

pub(super) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// `cloakroom stats [--json]`.
///
/// # Errors
/// [`OpsError`].
pub async fn stats(store: &StoreArgs, json: bool) -> Result<String, OpsError> {
    let backend = match open(store).await {
        Ok(backend) => backend,
        Err(e) => match from_running_app(store, &e).await {
            Some((_, stats)) => return Ok(render_stats(&stats, json)),
            None => return Err(e),
        },
    };
    let counted = backend.sessions.stats().await?;
    let (report, read_caches) = match &backend.redis {
        Some(redis) => (
            Some(redis.server_report().await?),
            redis.read_caches().await.unwrap_or_default(),
        ),
        None => (None, Vec::new()),
    };
    let file = match backend.embedded() {
        Some(store) => Some(store.file_stats().await?),
        None => None,
    };
    backend.close();
    let mut warnings = Vec::new();
    let redis = report.map(|r| {
        warnings.extend(policy_warning(&r.eviction_policy, r.maxmemory));
        if r.evicted_keys > 0 {
            warnings.push(format!(
                "{} keys were evicted since Redis started: sessions may have ended early; size up",
                r.evicted_keys
            ));
        }
        RedisFigures {
            version: r.version,
            topology: r.topology.to_string(),
            used_memory: r.used_memory,
            maxmemory: r.maxmemory,
            eviction_policy: r.eviction_policy,
            connected_clients: r.connected_clients,
            evicted_keys: r.evicted_keys,
            expired_keys: r.expired_keys,
            append_only_file: r.aof,
            average_session_bytes: r.sampled_session_bytes,
            sampled_sessions: r.sampled,
        }
    });
    let stats = Stats {
        store: backend.description.clone(),
        sessions: counted.sessions,
        bytes: counted.bytes,
        redis,
        file,
        read_caches,
        warnings,
    };
    Ok(render_stats(&stats, json))
}

pub(super) fn render_stats(stats: &Stats, json: bool) -> String {
    if json {
        return serde_json::to_string_pretty(stats).unwrap_or_default() + "\n";
    }
    let mut out = format!("store: {}\nsessions: {}\n", stats.store, stats.sessions);
    if let Some(bytes) = stats.bytes {
        let _ = writeln!(out, "bytes: {bytes}");
        if let Some(per) = bytes.checked_div(stats.sessions) {
            let _ = writeln!(out, "bytes per session: {per}");
        }
    }
    if let Some(f) = &stats.file {
        let _ = writeln!(
            out,
            "file: {} pages of {} bytes, {} in use, {} free; {} bytes of sessions and data",
            f.file_bytes / f.page_size.max(1),
            f.page_size,
            f.allocated_pages,
            f.free_pages,
            f.stored_bytes
        );
    }
    if let Some(r) = &stats.redis {
        let limit = if r.maxmemory == 0 {
            "no maxmemory".to_owned()
        } else {
            format!(
                "{} of maxmemory {} ({:.0}%)",
                mib(r.used_memory),
                mib(r.maxmemory),
                r.used_memory as f64 * 100.0 / r.maxmemory as f64
            )
        };
        let _ = writeln!(out, "redis: {} {}", r.version, r.topology);
        let _ = writeln!(out, "memory: {limit}");
        let _ = writeln!(out, "eviction policy: {}", r.eviction_policy);
        let _ = writeln!(out, "connected clients: {}", r.connected_clients);
        let _ = writeln!(
            out,
            "evicted keys: {}, expired keys: {}",
            r.evicted_keys, r.expired_keys
        );
        match r.average_session_bytes {
            Some(avg) => {
                let _ = writeln!(
                    out,
                    "average session: {avg} bytes (MEMORY USAGE of {} sampled sessions)",
                    r.sampled_sessions
                );
            }
            None => out.push_str("average session: no session with a user to sample\n"),
        }
    }
    render_caches(&mut out, &stats.read_caches);
    for w in &stats.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

/// The running instances' read caches: one line for all, one per instance.
fn render_caches(out: &mut String, caches: &[cloakroom_redis::CacheFigures]) {
    if caches.is_empty() {
        return;
    }
    let rate = |hits: u64, misses: u64| match hits.saturating_add(misses) {
        0 => "no reads yet".to_owned(),
        reads => format!("{:.1}% hits", hits as f64 * 100.0 / reads as f64),
    };
    let sum = |f: fn(&cloakroom_redis::CacheFigures) -> u64| {
        caches.iter().map(f).fold(0u64, u64::saturating_add)
    };
    let _ = writeln!(
        out,
        "read caches: {} instance(s), {} sessions, {} cached; {}",
        caches.len(),
        sum(|c| c.entries),
        mib(sum(|c| c.bytes)),
        rate(sum(|c| c.hits), sum(|c| c.misses))
    );
    for c in caches {
        let _ = writeln!(
            out,
            "  {}: {} sessions, {} of {}; {} ({} hits, {} misses)",
            c.instance,
            c.entries,
            mib(c.bytes),
            mib(c.limit),
            rate(c.hits, c.misses),
            c.hits,
            c.misses
        );
    }
}
