//! Opening the connection: URL, the `REDIS_AUTH`-style password fallback, TLS trust, and a
//! multiplexed connection that reconnects by itself.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::IntoConnectionInfo;

use crate::config::RedisConfig;
use crate::error::RedisError;

/// Builds the client for `config` without connecting.
pub(crate) fn client(config: &RedisConfig) -> Result<redis::Client, RedisError> {
    let mut info = config
        .url
        .as_str()
        .into_connection_info()
        .map_err(RedisError::Url)?;
    if info.redis_settings().password().is_none() {
        if let Some(password) = &config.password {
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
    }
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
    let client = client(config)?;
    let manager = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.response_timeout))
        .set_number_of_retries(3)
        .set_min_delay(std::time::Duration::from_millis(50))
        .set_max_delay(std::time::Duration::from_millis(500));
    ConnectionManager::new_with_config(client, manager)
        .await
        .map_err(RedisError::Connect)
}
