//! Real `redis-server` processes on free loopback ports, for tests that kill and restart them.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// TLS material for a server started with TLS.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The CA certificate clients must trust.
    pub ca: PathBuf,
    /// The server certificate.
    pub cert: PathBuf,
    /// The server key.
    pub key: PathBuf,
}

/// How to start a server.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `requirepass`.
    pub password: Option<String>,
    /// An ACL user with this name and password, allowed everything.
    pub acl_user: Option<(String, String)>,
    /// Serve TLS only (no plain port).
    pub tls: Option<Tls>,
    /// Keep data across `restart` (append-only file, fsync on every write).
    pub persist: bool,
    /// Start as a replica of the server on this loopback port.
    pub replica_of: Option<u16>,
    /// Start as a cluster node (`cluster-enabled yes`, its own nodes file).
    pub cluster: bool,
}

/// A running `redis-server`. Killed when dropped.
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    bus_port: u16,
    options: Options,
    dir: PathBuf,
    child: Option<Child>,
    program: PathBuf,
}

impl RedisServer {
    /// Starts a plain server, or `None` outside CI when `redis-server` is not installed.
    ///
    /// # Panics
    /// In CI when `redis-server` is missing, or if it does not start.
    pub async fn start() -> Option<Self> {
        Self::start_with(Options::default()).await
    }

    /// Starts a server with `options`.
    ///
    /// # Panics
    /// As [`RedisServer::start`].
    pub async fn start_with(options: Options) -> Option<Self> {
        let program = crate::require("redis-server", "redis-server")?;
        let mut server = Self {
            port: crate::free_port(),
            bus_port: crate::free_port(),
            options,
            dir: crate::temp_dir("redis"),
            child: None,
            program,
        };
        server.spawn().await;
        Some(server)
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new(&self.program);
        cmd.arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg(if self.options.persist { "yes" } else { "no" })
            .arg("--appendfsync")
            .arg("always")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--protected-mode")
            .arg("no")
            // Replicas sync at once (the default waits 5 s for more replicas to join).
            .arg("--repl-diskless-sync-delay")
            .arg("0");
        match &self.options.tls {
            Some(tls) => {
                cmd.arg("--port")
                    .arg("0")
                    .arg("--tls-port")
                    .arg(self.port.to_string())
                    .arg("--tls-cert-file")
                    .arg(&tls.cert)
                    .arg("--tls-key-file")
                    .arg(&tls.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.ca)
                    .arg("--tls-auth-clients")
                    .arg("no");
            }
            None => {
                cmd.arg("--port").arg(self.port.to_string());
            }
        }
        if let Some(password) = &self.options.password {
            cmd.arg("--requirepass")
                .arg(password)
                .arg("--masterauth")
                .arg(password);
        }
        if let Some(primary) = self.options.replica_of {
            cmd.arg("--replicaof")
                .arg("127.0.0.1")
                .arg(primary.to_string());
        }
        if self.options.cluster {
            // The bus port defaults to port + 10000, which overflows for high free ports.
            cmd.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                .arg("--cluster-port")
                .arg(self.bus_port.to_string())
                .arg("--cluster-config-file")
                .arg(self.dir.join("nodes.conf"));
        }
        if let Some((user, password)) = &self.options.acl_user {
            // One argument per ACL rule: redis-server reads them as separate words.
            cmd.arg("--user")
                .arg(user)
                .arg("on")
                .arg(format!(">{password}"))
                .args(["~*", "&*", "+@all"]);
        }
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        self.child = Some(cmd.spawn().expect("start redis-server"));
        // Wait until the port accepts connections (bounded).
        if crate::wait_for_port(self.port, Duration::from_secs(5)).await {
            return;
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// The URL clients use (credentials and scheme included).
    #[must_use]
    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        let auth = match (&self.options.acl_user, &self.options.password) {
            (Some((user, password)), _) => format!("{user}:{password}@"),
            (None, Some(password)) => format!(":{password}@"),
            (None, None) => String::new(),
        };
        format!("{scheme}://{auth}127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (an outage).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
            let _ = child.wait().await;
        }
    }

    /// Waits (bounded: 30 s) until this replica's link to its primary is up.
    ///
    /// # Panics
    /// If it does not come up in time.
    pub async fn wait_synced(&self) {
        let started = std::time::Instant::now();
        while !self
            .command(&["INFO", "replication"])
            .await
            .contains("master_link_status:up")
        {
            assert!(started.elapsed() < Duration::from_secs(30), "replica sync");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts it again on the same port (empty unless started with `persist`).
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    /// Runs one command over a plain connection and returns the raw RESP reply.
    ///
    /// # Panics
    /// If the server cannot be reached (tests call this on a healthy, non-TLS server).
    pub async fn command(&self, args: &[&str]) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect to redis");
        let mut out = String::new();
        let mut send = |parts: &[&str]| {
            out.push_str(&format!("*{}\r\n", parts.len()));
            for p in parts {
                out.push_str(&format!("${}\r\n{p}\r\n", p.len()));
            }
        };
        if let Some((user, password)) = &self.options.acl_user {
            send(&["AUTH", user, password]);
        } else if let Some(password) = &self.options.password {
            send(&["AUTH", password]);
        }
        send(args);
        send(&["QUIT"]);
        stream
            .write_all(out.as_bytes())
            .await
            .expect("write to redis");
        let mut reply = String::new();
        stream
            .read_to_string(&mut reply)
            .await
            .expect("read from redis");
        reply
    }
}

impl Tls {
    /// A fresh CA and a server certificate for 127.0.0.1 signed by it, made with the
    /// `openssl` command in `dir`; `None` outside CI when `openssl` is missing.
    ///
    /// # Panics
    /// In CI when `openssl` is missing, or if it fails.
    #[must_use]
    pub fn generate(dir: &std::path::Path) -> Option<Self> {
        let openssl = crate::require("openssl", "openssl")?;
        let run = |args: &[&str]| {
            let out = std::process::Command::new(&openssl)
                .args(args)
                .current_dir(dir)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .expect("write san.ext");
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=cloakroom test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ]);
        Some(Self {
            ca: dir.join("ca.crt"),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        })
    }
}

impl RedisServer {
    /// How many times each command ran, from `INFO commandstats` (lower-case names).
    pub async fn command_calls(&self) -> std::collections::BTreeMap<String, u64> {
        let info = self.command(&["INFO", "commandstats"]).await;
        info.lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("cmdstat_")?;
                let (name, stats) = rest.split_once(':')?;
                let calls = stats.strip_prefix("calls=")?.split(',').next()?;
                Some((name.to_owned(), calls.parse().ok()?))
            })
            .collect()
    }
}

/// A Redis Sentinel watching one primary as `master_name`, on a free loopback port.
/// Killed when dropped.
pub struct Sentinel {
    /// Its port.
    pub port: u16,
    _child: Child,
}

impl Sentinel {
    /// Starts a sentinel that watches `127.0.0.1:primary` as `master_name` with `quorum`,
    /// declaring it down after one second; `None` outside CI without `redis-server`.
    ///
    /// # Panics
    /// In CI when `redis-server` is missing, or if the sentinel does not start.
    pub async fn start(primary: u16, master_name: &str, quorum: u32) -> Option<Self> {
        let program = crate::require("redis-server", "redis-server")?;
        let port = crate::free_port();
        let dir = crate::temp_dir("sentinel");
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
                 sentinel monitor {master_name} 127.0.0.1 {primary} {quorum}\n\
                 sentinel down-after-milliseconds {master_name} 1000\n\
                 sentinel failover-timeout {master_name} 4000\n\
                 sentinel parallel-syncs {master_name} 1\n",
                dir.display()
            ),
        )
        .expect("write sentinel.conf");
        let child = Command::new(program)
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server --sentinel");
        if crate::wait_for_port(port, Duration::from_secs(5)).await {
            return Some(Self {
                port,
                _child: child,
            });
        }
        panic!("sentinel did not start on port {port}");
    }
}

/// A Redis Cluster of `masters` primaries with `replicas` replicas each, built with
/// `redis-cli --cluster create` on free loopback ports. Killed when dropped.
pub struct Cluster {
    /// Every node; the first `masters` were created as primaries.
    pub nodes: Vec<RedisServer>,
}

impl Cluster {
    /// Starts the nodes and joins them; waits until the cluster reports `cluster_state:ok`.
    /// `None` outside CI when `redis-server` or `redis-cli` is missing.
    ///
    /// # Panics
    /// In CI when a program is missing, or if the cluster does not form within 30 s.
    pub async fn start(masters: usize, replicas: usize) -> Option<Self> {
        let cli = crate::require("redis-cli", "redis-tools")?;
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            nodes.push(
                RedisServer::start_with(Options {
                    cluster: true,
                    ..Options::default()
                })
                .await?,
            );
        }
        let mut create = std::process::Command::new(cli);
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Self { nodes };
        for _ in 0..300 {
            let mut ok = true;
            for node in &cluster.nodes {
                ok &= node
                    .command(&["CLUSTER", "INFO"])
                    .await
                    .contains("cluster_state:ok");
            }
            if ok {
                return Some(cluster);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the cluster did not reach cluster_state:ok in 30 s");
    }

    /// A URL naming one node (the store finds the others).
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.nodes[0].port)
    }

    /// The ports of the nodes that are primaries now.
    pub async fn primaries(&self) -> Vec<u16> {
        let mut out = Vec::new();
        for node in &self.nodes {
            if node.port_is_up().await && node.command(&["ROLE"]).await.contains("master") {
                out.push(node.port);
            }
        }
        out
    }
}

impl RedisServer {
    /// Whether the server accepts connections.
    pub async fn port_is_up(&self) -> bool {
        TcpStream::connect(("127.0.0.1", self.port)).await.is_ok()
    }
}
