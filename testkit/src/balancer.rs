//! HAProxy in front of several app instances, as a real deployment puts it.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// A running `haproxy` balancing HTTP round-robin over loopback backends, with health checks
/// every 200 ms and a request that finds its backend dead sent to another one. Killed when
/// dropped.
pub struct LoadBalancer {
    /// Where clients connect.
    pub port: u16,
    _child: Child,
}

impl LoadBalancer {
    /// Starts HAProxy in front of `backends`; `None` outside CI when it is not installed.
    ///
    /// # Panics
    /// In CI when `haproxy` is missing, or if it does not start.
    pub async fn start(backends: &[u16]) -> Option<Self> {
        let port = crate::free_port();
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, p)| format!("  server app{i} 127.0.0.1:{p} check\n"))
            .collect();
        let config = format!(
            "global\n  maxconn 512\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 10s\n  timeout server 10s\n\
             \x20 retries 3\n  option redispatch 1\n  retry-on conn-failure empty-response\n\
             frontend web\n  bind 127.0.0.1:{port}\n  default_backend apps\n\
             backend apps\n  balance roundrobin\n  option httpchk GET /healthz\n\
             \x20 default-server inter 200ms fall 1 rise 2\n{servers}"
        );
        Self::with_config(&config, port).await
    }

    /// Starts HAProxy with the configuration `config`, whose frontend binds `127.0.0.1:port`;
    /// `None` outside CI when it is not installed.
    ///
    /// # Panics
    /// In CI when `haproxy` is missing, or if it does not start.
    pub async fn with_config(config: &str, port: u16) -> Option<Self> {
        let program = crate::require("haproxy", "haproxy")?;
        let dir = crate::temp_dir("haproxy");
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, config).expect("write haproxy.cfg");
        let child = Command::new(program)
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start haproxy");
        if crate::wait_for_port(port, Duration::from_secs(5)).await {
            return Some(Self {
                port,
                _child: child,
            });
        }
        panic!("haproxy did not start on port {port}");
    }
}
