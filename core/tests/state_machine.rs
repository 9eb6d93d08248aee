//! Property test of the layer's state machine: random sequences of session operations in two
//! concurrent requests on one session (memory store, real layer, real router), checked for
//! the guarantees: no lost increment, no resurrection, no cookie for an alias.

use std::sync::Arc;
use std::time::Duration;

use cloakroom::testing::{test_config, test_router, Browser, Reply};
use cloakroom::{MemoryStore, SessionLayer, SessionStore};
use proptest::prelude::*;

#[derive(Debug, Clone, Copy)]
enum Op {
    Get,
    Insert,
    Increment,
    Flash,
    Destroy,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Get),
        1 => Just(Op::Insert),
        3 => Just(Op::Increment),
        1 => Just(Op::Flash),
        1 => Just(Op::Destroy),
    ]
}

/// Runs `ops` as separate requests through `cookie` (no cookie is kept: every request uses
/// the one the test gives); returns the replies and how many increments succeeded.
async fn run(b: Browser, cookie: String, ops: Vec<Op>, tag: usize) -> (Vec<Reply>, u64) {
    let mut replies = Vec::new();
    let mut counted = 0;
    for (i, op) in ops.into_iter().enumerate() {
        let c = Some(cookie.clone());
        let reply = match op {
            Op::Get => b.send_raw("GET", "/show/n", None, c).await,
            Op::Insert => {
                let body = Some(serde_json::json!(format!("{tag}-{i}")));
                b.send_raw("POST", &format!("/put/k{tag}"), body, c).await
            }
            Op::Increment => b.send_raw("POST", "/incr/n", None, c).await,
            Op::Flash => {
                b.send_raw("POST", &format!("/flash/m{tag}{i}"), None, c)
                    .await
            }
            Op::Destroy => b.send_raw("POST", "/logout", None, c).await,
        };
        // A 200 from an increment is an increment the store acknowledged: it must last.
        if matches!(op, Op::Increment) && reply.status == 200 {
            counted += 1;
        }
        replies.push(reply);
    }
    (replies, counted)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Two concurrent requests on one session: while nobody logs out, every acknowledged
    /// increment is in the final count; once one logs out, the session's data is in no
    /// record of the store (no resurrection), whatever the other request wrote after.
    #[test]
    fn concurrent_requests_lose_nothing_and_resurrect_nothing(
        a in prop::collection::vec(op(), 1..6),
        b in prop::collection::vec(op(), 1..6),
    ) {
        runtime().block_on(async move {
            let store = Arc::new(MemoryStore::default());
            let layer = SessionLayer::new(store.clone(), test_config().build().unwrap());
            let mut first = Browser::new(test_router(layer, Arc::default()));
            first.send("POST", "/login/owner", None).await;
            first.send("POST", "/put/origin", Some(serde_json::json!(true))).await;
            let cookie = first.cookie.clone().unwrap();
            let destroys = a.iter().chain(&b).any(|o| matches!(o, Op::Destroy));
            let ta = tokio::spawn(run(first.clone(), cookie.clone(), a, 1));
            let tb = tokio::spawn(run(first.clone(), cookie.clone(), b, 2));
            let (ra, ca) = ta.await.unwrap();
            let (rb, cb) = tb.await.unwrap();
            for r in ra.iter().chain(&rb) {
                prop_assert!(r.status != 500, "no server error: {r:?}");
            }
            let origin = first.send_raw("GET", "/show/origin", None, Some(cookie.clone())).await;
            if destroys {
                prop_assert_eq!(origin.body.as_str(), "null", "logged out for good");
                // Writes racing the logout either landed before it or went nowhere (or into a
                // new, anonymous session): no record of the owner exists any more.
                let left = store.list_user("owner", cloakroom::now_millis()).await.unwrap();
                prop_assert!(left.is_empty(), "resurrected: {left:?}");
            } else {
                prop_assert_eq!(origin.body.as_str(), "true");
                let n = first.send_raw("GET", "/show/n", None, Some(cookie)).await;
                let n: u64 = n.body.parse().unwrap_or(0);
                prop_assert_eq!(n, ca + cb, "every acknowledged increment is counted");
            }
            Ok(())
        })?;
    }

    /// Requests through an ID that a renewal replaced may read, but never write, never end
    /// the session, and never get a cookie for it.
    #[test]
    fn an_alias_never_writes_and_never_gets_a_cookie(
        ops in prop::collection::vec(op(), 1..8),
    ) {
        runtime().block_on(async move {
            let store = Arc::new(MemoryStore::default());
            let config = test_config()
                .with_renewal(Duration::from_millis(30))
                .with_grace(Duration::from_secs(60))
                .build()
                .unwrap();
            let layer = SessionLayer::new(store.clone(), config);
            let mut b = Browser::new(test_router(layer, Arc::default()));
            b.send("POST", "/put/victim", Some(serde_json::json!(true))).await;
            b.send("POST", "/incr/n", None).await;
            let old = b.cookie.clone().unwrap();
            tokio::time::sleep(Duration::from_millis(40)).await;
            b.send("GET", "/show/n", None).await;
            let new = b.cookie.clone().unwrap();
            prop_assert_ne!(&old, &new, "renewed");
            // Increments through the old ID fail while it is an alias, and go to a new, empty
            // session once it is dead: either way never into this one (checked at the end).
            let (replies, _) = run(b.clone(), old, ops, 3).await;
            for r in &replies {
                for set in r.set_cookies.iter().filter(|c| !c.contains("Max-Age=0")) {
                    // Once the old ID is dead (an alias it destroyed, say), a write through it
                    // starts a new, empty session; it never gets a cookie for this one.
                    let issued = set.split(';').next().unwrap().to_owned();
                    let reached = b.send_raw("GET", "/show/victim", None, Some(issued)).await;
                    prop_assert_eq!(reached.body.as_str(), "null", "a cookie for the session");
                }
            }
            let n = b.send_raw("GET", "/show/n", None, Some(new)).await;
            prop_assert_eq!(n.body.as_str(), "1", "the session is as it was");
            Ok(())
        })?;
    }
}
