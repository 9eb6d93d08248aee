//! Opening the connections: the URL's topology (one server or endpoint, sentinels, cluster
//! seeds), the `REDIS_AUTH`-style password fallback, TLS trust, and time limits.
//!
//! | URL | topology |
//! | --- | --- |
//! | `redis://host:port[/db]`, `rediss://…` | one server or a managed primary endpoint; a cluster node is detected (`INFO cluster`) and the cluster used |
//! | `redis://host:port,host:port,…` | cluster seeds |
//! | `redis+sentinel://[user:pass@]host:port[,host:port…]/master-name`, `rediss+sentinel://…` | the primary the sentinels name |

use redis::aio::ConnectionManagerConfig;
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, IntoConnectionInfo, ProtocolVersion, TlsMode, Value};

use crate::config::RedisConfig;
use crate::error::RedisError;
use crate::link::{PrimaryLink, RedisConnection, Target};

/// The topology a URL names, before any connection is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Topology {
    /// One address: a standalone server, a managed endpoint, or a cluster node.
    Single(String),
    /// Several nodes of one cluster.
    ClusterSeeds(Vec<String>),
    /// Sentinels and the name of the primary they watch.
    Sentinel {
        tls: bool,
        user: Option<String>,
        password: Option<String>,
        addresses: Vec<(String, u16)>,
        master: String,
    },
}

impl Topology {
    pub(crate) fn parse(url: &str) -> Result<Self, RedisError> {
        let malformed =
            || RedisError::Topology("expected scheme://[user:password@]host:port[,host:port…][/…]");
        let (scheme, rest) = url.split_once("://").ok_or_else(malformed)?;
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((userinfo, rest)) => (Some(userinfo), rest),
            None => (None, rest),
        };
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        match scheme {
            "redis+sentinel" | "rediss+sentinel" => {
                let master = path.trim_end_matches('/');
                if master.is_empty() || master.contains('/') {
                    return Err(RedisError::Topology(
                        "a Sentinel URL ends with the primary's name: redis+sentinel://host:port/mymaster",
                    ));
                }
                let addresses = hosts
                    .split(',')
                    .map(|h| {
                        let (host, port) = h.rsplit_once(':').unwrap_or((h, "26379"));
                        let port = port.parse::<u16>().map_err(|_| malformed())?;
                        if host.is_empty() {
                            return Err(malformed());
                        }
                        Ok((host.to_owned(), port))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let (user, password) = userinfo
                    .map(|info| info.split_once(':').unwrap_or((info, "")))
                    .unwrap_or_default();
                let decode = |s: &str| match percent_decode(s) {
                    Some(v) => Ok((!v.is_empty()).then_some(v)),
                    None => Err(malformed()),
                };
                let (user, password) = (decode(user)?, decode(password)?);
                Ok(Self::Sentinel {
                    tls: scheme == "rediss+sentinel",
                    user,
                    password,
                    addresses,
                    master: master.to_owned(),
                })
            }
            "redis" | "rediss" if hosts.contains(',') => {
                let auth = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
                let seeds = hosts
                    .split(',')
                    .filter(|h| !h.is_empty())
                    .map(|h| format!("{scheme}://{auth}{h}"))
                    .collect();
                Ok(Self::ClusterSeeds(seeds))
            }
            _ => Ok(Self::Single(url.to_owned())),
        }
    }
}

/// `%XX` escapes in URL credentials; `None` if one is malformed or the result is not UTF-8.
pub(crate) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The client for `url`, speaking `protocol` when given (the URL's choice otherwise).
fn client_for(
    config: &RedisConfig,
    url: &str,
    protocol: Option<ProtocolVersion>,
) -> Result<redis::Client, RedisError> {
    let mut info = match &config.client {
        // The app's own client: its settings, not a URL made up from its address.
        Some(info) if url == config.url => info.clone(),
        _ => url.into_connection_info().map_err(RedisError::Url)?,
    };
    let mut settings = info.redis_settings().clone();
    if settings.password().is_none() {
        if let Some(password) = &config.password {
            settings = settings.set_password(password);
        }
    }
    if let Some(protocol) = protocol {
        settings = settings.set_protocol(protocol);
    }
    info = info.set_redis_settings(settings);
    match &config.ca_certificate {
        Some(pem) => {
            redis::Client::build_with_tls(info, certificates(pem)).map_err(RedisError::Certificate)
        }
        None => redis::Client::open(info).map_err(RedisError::Url),
    }
}

fn certificates(pem: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    }
}

/// Connects to what `config`'s URL names: the primary (found again after a failover) or
/// the cluster. A single address that turns out to be a cluster node opens the cluster.
pub(crate) async fn connect(config: &RedisConfig) -> Result<RedisConnection, RedisError> {
    match Topology::parse(&config.url)? {
        Topology::Single(url) => {
            let primary = PrimaryLink::open(
                Target::Direct(client_for(config, &url, None)?),
                manager_config(config),
                None,
            )
            .await
            .map_err(RedisError::Connect)?;
            let mut probe = RedisConnection::from(primary.clone());
            if cluster_enabled(&mut probe).await? {
                return connect_cluster(config, &[url]).await;
            }
            Ok(probe)
        }
        Topology::ClusterSeeds(seeds) => connect_cluster(config, &seeds).await,
        sentinel @ Topology::Sentinel { .. } => {
            let target = Target::Sentinel(tokio::sync::Mutex::new(sentinel_client(
                config, sentinel, None,
            )?));
            let primary = PrimaryLink::open(target, manager_config(config), None)
                .await
                .map_err(RedisError::Connect)?;
            Ok(primary.into())
        }
    }
}

impl RedisConnection {
    /// Opens a connection the way the store does (any topology; it follows failovers), for
    /// data that lives beside the sessions: for instance the sessions of an Express or Flask
    /// app being imported (`crate::import`).
    ///
    /// # Errors
    /// [`RedisError`] saying what to fix.
    pub async fn open(config: &RedisConfig) -> Result<Self, RedisError> {
        connect(config).await
    }
}

/// Whether the server is a node of a cluster (`cluster_enabled:1`).
async fn cluster_enabled(conn: &mut RedisConnection) -> Result<bool, RedisError> {
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query_async(conn)
        .await
        .map_err(RedisError::Connect)?;
    Ok(info.lines().any(|l| l.trim() == "cluster_enabled:1"))
}

async fn connect_cluster(
    config: &RedisConfig,
    seeds: &[String],
) -> Result<RedisConnection, RedisError> {
    let infos = seeds
        .iter()
        .map(|s| match &config.client {
            Some(info) if *s == config.url => Ok(info.clone()),
            _ => s.as_str().into_connection_info().map_err(RedisError::Url),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let first = infos.first().ok_or(RedisError::Topology(
        "a cluster URL names at least one node",
    ))?;
    let tls = matches!(first.addr(), ConnectionAddr::TcpTls { .. });
    let settings = first.redis_settings().clone();
    let mut builder = redis::cluster::ClusterClientBuilder::new(infos)
        .connection_timeout(config.connect_timeout)
        .response_timeout(config.response_timeout)
        .retries(3);
    if let Some(password) = settings
        .password()
        .map(str::to_owned)
        .or(config.password.clone())
    {
        builder = builder.password(password);
    }
    if let Some(user) = settings.username() {
        builder = builder.username(user);
    }
    if tls {
        builder = builder.tls(TlsMode::Secure);
        if let Some(pem) = &config.ca_certificate {
            builder = builder.certs(certificates(pem));
        }
    }
    let client = builder.build().map_err(RedisError::Url)?;
    let cluster = client
        .get_async_connection()
        .await
        .map_err(RedisError::Connect)?;
    Ok(RedisConnection::cluster(cluster))
}

fn sentinel_client(
    config: &RedisConfig,
    topology: Topology,
    protocol: Option<ProtocolVersion>,
) -> Result<redis::sentinel::SentinelClient, RedisError> {
    let Topology::Sentinel {
        tls,
        user,
        password,
        addresses,
        master,
    } = topology
    else {
        unreachable!("called with a sentinel topology");
    };
    let addrs = addresses.into_iter().map(|(host, port)| {
        if tls {
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host, port)
        }
    });
    let mut builder = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)
        .map_err(RedisError::Url)?;
    if let Some(password) = password.or(config.password.clone()) {
        builder = builder.set_client_to_redis_password(password);
    }
    if let Some(user) = user {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(protocol) = protocol {
        builder = builder.set_client_to_redis_protocol(protocol);
    }
    if tls {
        builder = builder
            .set_client_to_redis_tls_mode(TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(TlsMode::Secure);
        if let Some(pem) = &config.ca_certificate {
            builder = builder.set_client_to_redis_certificates(certificates(pem));
        }
    }
    builder.build().map_err(RedisError::Url)
}

/// The read cache's own connection: RESP3, with every push handed to `on_push`, in order, on
/// the connection's task; `on_swap` runs when it is replaced after a failover.
pub(crate) async fn connect_tracking(
    config: &RedisConfig,
    on_push: impl Fn(redis::PushInfo) + Send + Sync + 'static,
    on_swap: Box<dyn Fn() + Send + Sync>,
) -> Result<RedisConnection, RedisError> {
    let resp3 = Some(ProtocolVersion::RESP3);
    let target = match Topology::parse(&config.url)? {
        Topology::Single(url) => Target::Direct(client_for(config, &url, resp3)?),
        // Asked of the sentinels at every connect, like the main link: after a failover the
        // link is replaced (the cache empties) and tracking is switched on again on the new
        // primary.
        sentinel @ Topology::Sentinel { .. } => Target::Sentinel(tokio::sync::Mutex::new(
            sentinel_client(config, sentinel, resp3)?,
        )),
        // A cluster's tracking links are `cache::ClusterNodes`, one per primary.
        Topology::ClusterSeeds(_) => {
            return Err(RedisError::Topology(
                "a cluster is tracked by one link per primary",
            ))
        }
    };
    let manager = manager_config(config).set_push_sender(move |push| {
        on_push(push);
        Ok::<(), std::convert::Infallible>(())
    });
    let link = PrimaryLink::open(target, manager, Some(on_swap))
        .await
        .map_err(RedisError::Connect)?;
    Ok(link.into())
}

/// A RESP3 client for the cluster node at `host:port` (the read cache's own link to it),
/// with the credentials and TLS trust of the URL the store was opened with.
pub(crate) fn cluster_node_client(
    config: &RedisConfig,
    host: &str,
    port: u16,
) -> Result<redis::Client, RedisError> {
    let first = match Topology::parse(&config.url)? {
        Topology::Single(url) => url,
        Topology::ClusterSeeds(seeds) => seeds.into_iter().next().ok_or(RedisError::Topology(
            "a cluster URL names at least one node",
        ))?,
        Topology::Sentinel { .. } => {
            return Err(RedisError::Topology("a Sentinel URL names no cluster"))
        }
    };
    let seed = client_for(config, &first, Some(ProtocolVersion::RESP3))?;
    let info = seed.get_connection_info().clone();
    let addr = match info.addr() {
        ConnectionAddr::TcpTls { insecure, .. } => ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: *insecure,
            tls_params: None,
        },
        _ => ConnectionAddr::Tcp(host.to_owned(), port),
    };
    let info = info.set_addr(addr);
    match &config.ca_certificate {
        Some(pem) => {
            redis::Client::build_with_tls(info, certificates(pem)).map_err(RedisError::Certificate)
        }
        None => redis::Client::open(info).map_err(RedisError::Url),
    }
}

/// Where the ended-sessions feed subscribes (pub/sub messages reach every node and replica,
/// so any one will do): the URL's address, the cluster seeds in turn, or the primary the
/// sentinels name at each connect, so that the feed follows a failover.
pub(crate) enum FeedSource {
    /// One address, or the cluster seeds, tried in turn.
    Nodes(Vec<redis::Client>),
    /// The primary the sentinels name now.
    Sentinel(Box<redis::sentinel::SentinelClient>),
}

impl FeedSource {
    pub(crate) fn new(config: &RedisConfig) -> Result<Self, RedisError> {
        let resp3 = Some(ProtocolVersion::RESP3);
        Ok(match Topology::parse(&config.url)? {
            Topology::Single(url) => Self::Nodes(vec![client_for(config, &url, resp3)?]),
            Topology::ClusterSeeds(seeds) if seeds.is_empty() => {
                return Err(RedisError::Topology(
                    "a cluster URL names at least one node",
                ));
            }
            Topology::ClusterSeeds(seeds) => Self::Nodes(
                seeds
                    .iter()
                    .map(|seed| client_for(config, seed, resp3))
                    .collect::<Result<_, _>>()?,
            ),
            sentinel @ Topology::Sentinel { .. } => {
                Self::Sentinel(Box::new(sentinel_client(config, sentinel, resp3)?))
            }
        })
    }

    /// Learns every node of the cluster that `conn`'s node belongs to (nothing elsewhere),
    /// so that when the node the feed listens to goes, a later attempt tries another: a URL
    /// may name a single node of a cluster.
    pub(crate) async fn learn_nodes(&mut self, conn: &mut redis::aio::MultiplexedConnection) {
        let Self::Nodes(nodes) = self else {
            return;
        };
        let Ok(Value::Array(ranges)) = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await
        else {
            return;
        };
        let seed = nodes[0].get_connection_info().clone();
        for range in ranges {
            let Value::Array(parts) = range else { continue };
            for node in parts.iter().skip(2) {
                let Value::Array(node) = node else { continue };
                let (Some(host), Some(Value::Int(port))) = (node.first(), node.get(1)) else {
                    continue;
                };
                let host = match host {
                    Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    Value::SimpleString(s) => s.clone(),
                    _ => continue,
                };
                let Ok(port) = u16::try_from(*port) else {
                    continue;
                };
                let addr = match seed.addr() {
                    ConnectionAddr::TcpTls {
                        insecure,
                        tls_params,
                        ..
                    } => ConnectionAddr::TcpTls {
                        host,
                        port,
                        insecure: *insecure,
                        tls_params: tls_params.clone(),
                    },
                    _ => ConnectionAddr::Tcp(host, port),
                };
                let known = nodes
                    .iter()
                    .any(|n| n.get_connection_info().addr() == &addr);
                // Bounded: nodes replaced over the years must not pile up without end.
                if !known && nodes.len() < 64 {
                    if let Ok(client) = redis::Client::open(seed.clone().set_addr(addr)) {
                        nodes.push(client);
                    }
                }
            }
        }
    }

    /// The client for the `attempt`th connection.
    pub(crate) async fn client(&mut self, attempt: usize) -> redis::RedisResult<redis::Client> {
        match self {
            Self::Nodes(nodes) => Ok(nodes[attempt % nodes.len()].clone()),
            Self::Sentinel(sentinel) => sentinel.async_get_client().await,
        }
    }
}

fn manager_config(config: &RedisConfig) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.response_timeout))
        .set_number_of_retries(3)
        .set_min_delay(std::time::Duration::from_millis(50))
        .set_max_delay(std::time::Duration::from_millis(500))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_topology() {
        assert_eq!(
            Topology::parse("redis://h:6379/0").unwrap(),
            Topology::Single("redis://h:6379/0".into())
        );
        assert_eq!(
            Topology::parse("rediss://u:p@a:1,b:2").unwrap(),
            Topology::ClusterSeeds(vec!["rediss://u:p@a:1".into(), "rediss://u:p@b:2".into()])
        );
        assert_eq!(
            Topology::parse("redis+sentinel://:s%40cret@a:26379,b/mymaster").unwrap(),
            Topology::Sentinel {
                tls: false,
                user: None,
                password: Some("s@cret".into()),
                addresses: vec![("a".into(), 26379), ("b".into(), 26379)],
                master: "mymaster".into(),
            }
        );
        assert!(matches!(
            Topology::parse("rediss+sentinel://a:1/m").unwrap(),
            Topology::Sentinel { tls: true, .. }
        ));
        assert!(Topology::parse("redis+sentinel://a:1/").is_err());
        assert!(Topology::parse("redis+sentinel://a:x/m").is_err());
        assert!(Topology::parse("no scheme").is_err());
    }
}
