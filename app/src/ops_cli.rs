//! The operator commands: stats, sizing, list and revoke sessions.

use std::fmt::Write as _;

use cloakroom::{now_millis, SessionKey};

use crate::backend::{Backend, BackendError};
use crate::config::{StoreArgs, StoreSpecError};
use crate::identity::rfc3339;

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The store setting.
    #[error(transparent)]
    Spec(#[from] StoreSpecError),
    /// Opening the backend.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A store call.
    #[error(transparent)]
    Store(#[from] cloakroom::StoreError),
    /// A key that is not one `list` prints.
    #[error("invalid session key {0:?}: use a key printed by `cloakroom list`")]
    BadKey(String),
    /// The running app's admin socket did not answer.
    #[error("cannot read the running app's figures through its admin socket: {0}")]
    Admin(String),
    /// `memory` has nothing to inspect from another process.
    #[error("the memory store lives inside the app process; operator commands need the embedded, Redis or PostgreSQL store")]
    Memory,
}

/// The embedded store's figures from the app that holds it open, if that is the case: its
/// file is locked to one process, so `stats` and `sizing` ask the app over its admin socket.
async fn from_running_app(store: &StoreArgs, error: &OpsError) -> Option<(String, Stats)> {
    let OpsError::Backend(BackendError::Embedded(cloakroom_embedded::EmbeddedError::InUse {
        ..
    })) = error
    else {
        return None;
    };
    let crate::config::StoreSpec::Embedded(dir) = store.resolve().parse().ok()? else {
        return None;
    };
    let figures = crate::admin::ask_stats(&crate::admin::socket_path(&dir))
        .await
        .ok()?;
    let description = format!(
        "embedded store in {} (read from the running app)",
        dir.display()
    );
    Some((
        description.clone(),
        Stats {
            store: description,
            sessions: figures.sessions,
            bytes: figures.bytes,
            redis: None,
            file: figures.file,
            warnings: Vec::new(),
        },
    ))
}

async fn open(store: &StoreArgs) -> Result<Backend, OpsError> {
    let spec: crate::config::StoreSpec = store.resolve().parse()?;
    if spec == crate::config::StoreSpec::Memory {
        return Err(OpsError::Memory);
    }
    Ok(Backend::open(&spec, store).await?)
}

/// Cloakroom's own measured bytes per login session on Redis, index and count included
/// (`bench/run.py`; 266 on a cluster): what `sizing` assumes without a store.
pub const MEASURED_SESSION_BYTES: u64 = 257;

/// The managed tiers `sizing` recommends from, in GB.
const TIERS_GB: [u64; 9] = [1, 2, 5, 10, 25, 50, 100, 250, 500];

/// The `cloakroom stats` figures, printed as text or JSON.
#[derive(Debug, serde::Serialize)]
struct Stats {
    store: String,
    sessions: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redis: Option<RedisFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<cloakroom_embedded::FileStats>,
    warnings: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
struct RedisFigures {
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
fn policy_warning(policy: &str, maxmemory: u64) -> Option<String> {
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

fn mib(bytes: u64) -> String {
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
    let report = match &backend.redis {
        Some(redis) => Some(redis.server_report().await?),
        None => None,
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
        warnings,
    };
    Ok(render_stats(&stats, json))
}

fn render_stats(stats: &Stats, json: bool) -> String {
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
    for w in &stats.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

/// One reading of the running totals `watch` prints the differences of.
#[derive(Debug, Clone, Default)]
struct Reading {
    sessions: u64,
    logins: u64,
    reads: u64,
    writes: u64,
    /// Per latency bucket (app), or none when the store's round trip is measured instead.
    latency: Vec<u64>,
    round_trip: Option<std::time::Duration>,
}

/// Where `watch` reads: Redis itself, the running app's admin socket, or the embedded file.
enum Watched {
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
                let s = crate::admin::ask_stats(socket)
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
fn p99(before: &[u64], after: &[u64]) -> Option<f64> {
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
                (true, crate::config::StoreSpec::Embedded(dir)) => {
                    Watched::App(crate::admin::socket_path(&dir))
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
fn plan(sessions: u64, per: u64, source: &str) -> String {
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

/// One finding of `cloakroom check`.
enum Finding {
    Ok(String),
    Warn(String),
    Fail(String),
}

/// `cloakroom check`: is this store and secret ready for production? Each finding on its
/// own line with how to fix it; `true` when nothing failed.
///
/// # Errors
/// [`OpsError`] only for a malformed store setting; an unreachable store is a finding.
pub async fn check(store: &StoreArgs) -> Result<(String, bool), OpsError> {
    let mut findings = Vec::new();
    findings.push(match std::env::var("SESSION_SECRET") {
        Err(_) => Finding::Fail(
            "SESSION_SECRET is not set: set it to `cloakroom secret`'s output (comma-separated keys; the first signs)".into(),
        ),
        Ok(secret) => match cloakroom::KeyRing::from_comma_separated(&secret) {
            Ok(ring) => Finding::Ok(format!("SESSION_SECRET: {} key(s), each at least 32 bytes", ring.len())),
            Err(e) => Finding::Fail(format!("SESSION_SECRET: {e}")),
        },
    });
    let spec: crate::config::StoreSpec = store.resolve().parse()?;
    match &spec {
        crate::config::StoreSpec::Memory => findings.push(Finding::Fail(
            "store: memory keeps sessions in one process and loses them on restart; use a folder, Redis or PostgreSQL".into(),
        )),
        crate::config::StoreSpec::Embedded(_) => findings.push(Finding::Warn(
            "store: the embedded store serves one machine; use Redis or PostgreSQL to run more than one app instance".into(),
        )),
        crate::config::StoreSpec::Redis(url) => check_redis_url(url, store, &mut findings),
        crate::config::StoreSpec::Postgres(url) => check_postgres_url(url, &mut findings),
    }
    if spec != crate::config::StoreSpec::Memory {
        match open(store).await {
            Err(e) => match from_running_app(store, &e).await {
                Some((description, s)) => findings.push(Finding::Ok(format!(
                    "store: {description} answers, {} session(s)",
                    s.sessions
                ))),
                None => findings.push(Finding::Fail(format!("store unreachable: {e}"))),
            },
            Ok(backend) => {
                check_store(&backend, &mut findings).await;
                backend.close();
            }
        }
    }
    let mut out = String::new();
    let mut ready = true;
    for f in &findings {
        let (tag, text) = match f {
            Finding::Ok(t) => ("ok  ", t),
            Finding::Warn(t) => ("warn", t),
            Finding::Fail(t) => {
                ready = false;
                ("FAIL", t)
            }
        };
        let _ = writeln!(out, "{tag} {text}");
    }
    out.push_str(if ready {
        "ready for production\n"
    } else {
        "not ready for production: fix the FAIL lines\n"
    });
    Ok((out, ready))
}

/// Whether a store URL names this machine.
fn is_loopback(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .any(|h| lower.contains(&format!("@{h}")) || lower.contains(&format!("://{h}")))
}

fn check_postgres_url(url: &str, findings: &mut Vec<Finding>) {
    let lower = url.to_ascii_lowercase();
    let loopback = is_loopback(url);
    let tls = [
        "sslmode=require",
        "sslmode=verify-ca",
        "sslmode=verify-full",
    ]
    .iter()
    .any(|m| lower.contains(m));
    findings.push(if tls {
        Finding::Ok("TLS: required (sslmode)".into())
    } else if loopback {
        Finding::Warn(
            "TLS: not required, on loopback: fine on one machine; add ?sslmode=require across a network".into(),
        )
    } else {
        Finding::Fail(
            "TLS: not required over the network: add ?sslmode=require (sessions and credentials would travel in clear)".into(),
        )
    });
    let has_password = url.split_once("://").is_some_and(|(_, rest)| {
        rest.rsplit_once('@')
            .is_some_and(|(auth, _)| auth.contains(':') && !auth.ends_with(':'))
    }) || lower.contains("password=");
    findings.push(match (has_password, loopback) {
        (true, _) | (false, true) => Finding::Ok(format!(
            "auth: {}",
            if has_password { "a password is configured" } else { "none in the URL, on loopback" }
        )),
        (false, false) => Finding::Warn(
            "auth: no password in the URL: the server must be trusting this client by address; use a password".into(),
        ),
    });
}

fn check_redis_url(url: &str, store: &StoreArgs, findings: &mut Vec<Finding>) {
    let lower = url.to_ascii_lowercase();
    let loopback = is_loopback(url);
    findings.push(if lower.starts_with("rediss") {
        Finding::Ok("TLS: on (rediss://)".into())
    } else if loopback {
        Finding::Warn(
            "TLS: off, on loopback: fine on one machine; use rediss:// across a network".into(),
        )
    } else {
        Finding::Fail(
            "TLS: off over the network: use rediss:// (sessions and credentials travel in clear)"
                .into(),
        )
    });
    let has_password = url.split_once("://").is_some_and(|(_, rest)| {
        rest.rsplit_once('@')
            .is_some_and(|(auth, _)| auth.contains(':') && !auth.ends_with(':'))
    }) || store
        .redis_password
        .as_deref()
        .is_some_and(|p| !p.is_empty());
    findings.push(match (has_password, loopback) {
        (true, _) => Finding::Ok("AUTH: a password is configured".into()),
        (false, true) => Finding::Warn(
            "AUTH: none, on loopback; set requirepass or an ACL user elsewhere".into(),
        ),
        (false, false) => {
            Finding::Fail("AUTH: no password: set one in the URL or REDIS_AUTH".into())
        }
    });
}

async fn check_store(backend: &crate::backend::Backend, findings: &mut Vec<Finding>) {
    let mut samples = Vec::new();
    for _ in 0..5 {
        let started = std::time::Instant::now();
        if let Err(e) = backend.sessions.ping().await {
            findings.push(Finding::Fail(format!("store: {e}")));
            return;
        }
        samples.push(started.elapsed());
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    findings.push(if median.as_millis() < 5 {
        Finding::Ok(format!("latency: {median:?} per round trip (median of 5)"))
    } else {
        Finding::Warn(format!(
            "latency: {median:?} per round trip: every read pays it; put the store in the app's zone (on Redis, or use --read-cache)"
        ))
    });
    let Some(redis) = &backend.redis else {
        findings.push(Finding::Ok(format!(
            "store: {} answers",
            backend.description
        )));
        return;
    };
    let report = match redis.server_report().await {
        Ok(r) => r,
        Err(e) => {
            findings.push(Finding::Fail(format!("Redis INFO: {e}")));
            return;
        }
    };
    let major: u32 = report
        .version
        .split('.')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    findings.push(if major >= 7 {
        Finding::Ok(format!("version: {}", report.version))
    } else {
        Finding::Fail(format!(
            "version: {}: Cloakroom needs Redis 7 or Valkey 7 (script flags, PEXPIRE NX)",
            report.version
        ))
    });
    findings.push(
        match policy_warning(&report.eviction_policy, report.maxmemory) {
            None => Finding::Ok(format!(
                "memory: maxmemory {} with {}",
                mib(report.maxmemory),
                report.eviction_policy
            )),
            Some(w) if report.eviction_policy == "noeviction" || report.maxmemory == 0 => {
                Finding::Warn(w)
            }
            Some(w) => Finding::Fail(w),
        },
    );
    findings.push(match (&report.topology, report.aof) {
        (cloakroom_redis::ServerTopology::Standalone, false) => Finding::Warn(
            "durability: no replica and no append-only file: a Redis restart logs everyone out; add a replica or appendonly yes".into(),
        ),
        (topology, aof) => Finding::Ok(format!(
            "durability: {topology}{}",
            if aof { ", append-only file on" } else { "" }
        )),
    });
}

/// `cloakroom list --user U`.
///
/// # Errors
/// [`OpsError`].
pub async fn list(store: &StoreArgs, user: &str) -> Result<String, OpsError> {
    let backend = open(store).await?;
    let list = backend.sessions.list_user(user, now_millis()).await?;
    backend.close();
    let mut out = format!("{} session(s) of {user:?}\n", list.len());
    for s in list {
        let agent = s
            .record
            .fields
            .get("user_agent")
            .and_then(|v| serde_json::from_str::<String>(v).ok())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{}  created {}  expires {}  {agent}",
            s.key,
            rfc3339(s.record.created),
            rfc3339(s.record.expires_at())
        );
    }
    Ok(out)
}

/// `cloakroom revoke --user U` or `--key K`.
///
/// # Errors
/// [`OpsError`].
pub async fn revoke(
    store: &StoreArgs,
    user: Option<&str>,
    key: Option<&str>,
) -> Result<String, OpsError> {
    let parsed = match key {
        Some(k) => Some(
            SessionKey::parse(k).ok_or_else(|| OpsError::BadKey(k.chars().take(64).collect()))?,
        ),
        None => None,
    };
    let backend = open(store).await?;
    let out = match (user, parsed) {
        (Some(user), _) => {
            let n = backend
                .sessions
                .destroy_user(user, None, now_millis())
                .await?;
            format!("revoked {n} session(s) of {user:?}\n")
        }
        (None, Some(key)) => match backend.sessions.destroy(&key).await? {
            cloakroom::Destroyed::Session => format!("revoked session {key}\n"),
            cloakroom::Destroyed::Alias => format!("{key} was an old ID of a session; it no longer works, the session itself was not revoked\n"),
            cloakroom::Destroyed::Nothing => format!("no session {key} (already ended)\n"),
        },
        (None, None) => String::from("nothing to revoke\n"),
    };
    backend.close();
    Ok(out)
}
