//! The round-trip budget: how many store calls each request costs.

use std::sync::Arc;

use crate::testing::doubles::*;
use crate::testing::harness::*;
use crate::testing::DynStore;

/// Untouched 0 calls; read-only 1; read-modify-write 2; new session 1; increment 1;
/// login (with cycle) 2; logout 1.
pub async fn round_trip_budget(store: DynStore) {
    let counting = Arc::new(CountingStore::new(store));
    let mut b = browser(counting.clone());
    let expect = |label: &str, max: u64, calls: (u64, Vec<&'static str>)| {
        assert!(
            calls.0 <= max,
            "{label}: {} store calls {:?}, budget {max}",
            calls.0,
            calls.1
        );
        calls.0
    };
    b.send("GET", "/untouched", None).await;
    assert_eq!(expect("untouched, no cookie", 0, counting.take()), 0);
    b.send("POST", "/put/a", Some(serde_json::json!(1))).await;
    expect("new session", 1, counting.take());
    b.send("GET", "/untouched", None).await;
    assert_eq!(expect("untouched, with cookie", 0, counting.take()), 0);
    b.send("GET", "/show/a", None).await;
    expect("read-only", 1, counting.take());
    b.send("POST", "/put/b", Some(serde_json::json!(2))).await;
    expect("read-modify-write", 2, counting.take());
    b.send("POST", "/incr/n", None).await;
    expect("increment", 1, counting.take());
    b.send("POST", "/login/alice", None).await;
    // The cycle, and the default per-user limit's listing (a store without the per-user
    // index answers that once; the layer stops asking).
    expect("login", 3, counting.take());
    b.send("POST", "/logout", None).await;
    expect("logout", 1, counting.take());
    let mut fresh = b.clone();
    fresh.cookie = None;
    fresh.send("GET", "/show/a", None).await;
    assert_eq!(expect("read with no cookie", 0, counting.take()), 0);
}
