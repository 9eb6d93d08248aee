//! Opening the connections: URL, the `REDIS_AUTH`-style password fallback, TLS trust, and
//! multiplexed connections that reconnect by themselves.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion};

use crate::config::RedisConfig;
use crate::error::RedisError;

/// Builds the client for `config` without connecting.
pub(crate) fn client(config: &RedisConfig) -> Result<redis::Client, RedisError> {
    client_speaking(config, None)
}

/// The client, speaking `protocol` when given (the URL's choice otherwise).
fn client_speaking(
    config: &RedisConfig,
    protocol: Option<ProtocolVersion>,
) -> Result<redis::Client, RedisError> {
    let mut info = config
        .url
        .as_str()
        .into_connection_info()
        .map_err(RedisError::Url)?;
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
        Some(pem) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        )
        .map_err(RedisError::Certificate),
        None => redis::Client::open(info).map_err(RedisError::Url),
    }
}

/// One multiplexed connection shared by every request. After a failure it reconnects in the
/// background with a short, bounded backoff, so an outage ends without a restart.
pub(crate) async fn connect(config: &RedisConfig) -> Result<ConnectionManager, RedisError> {
    ConnectionManager::new_with_config(client(config)?, manager_config(config))
        .await
        .map_err(RedisError::Connect)
}

/// The read cache's own connection: RESP3, with every push handed to `on_push`, in order, on
/// the connection's task.
pub(crate) async fn connect_tracking(
    config: &RedisConfig,
    on_push: impl Fn(redis::PushInfo) + Send + Sync + 'static,
) -> Result<ConnectionManager, RedisError> {
    let client = client_speaking(config, Some(ProtocolVersion::RESP3))?;
    let manager = manager_config(config).set_push_sender(move |push| {
        on_push(push);
        Ok::<(), std::convert::Infallible>(())
    });
    ConnectionManager::new_with_config(client, manager)
        .await
        .map_err(RedisError::Connect)
}

fn manager_config(config: &RedisConfig) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.response_timeout))
        .set_number_of_retries(3)
        .set_min_delay(std::time::Duration::from_millis(50))
        .set_max_delay(std::time::Duration::from_millis(500))
}
