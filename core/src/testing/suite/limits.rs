//! Limits: every write path honours the size and field limits, and a refused write writes nothing.

use std::sync::Arc;

use http::StatusCode;

use crate::{Changes, SessionLayer, SessionStore, StoreError};

use super::*;
use crate::testing::harness::*;
use crate::testing::{test_config, DynStore};

/// Insert, flash, increment (blind, in the store) and set_user all honour the byte and
/// field limits, before anything is written: `413`, and the session is as it was.
pub async fn every_write_path_honours_the_limits(store: DynStore) {
    let config = test_config()
        .with_max_fields(4)
        .with_max_size(1024)
        .build()
        .expect("valid config");
    let mut b = Browser::new(test_router(
        SessionLayer::from_arc(store.clone(), config),
        Arc::default(),
    ));
    for k in ["a", "b", "c"] {
        assert_eq!(
            b.send("POST", &format!("/incr/{k}"), None).await.status,
            200
        );
    }
    let over = [
        ("POST", "/put/d2", Some(serde_json::json!(1))),
        ("POST", "/flash/hello", None),
        (
            "POST",
            "/put/big",
            Some(serde_json::json!("x".repeat(2000))),
        ),
    ];
    assert_eq!(b.send("POST", "/incr/d", None).await.status, 200);
    for (method, path, body) in over {
        let r = b.send(method, path, body).await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{path}");
    }
    // A blind increment of a new field: the layer has not loaded the session, so the store
    // checks, and writes nothing.
    let r = b.send("POST", "/incr/e", None).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "blind increment");
    assert_eq!(b.send("GET", "/show/e", None).await.body, "null");
    assert_eq!(
        b.send("POST", "/incr/a", None).await.body,
        "2",
        "existing fields still count"
    );
    let long_user = "u".repeat(2000);
    let r = b.send("POST", &format!("/login/{long_user}"), None).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "set_user");
    assert_eq!(b.send("GET", "/whoami", None).await.body, "null");
    // The contract directly: a change over the limits writes nothing.
    let k = key();
    store.create(&k, &record(T0, 1000, 5000)).await.unwrap();
    let mut many = set(&[("1", "1"), ("2", "2"), ("3", "3")]);
    many.limits = Some(crate::Limits {
        max_bytes: 100,
        max_fields: 2,
    });
    assert!(matches!(
        store.apply(&k, &many, T0 + 1).await,
        Err(StoreError::LimitExceeded(crate::Limit::Fields))
    ));
    assert!(load(&store, &k, T0 + 2)
        .await
        .unwrap()
        .record
        .fields
        .is_empty());
    // Values count at their length, new fields and grown ones alike, checked or not.
    let limits = Some(crate::Limits {
        max_bytes: 100,
        max_fields: 8,
    });
    let mut small = set(&[("a", "1")]);
    small.limits = limits;
    store.apply(&k, &small, T0 + 3).await.unwrap();
    let long = "9".repeat(200);
    for (field, expect) in [("a", Some("1".to_owned())), ("b", None)] {
        let mut grow = set(&[(field, long.as_str())]);
        grow.limits = limits;
        assert!(
            matches!(
                store.apply(&k, &grow, T0 + 4).await,
                Err(StoreError::LimitExceeded(crate::Limit::Bytes))
            ),
            "{field} grown past the byte limit"
        );
        grow.expect.insert(field.to_owned(), expect);
        assert!(
            matches!(
                store.apply(&k, &grow, T0 + 4).await,
                Err(StoreError::LimitExceeded(crate::Limit::Bytes))
            ),
            "{field} grown past the byte limit by a compare-and-set"
        );
    }
    let after = load(&store, &k, T0 + 5).await.unwrap().record.fields;
    assert_eq!(after.len(), 1);
    assert_eq!(after["a"], "1");
    // A counter counts at its length too, in every store: one that gains a digit past the
    // limit is refused, one that fits is not.
    let mut nines = set(&[("n", "99")]);
    nines.limits = limits;
    store.apply(&k, &nines, T0 + 6).await.unwrap();
    let size = load(&store, &k, T0 + 7).await.unwrap().record.data_size();
    let step = |by: i64| {
        let mut c = Changes::default();
        c.increments.insert("n".into(), by);
        c.limits = Some(crate::Limits {
            max_bytes: size,
            max_fields: 8,
        });
        c
    };
    assert!(matches!(
        store.apply(&k, &step(1), T0 + 8).await,
        Err(StoreError::LimitExceeded(crate::Limit::Bytes))
    ));
    assert!(store.apply(&k, &step(-1), T0 + 9).await.is_ok());
    // Through the layer: a list that grows with `update` stops at the limit.
    let mut grows = 0;
    let mut status = StatusCode::OK;
    while status == StatusCode::OK && grows < 100 {
        grows += 1;
        status = b
            .send("POST", &format!("/append/list/{}", "y".repeat(60)), None)
            .await
            .status;
    }
    assert_eq!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "after {grows} appends"
    );
}

/// A value that would exceed the size limit is refused, and nothing is written.
pub async fn size_limit_writes_nothing(store: DynStore) {
    let mut b = browser(store);
    b.send("POST", "/put/small", Some(serde_json::json!("x")))
        .await;
    let huge = "y".repeat(17 * 1024);
    let reply = b
        .send("POST", "/put/huge", Some(serde_json::json!(huge)))
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(b.send("GET", "/show/huge", None).await.body, "null");
    assert_eq!(b.send("GET", "/show/small", None).await.body, "\"x\"");
    let reply = b
        .send("POST", "/put/__flash.x", Some(serde_json::json!(1)))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::BAD_REQUEST,
        "reserved keys are refused"
    );
}
