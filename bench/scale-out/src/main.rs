//! `bench-scale-out fill URL N` files N login sessions (one user, "spread", holds 100 of
//! them, the rest belong to users of 10 sessions each), then times `stats`, listing and
//! revoking "spread", and reads 10,000 of the sessions twice through the store's read cache
//! (on by default: one tracking link per primary). `bench-scale-out logins URL N [DURABLE_MS]` times N logins one after
//! another (p50/p99), with or without durable writes. Output: `key: value` lines.
use std::time::{Duration, Instant};

use cloakroom::{now_millis, Record, SessionId, SessionStore};
use cloakroom_redis::{RedisConfig, RedisStore};

fn login(user: &str) -> Record {
    let now = now_millis();
    let mut record = Record::new(now, now + 3_600_000, now + 86_400_000);
    record.user = Some(user.to_owned());
    record.fields.insert("login_time".into(), now.to_string());
    record
}

async fn fill(url: &str, n: usize) {
    let store =
        RedisStore::connect(RedisConfig::new(url).with_response_timeout(Duration::from_secs(5)))
            .await
            .expect("connect");
    let started = Instant::now();
    let workers = 64;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut i = w;
            while i < n {
                let user = if i % (n / 100).max(1) == 0 {
                    "spread".to_owned()
                } else {
                    format!("user{}", i / 10)
                };
                let key = SessionId::random().unwrap().key();
                store.create(&key, &login(&user)).await.expect("create");
                if mine.len() < READS / workers {
                    mine.push(key);
                }
                i += workers;
            }
            mine
        }));
    }
    let mut sample = Vec::new();
    for t in tasks {
        sample.extend(t.await.unwrap());
    }
    let filled = started.elapsed();
    println!("filled: {n}");
    println!("fill seconds: {:.1}", filled.as_secs_f64());
    println!("creates per second: {:.0}", n as f64 / filled.as_secs_f64());
    let t = Instant::now();
    let stats = store.stats().await.expect("stats");
    println!("stats sessions: {}", stats.sessions);
    println!("stats ms: {:.1}", t.elapsed().as_secs_f64() * 1000.0);
    let t = Instant::now();
    let listed = store.list_user("spread", now_millis()).await.expect("list");
    println!("listed sessions of one user: {}", listed.len());
    println!("list ms: {:.1}", t.elapsed().as_secs_f64() * 1000.0);
    let t = Instant::now();
    let revoked = store
        .destroy_user("spread", None, now_millis())
        .await
        .expect("revoke");
    println!("revoked: {revoked}");
    println!("revoke ms: {:.1}", t.elapsed().as_secs_f64() * 1000.0);
    // Reads: a first pass fills the cache (each a miss, one HGETALL on the slot's primary),
    // a second is served in process (each a hit: no Redis command).
    for pass in ["first", "second"] {
        let (hits, misses) = store.read_cache_counts().unwrap_or_default();
        let t = Instant::now();
        for key in &sample {
            let _ = store.load(key, now_millis(), None).await.expect("load");
        }
        let took = t.elapsed();
        let (hits2, misses2) = store.read_cache_counts().unwrap_or_default();
        println!("{pass} read pass: {} reads", sample.len());
        println!(
            "{pass} read pass µs per read: {:.1}",
            took.as_secs_f64() * 1e6 / sample.len().max(1) as f64
        );
        println!(
            "{pass} read pass Redis reads (cache misses): {}, hits: {}",
            misses2 - misses,
            hits2 - hits
        );
    }
}

/// Sessions read back through the cache, in two passes.
const READS: usize = 10_000;

async fn logins(url: &str, n: usize, durable: Option<u64>) {
    let store = RedisStore::connect(
        RedisConfig::new(url).with_durable_writes(durable.map(Duration::from_millis)),
    )
    .await
    .expect("connect");
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let key = SessionId::random().unwrap().key();
        let t = Instant::now();
        store
            .create(&key, &login(&format!("u{i}")))
            .await
            .expect("login");
        times.push(t.elapsed());
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!("logins: {n}");
    println!("p50 us: {}", at(0.5).as_micros());
    println!("p99 us: {}", at(0.99).as_micros());
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(10_000);
    match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("fill"), Some(url)) => fill(url, n).await,
        (Some("logins"), Some(url)) => {
            logins(url, n, args.get(4).and_then(|v| v.parse().ok())).await;
        }
        _ => eprintln!("usage: bench-scale-out fill URL N | logins URL N [DURABLE_MS]"),
    }
}
