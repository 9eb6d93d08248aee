//! Why a session ended, as the next request with its cookie learns it, through the layer.

use std::sync::Arc;

use crate::events::EndReason;
use crate::{SessionKey, SessionLayer, SessionStore};

use super::*;
use crate::testing::harness::*;
use crate::testing::{test_config, DynStore};

/// A browser on `store`, behind a layer that keeps at most two sessions per user.
fn limited(store: &DynStore) -> Browser {
    let config = test_config()
        .with_max_sessions_per_user(Some(2))
        .build()
        .expect("valid config");
    let layer = SessionLayer::new(store.clone(), config);
    Browser::new(test_router(layer, Arc::new(Gate::default())))
}

/// A browser of the same app, logged in as `user`; its store key.
async fn logged_in(app: &Browser, user: &str) -> (Browser, SessionKey) {
    // Logins milliseconds apart, so that "the oldest" (the per-user limit's) is one session.
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let mut b = app.clone();
    b.cookie = None;
    assert_eq!(
        b.send("POST", &format!("/login/{user}"), None).await.status,
        200
    );
    let key = b.send("GET", "/key", None).await.body;
    (b, SessionKey::parse(&key).expect("a store key"))
}

/// What a request with `cookie` learns about why its session ended.
async fn told(app: &Browser, cookie: Option<String>) -> String {
    app.send_raw("GET", "/ended", None, cookie).await.body
}

/// Every way a signed-in session ends, and what the next request with its cookie learns:
/// the reason where the store keeps reasons (optional), else `expired`; never another
/// reason, and nothing at all for a cookie that names no session of ours.
pub async fn each_end_explains_itself_to_the_next_request(store: DynStore) {
    let app = limited(&store);
    let user = format!("ann-{}", key());
    let expect = |reason: &str, said: &str| {
        assert!(
            said == format!("\"{reason}\"") || said == "\"expired\"",
            "expected {reason} (or expired from a store without reasons), got {said}"
        );
        said == format!("\"{reason}\"")
    };

    let (mut a, _) = logged_in(&app, &user).await;
    let cookie = a.cookie.clone();
    assert_eq!(a.send("POST", "/logout", None).await.status, 200);
    let kept = expect("logged_out", &told(&app, cookie).await);

    let (first, _) = logged_in(&app, &user).await;
    let (mut second, _) = logged_in(&app, &user).await;
    if has_user_index(&store).await {
        assert_eq!(second.send("POST", "/others", None).await.body, "1");
        let said = told(&app, first.cookie.clone()).await;
        assert_eq!(expect("revoked", &said), kept, "{said}");

        // Two live after a third login; a fourth replaces the oldest, the second.
        let _third = logged_in(&app, &user).await;
        let _fourth = logged_in(&app, &user).await;
        let said = told(&app, second.cookie.clone()).await;
        assert_eq!(expect("replaced", &said), kept, "{said}");
    }

    let (operator, k) = logged_in(&app, &format!("{user}-op")).await;
    let until = crate::now_millis() + crate::TOMBSTONE_LIFETIME_MS;
    store
        .end(&k, EndReason::RevokedByOperator, until)
        .await
        .unwrap();
    let said = told(&app, operator.cookie.clone()).await;
    assert_eq!(expect("revoked_by_operator", &said), kept, "{said}");

    // Lost without a reason (a plain destroy, as a store that let it expire): expired.
    let (lost, k) = logged_in(&app, &format!("{user}-lost")).await;
    store.destroy(&k).await.unwrap();
    assert_eq!(told(&app, lost.cookie.clone()).await, "\"expired\"");

    // A live session, no cookie, a forged cookie: nothing.
    let (live, _) = logged_in(&app, &format!("{user}-live")).await;
    assert_eq!(told(&app, live.cookie.clone()).await, "null");
    assert_eq!(told(&app, None).await, "null");
    let forged = Some(format!("{}=AAAA.BBBB", crate::DEFAULT_COOKIE_NAME));
    assert_eq!(told(&app, forged).await, "null");
}
