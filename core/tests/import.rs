//! Taking over a foreign session, at the layer: who imports, when, and that nothing brings a
//! logged-out user back (the real Express and Flask formats are tested in the app's
//! `tests/migration.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use cloakroom::import::{ForeignSessions, Found, Imported};
use cloakroom::testing::{test_router, Browser, Gate};
use cloakroom::{KeyRing, MemoryStore, SessionConfig, SessionLayer, StoreError};

/// An old app whose cookie `legacy` names its user; every lookup finds the session (no claim),
/// so the layer alone must keep from importing again.
#[derive(Default)]
struct Legacy {
    ended: AtomicUsize,
    found: AtomicUsize,
}

#[async_trait]
impl ForeignSessions for Legacy {
    fn cookie_name(&self) -> &str {
        "legacy"
    }
    async fn find(&self, value: &str) -> Result<Found, StoreError> {
        self.found.fetch_add(1, Ordering::SeqCst);
        let mut fields = BTreeMap::new();
        fields.insert("theme".to_owned(), "\"dark\"".to_owned());
        fields.insert("__sneaky".to_owned(), "1".to_owned());
        Ok(Found::Session(Imported {
            handle: format!("h-{value}"),
            user: Some(value.to_owned()),
            fields,
            skipped: 0,
        }))
    }
    async fn end(&self, _handle: &str) -> Result<(), StoreError> {
        self.ended.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn app() -> (axum::Router, Arc<Legacy>) {
    let legacy = Arc::new(Legacy::default());
    let config = SessionConfig::builder(KeyRing::generate().unwrap())
        .with_secure(false)
        .with_import(legacy.clone())
        .build()
        .unwrap();
    let layer = SessionLayer::new(MemoryStore::default(), config);
    (test_router(layer, Arc::new(Gate::default())), legacy)
}

/// Whether the reply sets a live (not clearing) session cookie.
fn sets_session(reply: &cloakroom::testing::Reply) -> bool {
    reply
        .set_cookies
        .iter()
        .any(|c| !c.starts_with("legacy=") && !c.contains("Max-Age=0"))
}

#[tokio::test]
async fn a_foreign_cookie_logs_in_once_and_a_logout_ends_both() {
    let (router, legacy) = app();
    let mut b = Browser::new(router.clone());
    b.cookie = Some("legacy=ada".into());
    let reply = b.send("GET", "/whoami", None).await;
    assert_eq!(reply.body, "\"ada\"", "imported");
    assert!(sets_session(&reply), "our cookie is set");
    let shown = b.send("GET", "/show/theme", None).await;
    assert!(shown.body.contains("dark"), "{}", shown.body);
    let reserved = b.send("GET", "/show/__sneaky", None).await;
    assert!(
        !reserved.body.contains('1'),
        "reserved names are not imported"
    );
    let ours = b.cookie.clone().unwrap();

    // A logout that reads the session afterwards (a page that flashes "logged out") does not
    // log the user back in from the foreign cookie, and ends the foreign session.
    let out = b.send("POST", "/logout-then-read", None).await;
    assert_eq!(out.body, "null", "{}", out.body);
    assert!(!sets_session(&out), "no new session for the user");
    assert_eq!(
        legacy.ended.load(Ordering::SeqCst),
        1,
        "the foreign session ends too"
    );

    // The dead cookie and the foreign one together: nothing is imported, not even asked.
    let found = legacy.found.load(Ordering::SeqCst);
    let mut replay = Browser::new(router);
    replay.cookie = Some(ours);
    let again = replay.send("GET", "/whoami", None).await;
    assert_eq!(again.body, "null");
    assert_eq!(legacy.found.load(Ordering::SeqCst), found);
}

#[tokio::test]
async fn another_user_logging_in_over_an_import_takes_none_of_it() {
    let (router, legacy) = app();
    let mut b = Browser::new(router);
    // A shared computer: ada's old-app cookie is still there when bob logs in here.
    b.cookie = Some("legacy=ada".into());
    let login = b.send("POST", "/login/bob", None).await;
    assert_eq!(login.status, 200, "{}", login.body);
    let who = b.send("GET", "/whoami", None).await;
    assert_eq!(who.body, "\"bob\"");
    let theme = b.send("GET", "/show/theme", None).await;
    assert!(
        !theme.body.contains("dark"),
        "ada's data stays hers: {}",
        theme.body
    );
    b.send("POST", "/logout", None).await;
    assert_eq!(
        legacy.ended.load(Ordering::SeqCst),
        0,
        "bob's logout leaves ada's session"
    );
}
