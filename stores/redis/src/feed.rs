//! Which sessions ended lately, as every app instance hears it: the scripts publish the key
//! of each session they end on `<prefix>ended` (logout, revocation, a cycle away from it),
//! and each store keeps what it heard for a while. The layer asks it before it accepts a
//! fallback ticket during an outage ([`cloakroom::SessionStore::ended_recently`]), so a
//! logout or revocation made on *another* instance just before Redis went down is honoured
//! here too.
//!
//! A RESP3 connection to one node subscribes (Redis relays a `PUBLISH` to every replica,
//! and a cluster to every node). When that connection is lost or stops answering its
//! once-a-second `PING`, the feed connects again, to the primary the sentinels name now or to
//! the next cluster seed, waiting 100 ms doubling to 2 s between tries. Messages published
//! while it was down are missed; Redis was not reachable from here then either.

use std::sync::Arc;
use std::time::Duration;

use cloakroom::{HeardEnded, Millis, SessionKey};
use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use tokio::sync::Notify;

use crate::config::RedisConfig;
use crate::connection::FeedSource;

/// What this store heard about ended sessions.
#[derive(Default)]
pub(crate) struct EndedFeed {
    heard: HeardEnded,
}

impl EndedFeed {
    pub(crate) fn new() -> Arc<Self> {
        Arc::default()
    }

    /// The push handler: a message on the channel names one ended session.
    pub(crate) fn on_push(&self, push: &PushInfo) {
        if push.kind != PushKind::Message {
            return;
        }
        // [channel, payload]
        let Some(Value::BulkString(payload)) = push.data.get(1) else {
            return;
        };
        if let Some(key) = std::str::from_utf8(payload)
            .ok()
            .and_then(SessionKey::parse)
        {
            self.heard.heard(key);
        }
    }

    /// Whether `key`'s session was heard ending within the last hour, or a ticket issued at
    /// `issued` predates what a full list evicted (see [`HeardEnded::refuses`]).
    pub(crate) fn ended_recently(&self, key: &SessionKey, issued: Millis) -> bool {
        self.heard.refuses(key, issued)
    }
}

/// The feed's task; aborted when the store's last clone is dropped.
pub(crate) struct FeedTask(tokio::task::AbortHandle);

impl Drop for FeedTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl FeedTask {
    /// Starts hearing `channel` into `feed`, following failovers for as long as the task
    /// lives; returns once the first subscription is in place, or after the connect timeout
    /// (the task keeps trying, and says so).
    pub(crate) async fn start(
        config: &RedisConfig,
        channel: String,
        feed: Arc<EndedFeed>,
    ) -> Result<Self, crate::RedisError> {
        let source = FeedSource::new(config)?;
        let timeouts = (config.connect_timeout, config.response_timeout);
        let (ready, subscribed) = tokio::sync::oneshot::channel();
        let task =
            Self(tokio::spawn(follow(source, timeouts, channel, feed, ready)).abort_handle());
        let _ = tokio::time::timeout(config.connect_timeout, subscribed).await;
        Ok(task)
    }
}

async fn follow(
    mut source: FeedSource,
    (connect, respond): (Duration, Duration),
    channel: String,
    feed: Arc<EndedFeed>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut warned = false;
    let mut wait = Duration::from_millis(100);
    for attempt in 0.. {
        let lost = Arc::new(Notify::new());
        let sender = {
            let (feed, lost) = (feed.clone(), lost.clone());
            move |push: PushInfo| {
                if push.kind == PushKind::Disconnection {
                    lost.notify_one();
                } else {
                    feed.on_push(&push);
                }
                Ok::<(), std::convert::Infallible>(())
            }
        };
        let settings = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect))
            .set_response_timeout(Some(respond))
            .set_push_sender(sender);
        let subscribed = async {
            let client = source.client(attempt).await?;
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&settings)
                .await?;
            conn.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(conn)
        };
        let subscribed = subscribed.await;
        match subscribed {
            Ok(mut conn) => {
                wait = Duration::from_millis(100);
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
                source.learn_nodes(&mut conn).await;
                // Listening until the link is lost or stops answering.
                loop {
                    if tokio::time::timeout(Duration::from_secs(1), lost.notified())
                        .await
                        .is_ok()
                    {
                        break;
                    }
                    let pong: redis::RedisResult<String> =
                        redis::cmd("PING").query_async(&mut conn).await;
                    if pong.is_err() {
                        break;
                    }
                }
                tracing::debug!("ended-sessions feed: link lost, connecting again");
            }
            // Once at warning level (no RESP3, an ACL without pub/sub): fallback tickets
            // then rely on this instance's own memory.
            Err(e) if !warned => {
                warned = true;
                tracing::warn!(error = %e, "cannot hear which sessions other instances end; retrying");
            }
            Err(e) => tracing::debug!(error = %e, "ended-sessions feed: cannot subscribe"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}
