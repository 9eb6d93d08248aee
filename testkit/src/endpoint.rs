//! A TCP endpoint that can be re-pointed, like a managed service's primary endpoint: new
//! connections go to the current target, connections already open stay where they were.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A listening endpoint on a free loopback port. Stops (and drops every connection) when
/// dropped.
pub struct Endpoint {
    /// Where clients connect.
    pub port: u16,
    target: Arc<AtomicU16>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Endpoint {
    /// Starts forwarding to `127.0.0.1:target`.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let target = Arc::new(AtomicU16::new(target));
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (to, spawned) = (target.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = to.load(Ordering::SeqCst);
                let pipe = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                spawned.lock().expect("tasks").push(pipe);
            }
        });
        tasks.lock().expect("tasks").push(accept);
        Self {
            port,
            target,
            tasks,
        }
    }

    /// Sends new connections to `127.0.0.1:target`; open ones are left alone.
    pub fn repoint(&self, target: u16) {
        self.target.store(target, Ordering::SeqCst);
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        for task in self.tasks.lock().expect("tasks").drain(..) {
            task.abort();
        }
    }
}
