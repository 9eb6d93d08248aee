//! Client CPU per HGETALL, with 32 concurrent callers on a 2-thread runtime, for three clients.
//! Usage: bench-client-cost PORT [OPS]. Prints one line per client: ops/s and process CPU µs/op.
use std::time::Instant;

const CALLERS: usize = 32;

fn cpu_us() -> f64 {
    // utime + stime of the whole process, in 10 ms ticks: coarse, so runs last seconds.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(") ").next().unwrap_or("").split(' ').collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks * 10_000.0
}

fn report(name: &str, ops: usize, start: Instant, cpu0: f64) {
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_us() - cpu0;
    println!(
        "{name:<10} {:>9.0} ops/s {:>6.2} client CPU µs/op",
        ops as f64 / secs,
        cpu / ops as f64
    );
}

async fn redis_rs(port: u16, ops: usize) {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    let (start, cpu0) = (Instant::now(), cpu_us());
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let mut conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..ops / CALLERS {
                let _: Vec<(String, String)> = redis::cmd("HGETALL")
                    .arg("k")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    report("redis-rs", ops, start, cpu0);
}

async fn fred_client(port: u16, ops: usize) {
    use fred::prelude::*;
    let config = Config::from_url(&format!("redis://127.0.0.1:{port}/")).unwrap();
    let client = Builder::from_config(config).build().unwrap();
    client.init().await.unwrap();
    let (start, cpu0) = (Instant::now(), cpu_us());
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..ops / CALLERS {
                let _: Vec<(String, String)> = client.hgetall("k").await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    report("fred", ops, start, cpu0);
}

/// The floor: one socket, a writer task that batches whatever is queued into one write, a
/// reader that answers callers in order. Only what HGETALL of a small hash needs.
async fn raw(port: u16, ops: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::{mpsc, oneshot};
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<oneshot::Sender<Vec<u8>>>();
    let (ptx, mut prx) = mpsc::unbounded_channel::<oneshot::Sender<Vec<u8>>>();
    tokio::spawn(async move {
        let cmd = b"*2\r\n$7\r\nHGETALL\r\n$1\r\nk\r\n";
        let mut buf = Vec::new();
        while let Some(first) = rx.recv().await {
            buf.clear();
            buf.extend_from_slice(cmd);
            ptx.send(first).unwrap();
            while let Ok(next) = rx.try_recv() {
                buf.extend_from_slice(cmd);
                ptx.send(next).unwrap();
            }
            wr.write_all(&buf).await.unwrap();
        }
    });
    tokio::spawn(async move {
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut pos = 0;
        loop {
            // Reply frames: *N then N bulk strings; parse complete ones.
            while let Some(n) = frame_len(&buf[pos..]) {
                let reply = buf[pos..pos + n].to_vec();
                pos += n;
                if let Some(waiter) = prx.recv().await {
                    let _ = waiter.send(reply);
                }
            }
            buf.drain(..pos);
            pos = 0;
            let mut chunk = [0u8; 16 * 1024];
            let n = rd.read(&mut chunk).await.unwrap();
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    });
    let (start, cpu0) = (Instant::now(), cpu_us());
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..ops / CALLERS {
                let (otx, orx) = oneshot::channel();
                tx.send(otx).unwrap();
                let _ = orx.await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    report("raw", ops, start, cpu0);
}

fn line(b: &[u8]) -> Option<(usize, usize)> {
    let end = b.windows(2).position(|w| w == b"\r\n")?;
    let n: i64 = std::str::from_utf8(&b[1..end]).ok()?.parse().ok()?;
    Some((n.max(0) as usize, end + 2))
}

fn frame_len(b: &[u8]) -> Option<usize> {
    if b.is_empty() {
        return None;
    }
    let (count, mut at) = line(b)?;
    for _ in 0..count {
        let (len, hdr) = line(&b[at..])?;
        at += hdr + len + 2;
        if at > b.len() {
            return None;
        }
    }
    Some(at)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).expect("PORT");
    let ops: usize = args.next().and_then(|p| p.parse().ok()).unwrap_or(320_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("HSET")
            .arg("k")
            .arg("user_id")
            .arg("alice")
            .arg("__m")
            .arg("0123456789abcdef0123")
            .arg("login_time")
            .arg("1795463630539")
            .query_async(&mut c)
            .await
            .unwrap();
        for _ in 0..2 {
            redis_rs(port, ops).await;
            fred_client(port, ops).await;
            raw(port, ops).await;
        }
    });
}
