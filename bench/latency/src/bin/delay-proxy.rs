//! A TCP proxy that delays every byte by a fixed time in each direction: network distance
//! between the app and Redis on a kernel without `netem`.
//!
//! Usage: `delay-proxy LISTEN_PORT TARGET_PORT DELAY_MICROS` (loopback only). Each direction
//! of each connection has a reader thread that stamps every chunk as it arrives and a writer
//! thread that sleeps until the chunk is due: thread sleeps are precise to tens of
//! microseconds, where async timers round to a millisecond.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.join();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, target, micros] = args.as_slice() else {
        eprintln!("usage: delay-proxy LISTEN_PORT TARGET_PORT DELAY_MICROS");
        std::process::exit(2);
    };
    let delay = Duration::from_micros(micros.parse().expect("delay in microseconds"));
    let target: u16 = target.parse().expect("target port");
    let listener = TcpListener::bind(("127.0.0.1", listen.parse::<u16>().expect("listen port")))
        .expect("bind");
    for client in listener.incoming().flatten() {
        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        thread::spawn(move || pump(client, server, delay));
        thread::spawn(move || pump(s2, c2, delay));
    }
}
