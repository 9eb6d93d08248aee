//! An open-loop HTTP load: requests start on a fixed schedule whatever the server does, so
//! queueing shows in the latency instead of slowing the load (as a closed loop like wrk's
//! does). Latency is measured from each request's scheduled start to its last byte. The
//! schedule is kept by a thread that sleeps until each start (async timers round to a
//! millisecond, which would add up to a millisecond to every figure).
//!
//! Usage: `open-loop PORT METHOD PATH COOKIE RATE SECONDS` (loopback only; COOKIE may be
//! `-`). Prints `requests errors p50_us p90_us p99_us max_us`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

type Pool = Arc<Mutex<Vec<BufReader<TcpStream>>>>;

/// Sends one request on a kept-alive connection; true on a 2xx.
async fn exchange(conn: &mut BufReader<TcpStream>, request: &[u8]) -> std::io::Result<bool> {
    conn.get_mut().write_all(request).await?;
    let mut line = String::new();
    conn.read_line(&mut line).await?;
    let ok = line.split(' ').nth(1).is_some_and(|s| s.starts_with('2'));
    let mut length = 0usize;
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body).await?;
    Ok(ok)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, port, method, path, cookie, rate, seconds] = args.as_slice() else {
        eprintln!("usage: open-loop PORT METHOD PATH COOKIE RATE SECONDS");
        std::process::exit(2);
    };
    let port: u16 = port.parse().expect("port");
    let rate: u64 = rate.parse().expect("requests per second");
    let seconds: u64 = seconds.parse().expect("seconds");
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\n");
    if cookie != "-" {
        request.push_str(&format!("cookie: {cookie}\r\n"));
    }
    request.push_str("\r\n");
    let request: Arc<[u8]> = request.into_bytes().into();
    let pool: Pool = Arc::default();
    let total = rate * seconds;
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<Duration>>();
    let start = Instant::now() + Duration::from_millis(50);
    let runtime = tokio::runtime::Handle::current();
    let scheduler = std::thread::spawn(move || {
        for i in 0..total {
            let due = start + interval * u32::try_from(i).expect("bounded count");
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let (pool, request, tx) = (pool.clone(), request.clone(), tx.clone());
            runtime.spawn(send_one(port, pool, request, tx, due));
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds + 30);
    let mut latencies = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let mut errors = 0u64;
    while let Ok(Some(result)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        match result {
            Some(latency) => latencies.push(latency),
            None => errors += 1,
        }
    }
    let _ = scheduler.join();
    report(latencies, errors);
}

/// One request at its scheduled time `due`, on a pooled connection (or a new one).
async fn send_one(
    port: u16,
    pool: Pool,
    request: Arc<[u8]>,
    tx: tokio::sync::mpsc::UnboundedSender<Option<Duration>>,
    due: Instant,
) {
    let conn = pool.lock().await.pop();
    let mut conn = match conn {
        Some(c) => c,
        None => match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                BufReader::new(s)
            }
            Err(_) => {
                let _ = tx.send(None);
                return;
            }
        },
    };
    match exchange(&mut conn, &request).await {
        Ok(true) => {
            let _ = tx.send(Some(due.elapsed()));
            pool.lock().await.push(conn);
        }
        _ => {
            let _ = tx.send(None);
        }
    }
}

fn report(mut latencies: Vec<Duration>, errors: u64) {
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0, |d| d.as_micros())
    };
    println!(
        "{} {} {} {} {} {}",
        latencies.len(),
        errors,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        latencies.last().map_or(0, |d| d.as_micros())
    );
}
