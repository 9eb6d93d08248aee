//! Which sessions other app instances ended: the statements that end sessions (logout,
//! revoke-others) `NOTIFY <schema>_ended` with each key in hex, in the same transaction, and
//! every store keeps one connection that `LISTEN`s and remembers what it hears. The layer
//! asks before it accepts a fallback ticket during an outage
//! ([`cloakroom::SessionStore::ended_recently`]), so a logout on another instance just
//! before PostgreSQL went down is honoured here too.
//!
//! The listening connection reconnects after a loss (waits of 100 ms doubling to 2 s);
//! notifications sent while it was down are missed, as PostgreSQL was not reachable from
//! here then either.

use std::sync::Arc;
use std::time::Duration;

use cloakroom::{HeardEnded, SessionKey, KEY_LEN};
use tokio_postgres::AsyncMessage;

/// The channel the statements in [`crate::sql`] notify.
pub(crate) fn channel(schema: &str) -> String {
    format!("{schema}{}", crate::sql::ENDED_CHANNEL)
}

/// Listens on `schema`'s channel for as long as the task runs (the store aborts it when
/// dropped), putting every key it hears into `heard`; `ready` fires once the first `LISTEN`
/// is in place.
pub(crate) async fn listen(
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    schema: String,
    heard: Arc<HeardEnded>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut wait = Duration::from_millis(100);
    let mut warned = false;
    loop {
        match listen_once(&config, tls.clone(), &schema, &heard, &mut ready).await {
            // It was listening until the loss: start again from a short wait.
            Ok(()) => wait = Duration::from_millis(100),
            Err(e) if !warned => {
                warned = true;
                tracing::warn!(error = %e, "cannot hear which sessions other instances end; retrying");
            }
            Err(e) => tracing::debug!(error = %e, "session end notifications: cannot listen"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

/// One connection's life: `LISTEN`, then every notification until the connection ends or
/// stops answering (a `SELECT 1` each second a notification did not come, so a half-open
/// connection after a failover is noticed).
async fn listen_once(
    config: &tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    schema: &str,
    heard: &HeardEnded,
    ready: &mut Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // The connection is driven here; notifications come out of it as messages.
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    });
    let listening = client
        .batch_execute(&format!("LISTEN \"{}\"", channel(schema)))
        .await;
    if let Err(e) = listening {
        driver.abort();
        return Err(e);
    }
    if let Some(ready) = ready.take() {
        let _ = ready.send(());
    }
    let second = Duration::from_secs(1);
    loop {
        match tokio::time::timeout(second, rx.recv()).await {
            Ok(Some(payload)) => {
                if let Some(key) = parse_hex(&payload) {
                    heard.heard(key);
                }
            }
            Ok(None) => break,
            Err(_) => {
                let alive = tokio::time::timeout(second * 5, client.simple_query("SELECT 1")).await;
                if !matches!(alive, Ok(Ok(_))) {
                    break;
                }
            }
        }
    }
    driver.abort();
    Ok(())
}

/// A key as `encode(id, 'hex')` writes it.
fn parse_hex(text: &str) -> Option<SessionKey> {
    if text.len() != KEY_LEN * 2 || !text.is_ascii() {
        return None;
    }
    let mut bytes = [0u8; KEY_LEN];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(SessionKey::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_back_from_hex_and_nothing_else_does() {
        let key = SessionKey::from_bytes([0xab; KEY_LEN]);
        assert_eq!(parse_hex(&"ab".repeat(KEY_LEN)), Some(key));
        for bad in ["", "ab", &"zz".repeat(KEY_LEN), &"é".repeat(KEY_LEN)] {
            assert_eq!(parse_hex(bad), None, "{bad}");
        }
    }
}
