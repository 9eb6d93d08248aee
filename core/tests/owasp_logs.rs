//! OWASP 27 in a test binary of its own: it captures log lines with a thread-local
//! subscriber, and tracing caches per call site whether anyone listens, process-wide, so
//! another test running beside it in the same process could make it miss events.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloakroom::testing::{test_config, test_router, Browser};
use cloakroom::{MemoryStore, SessionLayer, SessionStore};

fn browser(layer: SessionLayer) -> Browser {
    Browser::new(test_router(layer, Arc::default()))
}

/// Collects what `tracing` writes, for the logging test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// OWASP 27: creation, login (a cycle), renewal, logout, revocation, an expired ID seen and
/// a refused cookie are logged (routine lifecycle events at `debug`, so that a host app's
/// `info` log is not flooded; what an operator acts on at `info` and `warn`), with a
/// fingerprint of the key hash, never the ID, the cookie or the store key.
#[tokio::test]
async fn owasp_27_lifecycle_events_are_logged_with_fingerprints_only() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let store = Arc::new(MemoryStore::default());
    let layer = SessionLayer::new(
        store.clone(),
        test_config()
            .with_renewal(Duration::from_millis(100))
            .build()
            .unwrap(),
    );
    let mut b = browser(layer);
    let mut cookies = Vec::new();
    b.send("POST", "/put/x", Some(serde_json::json!(1))).await;
    cookies.extend(b.cookie.clone());
    b.send("POST", "/login/alice", None).await;
    cookies.extend(b.cookie.clone());
    tokio::time::sleep(Duration::from_millis(150)).await;
    b.send("GET", "/show/x", None).await;
    cookies.extend(b.cookie.clone());
    b.send("POST", "/others", None).await;
    b.send_raw("GET", "/show/x", None, Some("sid=forged".into()))
        .await;
    b.send_raw("GET", "/show/x", None, Some(cookies[0].clone()))
        .await;
    b.send("POST", "/logout", None).await;
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for event in [
        "session created",
        "login: session ID cycled",
        "session ID renewed",
        "other sessions of the user revoked",
        "session cookie refused",
        "session expired or unknown",
        "session destroyed (logout)",
    ] {
        assert!(log.contains(event), "{event} is logged:\n{log}");
    }
    assert!(log.contains("session="), "with a fingerprint");
    for cookie in &cookies {
        let value = cookie.split_once('=').unwrap().1;
        assert!(!log.contains(value), "a cookie value leaked into the log");
        assert!(!log.contains(&value[..22]), "an ID leaked into the log");
    }
    for user in store
        .list_user("alice", cloakroom::now_millis())
        .await
        .unwrap()
    {
        assert!(!log.contains(&user.key.to_string()), "a store key leaked");
    }
}
