//! `cloakroom check`: is this store and secret ready for production? One finding a line, with its fix.

use std::fmt::Write as _;

use crate::config::StoreArgs;

use super::stats::{mib, policy_warning};
use super::*;

/// One finding of `cloakroom check`.
pub(super) enum Finding {
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
    let spec: crate::backend::url::StoreSpec = store.resolve().parse()?;
    match &spec {
        crate::backend::url::StoreSpec::Memory => findings.push(Finding::Fail(
            "store: memory keeps sessions in one process and loses them on restart; use a folder, Redis or PostgreSQL".into(),
        )),
        crate::backend::url::StoreSpec::Embedded(_) => findings.push(Finding::Warn(
            "store: the embedded store serves one machine; use Redis or PostgreSQL to run more than one app instance".into(),
        )),
        crate::backend::url::StoreSpec::Redis(url) => check_redis_url(url, store, &mut findings),
        crate::backend::url::StoreSpec::Postgres(url) => check_postgres_url(url, &mut findings),
    }
    if spec != crate::backend::url::StoreSpec::Memory {
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
pub(super) fn is_loopback(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .any(|h| lower.contains(&format!("@{h}")) || lower.contains(&format!("://{h}")))
}

pub(super) fn check_postgres_url(url: &str, findings: &mut Vec<Finding>) {
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

pub(super) fn check_redis_url(url: &str, store: &StoreArgs, findings: &mut Vec<Finding>) {
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

pub(super) async fn check_store(backend: &crate::backend::Backend, findings: &mut Vec<Finding>) {
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
